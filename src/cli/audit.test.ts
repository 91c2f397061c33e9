/** `policylayer audit`, end to end: the real binary on SQLite and JSON Lines logs in a temporary folder. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { chain, recordHash, type AuditEventInput, type AuditRecord } from '../audit/event.js';
import { loadOrCreateSigningKey, publicKeyPem, signCheckpoint } from '../audit/signing.js';
import { JsonlFileSink } from '../audit/sinks/jsonl.js';
import { openSqliteAuditSink } from '../audit/sinks/sqlite.js';
import { Writable } from 'node:stream';
import { runAudit } from './audit.js';

// This file runs as dist/src/cli/audit.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const BIN = path.join(ROOT, 'bin/policylayer.js');

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-audit-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
mkdirSync(path.join(dir, 'data'));

const CONFIG = path.join(dir, 'gateway.yaml');
const AUDIT_DB = path.join(dir, 'data/audit.db');
const AUDIT_JSONL = path.join(dir, 'data/audit.jsonl');
writeFileSync(
  CONFIG,
  `store: sqlite:./data/control.db
audit:
  sinks: [ "sqlite:./data/audit.db", "jsonl:./data/audit.jsonl", "stdout" ]
servers:
  piloty: { command: [ "true" ], policy: { version: "1", default: deny } }
  poolparty: { url: "https://example.invalid/mcp", policy: { version: "1", default: deny } }
`,
);

/** The real binary, for what only a process shows: the exit status, the command's registration, signals. */
function run(command: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, command, ...args], { encoding: 'utf8', cwd: dir, maxBuffer: 64 * 1024 * 1024 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

class Collected extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.text += chunk.toString('utf8');
    done();
  }
}

/** `policylayer audit …` in this process, as the binary runs it (an unexpected error exits 1). */
async function cli(...args: string[]) {
  const stdout = new Collected();
  const stderr = new Collected();
  let code: number;
  try {
    code = await runAudit(args, { stdout, stderr });
  } catch (err) {
    stderr.text += `policylayer: ${(err as Error).message}\n`;
    code = 1;
  }
  return { code, stdout: stdout.text, stderr: stderr.text };
}

function grant(label: string): string {
  const created = run('grants', 'create', '-c', CONFIG, '--label', label, '--server', 'piloty', '--format', 'json');
  assert.equal(created.code, 0, created.stderr);
  return (JSON.parse(created.stdout) as { grant: { id: string } }).grant.id;
}
const ALICE = grant('alice-laptop');
const CI = grant('ci-runner');

const NOW = Date.now();
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const LONG_TOOL = `export_everything_${'x'.repeat(100)}`;

function event(over: Partial<AuditEventInput>): AuditEventInput {
  return {
    at: NOW,
    requestId: '1',
    grantId: null,
    grantLabel: null,
    session: 'session-1',
    server: 'piloty',
    method: 'tools/call',
    tool: 'list_sessions',
    decision: 'allow',
    rule: '/tools/list_sessions',
    reason: null,
    policyVersion: 'sha256:0123abcd',
    arguments: { keys: ['limit'], sha256: 'f'.repeat(64) },
    upstreamStatus: 'ok',
    latencyMs: 12,
    resultBytes: 240,
    error: null,
    ...over,
  };
}

function chained(stream: string, events: AuditEventInput[]): AuditRecord[] {
  let prev: AuditRecord | undefined;
  return events.map((e) => (prev = chain(stream, prev, e)));
}

const alice = { grantId: ALICE, grantLabel: 'alice-laptop' };
const ci = { grantId: CI, grantLabel: 'ci-runner' };
const denied = { upstreamStatus: null, latencyMs: null, resultBytes: null };
const GW_ONE = chained('gw-one', [
  event({ at: NOW - 30 * DAY, ...alice }),
  event({
    at: NOW - 3 * DAY,
    ...alice,
    tool: 'create_session',
    decision: 'deny',
    rule: '/tools/create_session/deny_if/0',
    reason: 'amount > 50,000 "usd"\nsecond line',
    ...denied,
  }),
  event({ at: NOW - 2 * HOUR, ...ci, server: 'poolparty', method: 'tools/list', tool: null, rule: null, arguments: undefined }),
  event({ at: NOW - 10 * MINUTE, ...ci, tool: 'create_session', decision: 'rate_limited', rule: '/all_tools/limits/0', reason: '', arguments: null, ...denied }),
]);
const GW_TWO = chained('gw-two', [
  event({ at: NOW - 2 * HOUR + 1_000, server: 'poolparty', tool: 'get_airtime', upstreamStatus: 'tool_error', latencyMs: 1500.4 }),
  event({ at: NOW - 5 * MINUTE, ...alice, server: 'poolparty', tool: 'delete_account', decision: 'deny', rule: '(default deny)', ...denied }),
  event({ at: NOW - MINUTE, ...ci, tool: 'create_charge', decision: 'approval_requested', rule: '/tools/create_charge', ...denied }),
  event({ at: NOW - 30_000, ...ci, server: 'poolparty', tool: LONG_TOOL, decision: 'denied_by_approver', rule: `/tools/${LONG_TOOL}`, ...denied }),
]);
// Three records in each millisecond: pages must neither split nor repeat records of one time.
const BULK = chained(
  'bulk',
  Array.from({ length: 1200 }, (_, i) => event({ at: NOW - DAY + Math.floor(i / 3), server: 'files', tool: 'read_file', rule: '/tools/read_file' })),
);
const ALL = [...GW_ONE, ...GW_TWO, ...BULK];
const byTime = (a: AuditRecord, b: AuditRecord) => a.at - b.at;

