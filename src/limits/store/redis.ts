/**
 * The Redis counter store: counters shared by every gateway process that points at one Redis.
 * Each reserve is one script call (one round trip); settle is at most one more.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { CounterStoreError } from '../limiter.js';
import type { CounterKind, CounterRequest, CounterStore, Reservation, ReserveOutcome } from '../limiter.js';
import { quitRedis } from '../../util/redis-quit.js';
import { RESERVE_LUA, SETTLE_LUA } from './redis-scripts.js';

export interface RedisStoreOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** Put before every key; default `pl:`. Must not contain `{` or `}` (they would steal the hash tag). */
  keyPrefix?: string;
  /**
   * Whose clock decides windows. `redis` (the default): the Redis server's, read inside each script,
   * so replicas with skewed clocks agree. `caller`: the `now` passed to reserve (tests, one host).
   */
  clock?: 'redis' | 'caller';
  /** How long an unsettled `in_flight` slot is held before it is dropped (a gateway died); default 10 minutes. */
  inFlightTtlMs?: number;
  /** Told about errors the store swallows: failed settles and connection errors. */
  onError?: (err: unknown) => void;
  /** Give up on one connection attempt after this long; default 2,000 ms. */
  connectTimeoutMs?: number;
  /** Reject a command that has had no answer after this long; default 1,000 ms. */
  commandTimeoutMs?: number;
  /** Most keys remembered as over their limit (see createRedisStore); 0 turns the memory off. Default 10,000. */
  overLimitCacheSize?: number;
  /** Connections to Redis, used in turn; default 2 (see createRedisStore). */
  connections?: number;
  /** What the connections call themselves (CLIENT SETNAME), for CLIENT LIST; default `policylayer-counters`. */
  connectionName?: string;
}

/**
 * A counter store in Redis (standalone; keys are already cluster-safe). Amounts are counted in
 * millionths: each amount is rounded to the nearest 0.000001 and sums are exact integers of
 * those, so 0.1 + 0.2 + 0.7 fills a max of 1 exactly.
 *
 * Keys look like `<prefix>{<group>}:<kind>:<key>`: all keys of one reserve share the hash tag of
 * its group (`{`, `}` and `%` in the group are percent-escaped), and every key written carries an
 * expiry of its window plus a margin, so idle counters vanish without a sweeper.
 *
 * When Redis refuses a `rolling` or `calendar` counter, the store remembers the counter as over
 * its limit until the retry hint has passed (by `now` with clock `caller`, by the local clock
 * otherwise) and refuses the same or a larger amount locally without a round trip. Only time can
 * lift such a refusal, except a refund: a refund settled by this process forgets the counter, one
 * settled by another replica does not, so the memory may refuse for up to the retry hint after a
 * remote refund. `in_flight` refusals are never remembered (a release can free a slot any time).
 * A remembered refusal is always one Redis would also give, but it names the remembered counter
 * even if an earlier counter of the call would refuse too, and its hint can be early when another
 * replica has since admitted a smaller amount; `overLimitCacheSize: 0` gives Redis's exact answers.
 *
 * While Redis is unreachable reserve rejects at once with CounterStoreError (nothing is queued);
 * the client reconnects by itself with backoff. At start-up the first reserves wait for the first
 * connection for up to `connectTimeoutMs`.
 *
 * Reserves go to `connections` connections in turn (default 2). Over one connection, the calls in
 * flight move in lockstep: Redis runs the whole pipeline while this process waits, then this
 * process handles every answer and sends the next pipeline while Redis waits, so the two take
 * turns on the machine's cores. Over two, one connection's pipeline runs while the other's answers
 * are handled: bench/limits-redis.ts went from about 13,000 to about 18,500 decisions/s with 64
 * in flight on this 2-core machine (more connections added nothing).
 */
export function createRedisStore(opts: RedisStoreOptions): CounterStore {
  return new RedisCounterStore(opts);
}

const UNITS_PER_AMOUNT = 1_000_000;
// Sums are formatted with Lua's %d (a signed 64-bit integer); staying well below keeps every sum
// representable. Below 2^53 units (9 billion whole amounts) they are also exact.
const MAX_UNITS = 2 ** 62;
// Expiry slack beyond the exact lifetime of a key, so rounding and the gap between the caller's
// and Redis's clocks never drop a key that still counts.
const EXPIRY_MARGIN_MS = 60_000;
const KIND_CODE: Record<CounterKind, string> = { rolling: 'r', calendar: 'c', in_flight: 'f' };
const KIND_SEGMENT: Record<CounterKind, readonly [string, string]> = {
  rolling: ['roll', 'roll-state'],
  calendar: ['cal', ''],
  in_flight: ['fly', 'fly-state'],
};

