/**
 * The PostgreSQL audit sink: for gateways on several hosts writing one log, or a log kept where the
 * operators' other data is. Several gateways may write to one table at once, each its own stream.
 *
 * Why it is shaped this way:
 * - One column per field, as in the SQLite sink, so the log can be queried with any SQL client.
 *   `arguments` is `json`, not `jsonb`: json keeps the text exactly as given (jsonb reorders keys,
 *   drops duplicates and rewrites numbers), yet operators can still use `->` and `->>` on it. An
 *   absent `arguments` (undefined, which the hash leaves out) is SQL NULL; a null one is the
 *   JSON `null`. `at`, `seq` and `result_bytes` are bigint, `latency_ms` double precision (a
 *   latency may be fractional, and float8 text round-trips a JavaScript number exactly).
 * - PRIMARY KEY (stream, seq): a record cannot be stored twice, and iterate() and verify() read a
 *   stream in chain order by walking that key. The writer delivers at least once: a record already
 *   stored with the same hash is passed over; one with a different hash rejects the whole batch.
 * - `id`, an identity column, is the written order that breaks ties in time (AuditPage). Its
 *   sequence hands out numbers one at a time (no per-connection cache), so a later batch never gets
 *   lower numbers than an earlier one, whichever pooled connection writes it. A cursor stays good
 *   for good: ids are never renumbered. With several gateways writing, ids are taken at insert and
 *   transactions commit in their own order, so a walk may pass the place of a record another
 *   gateway commits a moment later; a new query finds it.
 * - Every query index ends in (at, id): (at, id) itself, then grant, tool, decision and server
 *   each followed by (at, id), so each filter walks one index in the page's order and stops at the
 *   page's end, never sorting its matches. Unlike the SQLite sink, server is indexed too. Indexes
 *   are much of the server's work: dropping the five halved its CPU time per record here (about
 *   28 µs to 15), the grant index (1,000 distinct long keys) costing the most.
 * - Filtered and ordered text columns are COLLATE "C": byte order, as SQLite compares, whatever
 *   the database's default collation; it also makes every index insert a memcmp.
 * - `write()` is one transaction and one INSERT per batch, whatever its size: the batch travels as
 *   one jsonb parameter (an array of rows) that jsonb_array_elements() turns back into rows. One
 *   statement to parse and plan, one parameter (far from the protocol's 65,535), no COPY
 *   dependency, and V8's JSON.stringify does the client's share, which is cheaper than pg's
 *   encoding of 22 array parameters for unnest() and of 22 parameters a row for multi-row VALUES
 *   (bench/audit-postgres.ts --strategies measures the three; see docs/benchmarks.md).
 * - PostgreSQL text can hold neither NUL nor (being UTF-8) a lone UTF-16 surrogate. A record with
 *   either in a string field keeps its columns with U+FFFD in their place (for queries) and is also
 *   stored whole as JSON in `record_json` (JSON escapes both), which is what reading it back
 *   uses. Arguments are always JSON text, whose escapes hold both, so they never need this.
 * - Commits are durable as the server is configured (synchronous_commit on, the default: every
 *   resolved write has been flushed to the server's WAL).
 * - The schema is created under a transaction-scoped advisory lock keyed by the connection's
 *   schema, so gateways starting together create it once; its version is kept in a table of its
 *   own (not the control store's schema_migrations, since both may share a schema).
 * - bigint comes back as a JavaScript number through a type parser of this sink's pool only; a
 *   value past 2^53 is refused rather than rounded.
 */
import pg from 'pg';
import { inTransaction } from '../../store/pg-transaction.js';
import type { AuditRecord } from '../event.js';
import { prunableRecords, pruneAnchor, signCheckpoint, type AuditSigningKey, type SignedCheckpoint } from '../signing.js';
import type { AuditPage, AuditQuery, AuditStore, PruneResult } from '../store.js';
import { verifyChain, type AuditCheckpoint, type VerifyOptions, type VerifyResult } from '../verify.js';

export interface PostgresAuditSinkOptions {
  /** Most connections the sink opens at once; default 4 (writes take one, queries the others). */
  readonly poolSize?: number;
  /**
   * Told about errors of idle pooled connections (a server restart, a network cut). The pool drops
   * such a connection and opens another on the next query, so they are not fatal; by default they
   * are ignored rather than left to crash the process as an unhandled 'error' event.
   */
  readonly onError?: (err: unknown) => void;
  /** The clock checkpoints record `pruned_at` with; default `Date.now`. */
  readonly clock?: () => number;
}

