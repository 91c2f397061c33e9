/**
 * The SQLite audit sink: the embedded default, one file of its own beside the gateway (never the
 * control store's file: the two have different write rates, durability settings and retention).
 *
 * Why it is shaped this way:
 * - One column per field, so operators can query the log with any SQLite client; the arguments
 *   as JSON text (query them with json_extract). Reading back reproduces every record exactly,
 *   field for field, so its hash verifies: null stays null, and an absent `arguments` (undefined,
 *   which the hash leaves out) is SQL NULL while a null one is the JSON text `null`.
 * - PRIMARY KEY (stream, seq): a record cannot be stored twice, and reading a stream in chain
 *   order (iterate, verify) is one walk of that key. The writer delivers at least once, so a batch may come again after the sink
 *   took it: a record already stored with the same hash is passed over; one with a different
 *   hash rejects the whole batch (two different records claim one place in the chain).
 * - Indexes on (at), (grant_id, at), (tool, at) and (decision, at): the questions operators ask
 *   ("what did this grant do last week", "who called delete_*", "every deny today"), each
 *   answered newest first straight from its index, ties in time broken by rowid (written order),
 *   which every index entry carries, so no query sorts its matches. Every index costs inserts:
 *   the grant index most, since each batch touches a page of it per grant it holds (about half
 *   the write time in the benchmark). Server is filtered on but not indexed: a gateway has few
 *   servers, so walking the time index and skipping the others' records finds a page quickly.
 * - `write()` inserts a batch in one IMMEDIATE transaction with one prepared statement:
 *   all-or-nothing, and IMMEDIATE takes the write lock up front, so another process holding the
 *   file (the CLI pruning) makes it wait up to BUSY_TIMEOUT_MS rather than fail half-way.
 * - WAL, so queries and verification read while the gateway writes. `synchronous` is NORMAL by
 *   default: in WAL mode a commit is then durable against the process dying (the WAL is written
 *   before `write()` resolves) but the last commits may be lost, never corrupted, if the machine
 *   loses power before the next WAL checkpoint syncs. That matches the writer's default `async`
 *   mode, which already holds up to a flush interval of records in memory; with `strict`
 *   audit, open the sink with `synchronous: 'full'` (one fsync per batch, shared by every call
 *   in it through the writer's group commit).
 * - STRICT tables: a value of the wrong type is refused instead of stored as something else,
 *   which would change the record's hash. `latency_ms` is REAL because a latency may be
 *   fractional; `at` and `result_bytes` are whole numbers.
 * - SQLite stores text as UTF-8, which cannot hold a lone UTF-16 surrogate (JSON.parse of a
 *   client's `"\ud800"` makes one): it would come back as U+FFFD characters, and the record
 *   would no longer match its hash. Such a record keeps its columns (with U+FFFD, for queries)
 *   and is also stored whole as JSON in `record_json` (JSON escapes the surrogate), which is what
 *   reading it back uses. Every other record has NULL there.
 * - better-sqlite3 is synchronous; every method does its work at once and returns a settled
 *   promise; errors are rejections. A write holds the event loop while it runs (about 10 ms for
 *   500 records here, several times that for the commit that runs a checkpoint: see
 *   bench/audit-sqlite.ts). Long operations (iterate, verify, prune) go page by page or chunk
 *   by chunk and let the event loop run in between, so the gateway's writes are not held up.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { AuditRecord } from '../event.js';
import type { AuditPage, AuditQuery, AuditStore, PruneResult } from '../store.js';
import { verifyChain, type AuditCheckpoint, type VerifyOptions, type VerifyResult } from '../verify.js';

export interface SqliteAuditSinkOptions {
  /**
   * `normal` (default): durable against the process dying, not against power loss (see the top
   * of the file). `full`: every committed batch is fsync'ed; use it with strict audit.
   */
  readonly synchronous?: 'normal' | 'full';
  /** The clock checkpoints record `pruned_at` with; default `Date.now`. */
  readonly clock?: () => number;
}

