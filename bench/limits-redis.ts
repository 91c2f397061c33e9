/**
 * `node dist/bench/limits-redis.js [--quick] [--concurrency N]`: what one rate-limit decision
 * costs against the Redis counter store, from one process.
 *
 * Each decision is a call with three counters (a rolling per-tool count, a calendar per-day count
 * for the server, an in-flight count for the server), reserved and then settled without refund;
 * the in-flight counter makes the settle a real round trip too. The counters' maxima are never
 * reached, so every decision takes the full admission path (check, add, expire) and the rolling
 * window is short enough that old entries leave it, and are trimmed, throughout the run.
 *
 * Three runs, after a warm-up at least one rolling window long:
 *   concurrent   N loops (default 64) each reserving then settling, one after the other, so many
 *                decisions are in flight at once and the client pipelines them automatically:
 *                decisions per second, and each decision's latency under that load
 *   sequential   one loop: the latency of a decision with nothing else in flight
 *   4 in flight  four loops: whether the rate and the latency targets hold at the same time (by
 *                Little's law, 12,000 decisions/s at 0.3 ms each is 3.6 in flight)
 * A decision's latency is the time from calling reserve to its answer; settle is timed apart.
 * Redis is at REDIS_URL (default redis://127.0.0.1:6379); the keys written are deleted afterwards.
 */
import { randomBytes } from 'node:crypto';
import { cpus, platform, release } from 'node:os';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import type { CounterRequest, CounterStore } from '../src/limits/limiter.js';
import { createRedisStore } from '../src/limits/store/redis.js';
import { Samples } from './stats.js';
import type { Summary } from './stats.js';
import { BENCH_DOC, writeMarkedSection } from './report.js';

// The issue's targets: throughput of the concurrent run, p50 of the sequential run.
const REDIS_LIMIT_TARGETS = { decisionsPerSecond: 12_000, sequentialP50Us: 300 } as const;

const USAGE = `Usage: node dist/bench/limits-redis.js [--quick] [--concurrency N]

Times rate-limit decisions (reserve + settle of a call with three counters) against the Redis
counter store at REDIS_URL (default redis://127.0.0.1:6379), with N decisions in flight at once
(default 64) and then one at a time. Prints a markdown table.

Options:
  --quick           about 8 s instead of about 30 s
  --write           also write the table into docs/benchmarks.md (between its limits-redis-bench markers)
  --concurrency N   loops in the concurrent run (default 64)
  -h, --help
`;

const GROUP = 'bench-server';
const TOOLS = 64;
const ROLLING_WINDOW_MS = 2_000;
const HUGE = 1e12;
/** Decisions in flight for the run that checks both targets at once. */
const BOTH_AT_ONCE = 4;

interface Run {
  name: string;
  concurrency: number;
  decisions: number;
  elapsedNs: number;
  reserve: Summary;
  settle: Summary;
}

// One pre-built call per tool: the counters the limiter would resolve for it.
// The third counter is either a rolling one per grant (then settling a kept call costs nothing:
// one round trip per decision) or an in-flight slot (which settle must release: two).
function calls(withInFlight: boolean): CounterRequest[][] {
  const out: CounterRequest[][] = [];
  for (let i = 0; i < TOOLS; i++) {
    const third: CounterRequest = withInFlight
      ? { key: 'server\u0001concurrent\u0001in_flight:0', kind: 'in_flight', windowMs: 0, max: HUGE, amount: 1 }
      : { key: `grant_${i % 8}\u0001all\u0001rolling:${ROLLING_WINDOW_MS}`, kind: 'rolling', windowMs: ROLLING_WINDOW_MS, max: HUGE, amount: 1 };
    out.push([
      { key: `tool_${i}\u0001calls\u0001rolling:${ROLLING_WINDOW_MS}`, kind: 'rolling', windowMs: ROLLING_WINDOW_MS, max: HUGE, amount: 1 },
      { key: 'server\u0001spend\u0001calendar:86400000', kind: 'calendar', windowMs: 86_400_000, max: HUGE, amount: 0.25 },
      third,
    ]);
  }
  return out;
}

// Runs `concurrency` reserve-then-settle loops until `ms` have passed; returns what they did.
async function drive(store: CounterStore, all: CounterRequest[][], concurrency: number, ms: number, name: string): Promise<Run> {
  const reserveNs = new Samples();
  const settleNs = new Samples();
  let decisions = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(ms) * 1_000_000n;
  const loop = async (offset: number) => {
    for (let i = offset; ; i++) {
      const t0 = process.hrtime.bigint();
      if (t0 >= deadline) return;
      const out = await store.reserve(GROUP, all[i % TOOLS]!, Date.now());
      const t1 = process.hrtime.bigint();
      if (!out.ok) throw new Error(`a decision was refused by counter ${out.index}; the bench counters should never fill`);
      await store.settle(out.reservation, false, Date.now());
      const t2 = process.hrtime.bigint();
      reserveNs.push(Number(t1 - t0));
      settleNs.push(Number(t2 - t1));
      decisions++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => loop(i)));
  const elapsedNs = Number(process.hrtime.bigint() - start);
  return { name, concurrency, decisions, elapsedNs, reserve: reserveNs.summarize(decisions, elapsedNs), settle: settleNs.summarize(decisions, elapsedNs) };
}

function us(v: number): string {
  return v < 10 ? v.toFixed(1) : v.toFixed(0);
}

