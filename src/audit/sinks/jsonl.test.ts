import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { chain, GENESIS_HASH, recordHash, type AuditEventInput, type AuditRecord } from '../event.js';
import { JsonlFileSink } from './jsonl.js';

const T0 = Date.UTC(2026, 10, 22, 12, 0, 0);

const event = (i: number): AuditEventInput => ({
  at: T0 + i,
  requestId: String(i),
  grantId: null,
  grantLabel: null,
  session: null,
  server: 'files',
  method: 'tools/call',
  tool: 'read_file',
  decision: i % 3 === 0 ? 'deny' : 'allow',
  rule: null,
  reason: null,
  policyVersion: 'v1',
  arguments: { path: `/tmp/${i}`, nested: { ok: true, list: [1, 'two'] } },
  upstreamStatus: null,
  latencyMs: null,
  resultBytes: null,
  error: null,
});

/** `n` records of one chained stream. */
function records(n: number, stream = 'run-1'): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (let i = 1; i <= n; i++) out.push(chain(stream, out.at(-1), event(i)));
  return out;
}

/** Bytes one record takes on its line. */
const lineBytes = (r: AuditRecord) => Buffer.byteLength(JSON.stringify(r)) + 1;

async function logPath(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'policylayer-jsonl-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'logs', 'audit.jsonl');
}

async function readAll(sink: JsonlFileSink): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for await (const r of sink.iterate()) out.push(r);
  return out;
}

test('appends one JSON line per record, the record object as is, creating the folder if needed', async (t) => {
  const file = await logPath(t);
  const sink = new JsonlFileSink({ path: file });
  const rs = records(3);
  await sink.write(rs.slice(0, 2));
  await sink.write(rs.slice(2));
  await sink.close();
  const lines = (await readFile(file, 'utf8')).split('\n');
  assert.equal(lines.pop(), '', 'the file ends with a newline');
  assert.deepEqual(lines, rs.map((r) => JSON.stringify(r)));
  assert.equal(sink.name, `jsonl:${file}`);
});

test('appends to the file an earlier run left rather than replacing it', async (t) => {
  const file = await logPath(t);
  const first = records(2, 'run-1');
  const second = records(2, 'run-2');
  const a = new JsonlFileSink({ path: file });
  await a.write(first);
  await a.close();
  const b = new JsonlFileSink({ path: file });
  await b.write(second);
  await b.close();
  assert.deepEqual(await readAll(b), [...first, ...second]);
});

test('rotates before a batch would pass maxBytes: .1 is the newest rotated file, and only maxFiles are kept', async (t) => {
  const file = await logPath(t);
  const rs = records(7);
  // Room for two records per file, not three.
  const maxBytes = Math.max(...rs.map(lineBytes)) * 2 + 10;
  const sink = new JsonlFileSink({ path: file, maxBytes, maxFiles: 2 });
  for (const r of rs) await sink.write([r]);
  await sink.close();
  assert.deepEqual(await sink.files(), [`${file}.2`, `${file}.1`, file]);
  assert.equal(existsSync(`${file}.3`), false, 'the oldest file past maxFiles is deleted');
  for (const f of await sink.files()) assert.ok((await stat(f)).size <= maxBytes, `${f} stays within maxBytes`);
  // Files of 2, 2 and 1 records: the two oldest records went with the deleted file.
  assert.deepEqual((await readAll(sink)).map((r) => r.seq), [3, 4, 5, 6, 7]);
});

test('iterate reads every record back in order across rotated files, oldest first, so the chain verifies', async (t) => {
  const file = await logPath(t);
  const rs = records(40);
  const sink = new JsonlFileSink({ path: file, maxBytes: 2048, maxFiles: 100 });
  for (let i = 0; i < rs.length; i += 3) await sink.write(rs.slice(i, i + 3));
  await sink.close();
  assert.ok((await sink.files()).length > 5, 'the log spans several files');
  const back = await readAll(sink);
  assert.deepEqual(back, rs);
  let prev = GENESIS_HASH;
  for (const r of back) {
    assert.equal(r.prevHash, prev);
    assert.equal(r.hash, recordHash(r));
    prev = r.hash;
  }
});

test('never splits a batch across files: one larger than maxBytes is written whole to a file of its own', async (t) => {
  const file = await logPath(t);
  const rs = records(6);
  const sink = new JsonlFileSink({ path: file, maxBytes: lineBytes(rs[0]!) * 2 });
  await sink.write(rs.slice(0, 1));
  await sink.write(rs.slice(1, 5));
  await sink.write(rs.slice(5));
  await sink.close();
  const perFile = await Promise.all((await sink.files()).map(async (f) => (await readFile(f, 'utf8')).trimEnd().split('\n').length));
  assert.deepEqual(perFile, [1, 4, 1]);
});

test('with maxFiles 0 keeps no rotated file, only the current one', async (t) => {
  const file = await logPath(t);
  const rs = records(3);
  const sink = new JsonlFileSink({ path: file, maxBytes: lineBytes(rs[0]!) + 5, maxFiles: 0 });
  for (const r of rs) await sink.write([r]);
  await sink.close();
  assert.deepEqual(await sink.files(), [file]);
  assert.deepEqual((await readAll(sink)).map((r) => r.seq), [3]);
});

test('iterate also reads rotated files numbered past maxFiles, left when maxFiles was lowered', async (t) => {
  const file = await logPath(t);
  const rs = records(3);
  const wide = new JsonlFileSink({ path: file, maxBytes: lineBytes(rs[0]!) + 5, maxFiles: 5 });
  for (const r of rs) await wide.write([r]);
  await wide.close();
  const narrow = new JsonlFileSink({ path: file, maxFiles: 1 });
  assert.deepEqual((await readAll(narrow)).map((r) => r.seq), [1, 2, 3]);
});

test('iterate yields nothing for a log never written, and throws naming the file and line of a damaged one', async (t) => {
  const file = await logPath(t);
  const sink = new JsonlFileSink({ path: file });
  assert.deepEqual(await readAll(sink), []);
  await sink.write(records(1));
  await sink.close();
  await writeFile(file, '{"seq": 2, "trunc\n', { flag: 'a' });
  await assert.rejects(readAll(sink), (err: Error) => err.message === `${file}:2: not a JSON line`);
});

test('an empty batch resolves without creating the file; a write after close rejects; closing twice is harmless', async (t) => {
  const file = await logPath(t);
  const sink = new JsonlFileSink({ path: file });
  await sink.write([]);
  assert.equal(existsSync(file), false);
  await sink.close();
  await sink.close();
  await assert.rejects(sink.write(records(1)), /closed/);
});

test('batches written without waiting for each other still land whole and in order', async (t) => {
  const file = await logPath(t);
  const rs = records(30);
  const sink = new JsonlFileSink({ path: file, maxBytes: 4096 });
  await Promise.all(Array.from({ length: 10 }, (_, i) => sink.write(rs.slice(i * 3, i * 3 + 3))));
  await sink.close();
  assert.deepEqual(await readAll(sink), rs);
});

test('refuses a maxBytes that is not positive and a maxFiles that is not a whole number', () => {
  assert.throws(() => new JsonlFileSink({ path: 'x', maxBytes: 0 }), /maxBytes/);
  assert.throws(() => new JsonlFileSink({ path: 'x', maxFiles: 1.5 }), /maxFiles/);
});
