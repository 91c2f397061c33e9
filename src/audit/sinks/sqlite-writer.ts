/**
 * Everything the SQLite audit sink writes: batches of records, and pruning. It runs on the sink's
 * writer thread (sqlite-worker.ts), or on the caller's thread for an in-memory database, which no
 * other thread can open. sqlite.ts explains the schema; this file keeps its invariants:
 *
 * - A record's row id is `at << AT_SHIFT | n`, n one past the highest n of that millisecond,
 *   looked up inside the write transaction (the write lock makes it exact across processes).
 * - For every bucket below audit_summary.buckets_below, audit_record_buckets has a row (key,
 *   bucket) for each grant, tool, decision and server of the bucket's records. Buckets from the
 *   watermark on (the tail, the last second or so) have none: queries read them whole.
 * - A record the columns cannot reproduce exactly (a lone surrogate in a string, a hash that is
 *   not 64 lowercase hex digits) is also stored whole as JSON in record_json.
 *
 * Why the bucket rows are written a second late: a batch of 500 records adds some 60 new (grant,
 * bucket) rows, each on its own leaf page of audit_record_buckets (they are ordered by grant), so
 * writing them with each batch dirtied about as many pages as the records themselves, each page
 * written to the WAL at every commit: 1 to 2.5 µs of the writer's 8 to 10 µs a record here.
 * Written once per SUMMARY_BUCKETS buckets, sorted, a grant's rows for all of those buckets share
 * a page, and their cost was lost in the noise. Until then the writer keeps the tail's (key,
 * bucket) pairs in memory; the rows it then writes are those pairs when it knows every record of
 * the tail is its own, or else (another connection wrote, or the thread is new) read from the
 * tail's records. A record written into a bucket below the watermark (late: a replay) gets its
 * rows at once.
 *
 * What it caches between transactions, and why that stays true with other writers around: string
 * and stream ids (rows of audit_strings and audit_streams are only ever added, so an id once seen
 * keeps its meaning; ids added by a transaction that rolled back are forgotten), and the watermark
 * (read again whenever another connection committed, which PRAGMA data_version tells).
 */
import type Database from 'better-sqlite3';
import type { AuditRecord } from '../event.js';
import { prunableRecords, pruneAnchor, signCheckpoint, type AuditSigningKey, type SignedCheckpoint } from '../signing.js';
import type { PruneResult } from '../store.js';
import { keysArgumentsJson } from '../arguments.js';
import { AT_LIMIT, AT_SHIFT, BUCKET_SHIFT, KEY_KIND, PER_MS, bucketOf, isHex64, isWellFormed, yieldToEventLoop } from './sqlite-schema.js';
import { AT, LATENCY, NUMS, RESULT_BYTES, SEQ, STRINGS, STRING_FIELDS, TEXT_LENGTHS, type ReceivedSlice, type StringTable, type WireSlice } from './sqlite-wire.js';

/** Records deleted per transaction by prune(): each transaction holds the write lock this long. */
const PRUNE_CHUNK = 5_000;
/** Keys whose old buckets prune() deletes per transaction. */
const PRUNE_KEYS = 500;
/** The tail is summarised once it is this many buckets long (16 × 64 ms, about a second of records). */
const SUMMARY_BUCKETS = 16;

const INSERT_COLUMNS = `id, grant_id, tool, decision, server, stream, seq, request_id, grant_label, session, method, rule, reason,
  policy_version, arguments, upstream_status, latency_ms, result_bytes, error, prev_hash, hash, record_json`;
/** The parameters of one row, in the order of INSERT_COLUMNS (the row id is made of the first two). */
const PARAMS = 23;
/** One row's values: the hashes as BLOBs of their 32 bytes. */
const ROW_VALUES = `((? << ${AT_SHIFT}) | ?, ${Array(18).fill('?').join(', ')}, unhex(?), unhex(?), ?)`;
/**
 * Rows inserted by one statement, by default: each run of a statement has a cost of its own
 * besides the rows' values; 32 rows at a time took about a tenth less CPU per record than one at a
 * time here. A writer on the event loop inserts fewer at a time (sqlite-loop.ts LOOP_SLICE).
 */
export const ROWS_PER_INSERT = 32;
const insertSql = (rows: number): string =>
  `INSERT INTO audit_records (${INSERT_COLUMNS}) VALUES ${Array(rows).fill(ROW_VALUES).join(', ')} ON CONFLICT (stream, seq) DO NOTHING`;
/** For a record kept in record_json: hashes that are not 64 hex digits are kept as their text's bytes. */
const INSERT_RAW_SQL = `INSERT INTO audit_records (${INSERT_COLUMNS})
  VALUES ((? << ${AT_SHIFT}) | ?, ${Array(18).fill('?').join(', ')}, CAST(? AS BLOB), CAST(? AS BLOB), ?) ON CONFLICT (stream, seq) DO NOTHING`;

