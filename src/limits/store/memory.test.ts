import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { CounterStoreError } from '../limiter.js';
import type { CounterKind, CounterRequest, Reservation, ReserveOutcome } from '../limiter.js';
import { counterStoreContract } from './contract.js';
import { createMemoryStore } from './memory.js';
import type { MemoryStore } from './memory.js';

counterStoreContract('memory', async () => createMemoryStore(), { clockFree: true });
// The suite's other mode (times from the real clock's next midnight on) must hold for any store too.
counterStoreContract('memory, real-clock times', async () => createMemoryStore(), { clockFree: false });

const T0 = 1_700_000_000_000;
const MINUTE = 60_000;

function rolling(key: string, windowMs: number, max: number, amount = 1): CounterRequest {
  return { key, kind: 'rolling', windowMs, max, amount };
}

function admitted(out: ReserveOutcome): Reservation {
  if (!out.ok) assert.fail(`expected an admission, got a refusal by #${out.index}`);
  return out.reservation;
}

describe('memory counter store', () => {
  test('answers synchronously: reserve returns an outcome and settle returns nothing, never a promise', async () => {
    const store = createMemoryStore();
    try {
      const out = store.reserve('g', [rolling('a', MINUTE, 1)], T0);
      assert.equal(out instanceof Promise, false);
      assert.equal(out.ok, true);
      assert.equal(store.settle(admitted(out), false, T0), undefined);
      assert.equal(store.name, 'memory');
    } finally {
      await store.close();
    }
  });

  test('fails closed with CounterStoreError when a new key would exceed maxKeys, and takes it once the old keys expire', async () => {
    const store = createMemoryStore({ maxKeys: 3, sweepIntervalMs: 0 });
    try {
      for (const key of ['a', 'b', 'c']) admitted(store.reserve('g', [rolling(key, MINUTE, 2)], T0));
      assert.throws(() => store.reserve('g', [rolling('d', MINUTE, 2)], T0 + 1), CounterStoreError);
      // The refused call added nothing to `a`, which it shared with the new key: `a` has room for one more.
      assert.throws(() => store.reserve('g', [rolling('a', MINUTE, 2), rolling('d', MINUTE, 2)], T0 + 2), CounterStoreError);
      admitted(store.reserve('g', [rolling('a', MINUTE, 2)], T0 + 3));
      assert.equal(store.reserve('g', [rolling('a', MINUTE, 2)], T0 + 4).ok, false);
      assert.equal(store.size, 3);

      // b and c have left their window; a (last admitted at T0+3) has not.
      admitted(store.reserve('g', [rolling('d', MINUTE, 2)], T0 + MINUTE));
      assert.equal(store.size, 2);
      admitted(store.reserve('g', [rolling('e', MINUTE, 2)], T0 + MINUTE));
      assert.throws(() => store.reserve('g', [rolling('f', MINUTE, 2)], T0 + MINUTE + 1), CounterStoreError);
    } finally {
      await store.close();
    }
  });

  test('a full store takes a new key as soon as an in-flight count is released, without waiting for a window', async () => {
    const store = createMemoryStore({ maxKeys: 1, sweepIntervalMs: 0 });
    try {
      const held = admitted(store.reserve('g', [{ key: 'busy', kind: 'in_flight', windowMs: 0, max: 1, amount: 1 }], T0));
      assert.throws(() => store.reserve('g', [rolling('x', MINUTE, 1)], T0), CounterStoreError);
      store.settle(held, false, T0);
      admitted(store.reserve('g', [rolling('x', MINUTE, 1)], T0));
      assert.equal(store.size, 1);
    } finally {
      await store.close();
    }
  });

  test('sweeping drops rolling keys whose entries have all left the window, past calendar windows and idle in-flight keys, and keeps the rest', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    try {
      admitted(store.reserve('g', [rolling('short', 1_000, 5)], T0));
      admitted(store.reserve('g', [rolling('long', MINUTE, 5)], T0));
      admitted(store.reserve('g', [{ key: 'cal', kind: 'calendar', windowMs: 1_000, max: 5, amount: 1 }], T0));
      const fl = admitted(store.reserve('g', [{ key: 'fl', kind: 'in_flight', windowMs: 0, max: 5, amount: 1 }], T0));
      const refunded = admitted(store.reserve('g', [rolling('refunded', MINUTE, 5, 2)], T0));
      assert.equal(store.size, 5);
      store.settle(refunded, true, T0);
      assert.equal(store.sweep(T0 + 999), 1, 'only the refunded log counts nothing');
      assert.equal(store.size, 4);
      // At T0+1000 the 1 s entry is out and the calendar second has passed; the in-flight call is still running.
      assert.equal(store.sweep(T0 + 1_000), 2);
      assert.equal(store.size, 2);
      store.settle(fl, false, T0 + 1_000);
      assert.equal(store.sweep(T0 + 1_000), 1);
      assert.equal(store.sweep(T0 + MINUTE - 1), 0);
      assert.equal(store.sweep(T0 + MINUTE), 1);
      assert.equal(store.size, 0);
    } finally {
      await store.close();
    }
  });

  test('the background sweep drops expired keys by the injected clock, and close() stops it', async () => {
    let now = T0;
    let ticks = 0;
    const store = createMemoryStore({
      sweepIntervalMs: 5,
      clock: () => {
        ticks++;
        return now;
      },
    });
    admitted(store.reserve('g', [rolling('a', 1_000, 1)], T0));
    await sleep(30);
    assert.equal(store.size, 1);
    now = T0 + 1_000;
    for (let i = 0; i < 100 && store.size > 0; i++) await sleep(5);
    assert.equal(store.size, 0);
    await store.close();
    const after = ticks;
    await sleep(40);
    assert.equal(ticks, after, 'no sweep after close()');
  });

  test('the sweep timer never keeps the process alive', async () => {
    const module = fileURLToPath(new URL('./memory.js', import.meta.url));
    const script = `const { createMemoryStore } = await import(${JSON.stringify(module)});
      const s = createMemoryStore({ sweepIntervalMs: 1 });
      s.reserve('g', [{ key: 'a', kind: 'rolling', windowMs: 1000, max: 1, amount: 1 }], Date.now());`;
    const started = Date.now();
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 }, (err) => (err ? reject(err) : resolve()));
    });
    assert.ok(Date.now() - started < 10_000);
  });

  test('a clock that steps back never lets an amount leave the window earlier than those admitted before it', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    try {
      const k = (amount = 1) => rolling('a', MINUTE, 2, amount);
      admitted(store.reserve('g', [k()], T0 + 10_000));
      // Admitted at T0 by the caller's clock, but counted from T0+10s, the latest time seen.
      admitted(store.reserve('g', [k()], T0));
      const early = store.reserve('g', [k()], T0 + MINUTE);
      assert.equal(early.ok, false);
      assert.equal(early.ok === false && early.retryAfterMs, 10_000);
      // Room for both only once both have left, at T0+10s+1min.
      const both = store.reserve('g', [k(2)], T0 + MINUTE);
      assert.equal(both.ok === false && both.retryAfterMs, 10_000);
      assert.equal(store.reserve('g', [k()], T0 + 10_000 + MINUTE - 1).ok, false);
      admitted(store.reserve('g', [k(2)], T0 + 10_000 + MINUTE));
    } finally {
      await store.close();
    }
  });

  test('a calendar counter stays in the later window when the clock steps back over a boundary', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    try {
      const k = { key: 'c', kind: 'calendar', windowMs: 1_000, max: 2, amount: 1 } as const;
      admitted(store.reserve('g', [k], T0 + 1_000));
      admitted(store.reserve('g', [k], T0 + 999));
      const no = store.reserve('g', [k], T0 + 999);
      assert.equal(no.ok, false);
      assert.equal(no.ok === false && no.retryAfterMs, 1_001);
      assert.equal(store.reserve('g', [k], T0 + 1_500).ok, false);
      admitted(store.reserve('g', [k], T0 + 2_000));
    } finally {
      await store.close();
    }
  });

  test('ignores a reservation made by another store', async () => {
    const a = createMemoryStore();
    const b = createMemoryStore();
    try {
      const res = admitted(a.reserve('g', [rolling('k', MINUTE, 1)], T0));
      b.settle(res, true, T0);
      assert.equal(a.reserve('g', [rolling('k', MINUTE, 1)], T0 + 1).ok, false);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('throws CounterStoreError for a counter it cannot count: bad amount, max, window, kind or time', async () => {
    const store = createMemoryStore();
    try {
      const bad: CounterRequest[] = [
        rolling('a', MINUTE, 1, -1),
        rolling('a', MINUTE, 1, Number.NaN),
        rolling('a', MINUTE, 1, Infinity),
        rolling('a', MINUTE, 0),
        rolling('a', 0, 1),
        { key: 'a', kind: 'calendar', windowMs: Number.NaN, max: 1, amount: 1 },
        { key: 'a', kind: 'sliding' as CounterKind, windowMs: MINUTE, max: 1, amount: 1 },
      ];
      for (const c of bad) assert.throws(() => store.reserve('g', [c], T0), CounterStoreError, JSON.stringify(c));
      assert.throws(() => store.reserve('g', [rolling('a', MINUTE, 1)], Number.NaN), CounterStoreError);
      assert.equal(store.size, 0);
    } finally {
      await store.close();
    }
  });

  test('counts calls of the same millisecond together and still refunds each call only its own share', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    try {
      const reservations: Reservation[] = [];
      for (let i = 0; i < 1_000; i++) reservations.push(admitted(store.reserve('g', [rolling('a', 1_000, 10_000)], T0 + i / 10)));
      // A refund finds its coalesced entry and takes back its own share only.
      for (const r of reservations.slice(0, 995)) store.settle(r, true, T0 + 100);
      for (let i = 0; i < 9_995; i++) admitted(store.reserve('g', [rolling('a', 1_000, 10_000)], T0 + 100));
      assert.equal(store.reserve('g', [rolling('a', 1_000, 10_000)], T0 + 100).ok, false);
    } finally {
      await store.close();
    }
  });

  test('keeps every entry when a sweep shrinks the ring of a key whose burst has passed', async () => {
    // For each number of survivors: 40 entries a millisecond apart, all but `live` of them out of
    // the window when the sweep runs, then one call a millisecond checked against the plain sum.
    for (let live = 1; live <= 40; live++) {
      const store = createMemoryStore({ sweepIntervalMs: 0 });
      try {
        const windowMs = 100;
        const max = 45;
        const times: number[] = [];
        for (let i = 0; i < 40; i++) {
          admitted(store.reserve('g', [rolling('k', windowMs, max)], T0 + i));
          times.push(T0 + i);
        }
        let now = T0 + windowMs + 39 - live;
        store.sweep(now);
        for (let step = 0; step < 2 * windowMs; step++, now++) {
          const used = times.filter((t) => t > now - windowMs).length;
          const out = store.reserve('g', [rolling('k', windowMs, max, 3)], now);
          assert.equal(out.ok, used + 3 <= max, `${live} live after the sweep, +${now - T0} ms, ${used} used`);
          if (out.ok) times.push(now, now, now);
          else assert.equal(out.retryAfterMs, times.filter((t) => t > now - windowMs).sort((x, y) => x - y)[used + 3 - max - 1]! + windowMs - now);
        }
      } finally {
        await store.close();
      }
    }
  });

  test('keeps exact sums on a busy key through thousands of expiries and refunds', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    try {
      const windowMs = 100;
      const max = 150;
      const log: { time: number; amount: number; res: Reservation }[] = [];
      let refusals = 0;
      for (let ms = 0; ms < 3_000; ms++) {
        const now = T0 + ms;
        // Two calls in some milliseconds, amounts 1 to 3, every seventh admission refunded later.
        for (let call = 0; call < 1 + (ms % 5 === 0 ? 1 : 0); call++) {
          const amount = 1 + ((ms * 7 + call) % 3);
          const used = log.filter((e) => e.time > now - windowMs).reduce((a, e) => a + e.amount, 0);
          const out = store.reserve('g', [rolling('busy', windowMs, max, amount)], now);
          assert.equal(out.ok, used + amount <= max, `at +${ms} ms with ${used} used`);
          if (out.ok) log.push({ time: now, amount, res: out.reservation });
          else refusals++;
        }
        if (ms % 7 === 3 && log.length > 10) {
          const e = log.splice(log.length - 10, 1)[0]!;
          store.settle(e.res, true, now);
        }
      }
      assert.ok(refusals > 100, 'the limit was reached often');
    } finally {
      await store.close();
    }
  });
});

