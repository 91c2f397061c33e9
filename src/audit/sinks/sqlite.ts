/**
 * The SQLite audit sink: the embedded default, one file of its own beside the gateway (never the
 * control store's file: the two have different write rates, durability settings and retention).
 *
 * The issue asks for 100,000 events/s sustained on this 2-core machine, with no batch holding the
 * event loop for more than about a millisecond. Both shaped what follows; bench/audit-sqlite.ts
 * measures it through write(), and docs/benchmarks.md has the numbers. Before this shape: 36,000
 * events/s, a batch of 500 holding the event loop ~10 ms (57 ms at p99, when a commit ran a WAL
 * checkpoint), 705 bytes a record on disk.
 *
 * Writing happens on a thread of its own (sqlite-worker.ts runs sqlite-writer.ts):
 * - better-sqlite3 is synchronous, so on the main thread the inserts and the commit held the event
 *   loop. Now write() hands the batch over and resolves once the thread has committed it; inserts,
 *   commits, WAL checkpoints and prune steps all run there.
 * - Handing over costs main-thread time too: a structured clone of the records was ~3 µs a record
 *   to serialise (and 3 to 6 to deserialise on the thread), ~1.5 ms for 500 in one piece. So
 *   records cross in a compact form (sqlite-wire.ts: numbers in a Float64Array, the strings that
 *   repeat sent once and then by number, the rest concatenated), a slice of SLICE_RECORDS at a
 *   time, and write() yields to the event loop whenever it has spent SLICE_MS: each turn it takes
 *   stays well under a millisecond (0.3 ms typically), ~3.5-4.5 µs of main-thread CPU a record in
 *   all. takeLongestStep() says how long the longest of those turns was, for the benchmark and
 *   for metrics.
 * - The thread writes each slice as it arrives, inside the batch's transaction, so it works on one
 *   slice while the main thread encodes the next. Batches that arrive back to back share a
 *   transaction (a savepoint each keeps each all or nothing): the audit writer keeps one batch in
 *   flight, so this only helps callers that pipeline.
 * - The thread keeps the process alive only while a write or prune is pending, so a gateway that
 *   forgets to close the sink can still exit; close() lets it finish and ends it. If it dies (a
 *   crash, an uncaught error), the writes in flight reject saying so, and the next write starts a
 *   new one: writing a batch again is safe, since a record already stored is passed over.
 * - An in-memory database (`:memory:`) cannot be shared with another thread: its writes run on the
 *   caller's thread, with the same code.
 * - Reads (query, iterate, verify, checkpoints) use a connection of the main thread, a page or a
 *   bucket at a time with the event loop running in between; WAL lets them run while the thread
 *   writes. Their rows are small and their statements short, so they did not need the thread.
 *
 * The row is lean, since the cost of a write is mostly per column and per byte (about 280 bytes a
 * record now, indexes included):
 * - Strings that repeat (grant, label, session, server, method, tool, decision, rule, policy
 *   version, upstream status) are stored once in audit_strings and referred to by id; streams in
 *   audit_streams. The writer thread caches the ids. Free text (request id, reason, error, the
 *   arguments as JSON) stays in the row. Hashes are 32-byte BLOBs. The view audit_log shows every
 *   record as text, so operators can still query the log with any SQLite client.
 * - prev_hash is stored although it is nearly always the hash of the record before: verify tells
 *   an edit, a deletion, an insertion and a swap apart by comparing the two, which a prev_hash
 *   rebuilt from the neighbour would make agree by construction.
 * - The row id is the record's time and its place among the records of that millisecond
 *   (`at << 20 | n`, n in written order): the table itself is in the order queries return (time,
 *   then written order), so there is no index on time, a time range is a range of row ids, and a
 *   cursor is (at, n), which VACUUM does not change. A record written late (a replay after an
 *   outage) goes in its place in time.
 * - UNIQUE (stream, seq): a record cannot be stored twice, and reading a stream in chain order
 *   (iterate, verify, prune) is one walk of that index. The writer delivers at least once, so a
 *   batch may come again after the sink took it: a record already stored with the same hash is
 *   passed over; one with a different hash rejects the whole batch (two different records claim
 *   one place in the chain).
 *
 * Finding a grant's, tool's, decision's or server's records without an index on each: indexes on
 * (grant), (tool) and (decision) cost more than the rest of the write together (a batch of 500
 * with realistic traffic holds some 180 grants, 20 tools and a few decisions, each dirtying a leaf
 * page rewritten in the WAL at every commit and again at checkpoints; without them the insert went
 * from ~55,000 to ~108,000 rows/s). Instead audit_record_buckets holds one row (value, bucket of
 * 64 ms) per value seen in a bucket: at 100,000 records/s, about 0.12 rows a record. The writer thread keeps those of the last
 * second or so (the tail) in memory and writes them once a second, sorted, so that a grant's rows
 * for sixteen buckets share a page (see sqlite-writer.ts). A query with such a filter reads the
 * tail's buckets whole, then walks the older buckets that hold the value (a further filter
 * narrows them: each value must be in the bucket), reading each such bucket in time order and
 * keeping the matches. The trade-off: a bucket with a match is read whole (at 100,000 records/s,
 * 6,400 records, a millisecond or two), so a page of a value that turns up sparsely in many
 * buckets costs more than an index would (one bucket read per record found, at worst); a value
 * seen in few buckets is found at once however large the table, since the buckets it is not in
 * are never read; and at the rates a gateway sees in practice buckets hold a few records, and
 * this is an index in all but name. Each bucket is one statement, with the event loop's turn
 * between them.
 *
 * Durability and settings:
 * - WAL, so queries and verification read while the thread writes. `synchronous` is NORMAL by
 *   default: in WAL mode a commit is then durable against the process dying (the WAL is written
 *   before `write()` resolves) but the last commits may be lost, never corrupted, if the machine
 *   loses power before the next WAL checkpoint syncs. That matches the writer's default `async`
 *   mode, which already holds up to a flush interval of records in memory; with `strict` audit,
 *   open the sink with `synchronous: 'full'` (one fsync per commit, shared by every call in it
 *   through the writer's group commit and by every batch coalesced into it). WAL checkpoints: see
 *   WAL_AUTOCHECKPOINT_PAGES.
 * - Each write is an IMMEDIATE transaction: it takes the write lock up front, so another process
 *   holding the file (the CLI pruning, a second gateway) makes it wait up to BUSY_TIMEOUT_MS
 *   rather than fail half-way; under that lock, row ids, string ids and bucket rows are exact
 *   across processes, and PRAGMA data_version tells the thread when another connection wrote.
 * - STRICT tables: a value of the wrong type is refused instead of stored as something else,
 *   which would change the record's hash. `latency_ms` is REAL because a latency may be
 *   fractional; `at` must be a whole number of ms (within ±2^43, until the year 2248).
 * - SQLite stores text as UTF-8, which cannot hold a lone UTF-16 surrogate (JSON.parse of a
 *   client's `"\ud800"` makes one): it would come back as U+FFFD characters, and the record
 *   would no longer match its hash. Such a record keeps its columns (with U+FFFD, for queries)
 *   and is also stored whole as JSON in `record_json` (JSON escapes the surrogate), which is what
 *   reading it back uses; so is a record whose hashes are not 64 lowercase hex digits. Every other
 *   record has NULL there.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import type { AuditRecord } from '../event.js';
import type { AuditSigningKey } from '../signing.js';
import type { AuditPage, AuditQuery, AuditStore, PruneResult } from '../store.js';
import { verifyChain, type AuditCheckpoint, type VerifyOptions, type VerifyResult } from '../verify.js';
import { LongestStep } from '../../util/longest-step.js';
import {
  AT_LIMIT,
  AT_SHIFT,
  BUCKET_MS,
  BUCKET_SHIFT,
  BUSY_TIMEOUT_MS,
  KEY_KIND,
  NO_BUCKET,
  PER_MS,
  WAL_AUTOCHECKPOINT_PAGES,
  bucketOf,
  isInMemoryFile,
  migrate,
  openAuditDatabase,
  yieldToEventLoop,
} from './sqlite-schema.js';
import type { FromWriterThread, ToWriterThread, WireError, WriterThreadOptions } from './sqlite-worker.js';
import { WireEncoder } from './sqlite-wire.js';
import { AuditRecordWriter } from './sqlite-writer.js';
import { WalWarmer, type WalWarmth } from './wal-warmer.js';

export { AUDIT_SQLITE_SCHEMA_VERSION } from './sqlite-schema.js';

export interface SqliteAuditSinkOptions {
  /**
   * `normal` (default): durable against the process dying, not against power loss (see the top
   * of the file). `full`: every commit is fsync'ed; use it with strict audit.
   */
  readonly synchronous?: 'normal' | 'full';
  /** The clock checkpoints record `pruned_at` with; default `Date.now`. */
  readonly clock?: () => number;
  /**
   * Write on the caller's thread instead of a writer thread of the sink's own: for a caller that
   * is itself a thread set aside for the audit log (audit/thread-worker.ts), where a second hand-over
   * would only add work. `:memory:` databases are always written inline (no other thread can open them).
   */
  readonly inline?: boolean;
}