/** Where each of STRING_FIELDS goes among a row's parameters. */
const STRING_PARAM = [2, 9, 10, 5, 11, 3, 4, 12, 14, 16, 6] as const;
/** Indexes into STRING_FIELDS. */
const F = { grant: 0, server: 3, method: 4, tool: 5, decision: 6, stream: 10 } as const;
/** STRING_FIELDS as insertRecord reads them, one by one: the compiler holds the two to the same order. */
const READ_IN_ORDER: typeof STRING_FIELDS = ['grantId', 'grantLabel', 'session', 'server', 'method', 'tool', 'decision', 'rule', 'policyVersion', 'upstreamStatus', 'stream'];
void READ_IN_ORDER;
/** STRING_FIELDS a record must have. */
const REQUIRED = new Set<number>([F.server, F.method, F.decision, F.stream]);

/** What the caller of summariseInSteps does before the next step: let the event loop turn; or commit, let it turn and begin again. */
export type SummaryStep = 'turn' | 'commit';

export class AuditRecordWriter {
  /** By number of rows, prepared when first needed. */
  private readonly inserts: Array<Database.Statement<unknown[]> | undefined> = [];
  private readonly insertRaw: Database.Statement<unknown[]>;
  private readonly lastOfMs: Database.Statement<[number, number], number>;
  private readonly stored: Database.Statement<[number, number], { hash: Buffer; record_json: string | null }>;
  private readonly findString: Database.Statement<[string], number>;
  private readonly addString: Database.Statement<[string]>;
  private readonly findStream: Database.Statement<[string], number>;
  private readonly addStream: Database.Statement<[string]>;
  private readonly addBucket: Database.Statement<[number, number]>;
  private readonly readWatermark: Database.Statement<[], number>;
  private readonly writeWatermark: Database.Statement<[number]>;
  private readonly tailKeys: Database.Statement<[number], unknown[]>;
  private readonly dataVersion: Database.Statement<[], number>;
  private readonly begin: Database.Statement;
  private readonly commit: Database.Statement;
  private readonly rollback: Database.Statement;
  private readonly savepoint: Database.Statement;
  private readonly release: Database.Statement;
  private readonly rollbackTo: Database.Statement;

  /**
   * Text → id in audit_strings (streams: in audit_streams). A negative id -x stands for x and says
   * the text is not well-formed UTF-16 (checked once, when the text is first seen), so a record
   * holding it goes to record_json.
   */
  private readonly strings = new Map<string, number>();
  private readonly streams = new Map<string, number>();
  /**
   * Each string field's last text and its id (as cachedId gives it): most records repeat the
   * previous one's server, method, tool, decision, grant…, and a comparison with the same string
   * costs less than a lookup in the map.
   */
  private readonly lastText: Array<string | undefined> = Array(STRING_FIELDS.length).fill(undefined);
  private readonly lastId: number[] = Array(STRING_FIELDS.length).fill(0);
  /** Undoes the cache entries added since the last commit, if their transaction (or savepoint) rolls back. */
  private undo: Array<() => void> = [];

  /** Buckets below this are summarised; undefined: to be read from the database. */
  private watermark: number | undefined;
  /**
   * Per key, the buckets of the tail that records written from here have it in, oldest first
   * (records come in time order: a bucket out of order is sorted in when the tail is summarised).
   * By key rather than by bucket because the rows go in key order.
   */
  private pending = new Map<number, number[]>();
  /** Whether `pending` covers every record of the tail: false after another connection wrote, or before a first summary. */
  private pendingComplete = false;
  private newestBucket = -Infinity;
  private seenVersion = -1;
  /** Counts the transactions that began after another connection's commit: a summary under way is then out of date. */
  private othersWrote = 0;
  /** Whether a summary is under way in steps (its transactions' commits summarise nothing). */
  private summarising = false;

  /**
   * Within a transaction: the highest n given to each millisecond so far, which the table does
   * not show yet for rows still waiting in `rows`; and the last one, the case nearly every time.
   */
  private lastOfTransaction = new Map<number, number>();
  private lastAt = NaN;
  private lastN = 0;
  /** The ids of the record being written, in the order of STRING_FIELDS, and whether one of them is not well-formed. */
  private readonly ids: Array<number | null> = Array(STRING_FIELDS.length).fill(null);
  private illFormed = false;
  /** Where the batch began in `undo`, and the hash of its last record (the next one's prevHash when that was not sent). */
  private batchMark = 0;
  private batchPrevHash: string | undefined;
  /** Where the next string of the slice being written starts in its `text`. */
  private textAt = 0;
  /** The last hash found to be 64 lowercase hex digits: the next record's prevHash, nearly always. */
  private lastHex: string | undefined;
  /** Rows waiting to be inserted together: their parameters, and what a repeat is checked by. */
  private readonly rows: unknown[];
  private waitingCount = 0;
  private readonly waitingStream: number[];
  private readonly waitingSeq: number[];
  private readonly waitingHash: string[];
  /** One row's parameters, for a record kept in record_json. */
  private readonly params: unknown[] = Array(PARAMS).fill(null);

