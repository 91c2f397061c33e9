import { CounterStoreError } from '../limiter.js';
import type { Admission, CounterRequest, CounterStore, Reservation, ReserveOutcome } from '../limiter.js';

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Most keys held at once, over all kinds (default 1,000,000). A call that needs a new key when
   * the store is full, even after dropping expired keys, throws `CounterStoreError`: forgetting a
   * live count would admit more than the policy allows.
   */
  maxKeys?: number;
  /** How often a background sweep drops expired keys (default 60,000 ms); 0: never, only when full. */
  sweepIntervalMs?: number;
  /**
   * The time the background sweep judges expiry by. By default the latest `now` any caller passed,
   * so a sweep never runs ahead of the callers' own clock and never drops a count they still see.
   */
  clock?: () => number;
}

/** The in-process store: synchronous, exact, bounded. */
export interface MemoryStore extends CounterStore {
  readonly name: 'memory';
  /** Keys held, over all kinds. */
  readonly size: number;
  reserve(group: string, counters: readonly CounterRequest[], now: number): ReserveOutcome;
  settle(reservation: Reservation, refund: boolean, now: number): void;
  /**
   * Drops every key that no longer counts anything at `now` (default: the sweep clock): rolling
   * logs whose entries have all left their window, calendar counts of a past window, in-flight
   * counts with nothing held. Returns how many keys it dropped.
   */
  sweep(now?: number): number;
}

const DEFAULT_MAX_KEYS = 1_000_000;
// Amounts count in millionths, as whole numbers, exactly as the Redis store counts them: sums of
// doubles drift (0.1 + 0.2 + 0.7 > 1), sums of integers below 2^53 do not, and both stores must
// admit the same calls.
const UNITS_PER_AMOUNT = 1_000_000;
const units = (amount: number): number => Math.round(amount * UNITS_PER_AMOUNT);
const DEFAULT_SWEEP_INTERVAL_MS = 60_000;
// An in-flight slot frees when some call ends, which the store cannot predict: a hint, not a promise.
const IN_FLIGHT_RETRY_MS = 1_000;
// Slots of a new rolling log's ring; it doubles when full and halves in a sweep when mostly empty.
const INITIAL_RING = 4;

// What a counter does when a reservation that added to it ends; true when it has become empty.
interface Counter {
  settle(at: number, amount: number, refund: boolean): boolean;
}

// A ring of `size` (time, amount) slots. A plain array of doubles rather than a Float64Array: it
// lives in the JavaScript heap next to its log, and with thousands of busy keys the decisions are
// bound by cache misses, not arithmetic.
function ring(size: number): number[] {
  // Filled with a double (NaN) so the array stores unboxed doubles from the start.
  return new Array<number>(2 * size).fill(Number.NaN);
}

// One rolling key: (time, amount) entries in increasing time order, at most one per millisecond.
// Entry number `i` (counted from the key's first entry, never reused) lives at slot `i & mask` of
// a power-of-two ring of interleaved time and amount, so a reservation can name its entry by
// number and a refund finds it without searching; live entries are numbers `start` to `end - 1`.
class RollingLog implements Counter {
  buf = ring(INITIAL_RING);
  mask = INITIAL_RING - 1;
  start = 0;
  end = 0;
  // Sum of the live entries' amounts.
  sum = 0;

  constructor(public windowMs: number) {}

  // An entry at or before `edge` has left the window: one at t is outside it from t + windowMs on.
  expire(edge: number): void {
    let s = this.start;
    const e = this.end;
    const buf = this.buf;
    const mask = this.mask;
    if (s === e || buf[(s & mask) << 1]! > edge) return;
    let sum = this.sum;
    do {
      sum -= buf[((s & mask) << 1) + 1]!;
      s++;
    } while (s < e && buf[(s & mask) << 1]! <= edge);
    this.start = s;
    // Exactly 0 when empty: a running sum of fractional amounts would otherwise carry rounding dust.
    this.sum = s === e ? 0 : sum;
  }

  // Adds at `t`, or at the latest entry's time if that is later (a clock that stepped back): times
  // stay increasing, and an amount is never dated earlier than one admitted before it, which would
  // let it leave the window too soon. Returns the number of the entry it went into.
  add(t: number, amount: number): number {
    const e = this.end;
    this.sum += amount;
    if (e > this.start) {
      const last = ((e - 1) & this.mask) << 1;
      if (this.buf[last]! >= t) {
        this.buf[last + 1]! += amount;
        return e - 1;
      }
      if (e - this.start > this.mask) this.resize(2 * (this.mask + 1));
    }
    const slot = (e & this.mask) << 1;
    this.buf[slot] = t;
    this.buf[slot + 1] = amount;
    this.end = e + 1;
    return e;
  }

