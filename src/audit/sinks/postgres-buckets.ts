/**
 * audit_record_buckets: where the PostgreSQL sink finds the records of a tool, a server or a
 * decision, in place of an index of each on audit_records (schema version 3; see postgres.ts).
 *
 * Records are grouped by time into buckets of BUCKET_MS (64 ms, as in the SQLite sink). A row
 * (kind, value, bucket) says that some record of that bucket has that tool, server or decision.
 * A query for a tool walks that tool's buckets in time order and reads each through the time
 * index, whose key also holds tool, server and decision, so that a bucket's other records are
 * passed over within the index (see auditQuerySql).
 *
 * Why: each per-record index cost the server 3 to 4 µs a record, the three of them about a third
 * of its time per record (bench/audit-postgres.ts). A batch of 500 at the rates that matter holds
 * a handful of buckets and some 35 (kind, value) pairs each, most of them already stored: a few
 * rows a batch, and none to insert for a batch whose pairs the sink remembers (StoredBuckets).
 *
 * The trade-off: a bucket is read whole (its records' index entries, not their rows), so a value
 * that turns up once in many buckets costs one bucket read per record found, where an index
 * would cost one entry; a value absent for a while costs nothing, as its buckets are not there.
 * At a few hundred records a second and less, buckets hold a record or a few, and the table is an
 * index in all but name: at 100 records a second, 1.6 bucket rows a record and about 210 bytes a
 * record with its index, where the three indexes took about 135; at such rates neither the space
 * nor the writes weigh much. Grants keep their per-record index: a thousand grants with long
 * tails would turn most grant pages into many bucket reads.
 *
 * Writing: bucket rows go in with the records, in the same transaction (one simple-query message:
 * the INSERT, then the COPY), so a query never sees a record without its buckets. The table has
 * no unique key, so two gateways adding the same pair at once never wait for each other; the
 * INSERT skips pairs already stored, and a duplicate from such a race is harmless (queries read
 * DISTINCT buckets). Each sink remembers the pairs of its most recent buckets once they are
 * committed, so most batches insert none.
 *
 * Pruning: a trigger on audit_records deletes, after each DELETE statement (each prune step), the
 * bucket rows of buckets more than BUCKET_MARGIN_MS older than the oldest record left (none when
 * no record is left). The margin spares the buckets a gateway is still writing into, whose pairs
 * it remembers and would not insert again: those lose their rows only if every record left is more
 * than a minute newer than the gateway's own newest, which takes a prune that cut past all of its
 * records while another gateway's clock ran a minute ahead of its. Its records of those 64 ms
 * would then be found by grant and time but not by tool, server or decision; verify() reads them
 * all the same.
 */
import pg from 'pg';
import type { AuditRecord } from '../event.js';
import { clean } from './postgres-copy.js';

/** Width of a bucket, ms: a power of two, so that SQL finds a record's bucket as `at >> 6`. */
export const BUCKET_MS_LOG2 = 6;
export const BUCKET_MS = 2 ** BUCKET_MS_LOG2;
/** Bucket rows this much older than the oldest record are deleted by the prune trigger. */
export const BUCKET_MARGIN_MS = 60_000;
/** Buckets whose pairs a sink remembers, counting back from the newest it wrote: about a second. */
const REMEMBERED_BUCKETS = 16;

/** The bucket of a time: floor(at / BUCKET_MS), as `at >> 6` computes it in SQL. */
export function bucketOf(at: number): number {
  return Math.floor(at / BUCKET_MS);
}

export type BucketKind = 'tool' | 'server' | 'decision';

/** One (kind, value, bucket) row; `known` is the value as StoredBuckets knows it (before cleaning). */
export interface BucketRow {
  readonly kind: BucketKind;
  readonly value: string;
  readonly bucket: number;
  readonly known: string;
}

/** The values of each kind seen in one bucket. */
type BucketValues = Record<BucketKind, Set<string>>;
const bucketValues = (): BucketValues => ({ tool: new Set(), server: new Set(), decision: new Set() });

/**
 * The schema objects of audit_record_buckets, created and filled from the records by schema
 * version 3: from scratch, so that applying it again (over a table of any earlier version) leaves
 * the same.
 */
