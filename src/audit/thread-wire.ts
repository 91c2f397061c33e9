/**
 * The messages between the gateway's event loop and its audit thread (thread.ts, thread-worker.ts).
 * Only plain data crosses: events as the trail makes them (arguments not yet derived), errors as
 * their class name, message and code, stats and query results as the writer and stores give them.
 */
import type { AuditConfig } from '../config/index.js';
import type { AuditEventInput } from './event.js';
import type { AuditSinkStats } from './writer.js';

/** What the thread is started with (its workerData, under `auditThread`). */
export interface AuditThreadData {
  readonly config: AuditConfig;
  /** The gateway logger's level: the thread logs no more than the gateway would print. */
  readonly level: string;
  /** The stream id, for tests; a random UUID otherwise. */
  readonly stream?: string;
}

/** The operations of a queryable sink (AuditStore) the gateway runs in the thread. */
export type StoreOp = 'query' | 'checkpoints' | 'verify' | 'prune';

export type ToAuditThread =
  /** Events to record (`async`), in order. */
  | { readonly t: 'events'; readonly events: AuditEventInput[] }
  /** One event to record and answer once durable (`strict`). */
  | { readonly t: 'durable'; readonly id: number; readonly event: AuditEventInput }
  | { readonly t: 'flush'; readonly id: number }
  | { readonly t: 'stats'; readonly id: number }
  /** An AuditStore method on the `sink`-th sink of the config. */
  | { readonly t: 'store'; readonly id: number; readonly sink: number; readonly op: StoreOp; readonly args: unknown[] }
  /** Opens an iteration of the `sink`-th sink's records (`iter` names it from now on). */
  | { readonly t: 'iterate'; readonly id: number; readonly sink: number; readonly iter: number }
  /** The next page of records of iteration `iter`; `done: true` in the answer ends it. */
  | { readonly t: 'next'; readonly id: number; readonly iter: number }
  /** The iteration is abandoned (the reader stopped early). */
  | { readonly t: 'return'; readonly iter: number }
  | { readonly t: 'close'; readonly id: number };

export type FromAuditThread =
  /** The sinks are open and the writer runs. `stores`: which sinks are queryable (SQLite, PostgreSQL). */
  | { readonly t: 'ready'; readonly stream: string; readonly sinks: ReadonlyArray<{ readonly name: string; readonly store: boolean }>; readonly stats: AuditSinkStats[] }
  /** A sink could not be opened: the gateway does not start. */
  | { readonly t: 'failed'; readonly error: WireError }
  | { readonly t: 'reply'; readonly id: number; readonly value?: unknown; readonly error?: WireError }
  /** A sink's queue reached `max_queue` (true) or went below it again (false). */
  | { readonly t: 'full'; readonly full: boolean }
  /** The sinks' counters, whenever they changed (at most a few times a second). */
  | { readonly t: 'stats'; readonly stats: AuditSinkStats[] }
  /** A line of the thread's log (pino's JSON), for the gateway's logger. */
  | { readonly t: 'log'; readonly line: string };

/** An error as it crosses the thread boundary. */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
}

export function toWireError(err: unknown): WireError {
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    return { name: err.name, message: err.message, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { name: 'Error', message: String(err) };
}

/** The error again, of its class where it is one callers tell apart (a RangeError is a bad cursor). */
export function fromWireError(w: WireError): Error {
  const err = w.name === 'RangeError' ? new RangeError(w.message) : w.name === 'TypeError' ? new TypeError(w.message) : new Error(w.message);
  if (w.code !== undefined) (err as Error & { code: string }).code = w.code;
  return err;
}