  // `size`: a power of two, at least the number of live entries.
  resize(size: number): void {
    const old = this.buf;
    const oldMask = this.mask;
    const buf = ring(size);
    const mask = size - 1;
    for (let i = this.start; i < this.end; i++) {
      const from = (i & oldMask) << 1;
      const to = (i & mask) << 1;
      buf[to] = old[from]!;
      buf[to + 1] = old[from + 1]!;
    }
    this.buf = buf;
    this.mask = mask;
  }

  // After `expire(t - windowMs)`: the wait until the oldest entries have freed room for `amount`.
  retryAfter(t: number, amount: number, max: number): number {
    const buf = this.buf;
    const mask = this.mask;
    let left = this.sum;
    for (let i = this.start; i < this.end; i++) {
      const slot = (i & mask) << 1;
      left -= buf[slot + 1]!;
      if (left + amount <= max) return buf[slot]! + this.windowMs - t;
    }
    // Only rounding in a sum of fractions gets here: everything has left once the last entry has.
    return this.expiresAt() - t;
  }

  expiresAt(): number {
    return this.end > this.start ? this.buf[((this.end - 1) & this.mask) << 1]! + this.windowMs : -Infinity;
  }

  settle(entry: number, amount: number, refund: boolean): boolean {
    // An entry before `start` has left the window: there is nothing to take back.
    if (!refund || entry < this.start || entry >= this.end) return false;
    const slot = ((entry & this.mask) << 1) + 1;
    const back = Math.min(amount, this.buf[slot]!);
    this.buf[slot]! -= back;
    this.sum -= back;
    if (this.sum <= 0) this.sum = 0;
    return this.sum === 0;
  }
}

// One calendar key: the count of one window, by index since the epoch.
class CalendarCount implements Counter {
  count = 0;

  constructor(
    public index: number,
    public windowMs: number,
  ) {}

  settle(at: number, amount: number, refund: boolean): boolean {
    // Only the window the amount went into can give it back; a later window never held it.
    if (!refund || at !== this.index) return false;
    this.count -= amount;
    if (this.count <= 0) this.count = 0;
    return this.count === 0;
  }
}

// One in-flight key. `holders` counts open reservations so the count returns to exactly 0.
class InFlightCount implements Counter {
  count = 0;
  holders = 0;

  settle(_at: number, amount: number): boolean {
    this.count -= amount;
    if (--this.holders > 0) return false;
    this.count = 0;
    return true;
  }
}

// An admission that is its own reservation, holding the counters it added to: the first three in
// fields (calls rarely carry more limits), the rest in an array. One allocation per decision.
class Admitted implements Admission, Reservation {
  readonly ok = true;
  readonly store = 'memory';
  settled = false;
  // For each counter: the entry number or window index the amount went into, and the amount.
  c0: Counter | undefined = undefined;
  at0 = 0;
  n0 = 0;
  c1: Counter | undefined = undefined;
  at1 = 0;
  n1 = 0;
  c2: Counter | undefined = undefined;
  at2 = 0;
  n2 = 0;
  rest: (Counter | number)[] | undefined = undefined;

  // The store's number rather than the store, so that logging an outcome never drags the store along.
  constructor(readonly owner: number) {}

  get reservation(): Reservation {
    return this;
  }

  hold(counter: Counter, at: number, amount: number): void {
    if (this.c0 === undefined) {
      this.c0 = counter;
      this.at0 = at;
      this.n0 = amount;
    } else if (this.c1 === undefined) {
      this.c1 = counter;
      this.at1 = at;
      this.n1 = amount;
    } else if (this.c2 === undefined) {
      this.c2 = counter;
      this.at2 = at;
      this.n2 = amount;
    } else (this.rest ??= []).push(counter, at, amount);
  }

  release(refund: boolean): boolean {
    let emptied = false;
    if (this.c0 !== undefined && this.c0.settle(this.at0, this.n0, refund)) emptied = true;
    if (this.c1 !== undefined && this.c1.settle(this.at1, this.n1, refund)) emptied = true;
    if (this.c2 !== undefined && this.c2.settle(this.at2, this.n2, refund)) emptied = true;
    const rest = this.rest;
    if (rest !== undefined) {
      for (let i = 0; i < rest.length; i += 3) {
        if ((rest[i] as Counter).settle(rest[i + 1] as number, rest[i + 2] as number, refund)) emptied = true;
      }
    }
    return emptied;
  }
}

