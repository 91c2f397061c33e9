/**
 * Where audit records end up. The batching writer (writer.ts) chains events into records and
 * hands them to one sink in batches; each sink (SQLite, PostgreSQL, JSON Lines, stdout) knows one
 * medium. Sinks neither assign seq nor compute hashes: they store what they are given, field for
 * field, so that reading it back reproduces every record's hash (see verify.ts).
 */
import type { AuditRecord } from './event.js';

export interface AuditSink {
  /**
   * Says what and where, for logs and errors: the kind, a colon, then the place, e.g.
   * `sqlite:/var/lib/policylayer/audit.db`, `jsonl:/var/log/policylayer/audit.jsonl`, `stdout`.
   * Never holds a secret (a PostgreSQL sink names its host and database, not its password).
   */
  readonly name: string;

  /**
   * Durably writes the records (in order; a batch is all-or-nothing where the medium allows).
   * Rejects if it cannot.
   *
   * - In order: the records are stored in the order given, which is each stream's seq order
   *   (the writer never reorders); a sink that can be read back returns them in that order.
   * - Durably: once the promise resolves, the records survive the gateway process dying. Whether
   *   they also survive the machine losing power is the sink's configured trade-off, which its
   *   documentation states (the SQLite sink, for instance, syncs every commit only when asked to).
   * - All-or-nothing: a transactional sink stores either every record of the batch or none, so
   *   a rejected batch can be retried as a whole. An append-only medium (a file, stdout) cannot
   *   promise this; after a rejection it may hold a prefix of the batch, and a retry then shows up
   *   as a duplicated record in verification rather than as a lost one.
   * - Rejects: every failure (disk full, lock timeout, a record the medium cannot hold, the sink
   *   closed) is a rejection, never a synchronous throw, so the writer handles one path.
   * - An empty batch resolves at once without touching the medium.
   */
  write(records: readonly AuditRecord[]): Promise<void>;

  /**
   * Releases the medium (closes the file or database handle, ends the pool) after the writes
   * already resolved; the writer flushes and awaits its last batch first. Calling it twice is
   * harmless; a write after it rejects.
   */
  close(): Promise<void>;
}