/** How long a write waits for another process's write to finish before it fails with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5_000;
/**
 * The WAL is copied into the database (a checkpoint, run by the commit that crosses this size)
 * every this many pages: 4,000 pages of 4 KiB, about 16 MiB. SQLite's default is 1,000. Audit
 * writes touch the same index pages batch after batch (one per grant, tool and decision seen),
 * each commit appending a new copy of them to the WAL; a checkpoint writes each page once however
 * many copies it has, so checkpointing less often does less work: about 20-40% more records/s
 * here. The cost is a longer pause in the commit that runs it (see the benchmark's max batch
 * time) and a WAL file of about this size.
 */
const WAL_AUTOCHECKPOINT_PAGES = 4_000;
/** After a checkpoint the WAL file is cut back to this size if it grew past it (a long verify() holds checkpoints back). */
const WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024;
/** Records per page read by iterate() and verify(). */
const READ_PAGE = 1_000;
/** Records deleted per transaction by prune(): each transaction holds the write lock this long. */
const PRUNE_CHUNK = 5_000;
/** The schema this code writes (PRAGMA user_version). */
export const AUDIT_SQLITE_SCHEMA_VERSION = 1;

const SCHEMA_V1 = `
CREATE TABLE IF NOT EXISTS audit_records (
  stream          TEXT    NOT NULL,
  seq             INTEGER NOT NULL,
  at              INTEGER NOT NULL,
  request_id      TEXT,
  grant_id        TEXT,
  grant_label     TEXT,
  session         TEXT,
  server          TEXT    NOT NULL,
  method          TEXT    NOT NULL,
  tool            TEXT,
  decision        TEXT    NOT NULL,
  rule            TEXT,
  reason          TEXT,
  policy_version  TEXT,
  arguments       TEXT,
  upstream_status TEXT,
  latency_ms      REAL,
  result_bytes    INTEGER,
  error           TEXT,
  prev_hash       TEXT    NOT NULL,
  hash            TEXT    NOT NULL,
  record_json     TEXT,
  PRIMARY KEY (stream, seq)
) STRICT;
CREATE INDEX IF NOT EXISTS audit_records_at ON audit_records (at);
CREATE INDEX IF NOT EXISTS audit_records_grant ON audit_records (grant_id, at);
CREATE INDEX IF NOT EXISTS audit_records_tool ON audit_records (tool, at);
CREATE INDEX IF NOT EXISTS audit_records_decision ON audit_records (decision, at);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  stream    TEXT    PRIMARY KEY,
  seq       INTEGER NOT NULL,
  hash      TEXT    NOT NULL,
  at        INTEGER NOT NULL,
  pruned_at INTEGER NOT NULL
) STRICT;
`;

/** Columns in the order of the insert's parameters. */
const INSERT_SQL = `INSERT INTO audit_records (
  stream, seq, at, request_id, grant_id, grant_label, session, server, method, tool, decision, rule, reason,
  policy_version, arguments, upstream_status, latency_ms, result_bytes, error, prev_hash, hash, record_json
) VALUES (${Array(22).fill('?').join(', ')}) ON CONFLICT (stream, seq) DO NOTHING`;

/** The record's fields, named and ordered as AuditRecord declares them, so a row is the record. */
const SELECT_COLUMNS = `at, request_id AS requestId, grant_id AS grantId, grant_label AS grantLabel, session, server, method,
  tool, decision, rule, reason, policy_version AS policyVersion, arguments, upstream_status AS upstreamStatus,
  latency_ms AS latencyMs, result_bytes AS resultBytes, error, stream, seq, prev_hash AS prevHash, hash, record_json`;

type Row = Omit<AuditRecord, 'arguments'> & { arguments: string | null; record_json: string | null };
/** A query's row: the record and its place in written order. */
type QueryRow = Row & { row_id: number };

/** The string fields of a record, checked for what UTF-8 cannot hold. */
const STRING_FIELDS = [
  'stream',
  'requestId',
  'grantId',
  'grantLabel',
  'session',
  'server',
  'method',
  'tool',
  'decision',
  'rule',
  'reason',
  'policyVersion',
  'upstreamStatus',
  'error',
  'prevHash',
  'hash',
] as const;

