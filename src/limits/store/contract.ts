/**
 * The behaviour every counter store owes the limiter, as node:test tests any store can run:
 * `counterStoreContract('redis', () => openRedisStore(…))` in that store's own test file.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { CounterKind, CounterRequest, CounterStore, Refusal, Reservation, ReserveOutcome } from '../limiter.js';

/** Options of {@link counterStoreContract}. */
export interface ContractOptions {
  /**
   * True (the default) when the store's only clock is the `now` it is given: the tests then use
   * fixed times from 1_700_000_000_000 on. False when it also relies on a real clock (key expiry
   * that counts real time, say): the tests then start at a UTC midnight one to two days after the
   * real time, so no expiry the store derives from their `now` lies in the past. Either way the tests
   * move time only through `now`, and never wait for it.
   */
  clockFree?: boolean;
}

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/**
 * Registers the counter store contract as a `describe` block of tests named after `label`. Each
 * test opens a fresh store with `open`, closes it at the end, and uses keys and a group under a
 * random prefix, so a store shared between tests (one Redis) never sees another test's counts.
 */
export function counterStoreContract(label: string, open: () => Promise<CounterStore>, opts: ContractOptions = {}): void {
  const base = () => (opts.clockFree === false ? Math.ceil(Date.now() / DAY) * DAY + DAY : 1_700_000_000_000);

  function withStore(body: (s: Harness) => Promise<void>): () => Promise<void> {
    return async () => {
      const store = await open();
      try {
        await body(new Harness(store, `contract:${randomUUID()}`, base()));
      } finally {
        await store.close();
      }
    };
  }

  describe(`${label} counter store contract`, () => {
    test('admits up to max in a rolling window and refuses the next call', withStore(async (s) => {
      const k = s.rolling('a', MINUTE, 10);
      for (let i = 0; i < 10; i++) await s.admit([k(1)], s.t0 + i * SECOND);
      const no = await s.refuse([k(1)], s.t0 + 30 * SECOND);
      assert.equal(no.index, 0);
      assert.equal(no.retryAfterMs, 30 * SECOND);
    }));

    test('admits again exactly when the oldest entry leaves the window: an entry at t is outside it at t + windowMs', withStore(async (s) => {
      const k = s.rolling('a', MINUTE, 3);
      await s.admit([k(1)], s.t0);
      await s.admit([k(1)], s.t0 + SECOND);
      await s.admit([k(1)], s.t0 + 2 * SECOND);
      assert.equal((await s.refuse([k(1)], s.t0 + MINUTE - 1)).retryAfterMs, 1);
      await s.admit([k(1)], s.t0 + MINUTE);
      // The second entry is still inside for one more second.
      assert.equal((await s.refuse([k(1)], s.t0 + MINUTE)).retryAfterMs, SECOND);
      await s.admit([k(1)], s.t0 + MINUTE + SECOND);
    }));

    test('adds amounts up: refuses an amount larger than what remains and admits a smaller one that fits', withStore(async (s) => {
      for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
        const k = s.counter(kind, `q-${kind}`, kind === 'in_flight' ? 0 : HOUR, 100);
        await s.admit([k(60)], s.t0);
        await s.admit([k(25)], s.t0 + 1);
        const no = await s.refuse([k(16)], s.t0 + 2);
        assert.ok(no.retryAfterMs > 0 && no.retryAfterMs < Infinity, `${kind}: retryAfterMs ${no.retryAfterMs}`);
        await s.admit([k(15)], s.t0 + 3);
        await s.refuse([k(1)], s.t0 + 4);
      }
    }));

    test('counts fractional amounts exactly, to a millionth: 0.1 + 0.2 + 0.7 fills a max of 1, in any order', withStore(async (s) => {
      for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
        const k = s.counter(kind, `frac-${kind}`, kind === 'in_flight' ? 0 : HOUR, 1);
        for (const [i, a] of [0.1, 0.2, 0.7].entries()) await s.admit([k(a)], s.t0 + i);
        await s.refuse([k(0.000001)], s.t0 + 3);
        const k2 = s.counter(kind, `frac2-${kind}`, kind === 'in_flight' ? 0 : HOUR, 2);
        // In doubles these sum to 2.0000000000000004 and the last would be refused.
        for (const [i, a] of [0.7, 0.9, 0.1, 0.1, 0.2].entries()) await s.admit([k2(a)], s.t0 + i);
      }
    }));

    test('refuses an amount larger than max with retryAfterMs Infinity, on an empty counter of every kind', withStore(async (s) => {
      for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
        const k = s.counter(kind, `big-${kind}`, kind === 'in_flight' ? 0 : MINUTE, 5);
        const no = await s.refuse([k(6)], s.t0);
        assert.equal(no.index, 0);
        assert.equal(no.retryAfterMs, Infinity, kind);
        await s.admit([k(5)], s.t0);
      }
    }));

    test('gives the exact wait until enough of the oldest entries have left the window for the amount to fit', withStore(async (s) => {
      // The same history under three keys: 2 at t0, 1 at t0+10s, 2 at t0+20s, max 5; asked at t0+30s.
      const history = async (k: Counter) => {
        await s.admit([k(2)], s.t0);
        await s.admit([k(1)], s.t0 + 10 * SECOND);
        await s.admit([k(2)], s.t0 + 20 * SECOND);
      };
      const asked = s.t0 + 30 * SECOND;
      for (const [amount, wait] of [
        [1, 30 * SECOND], // the entry of 2 at t0 leaves at t0+60s
        [3, 40 * SECOND], // that and the 1 at t0+10s
        [5, 50 * SECOND], // all three
      ] as const) {
        const k = s.rolling(`exact-${amount}`, MINUTE, 5);
        await history(k);
        assert.equal((await s.refuse([k(amount)], asked)).retryAfterMs, wait, `amount ${amount}`);
        assert.equal((await s.refuse([k(amount)], asked + wait - 1)).retryAfterMs, 1, `amount ${amount}, 1 ms early`);
        await s.admit([k(amount)], asked + wait);
      }
    }));

    test('all or none: a refusal by the third counter adds nothing to the first two', withStore(async (s) => {
      const a = s.rolling('a', MINUTE, 2);
      const b = s.calendar('b', DAY, 2);
      const c = s.inFlight('c', 1);
      await s.admit([c(1)], s.t0);
      const no = await s.refuse([a(1), b(1), c(1)], s.t0 + 1);
      assert.equal(no.index, 2);
      assert.ok(no.retryAfterMs > 0 && no.retryAfterMs < Infinity);
      // Both still have their full room: two admissions each, then a refusal.
      await s.admit([a(1)], s.t0 + 2);
      await s.admit([a(1)], s.t0 + 3);
      await s.refuse([a(1)], s.t0 + 4);
      await s.admit([b(2)], s.t0 + 5);
      await s.refuse([b(1)], s.t0 + 6);
    }));

    test('names the first counter that refuses when several would', withStore(async (s) => {
      const a = s.rolling('a', MINUTE, 5);
      const b = s.calendar('b', DAY, 1);
      const c = s.rolling('c', MINUTE, 1);
      await s.admit([b(1), c(1)], s.t0);
      const no = await s.refuse([a(1), b(1), c(1)], s.t0 + 1);
      assert.equal(no.index, 1);
      // The refused call took nothing from a: five more fit.
      await s.admit([a(5)], s.t0 + 2);
    }));

    test('admits a call of three counters and counts it on all three', withStore(async (s) => {
      const a = s.rolling('a', MINUTE, 2);
      const b = s.calendar('b', DAY, 2);
      const c = s.inFlight('c', 2);
      await s.admit([a(1), b(1), c(1)], s.t0);
      await s.admit([a(1), b(1), c(1)], s.t0 + 1);
      assert.equal((await s.refuse([a(1), b(1), c(1)], s.t0 + 2)).index, 0);
      assert.equal((await s.refuse([b(1), c(1)], s.t0 + 2)).index, 0);
      assert.equal((await s.refuse([c(1)], s.t0 + 2)).index, 0);
    }));

    test('counts, refunds and releases a call of five counters as a whole', withStore(async (s) => {
      const ks = [s.rolling('a', MINUTE, 2), s.calendar('b', DAY, 2), s.inFlight('c', 2), s.rolling('d', HOUR, 2), s.calendar('e', HOUR, 2)];
      const call = await s.admit(ks.map((k) => k(2)), s.t0);
      for (const k of ks) await s.refuse([k(1)], s.t0 + 1);
      await s.store.settle(call, true, s.t0 + 2);
      for (const k of ks) await s.admit([k(2)], s.t0 + 3);
      await s.store.settle(call, true, s.t0 + 4);
      for (const k of ks) await s.refuse([k(1)], s.t0 + 5);
    }));

    test('settle with refund gives the amount back, without refund keeps it, and a second settle does nothing', withStore(async (s) => {
      for (const kind of ['rolling', 'calendar'] as const) {
        const k = s.counter(kind, `refund-${kind}`, HOUR, 5);
        const first = await s.admit([k(3)], s.t0);
        const second = await s.admit([k(2)], s.t0 + 1);
        await s.refuse([k(1)], s.t0 + 2);
        await s.store.settle(second, false, s.t0 + 3);
        await s.refuse([k(1)], s.t0 + 4);
        await s.store.settle(first, true, s.t0 + 5);
        await s.admit([k(3)], s.t0 + 6);
        // Settling again, either way, changes nothing: the counter stays full.
        await s.store.settle(first, true, s.t0 + 7);
        await s.store.settle(second, true, s.t0 + 7);
        await s.refuse([k(1)], s.t0 + 8);
      }
    }));

    test('a refund after the rolling entry has left the window takes nothing from later calls', withStore(async (s) => {
      const k = s.rolling('a', MINUTE, 3);
      const old = await s.admit([k(2)], s.t0);
      await s.admit([k(3)], s.t0 + MINUTE);
      await s.store.settle(old, true, s.t0 + MINUTE + 1);
      await s.refuse([k(1)], s.t0 + MINUTE + 2);
    }));

    test('a refund after the calendar window has rolled over takes nothing from the new window', withStore(async (s) => {
      const midnight = s.nextMidnight();
      const k = s.calendar('a', DAY, 3);
      const old = await s.admit([k(2)], midnight - 1);
      await s.admit([k(3)], midnight);
      await s.store.settle(old, true, midnight + 1);
      await s.refuse([k(1)], midnight + 2);
    }));

    test('calendar windows reset at the boundary aligned to the epoch (a day at 00:00 UTC) and retryAfterMs points at it', withStore(async (s) => {
      const midnight = s.nextMidnight();
      const day = s.calendar('day', DAY, 2);
      await s.admit([day(1)], midnight - 10 * HOUR);
      await s.admit([day(1)], midnight - 5 * HOUR);
      assert.equal((await s.refuse([day(1)], midnight - HOUR)).retryAfterMs, HOUR);
      assert.equal((await s.refuse([day(1)], midnight - 1)).retryAfterMs, 1);
      await s.admit([day(2)], midnight);
      assert.equal((await s.refuse([day(1)], midnight + 1)).retryAfterMs, DAY - 1);

      // A minute window counts from whole minutes, not from the first call.
      const minute = s.calendar('minute', MINUTE, 1);
      await s.admit([minute(1)], midnight + 59 * SECOND);
      assert.equal((await s.refuse([minute(1)], midnight + 59 * SECOND + 500)).retryAfterMs, 500);
      await s.admit([minute(1)], midnight + MINUTE);
    }));

    test('in_flight admits up to max at once and frees a slot when a call settles, refunded or not', withStore(async (s) => {
      const k = s.inFlight('a', 2);
      const one = await s.admit([k(1)], s.t0);
      const two = await s.admit([k(1)], s.t0 + 1);
      const no = await s.refuse([k(1)], s.t0 + 2);
      assert.ok(no.retryAfterMs > 0 && no.retryAfterMs < Infinity);
      // Time alone frees nothing.
      await s.refuse([k(1)], s.t0 + HOUR);
      await s.store.settle(one, false, s.t0 + HOUR);
      const three = await s.admit([k(1)], s.t0 + HOUR + 1);
      await s.refuse([k(1)], s.t0 + HOUR + 2);
      await s.store.settle(two, true, s.t0 + HOUR + 3);
      await s.admit([k(1)], s.t0 + HOUR + 4);
      // A second settle frees nothing more.
      await s.store.settle(one, false, s.t0 + HOUR + 5);
      await s.store.settle(two, true, s.t0 + HOUR + 5);
      await s.refuse([k(1)], s.t0 + HOUR + 6);
      await s.store.settle(three, false, s.t0 + HOUR + 7);
      await s.admit([k(1)], s.t0 + HOUR + 8);
    }));

    test('keeps keys independent: a full counter leaves another key of the same shape untouched', withStore(async (s) => {
      for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
        const a = s.counter(kind, `ind-a-${kind}`, kind === 'in_flight' ? 0 : MINUTE, 2);
        const b = s.counter(kind, `ind-b-${kind}`, kind === 'in_flight' ? 0 : MINUTE, 2);
        await s.admit([a(2)], s.t0);
        await s.refuse([a(1)], s.t0 + 1);
        await s.admit([b(1)], s.t0 + 2);
        await s.admit([b(1)], s.t0 + 3);
        await s.refuse([b(1)], s.t0 + 4);
      }
    }));

    test('always admits a zero amount, even on a full counter, and counts nothing for it', withStore(async (s) => {
      for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
        const k = s.counter(kind, `zero-${kind}`, kind === 'in_flight' ? 0 : MINUTE, 2);
        const fresh = s.counter(kind, `zero-fresh-${kind}`, kind === 'in_flight' ? 0 : MINUTE, 2);
        const z = await s.admit([fresh(0)], s.t0);
        await s.store.settle(z, false, s.t0);
        await s.admit([fresh(2)], s.t0 + 1);
        await s.admit([k(2)], s.t0 + 2);
        for (let i = 0; i < 3; i++) await s.admit([k(0)], s.t0 + 3 + i);
        await s.refuse([k(1)], s.t0 + 10);
      }
    }));

    test('of 200 concurrent reserves on one key with max 50, admits exactly 50', withStore(async (s) => {
      for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
        const k = s.counter(kind, `race-${kind}`, kind === 'in_flight' ? 0 : MINUTE, 50);
        const outcomes = await Promise.all(
          Array.from({ length: 200 }, (_, i) => Promise.resolve(s.store.reserve(s.group, [k(1)], s.t0 + (i % 3)))),
        );
        const admitted = outcomes.filter((o) => o.ok);
        assert.equal(admitted.length, 50, kind);
        await Promise.all(admitted.map((o) => s.store.settle(o.reservation, false, s.t0 + 5)));
        if (kind === 'in_flight') await s.admit([k(50)], s.t0 + 6);
        else await s.refuse([k(1)], s.t0 + 6);
      }
    }));
  });
}