let stores = 0;

function invalid(c: CounterRequest, what: string): CounterStoreError {
  return new CounterStoreError(`counter ${JSON.stringify(c.key)}: ${what}`);
}

class MemoryCounterStore implements MemoryStore {
  readonly name = 'memory' as const;
  private readonly id = ++stores;
  // A map per kind: a key names one counter of one kind, and a mix-up of kinds must not corrupt it.
  private readonly rolling = new Map<string, RollingLog>();
  private readonly calendar = new Map<string, CalendarCount>();
  private readonly inFlight = new Map<string, InFlightCount>();
  private readonly maxKeys: number;
  private readonly clock: (() => number) | undefined;
  private timer: NodeJS.Timeout | undefined;
  // The latest `now` seen, in whole ms.
  private latest = -Infinity;
  // No key can expire before this time unless `released`: lets a full store refuse a new key
  // without scanning a million live ones on every call.
  private sweepDue = Infinity;
  // A settle has emptied a counter since the last sweep.
  private released = false;
  // Counters found by the checking pass, for the applying pass (reserve never re-enters).
  private readonly found: (RollingLog | CalendarCount | InFlightCount | undefined)[] = [];

  constructor(opts: MemoryStoreOptions) {
    const maxKeys = opts.maxKeys ?? DEFAULT_MAX_KEYS;
    const interval = opts.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
    if (!Number.isInteger(maxKeys) || maxKeys < 1) throw new RangeError(`maxKeys must be a positive integer, got ${maxKeys}`);
    if (!(interval >= 0 && interval < 2 ** 31)) throw new RangeError(`sweepIntervalMs must be from 0 to 2^31 - 1, got ${interval}`);
    this.maxKeys = maxKeys;
    this.clock = opts.clock;
    if (interval > 0) {
      this.timer = setInterval(() => {
        const now = this.sweepClock();
        if (this.released || now >= this.sweepDue) this.sweep(now);
      }, interval);
      this.timer.unref();
    }
  }

  get size(): number {
    return this.rolling.size + this.calendar.size + this.inFlight.size;
  }

  reserve(_group: string, counters: readonly CounterRequest[], now: number): ReserveOutcome {
    if (!Number.isFinite(now)) throw new CounterStoreError(`now must be a finite number of ms, got ${now}`);
    const t = Math.floor(now);
    if (t > this.latest) this.latest = t;
    const n = counters.length;
    const found = this.found;
    let missing = 0;

    for (let i = 0; i < n; i++) {
      const c = counters[i]!;
      if (!(c.amount >= 0 && c.amount <= Number.MAX_VALUE)) throw invalid(c, `amount must be a finite number >= 0, got ${c.amount}`);
      if (!(c.max > 0 && c.max <= Number.MAX_VALUE)) throw invalid(c, `max must be a positive number, got ${c.max}`);
      const amount = units(c.amount);
      const max = units(c.max);
      const kind = c.kind;
      if (kind !== 'in_flight') {
        if (kind !== 'rolling' && kind !== 'calendar') throw invalid(c, `unknown kind ${JSON.stringify(kind)}`);
        if (!(c.windowMs > 0 && c.windowMs <= Number.MAX_VALUE)) throw invalid(c, `windowMs must be a positive number, got ${c.windowMs}`);
      }
      if (amount === 0) {
        found[i] = undefined;
        continue;
      }
      if (amount > max) return { ok: false, index: i, retryAfterMs: Infinity };
      if (kind === 'rolling') {
        const log = this.rolling.get(c.key);
        found[i] = log;
        if (log === undefined) {
          missing++;
          continue;
        }
        if (log.windowMs !== c.windowMs) {
          log.windowMs = c.windowMs;
          this.sweepDue = -Infinity; // a shorter window may expire it sooner than the sweep expects
        }
        log.expire(t - c.windowMs);
        if (log.sum + amount > max) return { ok: false, index: i, retryAfterMs: log.retryAfter(t, amount, max) };
      } else if (kind === 'calendar') {
        const cal = this.calendar.get(c.key);
        found[i] = cal;
        if (cal === undefined) {
          missing++;
          continue;
        }
        const index = Math.floor(t / c.windowMs);
        // A clock that stepped back into an earlier window stays in the later one: returning to
        // the old window and then forward again would reset the count twice.
        if (index > cal.index || c.windowMs !== cal.windowMs) {
          if (c.windowMs !== cal.windowMs) this.sweepDue = -Infinity;
          cal.index = index;
          cal.windowMs = c.windowMs;
          cal.count = 0;
        }
        if (cal.count + amount > max) return { ok: false, index: i, retryAfterMs: (cal.index + 1) * c.windowMs - t };
      } else {
        const fl = this.inFlight.get(c.key);
        found[i] = fl;
        if (fl === undefined) {
          missing++;
          continue;
        }
        if (fl.count + amount > max) return { ok: false, index: i, retryAfterMs: IN_FLIGHT_RETRY_MS };
      }
    }

    if (missing > 0) this.makeRoom(missing, t);

    const admitted = new Admitted(this.id);
    for (let i = 0; i < n; i++) {
      const c = counters[i]!;
      const amount = units(c.amount);
      if (amount === 0) continue;
      const kind = c.kind;
      if (kind === 'rolling') {
        let log = found[i] as RollingLog | undefined;
        found[i] = undefined;
        if (log === undefined) {
          log = new RollingLog(c.windowMs);
          this.rolling.set(c.key, log);
          if (t + c.windowMs < this.sweepDue) this.sweepDue = t + c.windowMs;
        }
        admitted.hold(log, log.add(t, amount), amount);
      } else if (kind === 'calendar') {
        let cal = found[i] as CalendarCount | undefined;
        found[i] = undefined;
        if (cal === undefined) {
          cal = new CalendarCount(Math.floor(t / c.windowMs), c.windowMs);
          this.calendar.set(c.key, cal);
          const end = (cal.index + 1) * c.windowMs;
          if (end < this.sweepDue) this.sweepDue = end;
        }
        cal.count += amount;
        admitted.hold(cal, cal.index, amount);
      } else {
        let fl = found[i] as InFlightCount | undefined;
        found[i] = undefined;
        if (fl === undefined) {
          fl = new InFlightCount();
          this.inFlight.set(c.key, fl);
        }
        fl.count += amount;
        fl.holders++;
        admitted.hold(fl, 0, amount);
      }
    }
    return admitted;
  }

