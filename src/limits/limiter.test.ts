import assert from 'node:assert/strict';
import { test } from 'node:test';
import { evaluate, parsePolicy } from '../policy/index.js';
import type { LimitSpec } from '../policy/index.js';
import { CounterStoreError, Limiter, STORE_RULE, type CallContext, type CounterStore, type LimitOutcome } from './limiter.js';

import { createMemoryStore } from './store/memory.js';

const T0 = Date.UTC(2026, 10, 22, 12, 0, 0);

function limitsOf(tool: string, policy: Record<string, unknown>, args: unknown = {}): readonly LimitSpec[] {
  const p = parsePolicy(JSON.stringify({ version: '1', default: 'deny', ...policy }), 'policy.json');
  const d = evaluate({ tool, args }, p);
  assert.equal(d.effect, 'allow', d.reason);
  return d.limits;
}

function setup(store: CounterStore = createMemoryStore()) {
  let now = T0;
  const failures: unknown[] = [];
  const limiter = (onStoreError: 'deny' | 'allow' = 'deny') =>
    new Limiter(store, { onStoreError, now: () => now, onStoreFailure: (err) => failures.push(err) });
  return { limiter: limiter(), limiterWith: limiter, advance: (ms: number) => (now += ms), failures };
}

const ctx = (over: Partial<CallContext> = {}): CallContext => ({ server: 's', grant: 'alice', session: 'sess-1', args: {}, ...over });

async function reserve(l: Limiter, limits: readonly LimitSpec[], c: CallContext): Promise<LimitOutcome> {
  return l.reserve(limits, c);
}

const RATE = { tools: { t: { limits: [{ counter: 'rate', window: 'minute', max: 2, scope: 'grant' }] } } };

test('admits calls up to max per grant, and gives each grant its own count', async () => {
  const { limiter } = setup();
  const limits = limitsOf('t', RATE);
  for (let i = 0; i < 2; i++) assert.equal((await reserve(limiter, limits, ctx())).ok, true);
  assert.equal((await reserve(limiter, limits, ctx())).ok, false);
  assert.equal((await reserve(limiter, limits, ctx({ grant: 'bob' }))).ok, true);
});

test('says which limit refused, why, and in how many whole seconds to retry', async () => {
  const { limiter, advance } = setup();
  const limits = limitsOf('t', RATE);
  await reserve(limiter, limits, ctx());
  advance(20_000);
  await reserve(limiter, limits, ctx());
  advance(15_500);
  const o = await reserve(limiter, limits, ctx());
  assert.equal(o.ok, false);
  if (o.ok) return;
  assert.equal(o.rule, '/tools/t/limits/0');
  // The first call leaves the window 60 s after it was made: 24.5 s from now, rounded up.
  assert.equal(o.retryAfterSeconds, 25);
  assert.equal(o.reason, "rate limit 'rate' allows at most 2 calls per minute per agent grant; it is used up. Retry in 25 s");
});

test('answers synchronously over the memory store, so a call with limits pays no promise', () => {
  const { limiter } = setup();
  const o = limiter.reserve(limitsOf('t', RATE), ctx());
  assert.equal(o instanceof Promise, false);
});

test('counts session limits per session, and per grant for stateless clients that have none', async () => {
  const { limiter } = setup();
  const limits = limitsOf('t', { tools: { t: { limits: [{ counter: 'c', window: 'minute', max: 1, scope: 'session' }] } } });
  assert.equal((await reserve(limiter, limits, ctx({ session: 'a' }))).ok, true);
  assert.equal((await reserve(limiter, limits, ctx({ session: 'b' }))).ok, true);
  assert.equal((await reserve(limiter, limits, ctx({ session: undefined }))).ok, true);
  assert.equal((await reserve(limiter, limits, ctx({ session: undefined }))).ok, false);
  assert.equal((await reserve(limiter, limits, ctx({ session: undefined, grant: 'bob' }))).ok, true);
});

