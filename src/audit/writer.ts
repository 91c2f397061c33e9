/**
 * The audit writer: takes events, chains them into this process's stream, and delivers the
 * records to every sink in batches. In the gateway it runs on the audit thread (thread-worker.ts),
 * which the event loop posts events to; nothing here assumes which thread it is on.
 *
 * Shape:
 * - `record()` is synchronous: it chains the event (hash over its canonical form) and appends the
 *   record to one in-memory queue per sink. The writing happens later, in other turns.
 * - Each sink has its own lane: its queue, at most one batch in flight, its own failure state. A
 *   slow or dead sink only ever holds back its own lane.
 * - A lane writes when its queue reaches `batchSize`, when the flush interval elapses, or at once
 *   when a strict caller (or `flush()`) waits for it. A batch is at most `batchSize` records, so
 *   the synchronous work of one step (taking the batch, the sink's serialisation, the spill's)
 *   stays around a millisecond with the default 500.
 * - A sink whose write rejects goes down: the failed batch and everything after it go to the
 *   lane's spill file (JSON Lines, appended and fsync'ed), and the sink is retried with
 *   exponential backoff. The retry replays the spill file in order; only when it is exhausted do
 *   newer records go to the sink directly again, and the file is removed. A spill file left by
 *   an earlier run is replayed the same way when the writer starts.
 *
 * Durability:
 * - `async` (default, `record()`): a record is in memory until its lane writes it, at most about
 *   `flushIntervalMs` (plus the write itself) after it was recorded while sinks keep up. A crash
 *   loses what is still queued: by default the last ~20 ms of events, more if a sink is slow and
 *   its queue has grown (bounded by `maxQueue`). The writer's timers do not keep the process
 *   alive, so an orderly shutdown must `close()` it to lose nothing.
 * - `strict` (`recordDurable()`): resolves once every sink has written the record or it is fsync'ed
 *   to that sink's spill file; the gateway forwards the call only then. Waiters arriving while a
 *   batch is in flight all go into the next batch (group commit), so strict mode costs one sink
 *   write per round trip, not one per call.
 *
 * Delivery is at least once: a batch whose write was rejected after the sink partly took it, or a
 * replay interrupted by a crash after the sink took a batch but before its place in the spill file
 * was saved, reaches the sink twice. Duplicates carry the same stream, seq and hash, so a reader
 * verifying the chain can recognise them; a record is never silently lost.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, rename, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { silentLogger, type Logger } from '../telemetry/logger.js';
import { chain, type AuditEventInput, type AuditRecord } from './event.js';
import type { AuditSink } from './sink.js';
import { jsonLines, SLICE_MS, yieldToLoop } from './sinks/jsonl.js';
import { ignoreMissing, syncDir } from './files.js';

/** The timer functions the writer schedules flushes and retries with; injectable for tests. */
export interface WriterTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface AuditWriterOptions {
  readonly sinks: readonly AuditSink[];
  /** Where spill files go (created if missing): `<sink name, sanitised>-<hash>.spill.jsonl`, one per sink. */
  readonly spillDir: string;
  /** This process's stream id; a random UUID by default. */
  readonly stream?: string;
  /** Longest a record waits in memory before its lane writes it (while the sink keeps up). Default 20. */
  readonly flushIntervalMs?: number;
  /** Records per sink write (and per spill append, per replay read). Default 500. */
  readonly batchSize?: number;
  /** Records a lane holds in memory before `onFull` applies. Default 100 000. */
  readonly maxQueue?: number;
  /**
   * Past `maxQueue`: `block` (default) still queues the record (it describes something that
   * already happened) and reports `full`; the caller awaits `whenRoom()` before taking more work.
   * `drop` leaves the record out of that sink's lane only, and counts it in `dropped`. Strict
   * records are never dropped: their caller is already waiting for them.
   */
  readonly onFull?: 'block' | 'drop';
  /** First retry of a failed sink after this many ms, doubling up to `retryMaxMs`. Default 100. */
  readonly retryInitialMs?: number;
  /** Default 30 000. */
  readonly retryMaxMs?: number;
  /** ms since the epoch; stamps `downSince` in stats. */
  readonly now?: () => number;
  readonly timers?: WriterTimers;
  readonly logger?: Logger;
}