/**
 * Records per page read by iterate() and verify(): one round trip each. verifyChain hashes a page
 * without giving the event loop a turn (its awaits are microtasks until the next page's query),
 * so a page is kept to about 20-30 ms of hashing here: other queries of the process wait no longer.
 */
const READ_PAGE = 1_000;
/** Records deleted per transaction by prune(): the log verifies after each, and no transaction runs long. */
const PRUNE_CHUNK = 5_000;
/** The schema this code writes (audit_schema_versions): 1 the records, 2 signed checkpoints. */
export const AUDIT_POSTGRES_SCHEMA_VERSION = 2;

// Two keys for pg_advisory_xact_lock(int, int): what is locked, and in which schema.
const LOCK_SQL = `SELECT pg_advisory_xact_lock(hashtext('policylayer audit schema'), hashtext(coalesce(current_schema(), '')))`;

const VERSIONS_SQL = `CREATE TABLE IF NOT EXISTS audit_schema_versions (
  version    integer PRIMARY KEY,
  applied_at bigint  NOT NULL
)`;

const SCHEMA_V1 = `
CREATE TABLE IF NOT EXISTS audit_records (
  id              bigint GENERATED ALWAYS AS IDENTITY,
  stream          text COLLATE "C" NOT NULL,
  seq             bigint NOT NULL,
  at              bigint NOT NULL,
  request_id      text,
  grant_id        text COLLATE "C",
  grant_label     text,
  session         text,
  server          text COLLATE "C" NOT NULL,
  method          text NOT NULL,
  tool            text COLLATE "C",
  decision        text COLLATE "C" NOT NULL,
  rule            text,
  reason          text,
  policy_version  text,
  arguments       json,
  upstream_status text,
  latency_ms      double precision,
  result_bytes    bigint,
  error           text,
  prev_hash       text NOT NULL,
  hash            text NOT NULL,
  record_json     text,
  PRIMARY KEY (stream, seq)
);
CREATE INDEX IF NOT EXISTS audit_records_at ON audit_records (at, id);
CREATE INDEX IF NOT EXISTS audit_records_grant ON audit_records (grant_id, at, id);
CREATE INDEX IF NOT EXISTS audit_records_tool ON audit_records (tool, at, id);
CREATE INDEX IF NOT EXISTS audit_records_decision ON audit_records (decision, at, id);
CREATE INDEX IF NOT EXISTS audit_records_server ON audit_records (server, at, id);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
  stream    text COLLATE "C" PRIMARY KEY,
  seq       bigint NOT NULL,
  hash      text   NOT NULL,
  at        bigint NOT NULL,
  pruned_at bigint NOT NULL
);
`;

/**
 * Version 2: checkpoints are signed by the audit signing key (see ../signing.ts). A checkpoint
 * written before has NULL in both columns, which verification reports as unsigned.
 */
const SCHEMA_V2 = `
ALTER TABLE audit_checkpoints ADD COLUMN IF NOT EXISTS key_id text;
ALTER TABLE audit_checkpoints ADD COLUMN IF NOT EXISTS signature text;
`;

/** The columns a batch's rows fill, in the order of a row's elements, each with its type. */
export const INSERT_COLUMNS: ReadonlyArray<[string, string]> = [
  ['stream', 'text'],
  ['seq', 'bigint'],
  ['at', 'bigint'],
  ['request_id', 'text'],
  ['grant_id', 'text'],
  ['grant_label', 'text'],
  ['session', 'text'],
  ['server', 'text'],
  ['method', 'text'],
  ['tool', 'text'],
  ['decision', 'text'],
  ['rule', 'text'],
  ['reason', 'text'],
  ['policy_version', 'text'],
  ['arguments', 'json'],
  ['upstream_status', 'text'],
  ['latency_ms', 'float8'],
  ['result_bytes', 'bigint'],
  ['error', 'text'],
  ['prev_hash', 'text'],
  ['hash', 'text'],
  ['record_json', 'text'],
];

// The batch is one jsonb parameter, an array of rows, each an array of column values;
// jsonb_array_elements() yields them in order, so rows (and their ids) are inserted in the
// batch's order. `->>` gives an element as text, which each cast reads as its column's type: the
// arguments travel as a JSON string holding their JSON text, so jsonb never sees (or reorders) them.
const INSERT_SQL = `INSERT INTO audit_records (${INSERT_COLUMNS.map(([c]) => c).join(', ')})
SELECT ${INSERT_COLUMNS.map(([, type], i) => `(b.r->>${i})::${type}`).join(', ')}
FROM jsonb_array_elements($1::jsonb) AS b (r)
ON CONFLICT (stream, seq) DO NOTHING`;