  /**
   * `rowsPerInsert`: how many rows wait to be inserted by one statement (1 to ROWS_PER_INSERT; the
   * default, ROWS_PER_INSERT, costs the least CPU a row).
   */
  constructor(
    private readonly db: Database.Database,
    private readonly name: string,
    private readonly rowsPerInsert = ROWS_PER_INSERT,
  ) {
    if (!Number.isInteger(rowsPerInsert) || rowsPerInsert < 1 || rowsPerInsert > ROWS_PER_INSERT) {
      throw new RangeError(`rowsPerInsert must be a whole number from 1 to ${ROWS_PER_INSERT}, not ${rowsPerInsert}`);
    }
    this.rows = Array(PARAMS * rowsPerInsert).fill(null);
    this.waitingStream = Array(rowsPerInsert).fill(0);
    this.waitingSeq = Array(rowsPerInsert).fill(0);
    this.waitingHash = Array(rowsPerInsert).fill('');
    // The insert nearly every row goes through, prepared now rather than in the first write.
    this.inserts[rowsPerInsert] = db.prepare(insertSql(rowsPerInsert));
    this.insertRaw = db.prepare(INSERT_RAW_SQL);
    this.lastOfMs = db
      .prepare<[number, number], number>(
        `SELECT id & ${PER_MS - 1} FROM audit_records WHERE id >= (? << ${AT_SHIFT}) AND id < ((? + 1) << ${AT_SHIFT}) ORDER BY id DESC LIMIT 1`,
      )
      .pluck();
    this.stored = db.prepare('SELECT hash, record_json FROM audit_records WHERE stream = ? AND seq = ?');
    this.findString = db.prepare<[string], number>('SELECT id FROM audit_strings WHERE text = ?').pluck();
    this.addString = db.prepare('INSERT INTO audit_strings (text) VALUES (?)');
    this.findStream = db.prepare<[string], number>('SELECT id FROM audit_streams WHERE stream = ?').pluck();
    this.addStream = db.prepare('INSERT INTO audit_streams (stream) VALUES (?)');
    this.addBucket = db.prepare('INSERT INTO audit_record_buckets (key, bucket) VALUES (?, ?) ON CONFLICT DO NOTHING');
    this.readWatermark = db.prepare<[], number>('SELECT buckets_below FROM audit_summary').pluck();
    this.writeWatermark = db.prepare('UPDATE audit_summary SET buckets_below = ?');
    this.tailKeys = db
      .prepare<[number], unknown[]>(`SELECT id >> ${BUCKET_SHIFT}, grant_id, tool, decision, server FROM audit_records WHERE id >= (? << ${BUCKET_SHIFT})`)
      .raw(true);
    this.dataVersion = db.prepare<[], number>('PRAGMA data_version').pluck();
    this.begin = db.prepare('BEGIN IMMEDIATE');
    this.commit = db.prepare('COMMIT');
    this.rollback = db.prepare('ROLLBACK');
    this.savepoint = db.prepare('SAVEPOINT batch');
    this.release = db.prepare('RELEASE batch');
    this.rollbackTo = db.prepare('ROLLBACK TO batch');
  }

  /**
   * Writes `batches` in one transaction, each batch all or nothing: one that fails (a record
   * conflicting with a stored one, a value of the wrong type) is rolled back alone and its error
   * returned in its place; the others are committed. If the transaction itself cannot be begun or
   * committed (another process holds the lock past the busy timeout, the disk is full), every
   * batch gets that error. Never throws. The writer thread uses the steps below instead, to write
   * each slice of a batch as it arrives.
   */
  write(batches: ReadonlyArray<readonly AuditRecord[]>): Array<Error | undefined> {
    try {
      this.open();
    } catch (err) {
      return batches.map(() => asError(err));
    }
    const results = batches.map((batch) => {
      try {
        this.startBatch();
        this.addRecords(batch);
        this.endBatch();
        return undefined;
      } catch (err) {
        this.abortBatch();
        return asError(err);
      }
    });
    const failed = this.commitAll();
    return failed === undefined ? results : batches.map(() => failed);
  }

  /** Whether a write transaction is open (between open() and commitAll()). */
  get inTransaction(): boolean {
    return this.db.inTransaction;
  }

  /** Begins the write transaction, unless one is open. Throws if it cannot (SQLITE_BUSY past the busy timeout). */
  open(): void {
    if (this.db.inTransaction) return;
    this.begin.run();
    this.lastAt = NaN;
    this.lastOfTransaction = new Map();
    try {
      this.startTransaction();
    } catch (err) {
      this.rollback.run();
      throw err;
    }
  }

  /** Starts a batch within the open transaction: what follows, up to endBatch(), is all or nothing. */
  startBatch(): void {
    this.batchMark = this.undo.length;
    this.batchPrevHash = undefined;
    this.savepoint.run();
  }

  /** Adds records `from` to `to` (default: all) to the batch as they are (on the caller's thread). */
  addRecords(records: readonly AuditRecord[], from = 0, to = records.length): void {
    for (let i = from; i < to; i++) this.insertRecord(records[i]!);
  }

  /** Adds the records of a slice that crossed from the main thread (see sqlite-wire.ts). */
  addSlice({ slice, table }: ReceivedSlice): void {
    let raw = 0;
    let prevHash = this.batchPrevHash;
    this.textAt = 0;
    for (let k = 0; k < slice.count; k++) {
      const r = slice.raw?.[raw];
      if (r !== undefined && r[0] === k) {
        raw++;
        this.insertRecord(r[1]);
        prevHash = undefined;
      } else {
        prevHash = this.insertEncoded(slice, table, k, prevHash);
      }
    }
    this.batchPrevHash = prevHash;
  }