test('counts args.<path> limits per value of the argument, with a missing argument as a value of its own', async () => {
  const { limiter } = setup();
  const policy = { tools: { t: { limits: [{ counter: 'c', window: 'minute', max: 1, scope: 'args.channel.id' }] } } };
  const limits = limitsOf('t', policy);
  const on = (id: unknown) => ctx({ args: id === undefined ? {} : { channel: { id } } });
  assert.equal((await reserve(limiter, limits, on('general'))).ok, true);
  assert.equal((await reserve(limiter, limits, on('general'))).ok, false);
  assert.equal((await reserve(limiter, limits, on('random'))).ok, true);
  // The number 1 and the string "1" are different values.
  assert.equal((await reserve(limiter, limits, on(1))).ok, true);
  assert.equal((await reserve(limiter, limits, on('1'))).ok, true);
  assert.equal((await reserve(limiter, limits, on(undefined))).ok, true);
  assert.equal((await reserve(limiter, limits, on(undefined))).ok, false);
  // A huge value is keyed by its hash: still counted, without a huge key.
  const big = 'x'.repeat(10_000);
  assert.equal((await reserve(limiter, limits, on(big))).ok, true);
  assert.equal((await reserve(limiter, limits, on(big))).ok, false);
});

const QUOTA = {
  tools: { charge: { limits: [{ counter: 'spend', window: 'day', max: 100, scope: 'grant', increment_from: 'args.order.amount' }] } },
};

