import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { AuditConfig } from '../config/index.js';
import type { Logger } from '../telemetry/logger.js';
import { T0, config, event, readBack, tempDir } from './log.fixture.js';
import { loadOrCreateSigningKey } from './signing.js';
import { otherWorkWaits } from '../util/busy-poll.js';
import { AuditThread } from './thread.js';

/** A logger whose JSON lines a test can read. */
function capture(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) }) as unknown as Logger;
  return { logger, lines };
}

async function start(t: TestContext, cfg: AuditConfig, logger: Logger = capture().logger): Promise<AuditThread> {
  const thread = await AuditThread.start(cfg, logger);
  t.after(() => thread.close());
  return thread;
}

describe('the audit thread', () => {
  it('writes what the gateway records, in order, chained, with the arguments derived there', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir));
    for (let i = 1; i <= 300; i++) thread.record(event(i));
    await thread.close();
    const records = await readBack(path.join(dir, 'audit.db'));
    assert.equal(records.length, 300);
    assert.deepEqual(
      records.map((r) => r.seq),
      Array.from({ length: 300 }, (_, i) => i + 1),
    );
    assert.ok(records.every((r) => r.stream === thread.stream));
    // `keys`: the names and a hash, never the values.
    assert.deepEqual((records[0]!.arguments as { keys: string[] }).keys, ['path', 'token']);
    assert.doesNotMatch(JSON.stringify(records), /sk_live_/);
  });

  it('masks secrets in the thread when the arguments are to be redacted', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir, { arguments: 'redacted' }));
    thread.record(event(1));
    await thread.close();
    const [r] = await readBack(path.join(dir, 'audit.db'));
    assert.deepEqual(r!.arguments, { path: '/tmp/file-1', token: '[REDACTED]' });
  });

  it('resolves a strict record once it is written, after everything recorded before it', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir, { durability: 'strict' }));
    thread.record(event(1));
    thread.record(event(2));
    await thread.recordDurable(event(3));
    // Durable means readable by another connection now, not after close.
    const records = await readBack(path.join(dir, 'audit.db'));
    assert.deepEqual(
      records.map((r) => r.requestId),
      ['1', '2', '3'],
    );
  });

  it('serves queries, iteration, verification and pruning of its sinks to the gateway', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir));
    for (let i = 1; i <= 1200; i++) thread.record(event(i));
    await thread.flush();
    const [store] = thread.stores();
    assert.ok(store);
    assert.equal(store.name, `sqlite:${path.join(dir, 'audit.db')}`);
    const page = await store.query({ limit: 10, order: 'oldest' });
    assert.deepEqual(
      page.records.map((r) => r.requestId),
      ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'],
    );
    let n = 0;
    for await (const r of store.iterate()) {
      n++;
      assert.equal(r.seq, n);
    }
    assert.equal(n, 1200);
    const { key } = loadOrCreateSigningKey(path.join(dir, 'signing.key'));
    // The key crosses to the thread as it is (KeyObjects are cloneable).
    assert.deepEqual(await store.verify({ publicKeys: [key.publicKey] }), { ok: true, records: 1200, streams: 1, duplicates: 0 });
    const pruned = await store.prune(T0 + 1001, key);
    assert.deepEqual(pruned, { records: 1000, streams: 1 });
    const [checkpoint] = await store.checkpoints();
    assert.equal(checkpoint!.seq, 1000);
    assert.equal(checkpoint!.keyId, key.keyId);
    assert.deepEqual(await store.verify({ publicKeys: [key.publicKey] }), { ok: true, records: 200, streams: 1, duplicates: 0 });
  });

  it('stops an iteration the gateway abandons, and can start another', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir));
    for (let i = 1; i <= 1200; i++) thread.record(event(i));
    await thread.flush();
    const [store] = thread.stores();
    for await (const r of store!.iterate()) if (r.seq === 3) break;
    let n = 0;
    for await (const _ of store!.iterate()) n++;
    assert.equal(n, 1200);
  });

  it('keeps a store error of its kind: a foreign cursor is a RangeError', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir));
    await assert.rejects(thread.stores()[0]!.query({ after: 'not-a-cursor' }), RangeError);
  });

  it('leaves out only an event that cannot be copied to the thread, and keeps the others exact', async (t) => {
    const dir = await tempDir(t);
    const { logger, lines } = capture();
    const thread = await start(t, config(dir, { arguments: 'full' }), logger);
    thread.record(event(1));
    thread.record({ ...event(2), session: 'sess-2', arguments: { callback: () => 1 } });
    thread.record({ ...event(3), session: 'sess-2' });
    await thread.flush();
    thread.record({ ...event(4), session: 'sess-3' });
    await thread.close();
    const records = await readBack(path.join(dir, 'audit.db'));
    assert.deepEqual(
      records.map((r) => [r.requestId, r.session]),
      [
        ['1', 'sess-1'],
        ['3', 'sess-2'],
        ['4', 'sess-3'],
      ],
    );
    assert.ok(lines.some((l) => /does not copy to the audit thread/.test(String(l.msg))));
  });

  it('refuses to start when a sink cannot be opened, saying which and why', async (t) => {
    const dir = await tempDir(t);
    const file = path.join(dir, 'not-a-database.db');
    await writeFile(file, 'this is not a SQLite file, it is plain text long enough to have a header page '.repeat(20));
    await assert.rejects(AuditThread.start(config(dir, { sinks: [`sqlite:${file}`] }), capture().logger), /not a database|file is not a database/i);
  });

  it("reports a full queue and room again, so a blocking gateway can wait", async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir, { batchSize: 1, maxQueue: 5 }));
    // Written one transaction each, 3,000 records keep the queue past max_queue long enough to be
    // seen however slow the machine: both messages (full, then room) may not land in one turn.
    for (let i = 1; i <= 3000; i++) thread.record(event(i));
    let sawFull = false;
    const until = Date.now() + 20_000;
    while (!sawFull && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 1));
      sawFull = thread.full;
    }
    assert.ok(sawFull, 'the queue of 3,000 records written one at a time passed max_queue 5');
    await thread.whenRoom();
    assert.equal(thread.full, false);
    await thread.flush();
    assert.equal(thread.stats()[0]!.written, 3000);
  });

  it('counts events handed over and not yet taken by the thread toward max_queue, so a thread that falls behind cannot grow memory without bound', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir, { maxQueue: 50 }));
    for (let i = 1; i <= 60; i++) thread.record(event(i));
    assert.equal(thread.full, false, 'still waiting on the event loop, not handed over');
    // A durable record hands everything before it over at once.
    const durable = thread.recordDurable(event(61));
    assert.equal(thread.full, true, '61 handed over, none known to be taken');
    await thread.whenRoom();
    assert.equal(thread.full, false);
    await durable;
    await thread.flush();
    assert.equal(thread.stats()[0]!.written, 61);
  });

  it('hands events recorded after a quiet spell to the thread at the end of that turn of the event loop, with no timer to wait for', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir, { maxQueue: 3 }));
    for (let i = 1; i <= 3; i++) thread.record(event(i));
    assert.equal(thread.full, false, 'recorded, still on the event loop');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(thread.full, true, 'all three handed over in one message before any timer could fire');
    await thread.flush();
    assert.equal(thread.stats()[0]!.written, 3);
  });

  it('with on_full: drop, drops and counts what would wait for the thread past max_queue, in every sink', async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir, { maxQueue: 50, onFull: 'drop' }));
    // In one turn of the event loop the thread cannot have taken any: 50 wait, 10 are dropped.
    for (let i = 1; i <= 60; i++) thread.record(event(i));
    assert.equal(thread.full, false, 'drop never blocks');
    await thread.flush();
    const stats = thread.stats()[0]!;
    assert.equal(stats.written, 50);
    assert.equal(stats.dropped, 10);
    assert.equal((await thread.statsNow())[0]!.dropped, 10);
  });

  it("pauses the event loop's busy-polling while the thread is a flush interval behind, and not once it has caught up", async (t) => {
    const dir = await tempDir(t);
    const thread = await start(t, config(dir, { flushIntervalMs: 20 }));
    assert.equal(otherWorkWaits(), false);
    // Some 80 messages in one turn of the event loop: far more than the thread takes meanwhile.
    for (let i = 1; i <= 20_000; i++) thread.record(event(i));
    assert.equal(otherWorkWaits(), true);
    await thread.flush();
    const until = Date.now() + 10_000;
    while (otherWorkWaits() && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.equal(otherWorkWaits(), false, 'caught up');
    assert.equal(thread.stats()[0]!.written, 20_000);
  });

  describe('its CPU priority', { skip: existsSync('/proc/thread-self') ? false : 'threads have no priority of their own here (Linux only)' }, () => {
    /** Each of this process's threads: its nice value and scheduling policy, from /proc (fields 19 and 41 of its stat). */
    const threads = (): Array<{ nice: number; policy: number }> =>
      readdirSync('/proc/self/task').map((tid) => {
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return { nice: Number(fields[16]), policy: Number(fields[38]) };
      });
    const SCHED_IDLE = 5;
    const yielding = () => threads().filter((x) => x.nice === 19);
    const chrtInstalled = spawnSync('chrt', ['--version']).status === 0;

    it('yields the CPU to the calls in async mode: the thread, and only it, runs at nice 19 and, where chrt is installed, as SCHED_IDLE', async (t) => {
      const before = yielding();
      const thread = await start(t, config(await tempDir(t)));
      thread.record(event(1));
      await thread.flush();
      const after = yielding();
      assert.equal(after.length, before.length + 1);
      if (chrtInstalled) assert.equal(after.filter((x) => x.policy === SCHED_IDLE).length, before.filter((x) => x.policy === SCHED_IDLE).length + 1);
      assert.equal(os.getPriority(), 0, 'the process itself keeps its priority');
      assert.equal(threads()[0]!.policy, 0, 'the event loop keeps the normal policy');
    });

    it('keeps the gateway priority in strict mode, where every call waits for it', async (t) => {
      const before = threads().filter((x) => x.nice === 19 || x.policy === SCHED_IDLE).length;
      const thread = await start(t, config(await tempDir(t), { durability: 'strict' }));
      await thread.recordDurable(event(1));
      assert.equal(threads().filter((x) => x.nice === 19 || x.policy === SCHED_IDLE).length, before);
    });
  });

  it("logs the writer's warnings through the gateway's logger", async (t) => {
    const dir = await tempDir(t);
    const { logger, lines } = capture();
    // Nothing listens there: the sink goes down at the first write and its records spill.
    const thread = await start(t, config(dir, { sinks: ['postgres://audit:secret@127.0.0.1:1/audit'] }), logger);
    thread.record(event(1));
    await thread.flush();
    const stats = await thread.statsNow();
    assert.equal(stats[0]!.state, 'down');
    assert.equal(stats[0]!.spilled, 1);
    const down = lines.find((l) => typeof l.msg === 'string' && /down|spill/i.test(l.msg));
    assert.ok(down, `a warning about the sink, in ${JSON.stringify(lines)}`);
    assert.equal(down.component, 'audit');
    assert.doesNotMatch(JSON.stringify(lines), /secret/);
  });

  it('rejects what waits on it when the thread dies, and counts later events as lost instead of throwing', async (t) => {
    const dir = await tempDir(t);
    const { logger, lines } = capture();
    const thread = await start(t, config(dir), logger);
    const worker = (thread as unknown as { worker: { terminate(): Promise<number> } }).worker;
    // Messages it may not have finished with when it dies.
    for (let i = 100; i < 2_100; i++) thread.record(event(i));
    await worker.terminate();
    // The gateway learns of the exit by an event of its own, a turn or so later.
    const until = Date.now() + 10_000;
    while (!lines.some((l) => /audit thread stopped/.test(String(l.msg))) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.ok(lines.some((l) => l.level === 50 && /audit thread stopped/.test(String(l.msg))));
    await assert.rejects(thread.flush(), /audit log stopped/);
    assert.equal(otherWorkWaits(), false, 'a thread that is gone holds back no polling');
    assert.doesNotThrow(() => thread.record(event(2)));
    await assert.rejects(thread.recordDurable(event(3)), /audit log stopped/);
    await thread.close();
    assert.equal((await readFile(path.join(dir, 'audit.db'))).length > 0, true);
  });
});
