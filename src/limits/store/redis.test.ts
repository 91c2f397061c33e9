import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import { CounterStoreError } from '../limiter.js';
import type { CounterKind, CounterRequest, CounterStore, Reservation, ReserveOutcome } from '../limiter.js';
import { counterStoreContract } from './contract.js';
import { createRedisStore } from './redis.js';
import type { RedisStoreOptions } from './redis.js';

const REDIS_URL = process.env.REDIS_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
const HAVE_REDIS_SERVER = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const DAY = 24 * 60 * MINUTE;
const T0 = 1_700_000_000_000;
// Every key this run writes starts with this, so parallel runs never meet and cleanup is exact.
const RUN = `pl-test-${randomBytes(5).toString('hex')}`;

if (REDIS_URL === undefined) {
  if (REQUIRED) {
    it('the Redis counter store is tested against REDIS_URL, which REQUIRE_SERVICES=1 makes mandatory', () => {
      assert.fail('REQUIRE_SERVICES=1 but REDIS_URL is not set');
    });
  } else {
    it('the Redis counter store is tested against REDIS_URL', { skip: 'REDIS_URL is not set (REQUIRE_SERVICES=1 makes this a failure)' }, () => {});
  }
} else {
  storeTests(REDIS_URL);
}

function storeTests(url: string): void {
  describe('Redis counter store', () => {
    const opened = new Map<CounterStore, string>();
    const children = new Set<ChildProcess>();
    let admin: Redis | undefined;
    let prefixes = 0;

    // A fresh key prefix of this run.
    const prefix = () => `${RUN}-${++prefixes}:`;
    function open(extra: Partial<RedisStoreOptions> = {}): CounterStore {
      const options: RedisStoreOptions = { url, keyPrefix: prefix(), clock: 'caller', ...extra };
      const store = createRedisStore(options);
      opened.set(store, options.keyPrefix!);
      return store;
    }
    // The key prefix a store of this run writes under.
    const prefixOf = (store: CounterStore) => opened.get(store)!;
    function redis(): Redis {
      admin ??= new Redis(url);
      return admin;
    }

    after(async () => {
      for (const child of children) child.kill('SIGKILL');
      await Promise.all([...opened.keys()].map((s) => s.close()));
      if (admin !== undefined) {
        // Keys expire by themselves, but a test run should not leave a day's worth behind.
        const keys: string[] = [];
        let cursor = '0';
        do {
          const [next, batch] = await admin.scan(cursor, 'MATCH', `${RUN}-*`, 'COUNT', 1000);
          cursor = next;
          keys.push(...batch);
        } while (cursor !== '0');
        for (let i = 0; i < keys.length; i += 500) await admin.unlink(...keys.slice(i, i + 500));
        admin.disconnect();
      }
    });

    counterStoreContract(
      'redis',
      // The contract holds in-flight slots across an hour of its `now`; in production they expire
      // after inFlightTtlMs (a dead gateway's slots), so give the contract a day.
      async () => open({ inFlightTtlMs: DAY }),
      { clockFree: true },
    );

    // Every command clients sent Redis (none run by scripts) while `body` ran, ending with a marker
    // sent after it, so nothing `body` sent can arrive after the watch has stopped.
    async function watch(body: () => Promise<void>): Promise<Array<{ source: string; args: string[] }>> {
      const monitor = await redis().monitor();
      const seen: Array<{ source: string; args: string[] }> = [];
      const marker = `watch-end-${randomBytes(6).toString('hex')}`;
      let timer: NodeJS.Timeout | undefined;
      try {
        const ended = new Promise<void>((resolve, reject) => {
          timer = setTimeout(() => reject(new Error('the MONITOR stream never showed the end marker')), 5_000);
          monitor.on('monitor', (_time: string, args: string[], source: string) => {
            if (args[0]?.toLowerCase() === 'echo' && args[1] === marker) resolve();
            else if (source !== 'lua') seen.push({ source, args });
          });
        });
        await body();
        await redis().echo(marker);
        await ended;
      } finally {
        clearTimeout(timer);
        monitor.disconnect();
      }
      return seen;
    }
    const mentioning = (seen: Array<{ source: string; args: string[] }>, text: string) =>
      seen.filter((c) => c.args.some((a) => a.includes(text)));

    const counter = (kind: CounterKind, key: string, windowMs: number, max: number) => (amount: number): CounterRequest => ({
      key,
      kind,
      windowMs: kind === 'in_flight' ? 0 : windowMs,
      max,
      amount,
    });

    async function admitted(p: ReserveOutcome | Promise<ReserveOutcome>): Promise<Reservation> {
      const out = await p;
      if (!out.ok) assert.fail(`expected an admission, refused by #${out.index} (retry after ${out.retryAfterMs} ms)`);
      return out.reservation;
    }
    async function refused(p: ReserveOutcome | Promise<ReserveOutcome>): Promise<{ index: number; retryAfterMs: number }> {
      const out = await p;
      if (out.ok) assert.fail('expected a refusal, was admitted');
      return out;
    }

    describe('one round trip', () => {
      it('sends one script call per reserve, whatever the number of counters, and nothing else', async () => {
        // One connection, so the first reserve has loaded the script on every connection the store has.
        const store = open({ connections: 1 });
        const a = counter('rolling', 'a', MINUTE, 100);
        const b = counter('calendar', 'b', DAY, 100);
        const c = counter('in_flight', 'c', 0, 100);
        await admitted(store.reserve('srv', [a(1)], T0)); // connects and loads the script
        const tag = prefixOf(store);
        const seen = await watch(async () => {
          await admitted(store.reserve('srv', [a(1), b(1), c(1)], T0 + 1));
          await admitted(store.reserve('srv', [a(1), b(1)], T0 + 2));
          await refused(store.reserve('srv', [a(1), b(1), c(200)], T0 + 3));
        });
        const ours = mentioning(seen, tag);
        assert.equal(ours.length, 3);
        for (const cmd of ours) assert.match(cmd.args[0]!, /^evalsha$/i);
        const sources = new Set(ours.map((c) => c.source));
        assert.equal(seen.filter((c) => sources.has(c.source)).length, 3, 'no other command from the store connection');
      });

      it('settles a kept call without in-flight counters with no round trip, and anything else with one', async () => {
        const store = open({ connections: 1 });
        const a = counter('rolling', 'a', MINUTE, 100);
        const b = counter('calendar', 'b', DAY, 100);
        const c = counter('in_flight', 'c', 0, 100);
        const kept = await admitted(store.reserve('srv', [a(1), b(1)], T0));
        const refunded = await admitted(store.reserve('srv', [a(1), b(1)], T0 + 1));
        const held = await admitted(store.reserve('srv', [a(1), b(1), c(1)], T0 + 2));
        const tag = prefixOf(store);
        const seen = await watch(async () => {
          assert.equal(store.settle(kept, false, T0 + 3), undefined, 'answered without a promise');
          await store.settle(refunded, true, T0 + 4);
          await store.settle(held, false, T0 + 5);
          await store.settle(held, true, T0 + 6); // a second settle: nothing to send
        });
        const sent = mentioning(seen, tag);
        assert.equal(sent.length, 2);
        // The first use of a script on a connection sends its text (EVAL), later uses its SHA.
        for (const cmd of sent) assert.match(cmd.args[0]!, /^eval(sha)?$/i);
      });
    });

    describe('connections', () => {
      // The store's connections as Redis lists them: id and last command, by the name they were given.
      async function connectionsNamed(name: string): Promise<Array<{ id: string; cmd: string }>> {
        const list = (await redis().client('LIST')) as string;
        return list
          .split('\n')
          .map((line) => Object.fromEntries(line.split(' ').map((field) => field.split('=', 2) as [string, string])))
          .filter((f) => f.name === name)
          .map((f) => ({ id: f.id!, cmd: f.cmd! }));
      }
      async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
        for (let i = 0; i < 200; i++) {
          const v = await get();
          if (ok(v)) return v;
          await sleep(10);
        }
        assert.fail(`gave up waiting for ${what}`);
      }

      it('sends reserves over its connections in turn, and keeps admitting over the others while one reconnects', async () => {
        const name = `${RUN}-turns`;
        const store = open({ connections: 3, connectionName: name });
        const a = counter('rolling', 'a', MINUTE, 1_000);
        await until('three connections', () => connectionsNamed(name), (c) => c.length === 3);
        for (let i = 0; i < 12; i++) await admitted(store.reserve('srv', [a(1)], T0 + i));
        const used = await connectionsNamed(name);
        assert.deepEqual(used.map((c) => c.cmd), ['evalsha', 'evalsha', 'evalsha'], 'every connection ran reserves');

        await redis().client('KILL', 'ID', used[0]!.id);
        await sleep(20);
        for (let i = 0; i < 10; i++) await admitted(store.reserve('srv', [a(1)], T0 + 100 + i));
        const back = await until('the lost connection to come back', () => connectionsNamed(name), (c) => c.length === 3);
        assert.ok(!back.some((c) => c.id === used[0]!.id), 'a new connection replaced the killed one');
      });

      it('refuses a number of connections that is not a positive whole number', () => {
        for (const connections of [0, -1, 1.5, Number.NaN]) {
          assert.throws(() => createRedisStore({ url, keyPrefix: prefix(), connections }), /connections must be a positive whole number/);
        }
      });
    });

    describe('keys', () => {
      it('carry the hash tag of the group on every key of a call, and expire by themselves', async () => {
        const store = open({ inFlightTtlMs: 30 * SECOND });
        const p = prefixOf(store);
        const group = 'we{ird}%grp';
        const now = T0 + 5 * 60 * MINUTE;
        await admitted(
          store.reserve(group, [counter('rolling', 'r{1}', MINUTE, 5)(1), counter('calendar', 'c', DAY, 5)(1), counter('in_flight', 'f', 0, 5)(1)], now),
        );
        const keys = (await redis().keys(`${p}*`)).sort();
        assert.equal(keys.length, 5, keys.join(', '));
        for (const key of keys) {
          // Redis hashes only what lies between the first `{` and the first `}` after it.
          const from = key.indexOf('{');
          const tag = key.slice(from + 1, key.indexOf('}', from + 1));
          assert.equal(tag, 'we%7Bird%7D%25grp', key);
          const ttl = await redis().pttl(key);
          assert.ok(ttl > 0, `${key} has PTTL ${ttl}`);
          const bound = key.includes(':roll') ? MINUTE : key.includes(':cal:') ? DAY - (now % DAY) : 30 * SECOND;
          assert.ok(ttl <= bound + MINUTE, `${key} has PTTL ${ttl}, more than its lifetime ${bound} plus a minute`);
        }
      });

      it("on the server's clock renew their expiry only when it falls short, and record it exactly", async () => {
        const store = open({ clock: 'redis', inFlightTtlMs: 30 * SECOND });
        const p = prefixOf(store);
        const call = [counter('rolling', 'r', 10 * SECOND, 100)(1), counter('in_flight', 'f', 0, 100)(1)];
        await admitted(store.reserve('g', call, 0));
        const first = await Promise.all([`${p}{g}:roll:r`, `${p}{g}:fly:f`].map((key) => redis().pexpiretime(key)));
        await sleep(20);
        await admitted(store.reserve('g', call, 0));
        for (const [i, name] of ['roll:r', 'fly:f'].entries()) {
          const [log, state] = [`${p}{g}:${name}`, `${p}{g}:${name.replace(':', '-state:')}`];
          const [logAt, stateAt, text] = await Promise.all([redis().pexpiretime(log), redis().pexpiretime(state), redis().get(state)]);
          assert.equal(logAt, first[i], `${log} kept its expiry`);
          assert.equal(stateAt, logAt, `${state} expires with its log`);
          assert.equal(Number(text?.split(' ')[3]), logAt, `${state} records the expiry`);
        }
        const [sec] = await redis().time();
        const serverNow = Number(sec) * 1000;
        // Long enough for what is counted (10 s window, 30 s holders) plus the margin, not more.
        assert.ok(first[0]! > serverNow + 10 * SECOND && first[0]! <= serverNow + 10 * SECOND + 2 * MINUTE, `log expires at ${first[0]}`);
        assert.ok(first[1]! > serverNow + 30 * SECOND && first[1]! <= serverNow + 30 * SECOND + 2 * MINUTE, `holders expire at ${first[1]}`);
      });

      it('keep groups apart however they are spelled: a brace cannot end the tag early, the empty group has a tag too', async () => {
        const store = open();
        const p = prefixOf(store);
        const k = counter('calendar', 'k', DAY, 1);
        for (const group of ['', '%', 'a}b', 'a%7Db', '{', '}']) await admitted(store.reserve(group, [k(1)], T0));
        const keys = await redis().keys(`${p}*`);
        const tags = keys.map((key) => key.slice(key.indexOf('{') + 1, key.indexOf('}', key.indexOf('{') + 1)));
        assert.equal(new Set(tags).size, 6, tags.join(' '));
        for (const tag of tags) assert.ok(tag.length > 0 && !tag.includes('{'), tag);
      });

      it('refuses a key prefix with a brace in it', () => {
        assert.throws(() => createRedisStore({ url, keyPrefix: 'pl{x}:' }), /keyPrefix/);
      });
    });

    describe('fractional amounts', () => {
      it('counts in millionths, so 0.1 + 0.2 + 0.7 fills a max of 1 exactly, for every kind', async () => {
        const store = open();
        for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
          for (const order of [[0.1, 0.2, 0.7], [0.7, 0.2, 0.1]]) {
            const k = counter(kind, `frac-${kind}-${order[0]}`, MINUTE, 1);
            const held: Reservation[] = [];
            for (const [i, amount] of order.entries()) held.push(await admitted(store.reserve('g', [k(amount)], T0 + i)));
            await refused(store.reserve('g', [k(0.000001)], T0 + 5));
            // Refunding the 0.2 makes room for exactly 0.2 again.
            await store.settle(held[1]!, true, T0 + 6);
            await refused(store.reserve('g', [k(0.200001)], T0 + 7));
            await admitted(store.reserve('g', [k(0.2)], T0 + 8));
            await refused(store.reserve('g', [k(0.000001)], T0 + 9));
          }
        }
      });

      it('ten calls of 0.1 fill a max of 1, and the stored sum is a whole number of millionths', async () => {
        const store = open();
        const p = prefixOf(store);
        const k = counter('rolling', 'tenths', MINUTE, 1);
        for (let i = 0; i < 10; i++) await admitted(store.reserve('g', [k(0.1)], T0 + i));
        assert.equal((await refused(store.reserve('g', [k(0.1)], T0 + 10))).retryAfterMs, MINUTE - 10);
        assert.equal((await redis().get(`${p}{g}:roll-state:tenths`))?.split(' ')[0], '1000000');
        // Subtracting the tenths as they leave is exact too: nine leave, 0.1 stays, 0.9 fits exactly.
        await admitted(store.reserve('g', [k(0.1)], T0 + MINUTE));
        await admitted(store.reserve('g', [k(0.9)], T0 + MINUTE + 9));
        assert.equal((await redis().get(`${p}{g}:roll-state:tenths`))?.split(' ')[0], '1000000');
        await refused(store.reserve('g', [k(0.000001)], T0 + MINUTE + 10));
      });

      it('counts entries leaving a log of equal amounts by number, and stays exact once one amount differs', async () => {
        const store = open();
        const p = prefixOf(store);
        const state = `${p}{g}:roll-state:units`;
        const k = counter('rolling', 'units', SECOND, 10);
        for (let i = 0; i < 4; i++) await admitted(store.reserve('g', [k(2)], T0 + i * 100));
        assert.equal((await redis().get(state))?.split(' ')[4], '2000000', 'every entry counts 2');
        // Two leave (at 0 and 100 ms) by count alone: 4 + 6 fills 10 exactly.
        await admitted(store.reserve('g', [k(6)], T0 + SECOND + 150));
        assert.equal((await redis().get(state))?.split(' ')[4], '-1', 'a 6 among the 2s makes the log mixed');
        await refused(store.reserve('g', [k(0.000001)], T0 + SECOND + 160));
        // The 2s at 200 and 300 ms leave, the 6 stays: 6 + 4 fills it again.
        await admitted(store.reserve('g', [k(4)], T0 + SECOND + 350));
        await refused(store.reserve('g', [k(0.000001)], T0 + SECOND + 360));
      });

      it('rebuilds a log state written in an older form from the log itself', async () => {
        const store = open();
        const p = prefixOf(store);
        const k = counter('rolling', 'old', MINUTE, 3);
        await admitted(store.reserve('g', [k(1)], T0));
        await admitted(store.reserve('g', [k(1)], T0 + 1));
        // The four-field state earlier versions wrote, with a sum that is wrong on purpose.
        await redis().set(`${p}{g}:roll-state:old`, `0 ${T0} ${T0 + 1} 0`, 'KEEPTTL');
        await admitted(store.reserve('g', [k(1)], T0 + 2));
        await refused(store.reserve('g', [k(1)], T0 + 3));
      });

      it('agrees with an exact model over random calls, refunds and time steps (property)', async () => {
        await checkAgainstModel({ overLimitCacheSize: 0 }, true);
      });

      it('admits and refuses exactly as the model does with the over-limit memory on, too (property)', async () => {
        await checkAgainstModel({}, false);
      });
    });

    // Random calls against three counters (rolling, calendar, in-flight) with fractional amounts,
    // random refunds and settles, time moving forward by random steps; each outcome is compared with
    // a plain model in whole millionths. `exact` also compares which counter refused and the wait.
    async function checkAgainstModel(extra: Partial<RedisStoreOptions>, exact: boolean): Promise<void> {
      const store = open({ inFlightTtlMs: DAY, ...extra });
      const amounts = [0, 0.000001, 0.05, 0.1, 0.2, 0.3, 0.7, 1, 1.5];
      const op = fc.oneof(
        fc.record({
          type: fc.constant('reserve' as const),
          step: fc.integer({ min: 0, max: 400 }),
          use: fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.constantFrom(...amounts)), { minLength: 1, maxLength: 3 }),
        }),
        fc.record({ type: fc.constant('settle' as const), pick: fc.nat(), refund: fc.boolean() }),
      );
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
          run++;
          const shapes = [
            { kind: 'rolling' as const, windowMs: 1_000, max: 1 },
            { kind: 'calendar' as const, windowMs: 700, max: 2 },
            { kind: 'in_flight' as const, windowMs: 0, max: 2 },
          ];
          const model = new Model();
          let now = T0 + run * 10_000_000 + 123;
          const pending: Array<{ store: Reservation; model: number }> = [];
          for (const o of ops) {
            if (o.type === 'settle') {
              if (pending.length === 0) continue;
              const [r] = pending.splice(o.pick % pending.length, 1);
              await store.settle(r!.store, o.refund, now);
              model.settle(r!.model, o.refund);
              continue;
            }
            now += o.step;
            const seen = new Set<number>();
            const counters: CounterRequest[] = [];
            for (const [which, amount] of o.use) {
              if (seen.has(which)) continue;
              seen.add(which);
              counters.push({ key: `m${run}-${which}`, ...shapes[which]!, amount });
            }
            const want = model.reserve(counters, now);
            const got = await store.reserve('model', counters, now);
            const where = `at +${now - T0 - run * 10_000_000 - 123} ms, ${counters.map((c) => `${c.kind}+${c.amount}`).join(' ')}`;
            assert.equal(got.ok, want.ok, where);
            if (got.ok && want.ok) pending.push({ store: got.reservation, model: want.id });
            if (exact && !got.ok && !want.ok) assert.deepEqual([got.index, got.retryAfterMs], [want.index, want.retryAfterMs], where);
          }
        }),
        { numRuns: 60 },
      );
    }

    describe('over-limit memory', () => {
      it('refuses a counter Redis has just refused without a round trip, with the remaining wait', async () => {
        const store = open();
        const tag = prefixOf(store);
        const full = counter('rolling', 'full', MINUTE, 2);
        const other = counter('rolling', 'other', MINUTE, 100);
        await admitted(store.reserve('g', [full(1)], T0));
        await admitted(store.reserve('g', [full(1)], T0 + 1));
        assert.equal((await refused(store.reserve('g', [full(1)], T0 + 2))).retryAfterMs, MINUTE - 2);
        const seen = await watch(async () => {
          assert.deepEqual(await refused(store.reserve('g', [full(1)], T0 + SECOND)), { ok: false, index: 0, retryAfterMs: MINUTE - SECOND });
          assert.deepEqual(await refused(store.reserve('g', [other(1), full(2)], T0 + 2 * SECOND)), { ok: false, index: 1, retryAfterMs: MINUTE - 2 * SECOND });
        });
        assert.equal(mentioning(seen, tag).length, 0);
        // Once the wait is over, Redis is asked again (and the oldest entry has left).
        await admitted(store.reserve('g', [full(1)], T0 + MINUTE));
      });

      it('asks Redis again for a smaller amount, after a refund by this process, and for any in-flight refusal', async () => {
        const store = open();
        const tag = prefixOf(store);
        const budget = counter('calendar', 'budget', DAY, 10);
        const slots = counter('in_flight', 'slots', 0, 1);
        const spent = await admitted(store.reserve('g', [budget(8)], T0));
        await refused(store.reserve('g', [budget(5)], T0 + 1));
        const held = await admitted(store.reserve('g', [slots(1)], T0 + 2));
        await refused(store.reserve('g', [slots(1)], T0 + 3));
        let seen = await watch(async () => {
          await refused(store.reserve('g', [budget(5)], T0 + 4)); // remembered
          await admitted(store.reserve('g', [budget(2)], T0 + 5)); // smaller: asks
          await refused(store.reserve('g', [slots(1)], T0 + 6)); // in-flight: asks
        });
        assert.equal(mentioning(seen, tag).length, 2);
        await refused(store.reserve('g', [budget(5)], T0 + 7));
        await store.settle(spent, true, T0 + 8);
        await store.settle(held, false, T0 + 8);
        seen = await watch(async () => {
          await admitted(store.reserve('g', [budget(5)], T0 + 9));
          await admitted(store.reserve('g', [slots(1)], T0 + 9));
        });
        assert.equal(mentioning(seen, tag).length, 2);
      });

      it('is bounded: beyond overLimitCacheSize the oldest refusals are forgotten', async () => {
        const store = open({ overLimitCacheSize: 2 });
        const tag = prefixOf(store);
        const keys = ['a', 'b', 'c'].map((name) => counter('calendar', name, DAY, 1));
        for (const k of keys) {
          await admitted(store.reserve('g', [k(1)], T0));
          await refused(store.reserve('g', [k(1)], T0 + 1));
        }
        const seen = await watch(async () => {
          await refused(store.reserve('g', [keys[2]!(1)], T0 + 2)); // remembered
          await refused(store.reserve('g', [keys[0]!(1)], T0 + 2)); // forgotten: asks
        });
        assert.equal(mentioning(seen, tag).length, 1);
      });
    });

    describe('replicas', () => {
      it('two stores on one Redis, as two gateway replicas, admit exactly 20 of 60 concurrent calls on a max-20 counter', async () => {
        const keyPrefix = prefix();
        const replicas = [open({ keyPrefix, clock: 'redis' }), open({ keyPrefix, clock: 'redis' })];
        for (const kind of ['rolling', 'calendar', 'in_flight'] as const) {
          const k = counter(kind, `shared-${kind}`, MINUTE, 20);
          const outcomes = await Promise.all(Array.from({ length: 60 }, (_, i) => replicas[i % 2]!.reserve('srv', [k(1)], Date.now())));
          assert.equal(outcomes.filter((o) => o.ok).length, 20, kind);
        }
      });

      it("with clock 'redis' count on the server's time, so replicas whose clocks disagree by years still agree", async () => {
        const keyPrefix = prefix();
        const a = open({ keyPrefix, clock: 'redis' });
        const b = open({ keyPrefix, clock: 'redis' });
        const [sec] = await redis().time();
        const serverNow = Number(sec) * 1000;
        const rolling = counter('rolling', 'r', MINUTE, 2);
        const day = counter('calendar', 'd', DAY, 2);
        const first = await admitted(a.reserve('srv', [rolling(1), day(1)], 0));
        await admitted(b.reserve('srv', [rolling(1), day(1)], 9e12));
        const no = await refused(a.reserve('srv', [rolling(1)], 5e12));
        assert.ok(no.retryAfterMs > MINUTE - 5 * SECOND && no.retryAfterMs <= MINUTE, `retry after ${no.retryAfterMs}`);
        const score = (await redis().zrange(`${keyPrefix}{srv}:roll:r`, 0, 0, 'WITHSCORES'))[1];
        assert.ok(Math.abs(Number(score) - serverNow) < 5 * SECOND, `entry dated ${score}, server time ${serverNow}`);
        const toMidnight = DAY - (serverNow % DAY);
        const noDay = await refused(b.reserve('srv', [day(1)], 1));
        assert.ok(Math.abs(noDay.retryAfterMs - toMidnight) < 5 * SECOND, `retry after ${noDay.retryAfterMs}, midnight in ${toMidnight}`);
        // A refund finds the window and the entry the server's clock chose.
        await a.settle(first, true, 42);
        await admitted(a.reserve('srv', [rolling(1), day(1)], 7));
        // The other replica still remembers its own refusal of the day counter: a refund elsewhere
        // leaves it strict until its retry hint has passed (the documented price of the memory).
        await refused(b.reserve('srv', [day(1)], 7));
      });
    });

    describe('log upkeep', () => {
      it('keeps a log it trimmed in step with its sum when a later counter of the call refuses', async () => {
        const store = open();
        const a = counter('rolling', 'trimmed', SECOND, 2);
        const b = counter('calendar', 'full', DAY, 1);
        await admitted(store.reserve('g', [a(1), b(1)], T0));
        await admitted(store.reserve('g', [a(1)], T0 + 800));
        // The entry at T0 leaves while b refuses the call.
        assert.equal((await refused(store.reserve('g', [a(1), b(1)], T0 + 1_500))).index, 1);
        await admitted(store.reserve('g', [a(1)], T0 + 1_501));
        assert.equal((await refused(store.reserve('g', [a(1)], T0 + 1_502))).retryAfterMs, 298);
      });

      it('trims a log longer than one batch of entries in one call', async () => {
        const store = open();
        const a = counter('rolling', 'long', SECOND, 1_000);
        for (let i = 0; i < 100; i++) await admitted(store.reserve('g', [a(10)], T0 + i));
        await refused(store.reserve('g', [a(1)], T0 + 100));
        // At T0 + 1070 the first 71 entries have left: 290 counted, 710 free.
        await admitted(store.reserve('g', [a(710)], T0 + 1_070));
        assert.equal((await refused(store.reserve('g', [a(1)], T0 + 1_070))).retryAfterMs, 1);
      });
    });

    describe('a clock that steps back', () => {
      it('dates a rolling entry no earlier than the newest one, so it cannot leave the window too soon', async () => {
        const store = open();
        const k = counter('rolling', 'back', MINUTE, 2);
        await admitted(store.reserve('g', [k(1)], T0 + 10 * SECOND));
        await admitted(store.reserve('g', [k(1)], T0));
        assert.equal((await refused(store.reserve('g', [k(1)], T0 + 10 * SECOND + MINUTE - 1))).retryAfterMs, 1);
        await admitted(store.reserve('g', [k(2)], T0 + 10 * SECOND + MINUTE));
      });

      it('keeps counting a calendar counter in the later window instead of going back to the earlier one', async () => {
        const store = open();
        const k = counter('calendar', 'back', MINUTE, 2);
        const boundary = Math.ceil(T0 / MINUTE) * MINUTE;
        const late = await admitted(store.reserve('g', [k(1)], boundary));
        await admitted(store.reserve('g', [k(1)], boundary - 1));
        assert.equal((await refused(store.reserve('g', [k(1)], boundary - 1))).retryAfterMs, MINUTE + 1);
        // A refund finds the window the amount went into, even though it was reserved before it.
        await store.settle(late, true, boundary - 1);
        await admitted(store.reserve('g', [k(1)], boundary + 1));
        await admitted(store.reserve('g', [k(2)], boundary + MINUTE));
      });
    });

    describe('in-flight expiry', () => {
      it('drops a slot nobody settled after inFlightTtlMs, so a dead gateway cannot hold it for ever', async () => {
        const store = open({ inFlightTtlMs: 5 * SECOND });
        const k = counter('in_flight', 'orphan', 0, 1);
        await admitted(store.reserve('g', [k(1)], T0));
        assert.equal((await refused(store.reserve('g', [k(1)], T0 + 5 * SECOND - 1))).retryAfterMs, SECOND);
        await admitted(store.reserve('g', [k(1)], T0 + 5 * SECOND));
      });
    });

    describe('when Redis is unreachable', { skip: HAVE_REDIS_SERVER || REQUIRED ? false : 'redis-server is not on PATH' }, () => {
      async function freePort(): Promise<number> {
        const server = createServer();
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const address = server.address();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        assert.ok(address !== null && typeof address === 'object');
        return address.port;
      }
      async function startRedis(port: number): Promise<ChildProcess> {
        const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
        children.add(child);
        child.once('exit', () => children.delete(child));
        for (let i = 0; i < 100; i++) {
          const up = await new Promise<boolean>((resolve) => {
            const socket = connect(port, '127.0.0.1', () => {
              socket.destroy();
              resolve(true);
            });
            socket.once('error', () => resolve(false));
          });
          if (up) return child;
          await sleep(50);
        }
        throw new Error(`redis-server did not start on port ${port}`);
      }
      async function stopRedis(child: ChildProcess): Promise<void> {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }
      async function timed<T>(p: Promise<T>): Promise<[T | unknown, number]> {
        const start = performance.now();
        try {
          return [await p, performance.now() - start];
        } catch (err) {
          return [err, performance.now() - start];
        }
      }

      it('rejects with CounterStoreError at once while Redis is down, and admits again by itself once it is back', async () => {
        const port = await freePort();
        let server = await startRedis(port);
        const errors: unknown[] = [];
        const store = open({ url: `redis://127.0.0.1:${port}`, onError: (err) => errors.push(err) });
        const k = counter('rolling', 'k', MINUTE, 1_000);
        const slot = counter('in_flight', 'slot', 0, 10);
        const held = await admitted(store.reserve('g', [k(1), slot(1)], T0));

        await stopRedis(server);
        for (let i = 0; i < 5; i++) {
          const [err, ms] = await timed(Promise.resolve(store.reserve('g', [k(1)], T0 + 1 + i)));
          assert.ok(err instanceof CounterStoreError, `attempt ${i}: ${String(err)}`);
          assert.ok(ms < 500, `attempt ${i} took ${ms.toFixed(0)} ms`);
        }
        // A settle while Redis is down resolves and reports the failure instead of rejecting.
        errors.length = 0;
        await store.settle(held, false, T0 + 10);
        assert.ok(errors.some((e) => e instanceof CounterStoreError), 'the failed settle was reported');

        server = await startRedis(port);
        let back: ReserveOutcome | undefined;
        for (let i = 0; i < 100 && back === undefined; i++) {
          try {
            back = await store.reserve('g', [k(1)], T0 + 20 + i);
          } catch (err) {
            assert.ok(err instanceof CounterStoreError);
            await sleep(100);
          }
        }
        assert.equal(back?.ok, true, 'admitted again after Redis came back');
        await stopRedis(server);
      });

      it('rejects within connectTimeoutMs when Redis is not there at start-up, and at once after that', async () => {
        const port = await freePort();
        const store = open({ url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 300 });
        const k = counter('calendar', 'k', DAY, 1);
        const [first, firstMs] = await timed(Promise.resolve(store.reserve('g', [k(1)], T0)));
        assert.ok(first instanceof CounterStoreError, String(first));
        assert.ok(firstMs < 1_000, `first reserve took ${firstMs.toFixed(0)} ms`);
        const [second, secondMs] = await timed(Promise.resolve(store.reserve('g', [k(1)], T0)));
        assert.ok(second instanceof CounterStoreError, String(second));
        assert.ok(secondMs < 50, `second reserve took ${secondMs.toFixed(0)} ms`);
      });
    });
  });
}

