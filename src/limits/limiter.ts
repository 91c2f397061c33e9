/**
 * The limiter: turns the limits of an allowed decision into counters of a store, reserves them
 * all at once, and says in words why a refused call was refused and when to retry. This file
 * also defines the counter store contract that store/memory.ts and store/redis.ts implement.
 */
import { createHash } from 'node:crypto';
import type { LimitSpec } from '../policy/types.js';
import { windowText } from '../util/duration.js';

// ---- the counter store contract ----

// What the limiter needs from the memory store and the Redis store. A store knows nothing of
// policies, grants or tools; it holds numbered counters under opaque keys and answers "may these
// amounts be added, all of them, now?" atomically.

/**
 * How a counter counts.
 * - `rolling`: in any interval of `windowMs`, the admitted amounts sum to at most `max`
 *   (an exact sliding log, not an approximation).
 * - `calendar`: fixed windows aligned to multiples of `windowMs` since the Unix epoch (UTC), so a
 *   `day` window resets at 00:00 UTC; at most `max` per window.
 * - `in_flight`: a concurrency count; the amount is held from reserve until settle.
 */
export type CounterKind = 'rolling' | 'calendar' | 'in_flight';

/** One counter of one call, fully resolved by the limiter. */
export interface CounterRequest {
  /**
   * Identifies the counter. Two requests with the same key count together (across calls and,
   * with a shared store, across gateway processes). Within one `reserve` keys are unique.
   */
  readonly key: string;
  readonly kind: CounterKind;
  /** Window length in milliseconds (> 0) for `rolling` and `calendar`; 0 for `in_flight`. */
  readonly windowMs: number;
  /** Largest total admitted per window (or held at once, for `in_flight`). Positive integer. */
  readonly max: number;
  /** What this call adds: a finite number >= 0 (1 for a plain rate limit). */
  readonly amount: number;
}

/** A refusal: which counter said no, and when the same call could be admitted. */
export interface Refusal {
  readonly ok: false;
  /** Index into the request array of the first counter that refused. */
  readonly index: number;
  /**
   * Milliseconds until enough of the counter's window has passed for this amount to fit
   * (for `in_flight`, a short fixed hint; an amount above `max` never fits: `Infinity`).
   */
  readonly retryAfterMs: number;
}

/** An admission: the reservation to settle once the call's outcome is known. */
export interface Admission {
  readonly ok: true;
  readonly reservation: Reservation;
}

export type ReserveOutcome = Admission | Refusal;

/** Opaque to the limiter: what a store needs to commit or roll back one admission. */
export interface Reservation {
  readonly store: string;
}

export interface CounterStore {
  /** `memory` or `redis`, for logs and metrics. */
  readonly name: string;
  /**
   * Checks every counter and, only if all of them admit their amount, adds every amount: all or
   * none, atomically with respect to every other caller of the same store. A refused call adds
   * nothing. `group` is the same for all counters of one call (the server name); a clustered
   * store keeps one group's keys together. `now` is the caller's clock in ms since the epoch.
   *
   * Rejects (or throws) only when the store cannot be reached or answers nonsense; the limiter
   * turns that into `on_store_error`.
   */
  reserve(group: string, counters: readonly CounterRequest[], now: number): ReserveOutcome | Promise<ReserveOutcome>;
  /**
   * Ends a reservation: `refund: true` takes back what it added (the call failed), `false` keeps
   * the counts (the call happened). `in_flight` amounts are released either way. Settling twice
   * is a no-op. Never rejects for a store that is down: a lost refund errs on the side of
   * counting, and in-flight slots carry an expiry so they are not lost for ever.
   */
  settle(reservation: Reservation, refund: boolean, now: number): void | Promise<void>;
  /** Stops timers and connections. */
  close(): Promise<void>;
}

/** Thrown (or rejected with) by a store that cannot answer. */
export class CounterStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CounterStoreError';
  }
}

// ---- the limiter ----

/** Who is calling and with what: everything a limit's scope or increment can refer to. */
export interface CallContext {
  /** The server name: the store groups one call's counters under it. */
  readonly server: string;
  /** The grant (agent identity) making the call. */
  readonly grant: string;
  /** The client's session; undefined for stateless clients, whose `session` limits count per grant. */
  readonly session: string | undefined;
  readonly args: unknown;
}

/** What to do with a call that has limits when the store cannot answer. */
export type OnStoreError = 'deny' | 'allow';

export interface LimiterOptions {
  readonly onStoreError: OnStoreError;
  /** Injected for exact window tests. */
  readonly now?: () => number;
  /** Told about every store failure (the gateway logs it and counts it). */
  readonly onStoreFailure?: (err: unknown, during: 'reserve' | 'settle') => void;
}