{
  const sink = openSqliteAuditSink(AUDIT_DB);
  const jsonl = new JsonlFileSink({ path: AUDIT_JSONL, maxBytes: 300_000 });
  for (let i = 0; i < BULK.length; i += 100) {
    await sink.write(BULK.slice(i, i + 100));
    await jsonl.write(BULK.slice(i, i + 100));
  }
  for (const r of [...GW_ONE, ...GW_TWO].sort(byTime)) {
    await sink.write([r]);
    await jsonl.write([r]);
  }
  await sink.close();
  await jsonl.close();
}

function records(stdout: string): AuditRecord[] {
  return stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as AuditRecord);
}
const places = (rs: readonly AuditRecord[]) => rs.map((r) => `${r.stream}/${r.seq}`);

test('verify reports every configured sink: SQLite and rotated JSON Lines verify, stdout is skipped', async () => {
  assert.ok(existsSync(`${AUDIT_JSONL}.1`), 'the JSON Lines log was rotated');
  const r = await cli('verify', '-c', CONFIG);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(
    r.stdout,
    `sqlite:${AUDIT_DB}: ok: 1208 records in 3 streams (0 duplicates passed over)\n` +
      `jsonl:${AUDIT_JSONL}: ok: 1208 records in 3 streams (0 duplicates passed over)\n` +
      'stdout: skipped: records written to stdout cannot be read back\n',
  );
  const json = await cli('verify', '-c', CONFIG, '--format', 'json');
  assert.equal(json.code, 0, json.stderr);
  const out = JSON.parse(json.stdout) as { ok: boolean; sinks: { sink: string; ok: boolean | null; records?: number }[] };
  assert.equal(out.ok, true);
  assert.deepEqual(
    out.sinks.map((s) => [s.sink, s.ok, s.records]),
    [
      [`sqlite:${AUDIT_DB}`, true, 1208],
      [`jsonl:${AUDIT_JSONL}`, true, 1208],
      ['stdout', null, undefined],
    ],
  );
});

test('verify exits 1 and names the record whose reason was changed in the SQLite file', async () => {
  const tampered = path.join(dir, 'tampered.db');
  copyFileSync(AUDIT_DB, tampered);
  const db = new Database(tampered);
  // Straight into the file, past the sink: the way anyone with write access could.
  const edit = "UPDATE audit_records SET reason = 'nothing to see' WHERE seq = 2 AND stream = (SELECT id FROM audit_streams WHERE stream = 'gw-one')";
  assert.equal(db.prepare(edit).run().changes, 1);
  db.close();
  const r = run('audit', 'verify', '--sink', `sqlite:${tampered}`);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, `sqlite:${tampered}: FAILED: stream gw-one, record 2: its content does not match its hash (edited)\n`);
  const json = JSON.parse((await cli('verify', '--sink', `sqlite:${tampered}`, '--format', 'json')).stdout) as { ok: boolean; sinks: object[] };
  assert.equal(json.ok, false);
  assert.deepEqual(json.sinks[0], {
    sink: `sqlite:${tampered}`,
    ok: false,
    problem: 'edited',
    stream: 'gw-one',
    seq: 2,
    message: 'stream gw-one, record 2: its content does not match its hash (edited)',
  });
});