function markdown(runs: Run[], info: { command: string; date: string; redis: string; url: string }): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const lines: string[] = [];
  lines.push(
    `Measured with \`${info.command}\` on ${info.date}: Node ${process.version}, ${model} × ${cpus().length} cores, ` +
      `${platform()} ${release()}; Redis ${info.redis} at ${info.url}, clock \`redis\`.`,
  );
  lines.push(
    `A decision reserves a call of three counters in one script call, then settles it without refund. Rate limits: rolling ` +
      `${ROLLING_WINDOW_MS / 1000} s per tool over ${TOOLS} tools, a calendar-day quota with a fractional amount, rolling per grant ` +
      `over 8 grants; a kept call needs no settle command, so one round trip per decision. With in-flight: the third counter is ` +
      `an in-flight slot, which settle must release (a second round trip). Latencies are of every single call (no sampling), in µs.`,
  );
  lines.push('');
  lines.push('| run | in flight | decisions | decisions/s | reserve p50 µs | p90 | p99 | max | settle p50 µs | p99 |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of runs) {
    lines.push(
      `| ${r.name} | ${r.concurrency} | ${r.decisions.toLocaleString('en-US')} | ${Math.round(r.reserve.rate).toLocaleString('en-US')} | ` +
        `${us(r.reserve.p50)} | ${us(r.reserve.p90)} | ${us(r.reserve.p99)} | ${us(r.reserve.max)} | ${us(r.settle.p50)} | ${us(r.settle.p99)} |`,
    );
  }
  const concurrent = runs[0]!;
  const sequential = runs[1]!;
  const both = runs[2]!;
  const rateMet = concurrent.reserve.rate >= REDIS_LIMIT_TARGETS.decisionsPerSecond;
  const p50Met = sequential.reserve.p50 <= REDIS_LIMIT_TARGETS.sequentialP50Us;
  lines.push('');
  lines.push('| target | measured | met |');
  lines.push('|---|---|---|');
  lines.push(
    `| ≥ ${REDIS_LIMIT_TARGETS.decisionsPerSecond.toLocaleString('en-US')} decisions/s from one process | ` +
      `${Math.round(concurrent.reserve.rate).toLocaleString('en-US')} (${concurrent.concurrency} in flight) | ${rateMet ? 'yes' : '**no**'} |`,
  );
  lines.push(
    `| decision p50 ≤ ${REDIS_LIMIT_TARGETS.sequentialP50Us / 1000} ms | ${(sequential.reserve.p50 / 1000).toFixed(3)} ms (one at a time) | ${p50Met ? 'yes' : '**no**'} |`,
  );
  const bothMet = both.reserve.rate >= REDIS_LIMIT_TARGETS.decisionsPerSecond && both.reserve.p50 <= REDIS_LIMIT_TARGETS.sequentialP50Us;
  lines.push(
    `| both at once | ${Math.round(both.reserve.rate).toLocaleString('en-US')} decisions/s at p50 ${(both.reserve.p50 / 1000).toFixed(3)} ms ` +
      `(${both.concurrency} in flight) | ${bothMet ? 'yes' : '**no**'} |`,
  );
  return lines.join('\n');
}

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

async function deleteKeys(url: string, prefix: string): Promise<number> {
  const admin = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    let deleted = 0;
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await admin.unlink(...keys);
    } while (cursor !== '0');
    return deleted;
  } finally {
    admin.disconnect();
  }
}

async function serverVersion(url: string): Promise<string> {
  const admin = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    return /redis_version:(\S+)/.exec(await admin.info('server'))?.[1] ?? 'unknown';
  } finally {
    admin.disconnect();
  }
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { quick: { type: 'boolean' }, write: { type: 'boolean' }, concurrency: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const quick = values.quick === true;
  const concurrency = Number(values.concurrency ?? 64);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`--concurrency must be a positive integer, not ${values.concurrency}`);
  const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const plan = quick ? { warmupMs: ROLLING_WINDOW_MS + 500, concurrentMs: 3_000, sequentialMs: 2_000 } : { warmupMs: 2 * ROLLING_WINDOW_MS, concurrentMs: 10_000, sequentialMs: 5_000 };

  const prefix = `pl-bench-${randomBytes(5).toString('hex')}:`;
  const store = createRedisStore({ url, keyPrefix: prefix, onError: (err) => log(`store: ${err instanceof Error ? err.message : String(err)}`) });
  const all = calls(false);
  const withSlots = calls(true);
  const runs: Run[] = [];
  try {
    for (const [mix, label] of [[all, 'rate limits'], [withSlots, 'with in-flight']] as const) {
      log(`limits-redis bench (${label}) against ${url}${quick ? ' (quick)' : ''}: warming up for ${plan.warmupMs} ms`);
      await drive(store, mix, concurrency, plan.warmupMs, 'warm-up');
      log(`concurrent run: ${concurrency} loops for ${plan.concurrentMs} ms`);
      runs.push(await drive(store, mix, concurrency, plan.concurrentMs, `concurrent, ${label}`));
      log(`sequential run: 1 loop for ${plan.sequentialMs} ms`);
      runs.push(await drive(store, mix, 1, plan.sequentialMs, `sequential, ${label}`));
      log(`4 in flight: 4 loops for ${plan.concurrentMs} ms`);
      runs.push(await drive(store, mix, BOTH_AT_ONCE, plan.concurrentMs, `4 in flight, ${label}`));
    }
  } finally {
    await store.close();
    const deleted = await deleteKeys(url, prefix);
    log(`deleted the ${deleted} keys the bench wrote`);
  }
  const md = markdown(runs, {
    command: `node dist/bench/limits-redis.js${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`,
    date: new Date().toISOString().slice(0, 10),
    redis: await serverVersion(url),
    url: url.replace(/\/\/[^@/]*@/, '//…@'),
  });
  process.stdout.write(`\n${md}\n`);
  if (values.write) writeMarkedSection(BENCH_DOC, 'limits-redis-bench', md);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    log(`bench/limits-redis: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
