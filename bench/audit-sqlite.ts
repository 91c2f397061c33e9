/**
 * `node dist/bench/audit-sqlite.js [--quick] [--write]`: how many audit records per second the
 * SQLite sink stores, sustained, and how long each batch holds the thread.
 *
 * Records: what one gateway process writes (one stream), correctly chained, 1,000,000 per case
 * (200,000 with --quick) into a fresh file. The traffic they describe: 1,000 grants (UUIDs, as
 * the control store makes them) whose activity follows a Zipf law (s = 1.1: a few agents make
 * most calls, as in service), each with five sessions; 20 tools over 5 servers; 90% tools/call
 * and 10% tools/list; decisions 88% allow, 6% deny, 3% rate_limited and the rest spread over the
 * other kinds, with the rule, reason, upstream status, latency, result size and error each kind
 * carries; arguments in `keys` mode (the default), and a simulated clock at 100,000 calls/s. A
 * worst case spreads the calls evenly over the 1,000 grants: every batch then touches a page of
 * the grant index per grant it holds, the index that costs the most.
 *
 * Method: each batch is made and chained before its write and untimed; the write (one
 * transaction) is timed with process.hrtime.bigint(). Events/s is the records over the summed
 * write times; batch times are exact percentiles over every batch. Since better-sqlite3 is
 * synchronous, a batch's write time is also how long it holds the gateway's event loop. The file
 * grows from empty to the full count, so index depth and WAL checkpoints (every ~16 MiB of WAL,
 * inside the commit that crosses it) are all in the numbers. Chaining (the writer's work, not the
 * sink's) is timed apart and reported below the table.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, platform, release, tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { chain, type AuditDecision, type AuditEventInput, type AuditRecord } from '../src/audit/event.js';
import { openSqliteAuditSink } from '../src/audit/sinks/sqlite.js';
import { percentile } from './stats.js';
import { BENCH_DOC, writeMarkedSection } from './report.js';

/** The issue's target for the SQLite sink, sustained on this 2-core machine. */
export const AUDIT_SQLITE_TARGETS = { eventsPerSecond: 100_000 } as const;

const USAGE = `Usage: node dist/bench/audit-sqlite.js [--quick] [--write] [--dir DIR] [--verify]

Writes realistic audit records through the SQLite sink into fresh files (1,000,000 per case)
in batches of 500 and 1,000, and prints events/s and batch write times as a Markdown table.

Options:
  --quick     200,000 records per case instead of 1,000,000
  --dir DIR   where the database files go (default: a folder under the system's temp dir);
              the disk matters, as every commit writes and checkpoints fsync
  --verify    also verify each file's chain afterwards (slow: about as long as the writes)
  --write     also write the table into docs/benchmarks.md (between its audit-sqlite-bench markers)
  -h, --help
`;

export interface AuditBenchCase {
  label: string;
  batch: number;
  synchronous: 'normal' | 'full';
  grants: 'zipf' | 'uniform';
}

export interface AuditBenchResult extends AuditBenchCase {
  records: number;
  eventsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Database file plus WAL, per record, at the end. */
  bytesPerRecord: number;
  /** Chaining per record (the writer's cost, untimed in the rate). */
  chainUs: number;
  verified?: boolean;
}

const BASE = 1_700_000_000_000;
const GRANTS = 1_000;
const SESSIONS_PER_GRANT = 5;
/** Calls per simulated ms: the clock of a gateway at 100,000 calls/s. */
const CALLS_PER_MS = 100;