test('verify of a JSON Lines file passes over a batch written twice and fails on an edited or torn line', async () => {
  const twice = path.join(dir, 'twice.jsonl');
  const lines = GW_TWO.map((r) => JSON.stringify(r) + '\n').join('');
  writeFileSync(twice, lines + lines);
  const ok = await cli('verify', '--sink', `jsonl:${twice}`);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, `jsonl:${twice}: ok: 4 records in 1 stream (4 duplicates passed over)\n`);

  const edited = path.join(dir, 'edited.jsonl');
  writeFileSync(edited, lines.replace('"decision":"approval_requested"', '"decision":"approved"'));
  const bad = await cli('verify', '--sink', `jsonl:${edited}`);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /FAILED: stream gw-two, record 3: .*\(edited\)\n$/);

  const torn = path.join(dir, 'torn.jsonl');
  writeFileSync(torn, lines + '{"stream":"gw-two","se\n');
  const unreadable = await cli('verify', '--sink', `jsonl:${torn}`);
  assert.equal(unreadable.code, 1);
  assert.match(unreadable.stdout, /FAILED: .*torn\.jsonl:5: not a JSON line/);
});

test('verify exits 2, creating nothing, for a sink that is not there, a missing config or no source at all', async () => {
  const missing = path.join(dir, 'nowhere/audit.db');
  const r = await cli('verify', '--sink', `sqlite:${missing}`, '--sink', `sqlite:${AUDIT_DB}`);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /nowhere\/audit\.db: no such file/);
  assert.match(r.stdout, /audit\.db: ok: 1208 records/);
  assert.equal(existsSync(missing), false);
  assert.equal((await cli('verify', '--sink', `jsonl:${path.join(dir, 'nowhere.jsonl')}`)).code, 2);
  const noConfig = await cli('verify', '-c', path.join(dir, 'absent.yaml'));
  assert.equal(noConfig.code, 2);
  assert.match(noConfig.stderr, /absent\.yaml/);
  const nothing = await cli('verify');
  assert.equal(nothing.code, 2);
  assert.match(nothing.stderr, /missing -c <gateway\.yaml> \(or --sink <spec>\)/);
});

test('search prints one page newest first, filtered by server, decision, tool and grant id or label', async () => {
  const denies = await cli('search', '-c', CONFIG, '--decision', 'deny', '--format', 'json');
  assert.equal(denies.code, 0, denies.stderr);
  const page = JSON.parse(denies.stdout) as { records: AuditRecord[]; next: string | null };
  assert.deepEqual(places(page.records), ['gw-two/2', 'gw-one/2']);
  assert.equal(page.next, null);

  const poolparty = JSON.parse((await cli('search', '-c', CONFIG, '--server', 'poolparty', '--format', 'json')).stdout) as { records: AuditRecord[] };
  assert.deepEqual(places(poolparty.records), ['gw-two/4', 'gw-two/2', 'gw-two/1', 'gw-one/3']);

  const byLabel = await cli('search', '-c', CONFIG, '--grant', 'alice-laptop', '--format', 'jsonl');
  assert.equal(byLabel.code, 0, byLabel.stderr);
  assert.deepEqual(places(records(byLabel.stdout)), ['gw-two/2', 'gw-one/2', 'gw-one/1']);
  assert.equal((await cli('search', '-c', CONFIG, '--grant', ALICE, '--format', 'jsonl')).stdout, byLabel.stdout);
  // Without a config there is no store to look a label up in: it is taken as an id.
  assert.equal((await cli('search', '--sink', `sqlite:${AUDIT_DB}`, '--grant', 'alice-laptop', '--format', 'jsonl')).stdout, '');

  const both = await cli('search', '-c', CONFIG, '--tool', 'create_session', '--grant', 'ci-runner', '--format', 'jsonl');
  assert.deepEqual(places(records(both.stdout)), ['gw-one/4']);
});

test('search hands out a cursor while there are more pages, and following it visits every record once', async () => {
  const first = await cli('search', '-c', CONFIG, '--tool', 'create_session', '--limit', '1');
  assert.equal(first.code, 0, first.stderr);
  const lines = first.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 2);
  assert.match(lines[0]!, /^\S+Z rate_limited piloty create_session ci-runner \/all_tools\/limits\/0$/);
  const cursor = /^more: --cursor (\S+)$/.exec(lines[1]!)?.[1];
  assert.ok(cursor, first.stdout);
  const second = await cli('search', '-c', CONFIG, '--tool', 'create_session', '--limit', '1', '--cursor', cursor);
  assert.match(second.stdout, /^\S+Z deny piloty create_session alice-laptop \/tools\/create_session\/deny_if\/0\n$/);
  const jsonl = await cli('search', '-c', CONFIG, '--tool', 'create_session', '--limit', '1', '--format', 'jsonl');
  assert.equal(jsonl.stderr, `more: --cursor ${cursor}\n`);

  const seen: AuditRecord[] = [];
  let next: string | null = null;
  let pages = 0;
  do {
    const r = await cli('search', '-c', CONFIG, '--server', 'files', '--limit', '500', '--format', 'json', ...(next === null ? [] : ['--cursor', next]));
    assert.equal(r.code, 0, r.stderr);
    const p = JSON.parse(r.stdout) as { records: AuditRecord[]; next: string | null };
    seen.push(...p.records);
    next = p.next;
    pages++;
  } while (next !== null);
  assert.equal(pages, 3);
  assert.deepEqual(places(seen), places([...BULK].reverse()));

  const badCursor = await cli('search', '-c', CONFIG, '--cursor', 'not-a-cursor');
  assert.equal(badCursor.code, 2);
  assert.match(badCursor.stderr, /invalid cursor/);
});

