import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { chain, recordHash, type AuditEventInput, type AuditRecord } from '../event.js';
import { checkpointSignatureValid, signCheckpoint, type AuditSigningKey } from '../signing.js';
import { verifyChain } from '../verify.js';
import type { Worker } from 'node:worker_threads';
import { AUDIT_SQLITE_SCHEMA_VERSION, openSqliteAuditSink, type SqliteAuditSink } from './sqlite.js';
import { pruneContract } from './prune-contract.js';
import { A, B, allRecords, event, newSigningKey as newKey, streamOf, T0 } from './records.fixture.js';

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-audit-sqlite-'));
let files = 0;
const freshFile = () => path.join(dir, `audit-${++files}.db`);

after(() => rmSync(dir, { recursive: true, force: true }));

/** The gateway's audit signing key: prune signs with it, verify trusts it. */
const KEY = newKey();
const TRUSTED = { publicKeys: [KEY.publicKey] };

const all = allRecords;

/** Opens the sink's file the way anyone with access to it could, and runs `tamper` on it. */
function tamperWith(file: string, tamper: (db: Database.Database) => void): void {
  const db = new Database(file);
  try {
    tamper(db);
  } finally {
    db.close();
  }
}

/** The id of `text` in audit_strings, adding it if missing: how a tamperer changes a string field. */
function stringId(db: Database.Database, text: string): number {
  db.prepare('INSERT INTO audit_strings (text) VALUES (?) ON CONFLICT DO NOTHING').run(text);
  return db.prepare<[string], { id: number }>('SELECT id FROM audit_strings WHERE text = ?').get(text)!.id;
}

/** A sink on a fresh file holding `records`. */
async function sinkWith(records: readonly AuditRecord[]): Promise<{ sink: SqliteAuditSink; file: string }> {
  const file = freshFile();
  const sink = openSqliteAuditSink(file);
  await sink.write(records);
  return { sink, file };
}

