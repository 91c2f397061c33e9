import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { GENESIS_HASH, recordHash, type AuditEventInput, type AuditRecord } from './event.js';
import { event as logEvent } from './log.fixture.js';
import type { AuditSink } from './sink.js';
import { JsonlFileSink } from './sinks/jsonl.js';
import { StdoutSink } from './sinks/stdout.js';
import { AuditWriter, type AuditWriterOptions, type WriterTimers } from './writer.js';

const INTERVAL = 20;
const RETRY = 1000;

/** The fixture's event, its arguments already derived (`keys`), as the writer takes them. */
const event = (i: number): AuditEventInput => logEvent(i, { keys: ['path'], sha256: 'ab'.repeat(32) });

/** An in-memory sink that can be made to fail, to hang until released, or to be slow. */
class MemorySink implements AuditSink {
  readonly records: AuditRecord[] = [];
  /** Sizes of the writes it accepted, in order. */
  readonly batches: number[] = [];
  attempts = 0;
  inFlight = 0;
  maxInFlight = 0;
  closed = false;
  failing = false;
  /** When set, this many more writes succeed, then it fails. */
  acceptWrites: number | undefined;
  delayMs = 0;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;

  constructor(readonly name = 'memory') {}

  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  async write(batch: readonly AuditRecord[]): Promise<void> {
    this.attempts++;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.gate !== undefined) await this.gate;
      if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
      if (this.acceptWrites !== undefined && this.acceptWrites-- <= 0) this.failing = true;
      if (this.failing) throw new Error(`${this.name} is down`);
      this.records.push(...batch);
      this.batches.push(batch.length);
    } finally {
      this.inFlight--;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Timers the test fires by hand: the flush interval (INTERVAL) and the retries (every other delay). */
class ManualTimers implements WriterTimers {
  private next = 1;
  readonly pending = new Map<number, { fn: () => void; ms: number }>();

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.pending.set(id, { fn, ms });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }

  retryDelays(): number[] {
    return [...this.pending.values()].filter((t) => t.ms !== INTERVAL).map((t) => t.ms);
  }

  fireInterval(): void {
    this.fire((ms) => ms === INTERVAL);
  }

  fireRetries(): void {
    this.fire((ms) => ms !== INTERVAL);
  }

  private fire(which: (ms: number) => boolean): void {
    for (const [id, t] of [...this.pending]) {
      if (!which(t.ms)) continue;
      this.pending.delete(id);
      t.fn();
    }
  }
}