// ---- properties against a naive model --------------------------------------------------------

// A step of a random history. Amounts and picks are raw numbers, fitted to the scenario when run.
type Step =
  | { op: 'advance'; ms: number; perMille: number }
  | { op: 'reserve'; parts: { key: number; amount: number }[] }
  | { op: 'settle'; pick: number; refund: boolean }
  | { op: 'sweep' };

interface Scenario {
  windowMs: number;
  max: number[];
  start: number;
  steps: Step[];
}

const KEYS = 3;

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 3,
    // The clock moves by 0, by a few ms, by a whole window give or take one ms (so entries land
    // exactly on the edges), or by up to three windows; `perMille` is of the scenario's window.
    arbitrary: fc.oneof(
      fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 5 }), perMille: fc.constant(0) }),
      fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: -1, max: 1 }), perMille: fc.constant(1_000) }),
      fc.record({ op: fc.constant('advance' as const), ms: fc.constant(0), perMille: fc.integer({ min: 0, max: 3_000 }) }),
    ),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('reserve' as const),
      parts: fc.array(fc.record({ key: fc.integer({ min: 0, max: KEYS - 1 }), amount: fc.nat(40) }), { minLength: 1, maxLength: KEYS }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('settle' as const), pick: fc.nat(), refund: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ op: 'sweep' as const }) },
);

