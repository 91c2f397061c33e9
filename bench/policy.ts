/**
 * `node dist/bench/policy.js [--write] [--quick]`: what one policy decision costs, in-process.
 *
 * Generates policies of 10, 1,000 and 10,000 tools (mostly exact names, about 1% globs, a hide
 * list of names and globs, `default: deny`), compiles each once through `parsePolicy`, and times
 * `evaluate` for four kinds of call:
 *   exact      an exact-name rule without conditions
 *   conditions an exact-name rule with five conditions (lte, in, path_prefix, regex; deny_if exists)
 *   glob       a name no exact rule lists, matched by one of the policy's globs
 *   unlisted   a name nothing matches: the default denial
 * plus, for reference, a hand-written JavaScript predicate of the same five conditions through the
 * same loop (the floor of any policy engine, and the loop's own cost).
 *
 * Method: each sample times a batch of calls with process.hrtime.bigint() and records the batch's
 * mean per call; percentiles are over the samples. Every case is warmed up first (so the JIT has
 * seen every path before anything is measured), then the cases run in interleaved rounds so a slow
 * moment of the machine spreads over all of them. Calls cycle through 1,024 distinct pre-built
 * call objects (made with JSON.parse, as the gateway receives them) whose names and arguments
 * differ, and every decision's effect is checked, which both consumes the result and makes a wrong
 * answer fail the run.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, platform, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { evaluate, parsePolicy } from '../src/policy/index.js';
import type { CompiledPolicy, Decision, Effect } from '../src/policy/index.js';
import { Samples } from './stats.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const DOC = join(ROOT, 'docs/benchmarks.md');
export const START = '<!-- policy-bench:start -->';
export const END = '<!-- policy-bench:end -->';

/** The issue's targets: p50 per decision, and growth of p50 from 10 to 10,000 tools. */
export const POLICY_TARGETS = { exactP50Ns: 1_000, conditionsP50Ns: 3_000, maxGrowth: 2 } as const;

const SIZES = [10, 1_000, 10_000] as const;
const BATCH = 1_000;
const CALLS = 1_024; // distinct call objects per case, cycled (a power of two: index & MASK)
const MASK = CALLS - 1;
/** How many names case (a) cycles through when it calls the same names at every size (the 10-tool policy has 5). */
const SAME_NAMES = 5;

const USAGE = `Usage: node dist/bench/policy.js [--write] [--quick]

Times one policy decision (evaluate) for policies of 10, 1,000 and 10,000 tools: an exact-name
lookup, a rule with five conditions, a glob match and an unlisted tool (default deny). Prints a
table; --write also puts it in docs/benchmarks.md between ${START} and ${END}.

Options:
  --quick     about 5 s instead of about a minute (fewer samples)
  --write     write docs/benchmarks.md
  -h, --help
`;

type Call = { tool: string; args: unknown };
type CaseName = 'exact' | 'exactSpread' | 'conditions' | 'glob' | 'unlisted' | 'predicate';

const CASE_LABEL: Record<CaseName, string> = {
  exact: '(a) exact name, no conditions; the same 5 names',
  exactSpread: '(a) exact name, no conditions; up to 1,024 names',
  conditions: '(b) five conditions, one regex',
  glob: '(c) matched by a glob',
  unlisted: '(d) unlisted tool (default deny)',
  predicate: 'reference: hand-written JS predicate of (b)',
};

interface Case {
  name: CaseName;
  tools: number;
  policy: CompiledPolicy;
  calls: Call[];
  expect: Effect;
  samples: Samples;
}

// ---- the policies ---------------------------------------------------------------------------

const DOMAINS = ['crm', 'github', 'jira', 'slack', 'drive', 'billing', 'search', 'calendar', 'mail', 'db'];
const VERBS = ['get', 'list', 'create', 'update', 'search', 'export', 'archive', 'sync'];