  /** Ends the batch, keeping what it wrote. If it throws, abortBatch(). */
  endBatch(): void {
    this.insertWaiting();
    this.release.run();
  }

  /** Undoes the batch: its rows, and what the caches learnt from it. */
  abortBatch(): void {
    this.waitingCount = 0;
    if (this.db.inTransaction) {
      this.rollbackTo.run();
      this.release.run();
    }
    this.undoSince(this.batchMark);
  }

  /**
   * Summarises the tail if it is long enough, and commits; undefined when done (or when no
   * transaction was open), else the error, everything since open() having been rolled back.
   */
  commitAll(): Error | undefined {
    if (!this.db.inTransaction) return undefined;
    try {
      if (this.summaryDue) this.summarise(this.newestBucket);
      this.commit.run();
      this.undo = [];
      return undefined;
    } catch (err) {
      this.rollbackAll();
      return asError(err);
    }
  }

  /** Rolls back everything since open(), and what the caches learnt from it; nothing if no transaction is open. */
  rollbackAll(): void {
    this.waitingCount = 0;
    if (this.db.inTransaction) this.rollback.run();
    else if (this.undo.length === 0) return;
    this.undoSince(0);
    // A summary may have been rolled back with the rest: the watermark and the tail's keys are read again.
    this.watermark = undefined;
    this.pendingComplete = false;
  }

  /** Whether commitAll() would summarise the tail: it has grown past SUMMARY_BUCKETS, and no summary is under way. */
  get summaryDue(): boolean {
    return this.db.inTransaction && !this.summarising && this.watermark !== undefined && this.newestBucket - this.watermark > SUMMARY_BUCKETS;
  }

  /**
   * Summarises the tail now, a step at a time, for a caller that lets the event loop turn between
   * steps (sqlite-loop.ts): each step reads or writes at most `rowsPerStep` rows. With 1,000 grants
   * at 16,000 records a second, a second's summary was some 16,000 rows: 15 to 27 ms to write in
   * one piece, and its commit alone took 2 to 4.5 ms, each row a page of its own to the WAL. So
   * the rows are also committed a step's worth at a time: at a step that yields `commit`, the
   * caller commits (commitAll()) and begins again (open()) before the next. At one that yields
   * `turn`, the transaction stays open: reading the tail's records to learn their keys, the first
   * time or after another connection wrote, runs in one transaction, lest other writes keep
   * changing what it reads. Nothing else may use the connection until the steps are done (or the
   * caller stops taking them: the summary is then left for another time), and commitAll() has no
   * summary left to write. A summary whose tail another connection wrote to between its
   * transactions stops, having moved no watermark: the next one begins again from the records.
   */
  *summariseInSteps(rowsPerStep: number): Generator<SummaryStep, void, void> {
    if (!this.summaryDue) return;
    this.summarising = true;
    try {
      yield* this.summary(this.newestBucket, rowsPerStep);
    } finally {
      this.summarising = false;
    }
  }

  /** What another connection may have changed since this one's last transaction: the watermark, and the tail's records. */
  private startTransaction(): void {
    const version = this.dataVersion.get()!;
    if (version === this.seenVersion && this.watermark !== undefined) return;
    this.seenVersion = version;
    this.othersWrote++;
    this.pendingComplete = false;
    this.watermark = this.readWatermark.get()!;
    for (const [key, buckets] of this.pending) {
      const kept = buckets.filter((b) => b >= this.watermark!);
      if (kept.length === 0) this.pending.delete(key);
      else this.pending.set(key, kept);
    }
  }

  /** The next string of a slice's `text`, `length` long (-1: null). */
  private nextText(text: string, length: number): string | null {
    if (length < 0) return null;
    const s = text.slice(this.textAt, this.textAt + length);
    this.textAt += length;
    return s;
  }

  /** Inserts record `k` of `slice` (see sqlite-wire.ts), whose prevHash, when not sent, is `prevHash`; returns its hash. */
  private insertEncoded(slice: WireSlice, table: StringTable, k: number, prevHash: string | undefined): string {
    const nums = slice.nums;
    const n0 = k * NUMS;
    this.illFormed = false;
    for (let i = 0; i < STRING_FIELDS.length; i++) {
      const local = nums[n0 + STRINGS + i]!;
      this.ids[i] = local === 0 ? this.missing(i) : this.tableId(table, local, i);
    }
    const t = n0 + TEXT_LENGTHS;
    const requestId = this.nextText(slice.text, nums[t]!);
    const reason = this.nextText(slice.text, nums[t + 1]!);
    const error = this.nextText(slice.text, nums[t + 2]!);
    const args = this.nextText(slice.text, nums[t + 3]!);
    const hash = this.nextText(slice.text, nums[t + 4]!)!;
    const sent = this.nextText(slice.text, nums[t + 5]!);
    const latency = nums[n0 + LATENCY]!;
    const resultBytes = nums[n0 + RESULT_BYTES]!;
    const r = {
      at: nums[n0 + AT]!,
      seq: nums[n0 + SEQ]!,
      requestId,
      reason,
      error,
      hash,
      prevHash: (sent ?? prevHash)!,
      latencyMs: Number.isNaN(latency) ? null : latency,
      resultBytes: Number.isNaN(resultBytes) ? null : resultBytes,
    };
    // A prevHash that was not sent is the hash of the record before, which may have been checked already.
    const prevOk = sent === null ? prevHash === this.lastHex || isHex64(prevHash) : isHex64(sent);
    const hashOk = isHex64(hash);
    if (hashOk) this.lastHex = hash;
    const exact = !this.illFormed && hashOk && prevOk && wellFormed(requestId) && wellFormed(reason) && wellFormed(error);
    this.insertRow(r.at, r.seq, r, args, exact ? undefined : () => this.wholeEncoded(r, args, table, nums, n0));
    return hash;
  }