test('adds the amount of increment_from, and refuses the call that would go over', async () => {
  const { limiter } = setup();
  const limits = limitsOf('charge', QUOTA);
  const amount = (n: unknown) => ctx({ args: { order: { amount: n } } });
  assert.equal((await reserve(limiter, limits, amount(70))).ok, true);
  const over = await reserve(limiter, limits, amount(31));
  assert.equal(over.ok, false);
  if (!over.ok) assert.match(over.reason, /^quota 'spend' allows at most 100 of args\.order\.amount per day per agent grant; this call's 31 does not fit/);
  assert.equal((await reserve(limiter, limits, amount(30))).ok, true);
});

test('refuses a quota call whose amount is missing, not a number, or negative, naming the argument', async () => {
  const { limiter } = setup();
  const limits = limitsOf('charge', QUOTA);
  const cases: Array<[unknown, RegExp]> = [
    [undefined, /^args\.order\.amount is missing; the quota 'spend' counts it/],
    ['12', /^args\.order\.amount is the string "12", not a number of at least 0/],
    [null, /is null, not a number/],
    [[5], /is an array, not a number/],
    [-1, /is -1, not a number of at least 0/],
  ];
  for (const [value, reason] of cases) {
    const o = await reserve(limiter, limits, ctx({ args: { order: value === undefined ? {} : { amount: value } } }));
    assert.equal(o.ok, false);
    if (!o.ok) {
      assert.match(o.reason, reason);
      assert.equal(o.rule, '/tools/charge/limits/0');
      assert.equal(o.retryAfterSeconds, undefined);
    }
  }
});

test('says a call larger than the whole quota can never fit, without a retry time', async () => {
  const { limiter } = setup();
  const o = await reserve(limiter, limitsOf('charge', QUOTA), ctx({ args: { order: { amount: 101 } } }));
  assert.equal(o.ok, false);
  if (!o.ok) {
    assert.match(o.reason, /this call's 101 alone exceeds it$/);
    assert.equal(o.retryAfterSeconds, undefined);
  }
});

test("reserves the tool's limits and all_tools' together: a refusal by one consumes nothing of the other", async () => {
  const { limiter, advance } = setup();
  const policy = {
    all_tools: { limits: [{ counter: 'calls', window: 'minute', max: 1, scope: 'grant' }] },
    tools: { t: { limits: [{ counter: 'rate', window: 'hour', max: 1, scope: 'grant' }] }, u: {} },
  };
  assert.equal((await reserve(limiter, limitsOf('u', policy), ctx())).ok, true);
  const refused = await reserve(limiter, limitsOf('t', policy), ctx());
  assert.equal(refused.ok, false);
  if (!refused.ok) assert.equal(refused.rule, '/all_tools/limits/0');
  // Once `calls` has room again, `t`'s hourly `rate` still has its one call: the refusal took none.
  advance(60_000);
  assert.equal((await reserve(limiter, limitsOf('t', policy), ctx())).ok, true);
});

test('counts a counter written for the tool and under all_tools once per call, under the smaller max', async () => {
  const { limiter } = setup();
  const policy = {
    all_tools: { limits: [{ counter: 'calls', window: 'minute', max: 5, scope: 'grant' }] },
    tools: { t: { limits: [{ counter: 'calls', window: 'minute', max: 3, scope: 'grant' }] } },
  };
  const limits = limitsOf('t', policy);
  assert.equal(limits.length, 2);
  for (let i = 0; i < 3; i++) assert.equal((await reserve(limiter, limits, ctx())).ok, true);
  const o = await reserve(limiter, limits, ctx());
  assert.equal(o.ok, false);
  if (!o.ok) assert.equal(o.rule, '/tools/t/limits/0');
});

test('keeps counters of different servers apart', async () => {
  const { limiter } = setup();
  const limits = limitsOf('t', RATE);
  for (let i = 0; i < 2; i++) await reserve(limiter, limits, ctx());
  assert.equal((await reserve(limiter, limits, ctx({ server: 'other' }))).ok, true);
});

test('gives the counts back when a call is settled as failed, and keeps them when it succeeded', async () => {
  const { limiter } = setup();
  const limits = limitsOf('t', RATE);
  const a = await reserve(limiter, limits, ctx());
  const b = await reserve(limiter, limits, ctx());
  assert.ok(a.ok && b.ok);
  limiter.settle(a.ticket, true);
  limiter.settle(b.ticket, false);
  assert.equal((await reserve(limiter, limits, ctx())).ok, true);
  assert.equal((await reserve(limiter, limits, ctx())).ok, false);
});

test('admits a call without limits without touching the store', async () => {
  const store: CounterStore = {
    name: 'exploding',
    reserve: () => {
      throw new Error('must not be called');
    },
    settle: () => {},
    close: async () => {},
  };
  const { limiter } = setup(store);
  const o = limiter.reserve([], ctx());
  assert.deepEqual(o, { ok: true, ticket: undefined });
});

function unreachable(kind: 'throws' | 'rejects'): CounterStore {
  return {
    name: 'down',
    reserve: () => {
      const err = new CounterStoreError('connection refused');
      if (kind === 'throws') throw err;
      return Promise.reject(err);
    },
    settle: () => Promise.reject(new CounterStoreError('connection refused')),
    close: async () => {},
  };
}

for (const kind of ['throws', 'rejects'] as const) {
  test(`refuses calls with limits when the store ${kind} and on_store_error is deny, reporting the failure`, async () => {
    const { limiterWith, failures } = setup(unreachable(kind));
    const o = await reserve(limiterWith('deny'), limitsOf('t', RATE), ctx());
    assert.equal(o.ok, false);
    if (!o.ok) {
      assert.equal(o.rule, STORE_RULE);
      assert.match(o.reason, /the rate-limit store is unavailable/);
    }
    assert.equal(failures.length, 1);
  });

  test(`admits calls uncounted when the store ${kind} and on_store_error is allow`, async () => {
    const { limiterWith, failures } = setup(unreachable(kind));
    const limiter = limiterWith('allow');
    const o = await reserve(limiter, limitsOf('t', RATE), ctx());
    assert.equal(o.ok, true);
    if (o.ok) limiter.settle(o.ticket, true);
    assert.equal(failures.length, 1);
  });
}

test('reports a settle that the store fails, without throwing', async () => {
  const failures: unknown[] = [];
  const store: CounterStore = { ...unreachable('rejects'), reserve: () => ({ ok: true, reservation: { store: 'x' } }) };
  const limiter = new Limiter(store, { onStoreError: 'deny', onStoreFailure: (err, during) => failures.push(during) });
  const o = await reserve(limiter, limitsOf('t', RATE), ctx());
  assert.ok(o.ok);
  limiter.settle(o.ticket, true);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(failures, ['settle']);
});