/** The rule of case (b): five conditions, one of them a regex. */
const TRANSFER = 'payments_create_transfer';
const TRANSFER_RULE = {
  require: [
    { path: 'args.amount', op: 'lte', value: 10_000 },
    { path: 'args.currency', op: 'in', value: ['usd', 'eur', 'gbp', 'jpy'] },
    { path: 'args.path', op: 'path_prefix', value: ['/srv/exports', '/srv/reports'] },
    { path: 'args.name', op: 'regex', value: '^[a-z][a-z0-9_-]{0,62}$' },
  ],
  deny_if: [{ path: 'args.force', op: 'exists', value: true }],
};

/** What a policy of `n` tools is made of; the names the cases call come from here. */
interface Generated {
  text: string;
  /** Exact names of plain `allow` rules without conditions. */
  plainExact: string[];
  /** Literal prefixes of the allowing globs (a name is the prefix plus anything). */
  allowGlobPrefixes: string[];
}

/**
 * About 1% of the entries are globs (at least two): `plugin<i>_*`, every fifth a denial, and one
 * suffix glob `*_healthcheck` whose empty prefix means its regex runs for every unmatched name.
 * The rest are exact names: every tenth a denial, every 25th with a `require` of its own, and
 * `payments_create_transfer` with five conditions. `hide` lists 1% of the tool count as names and
 * 0.1% as globs (at least one of each).
 */
function generate(n: number): Generated {
  const tools: Record<string, unknown> = {};
  const plainExact: string[] = [];
  const allowGlobPrefixes: string[] = [];
  const globs = Math.max(2, Math.round(n / 100));
  tools['*_healthcheck'] = {};
  for (let i = 0; i < globs - 1; i++) {
    const prefix = `plugin${i}_`;
    if (i % 5 === 4) tools[`${prefix}*`] = { action: 'deny', reason: 'plugin disabled' };
    else {
      tools[`${prefix}*`] = {};
      allowGlobPrefixes.push(prefix);
    }
  }
  tools[TRANSFER] = TRANSFER_RULE;
  const exact = n - globs - 1;
  for (let i = 0; i < exact; i++) {
    const name = `${DOMAINS[i % DOMAINS.length]}_${VERBS[Math.floor(i / DOMAINS.length) % VERBS.length]}_${i}`;
    if (i % 10 === 7) tools[name] = { action: 'deny' };
    else if (i % 25 === 3) tools[name] = { require: [{ path: 'args.limit', op: 'lte', value: 100 }] };
    else {
      tools[name] = {};
      plainExact.push(name);
    }
  }
  const hide: string[] = [];
  for (let i = 0; i < Math.max(1, Math.round(n / 100)); i++) hide.push(`internal_${i}`);
  for (let i = 0; i < Math.max(1, Math.round(n / 1000)); i++) hide.push(`debug${i}_*`);
  if (Object.keys(tools).length !== n) throw new Error(`generated ${Object.keys(tools).length} tools, wanted ${n}`);
  const text = JSON.stringify({ version: '1', default: 'deny', hide, tools });
  return { text, plainExact, allowGlobPrefixes };
}

/** `count` items of `list` spread evenly over it, cycled to `CALLS` entries. */
function spread<T>(list: readonly T[], count = CALLS): T[] {
  if (list.length === 0) throw new Error('nothing to pick from');
  const out: T[] = [];
  for (let i = 0; i < count; i++) out.push(list[Math.floor((i * list.length) / count) % list.length]!);
  return out;
}

/** Calls as the gateway gets them: parsed from JSON text, so fresh strings and objects. */
function fromJson(calls: Call[]): Call[] {
  return calls.map((c) => JSON.parse(JSON.stringify(c)) as Call);
}

function transferArgs(i: number): Record<string, unknown> {
  const currencies = ['usd', 'eur', 'gbp', 'jpy'];
  return {
    amount: 1 + ((i * 7_919) % 9_999),
    currency: currencies[i % currencies.length],
    path: `/srv/${i % 2 === 0 ? 'exports' : 'reports'}/${2020 + (i % 6)}/batch-${i}.csv`,
    name: `payout_${(i * 131) % 10_007}-q${1 + (i % 4)}`,
    memo: `invoice ${i}`,
  };
}

