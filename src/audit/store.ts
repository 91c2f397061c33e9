/**
 * The reading side of an audit sink that can be queried (SQLite, PostgreSQL): what the CLI's
 * `audit verify|tail|search|export` and the admin API's `/audit` routes use, whichever database
 * holds the records. Every such store returns the same records for the same query, in the same
 * order, with cursors that only it understands.
 */
import type { AuditDecision, AuditRecord } from './event.js';
import type { AuditSink } from './sink.js';
import type { AuditSigningKey } from './signing.js';
import type { AuditCheckpoint, VerifyOptions, VerifyResult } from './verify.js';

/** What query() selects; every filter is optional and they combine with AND. */
export interface AuditQuery {
  readonly grant?: string;
  readonly tool?: string;
  readonly decision?: AuditDecision;
  readonly server?: string;
  /** Records at or after this time (ms since the epoch). */
  readonly since?: number;
  /** Records before this time (ms since the epoch). */
  readonly until?: number;
  /** Records per page: 100 unless given, at least 1, at most 1,000. */
  readonly limit?: number;
  /** `newest` first (default) or `oldest` first. */
  readonly order?: 'newest' | 'oldest';
  /** The `next` cursor of the previous page: this page starts right after its last record. */
  readonly after?: string;
}

/**
 * One page of a query. Records are ordered by time, then by the order they were written in (for
 * one stream, its seq order), newest or oldest first: a total order, so a page boundary never
 * splits or repeats records of the same millisecond. Each store keeps written order in its key
 * (SQLite: the row id is the time and the order within its millisecond; PostgreSQL: an identity
 * column), so a query walks its rows in order and stops at the page's end instead of sorting.
 */
export interface AuditPage {
  readonly records: AuditRecord[];
  /**
   * The cursor for the next page (pass it as `after`, with the same filters and order), or
   * undefined when this page is the last. It is the position (time and written order) of this
   * page's last record, opaque to callers and meaningful only to the store that made it: records
   * written after the first page was read appear in later pages of an `oldest` walk, and in none
   * of a `newest` walk, which moves into the past.
   */
  readonly next: string | undefined;
}

export interface PruneResult {
  /** Records deleted. */
  readonly records: number;
  /** Streams that lost records, each with a new checkpoint. */
  readonly streams: number;
  /**
   * Streams the prune did not take as far as the cut, each with why: its checkpoint is not one
   * this key signed, or a record does not follow the one before (see signing.ts, pruneAnchor and
   * prunableRecords). Verification reports the same place. Present only when there are any.
   */
  readonly held?: ReadonlyArray<{ readonly stream: string; readonly reason: string }>;
}

export interface AuditStore extends AuditSink {
  /** A page of records matching `filter`, in the order asked; see AuditPage for the cursor. */
  query(filter?: AuditQuery): Promise<AuditPage>;
  /** Every record, stream by stream, each stream in seq order, read page by page. */
  iterate(): AsyncGenerator<AuditRecord>;
  /** The checkpoints retention left for pruned streams. */
  checkpoints(): Promise<AuditCheckpoint[]>;
  /** Verifies every stream's chain from its checkpoint (or genesis) on; give `publicKeys` to check the checkpoints' signatures with. */
  verify(opts?: Omit<VerifyOptions, 'checkpoints'>): Promise<VerifyResult>;
  /**
   * Deletes records older than `beforeMs`, leaving a checkpoint per stream that lost any, signed
   * by `key` in the transaction that deletes the records it stands for. A stream is pruned only
   * from a checkpoint `key` signed (or its start), and only over records that chain from it.
   */
  prune(beforeMs: number, key: AuditSigningKey): Promise<PruneResult>;
}