/** Records per slice when handing a batch to the writer thread: about 0.2 ms of encoding each here. */
const SLICE_RECORDS = 64;
/**
 * The first slice of a batch is smaller: the writer thread, idle since the last batch, starts on it
 * sooner, and as it writes a record in about twice the time the main thread takes to encode one,
 * the slices after it arrive before it needs them.
 */
const FIRST_SLICE_RECORDS = 16;
/** Main-thread time write() spends handing over before it yields to the event loop. */
const SLICE_MS = 0.15;
/** Records per page read by iterate() and verify(): a page is read and decoded in one piece. */
const READ_PAGE = 256;
/**
 * How long checkpointWal()'s RESTART checkpoint waits for the writer's transaction and for
 * readers: the event loop's transactions last a few ms, and a reader holding the WAL for longer
 * (a verify) only puts the restart off to the next call.
 */
const RESTART_WAIT_MS = 100;
/** Buckets whose numbers query() reads at a time. */
const BUCKET_PAGE = 64;

/**
 * Opens (creating the file and its folder if missing) the SQLite audit sink at `file`, or a
 * private in-memory one for `:memory:`, and brings its schema up to date: opening an existing
 * file again changes nothing. The writer thread starts with the first write.
 */
export function openSqliteAuditSink(file: string, opts: SqliteAuditSinkOptions = {}): SqliteAuditSink {
  const inMemory = isInMemoryFile(file);
  const resolved = inMemory ? ':memory:' : path.resolve(file);
  if (!inMemory) mkdirSync(path.dirname(resolved), { recursive: true });
  const db = openAuditDatabase(resolved, opts.synchronous ?? 'normal');
  try {
    migrate(db, resolved);
  } catch (err) {
    db.close();
    throw err;
  }
  return new SqliteAuditSink(db, resolved, opts);
}