function buildCases(): Case[] {
  const cases: Case[] = [];
  const samples = () => new Samples();
  for (const n of SIZES) {
    const g = generate(n);
    const policy = parsePolicy(g.text, `<bench ${n} tools>`);
    const exactArgs = (tool: string, i: number) => ({ tool, args: { id: `c-${i}`, limit: i % 50 } });
    const exact = spread(g.plainExact.slice(0, SAME_NAMES)).map(exactArgs);
    const exactSpread = spread(g.plainExact).map(exactArgs);
    const conditions = Array.from({ length: CALLS }, (_, i) => ({ tool: TRANSFER, args: transferArgs(i) }));
    const glob = spread(g.allowGlobPrefixes).map((p, i) => ({ tool: `${p}action_${i}`, args: { q: `query ${i}` } }));
    const unlisted = Array.from({ length: CALLS }, (_, i) => ({ tool: `${DOMAINS[i % DOMAINS.length]}_unknown_${i}`, args: { x: i } }));
    cases.push(
      { name: 'exact', tools: n, policy, calls: fromJson(exact), expect: 'allow', samples: samples() },
      { name: 'exactSpread', tools: n, policy, calls: fromJson(exactSpread), expect: 'allow', samples: samples() },
      { name: 'conditions', tools: n, policy, calls: fromJson(conditions), expect: 'allow', samples: samples() },
      { name: 'glob', tools: n, policy, calls: fromJson(glob), expect: 'allow', samples: samples() },
      { name: 'unlisted', tools: n, policy, calls: fromJson(unlisted), expect: 'deny', samples: samples() },
    );
  }
  const reference = cases.find((c) => c.name === 'conditions')!;
  cases.push({ ...reference, name: 'predicate', tools: 0, samples: samples() });
  return cases;
}

// ---- the measurement ------------------------------------------------------------------------

/** Runs `count` decisions from `calls[start...]`; returns how many had the expected effect. */
function decide(calls: Call[], policy: CompiledPolicy, start: number, count: number, expect: Effect): number {
  let ok = 0;
  for (let i = 0; i < count; i++) {
    const d: Decision = evaluate(calls[(start + i) & MASK]!, policy);
    if (d.effect === expect) ok++;
  }
  return ok;
}

const SAFE_NAME = /^[a-z][a-z0-9_-]{0,62}$/;
const CURRENCIES = new Set(['usd', 'eur', 'gbp', 'jpy']);

/** (b)'s five conditions written by hand: what a compiled JavaScript predicate costs. */
function transferPredicate(call: Call): boolean {
  const a = call.args as Record<string, unknown>;
  const amount = a.amount;
  const path = a.path;
  const name = a.name;
  return (
    typeof amount === 'number' &&
    amount <= 10_000 &&
    CURRENCIES.has(a.currency as string) &&
    typeof path === 'string' &&
    (path.startsWith('/srv/exports/') || path.startsWith('/srv/reports/')) &&
    !path.includes('/../') &&
    typeof name === 'string' &&
    SAFE_NAME.test(name) &&
    !Object.hasOwn(a, 'force')
  );
}

/** The same loop as `decide`, around the hand-written predicate. */
function predicate(calls: Call[], start: number, count: number): number {
  let ok = 0;
  for (let i = 0; i < count; i++) {
    if (transferPredicate(calls[(start + i) & MASK]!)) ok++;
  }
  return ok;
}

let cursor = 0;