/** The first of the given (stream, seq, hash) whose place is stored with another hash. */
const CONFLICT_SQL = `SELECT a.stream, a.seq, a.hash AS stored, b.r->>2 AS hash
FROM jsonb_array_elements($1::jsonb) AS b (r)
JOIN audit_records a ON a.stream = b.r->>0 AND a.seq = (b.r->>1)::bigint
WHERE a.hash <> b.r->>2
LIMIT 1`;

/** The record's fields, named as AuditRecord declares them, so a row is the record. */
const SELECT_COLUMNS = `at, request_id AS "requestId", grant_id AS "grantId", grant_label AS "grantLabel", session, server,
  method, tool, decision, rule, reason, policy_version AS "policyVersion", arguments, upstream_status AS "upstreamStatus",
  latency_ms AS "latencyMs", result_bytes AS "resultBytes", error, stream, seq, prev_hash AS "prevHash", hash, record_json`;

type Row = Omit<AuditRecord, 'arguments'> & { arguments: string | null; record_json: string | null };
/** A query's row: the record and its place in written order. */
type QueryRow = Row & { id: number };

/** The string fields of a record, checked for what PostgreSQL text cannot hold. */
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

/** NUL, or a UTF-16 surrogate without its other half. */
const UNSTORABLE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, 'g');

type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>;

/**
 * Opens the PostgreSQL audit sink on `url` (`postgres://user:password@host:port/database`, plus
 * any parameters pg accepts; choose a schema with `?options=-c search_path=...`) and creates its
 * tables in the connection's current schema if they are missing. Opening again changes nothing;
 * several processes opening at once all succeed. Rejects if the database cannot be reached or its
 * audit schema is newer than this code.
 */