interface Pending {
  resolve(result: PruneResult | undefined): void;
  reject(err: Error): void;
}

/** What is handed to the thread: a write's records (`from` is the first not yet posted), or a message. */
type Outgoing = { readonly kind: 'records'; readonly id: number; readonly records: readonly AuditRecord[]; from: number } | { readonly kind: 'message'; readonly message: ToWriterThread };

export class SqliteAuditSink implements AuditStore {
  readonly name: string;
  private readonly synchronous: 'normal' | 'full';
  private readonly clock: () => number;
  /** For `:memory:`: writes run here, on the caller's thread. */
  private readonly inline: AuditRecordWriter | undefined;
  private worker: Worker | undefined;
  private encoder = new WireEncoder();
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  /** What is still to be posted to the thread, in order. */
  private outbox: Outgoing[] = [];
  private pumping = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly steps = new LongestStep();
  private readonly queries = new Map<string, Database.Statement<Record<string, number>, unknown[]>>();
  /** For a file the event loop writes: keeps the WAL's next pages cached (wal-warmer.ts). */
  private warmer: WalWarmer | undefined;

  constructor(
    private readonly db: Database.Database,
    private readonly file: string,
    opts: SqliteAuditSinkOptions,
  ) {
    this.name = `sqlite:${file}`;
    this.synchronous = opts.synchronous ?? 'normal';
    this.clock = opts.clock ?? Date.now;
    this.inline = file === ':memory:' || opts.inline === true ? new AuditRecordWriter(db, this.name) : undefined;
  }

  write(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    if (this.closed) return Promise.reject(new Error(`${this.name} is closed`));
    const start = this.steps.start();
    try {
      if (this.inline !== undefined) {
        const [err] = this.inline.write([records]);
        return err === undefined ? Promise.resolve() : Promise.reject(err);
      }
      return this.send(records, undefined).then(() => undefined);
    } catch (err) {
      // Starting the thread can fail (too many threads, no memory): a rejection, as for any failure.
      return Promise.reject(err as Error);
    } finally {
      this.steps.ended(start);
    }
  }

  /**
   * The longest the sink's own work held the event loop in one piece (the synchronous part of a
   * write(), a later turn handing over the rest of a batch, the handling of the thread's answer),
   * in ms, since the last call; 0 if it did none. What bench/audit-sqlite.ts holds to the issue's
   * millisecond, and a gauge for metrics.
   */
  takeLongestStep(): number {
    return this.steps.take().clock;
  }