export type SinkState = 'up' | 'down' | 'replaying';

/** One sink's counters, as `stats()` gives them (for the metrics endpoint). */
export interface AuditSinkStats {
  readonly name: string;
  /** `down`: writes failing, records go to the spill file; `replaying`: the spill file is being written to the sink. */
  readonly state: SinkState;
  /** Records in memory not yet written or spilled (the batch in flight included). */
  readonly queued: number;
  /** Records the sink took, replayed ones included. */
  readonly written: number;
  /** Records appended to the spill file. */
  readonly spilled: number;
  /** Records left out because the lane was full and `onFull` is `drop`. */
  readonly dropped: number;
  /** Rejected writes. */
  readonly sinkErrors: number;
  /** When the sink last went down (ms since the epoch), while it is not up. */
  readonly downSince: number | null;
}

export const AUDIT_WRITER_DEFAULTS = {
  flushIntervalMs: 20,
  batchSize: 500,
  maxQueue: 100_000,
  retryInitialMs: 100,
  retryMaxMs: 30_000,
} as const;

const REAL_TIMERS: WriterTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

interface Waiter {
  readonly seq: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export class AuditWriter {
  readonly stream: string;
  private readonly lanes: Lane[];
  private readonly flushIntervalMs: number;
  private readonly batchSize: number;
  private readonly maxQueue: number;
  private readonly onFull: 'block' | 'drop';
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly now: () => number;
  private readonly timers: WriterTimers;
  private readonly log: Logger;
  private last: AuditRecord | undefined;
  private tick: unknown;
  /** Strict records and flushes waiting for every lane, in seq order. */
  private waiters: Waiter[] = [];
  private roomWaiters: (() => void)[] = [];
  private closing = false;
  private closed: Promise<void> | undefined;

  constructor(o: AuditWriterOptions) {
    this.stream = o.stream ?? randomUUID();
    this.flushIntervalMs = positive('flushIntervalMs', o.flushIntervalMs ?? AUDIT_WRITER_DEFAULTS.flushIntervalMs, 0);
    this.batchSize = positive('batchSize', o.batchSize ?? AUDIT_WRITER_DEFAULTS.batchSize, 1);
    this.maxQueue = positive('maxQueue', o.maxQueue ?? AUDIT_WRITER_DEFAULTS.maxQueue, 1);
    this.onFull = o.onFull ?? 'block';
    this.retryInitialMs = positive('retryInitialMs', o.retryInitialMs ?? AUDIT_WRITER_DEFAULTS.retryInitialMs, 1);
    this.retryMaxMs = Math.max(this.retryInitialMs, o.retryMaxMs ?? AUDIT_WRITER_DEFAULTS.retryMaxMs);
    this.now = o.now ?? Date.now;
    this.timers = o.timers ?? REAL_TIMERS;
    this.log = (o.logger ?? silentLogger()).child({ component: 'audit', stream: this.stream });
    const names = new Set<string>();
    this.lanes = o.sinks.map((sink) => {
      // The spill file is found again by the sink's name after a restart, so two sinks must not share one.
      if (names.has(sink.name)) throw new Error(`two audit sinks are named '${sink.name}'; each needs its own name`);
      names.add(sink.name);
      return new Lane(sink, new Spill(o.spillDir, sink.name, this.log), this.retryInitialMs);
    });
    for (const lane of this.lanes) {
      if (lane.spill.pending) {
        // Left by an earlier run: it goes to the sink before anything this run records.
        lane.state = 'replaying';
        this.log.info({ sink: lane.sink.name, file: lane.spill.file }, 'audit spill file left over; replaying it');
        this.kick(lane);
      }
    }
  }

  /**
   * Chains `event` into the stream and queues it for every sink. Synchronous and cheap: hashing
   * and an array push per sink; the writing happens later, off the call path.
   */
  record(event: AuditEventInput): AuditRecord {
    return this.enqueue(event, false);
  }

  /**
   * Strict mode: records `event` and resolves once every sink has written it, or fsync'ed it to
   * its spill file. Rejects when, for some sink, it could be neither (the caller must not forward
   * the call then); the record stays queued and is written when that becomes possible again.
   */
  recordDurable(event: AuditEventInput): Promise<void> {
    let r: AuditRecord;
    try {
      r = this.enqueue(event, true);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.waitFor(r.seq);
  }

  /** Resolves once everything recorded so far is written or spilled, by every sink. */
  flush(): Promise<void> {
    if (this.last === undefined) return Promise.resolve();
    return this.waitFor(this.last.seq);
  }

  /** True while some lane holds `maxQueue` records or more (with `drop`, that lane is dropping). */
  get full(): boolean {
    return this.lanes.some((l) => l.queue.length >= this.maxQueue);
  }

  /** Resolves at once while there is room, else once every lane is below `maxQueue` again. */
  whenRoom(): Promise<void> {
    if (!this.full) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  stats(): AuditSinkStats[] {
    return this.lanes.map((l) => ({
      name: l.sink.name,
      state: l.state,
      queued: l.queue.length + l.inFlight,
      written: l.written,
      spilled: l.spilled,
      dropped: l.dropped,
      sinkErrors: l.sinkErrors,
      downSince: l.downSince,
    }));
  }

  /**
   * Writes (or spills) everything queued, then closes the sinks. A sink still down keeps its
   * spill file for the next run. Rejects if some records could be neither written nor spilled.
   */
  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    if (this.tick !== undefined) this.timers.clearTimeout(this.tick);
    this.tick = undefined;
    let failure: unknown;
    try {
      await this.flush();
    } catch (err) {
      failure = err;
    }
    for (const lane of this.lanes) {
      if (lane.retry !== undefined) this.timers.clearTimeout(lane.retry);
      lane.retry = undefined;
      // A replay batch may still be in flight; the sink is closed only after it settles.
      while (lane.busy) await lane.idle;
      const lost = lane.queue.length;
      if (lost > 0) this.log.error({ sink: lane.sink.name, records: lost }, 'audit records could be neither written nor spilled; lost at close');
      await lane.spill.release();
    }
    const closes = await Promise.allSettled(this.lanes.map((l) => l.sink.close()));
    for (const [i, c] of closes.entries()) {
      if (c.status === 'rejected') {
        this.log.error({ sink: this.lanes[i]!.sink.name, err: c.reason }, 'audit sink failed to close');
        failure ??= c.reason;
      }
    }
    if (failure !== undefined) throw failure;
  }

  // ---- the call path ----

  private enqueue(event: AuditEventInput, strict: boolean): AuditRecord {
    if (this.closing) throw new Error('the audit writer is closed; the event cannot be recorded');
    const r = chain(this.stream, this.last, event);
    this.last = r;
    for (const lane of this.lanes) {
      lane.offeredSeq = r.seq;
      if (!strict && this.onFull === 'drop' && lane.queue.length >= this.maxQueue) {
        if (lane.dropped === lane.droppedReported) {
          this.log.warn({ sink: lane.sink.name, maxQueue: this.maxQueue }, 'audit queue full; dropping records for this sink (onFull: drop)');
        }
        lane.dropped++;
        continue;
      }
      lane.queue.push(r);
      if (lane.queue.length >= this.batchSize || strict) this.kick(lane);
    }
    if (this.tick === undefined && this.lanes.length > 0) {
      this.tick = this.timers.setTimeout(() => this.onTick(), this.flushIntervalMs);
    }
    return r;
  }

  private waitFor(seq: number): Promise<void> {
    if (this.lanes.every((l) => l.doneSeq >= seq)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ seq, resolve, reject });
      for (const lane of this.lanes) if (lane.doneSeq < seq) this.kick(lane);
    });
  }

  // ---- the lanes ----

  private onTick(): void {
    this.tick = undefined;
    for (const lane of this.lanes) {
      if (lane.queue.length === 0) continue;
      lane.due = true;
      this.pump(lane);
    }
  }

  /** Starts the lane's loop in a later turn, so nothing of a write runs on the caller's stack. */
  private kick(lane: Lane): void {
    if (lane.kicked || lane.busy) {
      // A running loop re-reads the lane's state before each step and will see the new work.
      return;
    }
    lane.kicked = true;
    setImmediate(() => {
      lane.kicked = false;
      this.pump(lane);
    });
  }

  private pump(lane: Lane): void {
    if (lane.busy) return;
    // Set before the loop starts: it may finish without awaiting anything, clearing it again.
    lane.busy = true;
    lane.idle = this.run(lane);
  }

  /** Whether the lane should write its queue now rather than let it fill further. */
  private pressing(lane: Lane): boolean {
    if (lane.queue.length === 0) return false;
    const target = this.waiters.at(-1)?.seq ?? 0;
    return lane.due || lane.queue.length >= this.batchSize || target > lane.doneSeq || this.closing;
  }

  /** The lane's loop: one step (one batch) at a time, until nothing is pressing. */
  private async run(lane: Lane): Promise<void> {
    try {
      for (;;) {
        if (lane.state === 'up') {
          if (!this.pressing(lane)) break;
          await this.writeQueued(lane);
        } else if (lane.state === 'down') {
          if (!this.pressing(lane)) break;
          if (!(await this.spillQueued(lane))) break;
        } else if (!(await this.replayStep(lane))) {
          break;
        }
      }
    } catch (err) {
      // Every step handles its own failures; this is a bug, and the lane resumes at the next kick.
      this.log.error({ sink: lane.sink.name, err }, 'audit lane failed unexpectedly');
    } finally {
      // Cleared in the same turn as the last check above, so a record queued after it starts a new loop.
      lane.busy = false;
    }
  }

  private async writeQueued(lane: Lane): Promise<void> {
    const batch = this.take(lane);
    try {
      await lane.sink.write(batch);
    } catch (err) {
      lane.inFlight = 0;
      lane.sinkErrors++;
      this.goDown(lane, err);
      // The failed batch is older than anything still queued: it goes to the spill file first,
      // now, rather than wait in memory for the next interval.
      lane.queue.unshift(...batch);
      lane.due = true;
      return;
    }
    lane.inFlight = 0;
    lane.written += batch.length;
    this.done(lane, batch);
  }

  /** Appends the next batch of the queue to the spill file; false if that failed too. */
  private async spillQueued(lane: Lane): Promise<boolean> {
    const batch = this.take(lane);
    try {
      await lane.spill.append(batch);
    } catch (err) {
      lane.inFlight = 0;
      lane.queue.unshift(...batch);
      lane.due = true;
      lane.replay = undefined;
      lane.downSince ??= this.now();
      lane.state = 'down';
      const error = new Error(`audit sink '${lane.sink.name}' is down and its spill file cannot be written: ${messageOf(err)}`);
      this.log.error({ sink: lane.sink.name, file: lane.spill.file, err }, 'audit spill failed; records stay in memory until the sink or the disk comes back');
      // Strict callers must not forward a call whose record is nowhere durable; every waiter for
      // this lane is stuck behind this batch until the retry, so all of them are answered now.
      this.failWaiters(lane.doneSeq, error);
      // Nothing more to do until the retry; it also tries the spill file again.
      this.scheduleRetry(lane);
      return false;
    }
    lane.inFlight = 0;
    lane.spilled += batch.length;
    this.done(lane, batch);
    return true;
  }

  /**
   * One step of a replay: the next batch of the spill file to the sink, or, once the file is
   * exhausted, the lane back up. False when the lane has nothing more to do for now.
   */
  private async replayStep(lane: Lane): Promise<boolean> {
    if (this.closing) {
      // Shutting down: no time for a replay; what is queued joins the spill file for the next run.
      if (lane.queue.length === 0) return false;
      return this.spillQueued(lane);
    }
    let batch: ReplayBatch | null;
    try {
      batch = lane.replay ?? (await lane.spill.read(this.batchSize));
    } catch (err) {
      this.log.error({ sink: lane.sink.name, file: lane.spill.file, err }, 'audit spill file cannot be read; retrying later');
      lane.state = 'down';
      this.scheduleRetry(lane);
      return true;
    }
    if (batch === null) {
      try {
        await lane.spill.remove();
      } catch (err) {
        this.log.error({ sink: lane.sink.name, file: lane.spill.file, err }, 'audit spill file replayed but cannot be removed; retrying later');
        lane.state = 'down';
        this.scheduleRetry(lane);
        return true;
      }
      lane.state = 'up';
      lane.downSince = null;
      lane.backoff = this.retryInitialMs;
      this.log.info({ sink: lane.sink.name }, 'audit sink is up; spill file replayed');
      return true;
    }
    if (!batch.atEnd && this.pressing(lane)) {
      // New records join the end of the file rather than wait for the whole replay: strict callers
      // are answered at disk speed, and memory stays bounded however long the file is. The read
      // batch stays valid: the file only grows after it.
      lane.replay = batch;
      return this.spillQueued(lane);
    }
    try {
      await lane.sink.write(batch.records);
    } catch (err) {
      lane.sinkErrors++;
      lane.replay = undefined;
      this.goDown(lane, err);
      return true;
    }
    lane.written += batch.records.length;
    lane.replay = undefined;
    try {
      await lane.spill.commit(batch.end);
    } catch (err) {
      // The sink has the batch; if the place cannot be saved it may get it again after a crash.
      this.log.warn({ sink: lane.sink.name, err }, 'audit spill replay position not saved');
    }
    return true;
  }

  /** Takes the next batch off the lane's queue (it is then in flight). */
  private take(lane: Lane): AuditRecord[] {
    const batch = lane.queue.splice(0, this.batchSize);
    lane.inFlight = batch.length;
    if (lane.queue.length === 0) lane.due = false;
    if (this.roomWaiters.length > 0 && !this.full) {
      const waiting = this.roomWaiters;
      this.roomWaiters = [];
      for (const w of waiting) w();
    }
    return batch;
  }

  /** Marks `batch` durable for the lane and answers the waiters every lane has now passed. */
  private done(lane: Lane, batch: readonly AuditRecord[]): void {
    // With the queue empty, everything offered to the lane is settled: records dropped after the
    // batch count as passed too, or a flush would wait for them forever.
    lane.doneSeq = lane.queue.length === 0 ? lane.offeredSeq : Math.max(lane.doneSeq, batch.at(-1)!.seq);
    if (lane.dropped !== lane.droppedReported && lane.queue.length === 0) {
      this.log.warn({ sink: lane.sink.name, dropped: lane.dropped - lane.droppedReported }, 'audit queue has room again; records were dropped');
      lane.droppedReported = lane.dropped;
    }
    if (this.waiters.length === 0) return;
    let settled = Infinity;
    for (const l of this.lanes) settled = Math.min(settled, l.doneSeq);
    let n = 0;
    while (n < this.waiters.length && this.waiters[n]!.seq <= settled) this.waiters[n++]!.resolve();
    if (n > 0) this.waiters = this.waiters.slice(n);
  }

  /** Rejects the waiters for records after `doneSeq`. */
  private failWaiters(doneSeq: number, err: Error): void {
    const failing = this.waiters.filter((w) => w.seq > doneSeq);
    if (failing.length === 0) return;
    this.waiters = this.waiters.filter((w) => w.seq <= doneSeq);
    for (const w of failing) w.reject(err);
  }

  private goDown(lane: Lane, err: unknown): void {
    if (lane.downSince === null) {
      lane.downSince = this.now();
      this.log.warn({ sink: lane.sink.name, err }, 'audit sink write failed; spilling to disk and retrying');
    } else {
      this.log.debug({ sink: lane.sink.name, err, retryInMs: lane.backoff }, 'audit sink still down');
    }
    lane.state = 'down';
    this.scheduleRetry(lane);
  }

  private scheduleRetry(lane: Lane): void {
    if (lane.retry !== undefined || this.closing) return;
    const delay = lane.backoff;
    lane.backoff = Math.min(lane.backoff * 2, this.retryMaxMs);
    lane.retry = this.timers.setTimeout(() => {
      lane.retry = undefined;
      // The replay is the probe: its first batch tells whether the sink is back.
      lane.state = 'replaying';
      this.pump(lane);
    }, delay);
  }
}