/** `String.prototype.isWellFormed` (Node 20; ES2024, newer than the lib this project compiles against). */
const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

/**
 * Opens (creating the file and its folder if missing) the SQLite audit sink at `file`, or a
 * private in-memory one for `:memory:`, and brings its schema up to date: opening an existing
 * file again changes nothing.
 */
export function openSqliteAuditSink(file: string, opts: SqliteAuditSinkOptions = {}): SqliteAuditSink {
  const inMemory = file === ':memory:' || file === '';
  const resolved = inMemory ? ':memory:' : path.resolve(file);
  if (!inMemory) mkdirSync(path.dirname(resolved), { recursive: true });
  const db = new Database(resolved);
  try {
    // The timeout first: switching to WAL itself needs a lock another process may hold.
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${opts.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
    db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    migrate(db, resolved);
  } catch (err) {
    db.close();
    throw err;
  }
  return new SqliteAuditSink(db, resolved, opts.clock ?? Date.now);
}

/** Creates what is missing, once, under the write lock (two processes opening at once both succeed). */
function migrate(db: Database.Database, file: string): void {
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > AUDIT_SQLITE_SCHEMA_VERSION) {
      throw new Error(`audit database ${file} has schema version ${version}, newer than this gateway's ${AUDIT_SQLITE_SCHEMA_VERSION}: upgrade the gateway`);
    }
    if (version < 1) {
      db.exec(SCHEMA_V1);
      db.pragma(`user_version = ${AUDIT_SQLITE_SCHEMA_VERSION}`);
    }
  }).immediate();
}

export class SqliteAuditSink implements AuditStore {
  readonly name: string;
  private readonly insert: Database.Statement<unknown[]>;
  private readonly storedHash: Database.Statement<[string, number], { hash: string }>;
  private readonly insertBatch: (records: readonly AuditRecord[]) => void;
  private readonly queries = new Map<string, Database.Statement<unknown[], QueryRow>>();

  constructor(
    private readonly db: Database.Database,
    private readonly file: string,
    private readonly clock: () => number,
  ) {
    this.name = `sqlite:${file}`;
    this.insert = db.prepare(INSERT_SQL);
    this.storedHash = db.prepare('SELECT hash FROM audit_records WHERE stream = ? AND seq = ?');
    const params: unknown[] = Array(22).fill(null);
    this.insertBatch = db.transaction((records: readonly AuditRecord[]) => {
      for (const r of records) {
        params[0] = r.stream;
        params[1] = r.seq;
        params[2] = r.at;
        params[3] = r.requestId;
        params[4] = r.grantId;
        params[5] = r.grantLabel;
        params[6] = r.session;
        params[7] = r.server;
        params[8] = r.method;
        params[9] = r.tool;
        params[10] = r.decision;
        params[11] = r.rule;
        params[12] = r.reason;
        params[13] = r.policyVersion;
        params[14] = r.arguments === undefined ? null : (JSON.stringify(r.arguments) ?? null);
        params[15] = r.upstreamStatus;
        params[16] = r.latencyMs;
        params[17] = r.resultBytes;
        params[18] = r.error;
        params[19] = r.prevHash;
        params[20] = r.hash;
        params[21] = storableAsText(r) ? null : JSON.stringify(r);
        if (this.insert.run(params).changes === 0) {
          // Already stored: a repeat of the same record is the writer delivering at least once.
          const stored = this.storedHash.get(r.stream, r.seq);
          if (stored?.hash !== r.hash) {
            throw new Error(`${this.name}: stream ${r.stream} already has a different record ${r.seq} (hash ${stored?.hash ?? '?'}, not ${r.hash}); the batch was not written`);
          }
        }
      }
    }).immediate;
  }

  async write(records: readonly AuditRecord[]): Promise<void> {
    if (records.length === 0) return;
    this.insertBatch(records);
  }

