/**
 * The SQLite audit sink as the gateway's event loop writes it (../loop-recorder.ts says when and
 * why the loop records rather than the audit thread). The same file, schema and row writer as the
 * sink of sqlite.ts, through a connection of the event loop's own, set up so that no write holds
 * the loop for long:
 *
 * - A batch is written in slices of LOOP_SLICE records, one multi-row insert each, with a turn of
 *   the event loop between them and the transaction open across them; the commit has a turn of
 *   its own. Written whole, a flush interval's records held the loop 0.6 to 1.6 ms at p50, and
 *   most of that was the inserts: a commit alone took about 0.1 ms (docs/benchmarks.md).
 * - The tail's bucket rows, about once a second, likewise in steps, and in transactions of a
 *   step each: each row is a page of its own in the WAL, and committed together a second's
 *   thousands of rows took 2 to 4.5 ms to commit (sqlite-writer.ts summariseInSteps).
 * - No automatic WAL checkpoints at the usual size: a commit that ran one held the loop 22 to
 *   33 ms. The audit thread checkpoints instead, on its own connection to the file
 *   (thread-worker.ts, SqliteAuditSink.checkpointWal); this connection checkpoints only as a
 *   backstop, should the WAL grow to LOOP_WAL_BACKSTOP_PAGES because the thread has not had a CPU
 *   for that long (one that did held the loop 76 ms).
 * - The audit thread reads the WAL a little ahead of where this connection writes next
 *   (wal-warmer.ts), so that the partial pages its frames cover are cached rather than read back
 *   from disk during a write.
 * - It never waits for the write lock inside SQLite (busy_timeout 0), which would block the loop:
 *   while another connection holds the lock (retention pruning on the audit thread, the CLI,
 *   another gateway writing the same file), the write tries again after a short timer, and only
 *   once the lock has been held against it for busyTimeoutMs does it reject (and the writer
 *   spills the batch, as it would have after SQLite's own busy timeout).
 *
 * Writes run one after the other, each all or nothing. What this sink writes is read through the
 * thread's sink (queries, verify, prune), which sees it as another connection's commits.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type Database from 'better-sqlite3';
import type { AuditRecord } from '../event.js';
import type { AuditSink } from '../sink.js';
import { LongestStep, type StepTimes } from '../../util/longest-step.js';
import { BUSY_TIMEOUT_MS, WAL_AUTOCHECKPOINT_PAGES, migrate, openAuditDatabase, yieldToEventLoop } from './sqlite-schema.js';
import { AuditRecordWriter } from './sqlite-writer.js';

/**
 * Records written per turn of the event loop: one multi-row insert. Fewer than the ROWS_PER_INSERT
 * the audit thread inserts at a time: with 16 clients the calls in flight wait out each slice, and
 * slices of 8 rather than 32 took the p50 of audit on against off from +11% to +5.5% at the same
 * calls/s, for about a tenth more of the loop's CPU a record without the gateway around it
 * (docs/benchmarks.md).
 */
export const LOOP_SLICE = 8;

/**
 * The WAL size (pages of 4 KiB, 256 MiB) at which a commit on the loop checkpoints after all:
 * long past what the thread's checkpoints leave, so reached only if they stop.
 */
export const LOOP_WAL_BACKSTOP_PAGES = 16 * WAL_AUTOCHECKPOINT_PAGES;

/** Bucket rows (sqlite-writer.ts) read or written per turn when the tail is summarised, about a second's worth of records at a time. */
const SUMMARY_STEP_ROWS = 100;

/** The first wait for a busy write lock, doubled each time up to BUSY_RETRY_MAX_MS. */
const BUSY_RETRY_FIRST_MS = 1;
const BUSY_RETRY_MAX_MS = 16;

export interface LoopSqliteSinkOptions {
  /** How long the write lock may be held against a write before it rejects; default BUSY_TIMEOUT_MS. */
  readonly busyTimeoutMs?: number;
}

/**
 * Opens the SQLite audit file `file` for writing on the event loop, creating its schema if the
 * file is new (the audit thread usually has already).
 */