/** mulberry32: a small seeded generator, so every run writes the same records. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hex(rnd: () => number, digits: number): string {
  let s = '';
  while (s.length < digits) s += Math.floor(rnd() * 0x100000000).toString(16).padStart(8, '0');
  return s.slice(0, digits);
}

function uuid(rnd: () => number): string {
  const h = hex(rnd, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const SERVERS = ['crm', 'github', 'filesystem', 'postgres', 'slack'] as const;
const TOOLS: ReadonlyArray<{ server: string; tool: string; keys: string[] }> = [
  { server: 'crm', tool: 'search_contacts', keys: ['query', 'limit'] },
  { server: 'crm', tool: 'get_contact', keys: ['id'] },
  { server: 'crm', tool: 'update_contact', keys: ['id', 'fields'] },
  { server: 'crm', tool: 'delete_contact', keys: ['id'] },
  { server: 'github', tool: 'search_issues', keys: ['repo', 'query', 'state'] },
  { server: 'github', tool: 'get_pull_request', keys: ['repo', 'number'] },
  { server: 'github', tool: 'create_issue', keys: ['repo', 'title', 'body', 'labels'] },
  { server: 'github', tool: 'merge_pull_request', keys: ['repo', 'number', 'method'] },
  { server: 'filesystem', tool: 'read_file', keys: ['path'] },
  { server: 'filesystem', tool: 'list_directory', keys: ['path'] },
  { server: 'filesystem', tool: 'write_file', keys: ['content', 'path'] },
  { server: 'filesystem', tool: 'search_files', keys: ['path', 'pattern'] },
  { server: 'postgres', tool: 'query', keys: ['sql'] },
  { server: 'postgres', tool: 'list_tables', keys: ['schema'] },
  { server: 'postgres', tool: 'describe_table', keys: ['table'] },
  { server: 'postgres', tool: 'explain', keys: ['sql'] },
  { server: 'slack', tool: 'post_message', keys: ['channel', 'text'] },
  { server: 'slack', tool: 'list_channels', keys: ['limit'] },
  { server: 'slack', tool: 'search_messages', keys: ['query'] },
  { server: 'slack', tool: 'add_reaction', keys: ['channel', 'emoji', 'ts'] },
];
/** Cumulative shares of the decisions of a tools/call. */
const DECISIONS: ReadonlyArray<[AuditDecision, number]> = [
  ['allow', 0.88],
  ['deny', 0.94],
  ['rate_limited', 0.97],
  ['invalid_arguments', 0.98],
  ['hidden', 0.985],
  ['approval_requested', 0.99],
  ['approved', 0.993],
  ['denied_by_approver', 0.995],
  ['expired', 0.997],
  ['shadow_deny', 1],
];
const REASONS: Partial<Record<AuditDecision, string>> = {
  deny: 'deletes need a ticket reference',
  rate_limited: 'limit tool_minute: 60 per minute per grant',
  invalid_arguments: '/limit: must be <= 100',
  hidden: 'tool is hidden by policy',
  denied_by_approver: 'not during the freeze',
  expired: 'approval request expired after 300 s',
  shadow_deny: 'would deny: outside business hours',
};

/** Makes the events of the traffic described at the top of the file, one at a time. */
export class Traffic {
  private readonly rnd: () => number;
  private readonly grants: string[];
  private readonly sessions: string[];
  private readonly versions: Record<string, string>;
  private readonly pickGrant: () => number;
  private n = 0;

