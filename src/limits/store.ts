/**
 * The counter store contract: what the limiter needs from the memory store and the Redis store.
 * A store knows nothing of policies, grants or tools; it holds numbered counters under opaque keys
 * and answers "may these amounts be added, all of them, now?" atomically.
 */

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