// Long logs: many small amounts under a large max while the clock creeps forward a millisecond or
// two, so a rolling key's ring fills, grows, wraps round many times and is shrunk by sweeps.
const longLogs: fc.Arbitrary<Scenario> = fc.record({
  windowMs: fc.integer({ min: 20, max: 150 }),
  max: fc.array(fc.integer({ min: 100, max: 400 }), { minLength: KEYS, maxLength: KEYS }),
  start: fc.integer({ min: 0, max: 100_000 }),
  steps: fc.array(
    fc.oneof(
      { weight: 8, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 2 }), perMille: fc.constant(0) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: -1, max: 1 }), perMille: fc.integer({ min: 0, max: 1_200 }) }) },
      {
        weight: 10,
        arbitrary: fc.record({
          op: fc.constant('reserve' as const),
          parts: fc.array(fc.record({ key: fc.constant(0), amount: fc.integer({ min: 0, max: 2 }) }), { minLength: 1, maxLength: 1 }),
        }),
      },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('settle' as const), pick: fc.nat(), refund: fc.boolean() }) },
      { weight: 1, arbitrary: fc.constant({ op: 'sweep' as const }) },
    ),
    { minLength: 100, maxLength: 800, size: 'max' },
  ),
});

const scenario: fc.Arbitrary<Scenario> = fc.record({
  windowMs: fc.oneof(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 1_000 })),
  max: fc.array(fc.integer({ min: 1, max: 10 }), { minLength: KEYS, maxLength: KEYS }),
  start: fc.integer({ min: 0, max: 100_000 }),
  steps: fc.array(step, { maxLength: 120, size: 'max' }),
});