  constructor(seed: number, spread: 'zipf' | 'uniform') {
    this.rnd = random(seed);
    this.grants = Array.from({ length: GRANTS }, () => uuid(this.rnd));
    this.sessions = Array.from({ length: GRANTS * SESSIONS_PER_GRANT }, () => uuid(this.rnd));
    this.versions = Object.fromEntries(SERVERS.map((s) => [s, `sha256:${hex(this.rnd, 16)}`]));
    if (spread === 'uniform') {
      this.pickGrant = () => Math.floor(this.rnd() * GRANTS);
    } else {
      // Zipf(1.1) by inverse CDF over the grant ranks.
      const cdf: number[] = [];
      let total = 0;
      for (let k = 1; k <= GRANTS; k++) cdf.push((total += 1 / k ** 1.1));
      this.pickGrant = () => {
        const x = this.rnd() * total;
        let lo = 0;
        let hi = GRANTS - 1;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (cdf[mid]! < x) lo = mid + 1;
          else hi = mid;
        }
        return lo;
      };
    }
  }

  next(): AuditEventInput {
    const i = this.n++;
    const rnd = this.rnd;
    const g = this.pickGrant();
    const t = TOOLS[Math.floor(rnd() * TOOLS.length)]!;
    const base = {
      at: BASE + Math.floor(i / CALLS_PER_MS),
      requestId: String(1 + (i % 10_000)),
      grantId: this.grants[g]!,
      grantLabel: `agent-${g}`,
      session: this.sessions[g * SESSIONS_PER_GRANT + (i % SESSIONS_PER_GRANT)]!,
      server: t.server,
      policyVersion: this.versions[t.server]!,
    };
    if (rnd() < 0.1) {
      return { ...base, method: 'tools/list', tool: null, decision: 'allow', rule: null, reason: null, arguments: null, upstreamStatus: 'ok', latencyMs: round2(2 + rnd() * 20), resultBytes: 4_000 + Math.floor(rnd() * 8_000), error: null };
    }
    const x = rnd();
    const decision = DECISIONS.find(([, upTo]) => x < upTo)![0];
    const args = { keys: t.keys, sha256: hex(rnd, 64) };
    if (decision !== 'allow' && decision !== 'approved') {
      return {
        ...base,
        method: 'tools/call',
        tool: t.tool,
        decision,
        rule: decision === 'rate_limited' ? `/tools/${t.tool}/limits/0` : `/tools/${t.tool}/deny_if/0`,
        reason: REASONS[decision] ?? null,
        arguments: args,
        upstreamStatus: null,
        latencyMs: round2(0.05 + rnd() * 0.3),
        resultBytes: null,
        error: null,
      };
    }
    const s = rnd();
    const status = s < 0.95 ? 'ok' : s < 0.99 ? 'tool_error' : 'error';
    return {
      ...base,
      method: 'tools/call',
      tool: t.tool,
      decision,
      rule: `/tools/${t.tool}`,
      reason: null,
      arguments: args,
      upstreamStatus: status,
      // Log-normal-ish: most calls take a few ms, some hundreds.
      latencyMs: round2(Math.exp(1 + rnd() * 4)),
      resultBytes: status === 'error' ? null : 100 + Math.floor(rnd() ** 3 * 50_000),
      error: status === 'error' ? 'upstream error -32603: internal error' : null,
    };
  }
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

