/**
 * The SQLite audit file's schema and connection settings, shared by the sink on the main thread
 * (which creates the schema and reads) and its writer thread (sqlite-worker.ts). Why the schema
 * has this shape is told at the top of sqlite.ts.
 */
import Database from 'better-sqlite3';

/** The schema this code writes (PRAGMA user_version): 1 the records, 2 signed checkpoints. */
export const AUDIT_SQLITE_SCHEMA_VERSION = 2;

/** How long a write waits for another process's write to finish before it fails with SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5_000;

/**
 * The WAL is copied into the database (a checkpoint, run by the commit that crosses this size)
 * every this many pages of 4 KiB, about 16 MiB; SQLite's default is 1,000. Consecutive commits
 * dirty some of the same pages (the table's last page, the chain index's), and a checkpoint writes
 * each page once however many copies of it the WAL holds. With the 705-byte rows and four indexes
 * of before, 4,000 gave 20-40% more records/s than 1,000. With the lean rows, measured again
 * through write() (3 runs each): 1,000, 4,000 and 16,000 pages gave about 100,000, 105,000 and
 * 99,000 records/s, differences within the noise of this machine; 4,000 is kept. The commit that
 * runs a checkpoint takes tens of ms longer (the write latency's p99 in the benchmark); it runs on
 * the writer thread, so only that batch's write() waits for it.
 */
export const WAL_AUTOCHECKPOINT_PAGES = 4_000;

/** After a checkpoint the WAL file is cut back to this size if it grew past it (a long verify() holds checkpoints back). */
export const WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024;

/**
 * A record's row id is its time and, below it, its place among the records of the same
 * millisecond: `at << AT_SHIFT | n`, n = 0, 1, 2… in written order. So the table itself is in the
 * order queries return (time, then written order) and a time range is a range of row ids.
 */
export const AT_SHIFT = 20;
/** Records one millisecond can hold (n < this). */
export const PER_MS = 2 ** AT_SHIFT;
/** `at` must lie within ±this (ms since the epoch, until the year 2248), so that the row id fits 64 bits. */
export const AT_LIMIT = 2 ** (63 - AT_SHIFT);

/**
 * Records are grouped by time into buckets of 2^BUCKET_MS_LOG2 ms (64 ms); audit_record_buckets
 * says which buckets hold a record of a given grant, tool, decision or server, for every bucket
 * below audit_summary.buckets_below (the newer ones, the tail, are read whole).
 */
export const BUCKET_MS_LOG2 = 6;
export const BUCKET_SHIFT = AT_SHIFT + BUCKET_MS_LOG2;
export const BUCKET_MS = 2 ** BUCKET_MS_LOG2;
/** The lowest bucket a record can be in: the watermark of a log nothing was summarised in yet. */
export const NO_BUCKET = -(AT_LIMIT / BUCKET_MS);

/** What a key of audit_record_buckets stands for: `string id << 2 | kind`. */
export const KEY_KIND = { grant: 0, tool: 1, decision: 2, server: 3 } as const;

export const bucketOf = (at: number): number => Math.floor(at / BUCKET_MS);

/**
 * Strings that repeat from record to record (grant, label, session, server, method, tool,
 * decision, rule, policy version, upstream status) are stored once in audit_strings and referred
 * to by id; streams likewise in audit_streams. Hashes are 32-byte BLOBs. The view audit_log shows
 * every record as text, the way an operator reads it.
 */
const SCHEMA_V1 = `
CREATE TABLE audit_strings (
  id   INTEGER PRIMARY KEY,
  text TEXT    NOT NULL UNIQUE
) STRICT;
CREATE TABLE audit_streams (
  id     INTEGER PRIMARY KEY,
  stream TEXT    NOT NULL UNIQUE
) STRICT;
CREATE TABLE audit_records (
  id              INTEGER PRIMARY KEY,
  grant_id        INTEGER,
  tool            INTEGER,
  decision        INTEGER NOT NULL,
  server          INTEGER NOT NULL,
  stream          INTEGER NOT NULL,
  seq             INTEGER NOT NULL,
  request_id      TEXT,
  grant_label     INTEGER,
  session         INTEGER,
  method          INTEGER NOT NULL,
  rule            INTEGER,
  reason          TEXT,
  policy_version  INTEGER,
  arguments       TEXT,
  upstream_status INTEGER,
  latency_ms      REAL,
  result_bytes    INTEGER,
  error           TEXT,
  prev_hash       BLOB    NOT NULL,
  hash            BLOB    NOT NULL,
  record_json     TEXT
) STRICT;
CREATE UNIQUE INDEX audit_records_chain ON audit_records (stream, seq);
CREATE TABLE audit_record_buckets (
  key    INTEGER NOT NULL,
  bucket INTEGER NOT NULL,
  PRIMARY KEY (key, bucket)
) STRICT, WITHOUT ROWID;
CREATE TABLE audit_summary (
  id            INTEGER PRIMARY KEY CHECK (id = 1),
  buckets_below INTEGER NOT NULL
) STRICT;
INSERT INTO audit_summary (id, buckets_below) VALUES (1, ${NO_BUCKET});
CREATE TABLE audit_checkpoints (
  stream    TEXT    PRIMARY KEY,
  seq       INTEGER NOT NULL,
  hash      TEXT    NOT NULL,
  at        INTEGER NOT NULL,
  pruned_at INTEGER NOT NULL
) STRICT;
CREATE VIEW audit_log AS
SELECT
  r.id >> ${AT_SHIFT} AS at,
  st.stream, r.seq, r.request_id,
  g.text AS grant_id, gl.text AS grant_label, se.text AS session, sv.text AS server, m.text AS method,
  t.text AS tool, d.text AS decision, ru.text AS rule, r.reason, pv.text AS policy_version,
  r.arguments, us.text AS upstream_status, r.latency_ms, r.result_bytes, r.error,
  lower(hex(r.prev_hash)) AS prev_hash, lower(hex(r.hash)) AS hash, r.record_json, r.id AS row_id
FROM audit_records r
JOIN audit_streams st ON st.id = r.stream
LEFT JOIN audit_strings g ON g.id = r.grant_id
LEFT JOIN audit_strings gl ON gl.id = r.grant_label
LEFT JOIN audit_strings se ON se.id = r.session
LEFT JOIN audit_strings sv ON sv.id = r.server
LEFT JOIN audit_strings m ON m.id = r.method
LEFT JOIN audit_strings t ON t.id = r.tool
LEFT JOIN audit_strings d ON d.id = r.decision
LEFT JOIN audit_strings ru ON ru.id = r.rule
LEFT JOIN audit_strings pv ON pv.id = r.policy_version
LEFT JOIN audit_strings us ON us.id = r.upstream_status;
`;

