import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { silentLogger } from '../telemetry/logger.js';
import { config, event, readBack, tempDir } from './log.fixture.js';
import { AuditLog } from './log.js';
import { LoopRecorder, recordsOnLoop } from './loop-recorder.js';
import type { AuditRequest } from './trail.js';

const request = (i: number): AuditRequest => ({
  requestId: i,
  grantId: `grant-${i % 7}`,
  grantLabel: `agent-${i % 7}`,
  session: 'sess-1',
  server: 'files',
  method: 'tools/call',
  tool: 'read_file',
  args: { path: `/srv/report-${i}.csv` },
  policyVersion: 'v1',
});

/** A forwarded call as the gateway records it: its decision and outcome in one record. */
function call(log: AuditLog, i: number): void {
  const c = log.trail.begin(request(i));
  c.allowedBy('/tools/read_file', null);
  void c.forwarding();
  c.finished('ok', 100, null);
}

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

describe('recording on the event loop', () => {
  it('is what an async log of SQLite files alone does; anything else the audit thread records', () => {
    const sinks = (...s: string[]) => ({ sinks: s, durability: 'async' as const });
    assert.equal(recordsOnLoop(sinks('sqlite:/var/lib/pl/audit.db')), true);
    assert.equal(recordsOnLoop(sinks('sqlite:/a.db', 'sqlite:/b.db')), true);
    assert.equal(recordsOnLoop({ ...sinks('sqlite:/a.db'), durability: 'strict' }), false);
    assert.equal(recordsOnLoop(sinks('sqlite:/a.db', 'jsonl:/a.jsonl')), false);
    assert.equal(recordsOnLoop(sinks('sqlite::memory:')), false);
    assert.equal(recordsOnLoop(sinks('postgres://db/audit')), false);
    assert.equal(recordsOnLoop(sinks('stdout')), false);
    assert.equal(recordsOnLoop(sinks()), false);
  });

  it('chains what is recorded at the end of the turn, not on the call’s path, and writes it in order', async (t) => {
    const dir = await tempDir(t);
    const recorder = LoopRecorder.open(config(dir), silentLogger(), 'stream-1');
    t.after(() => recorder.close());
    for (let i = 1; i <= 300; i++) recorder.record(event(i));
    assert.equal(recorder.stats()[0]!.queued, 0, 'nothing is chained yet');
    await nextTurn();
    assert.equal(recorder.stats()[0]!.queued + recorder.stats()[0]!.written, 300);
    await recorder.close();
    const records = await readBack(path.join(dir, 'audit.db'));
    assert.deepEqual(
      records.map((r) => r.seq),
      Array.from({ length: 300 }, (_, i) => i + 1),
    );
    assert.ok(records.every((r) => r.stream === 'stream-1'));
    // `keys`: the names and a hash, never the values.
    assert.deepEqual((records[0]!.arguments as { keys: string[] }).keys, ['path', 'token']);
    assert.doesNotMatch(JSON.stringify(records), /sk_live_/);
  });

  it('counts what is recorded after close as lost, and writes none of it', async (t) => {
    const dir = await tempDir(t);
    const recorder = LoopRecorder.open(config(dir), silentLogger(), 'stream-1');
    recorder.record(event(1));
    await recorder.close();
    recorder.record(event(2));
    assert.deepEqual(
      (await readBack(path.join(dir, 'audit.db'))).map((r) => r.requestId),
      ['1'],
    );
  });

  it('is how the audit log records by default, its thread reading and verifying what the loop wrote', async (t) => {
    const dir = await tempDir(t);
    const log = await AuditLog.open(config(dir));
    t.after(() => log.close());
    assert.equal(log.recordsOnLoop, true);
    for (let i = 1; i <= 400; i++) call(log, i);
    await log.flush();
    const [stats] = await log.stats();
    assert.equal(stats!.name, `sqlite:${path.join(dir, 'audit.db')}`);
    assert.equal(stats!.written, 400);
    assert.equal(stats!.spilled, 0);
    const [store] = log.stores();
    const page = await store!.query({ limit: 3, order: 'oldest' });
    assert.deepEqual(
      page.records.map((r) => [r.requestId, r.stream]),
      [
        ['1', log.stream],
        ['2', log.stream],
        ['3', log.stream],
      ],
    );
    assert.deepEqual(await store!.verify({ publicKeys: log.publicKeys() }), { ok: true, records: 400, streams: 1, duplicates: 0 });
  });

  it('leaves the WAL to its thread, which copies the loop’s commits into the database file', async (t) => {
    const dir = await tempDir(t);
    const file = path.join(dir, 'audit.db');
    const log = await AuditLog.open(config(dir));
    t.after(() => log.close());
    const before = statSync(file).size;
    for (let i = 1; i <= 3_000; i++) {
      call(log, i);
      if (i % 100 === 0) await nextTurn();
    }
    await log.flush();
    const deadline = Date.now() + 5_000;
    while (statSync(file).size === before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(statSync(file).size > before, 'the database file grew: a checkpoint ran');
  });

  it('prunes on its thread while the loop writes, and the loop waits for the lock rather than spill', async (t) => {
    const dir = await tempDir(t);
    const log = await AuditLog.open(config(dir, { retentionMs: 30 * 86_400_000, signingKey: path.join(dir, 'audit-signing.key') }));
    t.after(() => log.close());
    for (let i = 1; i <= 5_000; i++) {
      call(log, i);
      if (i % 250 === 0) await nextTurn();
    }
    await log.flush();
    // Everything so far is older than "now - 1 ms" a moment from now; more is written meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 5));
    const pruning = log.prune(1, Date.now());
    for (let i = 5_001; i <= 6_000; i++) {
      call(log, i);
      if (i % 50 === 0) await nextTurn();
    }
    await pruning;
    await log.flush();
    const [stats] = await log.stats();
    assert.equal(stats!.written, 6_000);
    assert.equal(stats!.spilled, 0);
    assert.equal(stats!.sinkErrors, 0);
    const [store] = log.stores();
    const result = await store!.verify({ publicKeys: log.publicKeys() });
    assert.equal(result.ok, true);
    assert.ok(result.records < 6_000 && result.records >= 1_000, `${result.records} records left after pruning`);
  });

  it('stays with the audit thread in strict mode, and is refused where it cannot serve', async (t) => {
    const dir = await tempDir(t);
    const strict = await AuditLog.open(config(dir, { durability: 'strict' }));
    t.after(() => strict.close());
    assert.equal(strict.recordsOnLoop, false);
    await assert.rejects(AuditLog.open(config(dir, { sinks: [`jsonl:${path.join(dir, 'a.jsonl')}`] }), silentLogger(), { recordOn: 'loop' }), /only with durability async and SQLite file sinks/);
  });
});