/** A held reservation; settle it exactly once when the call's outcome is known. */
export interface Ticket {
  readonly reservation: Reservation | undefined;
}

export type LimitOutcome =
  | { readonly ok: true; readonly ticket: Ticket | undefined }
  | {
      readonly ok: false;
      /** The limit that refused (its JSON pointer), or `(counter store)` when the store failed. */
      readonly rule: string;
      readonly reason: string;
      /** Whole seconds until the call could be admitted; absent when waiting cannot help. */
      readonly retryAfterSeconds?: number;
    };

export const STORE_RULE = '(counter store)';

const ADMITTED_WITHOUT_LIMITS: LimitOutcome = Object.freeze({ ok: true, ticket: undefined });
const UNCOUNTED: Ticket = Object.freeze({ reservation: undefined });
// Keys name argument values; beyond this a value is represented by its hash so one long
// argument cannot make a key (and a Redis command) arbitrarily large.
const MAX_VALUE_IN_KEY = 128;
const SEP = '\u0001';

export class Limiter {
  readonly store: CounterStore;
  private readonly opts: LimiterOptions;
  private readonly now: () => number;
  private readonly paths = new Map<string, readonly string[]>();
  // Keyed by the compiled limit, so a reloaded policy's limits are collected with it.
  private readonly names = new WeakMap<LimitSpec, string>();

  constructor(store: CounterStore, opts: LimiterOptions) {
    this.store = store;
    this.opts = opts;
    this.now = opts.now ?? Date.now;
  }

  /**
   * Reserves every limit of one call together: all or none. Answers synchronously when the store
   * does (the memory store), so a call without a store round trip pays no promise.
   */
  reserve(limits: readonly LimitSpec[], ctx: CallContext): LimitOutcome | Promise<LimitOutcome> {
    if (limits.length === 0) return ADMITTED_WITHOUT_LIMITS;
    const resolved = this.resolve(limits, ctx);
    if (!('requests' in resolved)) return resolved;
    const { requests, specs } = resolved;
    let outcome: ReserveOutcome | Promise<ReserveOutcome>;
    try {
      outcome = this.store.reserve(ctx.server, requests, this.now());
    } catch (err) {
      return this.storeFailed(err);
    }
    if (outcome instanceof Promise) {
      return outcome.then(
        (o) => this.answer(o, requests, specs),
        (err: unknown) => this.storeFailed(err),
      );
    }
    return this.answer(outcome, requests, specs);
  }

  /** Ends a reservation: `refund` when the call failed, so it consumes nothing. Never throws. */
  settle(ticket: Ticket | undefined, refund: boolean): void {
    const reservation = ticket?.reservation;
    if (reservation === undefined) return;
    try {
      const r = this.store.settle(reservation, refund, this.now());
      if (r instanceof Promise) r.catch((err: unknown) => this.opts.onStoreFailure?.(err, 'settle'));
    } catch (err) {
      this.opts.onStoreFailure?.(err, 'settle');
    }
  }

  private answer(o: ReserveOutcome, requests: readonly CounterRequest[], specs: readonly LimitSpec[]): LimitOutcome {
    if (o.ok) return { ok: true, ticket: { reservation: o.reservation } };
    const spec = specs[o.index];
    const req = requests[o.index];
    if (spec === undefined || req === undefined) return this.storeFailed(new Error(`the store refused counter ${o.index} of ${requests.length}`));
    return refusal(spec, req, o.retryAfterMs);
  }

  private storeFailed(err: unknown): LimitOutcome {
    this.opts.onStoreFailure?.(err, 'reserve');
    if (this.opts.onStoreError === 'allow') return { ok: true, ticket: UNCOUNTED };
    return {
      ok: false,
      rule: STORE_RULE,
      reason: 'the rate-limit store is unavailable, and this call has limits (on_store_error: deny)',
      retryAfterSeconds: 1,
    };
  }