  /** An encoded record as the object it was, for record_json. */
  private wholeEncoded(r: { at: number; seq: number } & Record<string, unknown>, args: string | null, table: StringTable, nums: Float64Array, n0: number): AuditRecord {
    const whole: Record<string, unknown> = { ...r, arguments: args === null ? undefined : (JSON.parse(args) as unknown) };
    STRING_FIELDS.forEach((field, i) => (whole[field] = nums[n0 + STRINGS + i] === 0 ? null : table.texts[nums[n0 + STRINGS + i]!]));
    return whole as unknown as AuditRecord;
  }

  /** Inserts `r` as it is: on the caller's thread, or a record that did not fit the wire's encoding. */
  private insertRecord(r: AuditRecord): void {
    this.illFormed = false;
    // Field by field, in STRING_FIELDS' order (READ_IN_ORDER): a loop over the names made every
    // read a megamorphic keyed load, for every record written.
    const ids = this.ids;
    ids[0] = this.idOf(r.grantId, 0);
    ids[1] = this.idOf(r.grantLabel, 1);
    ids[2] = this.idOf(r.session, 2);
    ids[3] = this.idOf(r.server, 3);
    ids[4] = this.idOf(r.method, 4);
    ids[5] = this.idOf(r.tool, 5);
    ids[6] = this.idOf(r.decision, 6);
    ids[7] = this.idOf(r.rule, 7);
    ids[8] = this.idOf(r.policyVersion, 8);
    ids[9] = this.idOf(r.upstreamStatus, 9);
    ids[10] = this.idOf(r.stream, 10);
    // `keys` arguments (the default) have a shape whose JSON is quicker written directly.
    const a = r.arguments;
    const args = a === undefined ? null : (keysArgumentsJson(a) ?? JSON.stringify(a) ?? null);
    // The previous record's hash is nearly always the one checked last.
    const hashOk = isHex64(r.hash);
    const prevOk = r.prevHash === this.lastHex || isHex64(r.prevHash);
    if (hashOk) this.lastHex = r.hash;
    const exact = !this.illFormed && hashOk && prevOk && wellFormed(r.requestId) && wellFormed(r.reason) && wellFormed(r.error);
    this.insertRow(r.at, r.seq, r, args, exact ? undefined : () => r);
  }

  /**
   * Puts the row of a record whose string ids are in `this.ids` among the rows waiting to be
   * inserted, or, when `whole` gives the record to keep in record_json, inserts it at once (after
   * the rows waiting before it, in written order).
   */
  private insertRow(
    at: number,
    seq: number,
    r: Pick<AuditRecord, 'requestId' | 'reason' | 'error' | 'latencyMs' | 'resultBytes' | 'prevHash' | 'hash'>,
    args: string | null,
    whole: (() => AuditRecord) | undefined,
  ): void {
    if (!Number.isSafeInteger(at) || at <= -AT_LIMIT || at >= AT_LIMIT) {
      throw new RangeError(`${this.name}: record ${seq} of a batch: its time ${at} is not a whole number of ms within ±2^${63 - AT_SHIFT}; the batch was not written`);
    }
    let n: number;
    if (at === this.lastAt) {
      n = this.lastN + 1;
    } else {
      if (!Number.isNaN(this.lastAt)) this.lastOfTransaction.set(this.lastAt, this.lastN);
      const last = this.lastOfTransaction.get(at) ?? this.lastOfMs.get(at, at);
      n = last === undefined ? 0 : last + 1;
    }
    if (n >= PER_MS) throw new RangeError(`${this.name}: more than ${PER_MS} records at ${at} ms; the batch was not written`);

    const ids = this.ids;
    const p = whole === undefined ? this.rows : this.params;
    const o = whole === undefined ? this.waitingCount * PARAMS : 0;
    p[o] = at;
    p[o + 1] = n;
    for (let i = 0; i < STRING_PARAM.length; i++) p[o + STRING_PARAM[i]!] = ids[i];
    p[o + 7] = seq;
    p[o + 8] = r.requestId;
    p[o + 13] = r.reason;
    p[o + 15] = args;
    p[o + 17] = r.latencyMs;
    p[o + 18] = r.resultBytes;
    p[o + 19] = r.error;
    p[o + 20] = r.prevHash;
    p[o + 21] = r.hash;
    const stream = ids[F.stream]!;
    if (whole === undefined) {
      p[o + 22] = null;
      const w = this.waitingCount++;
      this.waitingStream[w] = stream;
      this.waitingSeq[w] = seq;
      this.waitingHash[w] = r.hash;
      if (this.waitingCount === this.rowsPerInsert) this.insertWaiting();
    } else {
      p[o + 22] = JSON.stringify(whole());
      this.insertWaiting();
      if (this.insertRaw.run(...p).changes === 0) {
        // Already stored: a repeat of the same record is the writer delivering at least once.
        this.checkRepeat(stream, seq, r.hash);
        return;
      }
    }
    this.lastAt = at;
    this.lastN = n;
    this.noteKeys(bucketOf(at));
  }