/** Writes `records` records of fresh traffic through a sink on a new file in `dir`, timing each batch. */
export async function benchSqliteSink(c: AuditBenchCase, records: number, dir: string, verify = false): Promise<AuditBenchResult> {
  const file = path.join(dir, `audit-${c.batch}-${c.synchronous}-${c.grants}.db`);
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  const sink = openSqliteAuditSink(file, { synchronous: c.synchronous });
  const traffic = new Traffic(42, c.grants);
  const stream = uuid(random(7));
  const times = new Float64Array(Math.ceil(records / c.batch));
  let prev: AuditRecord | undefined;
  let written = 0;
  let writeNs = 0n;
  let chainNs = 0n;
  let verified: boolean | undefined;
  try {
    for (let b = 0; written < records; b++) {
      const size = Math.min(c.batch, records - written);
      const batch: AuditRecord[] = new Array(size);
      const c0 = process.hrtime.bigint();
      for (let k = 0; k < size; k++) batch[k] = prev = chain(stream, prev, traffic.next());
      const t0 = process.hrtime.bigint();
      await sink.write(batch);
      const dt = process.hrtime.bigint() - t0;
      chainNs += t0 - c0;
      writeNs += dt;
      times[b] = Number(dt) / 1e6;
      written += size;
    }
    const bytes = ['', '-wal'].reduce((sum, suffix) => sum + sizeOf(file + suffix), 0);
    if (verify) {
      const result = await sink.verify();
      if (!result.ok || result.records !== records) throw new Error(`${c.label}: verification failed: ${JSON.stringify(result)}`);
      verified = true;
    }
    const sorted = times.sort();
    return {
      ...c,
      records,
      eventsPerSecond: records / (Number(writeNs) / 1e9),
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      maxMs: sorted[sorted.length - 1]!,
      bytesPerRecord: bytes / records,
      chainUs: Number(chainNs) / 1e3 / records,
      ...(verified === undefined ? {} : { verified }),
    };
  } finally {
    await sink.close();
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  }
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

function int(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

function ms(v: number): string {
  return v < 10 ? v.toFixed(2) : v.toFixed(1);
}

export function auditSqliteMarkdown(results: AuditBenchResult[], command: string, dir: string): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const first = results[0];
  const lines = [
    `Measured with \`${command}\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${model} × ${cpus().length} cores, ${platform()} ${release()}; files under ${dir}.`,
    `Each row writes ${first === undefined ? '–' : int(first.records)} chained records of one stream into a fresh file (WAL, checkpoint every ~16 MiB of WAL); ` +
      'events/s is records over the summed batch write times, and a batch time is also how long the write holds the event loop (better-sqlite3 is synchronous).',
    '',
    '| case | batch | synchronous | grants | events/s | batch p50 ms | batch p99 ms | batch max ms | bytes/record on disk |',
    '|---|---:|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    lines.push(`| ${r.label} | ${int(r.batch)} | ${r.synchronous.toUpperCase()} | ${r.grants === 'zipf' ? 'Zipf over 1,000' : 'uniform over 1,000'} | ${int(r.eventsPerSecond)} | ${ms(r.p50Ms)} | ${ms(r.p99Ms)} | ${ms(r.maxMs)} | ${int(r.bytesPerRecord)} |`);
  }
  const chainUs = results.reduce((sum, r) => sum + r.chainUs, 0) / Math.max(1, results.length);
  lines.push('');
  lines.push(`Chaining a record (the writer's canonical JSON and SHA-256, not in the rates above): ${chainUs.toFixed(1)} µs.`);
  const held = results.filter((r) => r.synchronous === 'normal' && r.grants === 'zipf');
  if (held.length > 0) {
    const worst = held.reduce((a, b) => (b.eventsPerSecond < a.eventsPerSecond ? b : a));
    const met = worst.eventsPerSecond >= AUDIT_SQLITE_TARGETS.eventsPerSecond;
    lines.push(`Target: at least ${int(AUDIT_SQLITE_TARGETS.eventsPerSecond)} events/s sustained (synchronous NORMAL, realistic grants): ${int(worst.eventsPerSecond)} (batches of ${int(worst.batch)}), ${met ? 'met' : '**not met**'}.`);
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean' },
      write: { type: 'boolean' },
      verify: { type: 'boolean' },
      dir: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const records = values.quick ? 200_000 : 1_000_000;
  const scratch = values.dir === undefined ? mkdtempSync(path.join(tmpdir(), 'policylayer-audit-bench-')) : path.resolve(values.dir);
  const cases: AuditBenchCase[] = [
    { label: 'realistic traffic', batch: 500, synchronous: 'normal', grants: 'zipf' },
    { label: 'realistic traffic', batch: 1_000, synchronous: 'normal', grants: 'zipf' },
    { label: 'worst case: calls spread evenly over the grants', batch: 1_000, synchronous: 'normal', grants: 'uniform' },
    { label: 'strict audit (every commit fsync\'ed)', batch: 500, synchronous: 'full', grants: 'zipf' },
  ];
  const results: AuditBenchResult[] = [];
  try {
    for (const c of cases) {
      process.stderr.write(`audit-sqlite bench: ${c.label}, batches of ${c.batch}, ${c.synchronous}…\n`);
      results.push(await benchSqliteSink(c, records, scratch, values.verify === true));
    }
  } finally {
    if (values.dir === undefined) rmSync(scratch, { recursive: true, force: true });
  }
  const md = auditSqliteMarkdown(results, `node dist/bench/audit-sqlite.js${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`, values.dir === undefined ? 'the system temp dir' : scratch);
  process.stdout.write(`\n${md}\n`);
  if (values.write) writeMarkedSection(BENCH_DOC, 'audit-sqlite-bench', md);
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`bench/audit-sqlite: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