interface Entry {
  key: number;
  time: number;
  amount: number;
  refunded: boolean;
}

interface Held {
  entries: Entry[];
  reservation: Reservation;
  settled: boolean;
}

// The naive model of one kind per key: a plain list of admitted entries. It knows nothing of the
// store's logs, coalescing, expiry or sweeps; it sums the list.
class Model {
  readonly entries: Entry[] = [];

  constructor(
    readonly kinds: readonly CounterKind[],
    readonly windowMs: number,
    readonly max: readonly number[],
  ) {}

  // What the counters of `key` hold against a new amount at `now`.
  used(key: number, now: number): number {
    const kind = this.kinds[key]!;
    let sum = 0;
    for (const e of this.entries) {
      if (e.key !== key || e.refunded) continue;
      if (kind === 'rolling' && e.time > now - this.windowMs) sum += e.amount;
      if (kind === 'calendar' && Math.floor(e.time / this.windowMs) === Math.floor(now / this.windowMs)) sum += e.amount;
      if (kind === 'in_flight') sum += e.amount;
    }
    return sum;
  }

  // The expected outcome of one call at `now`: undefined to admit, or the refusal.
  decide(parts: { key: number; amount: number }[], now: number): { index: number; retryAfterMs: number } | undefined {
    for (let i = 0; i < parts.length; i++) {
      const { key, amount } = parts[i]!;
      const max = this.max[key]!;
      if (amount === 0) continue;
      if (amount > max) return { index: i, retryAfterMs: Infinity };
      if (this.used(key, now) + amount <= max) continue;
      return { index: i, retryAfterMs: this.retryAfter(key, amount, now) };
    }
    return undefined;
  }