  /**
   * Inserts the rows waiting in `rows`. A repeat of a stored record inserts nothing; when fewer
   * rows went in than were given, every one of them must now be stored with the hash it was given
   * (those just inserted are; a repeat must be the same record).
   */
  private insertWaiting(): void {
    const count = this.waitingCount;
    if (count === 0) return;
    this.waitingCount = 0;
    const insert = (this.inserts[count] ??= this.db.prepare(insertSql(count)));
    // The values as arguments, not as one array: better-sqlite3 reads an array's elements through
    // V8's generic property lookup, one by one, and an argument directly. For 32 rows of 23
    // values that made the insert about a third cheaper (1,230-1,360 against 760-850 ns a row).
    const inserted = insert.run(...(count === this.rowsPerInsert ? this.rows : this.rows.slice(0, count * PARAMS))).changes;
    if (inserted < count) {
      for (let w = 0; w < count; w++) this.checkRepeat(this.waitingStream[w]!, this.waitingSeq[w]!, this.waitingHash[w]!);
    }
  }

  /** A record already stored must be the same record: the same hash. */
  private checkRepeat(stream: number, seq: number, hash: string): void {
    const stored = this.stored.get(stream, seq);
    const storedHash = stored === undefined ? '?' : stored.record_json !== null ? (JSON.parse(stored.record_json) as AuditRecord).hash : stored.hash.toString('hex');
    if (storedHash !== hash) {
      const name = [...this.streams].find(([, id]) => Math.abs(id) === stream)?.[0] ?? String(stream);
      throw new Error(`${this.name}: stream ${name} already has a different record ${seq} (hash ${storedHash}, not ${hash}); the batch was not written`);
    }
  }

  /** Notes the grant, tool, decision and server of the record in `this.ids` for bucket `b`. */
  private noteKeys(b: number): void {
    const ids = this.ids;
    const grant = ids[F.grant] ?? null;
    const tool = ids[F.tool] ?? null;
    const decision = ids[F.decision]! * 4 + KEY_KIND.decision;
    const server = ids[F.server]! * 4 + KEY_KIND.server;
    if (b < this.watermark!) {
      // Late: its bucket is summarised already.
      if (grant !== null) this.addBucket.run(grant * 4 + KEY_KIND.grant, b);
      if (tool !== null) this.addBucket.run(tool * 4 + KEY_KIND.tool, b);
      this.addBucket.run(decision, b);
      this.addBucket.run(server, b);
      return;
    }
    if (grant !== null) this.notePending(grant * 4 + KEY_KIND.grant, b);
    if (tool !== null) this.notePending(tool * 4 + KEY_KIND.tool, b);
    this.notePending(decision, b);
    this.notePending(server, b);
    if (b > this.newestBucket) this.newestBucket = b;
  }

  /** Notes that bucket `b` of the tail has `key`. */
  private notePending(key: number, b: number): void {
    const buckets = this.pending.get(key);
    if (buckets === undefined) this.pending.set(key, [b]);
    else if (buckets[buckets.length - 1] !== b) buckets.push(b);
  }

  /** Writes the bucket rows of the tail's buckets below `upTo`, and moves the watermark there. */
  private summarise(upTo: number): void {
    for (const _ of this.summary(upTo, Infinity));
  }

  /**
   * Summarises the tail up to bucket `upTo` (see summariseInSteps), yielding after each
   * `rowsPerStep` rows read or written. The bucket rows go in key order, so that a key's rows for
   * all these buckets go to one page together.
   */
  private *summary(upTo: number, rowsPerStep: number): Generator<SummaryStep, void, void> {
    let rows = 0;
    if (!this.pendingComplete) {
      // Records not written from here may be in the tail: its keys are read from the records
      // themselves, the whole tail's, so that from now on `pending` covers all of it.
      this.pending = new Map();
      for (const row of this.tailKeys.iterate(this.watermark!)) {
        const b = row[0] as number;
        if (row[1] !== null) this.notePending((row[1] as number) * 4 + KEY_KIND.grant, b);
        if (row[2] !== null) this.notePending((row[2] as number) * 4 + KEY_KIND.tool, b);
        this.notePending((row[3] as number) * 4 + KEY_KIND.decision, b);
        this.notePending((row[4] as number) * 4 + KEY_KIND.server, b);
        if (b > this.newestBucket) this.newestBucket = b;
        if (++rows >= rowsPerStep) {
          rows = 0;
          yield 'turn';
        }
      }
      this.pendingComplete = true;
    }
    const othersWrote = this.othersWrote;
    for (const key of Float64Array.from(this.pending.keys()).sort()) {
      let buckets = this.pending.get(key)!;
      if (!isAscending(buckets)) buckets = [...new Set(buckets)].sort((x, y) => x - y);
      let done = 0;
      while (done < buckets.length && buckets[done]! < upTo) {
        this.addBucket.run(key, buckets[done++]!);
        if (++rows >= rowsPerStep) {
          rows = 0;
          yield 'commit';
          // What is written stays: a bucket row too many is only looked at in vain.
          if (this.othersWrote !== othersWrote) return;
        }
      }
      if (done === buckets.length) this.pending.delete(key);
      else this.pending.set(key, buckets.slice(done));
    }
    this.writeWatermark.run(upTo);
    this.watermark = upTo;
  }

