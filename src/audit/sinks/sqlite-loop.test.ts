import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { chain } from '../event.js';
import { A, B, allRecords, event, streamOf } from './records.fixture.js';
import { LOOP_SLICE, openLoopSqliteSink, type LoopSqliteSink } from './sqlite-loop.js';
import { bucketOf } from './sqlite-schema.js';
import { openSqliteAuditSink } from './sqlite.js';
import { AuditRecordWriter } from './sqlite-writer.js';

async function auditFile(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'pl-audit-loop-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'audit.db');
}

function open(t: TestContext, file: string, opts: Parameters<typeof openLoopSqliteSink>[1] = {}): LoopSqliteSink {
  const sink = openLoopSqliteSink(file, opts);
  t.after(() => sink.close());
  return sink;
}

/**
 * The loop's sink has written the first 500 of 1,000 records to a new file, and the thread's sink
 * of that file is open beside it.
 */
async function loopWroteHalf(t: TestContext) {
  const file = await auditFile(t);
  const sink = open(t, file);
  const records = streamOf(A, 1_000);
  await sink.write(records.slice(0, 500));
  const thread = openSqliteAuditSink(file);
  t.after(() => thread.close());
  return { file, sink, records, thread };
}

async function stored(file: string) {
  const reader = openSqliteAuditSink(file);
  try {
    return await allRecords(reader);
  } finally {
    await reader.close();
  }
}

/** The one value `sql` reads from `file`, through a plain read-only connection (opening the sink would take the write lock to check the schema). */
function readValue(file: string, sql: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(sql).pluck().get() as number;
  } finally {
    db.close();
  }
}

/** The records in `file`. */
const count = (file: string): number => readValue(file, 'SELECT count(*) FROM audit_records');

/** The watermark of `file`: buckets below it are summarised. */
const watermark = (file: string): number => readValue(file, 'SELECT buckets_below FROM audit_summary');

/** Counts the turns of the event loop until `p` settles. */
async function turnsWhile(p: Promise<unknown>): Promise<number> {
  let turns = 0;
  let done = false;
  const settled = p.finally(() => (done = true));
  const turn = () => {
    if (done) return;
    turns++;
    setImmediate(turn);
  };
  setImmediate(turn);
  await settled;
  return turns;
}

/**
 * Calls `whenFree` at the first turn of the event loop, while `writing` is under way, at which
 * the write lock of `file` is free (another connection can begin a write transaction without
 * waiting), holding it for the call; says whether there was such a turn before `writing` settled.
 */
async function whileLockFree(file: string, writing: Promise<unknown>, whenFree: (db: Database.Database) => void): Promise<boolean> {
  const db = new Database(file);
  db.pragma('busy_timeout = 0');
  let settled = false;
  let found = false;
  const done = writing.finally(() => (settled = true));
  try {
    while (!settled && !found) {
      await new Promise((resolve) => setImmediate(resolve));
      try {
        db.prepare('BEGIN IMMEDIATE').run();
      } catch {
        continue;
      }
      db.prepare('COMMIT').run();
      if (!settled) {
        whenFree(db);
        found = true;
      }
    }
    await done;
    return found;
  } finally {
    db.close();
  }
}

/** Another connection to `file` holding its write lock until release(). */
function holdLock(file: string): { release(): void } {
  const db = new Database(file);
  db.prepare('BEGIN IMMEDIATE').run();
  return {
    release() {
      db.prepare('COMMIT').run();
      db.close();
    },
  };
}