export function openLoopSqliteSink(file: string, opts: LoopSqliteSinkOptions = {}): LoopSqliteSink {
  const resolved = path.resolve(file);
  const db = openAuditDatabase(resolved, 'normal');
  try {
    migrate(db, resolved);
    db.pragma('busy_timeout = 0');
    db.pragma(`wal_autocheckpoint = ${LOOP_WAL_BACKSTOP_PAGES}`);
  } catch (err) {
    db.close();
    throw err;
  }
  return new LoopSqliteSink(db, resolved, opts);
}

export class LoopSqliteSink implements AuditSink {
  /** The same name as the thread's sink of the file: the spill file and the counters go by it. */
  readonly name: string;
  private readonly writer: AuditRecordWriter;
  private readonly busyTimeoutMs: number;
  /** The last write; the next one starts once it has settled. */
  private tail: Promise<void> = Promise.resolve();
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly steps = new LongestStep();
  private busyWaits = 0;

  constructor(
    private readonly db: Database.Database,
    file: string,
    opts: LoopSqliteSinkOptions,
  ) {
    this.name = `sqlite:${file}`;
    this.writer = new AuditRecordWriter(db, this.name, LOOP_SLICE);
    this.busyTimeoutMs = opts.busyTimeoutMs ?? BUSY_TIMEOUT_MS;
  }

  write(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    if (this.closed) return Promise.reject(new Error(`${this.name} is closed`));
    const done = this.tail.then(() => this.writeInSlices(records));
    this.tail = done.catch(() => undefined);
    return done;
  }

  /**
   * The longest the sink held the event loop in one piece (a slice, a commit, a try for the
   * lock), in ms, since the last call; 0 if it did nothing.
   */
  takeLongestStep(): StepTimes {
    return this.steps.take();
  }

  /** How many times a write found the lock held and waited for it, since the sink opened. */
  get lockWaits(): number {
    return this.busyWaits;
  }

  /** Lets the writes already made finish, then closes the connection. */
  close(): Promise<void> {
    this.closed = true;
    this.closing ??= this.tail.then(() => {
      if (this.db.open) this.db.close();
    });
    return this.closing;
  }

  private async writeInSlices(records: readonly AuditRecord[]): Promise<void> {
    await this.begin();
    let start = this.steps.start();
    try {
      this.writer.startBatch();
      for (let from = 0; from < records.length; from += LOOP_SLICE) {
        if (from > 0) {
          this.steps.ended(start);
          await yieldToEventLoop();
          start = this.steps.start();
        }
        this.writer.addRecords(records, from, Math.min(records.length, from + LOOP_SLICE));
      }
      this.writer.endBatch();
    } catch (err) {
      // Its rows are undone; the transaction, empty of it, ends.
      this.writer.abortBatch();
      this.writer.commitAll();
      this.steps.ended(start);
      throw err;
    }
    // About once a second: the bucket rows of the tail, in steps and transactions of their own,
    // the first of which commits the records too. Once it has, the write has succeeded, whatever
    // becomes of the rest of the summary: what is not written of it is left for the next write.
    let committed = false;
    try {
      for (const step of this.writer.summariseInSteps(SUMMARY_STEP_ROWS)) {
        if (step === 'commit') {
          const failed = this.writer.commitAll();
          if (failed !== undefined) throw failed;
          committed = true;
        }
        this.steps.ended(start);
        await yieldToEventLoop();
        if (step === 'commit') await this.begin();
        start = this.steps.start();
      }
    } catch (err) {
      this.writer.rollbackAll();
      this.steps.ended(start);
      if (committed) return;
      throw err;
    }
    this.steps.ended(start);
    await yieldToEventLoop();
    start = this.steps.start();
    const failed = this.writer.commitAll();
    this.steps.ended(start);
    if (failed !== undefined && !committed) throw failed;
  }

  /** Begins the write transaction, waiting on timers (not in SQLite) while another connection holds the lock. */
  private async begin(): Promise<void> {
    const first = performance.now();
    let wait = BUSY_RETRY_FIRST_MS;
    for (;;) {
      const start = this.steps.start();
      try {
        this.writer.open();
        return;
      } catch (err) {
        if (!isBusy(err) || start - first >= this.busyTimeoutMs) throw err;
      } finally {
        this.steps.ended(start);
      }
      this.busyWaits++;
      // Referenced: a write is under way, and close() waits for it.
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(2 * wait, BUSY_RETRY_MAX_MS);
    }
  }
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}