  /** The id of string `i` of a record that has none: fails for the fields a record must have. */
  private missing(i: number): null {
    if (REQUIRED.has(i)) throw new TypeError(`${this.name}: a record's ${STRING_FIELDS[i]} is missing; the batch was not written`);
    return null;
  }

  /** The id of the `local`th string the thread was sent, resolved once per string (and again if that was rolled back). */
  private tableId(table: StringTable, local: number, i: number): number {
    let id = table.ids[local]!;
    if (id === 0) {
      id = this.cachedId(table.texts[local]!, i);
      table.ids[local] = id;
      this.undo.push(() => (table.ids[local] = 0));
    }
    if (id < 0) {
      this.illFormed = true;
      return -id;
    }
    return id;
  }

  /** The id of string field `i` of a record whose value is `text` (null: none). */
  private idOf(text: unknown, i: number): number | null {
    return text === null ? this.missing(i) : this.textId(text, i);
  }

  /** The id of `text` as string field `i` of a record. */
  private textId(text: unknown, i: number): number {
    if (typeof text !== 'string') {
      throw new TypeError(`${this.name}: a record's ${STRING_FIELDS[i]} must be a string${REQUIRED.has(i) ? '' : ' or null'}, not ${typeof text}; the batch was not written`);
    }
    let id: number;
    if (text === this.lastText[i]) {
      id = this.lastId[i]!;
    } else {
      id = this.cachedId(text, i);
      this.lastText[i] = text;
      this.lastId[i] = id;
    }
    if (id < 0) {
      this.illFormed = true;
      return -id;
    }
    return id;
  }

  /** The id of `text` in audit_strings (or, for the stream, audit_streams), added if new; negative if it is not well-formed. */
  private cachedId(text: string, i: number): number {
    const isStream = i === F.stream;
    const cache = isStream ? this.streams : this.strings;
    let id = cache.get(text);
    if (id === undefined) {
      id = isStream
        ? (this.findStream.get(text) ?? Number(this.addStream.run(text).lastInsertRowid))
        : (this.findString.get(text) ?? Number(this.addString.run(text).lastInsertRowid));
      if (!isWellFormed(text)) id = -id;
      cache.set(text, id);
      this.undo.push(() => cache.delete(text));
    }
    return id;
  }

  /** Forgets cache entries of rolled-back work: everything after `mark`. */
  private undoSince(mark: number): void {
    // The ids forgotten below may be among the last ones.
    this.lastText.fill(undefined);
    for (let i = this.undo.length - 1; i >= mark; i--) this.undo[i]!();
    this.undo.length = mark;
  }