describe('the SQLite audit sink written on the event loop', () => {
  it('writes a batch a slice at a time, with the event loop turning in between, and commits it whole', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    const records = streamOf(A, 300);
    const turns = await turnsWhile(sink.write(records));
    // A turn between slices, and one before the commit.
    assert.ok(turns >= Math.ceil(records.length / LOOP_SLICE), `only ${turns} turns of the event loop while writing`);
    assert.deepEqual(await stored(file), records);
  });

  it('stores a batch the same whether its rows are inserted a few or the most at a time, repeats included', async (t) => {
    const records = streamOf(A, 75);
    const contents = [];
    for (const rows of [3, 32]) {
      const file = await auditFile(t);
      await openLoopSqliteSink(file).close();
      const db = new Database(file);
      t.after(() => db.close());
      const writer = new AuditRecordWriter(db, 'sink', rows);
      // The second batch repeats the first's last ten: delivered twice, stored once.
      assert.deepEqual(writer.write([records.slice(0, 50), records.slice(40)]), [undefined, undefined]);
      contents.push(await stored(file));
    }
    assert.deepEqual(contents[0], records);
    assert.deepEqual(contents[1], records);
  });

  it('inserts each slice’s rows within its own turn: a slice of the loop’s size leaves none waiting', async (t) => {
    const records = streamOf(A, LOOP_SLICE);
    const waiting = [];
    for (const rows of [LOOP_SLICE, 32]) {
      const file = await auditFile(t);
      await openLoopSqliteSink(file).close();
      const db = new Database(file);
      t.after(() => db.close());
      const writer = new AuditRecordWriter(db, 'sink', rows);
      writer.open();
      writer.startBatch();
      writer.addRecords(records);
      // Read inside the open transaction, on the writer's own connection.
      waiting.push(LOOP_SLICE - (db.prepare('SELECT count(*) FROM audit_records').pluck().get() as number));
      writer.abortBatch();
      writer.rollbackAll();
    }
    assert.deepEqual(waiting, [0, LOOP_SLICE]);
  });

  it('refuses a writer that would insert no rows, or more at a time than it is made for', async (t) => {
    const file = await auditFile(t);
    await openLoopSqliteSink(file).close();
    const db = new Database(file);
    t.after(() => db.close());
    for (const rows of [0, 2.5, 33]) assert.throws(() => new AuditRecordWriter(db, 'sink', rows), /rowsPerInsert must be a whole number from 1 to 32/);
  });

  it('keeps the event loop free while another connection holds the write lock, and writes once it is released', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    const lock = holdLock(file);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 2);
    t.after(() => clearInterval(ticker));
    const written = sink.write(streamOf(A, 50));
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.ok(ticks >= 5, `the event loop turned only ${ticks} times in 60 ms`);
    assert.equal(count(file), 0, 'nothing is written while the lock is held');
    lock.release();
    await written;
    assert.ok(sink.lockWaits > 0);
    assert.equal((await stored(file)).length, 50);
  });

  it('rejects a write once the lock has been held against it past its busy timeout, and writes the next when it is free', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file, { busyTimeoutMs: 40 });
    const records = streamOf(A, 20);
    const lock = holdLock(file);
    await assert.rejects(sink.write(records.slice(0, 10)), /SQLITE_BUSY|database is locked/i);
    lock.release();
    assert.deepEqual(await stored(file), []);
    await sink.write(records.slice(0, 10));
    assert.equal((await stored(file)).length, 10);
  });

  it('rejects a batch claiming a stored record’s place with another hash, whole, and goes on with the next', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    const records = streamOf(A, 100);
    await sink.write(records.slice(0, 60));
    const forged = records.slice(40, 100).map((r, i) => (i === 10 ? { ...r, hash: 'ab'.repeat(32) } : r));
    await assert.rejects(sink.write(forged), /already has a different record 51/);
    assert.equal((await stored(file)).length, 60, 'none of the rejected batch is stored');
    // The same records again, as the writer delivers them (at least once): the stored ones are passed over.
    await sink.write(records.slice(40, 100));
    assert.deepEqual(await stored(file), records);
  });

  it('leaves its commits in the WAL for another connection to checkpoint', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    const before = statSync(file).size;
    for (let k = 0; k < 10; k++) await sink.write(streamOf(A, 5_000).slice(k * 500, (k + 1) * 500));
    assert.equal(statSync(file).size, before, 'the database file is untouched until a checkpoint');
    const thread = openSqliteAuditSink(file);
    try {
      const { log, checkpointed } = thread.checkpointWal();
      assert.ok(log > 0);
      assert.equal(checkpointed, log);
    } finally {
      await thread.close();
    }
    assert.ok(statSync(file).size > before);
  });

  it('has the next commit start the WAL over once a checkpoint finds it grown long', async (t) => {
    const { file, sink, records, thread } = await loopWroteHalf(t);
    const before = thread.checkpointWal(1);
    assert.ok(before.log > 0);
    assert.equal(before.checkpointed, before.log);
    assert.equal(before.restarted, true);
    await sink.write(records.slice(500, 600));
    const after = thread.checkpointWal(Infinity);
    assert.ok(after.log > 0 && after.log < before.log, `the WAL holds ${after.log} frames after holding ${before.log}: it was started over`);
    assert.equal(after.restarted, false, 'a WAL below the size is only copied');
    assert.deepEqual(await stored(file), records.slice(0, 600));
  });

  it("has the thread's sink read the WAL ahead of the loop's next frame, from the file's start once a checkpoint started it over", async (t) => {
    const { file, sink, records, thread } = await loopWroteHalf(t);
    const walBytes = statSync(`${file}-wal`).size;
    assert.equal(thread.warmWal()?.next, walBytes, 'the loop appends to the WAL');
    assert.equal(thread.checkpointWal(1).restarted, true);
    assert.equal(thread.warmWal()?.next, 32, 'the next commit starts the WAL over');
    await sink.write(records.slice(500, 510));
    const warmth = thread.warmWal()!;
    assert.ok(warmth.next > 32 && warmth.next < walBytes, `the loop writes over the old WAL (at ${warmth.next} of ${walBytes})`);
    assert.ok(warmth.warmTo > warmth.next, 'and what it writes next is read ahead');
    assert.deepEqual(await stored(file), records.slice(0, 510));
  });

  it('reads no WAL ahead for an in-memory log', () => {
    const sink = openSqliteAuditSink(':memory:');
    try {
      assert.equal(sink.warmWal(), undefined);
    } finally {
      void sink.close();
    }
  });

  it('leaves starting the WAL over for a later checkpoint while a reader holds it, waiting only a moment', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    const records = streamOf(A, 200);
    await sink.write(records.slice(0, 100));
    const reader = new Database(file, { readonly: true });
    t.after(() => reader.close());
    reader.prepare('BEGIN').run();
    reader.prepare('SELECT count(*) FROM audit_records').get();
    await sink.write(records.slice(100));
    const thread = openSqliteAuditSink(file);
    t.after(() => thread.close());
    const started = performance.now();
    const held = thread.checkpointWal(1);
    assert.ok(performance.now() - started < 2_000, 'not the 5 s a write waits for the lock');
    assert.equal(held.restarted, false);
    assert.ok(held.checkpointed < held.log, 'the frames the reader may still need stay in the WAL');
    reader.prepare('COMMIT').run();
    const free = thread.checkpointWal(1);
    assert.equal(free.restarted, true);
    assert.equal(free.checkpointed, free.log);
  });

  it('summarises the tail a few rows a turn, so that a query by grant or tool finds every record it wrote', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    // A record a second: every record a bucket of its own, a summary of hundreds of rows.
    const records = streamOf(A, 1_200);
    for (let k = 0; k < records.length; k += 400) await sink.write(records.slice(k, k + 400));
    const reader = openSqliteAuditSink(file);
    t.after(() => reader.close());
    const found = await reader.query({ grant: 'grant-1', tool: 'update_contact', order: 'oldest', limit: 1_000 });
    assert.deepEqual(
      found.records.map((r) => r.seq),
      records.filter((r) => r.grantId === 'grant-1' && r.tool === 'update_contact').map((r) => r.seq),
    );
    assert.equal(found.records.length, 400);
  });

  it('commits a long summary in transactions of its own, leaving the write lock free between them', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    // A record a second, each a bucket of its own: the second write's summary is of some 1,000 rows.
    const records = streamOf(A, 600);
    await sink.write(records.slice(0, 20));
    let turnsFree = 0;
    const lockFreeMidWrite = await whileLockFree(file, sink.write(records.slice(20)), () => turnsFree++);
    assert.ok(lockFreeMidWrite, 'another connection could begin a write while the summary was under way');
    assert.equal(turnsFree, 1);
    assert.ok(watermark(file) > bucketOf(records[500]!.at), 'the summary was written to the end');
    assert.deepEqual(await stored(file), records);
  });

  it('begins a summary again from the records when another connection writes into the tail between its transactions', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    const records = streamOf(A, 600);
    await sink.write(records.slice(0, 20));
    // Another writer's record, in a bucket this summary covers, of a grant no record of A has.
    const other = chain(B, undefined, { ...event(1, records[100]!.at + 1), grantId: 'grant-other' });
    const wroteBetween = await whileLockFree(file, sink.write(records.slice(20, 400)), (db) => {
      assert.deepEqual(new AuditRecordWriter(db, 'other').write([[other]]), [undefined]);
    });
    assert.ok(wroteBetween, 'the other record was written between the summary’s transactions');
    await sink.write(records.slice(400));
    assert.ok(watermark(file) > bucketOf(other.at), 'the other record’s bucket is summarised');
    const reader = openSqliteAuditSink(file);
    t.after(() => reader.close());
    const found = await reader.query({ grant: 'grant-other', limit: 10 });
    assert.deepEqual(found.records, [other]);
  });

  it('succeeds once the records are committed, though the lock is then held against the rest of the summary past its busy timeout', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file, { busyTimeoutMs: 30 });
    const records = streamOf(A, 600);
    await sink.write(records.slice(0, 20));
    let lock: { release(): void } | undefined;
    const writing = sink.write(records.slice(20, 400));
    const heldMidWrite = await whileLockFree(file, writing, () => {
      lock = holdLock(file);
    });
    lock?.release();
    assert.ok(heldMidWrite);
    assert.deepEqual(await stored(file), records.slice(0, 400));
    // The next write summarises what was left.
    await sink.write(records.slice(400));
    assert.ok(watermark(file) > bucketOf(records[500]!.at));
    const reader = openSqliteAuditSink(file);
    t.after(() => reader.close());
    const found = await reader.query({ grant: 'grant-2', order: 'oldest', limit: 1_000 });
    assert.deepEqual(
      found.records.map((r) => r.seq),
      records.filter((r) => r.grantId === 'grant-2').map((r) => r.seq),
    );
  });

  it('finishes the writes under way when closed, and rejects writes after', async (t) => {
    const file = await auditFile(t);
    const sink = open(t, file);
    const records = streamOf(A, 200);
    const first = sink.write(records.slice(0, 100));
    const second = sink.write(records.slice(100));
    await sink.close();
    await Promise.all([first, second]);
    await assert.rejects(sink.write(records), /is closed/);
    assert.deepEqual(await stored(file), records);
  });
});