  // The smallest wait after which, with nothing else admitted meanwhile, the amount fits.
  retryAfter(key: number, amount: number, now: number): number {
    const kind = this.kinds[key]!;
    if (kind === 'in_flight') return NaN; // a hint; checked separately
    if (kind === 'calendar') return (Math.floor(now / this.windowMs) + 1) * this.windowMs - now;
    const times = this.entries.filter((e) => e.key === key && !e.refunded && e.time > now - this.windowMs).map((e) => e.time);
    for (const t of times.sort((a, b) => a - b)) {
      const wait = t + this.windowMs - now;
      if (this.used(key, now + wait) + amount <= this.max[key]!) return wait;
    }
    assert.fail('the model found no wait');
  }

  // The invariants over everything admitted and not refunded: at most max in every interval
  // [t, t + windowMs) that starts at an entry (the fullest intervals start at one), in every
  // calendar window, and held at once.
  checkInvariant(): void {
    for (let key = 0; key < this.kinds.length; key++) {
      const kind = this.kinds[key]!;
      const max = this.max[key]!;
      // Entries are in the order they were admitted, which is time order: the clock only advances.
      const live = this.entries.filter((e) => e.key === key && !e.refunded);
      if (kind === 'rolling') {
        let end = 0;
        let sum = 0;
        for (let start = 0; start < live.length; start++) {
          const from = live[start]!.time;
          while (end < live.length && live[end]!.time < from + this.windowMs) sum += live[end++]!.amount;
          assert.ok(sum <= max, `rolling key ${key}: ${sum} > ${max} in [${from}, ${from + this.windowMs})`);
          sum -= live[start]!.amount;
        }
      } else if (kind === 'calendar') {
        const perWindow = new Map<number, number>();
        for (const e of live) {
          const w = Math.floor(e.time / this.windowMs);
          perWindow.set(w, (perWindow.get(w) ?? 0) + e.amount);
        }
        for (const [w, sum] of perWindow) assert.ok(sum <= max, `calendar key ${key}: ${sum} > ${max} in window ${w}`);
      } else {
        const sum = live.reduce((a, e) => a + e.amount, 0);
        assert.ok(sum <= max, `in-flight key ${key}: ${sum} > ${max} held`);
      }
    }
  }
}