class Lane {
  readonly queue: AuditRecord[] = [];
  state: SinkState = 'up';
  /** Records of the batch in flight. */
  inFlight = 0;
  /** The interval elapsed (or the writer closes): write what is queued even if short of a batch. */
  due = false;
  kicked = false;
  /** The lane's loop is running (one per lane, so one batch in flight). */
  busy = false;
  /** The loop's promise, for close to wait on. */
  idle: Promise<void> = Promise.resolve();
  /** The highest seq of this run written or spilled (or dropped) by this lane. */
  doneSeq = 0;
  /** The highest seq offered to this lane, queued or dropped. */
  offeredSeq = 0;
  /** A replay batch read but not yet written (kept while queued records are spilled after it). */
  replay: ReplayBatch | undefined;
  retry: unknown;
  backoff: number;
  downSince: number | null = null;
  written = 0;
  spilled = 0;
  dropped = 0;
  /** `dropped` when the last drop episode was logged, so each episode is logged once, not per record. */
  droppedReported = 0;
  sinkErrors = 0;

  constructor(
    readonly sink: AuditSink,
    readonly spill: Spill,
    initialBackoff: number,
  ) {
    this.backoff = initialBackoff;
  }
}

// ---- the spill file ----

interface ReplayBatch {
  readonly records: AuditRecord[];
  /** Byte offset just past the batch. */
  readonly end: number;
  /** The batch reaches the end of the file as it is now. */
  readonly atEnd: boolean;
}