  /**
   * Checkpoints the WAL on this sink's connection, for a file whose records the event loop writes
   * with automatic checkpoints off (sqlite-loop.ts): copies what it can into the database file
   * without waiting for anyone (PASSIVE). A writer starts the WAL over from its beginning only
   * once a checkpoint has copied all of it, which a writer committing every few milliseconds
   * rarely leaves a passive one time to do: at 16,000 records a second the WAL grew by 10 MiB a
   * second until the loop's backstop checkpoint, which then held the loop for 76 ms. So once the
   * WAL holds WAL_AUTOCHECKPOINT_PAGES frames, a RESTART checkpoint follows: it keeps writers out
   * (the loop's connection tries again on a timer) while it copies what was committed since the
   * passive one, and the next commit starts the WAL over. It waits at most RESTART_WAIT_MS for
   * the writer's transaction and readers to finish, else it is left for the next call. Says how
   * many frames the WAL holds and how many of them are now in the database, and whether the next
   * commit starts it over after a RESTART; a file not in WAL mode (`:memory:`) has none.
   */
  checkpointWal(restartAtFrames = WAL_AUTOCHECKPOINT_PAGES): { log: number; checkpointed: number; restarted: boolean } {
    let row = this.checkpoint('PASSIVE');
    let restarted = false;
    if (row.log >= restartAtFrames) {
      this.db.pragma(`busy_timeout = ${RESTART_WAIT_MS}`);
      try {
        row = this.checkpoint('RESTART');
        restarted = row.busy === 0;
      } finally {
        this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      }
    }
    if (restarted) this.warmer?.startingOver();
    return { log: row.log, checkpointed: row.checkpointed, restarted };
  }

  /**
   * Reads the WAL ahead of where the next frame goes, for a file the event loop writes, so that
   * its writes find those pages cached (wal-warmer.ts); the audit thread calls it every few tens of
   * ms. Says where the next frame goes and how far ahead the file is read; undefined while there
   * is no WAL, and always for `:memory:`.
   */
  warmWal(): WalWarmth | undefined {
    if (this.file === ':memory:' || this.closed) return undefined;
    return (this.warmer ??= new WalWarmer(this.file)).warm();
  }

  private checkpoint(mode: 'PASSIVE' | 'RESTART'): { busy: number; log: number; checkpointed: number } {
    const [row] = this.db.pragma(`wal_checkpoint(${mode})`) as Array<{ busy: number; log: number; checkpointed: number }>;
    return { busy: row?.busy ?? 0, log: Math.max(0, row?.log ?? 0), checkpointed: Math.max(0, row?.checkpointed ?? 0) };
  }

  /** Hands a write (records) or a prune (message) to the thread; resolves with its outcome. */
  private send(records: readonly AuditRecord[] | undefined, prune: { before: number; prunedAt: number; key: AuditSigningKey } | undefined): Promise<PruneResult | undefined> {
    const worker = (this.worker ??= this.startWorker());
    const id = ++this.nextId;
    const done = new Promise<PruneResult | undefined>((resolve, reject) => {
      if (this.pending.size === 0) worker.ref();
      this.pending.set(id, { resolve, reject });
    });
    this.outbox.push(records !== undefined ? { kind: 'records', id, records, from: 0 } : { kind: 'message', message: { t: 'prune', id, ...prune! } });
    if (!this.pumping) this.pump();
    return done;
  }

  /**
   * Posts what the outbox holds, a slice at a time, until SLICE_MS has passed; then continues in
   * a later turn of the event loop. The first turn runs inside write().
   */
  /** A later turn of the hand-over: a step of its own. */
  private readonly pumpLater = (): void => {
    const start = this.steps.start();
    this.pump();
    this.steps.ended(start);
  };

  private readonly pump = (): void => {
    const worker = this.worker;
    const start = performance.now();
    this.pumping = false;
    while (worker !== undefined && this.outbox.length > 0) {
      const item = this.outbox[0]!;
      if (item.kind === 'records') {
        const n = item.records.length;
        while (item.from < n) {
          const end = Math.min(n, item.from + (item.from === 0 ? FIRST_SLICE_RECORDS : SLICE_RECORDS));
          try {
            const slice = this.encoder.encode(item.records, item.from, end, item.from === 0);
            worker.postMessage({ t: 'write', id: item.id, slice, end: end === n } satisfies ToWriterThread);
          } catch (err) {
            // A record that cannot be cloned to the thread (a function in it): that write fails
            // alone, what the thread has of it is undone, and the numbering of strings restarts.
            this.encoder.restart();
            if (item.from > 0) worker.postMessage({ t: 'abort', id: item.id } satisfies ToWriterThread);
            this.settle(worker, item.id, { message: (err as Error).message }, undefined);
            break;
          }
          item.from = end;
          if (performance.now() - start >= SLICE_MS && (end < n || this.outbox.length > 1)) {
            if (end === n) this.outbox.shift();
            this.pumping = true;
            setImmediate(this.pumpLater);
            return;
          }
        }
      } else {
        worker.postMessage(item.message);
      }
      this.outbox.shift();
    }
  };