// A counter of one test: called with an amount, it gives the request.
type Counter = (amount: number) => CounterRequest;

class Harness {
  constructor(
    readonly store: CounterStore,
    private readonly prefix: string,
    readonly t0: number,
  ) {}

  // One group per test keeps a clustered store's keys of one test together, as a server's would be.
  get group(): string {
    return `${this.prefix}:group`;
  }

  counter(kind: CounterKind, name: string, windowMs: number, max: number): Counter {
    const key = `${this.prefix}:${name}`;
    return (amount) => ({ key, kind, windowMs, max, amount });
  }

  rolling(name: string, windowMs: number, max: number): Counter {
    return this.counter('rolling', name, windowMs, max);
  }

  calendar(name: string, windowMs: number, max: number): Counter {
    return this.counter('calendar', name, windowMs, max);
  }

  inFlight(name: string, max: number): Counter {
    return this.counter('in_flight', name, 0, max);
  }

  // At least a day after t0, so a test has the whole day before the boundary to use.
  nextMidnight(): number {
    return Math.floor(this.t0 / DAY) * DAY + 2 * DAY;
  }

  async reserve(counters: CounterRequest[], now: number): Promise<ReserveOutcome> {
    return await this.store.reserve(this.group, counters, now);
  }

  async admit(counters: CounterRequest[], now: number): Promise<Reservation> {
    const out = await this.reserve(counters, now);
    if (!out.ok) assert.fail(`expected ${describeCall(counters)} to be admitted at t0+${now - this.t0}, refused by #${out.index} (retry after ${out.retryAfterMs} ms)`);
    return out.reservation;
  }

  async refuse(counters: CounterRequest[], now: number): Promise<Refusal> {
    const out = await this.reserve(counters, now);
    if (out.ok) assert.fail(`expected ${describeCall(counters)} to be refused at t0+${now - this.t0}, was admitted`);
    return out;
  }
}

function describeCall(counters: CounterRequest[]): string {
  return counters.map((c) => `${c.kind} ${c.key.slice(c.key.lastIndexOf(':') + 1)} +${c.amount}/${c.max}`).join(', ');
}