describe('SQLite audit sink: writing and reading back', () => {
  it('writes a batch and reads back every field exactly, nulls, absent arguments and fractions included', async () => {
    const first = event(1, T0);
    const events: AuditEventInput[] = [
      first,
      {
        ...first,
        at: T0 + 5,
        requestId: null,
        grantId: null,
        grantLabel: null,
        session: null,
        method: 'tools/list',
        tool: null,
        rule: null,
        reason: null,
        policyVersion: null,
        arguments: null,
        upstreamStatus: null,
        latencyMs: null,
        resultBytes: null,
        error: null,
      },
      { ...first, at: T0 + 6, method: 'ping', arguments: undefined, latencyMs: 0.125, resultBytes: 0 },
      {
        ...first,
        at: T0 + 7,
        tool: 'créer_fiche',
        reason: 'non, pas « ça » 🚫',
        arguments: { path: '/tmp/ü', nested: { list: [1, 2.5, null, true, 'x'], empty: {} }, big: 12345678901234 },
        upstreamStatus: 'error',
        error: 'upstream error -32603: "internal"',
      },
    ];
    const records: AuditRecord[] = [];
    for (const e of events) records.push(chain(A, records[records.length - 1], e));
    const { sink } = await sinkWith(records);
    try {
      assert.deepStrictEqual(await all(sink), records);
      const page = await sink.query({ order: 'oldest' });
      assert.deepStrictEqual(page.records, records);
      assert.equal(page.next, undefined);
      assert.deepEqual(await sink.verify(), { ok: true, records: 4, streams: 1, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });

  it('keeps a record holding a lone UTF-16 surrogate exactly, so its hash still verifies', async () => {
    // JSON.parse('"\\ud800"') makes such a string out of a client's request; SQLite's UTF-8 text cannot hold it.
    const lone = JSON.parse('"bad \\ud800 name"') as string;
    const records = [chain(A, undefined, { ...event(1), tool: lone, reason: 'fine' })];
    const { sink, file } = await sinkWith(records);
    try {
      assert.deepStrictEqual(await all(sink), records);
      assert.equal((await sink.verify()).ok, true);
      tamperWith(file, (db) => {
        const row = db.prepare<[], { tool: string; record_json: string | null }>('SELECT tool, record_json FROM audit_log').get()!;
        assert.notEqual(row.tool, lone, 'the column holds what UTF-8 can, for queries');
        assert.match(row.tool, /^bad \ufffd+ name$/);
        assert.notEqual(row.record_json, null);
      });
    } finally {
      await sink.close();
    }
  });

  it('resolves an empty batch without writing anything', async () => {
    const { sink } = await sinkWith([]);
    try {
      assert.deepEqual(await all(sink), []);
    } finally {
      await sink.close();
    }
  });

  it('creates the file and its folders in WAL mode, and opening it again changes nothing', async () => {
    const file = path.join(dir, 'nested', 'deeper', 'audit.db');
    const records = streamOf(A, 3);
    const sink = openSqliteAuditSink(file);
    assert.equal(sink.name, `sqlite:${file}`);
    await sink.write(records);
    await sink.close();
    assert.equal(existsSync(file), true);
    const schema = () =>
      tamperWith(file, (db) => {
        assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
        assert.equal(db.pragma('user_version', { simple: true }), AUDIT_SQLITE_SCHEMA_VERSION);
        const names = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE name LIKE 'audit%' ORDER BY name").all();
        assert.deepEqual(
          names.map((n) => n.name),
          ['audit_checkpoints', 'audit_log', 'audit_record_buckets', 'audit_records', 'audit_records_chain', 'audit_streams', 'audit_strings', 'audit_summary'],
        );
      });
    schema();
    const again = openSqliteAuditSink(file);
    try {
      assert.deepStrictEqual(await all(again), records);
    } finally {
      await again.close();
    }
    schema();
  });

  it('refuses a file whose schema is newer than this code knows', () => {
    const file = freshFile();
    tamperWith(file, (db) => db.pragma(`user_version = ${AUDIT_SQLITE_SCHEMA_VERSION + 1}`));
    assert.throws(() => openSqliteAuditSink(file), /newer than this gateway's/);
  });

  it('writes none of a batch when one of its records conflicts with a stored one (all or nothing)', async () => {
    const records = streamOf(A, 7);
    const { sink } = await sinkWith(records.slice(0, 5));
    try {
      const other = chain(A, records[1], { ...event(3), reason: 'forged' });
      await assert.rejects(sink.write([records[5]!, records[6]!, other]), /already has a different record 3/);
      assert.deepStrictEqual(await all(sink), records.slice(0, 5));
    } finally {
      await sink.close();
    }
  });

  it('passes over records it already holds with the same hash, since the writer delivers at least once', async () => {
    const records = streamOf(A, 8);
    const { sink } = await sinkWith(records.slice(0, 5));
    try {
      await sink.write(records.slice(3));
      assert.deepStrictEqual(await all(sink), records);
    } finally {
      await sink.close();
    }
  });

  it('rejects a write once closed, and closing twice is harmless', async () => {
    const { sink } = await sinkWith([]);
    await sink.close();
    await sink.close();
    await assert.rejects(sink.write(streamOf(A, 1)));
  });

  it('reads :memory: as it reads a file', async () => {
    const sink = openSqliteAuditSink(':memory:');
    try {
      const records = streamOf(A, 3);
      await sink.write(records);
      assert.equal(sink.name, 'sqlite::memory:');
      assert.deepStrictEqual(await all(sink), records);
      assert.equal((await sink.verify()).ok, true);
    } finally {
      await sink.close();
    }
  });
});

describe('SQLite audit sink: queries', () => {
  // Two streams written at the same times, so pages must order records with equal times: by
  // the order they were written in, here all of A, then all of B.
  const a = streamOf(A, 30, (k) => T0 + Math.ceil(k / 2) * 1_000);
  const b = streamOf(B, 30, (k) => T0 + Math.ceil(k / 2) * 1_000);
  const everything = [...a, ...b];
  const written = (r: AuditRecord) => (r.stream === A ? 0 : 1_000) + r.seq;
  const newestFirst = (rs: AuditRecord[]) => [...rs].sort((x, y) => y.at - x.at || written(y) - written(x));

  async function withLog(fn: (sink: SqliteAuditSink) => Promise<void>): Promise<void> {
    const sink = openSqliteAuditSink(freshFile());
    try {
      await sink.write(a);
      await sink.write(b);
      await fn(sink);
    } finally {
      await sink.close();
    }
  }

  it('filters by grant, tool, decision, server and time, newest first unless asked otherwise', async () => {
    await withLog(async (sink) => {
      const cases: Array<[Parameters<SqliteAuditSink['query']>[0], (r: AuditRecord) => boolean]> = [
        [{ grant: 'grant-1' }, (r) => r.grantId === 'grant-1'],
        [{ tool: 'delete_contact' }, (r) => r.tool === 'delete_contact'],
        [{ decision: 'deny' }, (r) => r.decision === 'deny'],
        [{ server: 'github', decision: 'allow' }, (r) => r.server === 'github' && r.decision === 'allow'],
        [{ since: T0 + 5_000, until: T0 + 9_000 }, (r) => r.at >= T0 + 5_000 && r.at < T0 + 9_000],
        [{ grant: 'grant-2', tool: 'search', since: T0 + 3_000 }, (r) => r.grantId === 'grant-2' && r.tool === 'search' && r.at >= T0 + 3_000],
      ];
      for (const [filter, match] of cases) {
        const page = await sink.query({ ...filter, limit: 1_000 });
        assert.deepStrictEqual(page.records, newestFirst(everything.filter(match)), JSON.stringify(filter));
        assert.equal(page.next, undefined);
        const oldest = await sink.query({ ...filter, limit: 1_000, order: 'oldest' });
        assert.deepStrictEqual(oldest.records, newestFirst(everything.filter(match)).reverse(), JSON.stringify(filter));
      }
    });
  });

  it('pages through every match with the cursor, either way, never repeating or skipping a record of the same time', async () => {
    await withLog(async (sink) => {
      for (const order of ['newest', 'oldest'] as const) {
        for (const filter of [{}, { grant: 'grant-0' }, { decision: 'allow' as const }]) {
          const seen: AuditRecord[] = [];
          let after: string | undefined;
          let pages = 0;
          do {
            const page = await sink.query({ ...filter, order, limit: 7, after });
            seen.push(...page.records);
            after = page.next;
            pages++;
            assert.ok(page.records.length === 7 || after === undefined, 'only the last page is short');
          } while (after !== undefined);
          const expected = newestFirst(everything.filter((r) => (filter.grant === undefined || r.grantId === filter.grant) && (filter.decision === undefined || r.decision === filter.decision)));
          assert.deepStrictEqual(seen, order === 'newest' ? expected : expected.reverse(), `${order} ${JSON.stringify(filter)}`);
          assert.equal(pages, Math.max(1, Math.ceil(expected.length / 7)));
        }
      }
    });
  });

  it('gives 100 records a page unless asked, and never more than 1,000', async () => {
    await withLog(async (sink) => {
      assert.equal((await sink.query({})).records.length, 60);
      assert.equal((await sink.query({ limit: 0 })).records.length, 1);
      const sink2 = openSqliteAuditSink(':memory:');
      try {
        await sink2.write(streamOf(A, 1_100));
        assert.equal((await sink2.query({})).records.length, 100);
        assert.equal((await sink2.query({ limit: 5_000 })).records.length, 1_000);
      } finally {
        await sink2.close();
      }
    });
  });

  it('refuses a cursor it did not make', async () => {
    await withLog(async (sink) => {
      await assert.rejects(sink.query({ after: 'not-a-cursor' }), /invalid cursor/);
      await assert.rejects(sink.query({ after: Buffer.from('[1,"x",3]').toString('base64url') }), /invalid cursor/);
    });
  });
});

describe('SQLite audit sink: tampering with the file is found by verification', () => {
  const records = streamOf(A, 20);

  async function tampered(tamper: (db: Database.Database) => void) {
    const { sink, file } = await sinkWith(records);
    try {
      assert.deepEqual(await verifyChain(sink.iterate()), { ok: true, records: 20, streams: 1, duplicates: 0 }, 'untouched, it verifies');
      tamperWith(file, tamper);
      const result = await verifyChain(sink.iterate());
      assert.deepEqual(await sink.verify(), result, 'verify() finds the same');
      assert.equal(result.ok, false);
      return result as Extract<typeof result, { ok: false }>;
    } finally {
      await sink.close();
    }
  }

  it('a record whose tool was edited', async () => {
    const f = await tampered((db) => db.prepare('UPDATE audit_records SET tool = ? WHERE seq = 7').run(stringId(db, 'read_only_search')));
    assert.deepEqual(f, { ok: false, problem: 'edited', stream: A, seq: 7, message: 'stream 3f2a9c1d…, record 7: its content does not match its hash (edited)' });
  });

  it('a record whose reason was edited', async () => {
    const f = await tampered((db) => db.prepare("UPDATE audit_records SET reason = 'approved by the CFO' WHERE seq = 12").run());
    assert.deepEqual([f.problem, f.seq], ['edited', 12]);
  });

  it('a record edited and given a hash that fits its new content', async () => {
    const forged = { ...records[6]!, decision: 'allow' as const, reason: null };
    const f = await tampered((db) =>
      db.prepare('UPDATE audit_records SET decision = ?, reason = NULL, hash = unhex(?) WHERE seq = 7').run(stringId(db, 'allow'), recordHash(forged)),
    );
    assert.deepEqual([f.problem, f.seq], ['edited', 7]);
    assert.match(f.message, /record 7: it was changed and its hash recomputed/);
  });

  it('a deleted record', async () => {
    const f = await tampered((db) => db.prepare('DELETE FROM audit_records WHERE seq = 9').run());
    assert.deepEqual(f, { ok: false, problem: 'deleted', stream: A, seq: 9, message: 'stream 3f2a9c1d…, record 9: missing: record 10 follows record 8 (deleted)' });
  });

  it('a forged record inserted with a correct hash, the records after it renumbered to make room', async () => {
    const forged = chain(A, records[9], { ...event(10), tool: 'export_all', decision: 'allow' });
    const f = await tampered((db) => {
      // Two steps, since renumbering in place would collide with the primary key.
      db.prepare('UPDATE audit_records SET seq = -(seq + 1) WHERE seq >= 11').run();
      db.prepare('UPDATE audit_records SET seq = -seq WHERE seq < 0').run();
      // Its row id: its time, and a place among the records of that millisecond no other takes.
      const columns = 'id, stream, seq, request_id, grant_id, grant_label, session, server, method, tool, decision, rule, reason, policy_version, arguments, upstream_status, latency_ms, result_bytes, error, prev_hash, hash';
      const text = (v: string | null) => (v === null ? null : stringId(db, v));
      db.prepare(`INSERT INTO audit_records (${columns}) VALUES ((? << 20) | 999, (SELECT id FROM audit_streams WHERE stream = ?), ${Array(17).fill('?').join(', ')}, unhex(?), unhex(?))`).run(
        forged.at, forged.stream, forged.seq, forged.requestId, text(forged.grantId), text(forged.grantLabel), text(forged.session), text(forged.server), text(forged.method),
        text(forged.tool), text(forged.decision), text(forged.rule), forged.reason, text(forged.policyVersion), JSON.stringify(forged.arguments), text(forged.upstreamStatus),
        forged.latencyMs, forged.resultBytes, forged.error, forged.prevHash, forged.hash,
      );
    });
    assert.deepEqual([f.problem, f.seq], ['inserted', 11]);
    assert.match(f.message, /record 11: it does not belong to the chain: record 12 \(written as 11\) follows record 10/);
  });

  it('two records whose seq were swapped', async () => {
    const f = await tampered((db) => {
      db.prepare('UPDATE audit_records SET seq = -1 WHERE seq = 5').run();
      db.prepare('UPDATE audit_records SET seq = 5 WHERE seq = 15').run();
      db.prepare('UPDATE audit_records SET seq = 15 WHERE seq = -1').run();
    });
    assert.deepEqual(f, { ok: false, problem: 'reordered', stream: A, seq: 5, message: 'stream 3f2a9c1d…, record 5: it holds record 15, moved here (reordered)' });
  });
});

describe('SQLite audit sink: pruning', () => {
  pruneContract(async (records) => {
    const { sink } = await sinkWith(records);
    return { sink, release: () => sink.close() };
  }, KEY);

  it('still finds a record edited after pruning', async () => {
    const { sink, file } = await sinkWith(streamOf(A, 20));
    try {
      await sink.prune(T0 + 10_500, KEY);
      tamperWith(file, (db) => db.prepare('UPDATE audit_records SET tool = ? WHERE seq = 14').run(stringId(db, 'x')));
      const f = await verifyChain(sink.iterate(), { checkpoints: await sink.checkpoints(), ...TRUSTED });
      assert.deepEqual(f, { ok: false, problem: 'edited', stream: A, seq: 14, message: 'stream 3f2a9c1d…, record 14: its content does not match its hash (edited)' });
    } finally {
      await sink.close();
    }
  });

  it('finds records deleted right after the checkpoint, and a checkpoint that was altered', async () => {
    const { sink, file } = await sinkWith(streamOf(A, 20));
    try {
      await sink.prune(T0 + 10_500, KEY);
      tamperWith(file, (db) => db.prepare('DELETE FROM audit_records WHERE seq IN (11, 12)').run());
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.seq, f.message], ['deleted', 11, 'stream 3f2a9c1d…, records 11–12: missing: record 13 follows the checkpoint (record 10, pruned) (deleted)']);
      tamperWith(file, (db) => db.prepare('UPDATE audit_checkpoints SET seq = 12').run());
      const g = await sink.verify(TRUSTED);
      assert.deepEqual(g.ok ? g : [g.problem, g.seq], ['checkpoint', 12]);
      assert.match(g.ok ? '' : g.message, /the checkpoint \(record 12, pruned\): it does not match its signature .*: it was changed after it was signed/);
    } finally {
      await sink.close();
    }
  });

  it('verify() reads records and checkpoints from one snapshot, so a prune running meanwhile does not confuse it', async () => {
    const records = streamOf(A, 5_000, (k) => T0 + k);
    const { sink } = await sinkWith(records);
    try {
      const verifying = sink.verify(TRUSTED);
      const pruned = await sink.prune(T0 + 3_000.5, KEY);
      assert.deepEqual(pruned, { records: 3_000, streams: 1 });
      assert.deepEqual(await verifying, { ok: true, records: 5_000, streams: 1, duplicates: 0 });
      assert.deepEqual(await sink.verify(TRUSTED), { ok: true, records: 2_000, streams: 1, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });
});

/** The sink's writer thread, which the tests below stop to see what a crash does. */
const writerThread = (sink: SqliteAuditSink): Worker | undefined => (sink as unknown as { worker: Worker | undefined }).worker;

/**
 * Runs `script` (an ES module that may read PL_SINK and PL_EVENT, the URLs of the sink's and the
 * event's modules, and PL_FILE) in a process of its own with `env`; resolves with its exit code and
 * output, or rejects if it has not exited within `timeoutMs`.
 */
function inProcess(script: string, env: Record<string, string>, timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, PL_SINK: new URL('./sqlite.js', import.meta.url).href, PL_EVENT: new URL('../event.js', import.meta.url).href, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`the process did not exit within ${timeoutMs} ms: ${stdout}${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A child process's records: `count` of stream PL_STREAM, 1 ms apart from T0, written in batches of 250. */
const WRITE_STREAM = `
const { openSqliteAuditSink } = await import(process.env.PL_SINK);
const { chain } = await import(process.env.PL_EVENT);
const sink = openSqliteAuditSink(process.env.PL_FILE);
const count = Number(process.env.PL_COUNT);
let prev;
let batch = [];
for (let i = 1; i <= count; i++) {
  batch.push(prev = chain(process.env.PL_STREAM, prev, {
    at: ${T0} + i, requestId: String(i), grantId: 'grant-' + (i % 7), grantLabel: null, session: null, server: 'crm',
    method: 'tools/call', tool: 'search', decision: 'allow', rule: null, reason: null, policyVersion: null,
    arguments: undefined, upstreamStatus: 'ok', latencyMs: 1, resultBytes: 10, error: null,
  }));
  if (batch.length === 250 || i === count) {
    await sink.write(batch);
    batch = [];
  }
}
`;

describe('SQLite audit sink: its writer thread', () => {
  it('resolves a write once its batch is committed, so another connection reads it at once', async () => {
    const { sink, file } = await sinkWith(streamOf(A, 1_200));
    try {
      tamperWith(file, (db) => assert.equal(db.prepare<[], { n: number }>('SELECT count(*) AS n FROM audit_records').get()!.n, 1_200));
    } finally {
      await sink.close();
    }
  });

  it('rejects the writes in flight when its thread dies, saying so, and writes them again on a new thread', async () => {
    const records = streamOf(A, 3_000);
    const { sink } = await sinkWith(records.slice(0, 1_000));
    try {
      const writing = sink.write(records.slice(1_000));
      await writerThread(sink)!.terminate();
      await assert.rejects(writing, /its writer thread stopped .*may or may not have been written, and writing it again is safe/);
      await sink.write(records.slice(1_000));
      assert.deepStrictEqual(await all(sink), records);
      assert.notEqual(writerThread(sink), undefined);
    } finally {
      await sink.close();
    }
  });

  it('rejects the writes in flight when an error escapes its thread', async () => {
    const { sink } = await sinkWith(streamOf(A, 10));
    try {
      const writing = sink.write(streamOf(B, 2_000));
      writerThread(sink)!.postMessage({ t: 'not a message the thread knows' });
      await assert.rejects(writing, /its writer thread stopped \(audit SQLite writer thread: unknown message/);
    } finally {
      await sink.close();
    }
  });

  it('ends its thread on close, so nothing is left running', async () => {
    const { sink } = await sinkWith(streamOf(A, 10));
    const thread = writerThread(sink)!;
    const exited = new Promise<number>((resolve) => thread.once('exit', resolve));
    await sink.close();
    assert.equal(await exited, 0);
    assert.equal(writerThread(sink), undefined);
    await assert.rejects(sink.write(streamOf(B, 1)), /is closed/);
  });

  it('lets a process that wrote and closed the sink exit', async () => {
    const { code, stderr } = await inProcess(`${WRITE_STREAM}\nawait sink.close();`, { PL_FILE: freshFile(), PL_STREAM: A, PL_COUNT: '600' });
    assert.equal(code, 0, stderr);
  });

  it('lets a process exit once its writes are done even if it never closes the sink', async () => {
    const { code, stderr } = await inProcess(WRITE_STREAM, { PL_FILE: freshFile(), PL_STREAM: A, PL_COUNT: '600' });
    assert.equal(code, 0, stderr);
  });

  it('keeps the process alive while a write is pending, though nothing waits for it', async () => {
    const script = `
      const { openSqliteAuditSink } = await import(process.env.PL_SINK);
      const { chain } = await import(process.env.PL_EVENT);
      const sink = openSqliteAuditSink(process.env.PL_FILE);
      const record = chain('s', undefined, { at: 1, requestId: null, grantId: null, grantLabel: null, session: null, server: 'crm', method: 'ping', tool: null, decision: 'allow', rule: null, reason: null, policyVersion: null, arguments: undefined, upstreamStatus: null, latencyMs: null, resultBytes: null, error: null });
      sink.write([record]).then(() => console.log('written'));
    `;
    const { code, stdout, stderr } = await inProcess(script, { PL_FILE: freshFile() });
    assert.equal(code, 0, stderr);
    assert.equal(stdout.trim(), 'written');
  });

  it('says how long its own work held the event loop at most, and starts over after each reading', async () => {
    const { sink } = await sinkWith([]);
    try {
      sink.takeLongestStep();
      await sink.write(streamOf(A, 2_000));
      const longest = sink.takeLongestStep();
      assert.ok(longest > 0, 'a write takes some time on the main thread');
      assert.equal(sink.takeLongestStep(), 0);
    } finally {
      await sink.close();
    }
  });

  it('writes batches that arrive together, each still all or nothing', async () => {
    const a = streamOf(A, 6);
    const b = streamOf(B, 3);
    const { sink } = await sinkWith(a.slice(0, 3));
    try {
      const forged = chain(A, a[0], { ...event(2), reason: 'forged' });
      const outcomes = await Promise.allSettled([sink.write(a.slice(3)), sink.write([forged]), sink.write(b)]);
      assert.deepEqual(
        outcomes.map((o) => o.status),
        ['fulfilled', 'rejected', 'fulfilled'],
      );
      assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /already has a different record 2/);
      assert.deepStrictEqual(await all(sink), [...a, ...b]);
    } finally {
      await sink.close();
    }
  });

  it('lets two processes write to one file at once, and their records verify and query as one log', async () => {
    const file = freshFile();
    const runs = await Promise.all(
      [A, B].map((stream) => inProcess(`${WRITE_STREAM}\nawait sink.close();`, { PL_FILE: file, PL_STREAM: stream, PL_COUNT: '3000' }, 60_000)),
    );
    for (const { code, stderr } of runs) assert.equal(code, 0, stderr);
    const sink = openSqliteAuditSink(file);
    try {
      assert.deepEqual(await sink.verify(), { ok: true, records: 6_000, streams: 2, duplicates: 0 });
      const seen: AuditRecord[] = [];
      let after: string | undefined;
      do {
        const page = await sink.query({ grant: 'grant-3', order: 'oldest', limit: 500, after });
        seen.push(...page.records);
        after = page.next;
      } while (after !== undefined);
      const expected = [A, B].flatMap((stream) => Array.from({ length: 3_000 }, (_, k) => k + 1).filter((i) => i % 7 === 3).map((i) => `${stream}/${i}`));
      assert.deepEqual(seen.map((r) => `${r.stream}/${r.seq}`).sort(), expected.sort());
      assert.ok(seen.every((r, i) => i === 0 || seen[i - 1]!.at <= r.at), 'oldest first');
    } finally {
      await sink.close();
    }
  });

  it('stops pruning when closed, and says so', async () => {
    const { sink } = await sinkWith(streamOf(A, 12_000, (k) => T0 + k));
    const pruning = sink.prune(T0 + 11_000.5, KEY);
    const closing = sink.close();
    await assert.rejects(pruning, /pruning stopped \(the sink was closed\) after deleting \d+ records; the log verifies as it is/);
    await closing;
  });
});

describe('SQLite audit sink: signed checkpoints', () => {
  const OTHER = newKey();
  const streamId = "(SELECT id FROM audit_streams WHERE stream = ?)";

  /** What someone with write access does to hide records 1..seq of `stream`: deletes them and writes a checkpoint that fits. */
  function forge(file: string, records: readonly AuditRecord[], seq: number, signer?: AuditSigningKey): void {
    const last = records[seq - 1]!;
    const content = { stream: last.stream, seq, hash: last.hash, at: last.at, prunedAt: T0 + 99_000 };
    const signed = signer === undefined ? { keyId: null, signature: null } : signCheckpoint(signer, content);
    tamperWith(file, (db) => {
      db.prepare(`DELETE FROM audit_records WHERE stream = ${streamId} AND seq <= ?`).run(last.stream, seq);
      db.prepare('INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
        last.stream,
        seq,
        last.hash,
        last.at,
        content.prunedAt,
        signed.keyId,
        signed.signature,
      );
    });
  }

  it('signs each checkpoint on the writer thread, in the transaction that deletes its records', async () => {
    const file = freshFile();
    const sink = openSqliteAuditSink(file, { clock: () => T0 + 99_000 });
    const records = streamOf(A, 5);
    try {
      await sink.write(records);
      await sink.prune(T0 + 3_500, KEY);
      tamperWith(file, (db) => {
        const row = db.prepare('SELECT stream, seq, hash, at, pruned_at AS prunedAt, key_id AS keyId, signature FROM audit_checkpoints').get() as {
          stream: string;
          seq: number;
          hash: string;
          at: number;
          prunedAt: number;
          keyId: string;
          signature: string;
        };
        assert.deepEqual({ ...row, signature: undefined }, { stream: A, seq: 3, hash: records[2]!.hash, at: T0 + 3_000, prunedAt: T0 + 99_000, keyId: KEY.keyId, signature: undefined });
        assert.ok(checkpointSignatureValid(KEY.publicKey, row));
      });
    } finally {
      await sink.close();
    }
  });

  it('names the stream whose checkpoint was forged: records deleted by SQL and an unsigned checkpoint inserted', async () => {
    const a = streamOf(A, 20);
    const { sink, file } = await sinkWith([...a, ...streamOf(B, 10)]);
    try {
      forge(file, a, 5);
      assert.deepEqual(await sink.verify(TRUSTED), {
        ok: false,
        problem: 'checkpoint',
        stream: A,
        seq: 5,
        message: `stream 3f2a9c1d…, the checkpoint (record 5, pruned): it is not signed by the audit signing key ${KEY.keyId}: the records before it may have been removed by hand (or it was written before checkpoints were signed) (checkpoint)`,
      });
    } finally {
      await sink.close();
    }
  });

  it('names the stream whose checkpoint was forged with another key', async () => {
    const b = streamOf(B, 10);
    const { sink, file } = await sinkWith([...streamOf(A, 20), ...b]);
    try {
      forge(file, b, 4, OTHER);
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['checkpoint', B, 4]);
      assert.match(f.ok ? '' : f.message, new RegExp(`^stream b81c04e2…, the checkpoint \\(record 4, pruned\\): it is signed by key ${OTHER.keyId}, not by the audit signing key ${KEY.keyId}`));
    } finally {
      await sink.close();
    }
  });

  it('finds a signed checkpoint whose seq or hash was changed by SQL', async () => {
    const records = streamOf(A, 20);
    for (const tamper of [
      // Two more records gone, the checkpoint moved over them.
      `DELETE FROM audit_records WHERE seq IN (11, 12); UPDATE audit_checkpoints SET seq = 12, hash = '${records[11]!.hash}'`,
      `UPDATE audit_checkpoints SET hash = '${'e'.repeat(64)}'`,
    ]) {
      const { sink, file } = await sinkWith(records);
      try {
        await sink.prune(T0 + 10_500, KEY);
        tamperWith(file, (db) => db.exec(tamper));
        const f = await sink.verify(TRUSTED);
        assert.equal(f.ok ? f : f.problem, 'checkpoint', tamper);
        assert.match(f.ok ? '' : f.message, /^stream 3f2a9c1d…, the checkpoint \(record 1[02], pruned\): it does not match its signature by the audit signing key [0-9a-f]{16}: it was changed after it was signed \(checkpoint\)$/);
      } finally {
        await sink.close();
      }
    }
  });

  it('does not sign over a forged checkpoint: the stream is held where it is, and says why', async () => {
    const a = streamOf(A, 20);
    const b = streamOf(B, 10, (k) => T0 + k * 3_000);
    const { sink, file } = await sinkWith([...a, ...b]);
    try {
      forge(file, a, 5);
      assert.deepEqual(await sink.prune(T0 + 10_500, KEY), {
        records: 3,
        streams: 1,
        held: [{ stream: A, reason: 'its checkpoint (record 5, pruned) is not signed' }],
      });
      assert.deepEqual((await all(sink)).filter((r) => r.stream === A).map((r) => r.seq)[0], 6, "A's records are left as they are");
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['checkpoint', A, 5]);
    } finally {
      await sink.close();
    }
  });

  it('does not sign over records deleted by hand from the start of a stream', async () => {
    const a = streamOf(A, 20);
    const { sink, file } = await sinkWith(a);
    try {
      tamperWith(file, (db) => db.prepare('DELETE FROM audit_records WHERE seq <= 3').run());
      assert.deepEqual(await sink.prune(T0 + 10_500, KEY), { records: 0, streams: 0, held: [{ stream: A, reason: 'record 4 does not follow the start of the stream' }] });
      assert.deepEqual(await sink.checkpoints(), []);
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.seq], ['deleted', 1]);
    } finally {
      await sink.close();
    }
  });

  it('prunes up to a hole made by hand, and no further', async () => {
    const a = streamOf(A, 20);
    const { sink, file } = await sinkWith(a);
    try {
      tamperWith(file, (db) => db.prepare('DELETE FROM audit_records WHERE seq IN (7, 8)').run());
      assert.deepEqual(await sink.prune(T0 + 15_500, KEY), { records: 6, streams: 1, held: [{ stream: A, reason: 'record 9 does not follow record 6' }] });
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.seq], ['deleted', 7]);
    } finally {
      await sink.close();
    }
  });

  it('opens a file of the schema before checkpoints were signed, and verify reports its unsigned checkpoint', async () => {
    const a = streamOf(A, 20);
    const { sink: writer, file } = await sinkWith(a);
    await writer.close();
    // The file as the schema of version 1 left it after a prune: a checkpoint without key_id or signature.
    tamperWith(file, (db) => {
      db.exec('ALTER TABLE audit_checkpoints DROP COLUMN key_id; ALTER TABLE audit_checkpoints DROP COLUMN signature; PRAGMA user_version = 1');
      db.prepare('DELETE FROM audit_records WHERE seq <= 5').run();
      db.prepare('INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at) VALUES (?, ?, ?, ?, ?)').run(A, 5, a[4]!.hash, a[4]!.at, T0 + 99_000);
    });
    const sink = openSqliteAuditSink(file);
    try {
      tamperWith(file, (db) => assert.equal(db.pragma('user_version', { simple: true }), AUDIT_SQLITE_SCHEMA_VERSION));
      assert.deepEqual(await sink.checkpoints(), [{ stream: A, seq: 5, hash: a[4]!.hash, at: a[4]!.at, prunedAt: T0 + 99_000, keyId: null, signature: null }]);
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['checkpoint', A, 5]);
      assert.match(f.ok ? '' : f.message, /it is not signed by the audit signing key .*\(or it was written before checkpoints were signed\)/);
      assert.deepEqual((await sink.prune(T0 + 10_500, KEY)).held, [{ stream: A, reason: 'its checkpoint (record 5, pruned) is not signed' }]);
    } finally {
      await sink.close();
    }
  });

  it('verifies a pruned log only with a key: without one it is unverifiable, never a pass', async () => {
    const { sink } = await sinkWith(streamOf(A, 20));
    try {
      await sink.prune(T0 + 10_500, KEY);
      const f = await sink.verify();
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['unverifiable', A, 10]);
      assert.deepEqual(await sink.verify({ publicKeys: [OTHER.publicKey, KEY.publicKey] }), { ok: true, records: 10, streams: 1, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });
});

describe('SQLite audit sink: records the columns cannot hold as they are', () => {
  it('keeps a record whose hashes are not 64 hex digits exactly, for verification to report', async () => {
    const [first] = streamOf(A, 1);
    const odd = { ...first!, hash: 'NOT A HASH', prevHash: 'ABC' };
    const { sink } = await sinkWith([odd]);
    try {
      assert.deepStrictEqual(await all(sink), [odd]);
      const result = await sink.verify();
      assert.equal(result.ok ? undefined : result.problem, 'malformed');
    } finally {
      await sink.close();
    }
  });

  it('rejects a batch holding a field of a type the record cannot have', async () => {
    const [first] = streamOf(A, 1);
    const { sink } = await sinkWith([]);
    try {
      await assert.rejects(sink.write([{ ...first!, tool: 42 as unknown as string }]), /a record's tool must be a string or null, not number; the batch was not written/);
      await assert.rejects(sink.write([{ ...first!, server: null as unknown as string }]), /a record's server is missing/);
      assert.deepEqual(await all(sink), []);
    } finally {
      await sink.close();
    }
  });

  it('rejects a batch whose arguments cannot be serialised, and writes the next one', async () => {
    const records = streamOf(A, 3);
    const { sink } = await sinkWith([]);
    try {
      // The writer could not have hashed it either; the sink still must not fail any other way.
      const unserialisable = { ...records[0]!, arguments: { amount: 10n } };
      await assert.rejects(sink.write([unserialisable]), /BigInt/);
      await sink.write(records);
      assert.deepStrictEqual(await all(sink), records);
    } finally {
      await sink.close();
    }
  });

  it('forgets the id of a string that only a rolled-back batch added, though that batch used it last', async () => {
    const file = freshFile();
    const sink = openSqliteAuditSink(file, { inline: true });
    try {
      const tried = chain(A, undefined, { ...event(1), tool: 'fresh_tool' });
      const unserialisable = { ...chain(A, tried, event(2)), arguments: { amount: 10n } };
      await assert.rejects(sink.write([tried, unserialisable]), /BigInt/);
      // Another new string now takes the id the rolled-back one had; the tool must not follow it.
      const record = chain(A, undefined, { ...event(1), grantId: 'fresh_grant', tool: 'fresh_tool' });
      await sink.write([record]);
      assert.deepStrictEqual(await all(sink), [record]);
    } finally {
      await sink.close();
    }
  });

  it('rejects a batch holding a value that cannot reach the writer thread, undoing the part of it that did', async () => {
    const records: AuditRecord[] = [];
    for (let k = 1; k <= 300; k++) records.push(chain(A, records[records.length - 1], { ...event(k), grantId: `grant-${k}` }));
    const { sink } = await sinkWith([]);
    try {
      const broken = [...records.slice(0, 200)];
      broken[150] = { ...broken[150]!, tool: (() => 'a function') as unknown as string };
      await assert.rejects(sink.write(broken), /could not be cloned/);
      assert.deepEqual(await all(sink), []);
      // The grants first named in the part that went across are named again, and read back right.
      await sink.write(records);
      assert.deepStrictEqual(await all(sink), records);
    } finally {
      await sink.close();
    }
  });

  it('rejects a batch whose time is not a whole number of ms that fits a row id', async () => {
    const { sink } = await sinkWith([]);
    try {
      for (const at of [T0 + 0.5, 2 ** 50, Number.NaN]) {
        await assert.rejects(sink.write([chain(A, undefined, event(1, at))]), /its time .* is not a whole number of ms within ±2\^43/);
      }
      assert.deepEqual(await all(sink), []);
    } finally {
      await sink.close();
    }
  });

  it('reads back records by the tens of thousands of distinct sessions, past where the thread is sent its strings anew', async () => {
    const records: AuditRecord[] = [];
    for (let k = 1; k <= 60_000; k++) records.push(chain(A, records[records.length - 1], { ...event(k, T0 + k), session: `session-${k}` }));
    const { sink } = await sinkWith([]);
    try {
      for (let i = 0; i < records.length; i += 500) await sink.write(records.slice(i, i + 500));
      const back = await all(sink);
      assert.equal(back.length, records.length);
      assert.deepStrictEqual(back[59_999], records[59_999]);
      assert.ok(back.every((r, i) => r.session === records[i]!.session && r.hash === records[i]!.hash));
    } finally {
      await sink.close();
    }
  });
});

/** mulberry32: a seeded generator, so the traffic below is the same on every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('SQLite audit sink: queries over many buckets of time', () => {
  // Six seconds of traffic, 3 records per 2 ms, spread over two streams: about 90 buckets of 64 ms,
  // most summarised and the last second or so not yet. Grant 7 calls once in a while, so pages of
  // it cross many buckets; grant 0 calls all the time.
  const rnd = seeded(11);
  const streams: Record<string, AuditRecord[]> = { [A]: [], [B]: [] };
  const written: AuditRecord[] = [];
  for (let k = 0; k < 9_000; k++) {
    const stream = rnd() < 0.5 ? A : B;
    const own = streams[stream]!;
    const grant = rnd() < 0.01 ? 7 : Math.floor(rnd() * 4);
    const e: AuditEventInput = {
      ...event(k, T0 + Math.floor((k * 2) / 3)),
      grantId: `grant-${grant}`,
      tool: ['search', 'update_contact', 'delete_contact', 'export'][Math.floor(rnd() * 4)]!,
      decision: (['allow', 'allow', 'deny', 'rate_limited'] as const)[Math.floor(rnd() * 4)]!,
      server: rnd() < 0.5 ? 'crm' : 'github',
    };
    const r = chain(stream, own[own.length - 1], e);
    own.push(r);
    written.push(r);
  }
  const rank = new Map(written.map((r, i) => [r, i]));
  const newestFirst = (rs: AuditRecord[]) => [...rs].sort((x, y) => y.at - x.at || rank.get(y)! - rank.get(x)!);

  async function pagesOf(sink: SqliteAuditSink, filter: Parameters<SqliteAuditSink['query']>[0]): Promise<AuditRecord[]> {
    const seen: AuditRecord[] = [];
    let after: string | undefined;
    do {
      const page = await sink.query({ ...filter, after });
      seen.push(...page.records);
      after = page.next;
    } while (after !== undefined);
    return seen;
  }

  it('pages through filtered records exactly as a scan of every record would, summarised buckets and recent ones alike', async () => {
    const sink = openSqliteAuditSink(freshFile());
    try {
      for (let i = 0; i < written.length; i += 250) await sink.write(written.slice(i, i + 250));
      const filters: Array<[Parameters<SqliteAuditSink['query']>[0], (r: AuditRecord) => boolean]> = [
        [{ grant: 'grant-7' }, (r) => r.grantId === 'grant-7'],
        [{ grant: 'grant-0', decision: 'deny' }, (r) => r.grantId === 'grant-0' && r.decision === 'deny'],
        [{ tool: 'export', server: 'github' }, (r) => r.tool === 'export' && r.server === 'github'],
        [{ grant: 'grant-7', since: T0 + 1_000, until: T0 + 5_900 }, (r) => r.grantId === 'grant-7' && r.at >= T0 + 1_000 && r.at < T0 + 5_900],
        [{ decision: 'rate_limited', since: T0 + 5_500 }, (r) => r.decision === 'rate_limited' && r.at >= T0 + 5_500],
        [{ grant: 'nobody' }, () => false],
      ];
      for (const [filter, match] of filters) {
        const expected = newestFirst(written.filter(match));
        assert.deepStrictEqual(await pagesOf(sink, { ...filter, limit: 37 }), expected, `newest ${JSON.stringify(filter)}`);
        assert.deepStrictEqual(await pagesOf(sink, { ...filter, limit: 37, order: 'oldest' }), expected.reverse(), `oldest ${JSON.stringify(filter)}`);
      }
    } finally {
      await sink.close();
    }
  });

  it('finds records written late, into buckets already summarised, in their place in time', async () => {
    const file = freshFile();
    const sink = openSqliteAuditSink(file);
    try {
      await sink.write(streams[A]!);
      // Stream B arrives after all of A, its times spread over the same six seconds.
      await sink.write(streams[B]!);
      tamperWith(file, (db) => {
        const watermark = db.prepare<[], { b: number }>('SELECT buckets_below AS b FROM audit_summary').get()!.b;
        assert.ok(watermark * 64 > T0 + 4_000, 'most of the log is summarised');
      });
      for (const grant of ['grant-7', 'grant-2']) {
        const all = written.filter((r) => r.grantId === grant);
        const expected = [...all].sort((x, y) => y.at - x.at || (x.stream === y.stream ? y.seq - x.seq : x.stream === B ? -1 : 1));
        assert.deepStrictEqual(await pagesOf(sink, { grant, limit: 50 }), expected, grant);
      }
    } finally {
      await sink.close();
    }
  });

  it('prunes the bucket rows older than every remaining record, and queries stay exact', async () => {
    const file = freshFile();
    const sink = openSqliteAuditSink(file);
    try {
      for (let i = 0; i < written.length; i += 500) await sink.write(written.slice(i, i + 500));
      await sink.prune(T0 + 3_000, KEY);
      const kept = written.filter((r) => r.at >= T0 + 3_000);
      tamperWith(file, (db) => {
        const oldest = db.prepare<[], { b: number }>('SELECT min(bucket) AS b FROM audit_record_buckets').get()!.b;
        assert.equal(oldest, Math.floor((T0 + 3_000) / 64));
      });
      assert.deepStrictEqual(await pagesOf(sink, { grant: 'grant-7', limit: 20 }), newestFirst(kept.filter((r) => r.grantId === 'grant-7')));
      assert.deepEqual(await sink.verify(TRUSTED), { ok: true, records: kept.length, streams: 2, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });
});
