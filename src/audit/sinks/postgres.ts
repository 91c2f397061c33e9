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
 * - Indexes (schema version 3): the primary key, audit_records_grant (grant_id, at, id) and the
 *   time index audit_records_at (at, id, tool, server, decision). A grant's records are found
 *   through its index; a tool's, a server's or a decision's through audit_record_buckets, a row
 *   per value and 64 ms bucket it occurs in, each bucket then read through the time index, which
 *   checks the three columns in its own entries (postgres-buckets.ts). Every filter walks in the
 *   page's order and stops at the page's end (auditQuerySql). Per-record indexes were most of the
 *   server's work: each cost it 3 to 4 µs a record, and the three the buckets replaced about a
 *   third of its time per record (docs/benchmarks.md). Grants keep theirs: a thousand grants, most
 *   of them rare, would make most grant pages many bucket reads.
 * - Filtered and ordered text columns are COLLATE "C": byte order, as SQLite compares, whatever
 *   the database's default collation; it also makes every index insert a memcmp.
 * - `write()` sends a batch as one simple-query message: the INSERT of the bucket rows it adds,
 *   then COPY audit_records FROM STDIN, whose rows are encoded and streamed in slices while the
 *   server inserts the one before (postgres-copy.ts). Outside BEGIN such a message is one
 *   transaction: all of it or nothing, committed before write() resolves; the rows, and their
 *   ids, go in in the batch's order. COPY costs the server about 6 µs a record less than the one
 *   INSERT of a jsonb parameter it replaced, and its rows cost this process less to make than
 *   JSON.stringify of them did (postgres-copy.ts says why and how much).
 * - COPY cannot pass over a record already stored, so a batch some of whose places are taken (the
 *   writer delivering again, or two records claiming one place) fails on the primary key, and
 *   goes again through writeAgain(): in one transaction, the batch's places the table holds, then
 *   a COPY of the rest. That costs a failed COPY and a look-up per record, after a failure only.
 * - PostgreSQL text can hold neither NUL nor (being UTF-8) a lone UTF-16 surrogate. A record with
 *   either in a string field keeps its columns with U+FFFD in their place (for queries, and its
 *   bucket rows) and is also stored whole as JSON in `record_json` (JSON escapes both), which is
 *   what reading it back uses. Arguments are always JSON text, whose escapes hold both, so they
 *   never need this.
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
import { BUCKET_MS, BUCKETS_SCHEMA, bucketOf, insertBucketsSql, StoredBuckets, type BucketKind, type BucketRow } from './postgres-buckets.js';
import { COPY_FORMAT, clean, copyIn } from './postgres-copy.js';
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
/** The schema this code writes (audit_schema_versions): 1 the records, 2 signed checkpoints, 3 buckets for tool, server and decision. */
export const AUDIT_POSTGRES_SCHEMA_VERSION = 3;

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

/**
 * Version 3: tool, server and decision are found through audit_record_buckets (postgres-buckets.ts)
 * instead of an index each, and the time index holds them too, after (at, id). A table of version
 * 1 or 2 is changed in place: its buckets are made from its records, and the time index is built
 * again. On a large table that reads it twice (about a minute per ten million records here), and
 * writes wait meanwhile (the writer spills and catches up).
 */
const SCHEMA_V3 = `
DROP INDEX IF EXISTS audit_records_tool;
DROP INDEX IF EXISTS audit_records_server;
DROP INDEX IF EXISTS audit_records_decision;
DROP INDEX IF EXISTS audit_records_at;
CREATE INDEX audit_records_at ON audit_records (at, id, tool, server, decision);
${BUCKETS_SCHEMA}`;

/** The columns a batch's rows fill, in the order of the COPY's columns, each with its type. */
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

/** The fast path of write(): one COPY of the batch's rows, in order, so ids follow the batch's order. */
const COPY_SQL = `COPY audit_records (${INSERT_COLUMNS.map(([c]) => c).join(', ')}) FROM STDIN ${COPY_FORMAT}`;

/** Which of the given places (stream, seq) are stored, with their hashes: write()'s redelivery path. */
const STORED_SQL = `SELECT a.stream, a.seq, a.hash
FROM unnest($1::text[], $2::bigint[]) AS b (stream, seq)
JOIN audit_records a ON a.stream = b.stream AND a.seq = b.seq`;