  private startWorker(): Worker {
    const options: WriterThreadOptions = { file: this.file, synchronous: this.synchronous, name: this.name };
    // No execArgv: the thread needs none of the process's flags, and some (`--input-type`, for one)
    // would stop it from starting.
    const worker = new Worker(new URL('./sqlite-worker.js', import.meta.url), { workerData: { auditSqliteWriter: options }, execArgv: [] });
    // A new thread knows none of the strings the last one was sent.
    this.encoder = new WireEncoder();
    // Kept alive only while something waits for it: see send() and settle().
    worker.unref();
    worker.on('message', (m: FromWriterThread) => {
      const start = this.steps.start();
      if (m.t === 'done') this.settle(worker, m.id, m.error, m.result);
      this.steps.ended(start);
    });
    worker.on('error', (err) => this.lost(worker, err));
    worker.on('exit', (code) => this.lost(worker, new Error(`it exited with code ${code}`)));
    return worker;
  }

  private settle(worker: Worker, id: number, error: WireError | undefined, result: PruneResult | undefined): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    // While closing, the thread stays referenced until it has exited: close() waits for that.
    if (this.pending.size === 0 && this.closing === undefined) worker.unref();
    if (error === undefined) {
      p.resolve(result);
    } else {
      const err = new Error(error.message.startsWith(this.name) ? error.message : `${this.name}: ${error.message}`);
      if (error.code !== undefined) (err as Error & { code: string }).code = error.code;
      p.reject(err);
    }
  }

  /** The thread is gone: whatever it had not answered rejects, and the next write starts a new one. */
  private lost(worker: Worker, cause: Error): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    this.outbox = [];
    this.pumping = false;
    const why = this.closed
      ? `${this.name} was closed before it was written`
      : `${this.name}: its writer thread stopped (${cause.message}); the batch may or may not have been written, and writing it again is safe (records already stored are passed over)`;
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(new Error(why));
  }

  /** A page of records matching `filter`, in the order asked; see AuditPage for the cursor. */
  async query(filter: AuditQuery = {}): Promise<AuditPage> {
    const newest = (filter.order ?? 'newest') === 'newest';
    const limit = pageSize(filter.limit);
    const decoder = new Decoder(this.db);

    // The range of row ids to read, as (at, n) positions: lower inclusive, upper exclusive.
    let lower: Position | undefined;
    let upper: Position | undefined;
    const empty: AuditPage = { records: [], next: undefined };
    if (filter.since !== undefined) {
      const at = Math.ceil(finiteTime(filter.since, 'since'));
      if (at >= AT_LIMIT) return empty;
      if (at > -AT_LIMIT) lower = { at, n: 0 };
    }
    if (filter.until !== undefined) {
      const at = Math.ceil(finiteTime(filter.until, 'until'));
      if (at <= -AT_LIMIT + 1) return empty;
      if (at < AT_LIMIT) upper = { at, n: 0 };
    }
    if (filter.after !== undefined) {
      const c = decodeCursor(filter.after);
      if (newest) upper = minPosition(upper, c);
      else lower = maxPosition(lower, { at: c.at, n: c.n + 1 });
    }

    // Equality filters, as the ids of their values: a value never stored matches nothing.
    const keys: Array<{ column: string; kind: number; id: number }> = [];
    const wanted: Array<[string | undefined, string, number]> = [
      [filter.grant, 'grant_id', KEY_KIND.grant],
      [filter.tool, 'tool', KEY_KIND.tool],
      [filter.decision, 'decision', KEY_KIND.decision],
      [filter.server, 'server', KEY_KIND.server],
    ];
    for (const [value, column, kind] of wanted) {
      if (value === undefined) continue;
      const id = decoder.stringId(value);
      if (id === undefined) return empty;
      keys.push({ column, kind, id });
    }

    const rows: unknown[][] = [];
    if (keys.length === 0) {
      rows.push(...this.readRange(keys, lower, upper, newest, limit + 1));
    } else {
      // The tail (buckets from the watermark on, not summarised yet) is read bucket by bucket,
      // whole; the buckets below it, through those that hold every filtered value. Newest first
      // starts with the tail, oldest first ends with it.
      const watermark = this.db.prepare<[], number>('SELECT buckets_below FROM audit_summary').pluck().get()!;
      const newestBucket = this.db.prepare<[], number>(`SELECT id >> ${BUCKET_SHIFT} FROM audit_records ORDER BY id DESC LIMIT 1`).pluck().get();
      const slicer = new Slicer();
      const readTail = async () => {
        if (newestBucket === undefined) return;
        const first = Math.max(watermark, lower === undefined ? watermark : bucketOf(lower.at));
        const last = Math.min(newestBucket, upper === undefined ? newestBucket : bucketOf(upper.at));
        for (let i = 0; i <= last - first && rows.length <= limit; i++) {
          await this.readBucket(newest ? last - i : first + i, keys, lower, upper, newest, limit, rows, slicer);
        }
      };
      if (newest) await readTail();
      if (rows.length <= limit) await this.readBuckets(keys, lower, upper, newest, limit, watermark, rows, slicer);
      if (!newest && rows.length <= limit) await readTail();
    }
    const records = rows.slice(0, limit).map((row) => decoder.record(row));
    const last = rows[limit - 1];
    return { records, next: rows.length > limit && last !== undefined ? encodeCursor(last) : undefined };
  }

  /**
   * Adds to `rows` (up to limit + 1 of them) the records of the summarised buckets (below
   * `watermark`) between `lower` and `upper` that match `keys`, bucket by bucket in the order asked,
   * reading only the buckets audit_record_buckets says hold every key.
   */
  private async readBuckets(
    keys: ReadonlyArray<{ column: string; kind: number; id: number }>,
    lower: Position | undefined,
    upper: Position | undefined,
    newest: boolean,
    limit: number,
    watermark: number,
    rows: unknown[][],
    slicer: Slicer,
  ): Promise<void> {
    const [first, ...also] = keys;
    const bucketSql =
      `SELECT bucket FROM audit_record_buckets b WHERE key = @key AND bucket > @low AND bucket < @high` +
      also.map((_, i) => ` AND EXISTS (SELECT 1 FROM audit_record_buckets WHERE key = @also${i} AND bucket = b.bucket)`).join('') +
      ` ORDER BY bucket ${newest ? 'DESC' : 'ASC'} LIMIT ${BUCKET_PAGE}`;
    const buckets = this.db.prepare<Record<string, number>, number>(bucketSql).pluck();
    const args: Record<string, number> = { key: first!.id * 4 + first!.kind };
    also.forEach((k, i) => (args[`also${i}`] = k.id * 4 + k.kind));
    // Exclusive bounds on the bucket numbers.
    let low = lower === undefined ? NO_BUCKET - 1 : bucketOf(lower.at) - 1;
    let high = Math.min(watermark, upper === undefined ? Infinity : bucketOf(upper.at) + 1);
    for (;;) {
      const page = buckets.all({ ...args, low, high });
      for (const b of page) {
        await this.readBucket(b, keys, lower, upper, newest, limit, rows, slicer);
        if (rows.length > limit) return;
      }
      if (page.length < BUCKET_PAGE) return;
      if (newest) high = page[page.length - 1]!;
      else low = page[page.length - 1]!;
    }
  }

  /** Adds to `rows` bucket `b`'s records between `lower` and `upper` that match `keys`; a bucket is read in one statement, with the event loop's turn before it if the last ones took long. */
  private async readBucket(
    b: number,
    keys: ReadonlyArray<{ column: string; id: number }>,
    lower: Position | undefined,
    upper: Position | undefined,
    newest: boolean,
    limit: number,
    rows: unknown[][],
    slicer: Slicer,
  ): Promise<void> {
    await slicer.turn();
    const bucketLower = maxPosition(lower, { at: b * BUCKET_MS, n: 0 });
    const bucketUpper = minPosition(upper, { at: (b + 1) * BUCKET_MS, n: 0 });
    for (const row of this.readRange(keys, bucketLower, bucketUpper, newest, limit + 1 - rows.length)) rows.push(row);
  }

  /** Up to `limit` rows between `lower` and `upper` matching `keys`, in the order asked. */
  private readRange(keys: ReadonlyArray<{ column: string; id: number }>, lower: Position | undefined, upper: Position | undefined, newest: boolean, limit: number): unknown[][] {
    if (upper !== undefined && upper.at >= AT_LIMIT) upper = undefined;
    if (lower !== undefined && upper !== undefined && comparePositions(lower, upper) >= 0) return [];
    // better-sqlite3 binds every number as a REAL: the shifts make the times integers, and the
    // CASTs keep `+ n` from turning a row id into a REAL that has lost its low bits.
    const where: string[] = [];
    const args: Record<string, number> = { limit };
    if (lower !== undefined) {
      where.push(`id >= (@lowAt << ${AT_SHIFT}) + CAST(@lowN AS INTEGER)`);
      args.lowAt = lower.at;
      args.lowN = lower.n;
    }
    if (upper !== undefined) {
      where.push(`id < (@highAt << ${AT_SHIFT}) + CAST(@highN AS INTEGER)`);
      args.highAt = upper.at;
      args.highN = upper.n;
    }
    keys.forEach((k, i) => {
      where.push(`${k.column} = @key${i}`);
      args[`key${i}`] = k.id;
    });
    const sql = `SELECT ${RECORD_COLUMNS} FROM audit_records${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY id ${newest ? 'DESC' : 'ASC'} LIMIT @limit`;
    let stmt = this.queries.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare<Record<string, number>, unknown[]>(sql).raw(true);
      this.queries.set(sql, stmt);
    }
    return stmt.all(args);
  }

  /**
   * Every record, stream by stream in seq order: what verifyChain reads. Pages of READ_PAGE
   * records, each read whole, so writes go on between pages; records written meanwhile are
   * included if they come after the current position. Use verify() for a consistent snapshot of
   * records and checkpoints.
   */
  async *iterate(): AsyncGenerator<AuditRecord> {
    yield* readAll(this.db);
  }

  /** The checkpoint of every stream pruned so far, by stream. */
  async checkpoints(): Promise<AuditCheckpoint[]> {
    return readCheckpoints(this.db);
  }

  /**
   * Verifies the whole log against its checkpoints. On a file, it reads through a connection of
   * its own inside one read transaction: a snapshot, so a prune or write running meanwhile
   * (here or in another process) cannot make records and checkpoints disagree.
   */
  async verify(opts: Omit<VerifyOptions, 'checkpoints'> = {}): Promise<VerifyResult> {
    if (this.file === ':memory:') return verifyChain(readAll(this.db), { ...opts, checkpoints: readCheckpoints(this.db) });
    const snapshot = openAuditDatabase(this.file, this.synchronous, { readonly: true, fileMustExist: true });
    try {
      snapshot.exec('BEGIN');
      // The first read fixes the snapshot; the records below are read from the same one.
      const checkpoints = readCheckpoints(snapshot);
      const result = await verifyChain(readAll(snapshot), { ...opts, checkpoints });
      snapshot.exec('COMMIT');
      return result;
    } finally {
      snapshot.close();
    }
  }

  /**
   * Deletes the records written before `beforeMs`, stream by stream, and leaves a checkpoint
   * signed by `key` for each stream that lost records, so the rest still verifies. It runs on the
   * writer thread, a few thousand records per transaction, with writes going on in between (see
   * AuditRecordWriter.prune, which also says when a stream is held rather than pruned).
   */
  async prune(beforeMs: number, key: AuditSigningKey): Promise<PruneResult> {
    const before = finiteTime(beforeMs, 'beforeMs');
    if (this.closed) throw new Error(`${this.name} is closed`);
    // Only what the thread needs: the key pair, not whatever else the caller's object holds.
    const signer: AuditSigningKey = { keyId: key.keyId, privateKey: key.privateKey, publicKey: key.publicKey };
    if (this.inline !== undefined) return this.inline.prune(before, this.clock(), signer, () => (this.closed ? 'the sink was closed' : undefined));
    return (await this.send(undefined, { before, prunedAt: this.clock(), key: signer }))!;
  }

  /**
   * Lets the writer thread finish what it was given (a prune stops between two of its steps),
   * ends it, and closes the database.
   */
  close(): Promise<void> {
    this.closed = true;
    this.closing ??= (async () => {
      const worker = this.worker;
      if (worker !== undefined) {
        const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
        worker.ref();
        this.outbox.push({ kind: 'message', message: { t: 'close' } });
        if (!this.pumping) this.pump();
        await exited;
      }
      this.warmer?.close();
      if (this.db.open) this.db.close();
    })();
    return this.closing;
  }
}