async function eventually(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(2);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups = new WeakMap<TestContext, (() => Promise<unknown>)[]>();

/**
 * Runs `fn` after the test, last registered first: a writer made after its folder is closed
 * before the folder is removed, or its close would spill into a folder it recreates.
 */
function cleanup(t: TestContext, fn: () => Promise<unknown>): void {
  let list = cleanups.get(t);
  if (list === undefined) {
    const fns: (() => Promise<unknown>)[] = [];
    cleanups.set(t, (list = fns));
    t.after(async () => {
      for (const f of fns.reverse()) await f();
    });
  }
  list.push(fn);
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'policylayer-audit-'));
  cleanup(t, () => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function setup(t: TestContext, sinks: AuditSink[], over: Partial<AuditWriterOptions> = {}) {
  const spillDir = over.spillDir ?? path.join(await tempDir(t), 'spill');
  const timers = new ManualTimers();
  const writer = new AuditWriter({ sinks, spillDir, timers, flushIntervalMs: INTERVAL, retryInitialMs: RETRY, ...over });
  cleanup(t, () => writer.close().catch(() => undefined));
  return { writer, timers, spillDir };
}

const seqs = (records: readonly AuditRecord[]) => records.map((r) => r.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const statsOf = (w: AuditWriter, name: string) => w.stats().find((s) => s.name === name)!;

async function spillLines(spillDir: string): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (const f of (await readdir(spillDir)).filter((n) => n.endsWith('.spill.jsonl')).sort()) {
    const text = await readFile(path.join(spillDir, f), 'utf8');
    for (const line of text.split('\n')) if (line.length > 0) out.push(JSON.parse(line) as AuditRecord);
  }
  return out;
}

async function spillFiles(spillDir: string): Promise<string[]> {
  return readdir(spillDir).catch(() => []);
}

// ---- chaining and batching ----

test('chains every record into the stream: seq 1, 2, 3… each carrying the hash of the one before', async (t) => {
  const sink = new MemorySink();
  const { writer } = await setup(t, [sink], { stream: 'run-1' });
  for (let i = 1; i <= 3; i++) writer.record(event(i));
  await writer.flush();
  assert.deepEqual(seqs(sink.records), [1, 2, 3]);
  let prev = GENESIS_HASH;
  for (const r of sink.records) {
    assert.equal(r.stream, 'run-1');
    assert.equal(r.prevHash, prev);
    assert.equal(r.hash, recordHash(r));
    prev = r.hash;
  }
});

test('a writer without a stream id gets a random UUID of its own', async (t) => {
  const a = (await setup(t, [])).writer;
  const b = (await setup(t, [])).writer;
  assert.match(a.stream, /^[0-9a-f-]{36}$/);
  assert.notEqual(a.stream, b.stream);
});

test('writes a batch as soon as batchSize records are queued, without waiting for the interval', async (t) => {
  const sink = new MemorySink();
  const { writer, timers } = await setup(t, [sink], { batchSize: 3 });
  for (let i = 1; i <= 7; i++) writer.record(event(i));
  await eventually(() => sink.records.length === 6, 'two full batches are written');
  await sleep(20);
  assert.deepEqual(sink.batches, [3, 3], 'the seventh record waits for the interval');
  timers.fireInterval();
  await eventually(() => sink.records.length === 7, 'the interval flushes the rest');
  assert.deepEqual(sink.batches, [3, 3, 1]);
});

test('writes what is queued as one batch when the flush interval elapses, and not before', async (t) => {
  const sink = new MemorySink();
  const { writer, timers } = await setup(t, [sink]);
  for (let i = 1; i <= 4; i++) writer.record(event(i));
  assert.equal(timers.pending.size, 1, 'one interval timer for the writer, not one per record');
  await sleep(20);
  assert.equal(sink.attempts, 0);
  timers.fireInterval();
  await eventually(() => sink.records.length === 4, 'the queued records are written');
  assert.deepEqual(sink.batches, [4]);
});

test('keeps each sink in record order with never more than one batch in flight', async (t) => {
  const sink = new MemorySink();
  sink.delayMs = 1;
  const { writer } = await setup(t, [sink], { batchSize: 10 });
  for (let i = 1; i <= 95; i++) {
    writer.record(event(i));
    if (i % 7 === 0) await sleep(0);
  }
  await writer.flush();
  assert.deepEqual(seqs(sink.records), range(1, 95));
  assert.equal(sink.maxInFlight, 1);
  assert.ok(sink.batches.every((n) => n <= 10), 'no batch is larger than batchSize');
});

test('refuses two sinks of the same name, since each spill file is found again by its sink name', async (t) => {
  const dir = await tempDir(t);
  assert.throws(() => new AuditWriter({ sinks: [new MemorySink('x'), new MemorySink('x')], spillDir: dir }), /two audit sinks are named 'x'/);
});

// ---- a sink that fails ----

test('a failing sink spills to a file and, once back, gets the spilled records in order before newer ones, none lost or duplicated', async (t) => {
  const sink = new MemorySink('primary');
  const { writer, timers, spillDir } = await setup(t, [sink]);
  sink.failing = true;
  for (let i = 1; i <= 5; i++) writer.record(event(i));
  await writer.flush();
  assert.deepEqual(seqs(await spillLines(spillDir)), range(1, 5), 'the failed batch is on disk');
  assert.equal(statsOf(writer, 'primary').state, 'down');

  for (let i = 6; i <= 8; i++) writer.record(event(i));
  await writer.flush();
  assert.deepEqual(seqs(await spillLines(spillDir)), range(1, 8), 'records after the failure go straight to the spill file');

  sink.failing = false;
  writer.record(event(9));
  timers.fireRetries();
  await eventually(() => statsOf(writer, 'primary').state === 'up', 'the sink is up again');
  for (let i = 10; i <= 12; i++) writer.record(event(i));
  await writer.flush();

  assert.deepEqual(seqs(sink.records), range(1, 12));
  assert.deepEqual(await spillFiles(spillDir), [], 'the replayed spill file is removed');
  const s = statsOf(writer, 'primary');
  assert.equal(s.written, 12);
  assert.equal(s.spilled, 8, 'the ninth record, recorded but not yet flushed when the sink came back, went to it directly');
  assert.equal(s.dropped, 0);
  assert.equal(s.queued, 0);
  assert.ok(s.sinkErrors >= 1);
});

test('retries a sink that stays down with a doubling backoff, capped at retryMaxMs', async (t) => {
  const sink = new MemorySink();
  sink.failing = true;
  const { writer, timers } = await setup(t, [sink], { retryMaxMs: 3000 });
  writer.record(event(1));
  await writer.flush();
  assert.deepEqual(timers.retryDelays(), [1000]);
  for (const expected of [2000, 3000, 3000]) {
    const errors = sink.attempts;
    timers.fireRetries();
    await eventually(() => timers.retryDelays().length === 1, 'the next retry is scheduled');
    assert.deepEqual(timers.retryDelays(), [expected]);
    assert.equal(sink.attempts, errors + 1, 'each retry is one write attempt');
  }
  assert.equal(statsOf(writer, 'memory').sinkErrors, 4);
  assert.equal(statsOf(writer, 'memory').downSince !== null, true);
});

test('one dead sink does not hold back another: the healthy one gets every record while the dead one spills', async (t) => {
  const dead = new MemorySink('dead');
  const healthy = new MemorySink('healthy');
  dead.failing = true;
  const { writer, spillDir } = await setup(t, [dead, healthy], { batchSize: 4 });
  for (let i = 1; i <= 10; i++) writer.record(event(i));
  await writer.flush();
  assert.deepEqual(seqs(healthy.records), range(1, 10));
  assert.deepEqual(seqs(await spillLines(spillDir)), range(1, 10));
  assert.equal(statsOf(writer, 'healthy').spilled, 0);
});

test('a sink that hangs holds back only its own lane', async (t) => {
  const slow = new MemorySink('slow');
  const fast = new MemorySink('fast');
  slow.hold();
  const { writer, timers } = await setup(t, [slow, fast]);
  for (let i = 1; i <= 3; i++) writer.record(event(i));
  timers.fireInterval();
  for (let i = 4; i <= 6; i++) writer.record(event(i));
  timers.fireInterval();
  await eventually(() => fast.records.length === 6, 'the fast sink has all six');
  assert.equal(slow.records.length, 0);
  assert.equal(statsOf(writer, 'slow').queued, 6);
  slow.release();
  await writer.flush();
  assert.deepEqual(seqs(slow.records), range(1, 6));
});

test('a gateway restarted with a spill file left over replays it first, then the new run\'s records', async (t) => {
  const spillDir = path.join(await tempDir(t), 'spill');
  const before = new MemorySink('primary');
  before.failing = true;
  const first = (await setup(t, [before], { spillDir, stream: 'run-1' })).writer;
  for (let i = 1; i <= 3; i++) first.record(event(i));
  await first.close();
  assert.equal((await spillFiles(spillDir)).length, 1, 'close leaves the spill file for the next run');

  const after = new MemorySink('primary');
  const second = (await setup(t, [after], { spillDir, stream: 'run-2' })).writer;
  second.record(event(100));
  second.record(event(101));
  await second.flush();
  await eventually(() => after.records.length === 5, 'the old and the new records are written');
  assert.deepEqual(
    after.records.map((r) => `${r.stream}/${r.seq}`),
    ['run-1/1', 'run-1/2', 'run-1/3', 'run-2/1', 'run-2/2'],
  );
  await eventually(() => statsOf(second, 'primary').state === 'up', 'the replay is over');
  assert.deepEqual(await spillFiles(spillDir), []);
});

test('a replay cut short resumes after the last batch the sink took, so nothing reaches it twice', async (t) => {
  const spillDir = path.join(await tempDir(t), 'spill');
  const before = new MemorySink('primary');
  before.failing = true;
  const { writer: first, timers } = await setup(t, [before], { spillDir, batchSize: 2 });
  for (let i = 1; i <= 6; i++) first.record(event(i));
  await first.flush();
  before.failing = false;
  before.acceptWrites = 1;
  timers.fireRetries();
  await eventually(() => before.attempts === 3 && statsOf(first, 'primary').state === 'down', 'the replay fails after one batch');
  await first.close();
  assert.deepEqual(seqs(before.records), [1, 2]);

  const after = new MemorySink('primary');
  const second = (await setup(t, [after], { spillDir, batchSize: 2 })).writer;
  await eventually(() => statsOf(second, 'primary').state === 'up', 'the leftover file is replayed');
  assert.deepEqual(seqs(after.records), [3, 4, 5, 6]);
});

test('a spill file ending in a partial line (a crash mid-append) loses only that line: records appended later are replayed', async (t) => {
  const spillDir = path.join(await tempDir(t), 'spill');
  const sink = new MemorySink('primary');
  sink.failing = true;
  const { writer: first } = await setup(t, [sink], { spillDir, stream: 'run-1' });
  first.record(event(1));
  await first.close();
  const [file] = await spillFiles(spillDir);
  await writeFile(path.join(spillDir, file!), '{"seq":2,"stream":"run-1","tor', { flag: 'a' });

  const again = new MemorySink('primary');
  again.failing = true;
  const { writer: second, timers } = await setup(t, [again], { spillDir, stream: 'run-2' });
  second.record(event(1));
  await second.flush();
  again.failing = false;
  timers.fireRetries();
  await eventually(() => statsOf(second, 'primary').state === 'up', 'the replay is over');
  assert.deepEqual(
    again.records.map((r) => `${r.stream}/${r.seq}`),
    ['run-1/1', 'run-2/1'],
  );
});

// ---- strict mode ----

test('strict: recordDurable resolves only once every sink has written the record', async (t) => {
  const a = new MemorySink('a');
  const b = new MemorySink('b');
  a.hold();
  const { writer } = await setup(t, [a, b]);
  let durable = false;
  const p = writer.recordDurable(event(1)).then(() => (durable = true));
  await eventually(() => b.records.length === 1, 'b has written it');
  await sleep(10);
  assert.equal(durable, false, 'a has not written it yet');
  a.release();
  await p;
  assert.deepEqual(seqs(a.records), [1]);
});

test('strict: with a sink down, recordDurable resolves once the record is fsynced to its spill file', async (t) => {
  const sink = new MemorySink();
  sink.failing = true;
  const { writer, spillDir } = await setup(t, [sink]);
  await writer.recordDurable(event(1));
  assert.deepEqual(seqs(await spillLines(spillDir)), [1]);
  assert.equal(sink.records.length, 0);
});

test('strict: rejects when the record can be neither written nor spilled, and the record is still written once the sink is back', async (t) => {
  const dir = await tempDir(t);
  const notADir = path.join(dir, 'file');
  await writeFile(notADir, 'x');
  const sink = new MemorySink();
  sink.failing = true;
  const { writer, timers } = await setup(t, [sink], { spillDir: path.join(notADir, 'spill') });
  await assert.rejects(writer.recordDurable(event(1)), /is down and its spill file cannot be written/);
  sink.failing = false;
  timers.fireRetries();
  await eventually(() => sink.records.length === 1, 'the record reaches the sink');
  assert.equal(statsOf(writer, 'memory').state, 'up');
});

test('strict: callers arriving while a write is in flight share the next write (group commit)', async (t) => {
  const sink = new MemorySink();
  sink.hold();
  const { writer } = await setup(t, [sink]);
  const first = writer.recordDurable(event(1));
  await eventually(() => sink.inFlight === 1, 'the first write is in flight');
  const rest = range(2, 100).map((i) => writer.recordDurable(event(i)));
  sink.release();
  await Promise.all([first, ...rest]);
  assert.deepEqual(sink.batches, [1, 99]);
});

// ---- a full queue ----

test('drop mode: past maxQueue a slow sink loses records and counts them; the other sink gets every one', async (t) => {
  const slow = new MemorySink('slow');
  const fast = new MemorySink('fast');
  slow.hold();
  const { writer, timers } = await setup(t, [slow, fast], { maxQueue: 5, onFull: 'drop' });
  for (let i = 1; i <= 5; i++) writer.record(event(i));
  timers.fireInterval();
  await eventually(() => fast.records.length === 5 && slow.inFlight === 1, 'the first five are in flight');
  for (let i = 6; i <= 10; i++) writer.record(event(i));
  timers.fireInterval();
  await eventually(() => fast.records.length === 10, 'the fast sink keeps up');
  for (let i = 11; i <= 13; i++) writer.record(event(i));
  assert.equal(statsOf(writer, 'slow').dropped, 3);
  assert.equal(writer.full, true);
  slow.release();
  await writer.flush();
  assert.deepEqual(seqs(slow.records), range(1, 10));
  assert.deepEqual(seqs(fast.records), range(1, 13));
  assert.equal(statsOf(writer, 'fast').dropped, 0);
  assert.equal(statsOf(writer, 'slow').written, 10);
});

test('drop mode never drops a strict record: its caller is already waiting for it', async (t) => {
  const sink = new MemorySink();
  sink.hold();
  const { writer } = await setup(t, [sink], { maxQueue: 1, onFull: 'drop' });
  writer.record(event(1));
  const p = writer.recordDurable(event(2));
  sink.release();
  await p;
  assert.deepEqual(seqs(sink.records), [1, 2]);
  assert.equal(statsOf(writer, 'memory').dropped, 0);
});

test('block mode: past maxQueue nothing is dropped; the writer reports full and whenRoom resolves once the sink catches up', async (t) => {
  const sink = new MemorySink();
  sink.hold();
  const { writer, timers } = await setup(t, [sink], { maxQueue: 3 });
  writer.record(event(1));
  timers.fireInterval();
  await eventually(() => sink.inFlight === 1, 'the first record is in flight');
  for (let i = 2; i <= 5; i++) writer.record(event(i));
  assert.equal(writer.full, true);
  let room = false;
  const waiting = writer.whenRoom().then(() => (room = true));
  timers.fireInterval();
  await sleep(10);
  assert.equal(room, false);
  sink.release();
  await waiting;
  assert.equal(writer.full, false);
  await writer.flush();
  assert.deepEqual(seqs(sink.records), range(1, 5));
  assert.equal(statsOf(writer, 'memory').dropped, 0);
});

// ---- flush and close ----

test('flush resolves once everything recorded before it is written, without waiting for the interval', async (t) => {
  const sink = new MemorySink();
  const { writer } = await setup(t, [sink]);
  await writer.flush();
  for (let i = 1; i <= 3; i++) writer.record(event(i));
  await writer.flush();
  assert.deepEqual(seqs(sink.records), [1, 2, 3]);
});

test('close writes what is still queued, in batches of at most batchSize, then closes every sink', async (t) => {
  const a = new MemorySink('a');
  const b = new MemorySink('b');
  const { writer } = await setup(t, [a, b], { batchSize: 500 });
  for (let i = 1; i <= 1200; i++) writer.record(event(i));
  await writer.close();
  for (const s of [a, b]) {
    assert.deepEqual(s.batches, [500, 500, 200]);
    assert.equal(s.closed, true);
  }
  assert.throws(() => writer.record(event(1201)), /closed/);
  await assert.rejects(writer.recordDurable(event(1202)), /closed/);
});

// ---- with the real sinks ----

test('end to end: records written through the JSON Lines sink read back as an unbroken chain', async (t) => {
  const dir = await tempDir(t);
  const jsonl = new JsonlFileSink({ path: path.join(dir, 'audit.jsonl'), maxBytes: 4096, maxFiles: 100 });
  const { writer } = await setup(t, [jsonl], { batchSize: 7 });
  for (let i = 1; i <= 60; i++) writer.record(event(i));
  await writer.close();
  const back: AuditRecord[] = [];
  for await (const r of jsonl.iterate()) back.push(r);
  assert.deepEqual(seqs(back), range(1, 60));
  let prev = GENESIS_HASH;
  for (const r of back) {
    assert.equal(r.prevHash, prev);
    assert.equal(r.hash, recordHash(r));
    prev = r.hash;
  }
  assert.ok((await jsonl.files()).length > 1, 'the log rotated along the way');
});

/**
 * A writable whose buffer stays full until told to proceed: from then on it takes every chunk,
 * including one that reaches it only after the call (the sink serialises a batch asynchronously).
 */
function slowStream() {
  const chunks: string[] = [];
  let pending: (() => void) | undefined;
  let released = false;
  const out = new Writable({
    highWaterMark: 16,
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      if (released) cb();
      else pending = () => cb();
    },
  });
  const proceed = () => {
    released = true;
    pending?.();
    pending = undefined;
  };
  return { out, chunks, proceed };
}