/** One sample: a batch of BATCH calls; records the mean ns per call. Throws on a wrong answer. */
function sample(c: Case, record: boolean): void {
  const start = cursor;
  cursor = (cursor + 337) & MASK; // each batch starts somewhere else in the call list
  const t0 = process.hrtime.bigint();
  const ok = c.name === 'predicate' ? predicate(c.calls, start, BATCH) : decide(c.calls, c.policy, start, BATCH, c.expect);
  const t1 = process.hrtime.bigint();
  if (ok !== BATCH) {
    const bad = c.calls.map((call) => ({ call, d: evaluate(call, c.policy) })).find((x) => x.d.effect !== c.expect);
    throw new Error(`${CASE_LABEL[c.name]}, ${c.tools} tools: expected ${c.expect}, got ${JSON.stringify(bad?.d)} for ${JSON.stringify(bad?.call)}`);
  }
  if (record) c.samples.push(Number(t1 - t0) / BATCH);
}

interface Plan {
  warmupSamples: number;
  rounds: number;
  samplesPerRound: number;
}

function measure(cases: Case[], plan: Plan): void {
  for (const c of cases) for (let i = 0; i < plan.warmupSamples; i++) sample(c, false);
  // Interleave in small slices so every case sees the same moments of the machine.
  const slice = 50;
  for (let r = 0; r < plan.rounds; r++) {
    for (let done = 0; done < plan.samplesPerRound; done += slice) {
      for (const c of cases) for (let i = 0; i < Math.min(slice, plan.samplesPerRound - done); i++) sample(c, true);
    }
    log(`round ${r + 1}/${plan.rounds} done`);
  }
}

// ---- the report -----------------------------------------------------------------------------

interface Row {
  name: CaseName;
  tools: number;
  p50: number;
  p99: number;
  mean: number;
  samples: number;
}

interface Check {
  name: string;
  measured: string;
  target: string;
  met: boolean;
}

function rows(cases: Case[]): Row[] {
  return cases.map((c) => {
    const s = c.samples.summarize(c.samples.length * BATCH, 0);
    // summarize reports µs; per-call values are stored in ns, so scale back.
    return { name: c.name, tools: c.tools, p50: s.p50 * 1000, p99: s.p99 * 1000, mean: s.mean * 1000, samples: c.samples.length };
  });
}