  /** A page of records matching `filter`, in the order asked; see AuditPage for the cursor. */
  async query(filter: AuditQuery = {}): Promise<AuditPage> {
    const newest = (filter.order ?? 'newest') === 'newest';
    const limit = pageSize(filter.limit);
    const where: string[] = [];
    const args: unknown[] = [];
    const key: string[] = [newest ? 'n' : 'o'];
    const eq = (column: string, value: string | undefined, flag: string) => {
      if (value === undefined) return;
      where.push(`${column} = ?`);
      args.push(value);
      key.push(flag);
    };
    eq('grant_id', filter.grant, 'g');
    eq('tool', filter.tool, 't');
    eq('decision', filter.decision, 'd');
    eq('server', filter.server, 's');
    if (filter.since !== undefined) {
      where.push('at >= ?');
      args.push(finiteTime(filter.since, 'since'));
      key.push('f');
    }
    if (filter.until !== undefined) {
      where.push('at < ?');
      args.push(finiteTime(filter.until, 'until'));
      key.push('u');
    }
    if (filter.after !== undefined) {
      const c = decodeCursor(filter.after);
      const op = newest ? '<' : '>';
      // The lone `at` bound lets the planner seek in the (…, at) index; the row value then
      // places the cursor among records of the same time.
      where.push(`at ${op}= ? AND (at, rowid) ${op} (?, ?)`);
      args.push(c.at, c.at, c.rowid);
      key.push('c');
    }
    const cacheKey = key.join('');
    let stmt = this.queries.get(cacheKey);
    if (stmt === undefined) {
      const dir = newest ? 'DESC' : 'ASC';
      stmt = this.db.prepare<unknown[], QueryRow>(
        `SELECT rowid AS row_id, ${SELECT_COLUMNS} FROM audit_records${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''}
         ORDER BY at ${dir}, rowid ${dir} LIMIT ?`,
      );
      this.queries.set(cacheKey, stmt);
    }
    // One more than the page: whether there is a next page is known without an empty last page.
    const rows = stmt.all(...args, limit + 1);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { records: page.map(toRecord), next: rows.length > limit && last !== undefined ? encodeCursor(last) : undefined };
  }

  /**
   * Every record, stream by stream in seq order: what verifyChain reads. Pages of READ_PAGE
   * records, each read whole, so writes go on between pages; records written meanwhile are
   * included if they come after the current position. Use verify() for a consistent snapshot of
   * records and checkpoints.
   */
  async *iterate(): AsyncGenerator<AuditRecord> {
    yield* pages(this.db);
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
    if (this.file === ':memory:') return verifyChain(pages(this.db), { ...opts, checkpoints: readCheckpoints(this.db) });
    const snapshot = new Database(this.file, { readonly: true, fileMustExist: true });
    try {
      snapshot.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      snapshot.exec('BEGIN');
      // The first read fixes the snapshot; the records below are read from the same one.
      const checkpoints = readCheckpoints(snapshot);
      const result = await verifyChain(pages(snapshot), { ...opts, checkpoints });
      snapshot.exec('COMMIT');
      return result;
    } finally {
      snapshot.close();
    }
  }

