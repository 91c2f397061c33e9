/**
 * `node dist/bench/limits.js [--quick]`: how many limit decisions per second a counter store makes.
 *
 * A decision is what the gateway will ask of the store for one `tools/call` that carries three
 * limits: reserve three counters at once, then settle the reservation without a refund (the call
 * happened). The three counters, per call:
 *   tool minute   rolling 60 s, per grant and tool
 *   day quota     calendar day, per grant, with an amount of 1 to 10 (a quota spent by argument)
 *   all_tools     rolling 1 s, per grant, over all tools
 * The calls cycle through 1,000 grants × 5 tools; a simulated clock advances 0.1 ms per call (the
 * traffic of a gateway at 10,000 calls/s, 10 per grant per second, 120 per grant and tool per
 * minute), so rolling logs hold what they would hold in service however fast the loop runs.
 *
 * Cases: `all admitted` (every max well above the traffic; every decision must be an admission,
 * or the run fails), and `some refused` (the tool minute allows 100 of the 120 calls a minute).
 *
 * Method, as bench/policy.ts: each sample times a batch of decisions with process.hrtime.bigint()
 * and records its mean per decision; percentiles are over the samples. Each case first runs long
 * enough for every rolling window to be full (over a simulated minute) before anything is measured.
 */
import { cpus, platform, release } from 'node:os';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { CounterRequest, CounterStore, ReserveOutcome } from '../src/limits/limiter.js';
import { createMemoryStore } from '../src/limits/store/memory.js';
import { Samples } from './stats.js';
import { BENCH_DOC, writeMarkedSection } from './report.js';

/** The target of the in-process store. */
export const LIMITS_TARGETS = { memoryDecisionsPerSecond: 1_000_000 } as const;

const USAGE = `Usage: node dist/bench/limits.js [--quick]

Measures decisions per second of the in-process counter store for calls with three limits (a
rolling minute per grant and tool, a daily quota with an amount, an all_tools rolling second),
each decision a reserve followed by a settle. Prints a Markdown table.

Options:
  --quick     about 3 s instead of about 20 s (fewer samples)
  --write     also write the table into docs/benchmarks.md (between its limits-bench markers)
  -h, --help
`;

/** What {@link benchStore} measures: the traffic, its limits and the sampling. */
export interface StoreBenchOptions {
  /** Names the row. */
  label: string;
  /** Grants the calls cycle through (default 1,000). */
  grants?: number;
  /** Tools per grant (default 5). */
  tools?: number;
  /** Simulated milliseconds per call (default 0.1: 10,000 calls/s). */
  msPerCall?: number;
  /** Max of the rolling minute per grant and tool (default 10,000). */
  toolPerMinute?: number;
  /** Max of the rolling second per grant over all tools (default 1,000). */
  allToolsPerSecond?: number;
  /** Max of the daily quota per grant (default 1e12). */
  quotaPerDay?: number;
  /** Decisions per sample (default 1,000). */
  batch?: number;
  /** Decisions before measuring (default 700,000: over a simulated minute at 0.1 ms per call). */
  warmup?: number;
  /** Samples measured (default 5,000). */
  samples?: number;
  /** Decisions in progress at once, for a store that answers with promises (default 1). */
  concurrency?: number;
  /** When true, a refusal fails the run: every max was chosen above the traffic. */
  expectAllAdmitted?: boolean;
}

/** One measured case. */
export interface StoreBenchResult {
  label: string;
  store: string;
  decisions: number;
  admitted: number;
  /** Decisions per second over the measured batches. */
  rate: number;
  /** Percentiles and mean of the batches' mean time per decision, in ns. */
  p50Ns: number;
  p99Ns: number;
  meanNs: number;
  samples: number;
}

const GROUP = 'crm';
const BASE = 1_700_000_000_000;

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | undefined)?.then === 'function';
}

/** The counters of every distinct call: grant `g`, tool `t`, a quota amount that varies. */
function buildCalls(o: Required<Omit<StoreBenchOptions, 'label' | 'expectAllAdmitted' | 'concurrency'>>): CounterRequest[][] {
  const calls: CounterRequest[][] = [];
  for (let j = 0; j < o.grants * o.tools; j++) {
    const g = j % o.grants;
    const t = Math.floor(j / o.grants) % o.tools;
    calls.push([
      { key: `grant:${g}:tool:t${t}:minute`, kind: 'rolling', windowMs: 60_000, max: o.toolPerMinute, amount: 1 },
      { key: `grant:${g}:quota:day`, kind: 'calendar', windowMs: 86_400_000, max: o.quotaPerDay, amount: 1 + ((j * 7) % 10) },
      { key: `grant:${g}:all_tools:second`, kind: 'rolling', windowMs: 1_000, max: o.allToolsPerSecond, amount: 1 },
    ]);
  }
  return calls;
}

/**
 * Measures `store` under the traffic `opts` describes: warm-up, then `samples` timed batches of
 * reserve-and-settle decisions. Works for a synchronous store (no promise is awaited unless the
 * store returns one) and for an asynchronous one (with `concurrency` calls in progress at once).
 */