function ns(v: number): string {
  return v >= 10_000 ? Math.round(v).toLocaleString('en-US') : v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function find(rs: Row[], name: CaseName, tools: number): Row {
  const r = rs.find((x) => x.name === name && x.tools === tools);
  if (r === undefined) throw new Error(`no result for ${name} at ${tools} tools`);
  return r;
}

function checks(rs: Row[]): Check[] {
  const out: Check[] = [];
  const first = SIZES[0];
  const last = SIZES[SIZES.length - 1]!;
  for (const [name, target] of [
    ['exact', POLICY_TARGETS.exactP50Ns],
    ['exactSpread', POLICY_TARGETS.exactP50Ns],
    // A glob match and the default denial are lookups without conditions too.
    ['glob', POLICY_TARGETS.exactP50Ns],
    ['unlisted', POLICY_TARGETS.exactP50Ns],
    ['conditions', POLICY_TARGETS.conditionsP50Ns],
  ] as const) {
    const worst = SIZES.map((n) => find(rs, name, n)).reduce((a, b) => (b.p50 > a.p50 ? b : a));
    out.push({
      name: `${CASE_LABEL[name]}: p50 at every size`,
      measured: `${ns(worst.p50)} ns (worst, at ${worst.tools.toLocaleString('en-US')} tools)`,
      target: `≤ ${target / 1000} µs`,
      met: worst.p50 <= target,
    });
  }
  for (const name of ['exact', 'exactSpread', 'glob', 'unlisted', 'conditions'] as const) {
    const a = find(rs, name, first);
    const b = find(rs, name, last);
    const ratio = b.p50 / a.p50;
    out.push({
      name: `${CASE_LABEL[name]}: growth of p50, ${first} → ${last.toLocaleString('en-US')} tools`,
      measured: `${ratio.toFixed(2)}× (${ns(a.p50)} → ${ns(b.p50)} ns)`,
      target: `≤ ${POLICY_TARGETS.maxGrowth}×`,
      met: ratio <= POLICY_TARGETS.maxGrowth,
    });
  }
  return out;
}

interface Info {
  command: string;
  build: string | undefined;
  date: string;
  node: string;
  cpu: string;
  os: string;
  method: string;
  compile: string;
}

function markdown(rs: Row[], cs: Check[], info: Info): string {
  const lines: string[] = [];
  lines.push(
    `Measured with \`${info.command}\`${info.build ? ` (at ${info.build})` : ''} on ${info.date}: Node ${info.node}, ${info.cpu}, ${info.os}.`,
  );
  lines.push(info.method);
  lines.push(info.compile);
  lines.push('');
  lines.push('| call | tools | p50 ns | p99 ns | mean ns |');
  lines.push('|---|---:|---:|---:|---:|');
  for (const r of rs) {
    const tools = r.name === 'predicate' ? '–' : r.tools.toLocaleString('en-US');
    lines.push(`| ${CASE_LABEL[r.name]} | ${tools} | ${ns(r.p50)} | ${ns(r.p99)} | ${ns(r.mean)} |`);
  }
  lines.push('');
  lines.push('| target | measured | target | met |');
  lines.push('|---|---|---|---|');
  for (const c of cs) lines.push(`| ${c.name} | ${c.measured} | ${c.target} | ${c.met ? 'yes' : '**no**'} |`);
  return lines.join('\n');
}

/** Replaces the text between this benchmark's markers in docs/benchmarks.md. */
function writeSection(file: string, section: string): void {
  const text = readFileSync(file, 'utf8');
  const a = text.indexOf(START);
  const b = text.indexOf(END, a);
  if (a < 0 || b < 0) throw new Error(`${file} has no ${START} … ${END} markers to write between`);
  writeFileSync(file, `${text.slice(0, a)}${START}\n${section}\n${END}${text.slice(b + END.length)}`);
}

function buildOf(): string | undefined {
  try {
    const git = (...args: string[]) => execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const commit = git('rev-parse', '--short', 'HEAD');
    return git('status', '--porcelain', '--', 'src/policy').length > 0 ? `${commit} with local changes to src/policy` : commit;
  } catch {
    return undefined;
  }
}

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { quick: { type: 'boolean' }, write: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const quick = values.quick === true;
  const plan: Plan = quick ? { warmupSamples: 100, rounds: 1, samplesPerRound: 300 } : { warmupSamples: 500, rounds: 5, samplesPerRound: 600 };

  const compileMs: string[] = [];
  for (const n of SIZES) {
    const t0 = process.hrtime.bigint();
    parsePolicy(generate(n).text, `<bench ${n} tools>`);
    compileMs.push(`${n.toLocaleString('en-US')} tools ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms`);
  }
  const cases = buildCases();
  log(`policy bench: ${cases.length} cases, ${plan.rounds * plan.samplesPerRound} samples of ${BATCH} calls each${quick ? ' (quick)' : ''}`);
  measure(cases, plan);

  const rs = rows(cases);
  const cs = checks(rs);
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const md = markdown(rs, cs, {
    command: `node dist/bench/policy.js${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`,
    build: buildOf(),
    date: new Date().toISOString().slice(0, 10),
    node: process.version,
    cpu: `${model} × ${cpus().length} cores`,
    os: `${platform()} ${release()}`,
    method:
      `Each row: ${(plan.rounds * plan.samplesPerRound).toLocaleString('en-US')} samples of ${BATCH.toLocaleString('en-US')} calls after ` +
      `${plan.warmupSamples} warm-up samples, all cases interleaved; a sample is one batch's mean time per call, so p50 and p99 are ` +
      `percentiles of 1,000-call batch means (exact over all samples), not of single calls. Calls cycle through ${CALLS.toLocaleString('en-US')} ` +
      `distinct JSON-parsed call objects per row, and every decision's effect is checked.`,
    compile: `Parsing, validating and compiling each policy once (not in the table): ${compileMs.join(', ')}.`,
  });
  process.stdout.write(`\n${md}\n`);
  if (values.write) {
    writeSection(DOC, md);
    log(`\nwrote ${DOC}`);
  }
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  log(`bench/policy: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