// The counting rules in whole millionths, kept as plainly as possible.
class Model {
  private readonly logs = new Map<string, Array<{ t: number; units: number; id: number }>>();
  private readonly windows = new Map<string, { index: number; units: number }>();
  private readonly holders = new Map<string, Map<number, number>>();
  private readonly added = new Map<number, Array<{ kind: CounterKind; key: string; units: number; index: number }>>();
  private ids = 0;

  reserve(counters: CounterRequest[], now: number): { ok: true; id: number } | { ok: false; index: number; retryAfterMs: number } {
    for (const [i, c] of counters.entries()) {
      const units = Math.round(c.amount * 1e6);
      const max = c.max * 1e6;
      if (units === 0) continue;
      if (units > max) return { ok: false, index: i, retryAfterMs: Infinity };
      if (c.kind === 'rolling') {
        const log = (this.logs.get(c.key) ?? []).filter((e) => e.t > now - c.windowMs);
        this.logs.set(c.key, log);
        let sum = log.reduce((s, e) => s + e.units, 0);
        if (sum + units > max) {
          for (const e of log) {
            sum -= e.units;
            if (sum + units <= max) return { ok: false, index: i, retryAfterMs: e.t + c.windowMs - now };
          }
        }
      } else if (c.kind === 'calendar') {
        const index = Math.floor(now / c.windowMs);
        const w = this.windows.get(c.key);
        const count = w !== undefined && w.index === index ? w.units : 0;
        if (count + units > max) return { ok: false, index: i, retryAfterMs: (index + 1) * c.windowMs - now };
      } else {
        const held = [...(this.holders.get(c.key)?.values() ?? [])].reduce((s, u) => s + u, 0);
        if (held + units > max) return { ok: false, index: i, retryAfterMs: 1_000 };
      }
    }
    const id = ++this.ids;
    const added: Array<{ kind: CounterKind; key: string; units: number; index: number }> = [];
    for (const c of counters) {
      const units = Math.round(c.amount * 1e6);
      if (units === 0) continue;
      if (c.kind === 'rolling') {
        this.logs.get(c.key)!.push({ t: now, units, id });
        added.push({ kind: c.kind, key: c.key, units, index: 0 });
      } else if (c.kind === 'calendar') {
        const index = Math.floor(now / c.windowMs);
        const w = this.windows.get(c.key);
        this.windows.set(c.key, { index, units: (w !== undefined && w.index === index ? w.units : 0) + units });
        added.push({ kind: c.kind, key: c.key, units, index });
      } else {
        let held = this.holders.get(c.key);
        if (held === undefined) this.holders.set(c.key, (held = new Map()));
        held.set(id, units);
        added.push({ kind: c.kind, key: c.key, units, index: 0 });
      }
    }
    this.added.set(id, added);
    return { ok: true, id };
  }

  settle(id: number, refund: boolean): void {
    for (const a of this.added.get(id) ?? []) {
      if (a.kind === 'in_flight') this.holders.get(a.key)?.delete(id);
      else if (!refund) continue;
      else if (a.kind === 'rolling') {
        const log = this.logs.get(a.key) ?? [];
        this.logs.set(a.key, log.filter((e) => e.id !== id));
      } else {
        const w = this.windows.get(a.key);
        if (w !== undefined && w.index === a.index) w.units = Math.max(0, w.units - a.units);
      }
    }
    this.added.delete(id);
  }
}