test('search --since and --until take ISO 8601 times (UTC unless they say otherwise) and durations ago', async () => {
  const ids = async (...args: string[]) => {
    const r = await cli('search', '-c', CONFIG, '--format', 'jsonl', ...args);
    assert.equal(r.code, 0, r.stderr);
    return places(records(r.stdout));
  };
  assert.deepEqual(await ids('--since', '1h'), ['gw-two/4', 'gw-two/3', 'gw-two/2', 'gw-one/4']);
  assert.deepEqual(await ids('--server', 'poolparty', '--since', '7d', '--until', '1h'), ['gw-two/1', 'gw-one/3']);
  assert.deepEqual(await ids('--since', '1h30m', '--until', '7m'), ['gw-one/4']);
  const at = new Date(NOW - 3 * DAY).toISOString();
  const after = new Date(NOW - 3 * DAY + 1).toISOString();
  assert.deepEqual(await ids('--since', at, '--until', after), ['gw-one/2']);
  assert.deepEqual(await ids('--since', at.replace('Z', ''), '--until', after.replace('Z', '+00:00')), ['gw-one/2']);
  const hourEast = new Date(NOW - 3 * DAY + HOUR).toISOString().replace('Z', '+01:00');
  assert.deepEqual(await ids('--since', hourEast, '--until', after), ['gw-one/2']);
  assert.deepEqual(await ids('--until', new Date(NOW - 29 * DAY).toISOString().slice(0, 10)), ['gw-one/1']);

  const bad = await cli('search', '-c', CONFIG, '--since', 'yesterday');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--since expects an ISO 8601 date or time .* or a duration ago \(15m, 24h, 7d\); got 'yesterday'/);
  assert.equal((await cli('search', '-c', CONFIG, '--until', '2024-13-01')).code, 2);
  const backwards = await cli('search', '-c', CONFIG, '--since', '1h', '--until', '2h');
  assert.equal(backwards.code, 2);
  assert.match(backwards.stderr, /--since \(.*\) must be before --until/);
});

test('search refuses an unknown --decision, --format or --limit as a usage error, naming what it accepts', async () => {
  const r = await cli('search', '-c', CONFIG, '--decision', 'denied');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--decision expects allow, deny, hidden, rate_limited, .*shadow_deny; got 'denied'/);
  assert.equal(r.stdout, '');
  assert.match((await cli('search', '-c', CONFIG, '--format', 'yaml')).stderr, /--format expects table, json, jsonl; got 'yaml'/);
  assert.match((await cli('search', '-c', CONFIG, '--limit', '0')).stderr, /--limit expects a whole number from 1 to 1000/);
  assert.equal((await cli('search', '-c', CONFIG, '--follow')).code, 2);
  const jsonl = await cli('search', '--sink', `jsonl:${AUDIT_JSONL}`);
  assert.equal(jsonl.code, 2);
  assert.match(jsonl.stderr, /reads a sqlite: or postgres:\/\/ sink/);
});

test('the table shows time, decision, server, tool or method, grant, rule and outcome, in aligned columns', async () => {
  const r = await cli('search', '-c', CONFIG, '--since', '3h', '--until', '45s');
  assert.equal(r.code, 0, r.stderr);
  const iso = (ms: number) => new Date(ms).toISOString();
  assert.equal(
    r.stdout,
    [
      `${iso(NOW - MINUTE)} approval_requested piloty    create_charge  ci-runner    /tools/create_charge`,
      `${iso(NOW - 5 * MINUTE)} deny               poolparty delete_account alice-laptop (default deny)`,
      `${iso(NOW - 10 * MINUTE)} rate_limited       piloty    create_session ci-runner    /all_tools/limits/0`,
      `${iso(NOW - 2 * HOUR + 1000)} allow              poolparty get_airtime    -            /tools/list_sessions tool_error 1500ms`,
      `${iso(NOW - 2 * HOUR)} allow              poolparty tools/list     ci-runner    -                    ok 12ms`,
      '',
    ].join('\n'),
  );
});