/** The record's columns, raw, in the order Decoder.record reads them. */
const RECORD_COLUMNS = `id >> ${AT_SHIFT}, id & ${PER_MS - 1}, request_id, grant_id, grant_label, session, server, method, tool, decision, rule, reason,
  policy_version, arguments, upstream_status, latency_ms, result_bytes, error, stream, seq, lower(hex(prev_hash)), lower(hex(hash)), record_json`;

/**
 * Turns rows back into records, looking up string and stream ids as it meets them. One per read
 * (a query, an iteration): rows of audit_strings are only ever added, and a new decoder for each
 * read also sees one that was tampered with.
 */
class Decoder {
  private readonly strings = new Map<number, string>();
  private readonly streams = new Map<number, string>();
  private readonly text: Database.Statement<[number], string>;
  private readonly streamText: Database.Statement<[number], string>;

  constructor(private readonly db: Database.Database) {
    this.text = db.prepare<[number], string>('SELECT text FROM audit_strings WHERE id = ?').pluck();
    this.streamText = db.prepare<[number], string>('SELECT stream FROM audit_streams WHERE id = ?').pluck();
  }

  stringId(text: string): number | undefined {
    return this.db.prepare<[string], number>('SELECT id FROM audit_strings WHERE text = ?').pluck().get(text);
  }