/** The record's fields, named as AuditRecord declares them, so a row is the record. */
const SELECT_COLUMNS = `at, request_id AS "requestId", grant_id AS "grantId", grant_label AS "grantLabel", session, server,
  method, tool, decision, rule, reason, policy_version AS "policyVersion", arguments, upstream_status AS "upstreamStatus",
  latency_ms AS "latencyMs", result_bytes AS "resultBytes", error, stream, seq, prev_hash AS "prevHash", hash, record_json`;

type Row = Omit<AuditRecord, 'arguments'> & { arguments: string | null; record_json: string | null };
/** A query's row: the record and its place in written order. */
type QueryRow = Row & { id: number };

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
    if (version < 3) {
      await client.query(SCHEMA_V3);
      await client.query('INSERT INTO audit_schema_versions (version, applied_at) VALUES ($1, $2)', [3, clock()]);
    }
  });
}

export class PostgresAuditSink implements AuditStore {
  private closing: Promise<void> | undefined;
  /** The bucket rows this sink has stored lately, which its writes need not insert again. */
  private readonly buckets = new StoredBuckets();

  /** Use openPostgresAuditSink(), which creates the schema first. */
  constructor(
    private readonly pool: pg.Pool,
    readonly name: string,
    private readonly clock: () => number,
  ) {}

  async write(records: readonly AuditRecord[]): Promise<void> {
    if (this.closing !== undefined) throw new Error(`${this.name}: the audit sink is closed`);
    if (records.length === 0) return;
    const buckets = this.buckets.missing(records);
    const client = await this.pool.connect();
    try {
      // One message, one transaction (the simple query protocol's implicit one): the bucket rows
      // the batch adds, then the COPY of its records. All of it or nothing, durable once it returns.
      await copyIn(client, buckets.length === 0 ? COPY_SQL : `${insertBucketsSql(buckets)};\n${COPY_SQL}`, records);
      client.release();
    } catch (err) {
      // A server's error leaves the connection ready for the next query; anything else may not.
      client.release(err instanceof pg.DatabaseError ? undefined : (err as Error));
      // 23505: a place in a chain the table already holds (COPY has no ON CONFLICT).
      if (err instanceof pg.DatabaseError && err.code === '23505' && err.constraint === 'audit_records_pkey') return this.writeAgain(records);
      throw err;
    }
    this.buckets.stored(buckets);
  }

