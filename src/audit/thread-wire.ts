/**
 * The messages between the gateway's event loop and its audit thread (thread.ts, thread-worker.ts).
 * Only plain data crosses: events as the trail makes them (arguments not yet derived), errors as
 * their class name, message and code, stats and query results as the writer and stores give them.
 */
import { performance } from 'node:perf_hooks';
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
  /**
   * The gateway's event loop records into the SQLite sinks (../loop-recorder.ts): the thread
   * writes no records, and checkpoints the files' WAL in their place.
   */
  readonly loopRecords?: boolean;
  /** ThreadWork's counters, shared by both sides. */
  readonly work: SharedArrayBuffer;
}

/**
 * How far behind the thread is, told without a message (both sides use Atomics): the gateway
 * counts the messages it posts, the thread the messages it has finished with (once the work they
 * started is done), and the thread says when its next timer is due (its flush interval's write),
 * which it cannot say once it is late. The gateway's event loop stops busy-polling while the
 * thread is behind (AuditThread, ../util/busy-poll.ts), so that it does not hold a CPU the thread
 * is waiting for.
 *
 * Times are ms on a clock both threads read alike (sharedNow), kept in 32 bits and compared by
 * their difference, which is exact while it is under 24 days.
 */
export class ThreadWork {
  /** Messages posted, messages finished with, a timer set (1) or not (0), when it is due. */
  private readonly c: Int32Array;

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(4 * Int32Array.BYTES_PER_ELEMENT)) {
    this.c = new Int32Array(buffer, 0, 4);
  }

  get buffer(): SharedArrayBuffer {
    return this.c.buffer as SharedArrayBuffer;
  }

  /** The gateway posted a message. */
  posted(): void {
    Atomics.add(this.c, 0, 1);
  }

  /** The thread has finished with `count` messages since it started. */
  finished(count: number): void {
    Atomics.store(this.c, 1, count | 0);
  }

  /** The thread's next timer is due at `at` (sharedNow()'s clock); undefined: none is set. */
  dueAt(at: number | undefined): void {
    if (at === undefined) {
      Atomics.store(this.c, 2, 0);
      return;
    }
    Atomics.store(this.c, 3, at | 0);
    Atomics.store(this.c, 2, 1);
  }

  /** Whether `messages` or more posted are not finished with, or the thread's timer has been due `lateMs` or more. */
  behind(messages: number, lateMs: number): boolean {
    const c = this.c;
    if (((Atomics.load(c, 0) - Atomics.load(c, 1)) | 0) >= messages) return true;
    return Atomics.load(c, 2) !== 0 && ((sharedNow() - Atomics.load(c, 3)) | 0) >= lateMs;
  }
}

/** This thread's performance.now() origin (a getter each read): sharedNow runs at every turn the event loop polls. */
const ORIGIN = performance.timeOrigin;

/** ms on a clock every thread of the process reads alike, as a 32-bit integer (it wraps). */
export function sharedNow(): number {
  return Math.floor(ORIGIN + performance.now()) | 0;
}

/** The operations of a queryable sink (AuditStore) the gateway runs in the thread. */
export type StoreOp = 'query' | 'checkpoints' | 'verify' | 'prune';

export type ToAuditThread =
  /** Events to record (`async`), in order, as EventEncoder wrote them. */
  | { readonly t: 'events'; readonly events: EncodedEvents }
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
  /** How many events the thread has taken from `events` messages so far, whenever it changed (as stats). */
  | { readonly t: 'taken'; readonly count: number }
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

/**
 * Events as they cross to the thread: one flat array, FIELDS_PER_EVENT values an event, in which
 * the fields that repeat from call to call (grant, session, server, tool, decision, rule…) are
 * sent as text the first time and as a number after. Copying a few numbers costs less than
 * copying the same dozen strings and an object's shape for every call, on both sides.
 */
export interface EncodedEvents {
  /** The thread forgets every string it was sent before this message (see EventEncoder). */
  readonly reset: boolean;
  readonly values: unknown[];
}

/** The fields sent by number once seen: each is a string or null. */
const INTERNED = ['grantId', 'grantLabel', 'session', 'server', 'method', 'tool', 'decision', 'rule', 'reason', 'policyVersion', 'upstreamStatus', 'error'] as const;
export const FIELDS_PER_EVENT = INTERNED.length + 5;
/** Strings remembered at most; then both sides start again (session ids keep arriving). */
const MAX_STRINGS = 50_000;

export class EventEncoder {
  private ids = new Map<string, number>();
  private resetPending = false;

  /** Forget every string: the next message says so, and the thread forgets them too. */
  restart(): void {
    this.ids = new Map();
    this.resetPending = true;
  }

  encode(events: readonly AuditEventInput[]): EncodedEvents {
    if (this.ids.size > MAX_STRINGS) this.restart();
    const reset = this.resetPending;
    this.resetPending = false;
    // Built by push, in INTERNED's order (the decoder's), each field read by name: an array made
    // with `new Array(n)` has holes as far as V8 is concerned, however it is filled, and a holey
    // array is structured-cloned element by element as index/value pairs: 80 events took about
    // 0.7 µs an event to serialise here and 1.1 to 1.3 to deserialise and decode, against 0.2 and
    // 0.5 to 0.7 for this packed one, whose pushes cost the encoding a few per cent. (A loop over
    // INTERNED made every read a megamorphic keyed load.)
    const values: unknown[] = [];
    for (const e of events) {
      values.push(
        e.at,
        e.requestId,
        e.arguments,
        e.latencyMs,
        e.resultBytes,
        this.ref(e.grantId),
        this.ref(e.grantLabel),
        this.ref(e.session),
        this.ref(e.server),
        this.ref(e.method),
        this.ref(e.tool),
        this.ref(e.decision),
        this.ref(e.rule),
        this.ref(e.reason),
        this.ref(e.policyVersion),
        this.ref(e.upstreamStatus),
        this.ref(e.error),
      );
    }
    return { reset, values };
  }

  private ref(s: string | null): string | number | null {
    if (s === null) return null;
    const id = this.ids.get(s);
    if (id !== undefined) return id;
    this.ids.set(s, this.ids.size);
    return s;
  }
}

export class EventDecoder {
  private strings: string[] = [];

  decode(m: EncodedEvents): AuditEventInput[] {
    if (m.reset) this.strings = [];
    const v = m.values;
    const out: AuditEventInput[] = [];
    // Field by field, like the encoder: this runs for every event the thread takes.
    for (let i = 0; i < v.length; i += FIELDS_PER_EVENT) {
      out.push({
        at: v[i] as number,
        requestId: v[i + 1] as string | null,
        arguments: v[i + 2],
        latencyMs: v[i + 3] as number | null,
        resultBytes: v[i + 4] as number | null,
        grantId: this.text(v[i + 5]),
        grantLabel: this.text(v[i + 6]),
        session: this.text(v[i + 7]),
        server: this.text(v[i + 8])!,
        method: this.text(v[i + 9])!,
        tool: this.text(v[i + 10]),
        decision: this.text(v[i + 11]) as AuditEventInput['decision'],
        rule: this.text(v[i + 12]),
        reason: this.text(v[i + 13]),
        policyVersion: this.text(v[i + 14]),
        upstreamStatus: this.text(v[i + 15]),
        error: this.text(v[i + 16]),
      });
    }
    return out;
  }

  private text(x: unknown): string | null {
    if (x === null) return null;
    if (typeof x === 'string') {
      this.strings.push(x);
      return x;
    }
    return this.strings[x as number]!;
  }
}