export async function openPostgresAuditSink(url: string, opts: PostgresAuditSinkOptions = {}): Promise<PostgresAuditSink> {
  const types = new pg.TypeOverrides();
  types.setTypeParser(pg.types.builtins.INT8, parseBigint);
  // The arguments' JSON text as stored: parsed here, so SQL NULL and JSON null stay apart.
  types.setTypeParser(pg.types.builtins.JSON, (text: string) => text);
  const name = sinkName(url);
  const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 4, types });
  pool.on('error', (err) => opts.onError?.(err));
  try {
    await migrate(pool, opts.clock ?? Date.now);
  } catch (err) {
    await pool.end().catch(() => {});
    throw new Error(`${name}: cannot open the audit log: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return new PostgresAuditSink(pool, name, opts.clock ?? Date.now);
}

/** `postgres:<host>:<port>/<database>` as pg resolves them (URL, then PG* variables, then defaults): no user, no password. */
function sinkName(url: string): string {
  const where = new pg.Client({ connectionString: url });
  return `postgres:${where.host}:${where.port}/${where.database ?? ''}`;
}

function parseBigint(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`bigint ${text} does not fit a JavaScript number exactly`);
  return n;
}

/** Creates what is missing, once, under the schema's lock (two processes opening at once both succeed). */
async function migrate(pool: pg.Pool, clock: () => number): Promise<void> {
  await inTransaction(pool, async (client) => {
    await client.query(LOCK_SQL);
    await client.query(VERSIONS_SQL);
    const { rows } = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM audit_schema_versions');
    const version = rows[0]?.version ?? 0;
    if (version > AUDIT_POSTGRES_SCHEMA_VERSION) {
      throw new Error(`the database's audit schema is version ${version}, newer than this gateway's ${AUDIT_POSTGRES_SCHEMA_VERSION}: upgrade the gateway`);
    }
    if (version < 1) {
      await client.query(SCHEMA_V1);
      await client.query('INSERT INTO audit_schema_versions (version, applied_at) VALUES ($1, $2)', [1, clock()]);
    }
    if (version < 2) {
      await client.query(SCHEMA_V2);
      await client.query('INSERT INTO audit_schema_versions (version, applied_at) VALUES ($1, $2)', [2, clock()]);
    }
  });
}

export class PostgresAuditSink implements AuditStore {
  private closing: Promise<void> | undefined;

  /** Use openPostgresAuditSink(), which creates the schema first. */
  constructor(
    private readonly pool: pg.Pool,
    readonly name: string,
    private readonly clock: () => number,
  ) {}

  async write(records: readonly AuditRecord[]): Promise<void> {
    if (this.closing !== undefined) throw new Error(`${this.name}: the audit sink is closed`);
    if (records.length === 0) return;
    const rows = toRows(records);
    await inTransaction(this.pool, async (client) => {
      const inserted = await client.query({ name: 'policylayer_audit_insert', text: INSERT_SQL, values: [JSON.stringify(rows)] });
      if (inserted.rowCount === records.length) return;
      // Some were already there: a repeat of the same records is the writer delivering at least
      // once; the same place in a chain with another hash is a conflict. Rows this statement
      // inserted are visible here too, so two different records of one place within the batch
      // are caught as well.
      const places = JSON.stringify(rows.map((row) => [row[0], row[1], row[20]]));
      const found = await client.query<{ stream: string; seq: number; stored: string; hash: string }>(CONFLICT_SQL, [places]);
      const c = found.rows[0];
      if (c !== undefined) {
        throw new Error(`${this.name}: stream ${c.stream} already has a different record ${c.seq} (hash ${c.stored}, not ${c.hash}); the batch was not written`);
      }
    });
  }

  /** A page of records matching `filter`, in the order asked; see AuditPage for the cursor. */
  async query(filter: AuditQuery = {}): Promise<AuditPage> {
    const { text, values, limit } = auditQuerySql(filter);
    const { rows } = await this.pool.query<QueryRow>(text, values);
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { records: page.map(toRecord), next: rows.length > limit && last !== undefined ? encodeCursor(last) : undefined };
  }

  /**
   * Every record, stream by stream in seq order: what verifyChain reads. Pages of READ_PAGE
   * records, each a query of its own, so writes go on between pages; records written meanwhile
   * are included if they come after the current position. Use verify() for a consistent snapshot
   * of records and checkpoints.
   */
  async *iterate(): AsyncGenerator<AuditRecord> {
    yield* pages(this.pool);
  }

  /** The checkpoint of every stream pruned so far, by stream. */
  async checkpoints(): Promise<AuditCheckpoint[]> {
    return readCheckpoints(this.pool);
  }

  /**
   * Verifies the whole log against its checkpoints, reading everything in one REPEATABLE READ
   * transaction: a snapshot, so a prune or write running meanwhile (here or in another process)
   * cannot make records and checkpoints disagree.
   */
  async verify(opts: Omit<VerifyOptions, 'checkpoints'> = {}): Promise<VerifyResult> {
    return inTransaction(
      this.pool,
      async (client) => verifyChain(pages(client), { ...opts, checkpoints: await readCheckpoints(client) }),
      'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
    );
  }

  /**
   * Deletes the records written before `beforeMs`, stream by stream, and leaves a checkpoint
   * signed by `key` for each stream that lost records, so the rest still verifies.
   *
   * Per stream only a prefix is deleted: records up to the first one at or after `beforeMs`. A
   * record that is old but follows a newer one (a clock stepped back) stays, since deleting it
   * would leave a hole the checkpoint cannot bridge. The prefix must also chain from the stream's
   * checkpoint, which `key` must have signed, or from its start (prunableRecords): a stream whose
   * checkpoint is not this key's or whose records were removed by hand is held where it is, and
   * said so in the result, rather than signed over. Each transaction deletes at most PRUNE_CHUNK
   * records together with writing the signed checkpoint of the last one, so the log verifies
   * after every step. The checkpoint row is locked while a step reads it, and only ever moves
   * forward, so two prunes running at once do no harm.
   */
  async prune(beforeMs: number, key: AuditSigningKey): Promise<PruneResult> {
    if (!Number.isFinite(beforeMs)) throw new RangeError(`beforeMs must be a time in ms since the epoch, got ${beforeMs}`);
    /** One step: deletes the stream's oldest records (at most PRUNE_CHUNK); whether the stream has more to prune, and why it was held if it was. */
    const step = (stream: string) =>
      inTransaction(this.pool, async (client): Promise<{ deleted: number; more: boolean; held: string | undefined }> => {
        const existing = await client.query<SignedCheckpoint>(
          'SELECT stream, seq, hash, at, pruned_at AS "prunedAt", key_id AS "keyId", signature FROM audit_checkpoints WHERE stream = $1 FOR UPDATE',
          [stream],
        );
        const { rows } = await client.query<{ seq: number; at: number; hash: string; prevHash: string; record_json: string | null }>(
          'SELECT seq, at, hash, prev_hash AS "prevHash", record_json FROM audit_records WHERE stream = $1 ORDER BY seq LIMIT $2',
          [stream, PRUNE_CHUNK],
        );
        // Nothing to prune: a stream held at its checkpoint is not reported until it has records to prune.
        if (rows[0] === undefined || rows[0].at >= beforeMs) return { deleted: 0, more: false, held: undefined };
        const anchor = pruneAnchor(existing.rows[0], key);
        if (typeof anchor === 'string') return { deleted: 0, more: false, held: anchor };
        // A record kept whole as JSON has its hashes there exactly (the columns hold U+FFFD for what text cannot).
        const chained = rows.map((row) => {
          if (row.record_json === null) return row;
          const whole = JSON.parse(row.record_json) as AuditRecord;
          return { ...row, hash: whole.hash, prevHash: whole.prevHash };
        });
        const { last, held } = prunableRecords(anchor, chained, beforeMs);
        if (last === undefined) return { deleted: 0, more: false, held };
        const removed = await client.query('DELETE FROM audit_records WHERE stream = $1 AND seq <= $2', [stream, last.seq]);
        const content = { stream, seq: last.seq, hash: last.hash, at: last.at, prunedAt: this.clock() };
        const signed = signCheckpoint(key, content);
        await client.query(
          `INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at, pruned_at = excluded.pruned_at,
             key_id = excluded.key_id, signature = excluded.signature
           WHERE excluded.seq > audit_checkpoints.seq`,
          [stream, last.seq, last.hash, last.at, content.prunedAt, signed.keyId, signed.signature],
        );
        return { deleted: removed.rowCount ?? 0, more: held === undefined && last === chained[chained.length - 1] && rows.length === PRUNE_CHUNK, held };
      });
    const nextStream = async (after: string): Promise<string | undefined> => {
      const { rows } = await this.pool.query<{ stream: string | null }>('SELECT min(stream) AS stream FROM audit_records WHERE stream > $1', [after]);
      return rows[0]?.stream ?? undefined;
    };

    let records = 0;
    let streams = 0;
    const held: Array<{ stream: string; reason: string }> = [];
    // Streams one at a time by seeking past the previous one in the primary key: no scan of the table.
    for (let stream = await nextStream(''); stream !== undefined; stream = await nextStream(stream)) {
      let pruned = false;
      for (;;) {
        const r = await step(stream);
        records += r.deleted;
        pruned ||= r.deleted > 0;
        if (r.held !== undefined) held.push({ stream, reason: r.held });
        if (!r.more) break;
      }
      if (pruned) streams++;
    }
    return held.length > 0 ? { records, streams, held } : { records, streams };
  }

  /** Ends the pool once the queries under way are done; a second call waits for the same end. */
  async close(): Promise<void> {
    this.closing ??= this.pool.end();
    await this.closing;
  }
}

/**
 * The statement query(filter) runs, and the page size: it asks for one record more than the page,
 * so whether there is a next page is known without reading an empty last page. Only the filters
 * given appear in it, so each shape walks its own index. Exported so tests can EXPLAIN it.
 */
export function auditQuerySql(filter: AuditQuery = {}): { text: string; values: unknown[]; limit: number } {
  const newest = (filter.order ?? 'newest') === 'newest';
  const limit = pageSize(filter.limit);
  const where: string[] = [];
  const values: unknown[] = [];
  const param = (v: unknown) => `$${values.push(v)}`;
  const eq = (column: string, value: string | undefined) => {
    if (value !== undefined) where.push(`${column} = ${param(value)}`);
  };
  eq('grant_id', filter.grant);
  eq('tool', filter.tool);
  eq('decision', filter.decision);
  eq('server', filter.server);
  // `at` is whole ms: at >= x and at < x hold exactly when they do for ceil(x).
  if (filter.since !== undefined) where.push(`at >= ${param(wholeTime(filter.since, 'since'))}`);
  if (filter.until !== undefined) where.push(`at < ${param(wholeTime(filter.until, 'until'))}`);
  if (filter.after !== undefined) {
    const c = decodeCursor(filter.after);
    // A row comparison on the index's last two columns: the scan starts right after the cursor.
    where.push(`(at, id) ${newest ? '<' : '>'} (${param(c.at)}, ${param(c.id)})`);
  }
  const dir = newest ? 'DESC' : 'ASC';
  const text = `SELECT id, ${SELECT_COLUMNS} FROM audit_records${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''}
ORDER BY at ${dir}, id ${dir} LIMIT ${param(limit + 1)}`;
  return { text, values, limit };
}

/**
 * The batch as rows of column values, in INSERT_COLUMNS order. A number JSON cannot write (NaN,
 * ±Infinity; never a time, seq or size the gateway makes) becomes null, which is also what the
 * record's hash saw, since canonical JSON writes them as null too.
 */
function toRows(records: readonly AuditRecord[]): unknown[][] {
  const rows = new Array<unknown[]>(records.length);
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const whole = storable(r) ? null : JSON.stringify(r);
    const text = whole === null ? (v: string | null) => v : clean;
    rows[i] = [
      text(r.stream),
      r.seq,
      r.at,
      text(r.requestId),
      text(r.grantId),
      text(r.grantLabel),
      text(r.session),
      text(r.server),
      text(r.method),
      text(r.tool),
      text(r.decision),
      text(r.rule),
      text(r.reason),
      text(r.policyVersion),
      r.arguments === undefined ? null : (JSON.stringify(r.arguments) ?? null),
      text(r.upstreamStatus),
      r.latencyMs,
      r.resultBytes,
      text(r.error),
      text(r.prevHash),
      text(r.hash),
      whole,
    ];
  }
  return rows;
}

/** False when a string field holds a NUL or a lone surrogate, which PostgreSQL text cannot keep. */
function storable(r: AuditRecord): boolean {
  for (const field of STRING_FIELDS) {
    const v = r[field];
    if (typeof v === 'string' && UNSTORABLE.test(v)) return false;
  }
  return true;
}

/** What a column can hold of `v`: U+FFFD for each NUL and lone surrogate. */
function clean<T extends string | null>(v: T): T {
  return (typeof v === 'string' ? v.replace(UNSTORABLE_ALL, '\ufffd') : v) as T;
}

/** All records in (stream, seq) order, a page at a time, seeking past the last one read. */
async function* pages(db: Queryable): AsyncGenerator<AuditRecord> {
  let last: { stream: string; seq: number } | undefined;
  for (;;) {
    const { rows } =
      last === undefined
        ? await db.query<Row>(`SELECT ${SELECT_COLUMNS} FROM audit_records ORDER BY stream, seq LIMIT $1`, [READ_PAGE])
        : await db.query<Row>(`SELECT ${SELECT_COLUMNS} FROM audit_records WHERE (stream, seq) > ($1, $2) ORDER BY stream, seq LIMIT $3`, [
            last.stream,
            last.seq,
            READ_PAGE,
          ]);
    for (const row of rows) yield toRecord(row);
    if (rows.length < READ_PAGE) return;
    // The columns, not the record: a record_json row's stream column is what the key holds.
    last = rows[rows.length - 1]!;
  }
}

async function readCheckpoints(db: Queryable): Promise<AuditCheckpoint[]> {
  const { rows } = await db.query<AuditCheckpoint>(
    'SELECT stream, seq, hash, at, pruned_at AS "prunedAt", key_id AS "keyId", signature FROM audit_checkpoints ORDER BY stream',
  );
  return rows;
}

function toRecord(row: Row | QueryRow): AuditRecord {
  if (row.record_json !== null) return JSON.parse(row.record_json) as AuditRecord;
  const { record_json: _whole, id: _place, ...rest } = row as QueryRow;
  return { ...rest, arguments: row.arguments === null ? undefined : (JSON.parse(row.arguments) as unknown) };
}

function pageSize(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return 100;
  return Math.min(1_000, Math.max(1, Math.trunc(limit)));
}

/** The whole ms `ms` rounds up to, held within what a bigint column and a JavaScript number share. */
function wholeTime(ms: number, what: string): number {
  if (!Number.isFinite(ms)) throw new RangeError(`${what} must be a time in ms since the epoch, got ${ms}`);
  return Math.min(Number.MAX_SAFE_INTEGER, Math.max(-Number.MAX_SAFE_INTEGER, Math.ceil(ms)));
}

interface Cursor {
  at: number;
  id: number;
}

function encodeCursor(row: QueryRow): string {
  return Buffer.from(JSON.stringify([row.at, row.id])).toString('base64url');
}

function decodeCursor(cursor: string): Cursor {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && Number.isSafeInteger(v[0]) && Number.isSafeInteger(v[1])) {
      return { at: v[0] as number, id: v[1] as number };
    }
  } catch {
    // Falls through to the error below: a cursor that is not one of ours.
  }
  throw new RangeError(`invalid cursor ${JSON.stringify(cursor)}: pass the \`next\` of a previous page`);
}