export const BUCKETS_SCHEMA = `
CREATE TABLE IF NOT EXISTS audit_record_buckets (
  kind   text COLLATE "C" NOT NULL,
  value  text COLLATE "C" NOT NULL,
  bucket bigint NOT NULL
);
TRUNCATE audit_record_buckets;
INSERT INTO audit_record_buckets (kind, value, bucket)
SELECT DISTINCT k.kind, k.value, r.at >> ${BUCKET_MS_LOG2}
FROM audit_records r
CROSS JOIN LATERAL (VALUES ('tool', r.tool), ('server', r.server), ('decision', r.decision)) AS k (kind, value)
WHERE k.value IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_record_buckets_value ON audit_record_buckets (kind, value, bucket);
CREATE OR REPLACE FUNCTION audit_record_buckets_prune() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- In the trigger's own schema, whatever the search_path of whoever deletes. The (kind, value)
  -- pairs are found by skipping through the index from one to the next (a few dozen steps), and
  -- each pair's old buckets are a range of it: no index on bucket alone, which queries could
  -- be tempted to walk instead of a value's own buckets.
  EXECUTE format($sql$
    WITH RECURSIVE pairs (kind, value) AS (
      (SELECT kind, value FROM %1$I.audit_record_buckets ORDER BY kind, value LIMIT 1)
      UNION ALL
      SELECT n.kind, n.value FROM pairs p CROSS JOIN LATERAL (
        SELECT b.kind, b.value FROM %1$I.audit_record_buckets b
        WHERE (b.kind, b.value) > (p.kind, p.value) ORDER BY b.kind, b.value LIMIT 1
      ) AS n
    )
    DELETE FROM %1$I.audit_record_buckets b USING pairs p
    WHERE b.kind = p.kind AND b.value = p.value
      AND b.bucket < ((SELECT min(at) FROM %1$I.audit_records) >> ${BUCKET_MS_LOG2}) - ${Math.ceil(BUCKET_MARGIN_MS / BUCKET_MS)}
  $sql$, TG_TABLE_SCHEMA);
  RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS audit_records_pruned ON audit_records;
CREATE TRIGGER audit_records_pruned AFTER DELETE ON audit_records FOR EACH STATEMENT EXECUTE FUNCTION audit_record_buckets_prune();
`;

/**
 * The bucket pairs a sink has stored, for its most recent buckets: write() inserts only the
 * others. A pair is remembered once the transaction that stored it has committed.
 */
export class StoredBuckets {
  private readonly byBucket = new Map<number, BucketValues>();
  private newest = Number.NEGATIVE_INFINITY;

  /** The rows of `records` this sink does not know to be stored: those write() inserts, each once. */
  missing(records: readonly AuditRecord[]): BucketRow[] {
    const out: BucketRow[] = [];
    const batch = new Map<number, BucketValues>();
    // Consecutive records mostly share a bucket: its sets stay at hand from one record to the next.
    // The values themselves are the keys, so a record's strings are looked up, never copied.
    let bucket = Number.NaN;
    let known: BucketValues | undefined;
    let added = bucketValues();
    const need = (kind: BucketKind, value: string | null | undefined) => {
      if (value === null || value === undefined || known?.[kind].has(value) || added[kind].has(value)) return;
      added[kind].add(value);
      // What the column holds: a record kept whole has U+FFFD in place of what text cannot hold.
      out.push({ kind, value: clean(value), bucket, known: value });
    };
    for (const r of records) {
      const b = bucketOf(r.at);
      // A time that is not a number fails the COPY anyway (at is NOT NULL): no bucket for it.
      if (!Number.isFinite(b)) continue;
      if (b !== bucket) {
        bucket = b;
        known = this.byBucket.get(b);
        const seen = batch.get(b);
        if (seen === undefined) batch.set(b, (added = bucketValues()));
        else added = seen;
      }
      need('tool', r.tool);
      need('server', r.server);
      need('decision', r.decision);
    }
    return out;
  }

  /** Remembers `rows` as stored (their transaction committed), forgetting buckets older than the most recent few. */
  stored(rows: readonly BucketRow[]): void {
    for (const row of rows) {
      let values = this.byBucket.get(row.bucket);
      if (values === undefined) this.byBucket.set(row.bucket, (values = bucketValues()));
      values[row.kind].add(row.known);
      if (row.bucket > this.newest) this.newest = row.bucket;
    }
    for (const b of this.byBucket.keys()) if (b <= this.newest - REMEMBERED_BUCKETS) this.byBucket.delete(b);
  }
}

/**
 * The INSERT of `rows` that skips those already stored (by another gateway, or before this sink
 * started), as SQL text with the values inline: it shares a simple-query message with the COPY,
 * which cannot carry parameters. pg.escapeLiteral quotes the values (E'' with doubled backslashes
 * where they hold one), and buckets are whole numbers.
 */
export function insertBucketsSql(rows: readonly BucketRow[]): string {
  const values = rows.map((r) => `('${r.kind}', ${pg.escapeLiteral(r.value)}, ${String(r.bucket)}::bigint)`).join(',\n');
  return `INSERT INTO audit_record_buckets (kind, value, bucket)
SELECT k.kind, k.value, k.bucket FROM (VALUES ${values}) AS k (kind, value, bucket)
WHERE NOT EXISTS (SELECT 1 FROM audit_record_buckets b WHERE b.kind = k.kind AND b.value = k.value AND b.bucket = k.bucket)`;
}