/**
 * Version 2: checkpoints are signed by the audit signing key (see ../signing.ts). A checkpoint
 * written before has NULL in both columns, which verification reports as unsigned.
 */
const SCHEMA_V2 = `
ALTER TABLE audit_checkpoints ADD COLUMN key_id TEXT;
ALTER TABLE audit_checkpoints ADD COLUMN signature TEXT;
`;

export type Synchronous = 'normal' | 'full';

/**
 * Opens `file` with the audit log's settings. The busy timeout comes first: switching to WAL
 * itself needs a lock another process may hold.
 */
export function openAuditDatabase(file: string, synchronous: Synchronous, opts: Database.Options = {}): Database.Database {
  const db = new Database(file, opts);
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    if (opts.readonly !== true) {
      switchToWal(db);
      db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      db.pragma(`wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
      db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
      // The writer makes each batch a savepoint, and inside a transaction each multi-row insert
      // opens a statement savepoint too: the pages they change are first copied to a sub-journal,
      // which SQLite moves from memory to a temporary file once it passes 64 KiB (every few inserts
      // here), opened, written and closed again each transaction. In memory, that was 5% of the
      // audit thread's time at 20,000 records/s, and 0.7% after; a sub-journal holds at most the
      // pages a transaction changed, a few hundred KiB. The other temporary storage this moves to
      // memory is a sort's: no statement of the sink sorts, each ORDER BY follows an index with a
      // LIMIT.
      db.pragma('temp_store = MEMORY');
    }
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

/**
 * Two processes opening a new file at once both try to switch it to WAL, which needs the file to
 * themselves, and SQLite fails one of them at once with SQLITE_BUSY instead of waiting (waiting
 * could deadlock). The one that failed tries again shortly, by when the file is in WAL mode (it
 * stays so) and the switch has nothing left to do.
 */
function switchToWal(db: Database.Database): void {
  const started = Date.now();
  for (;;) {
    try {
      db.pragma('journal_mode = WAL');
      return;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'SQLITE_BUSY' || Date.now() - started > BUSY_TIMEOUT_MS) throw err;
      // A synchronous pause: opening is synchronous, and this happens only in that race.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5 + Math.random() * 20);
    }
  }
}

/**
 * Creates what is missing, once, under the write lock (two processes opening at once both succeed).
 * A file already at this version needs no lock: its version is set last, in the same transaction
 * as the schema. So a reader opening it never waits on a writer, not even one in its own process
 * that writes across turns of the event loop (sqlite-loop.ts) and could not commit while it waited.
 */
export function migrate(db: Database.Database, file: string): void {
  if (db.pragma('user_version', { simple: true }) === AUDIT_SQLITE_SCHEMA_VERSION) return;
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > AUDIT_SQLITE_SCHEMA_VERSION) {
      throw new Error(`audit database ${file} has schema version ${version}, newer than this gateway's ${AUDIT_SQLITE_SCHEMA_VERSION}: upgrade the gateway`);
    }
    if (version < 1) db.exec(SCHEMA_V1);
    if (version < 2) db.exec(SCHEMA_V2);
    if (version < AUDIT_SQLITE_SCHEMA_VERSION) db.pragma(`user_version = ${AUDIT_SQLITE_SCHEMA_VERSION}`);
  }).immediate();
}

/** `String.prototype.isWellFormed` (Node 20; ES2024, newer than the lib this project compiles against). */
export const isWellFormed = (s: string): boolean => (s as unknown as { isWellFormed(): boolean }).isWellFormed();

const HEX64 = /^[0-9a-f]{64}$/;

/** Whether `s` is 64 lowercase hex digits, which a 32-byte BLOB gives back exactly. */
export const isHex64 = (s: unknown): s is string => typeof s === 'string' && HEX64.test(s);

/** Whether a sink's file names a private in-memory database (`:memory:`, or nothing), which no other connection can open. */
export const isInMemoryFile = (file: string): boolean => file === ':memory:' || file === '';

export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