type ScriptClient = Redis & {
  plReserve(...args: string[]): Promise<unknown>;
  plSettle(...args: string[]): Promise<unknown>;
};

interface Counted {
  readonly kind: CounterKind;
  readonly windowMs: number;
  // the amount in millionths, as sent to Redis
  readonly units: string;
  // where this counter's keys start in the reservation's key list
  readonly keyAt: number;
}

class RedisReservation implements Reservation {
  readonly store = 'redis';
  settled = false;
  constructor(
    readonly owner: RedisCounterStore,
    readonly keys: readonly string[],
    readonly counted: readonly Counted[],
    // Per counter, the calendar window the amount went into (the server chose it with its own
    // clock, or kept a later window after the clock stepped back), so a refund finds it.
    readonly windows: readonly number[],
    // names this reservation's log entries and in-flight holders
    readonly id: string,
  ) {}
}

interface OverLimit {
  until: number;
  units: number;
  kind: CounterKind;
  windowMs: number;
  max: number;
}

class RedisCounterStore implements CounterStore {
  readonly name = 'redis';
  private readonly clients: ScriptClient[] = [];
  private turn = 0;
  private readonly prefix: string;
  private readonly callerClock: boolean;
  private readonly holdMs: string;
  private readonly onError: ((err: unknown) => void) | undefined;
  private readonly cacheSize: number;
  private readonly overLimit = new Map<string, OverLimit>();
  private readonly tags = new Map<string, string>();
  private readonly idPrefix = randomBytes(6).toString('base64url') + '.';
  private seq = 0;
  // pending until the first connection is ready or the connect timeout passes
  private startup: Promise<void> | undefined;

  constructor(opts: RedisStoreOptions) {
    this.prefix = opts.keyPrefix ?? 'pl:';
    if (/[{}]/.test(this.prefix)) throw new TypeError(`keyPrefix must not contain { or }: ${JSON.stringify(this.prefix)}`);
    this.callerClock = opts.clock === 'caller';
    const holdMs = opts.inFlightTtlMs ?? 600_000;
    if (!(holdMs > 0) || !Number.isFinite(holdMs)) throw new TypeError(`inFlightTtlMs must be a positive number of ms, not ${holdMs}`);
    this.holdMs = String(Math.ceil(holdMs));
    this.onError = opts.onError;
    this.cacheSize = Math.max(0, opts.overLimitCacheSize ?? 10_000);
    const connectTimeout = opts.connectTimeoutMs ?? 2_000;

    const connections = opts.connections ?? 2;
    if (!Number.isInteger(connections) || connections < 1) throw new TypeError(`connections must be a positive whole number, not ${connections}`);
    for (let i = 0; i < connections; i++) {
      const client = new Redis(opts.url, {
        enableAutoPipelining: true,
        // Fail fast while disconnected instead of queueing decisions for an unknown time, and never
        // resend a reserve that may already have run (it would count twice).
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
        connectTimeout,
        commandTimeout: opts.commandTimeoutMs ?? 1_000,
        retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000),
        connectionName: opts.connectionName ?? 'policylayer-counters',
      }) as ScriptClient;
      client.defineCommand('plReserve', { lua: RESERVE_LUA });
      client.defineCommand('plSettle', { lua: SETTLE_LUA });
      // Without a listener ioredis prints connection errors itself; the caller decides about logging.
      client.on('error', (err: unknown) => this.onError?.(err));
      this.clients.push(client);
    }