  /**
   * Deletes the records written before `beforeMs`, stream by stream, and leaves a checkpoint for
   * each stream that lost records, so the rest still verifies.
   *
   * Per stream only a prefix is deleted: records up to the first one at or after `beforeMs`. A
   * record that is old but follows a newer one (a clock stepped back) stays, since deleting it
   * would leave a hole the checkpoint cannot bridge. Each transaction deletes at most PRUNE_CHUNK
   * records together with the checkpoint of the last one, so the log verifies after every
   * step, and the event loop runs between steps.
   */
  async prune(beforeMs: number): Promise<PruneResult> {
    const before = finiteTime(beforeMs, 'beforeMs');
    const nextStream = this.db.prepare<[string], { stream: string }>('SELECT stream FROM audit_records WHERE stream > ? ORDER BY stream LIMIT 1');
    const head = this.db.prepare<[string, number], { seq: number; at: number; hash: string }>(
      'SELECT seq, at, hash FROM audit_records WHERE stream = ? ORDER BY seq LIMIT ?',
    );
    const remove = this.db.prepare<[string, number]>('DELETE FROM audit_records WHERE stream = ? AND seq <= ?');
    const checkpoint = this.db.prepare<[string, number, string, number, number]>(
      `INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, pruned_at = excluded.pruned_at
       WHERE excluded.seq > audit_checkpoints.seq`,
    );
    /** One step: deletes the stream's oldest records (at most PRUNE_CHUNK); whether the stream has more to prune. */
    const step = this.db
      .transaction((stream: string): { deleted: number; more: boolean } => {
        const rows = head.all(stream, PRUNE_CHUNK);
        let last: (typeof rows)[number] | undefined;
        for (const row of rows) {
          if (row.at >= before) break;
          last = row;
        }
        if (last === undefined) return { deleted: 0, more: false };
        const deleted = remove.run(stream, last.seq).changes;
        checkpoint.run(stream, last.seq, last.hash, last.at, this.clock());
        return { deleted, more: last === rows[rows.length - 1] && rows.length === PRUNE_CHUNK };
      })
      .immediate;

    let records = 0;
    let streams = 0;
    // Streams one at a time by seeking past the previous one: no scan of the whole table.
    for (let stream = nextStream.get('')?.stream; stream !== undefined; stream = nextStream.get(stream)?.stream) {
      let pruned = false;
      for (;;) {
        const { deleted, more } = step(stream);
        records += deleted;
        pruned ||= deleted > 0;
        await yieldToEventLoop();
        if (!more) break;
      }
      if (pruned) streams++;
    }
    return { records, streams };
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

/** All records of `db` in (stream, seq) order, a page at a time, seeking past the last one read. */
async function* pages(db: Database.Database): AsyncGenerator<AuditRecord> {
  const first = db.prepare<[number], Row>(`SELECT ${SELECT_COLUMNS} FROM audit_records ORDER BY stream, seq LIMIT ?`);
  const after = db.prepare<[string, number, number], Row>(
    `SELECT ${SELECT_COLUMNS} FROM audit_records WHERE (stream, seq) > (?, ?) ORDER BY stream, seq LIMIT ?`,
  );
  let rows = first.all(READ_PAGE);
  while (rows.length > 0) {
    for (const row of rows) yield toRecord(row);
    if (rows.length < READ_PAGE) return;
    const last = rows[rows.length - 1]!;
    await yieldToEventLoop();
    rows = after.all(last.stream, last.seq, READ_PAGE);
  }
}

function readCheckpoints(db: Database.Database): AuditCheckpoint[] {
  return db.prepare<[], AuditCheckpoint>('SELECT stream, seq, hash FROM audit_checkpoints ORDER BY stream').all();
}

function toRecord(row: Row | QueryRow): AuditRecord {
  if (row.record_json !== null) return JSON.parse(row.record_json) as AuditRecord;
  const { record_json: _whole, row_id: _place, ...rest } = row as QueryRow;
  return { ...rest, arguments: row.arguments === null ? undefined : (JSON.parse(row.arguments) as unknown) };
}

/** False when a string field holds a lone surrogate, which SQLite's UTF-8 text cannot keep. */
function storableAsText(r: AuditRecord): boolean {
  for (const field of STRING_FIELDS) {
    const v = r[field];
    if (typeof v === 'string' && !isWellFormed(v)) return false;
  }
  return true;
}

function pageSize(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return 100;
  return Math.min(1_000, Math.max(1, Math.trunc(limit)));
}

function finiteTime(ms: number, what: string): number {
  if (!Number.isFinite(ms)) throw new RangeError(`${what} must be a time in ms since the epoch, got ${ms}`);
  return ms;
}

interface Cursor {
  at: number;
  rowid: number;
}

function encodeCursor(row: QueryRow): string {
  return Buffer.from(JSON.stringify([row.at, row.row_id])).toString('base64url');
}

function decodeCursor(cursor: string): Cursor {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'number' && Number.isFinite(v[0]) && Number.isSafeInteger(v[1])) {
      return { at: v[0], rowid: v[1] as number };
    }
  } catch {
    // Falls through to the error below: a cursor that is not one of ours.
  }
  throw new RangeError(`invalid cursor ${JSON.stringify(cursor)}: pass the \`next\` of a previous page`);
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