const READ_CHUNK = 256 * 1024;

/**
 * One sink's spill file: records the sink could not take, one JSON line each, in order. Appends are
 * fsync'ed before they count as durable. The replay position is kept beside it (`.pos`, replaced
 * by rename) so a replay interrupted by a crash resumes after the last batch the sink took.
 */
class Spill {
  readonly file: string;
  private readonly posFile: string;
  /** The file exists and may hold records not yet replayed. */
  pending: boolean;
  private cursor = 0;
  private appender: FileHandle | undefined;
  private reader: FileHandle | undefined;
  private size = 0;

  constructor(
    private readonly dir: string,
    sinkName: string,
    private readonly log: Logger,
  ) {
    // Readable, safe in any file system, and still one file per name: the hash tells apart names
    // that sanitise alike.
    const safe = sinkName.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 80);
    const tag = createHash('sha256').update(sinkName).digest('hex').slice(0, 8);
    this.file = path.join(dir, `${safe}-${tag}.spill.jsonl`);
    this.posFile = `${this.file}.pos`;
    // Synchronous, once, at start: whether an earlier run left records for this sink.
    this.pending = existsSync(this.file);
    if (this.pending) {
      try {
        const pos = Number(readFileSync(this.posFile, 'utf8').trim());
        if (Number.isSafeInteger(pos) && pos >= 0) this.cursor = pos;
      } catch {
        // No position saved: the replay starts at the beginning.
      }
    }
  }

  async append(records: readonly AuditRecord[]): Promise<void> {
    if (this.appender === undefined) {
      await mkdir(this.dir, { recursive: true });
      const created = !existsSync(this.file);
      const fh = await open(this.file, 'a+');
      this.size = (await fh.stat()).size;
      this.appender = fh;
      // A new file's directory entry must survive a crash as well as its contents.
      if (created) await syncDir(this.dir);
      if (this.size > 0) {
        // A crash mid-append can leave a partial last line; end it, or the first record appended
        // now would share its line and be lost with it.
        const last = Buffer.alloc(1);
        await fh.read(last, 0, 1, this.size - 1);
        if (last[0] !== 0x0a) {
          await fh.appendFile('\n');
          this.size += 1;
        }
      }
    }
    const buf = await jsonLines(records);
    this.pending = true;
    try {
      await this.appender.appendFile(buf);
      await this.appender.sync();
    } catch (err) {
      // A half-written batch would end in a torn line followed by good ones; cut it off.
      await this.appender.truncate(this.size).catch(() => undefined);
      throw err;
    }
    this.size += buf.length;
  }

  /** The next records after the replay position, at most `max`; null when none are left. */
  async read(max: number): Promise<ReplayBatch | null> {
    if (!this.pending) return null;
    if (this.reader === undefined) {
      try {
        this.reader = await open(this.file, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          this.pending = false;
          return null;
        }
        throw err;
      }
    }
    const size = (await this.reader.stat()).size;
    const records: AuditRecord[] = [];
    let pos = this.cursor;
    let chunk = READ_CHUNK;
    // Parsing a batch can take milliseconds; it is done in slices, like the serialising.
    let sliceStart = performance.now();
    while (records.length < max && pos < size) {
      const buf = Buffer.allocUnsafe(Math.min(chunk, size - pos));
      const { bytesRead } = await this.reader.read(buf, 0, buf.length, pos);
      let start = 0;
      let nl: number;
      while (records.length < max && (nl = buf.indexOf(0x0a, start)) !== -1 && nl < bytesRead) {
        const line = buf.toString('utf8', start, nl).trim();
        if (line.length > 0) {
          try {
            records.push(JSON.parse(line) as AuditRecord);
          } catch {
            this.log.error({ file: this.file, offset: pos + start }, 'audit spill file holds a line that is not JSON; skipped');
          }
        }
        start = nl + 1;
        if ((records.length & 15) === 0 && performance.now() - sliceStart > SLICE_MS) {
          await yieldToLoop();
          sliceStart = performance.now();
        }
      }
      if (start > 0) {
        pos += start;
        chunk = READ_CHUNK;
      } else if (pos + bytesRead >= size) {
        // A last line without its newline: an append cut short by a crash, never fsync'ed, so
        // never reported durable. It is logged, not silently passed over.
        this.log.warn({ file: this.file, offset: pos, bytes: size - pos }, 'audit spill file ends in a partial line; skipped');
        pos = size;
      } else {
        // One line longer than the chunk: read more at once.
        chunk *= 2;
      }
    }
    if (records.length === 0 && pos >= size) {
      this.cursor = pos;
      return null;
    }
    return { records, end: pos, atEnd: pos >= size };
  }

  /** The sink took everything before `end`. */
  async commit(end: number): Promise<void> {
    this.cursor = end;
    const tmp = `${this.posFile}.tmp`;
    await writeFile(tmp, String(end));
    await rename(tmp, this.posFile);
  }

  /** Replayed in full: the file and its position go. */
  async remove(): Promise<void> {
    await this.release();
    // Nothing was ever spilled (the disk failed before the first append): nothing to remove.
    if (!this.pending) return;
    await unlink(this.file).catch(ignoreMissing);
    await unlink(this.posFile).catch(ignoreMissing);
    this.pending = false;
    this.cursor = 0;
    this.size = 0;
  }

  /** Closes the file handles (the file itself stays). */
  async release(): Promise<void> {
    const handles = [this.appender, this.reader];
    this.appender = undefined;
    this.reader = undefined;
    for (const h of handles) await h?.close().catch(() => undefined);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function positive(name: string, value: number, min: number): number {
  if (!Number.isFinite(value) || value < min) throw new Error(`audit writer: ${name} must be a number >= ${min}, not ${value}`);
  return value;
}