export async function benchStore(store: CounterStore, opts: StoreBenchOptions): Promise<StoreBenchResult> {
  const o = {
    grants: opts.grants ?? 1_000,
    tools: opts.tools ?? 5,
    msPerCall: opts.msPerCall ?? 0.1,
    toolPerMinute: opts.toolPerMinute ?? 10_000,
    allToolsPerSecond: opts.allToolsPerSecond ?? 1_000,
    quotaPerDay: opts.quotaPerDay ?? 1e12,
    batch: opts.batch ?? 1_000,
    warmup: opts.warmup ?? 700_000,
    samples: opts.samples ?? 5_000,
  };
  const concurrency = Math.max(1, opts.concurrency ?? 1);
  const calls = buildCalls(o);
  const n = calls.length;
  let next = 0;

  /** Runs `count` decisions in a row; returns how many were admitted. */
  const run = async (count: number): Promise<number> => {
    let admitted = 0;
    for (let i = 0; i < count; i++) {
      const j = next++;
      const now = BASE + Math.floor(j * o.msPerCall);
      let out: ReserveOutcome | Promise<ReserveOutcome> = store.reserve(GROUP, calls[j % n]!, now);
      if (isPromise(out)) out = await out;
      if (out.ok) {
        admitted++;
        const settled = store.settle(out.reservation, false, now);
        if (isPromise(settled)) await settled;
      }
    }
    return admitted;
  };
  const batch = async (count: number): Promise<number> => {
    if (concurrency === 1) return run(count);
    const share = Math.ceil(count / concurrency);
    const parts = await Promise.all(Array.from({ length: concurrency }, (_, k) => run(Math.max(0, Math.min(share, count - k * share)))));
    return parts.reduce((a, b) => a + b, 0);
  };

  for (let done = 0; done < o.warmup; done += o.batch) await batch(Math.min(o.batch, o.warmup - done));

  const samples = new Samples();
  let admitted = 0;
  let elapsed = 0n;
  for (let s = 0; s < o.samples; s++) {
    const t0 = process.hrtime.bigint();
    const ok = await batch(o.batch);
    const dt = process.hrtime.bigint() - t0;
    elapsed += dt;
    admitted += ok;
    if (opts.expectAllAdmitted && ok !== o.batch) {
      throw new Error(`${opts.label}: ${o.batch - ok} of ${o.batch} decisions were refusals, expected none`);
    }
    samples.push(Number(dt) / o.batch);
  }
  const decisions = o.samples * o.batch;
  const sum = samples.summarize(decisions, Number(elapsed));
  // summarize reports µs; the samples are ns per decision, so scale back.
  return {
    label: opts.label,
    store: store.name,
    decisions,
    admitted,
    rate: sum.rate,
    p50Ns: sum.p50 * 1000,
    p99Ns: sum.p99 * 1000,
    meanNs: sum.mean * 1000,
    samples: o.samples,
  };
}

function int(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

/** The results as a Markdown table, with the target line of the in-process store. */
export function limitsMarkdown(results: StoreBenchResult[], command: string): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const lines = [
    `Measured with \`${command}\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${model} × ${cpus().length} cores, ${platform()} ${release()}.`,
    'A decision is one reserve of three counters (rolling minute per grant and tool, daily quota with an amount, all_tools rolling second) and its settle; ' +
      'p50 and p99 are of 1,000-decision batch means.',
    '',
    '| case | store | decisions/s | p50 ns | p99 ns | mean ns | admitted |',
    '|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const share = `${((100 * r.admitted) / r.decisions).toFixed(1)}%`;
    lines.push(`| ${r.label} | ${r.store} | ${int(r.rate)} | ${int(r.p50Ns)} | ${int(r.p99Ns)} | ${int(r.meanNs)} | ${share} |`);
  }
  const memory = results.filter((r) => r.store === 'memory');
  if (memory.length > 0) {
    const worst = memory.reduce((a, b) => (b.rate < a.rate ? b : a));
    const met = worst.rate >= LIMITS_TARGETS.memoryDecisionsPerSecond;
    lines.push('');
    lines.push(`Target: at least ${int(LIMITS_TARGETS.memoryDecisionsPerSecond)} decisions/s in memory: ${int(worst.rate)} (${worst.label}), ${met ? 'met' : '**not met**'}.`);
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { quick: { type: 'boolean' }, write: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const samples = values.quick ? 1_000 : 10_000;
  const cases: StoreBenchOptions[] = [
    { label: '3 limits, all admitted', samples, expectAllAdmitted: true },
    { label: '3 limits, some refused (100 of 120 a minute)', samples, toolPerMinute: 100 },
  ];
  const results: StoreBenchResult[] = [];
  for (const c of cases) {
    const store = createMemoryStore();
    try {
      process.stderr.write(`limits bench: ${c.label}…\n`);
      results.push(await benchStore(store, c));
    } finally {
      await store.close();
    }
  }
  const md = limitsMarkdown(results, `node dist/bench/limits.js${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`);
  process.stdout.write(`\n${md}\n`);
  if (values.write) writeMarkedSection(BENCH_DOC, 'limits-bench', md);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`bench/limits: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