  private str(id: unknown): string | null {
    if (id === null) return null;
    let s = this.strings.get(id as number);
    if (s === undefined) {
      s = this.text.get(id as number);
      if (s === undefined) return null;
      this.strings.set(id as number, s);
    }
    return s;
  }

  record(row: unknown[]): AuditRecord {
    if (row[22] !== null) {
      const whole = JSON.parse(row[22] as string) as Record<string, unknown>;
      // JSON leaves out an absent `arguments`; the record had the property, undefined.
      if (!('arguments' in whole)) whole.arguments = undefined;
      return whole as unknown as AuditRecord;
    }
    const streamId = row[18] as number;
    let stream = this.streams.get(streamId);
    if (stream === undefined) {
      stream = this.streamText.get(streamId) ?? '';
      this.streams.set(streamId, stream);
    }
    return {
      at: row[0] as number,
      requestId: row[2] as string | null,
      grantId: this.str(row[3]),
      grantLabel: this.str(row[4]),
      session: this.str(row[5]),
      server: this.str(row[6])!,
      method: this.str(row[7])!,
      tool: this.str(row[8]),
      decision: this.str(row[9]) as AuditRecord['decision'],
      rule: this.str(row[10]),
      reason: row[11] as string | null,
      policyVersion: this.str(row[12]),
      arguments: row[13] === null ? undefined : (JSON.parse(row[13] as string) as unknown),
      upstreamStatus: this.str(row[14]),
      latencyMs: row[15] as number | null,
      resultBytes: row[16] as number | null,
      error: row[17] as string | null,
      stream,
      seq: row[19] as number,
      prevHash: row[20] as string,
      hash: row[21] as string,
    };
  }
}