  /**
   * The counter request of each limit, in order, beside the limit it came from; or the refusal
   * of an increment that cannot be read. Limits that resolve to the same counter (the same name,
   * window and scope value, e.g. written both for the tool and under all_tools) are one count:
   * the call adds to it once, the largest of their amounts, and must fit under the smallest of
   * their maxima.
   */
  private resolve(limits: readonly LimitSpec[], ctx: CallContext): { requests: CounterRequest[]; specs: LimitSpec[] } | LimitOutcome {
    const requests: CounterRequest[] = [];
    const specs: LimitSpec[] = [];
    for (const l of limits) {
      let amount = l.increment ?? 1;
      if (l.incrementFrom !== undefined) {
        const v = this.valueAt(ctx.args, l.incrementFrom);
        if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
          const what = v === undefined ? 'is missing' : `is ${describe(v)}, not a number of at least 0`;
          return {
            ok: false,
            rule: l.pointer,
            reason: `${l.incrementFrom} ${what}; the quota '${l.counter}' counts it, so the call cannot be admitted without it`,
          };
        }
        amount = v;
      }
      const key = ctx.server + SEP + this.counterName(l) + SEP + this.scopeValue(l.scope, ctx);
      // A call has a handful of limits: a scan beats building a map for them.
      const at = requests.findIndex((r) => r.key === key);
      if (at < 0) {
        requests.push({ key, kind: l.kind, windowMs: l.windowMs, max: l.max, amount });
        specs.push(l);
        continue;
      }
      const prev = requests[at]!;
      requests[at] = { ...prev, max: Math.min(prev.max, l.max), amount: Math.max(prev.amount, amount) };
      if (l.max < prev.max) specs[at] = l;
    }
    return { requests, specs };
  }

  /** What names a limit's counter apart from server and scope value; built once per compiled limit. */
  private counterName(l: LimitSpec): string {
    let name = this.names.get(l);
    if (name === undefined) {
      name = [l.counter, `${l.kind}:${l.windowMs}`, l.scope].join(SEP);
      this.names.set(l, name);
    }
    return name;
  }

  private scopeValue(scope: string, ctx: CallContext): string {
    switch (scope) {
      case 'grant':
        return ctx.grant;
      case 'session':
        // A stateless client has no session: its own grant is the narrowest thing that persists.
        return ctx.session ?? `grant:${ctx.grant}`;
      case 'server':
        return '';
      default: {
        const v = this.valueAt(ctx.args, scope);
        // A missing argument is one bucket of its own, distinct from every JSON value.
        const text = v === undefined ? '(missing)' : (JSON.stringify(v) ?? '(missing)');
        return text.length <= MAX_VALUE_IN_KEY ? text : 'sha256:' + createHash('sha256').update(text).digest('base64url');
      }
    }
  }

  private valueAt(args: unknown, path: string): unknown {
    let steps = this.paths.get(path);
    if (steps === undefined) {
      steps = Object.freeze(path.split('.').slice(1));
      this.paths.set(path, steps);
    }
    let v = args;
    for (const key of steps) {
      if (Array.isArray(v)) {
        v = /^(?:0|[1-9][0-9]*)$/.test(key) ? v[Number(key)] : undefined;
      } else if (typeof v === 'object' && v !== null && Object.hasOwn(v, key)) {
        v = (v as Record<string, unknown>)[key];
      } else {
        return undefined;
      }
    }
    return v;
  }
}

function refusal(spec: LimitSpec, req: CounterRequest, retryAfterMs: number): LimitOutcome {
  const scope = scopeText(spec.scope);
  if (spec.kind === 'in_flight') {
    return {
      ok: false,
      rule: spec.pointer,
      reason: `concurrency limit reached: at most ${spec.max} of these calls in flight at once ${scope} (counter '${spec.counter}')`,
      retryAfterSeconds: 1,
    };
  }
  const per = `per ${spec.kind === 'calendar' ? 'calendar ' : ''}${windowText(spec.windowMs)}`;
  const quota = spec.incrementFrom !== undefined;
  const limitText = quota
    ? `quota '${spec.counter}' allows at most ${spec.max} of ${spec.incrementFrom} ${per} ${scope}`
    : `rate limit '${spec.counter}' allows at most ${spec.max} ${spec.max === 1 ? 'call' : 'calls'} ${per} ${scope}`;
  if (!Number.isFinite(retryAfterMs) || req.amount > spec.max) {
    return { ok: false, rule: spec.pointer, reason: `${limitText}, and this call's ${req.amount} alone exceeds it` };
  }
  const retryAfterSeconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  const used = quota ? `this call's ${req.amount} does not fit in what is left` : 'it is used up';
  return {
    ok: false,
    rule: spec.pointer,
    reason: `${limitText}; ${used}. Retry in ${retryAfterSeconds} s`,
    retryAfterSeconds,
  };
}

function scopeText(scope: string): string {
  switch (scope) {
    case 'grant':
      return 'per agent grant';
    case 'session':
      return 'per session';
    case 'server':
      return 'for all callers of this server';
    default:
      return `per value of ${scope}`;
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'number') return String(v);
  return `a${Array.isArray(v) ? 'n array' : typeof v === 'object' ? 'n object' : ` ${typeof v}`}`;
}