  /**
   * Deletes the records written before `before`, stream by stream, and leaves a checkpoint for
   * each stream that lost records, signed by `key`, so the rest still verifies.
   *
   * Per stream only a prefix is deleted: records up to the first one at or after `before`. A
   * record that is old but follows a newer one (a clock stepped back) stays, since deleting it
   * would leave a hole the checkpoint cannot bridge. The prefix must also chain from the stream's
   * checkpoint, which `key` must have signed, or from its start (prunableRecords): a stream whose
   * checkpoint is not ours or whose records were removed by hand is held where it is, and said
   * so in the result, rather than signed over. Each transaction deletes at most PRUNE_CHUNK
   * records together with writing the signed checkpoint of the last one, so the log verifies
   * after every step, and the event loop (on the writer thread: the writes) runs between steps.
   * Then the bucket rows older than every remaining record go, a few hundred keys per
   * transaction. `stop()` is asked between steps; when it says so, pruning ends there and rejects.
   */
  async prune(before: number, prunedAt: number, key: AuditSigningKey, stop: () => string | undefined): Promise<PruneResult> {
    const db = this.db;
    const nextStream = db.prepare<[string], { id: number; stream: string }>('SELECT id, stream FROM audit_streams WHERE stream > ? ORDER BY stream LIMIT 1');
    const head = db.prepare<[number, number], { seq: number; at: number; hash: Buffer; prev_hash: Buffer; record_json: string | null }>(
      `SELECT seq, id >> ${AT_SHIFT} AS at, hash, prev_hash, record_json FROM audit_records WHERE stream = ? ORDER BY seq LIMIT ?`,
    );
    const current = db.prepare<[string], SignedCheckpoint>(
      'SELECT stream, seq, hash, at, pruned_at AS prunedAt, key_id AS keyId, signature FROM audit_checkpoints WHERE stream = ?',
    );
    const remove = db.prepare<[number, number]>('DELETE FROM audit_records WHERE stream = ? AND seq <= ?');
    const checkpoint = db.prepare<[string, number, string, number, number, string, string]>(
      `INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, pruned_at = excluded.pruned_at,
         key_id = excluded.key_id, signature = excluded.signature
       WHERE excluded.seq > audit_checkpoints.seq`,
    );
    /** One step: deletes the stream's oldest records (at most PRUNE_CHUNK); whether the stream has more to prune, and why it was held if it was. */
    const step = db
      .transaction((id: number, stream: string): { deleted: number; more: boolean; held: string | undefined } => {
        const rows = head.all(id, PRUNE_CHUNK).map((row) => {
          // A record kept whole as JSON may have hashes its BLOBs do not hold as hex.
          const whole = row.record_json === null ? undefined : (JSON.parse(row.record_json) as AuditRecord);
          return {
            seq: row.seq,
            at: row.at,
            hash: whole?.hash ?? row.hash.toString('hex'),
            prevHash: whole?.prevHash ?? row.prev_hash.toString('hex'),
          };
        });
        // Nothing to prune: a stream held at its checkpoint is not reported until it has records to prune.
        if (rows[0] === undefined || rows[0].at >= before) return { deleted: 0, more: false, held: undefined };
        const anchor = pruneAnchor(current.get(stream), key);
        if (typeof anchor === 'string') return { deleted: 0, more: false, held: anchor };
        const { last, held } = prunableRecords(anchor, rows, before);
        if (last === undefined) return { deleted: 0, more: false, held };
        const deleted = remove.run(id, last.seq).changes;
        const content = { stream, seq: last.seq, hash: last.hash, at: last.at, prunedAt };
        const signed = signCheckpoint(key, content);
        checkpoint.run(stream, last.seq, last.hash, last.at, prunedAt, signed.keyId, signed.signature);
        return { deleted, more: held === undefined && last === rows[rows.length - 1] && rows.length === PRUNE_CHUNK, held };
      })
      .immediate;

    let records = 0;
    let streams = 0;
    const held: Array<{ stream: string; reason: string }> = [];
    const check = () => {
      const why = stop();
      if (why !== undefined) throw new Error(`${this.name}: pruning stopped (${why}) after deleting ${records} records; the log verifies as it is`);
    };
    // Streams one at a time by seeking past the previous one: no scan of the whole table.
    for (let s = nextStream.get(''); s !== undefined; s = nextStream.get(s.stream)) {
      let pruned = false;
      for (;;) {
        await this.idle();
        check();
        const r = step(s.id, s.stream);
        records += r.deleted;
        pruned ||= r.deleted > 0;
        if (r.held !== undefined) held.push({ stream: s.stream, reason: r.held });
        await yieldToEventLoop();
        if (!r.more) break;
      }
      if (pruned) streams++;
    }
    if (records > 0) await this.pruneBuckets(check);
    return held.length > 0 ? { records, streams, held } : { records, streams };
  }

  /** Waits until no write transaction is open: a batch still arriving slice by slice holds one. */
  private async idle(): Promise<void> {
    while (this.db.inTransaction) await yieldToEventLoop();
  }

  /**
   * Deletes the bucket rows of buckets older than the oldest remaining record, key by key. The
   * oldest record is read again in every transaction: a record written meanwhile into an old
   * bucket (a late replay) keeps that bucket's rows.
   */
  private async pruneBuckets(check: () => void): Promise<void> {
    const db = this.db;
    const keysAfter = db.prepare<[number, number], number>('SELECT DISTINCT key FROM audit_record_buckets WHERE key > ? ORDER BY key LIMIT ?').pluck();
    const oldest = db.prepare<[], number>(`SELECT id >> ${BUCKET_SHIFT} FROM audit_records ORDER BY id LIMIT 1`).pluck();
    const remove = db.prepare<[number, number]>('DELETE FROM audit_record_buckets WHERE key = ? AND bucket < ?');
    const step = db
      .transaction((after: number): number | undefined => {
        const first = oldest.get();
        if (first === undefined) return undefined;
        const keys = keysAfter.all(after, PRUNE_KEYS);
        for (const key of keys) remove.run(key, first);
        return keys.length === PRUNE_KEYS ? keys[keys.length - 1] : undefined;
      })
      .immediate;
    for (let after: number | undefined = -1; after !== undefined; ) {
      await this.idle();
      check();
      after = step(after);
      await yieldToEventLoop();
    }
  }
}

const wellFormed = (v: unknown): boolean => typeof v !== 'string' || isWellFormed(v);

/** Whether `xs` is in ascending order, each once. */
function isAscending(xs: readonly number[]): boolean {
  for (let i = 1; i < xs.length; i++) if (xs[i]! <= xs[i - 1]!) return false;
  return true;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