/** All records of `db`, stream by stream (in the order of their names), each in seq order, a page at a time. */
async function* readAll(db: Database.Database): AsyncGenerator<AuditRecord> {
  const decoder = new Decoder(db);
  const nextStream = db.prepare<[string], { id: number; stream: string }>('SELECT id, stream FROM audit_streams WHERE stream > ? ORDER BY stream LIMIT 1');
  const after = db.prepare<[number, number, number], unknown[]>(`SELECT ${RECORD_COLUMNS} FROM audit_records WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?`).raw(true);
  for (let s = nextStream.get(''); s !== undefined; s = nextStream.get(s.stream)) {
    let rows = after.all(s.id, Number.MIN_SAFE_INTEGER, READ_PAGE);
    while (rows.length > 0) {
      for (const row of rows) yield decoder.record(row);
      if (rows.length < READ_PAGE) break;
      const last = rows[rows.length - 1]!;
      await yieldToEventLoop();
      rows = after.all(s.id, last[19] as number, READ_PAGE);
    }
  }
}

function readCheckpoints(db: Database.Database): AuditCheckpoint[] {
  return db
    .prepare<[], AuditCheckpoint>('SELECT stream, seq, hash, at, pruned_at AS prunedAt, key_id AS keyId, signature FROM audit_checkpoints ORDER BY stream')
    .all();
}

function pageSize(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return 100;
  return Math.min(1_000, Math.max(1, Math.trunc(limit)));
}

function finiteTime(ms: number, what: string): number {
  if (!Number.isFinite(ms)) throw new RangeError(`${what} must be a time in ms since the epoch, got ${ms}`);
  return ms;
}

/** Lets the event loop run between pieces of a long read once SLICE_MS of it have run since the last turn. */
class Slicer {
  private start = performance.now();

  async turn(): Promise<void> {
    if (performance.now() - this.start < SLICE_MS) return;
    await yieldToEventLoop();
    this.start = performance.now();
  }
}

/** A place in the table's order: a time, and a place among the records of that millisecond. */
interface Position {
  at: number;
  n: number;
}

const comparePositions = (a: Position, b: Position): number => a.at - b.at || a.n - b.n;
const minPosition = (a: Position | undefined, b: Position): Position => (a === undefined || comparePositions(b, a) < 0 ? b : a);
const maxPosition = (a: Position | undefined, b: Position): Position => (a === undefined || comparePositions(b, a) > 0 ? b : a);

function encodeCursor(row: unknown[]): string {
  return Buffer.from(JSON.stringify([row[0], row[1]])).toString('base64url');
}

function decodeCursor(cursor: string): Position {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && Number.isSafeInteger(v[1])) {
      const [at, n] = v as [number, number];
      if (Math.abs(at) < AT_LIMIT && n >= 0 && n < PER_MS) return { at, n };
    }
  } catch {
    // Falls through to the error below: a cursor that is not one of ours.
  }
  throw new RangeError(`invalid cursor ${JSON.stringify(cursor)}: pass the \`next\` of a previous page`);
}
