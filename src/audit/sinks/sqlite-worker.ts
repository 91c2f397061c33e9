/**
 * The SQLite audit sink's writer thread: owns the connection that writes, so that neither a
 * batch's inserts nor its commit (nor a WAL checkpoint, nor a prune step) ever runs on the
 * gateway's event loop. sqlite.ts starts it and is the only thing that talks to it.
 *
 * Batches arrive in slices (the main thread serialises a batch a slice at a time, so no single
 * turn of its event loop holds it long), and each slice is written as it arrives, inside the
 * batch's transaction: the thread inserts one slice while the main thread encodes the next.
 * (Waiting for the whole batch first made the two threads take turns: about 65,000 records/s
 * against 95,000 here, one batch of 500 in flight.) Each batch has a savepoint, so
 * it stays all or nothing, and batches that arrive back to back share a transaction: one commit
 * (and, with `synchronous: full`, one fsync) for all of them. The transaction is committed as soon
 * as no batch is half-way and nothing more has arrived; then each batch's outcome is posted back.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import type { AuditSigningKey } from '../signing.js';
import type { PruneResult } from '../store.js';
import { openAuditDatabase, type Synchronous } from './sqlite-schema.js';
import { WireDecoder, type WireSlice } from './sqlite-wire.js';
import { AuditRecordWriter } from './sqlite-writer.js';

export interface WriterThreadOptions {
  readonly file: string;
  readonly synchronous: Synchronous;
  /** The sink's name, for error messages. */
  readonly name: string;
}

/** From the sink to its thread. */
export type ToWriterThread =
  | { readonly t: 'write'; readonly id: number; readonly slice: WireSlice; readonly end: boolean }
  | { readonly t: 'abort'; readonly id: number }
  // The key's KeyObjects cross as they are (they can be posted): the thread signs the checkpoints it writes.
  | { readonly t: 'prune'; readonly id: number; readonly before: number; readonly prunedAt: number; readonly key: AuditSigningKey }
  | { readonly t: 'close' };

/** From the thread to its sink: the outcome of the write or prune numbered `id`, or that the thread has closed the database. */
export type FromWriterThread =
  | { readonly t: 'done'; readonly id: number; readonly error?: WireError; readonly result?: PruneResult }
  | { readonly t: 'closed' };

/** An error as it crosses the thread boundary: SQLite's code (SQLITE_BUSY, SQLITE_FULL…) is kept. */
export interface WireError {
  readonly message: string;
  readonly code?: string;
}

/**
 * Records written in one transaction at most, however many batches arrive back to back: bounds
 * how long the first of them waits for its commit.
 */
const MAX_RECORDS_PER_TRANSACTION = 10_000;

if (parentPort !== null && (workerData as { auditSqliteWriter?: WriterThreadOptions } | null)?.auditSqliteWriter !== undefined) {
  serve(parentPort, (workerData as { auditSqliteWriter: WriterThreadOptions }).auditSqliteWriter);
}

function serve(port: MessagePort, o: WriterThreadOptions): void {
  const db = openAuditDatabase(o.file, o.synchronous);
  const writer = new AuditRecordWriter(db, o.name);
  const decoder = new WireDecoder();
  /** The batch whose slices are arriving, and every batch of the open transaction (it among them). */
  let current: Written | undefined;
  let written: Written[] = [];
  let records = 0;
  const prunes: Array<Extract<ToWriterThread, { t: 'prune' }>> = [];
  let pruning = false;
  let closing = false;

  /** Writes a slice as it arrives: the batch's transaction is open while the rest comes. */
  const write = (m: Extract<ToWriterThread, { t: 'write' }>): void => {
    const slice = decoder.receive(m.slice);
    if (current?.id !== m.id) {
      current = { id: m.id, error: undefined, open: false };
      written.push(current);
      try {
        writer.open();
        writer.startBatch();
        current.open = true;
      } catch (err) {
        current.error = asError(err);
      }
    }
    records += m.slice.count;
    if (current.open) {
      try {
        writer.addSlice(slice);
        if (m.end) writer.endBatch();
      } catch (err) {
        writer.abortBatch();
        current.open = false;
        current.error = asError(err);
      }
    }
    if (m.end) {
      current.open = false;
      current = undefined;
    }
  };

  /** Commits once no batch is half-way, and answers each batch of the transaction. */
  const commit = (): void => {
    if (current !== undefined || written.length === 0) return;
    const failed = writer.commitAll();
    for (const w of written) {
      const error = w.error ?? failed;
      port.postMessage({ t: 'done', id: w.id, ...(error === undefined ? {} : { error: wire(error) }) } satisfies FromWriterThread);
    }
    written = [];
    records = 0;
  };

  const take = (m: ToWriterThread): void => {
    switch (m.t) {
      case 'write':
        write(m);
        return;
      case 'abort':
        // The rest of the batch could not be sent (the sink has rejected it): undo what came.
        if (current?.id === m.id) {
          if (current.open) writer.abortBatch();
          current.open = false;
          current.error = new Error(`${o.name}: the batch could not be sent whole`);
          current = undefined;
        }
        return;
      case 'prune':
        prunes.push(m);
        return;
      case 'close':
        closing = true;
        return;
      default:
        throw new Error(`audit SQLite writer thread: unknown message ${JSON.stringify(m)}`);
    }
  };

  const startPrune = (): void => {
    if (pruning) return;
    const p = prunes.shift();
    if (p === undefined) return;
    pruning = true;
    writer
      .prune(p.before, p.prunedAt, p.key, () => (closing ? 'the sink was closed' : undefined))
      .then(
        (result) => port.postMessage({ t: 'done', id: p.id, result } satisfies FromWriterThread),
        (err: unknown) => port.postMessage({ t: 'done', id: p.id, error: wire(err) } satisfies FromWriterThread),
      )
      .finally(() => {
        pruning = false;
        startPrune();
        finish();
      });
  };

  /** Once closing and idle: answers what is left, closes the database, and lets the thread end. */
  const finish = (): void => {
    if (!closing || pruning) return;
    if (current !== undefined) {
      // The sink posts a batch's slices before it asks to close; this is a bug, not a crash.
      writer.abortBatch();
      current.error = new Error(`${o.name} was closed before the batch was complete`);
      current = undefined;
    }
    commit();
    for (const p of prunes) port.postMessage({ t: 'done', id: p.id, error: { message: `${o.name} was closed before pruning began` } } satisfies FromWriterThread);
    prunes.length = 0;
    db.close();
    port.postMessage({ t: 'closed' } satisfies FromWriterThread);
    port.close();
  };

  port.on('message', (m: ToWriterThread) => {
    take(m);
    // What arrived meanwhile is taken now: batches that completed while the last transaction was
    // committing share the next one, up to MAX_RECORDS_PER_TRANSACTION.
    while (!closing && !(current === undefined && records >= MAX_RECORDS_PER_TRANSACTION)) {
      const next = receiveMessageOnPort(port);
      if (next === undefined) break;
      take(next.message as ToWriterThread);
    }
    commit();
    startPrune();
    finish();
  });
}

interface Written {
  readonly id: number;
  error: Error | undefined;
  /** Whether its savepoint is open: slices are still to come, and it has not failed. */
  open: boolean;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function wire(err: unknown): WireError {
  if (!(err instanceof Error)) return { message: String(err) };
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? { message: err.message, code } : { message: err.message };
}