test('the table cuts the longest values, ending them in …, to keep lines within 120 columns', async () => {
  const r = await cli('search', '-c', CONFIG, '--since', '3h');
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 6);
  for (const line of lines) assert.ok(line.length <= 120, `${line.length}: ${line}`);
  assert.match(lines[0]!, /^\S+Z denied_by_approver poolparty +export_\S+… +ci-runner +\/tools\/export_\S+…$/);
  assert.match(lines[4]!, / -  +\/tools\/list_\S*… tool_error 1500ms$/);
});

test('tail prints the last n matching records, oldest first', async () => {
  const r = await cli('tail', '-n', '3', '-c', CONFIG);
  assert.equal(r.code, 0, r.stderr);
  const times = r.stdout
    .trimEnd()
    .split('\n')
    .map((l) => l.split(' ')[0]);
  assert.deepEqual(times, [NOW - 5 * MINUTE, NOW - MINUTE, NOW - 30_000].map((t) => new Date(t).toISOString()));
  const denies = await cli('tail', '-n', '2', '--decision', 'deny', '-c', CONFIG, '--format', 'jsonl');
  assert.deepEqual(places(records(denies.stdout)), ['gw-one/2', 'gw-two/2']);
  assert.equal((await cli('tail', '-c', CONFIG)).stdout.trimEnd().split('\n').length, 20);
  // Past one page of the store: walked page by page, still oldest first.
  const many = await cli('tail', '-n', '1100', '--server', 'files', '--sink', `sqlite:${AUDIT_DB}`, '--format', 'jsonl');
  assert.deepEqual(places(records(many.stdout)), places(BULK.slice(100)));
  assert.equal((await cli('tail', '-n', 'ten', '-c', CONFIG)).code, 2);
  assert.equal((await cli('tail', '--follow', '--format', 'json', '-c', CONFIG)).code, 2);
});