  settle(reservation: Reservation, refund: boolean, now: number): void {
    // Another store's reservation, or a second settle: nothing of ours to end.
    if (!(reservation instanceof Admitted) || reservation.owner !== this.id || reservation.settled) return;
    reservation.settled = true;
    if (now > this.latest && now < Infinity) this.latest = Math.floor(now);
    if (reservation.release(refund)) this.released = true;
  }

  sweep(now: number = this.sweepClock()): number {
    const before = this.size;
    let due = Infinity;
    for (const [key, log] of this.rolling) {
      log.expire(now - log.windowMs);
      if (log.sum <= 0) this.rolling.delete(key);
      else {
        due = Math.min(due, log.expiresAt());
        // Give back the ring of a burst that has passed (keeping room to double before it regrows).
        const live = log.end - log.start;
        const size = log.mask + 1;
        if (size > INITIAL_RING && live * 4 <= size) log.resize(Math.max(INITIAL_RING, size >>> 1));
      }
    }
    for (const [key, cal] of this.calendar) {
      if (cal.count <= 0 || cal.index < Math.floor(now / cal.windowMs)) this.calendar.delete(key);
      else due = Math.min(due, (cal.index + 1) * cal.windowMs);
    }
    for (const [key, fl] of this.inFlight) {
      if (fl.holders === 0) this.inFlight.delete(key);
    }
    this.sweepDue = due;
    this.released = false;
    return before - this.size;
  }

  close(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    return Promise.resolve();
  }

  private sweepClock(): number {
    return this.clock !== undefined ? this.clock() : this.latest;
  }

  private makeRoom(missing: number, t: number): void {
    if (this.size + missing <= this.maxKeys) return;
    if (this.released || t >= this.sweepDue) this.sweep(t);
    if (this.size + missing > this.maxKeys) {
      throw new CounterStoreError(`memory counter store is full: ${this.maxKeys} keys are counting and none has expired`);
    }
  }
}

/**
 * The in-process counter store. Decisions are synchronous and exact (a rolling window is a log of
 * admitted amounts, one entry per millisecond), time comes only from the callers' `now`, and
 * memory is bounded by `maxKeys` and by the admitted entries still inside their windows.
 */
export function createMemoryStore(opts: MemoryStoreOptions = {}): MemoryStore {
  return new MemoryCounterStore(opts);
}