    // Start-up is over once every connection is ready or has given up, or the timeout passed.
    this.startup = new Promise<void>((resolve) => {
      let waiting = this.clients.length;
      const timer = setTimeout(() => done(), connectTimeout);
      timer.unref();
      const done = () => {
        clearTimeout(timer);
        for (const c of this.clients) {
          c.off('ready', one);
          c.off('end', one);
        }
        this.startup = undefined;
        resolve();
      };
      const one = () => {
        if (--waiting === 0) done();
      };
      for (const c of this.clients) {
        c.once('ready', one);
        c.once('end', one);
      }
    });
  }

  /** The next connection in turn that is ready, if any is. */
  private ready(): ScriptClient | undefined {
    const n = this.clients.length;
    for (let i = 0; i < n; i++) {
      const c = this.clients[this.turn]!;
      this.turn = this.turn + 1 === n ? 0 : this.turn + 1;
      if (c.status === 'ready') return c;
    }
    return undefined;
  }

  reserve(group: string, counters: readonly CounterRequest[], now: number): ReserveOutcome | Promise<ReserveOutcome> {
    const n = counters.length;
    let localNow: number;
    if (this.callerClock) {
      if (!Number.isFinite(now)) return Promise.reject(new CounterStoreError(`now must be a finite number of ms, got ${now}`));
      localNow = Math.floor(now);
    } else {
      localNow = Date.now();
    }
    const tag = this.tagOf(group);
    const base = `${this.prefix}{${tag}}:`;
    const keys: string[] = [];
    const counted: Counted[] = [];
    const argv: string[] = [this.callerClock ? String(localNow) : '', '', String(EXPIRY_MARGIN_MS), this.holdMs];
    for (let i = 0; i < n; i++) {
      const c = counters[i]!;
      const problem = invalid(c);
      if (problem !== undefined) return Promise.reject(new CounterStoreError(`counter ${i} (${JSON.stringify(c.key)}): ${problem}`));
      const units = Math.round(c.amount * UNITS_PER_AMOUNT);
      const maxUnits = Math.min(Math.round(c.max * UNITS_PER_AMOUNT), MAX_UNITS);
      const [main, sum] = KIND_SEGMENT[c.kind];
      const mainKey = `${base}${main}:${c.key}`;

      if (this.overLimit.size > 0 && c.kind !== 'in_flight' && units > 0) {
        const hit = this.overLimit.get(mainKey);
        if (hit !== undefined) {
          if (hit.until <= localNow) {
            this.overLimit.delete(mainKey);
          } else if (units >= hit.units && c.kind === hit.kind && c.windowMs === hit.windowMs && c.max <= hit.max) {
            return { ok: false, index: i, retryAfterMs: hit.until - localNow };
          }
        }
      }

      counted.push({ kind: c.kind, windowMs: c.windowMs, units: String(units), keyAt: keys.length });
      keys.push(mainKey);
      if (sum !== '') keys.push(`${base}${sum}:${c.key}`);
      argv.push(KIND_CODE[c.kind], c.kind === 'in_flight' ? '0' : String(c.windowMs), String(maxUnits), String(units));
    }
    if (n === 0) return { ok: true, reservation: new RedisReservation(this, keys, counted, [], '') };

    const id = this.idPrefix + (this.seq++).toString(36);
    argv[1] = id;
    const run = (client: ScriptClient): Promise<ReserveOutcome> =>
      client.plReserve(String(keys.length), ...keys, ...argv).then(
        (reply) => this.outcome(reply, counters, keys, counted, id, localNow),
        (err: unknown) => {
          throw new CounterStoreError(`Redis counter store: ${errorText(err)}`, { cause: err });
        },
      );
    const client = this.ready();
    if (client !== undefined) return run(client);
    if (this.startup !== undefined) {
      return this.startup.then(() => {
        const late = this.ready();
        if (late !== undefined) return run(late);
        throw this.notConnected();
      });
    }
    return Promise.reject(this.notConnected());
  }

  settle(reservation: Reservation, refund: boolean, _now: number): void | Promise<void> {
    if (!(reservation instanceof RedisReservation) || reservation.owner !== this || reservation.settled) return;
    reservation.settled = true;
    const keys: string[] = [];
    const argv: string[] = [];
    const counted = reservation.counted;
    for (let i = 0; i < counted.length; i++) {
      const c = counted[i]!;
      if (c.units === '0' || (!refund && c.kind !== 'in_flight')) continue;
      const key = reservation.keys[c.keyAt]!;
      if (c.kind === 'calendar') {
        keys.push(key);
        argv.push('c', `${reservation.windows[i]} ${c.windowMs}`, c.units);
        // This process's own refund is the one thing besides time that can make room.
        this.overLimit.delete(key);
      } else {
        keys.push(key, reservation.keys[c.keyAt + 1]!);
        argv.push(KIND_CODE[c.kind], `${reservation.id}:${c.units}`, c.units);
        if (c.kind === 'rolling') this.overLimit.delete(key);
      }
    }
    if (keys.length === 0) return;
    // With no connection ready the command fails at once (no offline queue), and is reported.
    const client = this.ready() ?? this.clients[0]!;
    return client.plSettle(String(keys.length), ...keys, ...argv).then(
      () => undefined,
      (err: unknown) => {
        this.onError?.(new CounterStoreError(`Redis counter store: settle failed: ${errorText(err)}`, { cause: err }));
      },
    );
  }

  async close(): Promise<void> {
    this.overLimit.clear();
    await Promise.all(this.clients.map(quitRedis));
  }

  private outcome(
    reply: unknown,
    counters: readonly CounterRequest[],
    keys: readonly string[],
    counted: readonly Counted[],
    id: string,
    localNow: number,
  ): ReserveOutcome {
    const r = Array.isArray(reply) && reply.every((v) => typeof v === 'number') ? (reply as number[]) : undefined;
    if (r !== undefined && r[0] === 1 && r.length === counted.length + 2) {
      if (this.overLimit.size > 0) {
        // Room was found after all (a smaller amount, a refund elsewhere): forget the refusal.
        for (const c of counted) if (c.kind !== 'in_flight') this.overLimit.delete(keys[c.keyAt]!);
      }
      return { ok: true, reservation: new RedisReservation(this, keys, counted, r.slice(2), id) };
    }
    const index = r?.[1] ?? -1;
    const wait = r?.[2] ?? -1;
    const c = counters[index];
    const at = counted[index];
    if (r === undefined || r[0] !== 0 || r.length !== 4 || c === undefined || at === undefined) {
      throw new CounterStoreError(`Redis counter store: unexpected reply ${JSON.stringify(reply)}`);
    }
    const retryAfterMs = wait < 0 ? Infinity : wait;
    if (c.kind !== 'in_flight' && retryAfterMs !== Infinity && this.cacheSize > 0) {
      this.remember(keys[at.keyAt]!, { until: localNow + retryAfterMs, units: Number(at.units), kind: c.kind, windowMs: c.windowMs, max: c.max });
    }
    return { ok: false, index, retryAfterMs };
  }

  private remember(key: string, entry: OverLimit): void {
    this.overLimit.delete(key);
    if (this.overLimit.size >= this.cacheSize) {
      // Map order is insertion order: drop from the old end, expired or not, down to 90% so the
      // sweep is paid once per many insertions.
      const keep = Math.floor(this.cacheSize * 0.9);
      for (const k of this.overLimit.keys()) {
        if (this.overLimit.size <= keep) break;
        this.overLimit.delete(k);
      }
    }
    this.overLimit.set(key, entry);
  }

  private tagOf(group: string): string {
    let tag = this.tags.get(group);
    if (tag === undefined) {
      // A hash tag ends at the first `}`, so braces are escaped; `%` too, so the escaping is
      // one-to-one. An empty tag would not be a tag at all, hence the lone `%` (never produced
      // by escaping) for the empty group.
      tag = group === '' ? '%' : group.replace(/[%{}]/g, (ch) => '%' + ch.charCodeAt(0).toString(16).toUpperCase());
      if (this.tags.size >= 1_000) this.tags.clear();
      this.tags.set(group, tag);
    }
    return tag;
  }

  private notConnected(): CounterStoreError {
    return new CounterStoreError(`Redis counter store: not connected (${[...new Set(this.clients.map((c) => c.status))].join(', ')})`);
  }
}

// Why a counter request cannot be counted, or undefined when it can.
function invalid(c: CounterRequest): string | undefined {
  if (c.kind !== 'rolling' && c.kind !== 'calendar' && c.kind !== 'in_flight') return `unknown kind ${JSON.stringify(c.kind)}`;
  if (!(c.amount >= 0 && c.amount * UNITS_PER_AMOUNT <= MAX_UNITS)) {
    return `amount must be a finite number from 0 to ${MAX_UNITS / UNITS_PER_AMOUNT}, got ${c.amount}`;
  }
  if (!(c.max > 0 && c.max <= Number.MAX_VALUE)) return `max must be a positive number, got ${c.max}`;
  if (c.kind !== 'in_flight' && !(c.windowMs > 0 && c.windowMs <= Number.MAX_VALUE)) return `windowMs must be a positive number, got ${c.windowMs}`;
  return undefined;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