// Plays a scenario on a fresh store and the model side by side; throws at the first difference.
function play(kinds: readonly CounterKind[], s: Scenario): void {
  const store: MemoryStore = createMemoryStore({ sweepIntervalMs: 0 });
  const model = new Model(kinds, s.windowMs, s.max);
  const held: Held[] = [];
  const key = (k: number) => `k${k}`;
  let now = T0 + s.start;
  try {
    for (const st of s.steps) {
      if (st.op === 'advance') now += Math.max(0, st.ms + Math.floor((s.windowMs * st.perMille) / 1_000));
      else if (st.op === 'sweep') store.sweep(now);
      else if (st.op === 'settle') {
        if (held.length === 0) continue;
        // Earlier reservations, settled ones included: a second settle must change nothing.
        const h = held[st.pick % held.length]!;
        store.settle(h.reservation, st.refund, now);
        if (!h.settled) {
          h.settled = true;
          for (const e of h.entries) {
            if (st.refund || kinds[e.key] === 'in_flight') e.refunded = true;
          }
        }
      } else {
        const seen = new Set<number>();
        const parts = st.parts.filter((p) => !seen.has(p.key) && seen.add(p.key)).map((p) => ({ key: p.key, amount: p.amount % (s.max[p.key]! + 2) }));
        const counters: CounterRequest[] = parts.map((p) => ({
          key: key(p.key),
          kind: kinds[p.key]!,
          windowMs: kinds[p.key] === 'in_flight' ? 0 : s.windowMs,
          max: s.max[p.key]!,
          amount: p.amount,
        }));
        const want = model.decide(parts, now);
        const got = store.reserve('g', counters, now);
        const where = `at +${now - T0 - s.start} ms, ${JSON.stringify(parts)}`;
        if (want === undefined) {
          if (!got.ok) assert.fail(`the store refused what the model admits ${where}: #${got.index}, retry after ${got.retryAfterMs} ms`);
          const entries = parts.filter((p) => p.amount > 0).map((p) => ({ key: p.key, time: now, amount: p.amount, refunded: false }));
          model.entries.push(...entries);
          held.push({ entries, reservation: got.reservation, settled: false });
        } else {
          assert.ok(!got.ok, `the store admitted what the model refuses ${where}`);
          assert.equal(got.index, want.index, `refusing counter ${where}`);
          if (kinds[parts[want.index]!.key] === 'in_flight') assert.equal(got.retryAfterMs, Number.isNaN(want.retryAfterMs) ? 1_000 : Infinity);
          else assert.equal(got.retryAfterMs, want.retryAfterMs, `retryAfterMs ${where}`);
        }
      }
      model.checkInvariant();
    }
  } finally {
    void store.close();
  }
}

describe('memory counter store against a naive model (property)', () => {
  test('rolling: never more than max in any window of windowMs, and admits exactly what the model admits', () => {
    fc.assert(fc.property(scenario, (s) => play(['rolling', 'rolling', 'rolling'], s)), { numRuns: 300 });
  });

  test('rolling with long logs (a large max, small amounts, a slowly moving clock): the same', () => {
    fc.assert(fc.property(longLogs, (s) => play(['rolling', 'rolling', 'rolling'], s)), { numRuns: 60 });
  });

  test('calendar: never more than max in a window aligned to the epoch, and admits exactly what the model admits', () => {
    fc.assert(fc.property(scenario, (s) => play(['calendar', 'calendar', 'calendar'], s)), { numRuns: 300 });
  });

  test('rolling, calendar and in-flight counters together in one call are admitted all or none, as the model says', () => {
    fc.assert(fc.property(scenario, (s) => play(['rolling', 'calendar', 'in_flight'], s)), { numRuns: 300 });
  });
});