test('the stdout sink writes each record as one JSON line, the record as is', async () => {
  const { out, chunks, proceed } = slowStream();
  const sink = new StdoutSink({ out });
  const records = [recordOf(1), recordOf(2)];
  const p = sink.write(records);
  proceed();
  await p;
  const lines = chunks.join('').split('\n');
  assert.equal(lines.pop(), '');
  assert.deepEqual(lines.map((l) => JSON.parse(l) as unknown), records);
});

test('the stdout sink waits for drain when the stream\'s buffer is full', async () => {
  const { out, proceed } = slowStream();
  const sink = new StdoutSink({ out });
  let done = false;
  const p = sink.write([recordOf(1), recordOf(2)]).then(() => (done = true));
  await sleep(10);
  assert.equal(done, false, 'the stream has not taken the batch yet');
  proceed();
  await p;
});

test('the stdout sink rejects when the stream fails, and after it is closed', async () => {
  const out = new Writable({ write: (_c, _e, cb) => cb(new Error('EPIPE')) });
  out.on('error', () => undefined);
  const sink = new StdoutSink({ out });
  await assert.rejects(sink.write([recordOf(1)]), /EPIPE/);
  await sink.close();
  await assert.rejects(sink.write([recordOf(2)]), /closed/);
});

function recordOf(seq: number): AuditRecord {
  return { ...event(seq), stream: 's', seq, prevHash: GENESIS_HASH, hash: 'f'.repeat(64) };
}