test('tail --follow prints records as they reach the store, and stops cleanly on SIGINT', async () => {
  const file = path.join(dir, 'follow.db');
  copyFileSync(AUDIT_DB, file);
  const child = spawn(process.execPath, [BIN, 'audit', 'tail', '-n', '1', '--follow', '--sink', `sqlite:${file}`, '--format', 'jsonl'], { cwd: dir });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const until = async (lines: number) => {
    const deadline = Date.now() + 20_000;
    while (records(stdout).length < lines) {
      assert.ok(Date.now() < deadline, `waited for ${lines} lines: ${stdout}${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  try {
    await until(1);
    assert.deepEqual(places(records(stdout)), ['gw-two/4']);
    const later = chained('gw-three', [event({ at: Date.now() }), event({ at: Date.now(), decision: 'deny', ...denied }), event({ at: Date.now() + 1 })]);
    const sink = openSqliteAuditSink(file);
    await sink.write(later.slice(0, 2));
    await until(3);
    await sink.write(later.slice(2));
    await sink.close();
    await until(4);
    assert.deepEqual(places(records(stdout)), ['gw-two/4', 'gw-three/1', 'gw-three/2', 'gw-three/3']);
  } finally {
    child.kill('SIGINT');
  }
  assert.equal(await exited, 0, stderr);
});

test('export jsonl writes every record oldest first, exactly as stored, and the file verifies again', async () => {
  const file = path.join(dir, 'export.jsonl');
  const r = await cli('export', '--format', 'jsonl', '-c', CONFIG, '-o', file);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '');
  const text = readFileSync(file, 'utf8');
  const exported = records(text);
  assert.deepEqual(places(exported), places([...ALL].sort(byTime)));
  const written = new Map(ALL.map((x) => [`${x.stream}/${x.seq}`, JSON.stringify(x)]));
  for (const line of text.trimEnd().split('\n')) {
    const x = JSON.parse(line) as AuditRecord;
    assert.equal(line, written.get(`${x.stream}/${x.seq}`));
  }
  assert.equal((await cli('export', '--format', 'jsonl', '-c', CONFIG)).stdout, text);

  const verify = await cli('verify', '--sink', `jsonl:${file}`);
  assert.equal(verify.code, 0, verify.stdout);
  assert.equal(verify.stdout, `jsonl:${file}: ok: 1208 records in 3 streams (0 duplicates passed over)\n`);

  const denies = await cli('export', '--format', 'jsonl', '-c', CONFIG, '--decision', 'deny');
  assert.deepEqual(places(records(denies.stdout)), ['gw-one/2', 'gw-two/2']);
  const noFormat = await cli('export', '-c', CONFIG);
  assert.equal(noFormat.code, 2);
  assert.match(noFormat.stderr, /--format jsonl\|csv is required/);
});

/** RFC 4180, keeping an unquoted empty field (null) apart from a quoted one (''). */
function parseCsv(text: string): (string | null)[][] {
  const rows: (string | null)[][] = [];
  let row: (string | null)[] = [];
  let i = 0;
  while (i < text.length) {
    let cell: string | null;
    if (text[i] === '"') {
      cell = '';
      let j = i + 1;
      for (;;) {
        const q = text.indexOf('"', j);
        assert.ok(q >= 0, 'an unterminated quoted field');
        cell += text.slice(j, q);
        if (text[q + 1] === '"') {
          cell += '"';
          j = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
    } else {
      let j = i;
      while (j < text.length && text[j] !== ',' && text[j] !== '\r' && text[j] !== '\n') j++;
      cell = j === i ? null : text.slice(i, j);
      i = j;
    }
    row.push(cell);
    if (text[i] === ',') {
      i++;
      continue;
    }
    assert.equal(text.slice(i, i + 2), '\r\n', `a row ends in CRLF at ${i}`);
    i += 2;
    rows.push(row);
    row = [];
  }
  return rows;
}

test('export csv has a header and a column per field, quoted per RFC 4180, and rebuilds every record', async () => {
  const r = await cli('export', '--format', 'csv', '-c', CONFIG);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(
    r.stdout.startsWith(
      'at,requestId,grantId,grantLabel,session,server,method,tool,decision,rule,reason,policyVersion,arguments,upstreamStatus,latencyMs,resultBytes,error,stream,seq,prevHash,hash\r\n',
    ),
  );
  assert.ok(r.stdout.includes(',"amount > 50,000 ""usd""\nsecond line",'));
  const [header, ...rows] = parseCsv(r.stdout);
  assert.equal(rows.length, ALL.length);
  const numbers = new Set(['at', 'seq', 'latencyMs', 'resultBytes']);
  const rebuilt = rows.map((row) => {
    const o: Record<string, unknown> = {};
    header!.forEach((name, i) => {
      const cell = row[i] ?? null;
      if (name === 'arguments') {
        if (cell !== null) o[name] = JSON.parse(cell);
      } else o[name!] = cell !== null && numbers.has(name!) ? Number(cell) : cell;
    });
    return o as unknown as AuditRecord;
  });
  for (const x of rebuilt) assert.equal(recordHash(x), x.hash, `${x.stream}/${x.seq}`);
  const exported = records((await cli('export', '--format', 'jsonl', '-c', CONFIG)).stdout);
  assert.deepEqual(rebuilt, exported);
  assert.deepEqual(
    rebuilt.filter((x) => x.stream === 'gw-one').map((x) => [x.reason, x.arguments]),
    [
      [null, { keys: ['limit'], sha256: 'f'.repeat(64) }],
      ['amount > 50,000 "usd"\nsecond line', { keys: ['limit'], sha256: 'f'.repeat(64) }],
      [null, undefined],
      ['', null],
    ],
  );
  const denies = parseCsv((await cli('export', '--format', 'csv', '-c', CONFIG, '--decision', 'deny', '--since', '7d')).stdout);
  assert.equal(denies.length, 3);
});

test('audit is a command of the binary: --help shows an example, and an unknown subcommand exits 2', () => {
  const help = run('audit', '--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Example:\n {2}policylayer audit search -c gateway\.yaml/);
  assert.match(run('--help').stdout, /^ {2}audit {6}verify, tail, search and export the audit log$/m);
  const unknown = run('audit', 'frobnicate', '-c', CONFIG);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown subcommand 'frobnicate'/);
});

// ---------------------------------------------------------------------------------------------
// Signed checkpoints: a gateway with retention, whose key signed the checkpoints of a pruned log.

const SIGNED = path.join(dir, 'signed');
mkdirSync(path.join(SIGNED, 'data'), { recursive: true });
const SIGNED_CONFIG = path.join(SIGNED, 'gateway.yaml');
const SIGNED_DB = path.join(SIGNED, 'data/audit.db');
writeFileSync(
  SIGNED_CONFIG,
  `audit:
  sinks: [ "sqlite:./data/audit.db" ]
  retention: 30d
servers:
  piloty: { command: [ "true" ], policy: { version: "1", default: deny } }
`,
);
// Where the gateway makes its key: beside the spill folder, ./data/audit-signing.key.
const GATEWAY_KEY = loadOrCreateSigningKey(path.join(SIGNED, 'data/audit-signing.key')).key;
const OTHER_KEY = loadOrCreateSigningKey(path.join(SIGNED, 'other-signing.key')).key;
const OTHER_PUB = path.join(SIGNED, 'other.pub');
writeFileSync(OTHER_PUB, publicKeyPem(OTHER_KEY.publicKey));
{
  const sink = openSqliteAuditSink(SIGNED_DB);
  await sink.write(GW_ONE);
  await sink.write(GW_TWO);
  // A cut 7 days ago: gw-one's first record (30 days old) goes, and a checkpoint stands in for it.
  assert.deepEqual(await sink.prune(NOW - 7 * DAY, GATEWAY_KEY), { records: 1, streams: 1 });
  await sink.close();
}

/** A copy of the signed log, changed by SQL the way anyone with write access to the file could. */
function signedCopy(name: string, tamper: (db: Database.Database) => void): string {
  const file = path.join(SIGNED, `${name}.db`);
  copyFileSync(SIGNED_DB, file);
  const db = new Database(file);
  try {
    tamper(db);
  } finally {
    db.close();
  }
  return file;
}

test("verify checks the checkpoints' signatures with the public half of audit.signing_key, and a pruned log passes", async () => {
  const r = await cli('verify', '-c', SIGNED_CONFIG);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.equal(r.stdout, `sqlite:${SIGNED_DB}: ok: 7 records in 2 streams (0 duplicates passed over)\n`);
});

test('verify exits 1 and names the stream whose checkpoint was forged: records deleted by SQL and a checkpoint inserted', async () => {
  const gwTwo = GW_TWO[1]!;
  for (const [name, keyId, signature] of [
    ['unsigned', null, null],
    ['other-key', OTHER_KEY.keyId, signCheckpoint(OTHER_KEY, { stream: 'gw-two', seq: 2, hash: gwTwo.hash, at: gwTwo.at, prunedAt: NOW }).signature],
  ] as const) {
    const forged = signedCopy(name, (db) => {
      db.prepare("DELETE FROM audit_records WHERE seq <= 2 AND stream = (SELECT id FROM audit_streams WHERE stream = 'gw-two')").run();
      db.prepare('INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
        'gw-two',
        2,
        gwTwo.hash,
        gwTwo.at,
        NOW,
        keyId,
        signature,
      );
    });
    const r = run('audit', 'verify', '-c', SIGNED_CONFIG, '--sink', `sqlite:${forged}`);
    assert.equal(r.code, 1, r.stderr);
    const why =
      keyId === null
        ? `it is not signed by the audit signing key ${GATEWAY_KEY.keyId}: the records before it may have been removed by hand (or it was written before checkpoints were signed)`
        : `it is signed by key ${OTHER_KEY.keyId}, not by the audit signing key ${GATEWAY_KEY.keyId}: the records before it may have been removed by hand`;
    assert.equal(r.stdout, `sqlite:${forged}: FAILED: stream gw-two, the checkpoint (record 2, pruned): ${why} (checkpoint)\n`, name);
  }
});

test('verify exits 1 for a signed checkpoint whose seq or hash was changed by SQL', async () => {
  for (const [name, tamper] of [
    ['seq', "UPDATE audit_checkpoints SET seq = 2; DELETE FROM audit_records WHERE seq = 2 AND stream = (SELECT id FROM audit_streams WHERE stream = 'gw-one')"],
    ['hash', `UPDATE audit_checkpoints SET hash = '${'e'.repeat(64)}'`],
  ] as const) {
    const changed = signedCopy(`changed-${name}`, (db) => db.exec(tamper));
    const r = await cli('verify', '--sink', `sqlite:${changed}`, '-c', SIGNED_CONFIG);
    assert.equal(r.code, 1, name);
    assert.match(r.stdout, new RegExp(`FAILED: stream gw-one, the checkpoint \\(record [12], pruned\\): it does not match its signature by the audit signing key ${GATEWAY_KEY.keyId}: it was changed after it was signed \\(checkpoint\\)\\n$`), name);
  }
});

test('public-key prints the PEM and its fingerprint, with which an auditor verifies (--public-key, repeatable) without the private key', async () => {
  const printed = run('audit', 'public-key', '-c', SIGNED_CONFIG);
  assert.equal(printed.code, 0, printed.stderr);
  assert.match(printed.stdout, new RegExp(`^audit signing key ${GATEWAY_KEY.keyId} \\(fingerprint: .*\\)\\n-----BEGIN PUBLIC KEY-----\\n[A-Za-z0-9+/=\\n]+-----END PUBLIC KEY-----\\n$`));
  const pub = path.join(SIGNED, 'audit-signing.pub');
  writeFileSync(pub, printed.stdout);

  const auditor = await cli('verify', '--sink', `sqlite:${SIGNED_DB}`, '--public-key', pub);
  assert.equal(auditor.code, 0, auditor.stderr + auditor.stdout);
  assert.match(auditor.stdout, /ok: 7 records in 2 streams/);
  const both = await cli('verify', '--sink', `sqlite:${SIGNED_DB}`, '--public-key', OTHER_PUB, '--public-key', pub);
  assert.equal(both.code, 0, both.stderr + both.stdout);
  // --public-key replaces the config's key: an auditor's keys are the ones trusted.
  const wrong = await cli('verify', '-c', SIGNED_CONFIG, '--public-key', OTHER_PUB);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stdout, new RegExp(`FAILED: stream gw-one, the checkpoint \\(record 1, pruned\\): it is signed by key ${GATEWAY_KEY.keyId}, not by the audit signing key ${OTHER_KEY.keyId}`));
});

test("verify exits 2 when the log has checkpoints and no key was given to check them: it never passes silently", async () => {
  const r = await cli('verify', '--sink', `sqlite:${SIGNED_DB}`);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, `policylayer: sqlite:${SIGNED_DB}: cannot check the checkpoints' signatures: give the signing key (audit.signing_key) or --public-key <pem file>\n`);
  const json = JSON.parse((await cli('verify', '--sink', `sqlite:${SIGNED_DB}`, '--format', 'json')).stdout) as { ok: boolean; sinks: Array<{ ok: boolean | null }> };
  assert.equal(json.ok, false);
  assert.equal(json.sinks[0]!.ok, null);
  // A log without checkpoints needs no key.
  assert.equal((await cli('verify', '--sink', `sqlite:${AUDIT_DB}`)).code, 0);
});

test('verify and public-key exit 2 naming the key file that is missing or not a key', async () => {
  const notKey = path.join(SIGNED, 'not-a-key.pem');
  writeFileSync(notKey, 'hello\n');
  const badPublic = await cli('verify', '--sink', `sqlite:${SIGNED_DB}`, '--public-key', notKey);
  assert.equal(badPublic.code, 2);
  assert.match(badPublic.stderr, new RegExp(`--public-key: public key ${notKey.replace(/[.]/g, '\\.')} is not a PEM public key`));
  const missingPublic = await cli('verify', '--sink', `sqlite:${SIGNED_DB}`, '--public-key', path.join(SIGNED, 'absent.pub'));
  assert.equal(missingPublic.code, 2);
  assert.match(missingPublic.stderr, /absent\.pub: cannot read it: no such file/);

  const SERVERS = 'servers:\n  piloty: { command: [ "true" ], policy: { version: "1", default: deny } }\n';
  const named = path.join(SIGNED, 'named.yaml');
  writeFileSync(named, `audit:\n  sinks: [ "sqlite:./data/audit.db" ]\n  signing_key: ./keys/missing.key\n${SERVERS}`);
  const missing = await cli('verify', '-c', named);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /keys\/missing\.key: cannot read it: no such file \(audit\.signing_key of .*named\.yaml\); where the private key cannot be read, verify with --public-key/);
  assert.equal((await cli('public-key', '-c', named)).code, 2);

  const wrongKey = path.join(SIGNED, 'wrong.yaml');
  writeFileSync(wrongKey, `audit:\n  sinks: [ "sqlite:./data/audit.db" ]\n  signing_key: ./not-a-key.pem\n${SERVERS}`);
  const invalid = await cli('public-key', '-c', wrongKey);
  assert.equal(invalid.code, 2);
  assert.match(invalid.stderr, /audit signing key .*not-a-key\.pem is not an Ed25519 private key/);

  // Before the gateway first ran with retention, there is no key to print.
  const fresh = await cli('public-key', '-c', CONFIG);
  assert.equal(fresh.code, 2);
  assert.match(fresh.stderr, /no audit signing key at .*data\/audit-signing\.key yet: the gateway makes it when it first starts with audit\.retention set/);
  assert.equal(existsSync(path.join(dir, 'data/audit-signing.key')), false, 'the CLI never makes a key');
});