  /**
   * A batch some of whose places are taken, or given twice: the writer delivering at least once,
   * or two records claiming one place. In one transaction: the batch's places the table holds
   * (a look-up per place in the primary key), then the bucket rows and a COPY of the rest. A
   * record stored with the same hash is passed over; a different hash, stored or earlier in the
   * batch, rejects the batch.
   */
  private async writeAgain(records: readonly AuditRecord[]): Promise<void> {
    let buckets: BucketRow[] = [];
    await inTransaction(this.pool, async (client) => {
      // What the columns hold (a record kept whole has U+FFFD in them), since that is what is compared.
      const places = records.map((r) => ({ stream: clean(r.stream), seq: r.seq, hash: clean(r.hash) }));
      const stored = await client.query<{ stream: string; seq: number; hash: string }>(STORED_SQL, [places.map((p) => p.stream), places.map((p) => p.seq)]);
      const hashes = new Map<string, string>();
      // seq first: it holds no colon, so the key is unambiguous whatever the stream holds.
      for (const row of stored.rows) hashes.set(`${row.seq}:${row.stream}`, row.hash);
      const fresh: AuditRecord[] = [];
      for (const [i, p] of places.entries()) {
        const key = `${p.seq}:${p.stream}`;
        const hash = hashes.get(key);
        if (hash === undefined) {
          hashes.set(key, p.hash);
          fresh.push(records[i]!);
        } else if (hash !== p.hash) {
          throw new Error(`${this.name}: stream ${p.stream} already has a different record ${p.seq} (hash ${hash}, not ${p.hash}); the batch was not written`);
        }
      }
      if (fresh.length === 0) return;
      buckets = this.buckets.missing(fresh);
      await copyIn(client, buckets.length === 0 ? COPY_SQL : `${insertBucketsSql(buckets)};\n${COPY_SQL}`, fresh);
    });
    this.buckets.stored(buckets);
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
 *
 * Each shape walks one index in the page's order and stops at the page's end:
 * - no filter, or only a time range and the cursor: the time index, audit_records_at (at, id, ...);
 * - a grant, whatever else is given: audit_records_grant (grant_id, at, id), the other filters
 *   checked on its rows;
 * - a tool, server or decision without a grant: that value's buckets in the page's order
 *   (audit_record_buckets_value; one value leads, the others must have a row for the same
 *   bucket), and in each bucket its span of the time index, which checks tool, server and
 *   decision in its own entries and reads only the matching rows. A bucket's matches come in order
 *   from the index, but the planner cannot know that buckets follow each other in time: the
 *   Incremental Sort on (bucket, at, id) it adds sorts each bucket's matches alone, at most a
 *   page of them (the LIMIT inside), and costs about nothing on rows already in order. Where its
 *   statistics promise no more than a page of matches in all, the planner may sort them at once
 *   instead, as cheap for so few; the order is (bucket, at, id) either way, which is (at, id).
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
  const since = filter.since === undefined ? undefined : wholeTime(filter.since, 'since');
  const until = filter.until === undefined ? undefined : wholeTime(filter.until, 'until');
  if (since !== undefined) where.push(`at >= ${param(since)}`);
  if (until !== undefined) where.push(`at < ${param(until)}`);
  const cursor = filter.after === undefined ? undefined : decodeCursor(filter.after);
  const dir = newest ? 'DESC' : 'ASC';
  const select = `SELECT id, ${SELECT_COLUMNS} FROM audit_records`;

  // The bucketed values asked for, the likeliest to be rare first: it leads the walk.
  const bucketed: Array<[BucketKind, string]> = [];
  if (filter.tool !== undefined) bucketed.push(['tool', filter.tool]);
  if (filter.decision !== undefined && filter.decision !== 'allow') bucketed.push(['decision', filter.decision]);
  if (filter.server !== undefined) bucketed.push(['server', filter.server]);
  if (filter.decision === 'allow') bucketed.push(['decision', filter.decision]);
  const [lead, ...others] = bucketed;
  // Records before the cursor in the page's order: lower (at, id) newest first, higher oldest first.
  const before = newest ? '<' : '>';
  if (filter.grant !== undefined || lead === undefined) {
    // A row comparison on the index's (at, id): the scan starts right after the cursor.
    if (cursor !== undefined) where.push(`(at, id) ${before} (${param(cursor.at)}, ${param(cursor.id)})`);
    const text = `${select}${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''}
ORDER BY at ${dir}, id ${dir} LIMIT ${param(limit + 1)}`;
    return { text, values, limit };
  }
  // In a bucket, the cursor as a bound on `at` and a test of `id` at the cursor's ms: a row
  // comparison would be where the scan of every bucket starts (the index cannot tell which of it
  // and the bucket's end comes first), however far the bucket lies from the cursor.
  if (cursor !== undefined) {
    const at = param(cursor.at);
    where.push(`at ${before}= ${at}`, `(at ${before} ${at} OR id ${before} ${param(cursor.id)})`);
  }
  const page = param(limit + 1);

  // Only buckets that can hold a match: within the time range, and from the cursor's on.
  const buckets = [`b.kind = '${lead[0]}'`, `b.value = ${param(lead[1])}`];
  let first = since === undefined ? undefined : bucketOf(since);
  let last = until === undefined ? undefined : bucketOf(until - 1);
  if (cursor !== undefined && newest) last = Math.min(last ?? Infinity, bucketOf(cursor.at));
  if (cursor !== undefined && !newest) first = Math.max(first ?? -Infinity, bucketOf(cursor.at));
  if (first !== undefined) buckets.push(`b.bucket >= ${param(first)}`);
  if (last !== undefined) buckets.push(`b.bucket <= ${param(last)}`);
  // The others' bucket in the same range, said again: the planner may join them in order (a merge
  // semi join), and would otherwise start each from its far end rather than from the range.
  const range = buckets.slice(2).map((c) => c.replace('b.bucket', 'o.bucket'));
  for (const [kind, value] of others) {
    const o = [`o.kind = '${kind}'`, `o.value = ${param(value)}`, 'o.bucket = b.bucket', ...range];
    buckets.push(`EXISTS (SELECT 1 FROM audit_record_buckets o WHERE ${o.join(' AND ')})`);
  }
  const span = [`at >= b.bucket * ${BUCKET_MS}`, `at < (b.bucket + 1) * ${BUCKET_MS}`];
  const text = `SELECT r.* FROM (SELECT DISTINCT b.bucket FROM audit_record_buckets b WHERE ${buckets.join(' AND ')} ORDER BY b.bucket ${dir}) AS b
CROSS JOIN LATERAL (${select} WHERE ${[...span, ...where].join(' AND ')} ORDER BY at ${dir}, id ${dir} LIMIT ${page}) AS r
ORDER BY b.bucket ${dir}, r.at ${dir}, r.id ${dir} LIMIT ${page}`;
  return { text, values, limit };
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
