/**
 * `node dist/bench/audit-sqlite.js [--quick] [--write] [--case N]`: how many audit records per second the
 * SQLite sink stores, sustained, through its public write() (its writer thread's round trip
 * included), and how long it holds the caller's event loop while doing so.
 *
 * Records: what one gateway process writes (one stream), correctly chained, 1,000,000 per case
 * (200,000 with --quick) into a fresh file. The traffic they describe: 1,000 grants (UUIDs, as
 * the control store makes them) whose activity follows a Zipf law (s = 1.1: a few agents make
 * most calls, as in service), each with five sessions; 20 tools over 5 servers; 90% tools/call
 * and 10% tools/list; decisions 88% allow, 6% deny, 3% rate_limited and the rest spread over the
 * other kinds, with the rule, reason, upstream status, latency, result size and error each kind
 * carries; arguments in `keys` mode (the default), and a simulated clock at 100,000 calls/s. A
 * worst case spreads the calls evenly over the 1,000 grants, so every batch holds more of them.
 *
 * Method. Records are made and chained PHASE_RECORDS at a time, untimed (chaining is the
 * writer's work, done on the gateway's audit thread: it is timed apart and reported below the table), and the
 * garbage that leaves is collected, untimed too (see collectGarbage). Each phase's
 * batches then go through `sink.write()` the way the audit writer drives a sink: the next batch
 * is handed over as soon as the previous write resolved (one in flight), or, in the pipelined
 * case, with several in flight. Events/s is the records over the summed time of the write phases.
 * The file grows from empty to the full count, so index depth and WAL checkpoints (every ~16 MiB of
 * WAL) are all in the numbers.
 *
 * Holding the event loop, three ways:
 * - the sink's longest step: per batch, the longest piece of the sink's own work on the main
 *   thread (the synchronous part of write(), each later turn handing over the rest of the batch,
 *   the handling of the writer thread's answer), as the sink times it (takeLongestStep()). This is
 *   what the target is held to. It is timed on the clock: a step that garbage collection, the
 *   kernel (running the writer thread, a GC helper or another process on the main thread's core)
 *   or the host interrupted counts whole.
 * - `write()` call: the synchronous part of each call, less the time the main thread waited for a
 *   core, where Linux says (/proc/thread-self/schedstat).
 * - longest turn: after the timed phases, HOLD_BATCHES more batches are written while a probe
 *   reschedules itself with setImmediate and notes the gap between its runs: the longest stretch
 *   in which anything else (the sink's steps, the bench's own awaits, garbage collection, the
 *   machine) had the event loop; per batch, on CPU, on CPU less the GC pauses a PerformanceObserver
 *   reports (V8's incremental marking steps are not among them), and on the clock. The probe keeps
 *   the main thread busy, which is why it is a pass of its own and not part of the rate. The
 *   longest garbage collection pause during that pass is reported beside it.
 * This machine is a 2-core virtual machine, and the host stops its threads now and then for
 * milliseconds, which Linux inside it counts as time on CPU; so before the cases, machineFloor()
 * runs the same probe with no sink at all, one other thread busy, and reports what it saw.
 * Main-thread CPU per record is the main thread's CPU time over the write phases divided by the
 * records: the sink's share of the gateway's thread; the writer thread's is the rest of the
 * process's CPU time (the writer thread, and garbage collection's helpers).
 *
 * The machine is shared: the share of its CPU used by other processes during each case is
 * reported, since it lowers the rate.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, platform, release, tmpdir } from 'node:os';
import path from 'node:path';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { Worker } from 'node:worker_threads';
import vm from 'node:vm';
import { auditArguments } from '../src/audit/arguments.js';
import { chain, type AuditDecision, type AuditEventInput, type AuditRecord } from '../src/audit/event.js';
import { openSqliteAuditSink, type SqliteAuditSink } from '../src/audit/sinks/sqlite.js';
import { machineCpu, ThreadClock } from './procs.js';
import { percentile } from './stats.js';
import { BENCH_DOC, writeMarkedSection } from './report.js';

/** The issue's targets for the SQLite sink, on this 2-core machine. */
export const AUDIT_SQLITE_TARGETS = { eventsPerSecond: 100_000, holdMs: 1 } as const;

const USAGE = `Usage: node dist/bench/audit-sqlite.js [--quick] [--write] [--dir DIR] [--verify] [--case N]...

Writes realistic audit records through the SQLite sink's write() into fresh files (1,000,000 per
case), and prints events/s, write latency and how long the main event loop was held, as Markdown.

Options:
  --quick     200,000 records per case instead of 1,000,000
  --dir DIR   where the database files go (default: a folder under the system's temp dir);
              the disk matters, as every commit writes and checkpoints fsync
  --verify    also verify each file's chain afterwards (slow: about as long as the writes)
  --write     also write the table into docs/benchmarks.md (between its audit-sqlite-bench markers)
  --case N    run only the Nth case (1 to 6; repeatable), e.g. --case 1 for the target's
  -h, --help
`;

export interface AuditBenchCase {
  label: string;
  batch: number;
  synchronous: 'normal' | 'full';
  grants: 'zipf' | 'uniform';
  /** Writes in flight at once: 1 is how the audit writer drives a sink. */
  inFlight: number;
  /**
   * The sink writes on the caller's thread, as it does on the gateway's audit thread
   * (SqliteAuditSinkOptions.inline): each write() holds that thread for the whole batch by design.
   */
  inline?: boolean;
}

export interface AuditBenchResult extends AuditBenchCase {
  records: number;
  eventsPerSecond: number;
  /** From write() to its promise resolving, per batch. */
  writeP50Ms: number;
  writeP99Ms: number;
  writeMaxMs: number;
  /** The synchronous part of write(): wall, and on CPU (undefined where the wait for a core is not known). */
  call: Durations;
  /** Per batch, the longest piece of the sink's own work on the main thread (SqliteAuditSink.takeLongestStep), over the timed batches. */
  step: StepDurations;
  /** The same, over the batches during which no garbage collection pause was reported. */
  stepWithoutGc: StepDurations;
  /** Share of the timed batches during which a garbage collection pause was reported. */
  batchesWithGc: number;
  /** Longest main-thread turn per batch, over the probe pass. */
  turn: Durations;
  /** The same on CPU, less the garbage collection pauses in it (in `wall*`; undefined where the wait for a core is not known). */
  turnWithoutGc: Durations | undefined;
  /** Longest garbage collection pause while the probe pass wrote. */
  gcMaxMs: number;
  /** Main thread CPU time per record during the write phases (undefined where unknown). */
  mainUs: number | undefined;
  /** The rest of the process's CPU time per record: the writer thread, and GC helpers. */
  writerUs: number | undefined;
  /** Database file plus WAL, per record, at the end. */
  bytesPerRecord: number;
  /** Chaining per record (the writer's cost, untimed in the rate). */
  chainUs: number;
  /** Share of the machine's CPU used by other processes during the write phases, if known. */
  otherLoad: number | undefined;
  verified?: boolean;
}

export interface Durations {
  wallP99Ms: number;
  wallMaxMs: number;
  cpuP99Ms: number | undefined;
  cpuMaxMs: number | undefined;
}

/** Records made (and chained) at a time before they are written. */
const PHASE_RECORDS = 20_000;

/**
 * A full garbage collection, run (untimed) after each phase's records are made: chaining leaves
 * some 3 KB of garbage a record, and collecting it during the writes charged the bench's garbage to
 * the sink (the same writes measured ~25% slower with phases of 10,000 records than of 50,000,
 * both threads' CPU per record up by half). `--expose-gc` set at run time gives the function.
 */
const collectGarbage: () => void = (() => {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
})();
/** Batches written during the probe pass. */
const HOLD_BATCHES = 400;

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
  /**
   * Made once, like the rest: in the gateway a grant's label, a rule's pointer and a reason are
   * the same string object on every record (the grant's, the compiled policy's), which the string
   * caches of the sinks and the thread's wire look up by a hash the string keeps.
   */
  private readonly labels: string[];
  private readonly rules = new Map<string, string>();
  private readonly sessions: string[];
  private readonly versions: Record<string, string>;
  private readonly pickGrant: () => number;
  private n = 0;

  constructor(seed: number, spread: 'zipf' | 'uniform') {
    this.rnd = random(seed);
    this.grants = Array.from({ length: GRANTS }, () => uuid(this.rnd));
    this.labels = Array.from({ length: GRANTS }, (_, g) => `agent-${g}`);
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

  private rule(pointer: string): string {
    let r = this.rules.get(pointer);
    if (r === undefined) this.rules.set(pointer, (r = pointer));
    return r;
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
      grantLabel: this.labels[g]!,
      session: this.sessions[g * SESSIONS_PER_GRANT + (i % SESSIONS_PER_GRANT)]!,
      server: t.server,
      policyVersion: this.versions[t.server]!,
    };
    if (rnd() < 0.1) {
      return { ...base, method: 'tools/list', tool: null, decision: 'allow', rule: null, reason: null, arguments: null, upstreamStatus: 'ok', latencyMs: round2(2 + rnd() * 20), resultBytes: 4_000 + Math.floor(rnd() * 8_000), error: null };
    }
    const x = rnd();
    const decision = DECISIONS.find(([, upTo]) => x < upTo)![0];
    // As the gateway makes them (`keys` mode): the sorted keys and the hash of the arguments.
    const args = auditArguments(Object.fromEntries(t.keys.map((k) => [k, hex(rnd, 8)])), 'keys');
    if (decision !== 'allow' && decision !== 'approved') {
      return {
        ...base,
        method: 'tools/call',
        tool: t.tool,
        decision,
        rule: this.rule(decision === 'rate_limited' ? `/tools/${t.tool}/limits/0` : `/tools/${t.tool}/deny_if/0`),
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
      rule: this.rule(`/tools/${t.tool}`),
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

/** Makes the next `count` records of `traffic`, chained after `prev`, in batches of `size`. */
function makeBatches(traffic: Traffic, stream: string, prev: AuditRecord | undefined, count: number, size: number): AuditRecord[][] {
  const batches: AuditRecord[][] = [];
  for (let made = 0; made < count; ) {
    const n = Math.min(size, count - made);
    const batch: AuditRecord[] = new Array(n);
    for (let k = 0; k < n; k++) batch[k] = prev = chain(stream, prev, traffic.next());
    batches.push(batch);
    made += n;
  }
  return batches;
}

/**
 * Writes `batches` through `sink`, `inFlight` at a time, each as soon as a slot is free. Notes
 * each call's synchronous time and each write's latency; `onDone` runs as each write resolves.
 */
async function writeAll(
  sink: SqliteAuditSink,
  batches: AuditRecord[][],
  inFlight: number,
  clock: ThreadClock,
  calls: { wall: number[]; cpu: number[] },
  latencies: number[],
  onDone?: () => void,
  steps?: Array<{ start: number; end: number; ms: number }>,
): Promise<void> {
  let next = 0;
  let active = 0;
  await new Promise<void>((resolve, reject) => {
    const launch = (): void => {
      while (active < inFlight && next < batches.length) {
        const batch = batches[next++]!;
        const s0 = clock.read();
        const t0 = performance.now();
        const written = sink.write(batch);
        const t1 = performance.now();
        const s1 = clock.read();
        calls.wall.push(t1 - t0);
        if (s0 !== undefined && s1 !== undefined) calls.cpu.push(t1 - t0 - (s1.wait - s0.wait));
        active++;
        written.then(() => {
          const t2 = performance.now();
          latencies.push(t2 - t0);
          steps?.push({ start: t0, end: t2, ms: sink.takeLongestStep() });
          active--;
          onDone?.();
          if (next === batches.length && active === 0) resolve();
          else launch();
        }, reject);
      }
    };
    launch();
  });
}

/** Writes `records` records of fresh traffic through a sink on a new file in `dir`, then the probe pass; see the top of the file. */
export async function benchSqliteSink(c: AuditBenchCase, records: number, dir: string, verify = false): Promise<AuditBenchResult> {
  const file = path.join(dir, `audit-${c.batch}-${c.synchronous}-${c.grants}-${c.inFlight}.db`);
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  const sink = openSqliteAuditSink(file, { synchronous: c.synchronous, inline: c.inline === true });
  const clock = new ThreadClock();
  const traffic = new Traffic(42, c.grants);
  const stream = uuid(random(7));
  const calls = { wall: [] as number[], cpu: [] as number[] };
  const latencies: number[] = [];
  const steps: Array<{ start: number; end: number; ms: number }> = [];
  // Garbage collection pauses during the timed writes: batches that saw one are also counted apart.
  const timedGcs: Array<{ start: number; end: number }> = [];
  const timedGc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) timedGcs.push({ start: e.startTime, end: e.startTime + e.duration });
  });
  timedGc.observe({ entryTypes: ['gc'] });
  let prev: AuditRecord | undefined;
  let writeMs = 0;
  let chainMs = 0;
  let mainMs: number | undefined = 0;
  let processMs = 0;
  let machineBusy: number | undefined = 0;
  let verified: boolean | undefined;
  try {
    // The first write starts the writer thread: not part of a sustained rate.
    await sink.write(makeBatches(traffic, stream, undefined, 1, 1)[0]!.map((r) => (prev = r)));
    for (let written = 1; written < records; ) {
      const c0 = performance.now();
      const batches = makeBatches(traffic, stream, prev, Math.min(PHASE_RECORDS, records - written), c.batch);
      const last = batches[batches.length - 1]!;
      prev = last[last.length - 1];
      chainMs += performance.now() - c0;
      collectGarbage();
      const t0 = performance.now();
      const main0 = clock.read();
      const cpu0 = process.cpuUsage();
      const machine0 = machineCpu();
      sink.takeLongestStep();
      await writeAll(sink, batches, c.inFlight, clock, calls, latencies, undefined, steps);
      const machine1 = machineCpu();
      const cpu = process.cpuUsage(cpu0);
      const main1 = clock.read();
      writeMs += performance.now() - t0;
      processMs += (cpu.user + cpu.system) / 1e3;
      mainMs = main0 === undefined || main1 === undefined || mainMs === undefined ? undefined : mainMs + main1.run - main0.run;
      machineBusy = machine0 === undefined || machine1 === undefined || machineBusy === undefined ? undefined : machineBusy + machine1.busy - machine0.busy;
      for (const b of batches) written += b.length;
    }
    const bytes = ['', '-wal'].reduce((sum, suffix) => sum + sizeOf(file + suffix), 0);
    await new Promise((resolve) => setTimeout(resolve, 50));
    timedGc.disconnect();
    const quiet = steps.filter((b) => !timedGcs.some((g) => g.start < b.end && g.end > b.start));

    // The probe pass: per batch, the longest gap between two runs of a setImmediate probe. Records
    // are made a phase at a time, as above, while the probe is paused.
    const turns = { wall: [] as number[], cpu: [] as number[], sink: [] as number[] };
    const gcs: Array<{ start: number; end: number }> = [];
    const gc = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) gcs.push({ start: e.startTime, end: e.startTime + e.duration });
    });
    gc.observe({ entryTypes: ['gc'] });
    /** When the probe measured: GC pauses while records were being made are none of the sink's. */
    const windows: Array<{ start: number; end: number }> = [];
    /** Gaps long enough to matter (over 0.1 ms), kept to take GC pauses out of them afterwards. */
    const long: Array<{ batch: number; start: number; end: number; cpu: number }> = [];
    let batch = 0;
    let probing = true;
    let measuring = false;
    let lastWall = 0;
    let lastWait: number | undefined;
    let longestWall = 0;
    let longestCpu = 0;
    const probe = (): void => {
      if (!probing) return;
      const now = performance.now();
      const wait = clock.read()?.wait;
      if (measuring) {
        const gap = now - lastWall;
        const cpu = wait !== undefined && lastWait !== undefined ? gap - (wait - lastWait) : undefined;
        if (gap > longestWall) longestWall = gap;
        if (cpu !== undefined && cpu > longestCpu) longestCpu = cpu;
        if (cpu !== undefined && cpu > 0.1) long.push({ batch, start: lastWall, end: now, cpu });
      }
      lastWall = now;
      lastWait = wait;
      setImmediate(probe);
    };
    setImmediate(probe);
    for (let left = HOLD_BATCHES * c.batch; left > 0; ) {
      measuring = false;
      const batches = makeBatches(traffic, stream, prev, Math.min(PHASE_RECORDS, left), c.batch);
      const last = batches[batches.length - 1]!;
      prev = last[last.length - 1];
      left -= batches.length * c.batch;
      collectGarbage();
      await new Promise((resolve) => setImmediate(resolve));
      measuring = true;
      const window = { start: performance.now(), end: Infinity };
      windows.push(window);
      await writeAll(sink, batches, c.inFlight, clock, { wall: [], cpu: [] }, [], () => {
        turns.wall.push(longestWall);
        if (lastWait !== undefined) turns.cpu.push(longestCpu);
        longestWall = 0;
        longestCpu = 0;
        batch++;
      });
      window.end = performance.now();
    }
    probing = false;
    // GC entries arrive after the fact: a turn without its GC pauses is worked out at the end.
    await new Promise((resolve) => setTimeout(resolve, 50));
    gc.disconnect();
    if (turns.cpu.length > 0) {
      const withoutGc = new Float64Array(turns.cpu.length);
      for (const g of long) {
        const paused = gcs.reduce((sum, e) => sum + Math.max(0, Math.min(g.end, e.end) - Math.max(g.start, e.start)), 0);
        if (g.batch < withoutGc.length) withoutGc[g.batch] = Math.max(withoutGc[g.batch]!, g.cpu - paused);
      }
      // A batch whose every gap was under 0.1 ms keeps 0.1 as its bound.
      turns.sink = Array.from(withoutGc, (v, i) => (v > 0 ? v : Math.min(0.1, turns.cpu[i]!)));
    }
    const gcMaxMs = gcs.filter((e) => windows.some((w) => e.start < w.end && e.end > w.start)).reduce((max, e) => Math.max(max, e.end - e.start), 0);

    if (verify) {
      const result = await sink.verify();
      const expected = records + HOLD_BATCHES * c.batch;
      if (!result.ok || result.records !== expected) throw new Error(`${c.label}: verification failed: ${JSON.stringify(result)}`);
      verified = true;
    }
    const sortedLatencies = Float64Array.from(latencies).sort();
    const cores = cpus().length;
    return {
      ...c,
      records,
      eventsPerSecond: (records - 1) / (writeMs / 1e3),
      writeP50Ms: percentile(sortedLatencies, 50),
      writeP99Ms: percentile(sortedLatencies, 99),
      writeMaxMs: sortedLatencies[sortedLatencies.length - 1]!,
      call: durations(calls),
      step: stepDurations(steps.map((b) => b.ms)),
      stepWithoutGc: stepDurations(quiet.map((b) => b.ms)),
      batchesWithGc: (steps.length - quiet.length) / steps.length,
      turn: durations(turns),
      turnWithoutGc: turns.sink.length === 0 ? undefined : durations({ wall: turns.sink, cpu: [] }),
      gcMaxMs,
      mainUs: mainMs === undefined ? undefined : (mainMs * 1e3) / records,
      writerUs: mainMs === undefined ? undefined : ((processMs - mainMs) * 1e3) / records,
      bytesPerRecord: bytes / records,
      chainUs: (chainMs * 1e3) / records,
      otherLoad: machineBusy === undefined ? undefined : Math.max(0, (machineBusy - processMs * 1e3) / (writeMs * 1e3 * cores)),
      ...(verified === undefined ? {} : { verified }),
    };
  } finally {
    clock.close();
    await sink.close();
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  }
}

export interface StepDurations {
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

function stepDurations(steps: number[]): StepDurations {
  const sorted = Float64Array.from(steps).sort();
  return { p50Ms: percentile(sorted, 50), p90Ms: percentile(sorted, 90), p99Ms: percentile(sorted, 99), maxMs: sorted[sorted.length - 1]! };
}

/**
 * What this machine does to a main thread by itself: the probe of the probe pass, for `ms`, with
 * no sink and one other thread kept busy (as the writer thread is), its longest gap per 5 ms (about
 * one batch) as p99 and max. On a virtual machine this is not zero: the host runs other guests.
 */
export async function machineFloor(ms = 4_000): Promise<{ p99Ms: number; maxMs: number }> {
  const busy = new Worker('const end = Date.now() + Number(require("node:worker_threads").workerData); while (Date.now() < end);', { eval: true, workerData: ms + 500 });
  try {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const longest: number[] = [];
    const start = performance.now();
    let windowEnd = start + 5;
    let last = start;
    let worst = 0;
    await new Promise<void>((resolve) => {
      const probe = (): void => {
        const now = performance.now();
        worst = Math.max(worst, now - last);
        last = now;
        if (now >= windowEnd) {
          longest.push(worst);
          worst = 0;
          windowEnd = now + 5;
        }
        if (now - start < ms) setImmediate(probe);
        else resolve();
      };
      setImmediate(probe);
    });
    const sorted = Float64Array.from(longest).sort();
    return { p99Ms: percentile(sorted, 99), maxMs: sorted[sorted.length - 1]! };
  } finally {
    await busy.terminate();
  }
}

function durations(d: { wall: number[]; cpu: number[] }): Durations {
  const wall = Float64Array.from(d.wall).sort();
  const cpu = Float64Array.from(d.cpu).sort();
  return {
    wallP99Ms: percentile(wall, 99),
    wallMaxMs: wall[wall.length - 1]!,
    cpuP99Ms: cpu.length === 0 ? undefined : percentile(cpu, 99),
    cpuMaxMs: cpu.length === 0 ? undefined : cpu[cpu.length - 1]!,
  };
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

export function auditSqliteMarkdown(results: AuditBenchResult[], command: string, dir: string, floor?: { p99Ms: number; maxMs: number }): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const first = results[0];
  const grants = (r: AuditBenchResult) => (r.grants === 'zipf' ? 'Zipf over 1,000' : 'uniform over 1,000');
  const opt = (v: number | undefined, f: (v: number) => string) => (v === undefined ? '–' : f(v));
  const lines = [
    `Measured with \`${command}\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${model} × ${cpus().length} cores, ${platform()} ${release()}; files under ${dir}.`,
    `Each row writes ${first === undefined ? '–' : int(first.records)} chained records of one stream into a fresh file through the sink's \`write()\`, ` +
      "which hands each batch to the sink's writer thread and resolves once it is committed (WAL, checkpoint every ~16 MiB of WAL). " +
      'Events/s is records over the summed time of the writes; write latency is from the call to its promise resolving; ' +
      "CPU per record is the main thread's and the rest of the process's (the writer thread, GC helpers). See bench/audit-sqlite.ts for the method.",
    '',
    '| case | batch | in flight | synchronous | grants | events/s | write p50 ms | write p99 ms | write max ms | main thread µs/record | writer thread µs/record | bytes/record on disk | other load |',
    '|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.label} | ${int(r.batch)} | ${r.inFlight} | ${r.synchronous.toUpperCase()} | ${grants(r)} | ${int(r.eventsPerSecond)} | ` +
        `${ms(r.writeP50Ms)} | ${ms(r.writeP99Ms)} | ${ms(r.writeMaxMs)} | ${opt(r.mainUs, (v) => v.toFixed(1))} | ${opt(r.writerUs, (v) => v.toFixed(1))} | ` +
        `${int(r.bytesPerRecord)} | ${opt(r.otherLoad, (v) => `${Math.round(v * 100)}%`)} |`,
    );
  }
  lines.push('');
  lines.push(
    "How long the sink held the main event loop. Sink's longest step: per batch, the longest piece of the sink's own work on the main thread (the synchronous part of `write()`, a later turn handing over the rest of the batch, the handling of the writer thread's answer), timed by the sink (`takeLongestStep()`), over the timed batches. " +
      '`write()` call: its synchronous part, on CPU (less the time the main thread waited for a core, from Linux\'s schedstat). ' +
      `Longest turn: per batch, the longest stretch between two runs of a setImmediate probe, over ${int(HOLD_BATCHES)} more batches written after them: it holds whatever ran in between (the sink's steps, the bench's awaits, garbage collection, and the machine itself), ` +
      'on CPU, on CPU with the GC pauses a PerformanceObserver reports taken out, and on the clock.' +
      (floor === undefined ? '' : ` For scale, the same probe on this machine with no sink and one other thread busy saw ${ms(floor.p99Ms)} ms at p99 and ${ms(floor.maxMs)} ms at most per 5 ms: the host's doing, not the process's.`),
  );
  lines.push('');
  lines.push(
    "| case | batch | in flight | sink's longest step p50 / p90 / p99 / max ms | same, batches without a GC pause: p99 / max ms (share with one) | `write()` call on CPU p99 / max ms | longest turn on CPU, GC left out, p99 ms | longest turn on CPU p99 ms | longest turn wall p99 / max ms | longest GC pause ms |",
  );
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    lines.push(
      `| ${r.label} | ${int(r.batch)} | ${r.inFlight} | ${ms(r.step.p50Ms)} / ${ms(r.step.p90Ms)} / ${ms(r.step.p99Ms)} / ${ms(r.step.maxMs)} | ` +
        `${ms(r.stepWithoutGc.p99Ms)} / ${ms(r.stepWithoutGc.maxMs)} (${Math.round(r.batchesWithGc * 100)}%) | ${opt(r.call.cpuP99Ms, ms)} / ${opt(r.call.cpuMaxMs, ms)} | ` +
        `${opt(r.turnWithoutGc?.wallP99Ms, ms)} | ${opt(r.turn.cpuP99Ms, ms)} | ${ms(r.turn.wallP99Ms)} / ${ms(r.turn.wallMaxMs)} | ${ms(r.gcMaxMs)} |`,
    );
  }
  const chainUs = results.reduce((sum, r) => sum + r.chainUs, 0) / Math.max(1, results.length);
  lines.push('');
  lines.push(`Chaining a record (the audit writer's canonical JSON and SHA-256, on the gateway's audit thread, not in the rates above): ${chainUs.toFixed(1)} µs.`);
  const target = results.find((r) => r.synchronous === 'normal' && r.grants === 'zipf' && r.inFlight === 1 && r.batch === 500);
  if (target !== undefined) {
    const rateMet = target.eventsPerSecond >= AUDIT_SQLITE_TARGETS.eventsPerSecond;
    lines.push(
      `Target: at least ${int(AUDIT_SQLITE_TARGETS.eventsPerSecond)} events/s sustained (batches of 500, one in flight as the audit writer sends them, synchronous NORMAL, realistic grants): ` +
        `${int(target.eventsPerSecond)}${target.otherLoad === undefined ? '' : ` with ${Math.round(target.otherLoad * 100)}% of the machine used by other processes`}, ${rateMet ? 'met' : '**not met**'}.`,
    );
  }
  if (results.length > 0) {
    // An inline sink holds its own thread for each whole batch by design: the event loop it does not hold is the gateway's.
    const threaded = results.filter((r) => r.inline !== true);
    const worst = (f: (r: AuditBenchResult) => number | undefined) => Math.max(...threaded.map((r) => f(r) ?? NaN));
    const p90 = worst((r) => r.step.p90Ms);
    const p99 = worst((r) => r.step.p99Ms);
    const max = worst((r) => r.step.maxMs);
    const quietP99 = worst((r) => r.stepWithoutGc.p99Ms);
    const met = p99 <= AUDIT_SQLITE_TARGETS.holdMs * 1.1;
    lines.push(
      `Target: a batch holds the event loop for no more than about ${AUDIT_SQLITE_TARGETS.holdMs} ms: the sink's longest step per batch was ${ms(p90)} ms at p90 and ${ms(p99)} ms at p99 (worst case), ${met ? 'met' : '**not met** at p99'}; ` +
        `over the batches during which no garbage collection pause was reported, ${ms(quietP99)} ms at p99. The longest single step was ${ms(max)} ms. Steps are timed on the clock, so one that garbage collection or the host interrupted counts whole` +
        `${floor === undefined ? '' : ` (the machine's own floor, above: ${ms(floor.p99Ms)} ms at p99)`}. ` +
        `The probe's longest turn per batch, which holds everything else the main thread did, was ${opt(worst((r) => r.turnWithoutGc?.wallP99Ms), ms)} ms at p99 on CPU without reported GC pauses, ${opt(worst((r) => r.turn.cpuP99Ms), ms)} ms with them, ` +
        `and ${ms(worst((r) => r.turn.wallP99Ms))} ms on the clock (${ms(worst((r) => r.turn.wallMaxMs))} ms at most); the longest garbage collection pause was ${ms(worst((r) => r.gcMaxMs))} ms.`,
    );
  }
  return lines.join('\n');
}

function usageError(message: string): never {
  throw new Error(`${message}\n\n${USAGE}`);
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
      case: { type: 'string', multiple: true },
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
    { label: 'realistic traffic', batch: 500, inFlight: 1, synchronous: 'normal', grants: 'zipf' },
    { label: 'realistic traffic', batch: 1_000, inFlight: 1, synchronous: 'normal', grants: 'zipf' },
    { label: 'worst case: calls spread evenly over the grants', batch: 1_000, inFlight: 1, synchronous: 'normal', grants: 'uniform' },
    { label: 'strict audit (every commit fsync\'ed)', batch: 500, inFlight: 1, synchronous: 'full', grants: 'zipf' },
    { label: 'pipelined: batches arriving while one commits share its transaction', batch: 500, inFlight: 4, synchronous: 'normal', grants: 'zipf' },
    { label: "inline, as the gateway's audit thread writes it", batch: 500, inFlight: 1, synchronous: 'normal', grants: 'zipf', inline: true },
  ];
  if (values.write && values.case !== undefined) usageError('--write publishes every case: leave out --case');
  const chosen = values.case === undefined ? cases : values.case.map((n) => cases[Number(n) - 1] ?? usageError(`no case ${n}: there are ${cases.length}`));
  const results: AuditBenchResult[] = [];
  process.stderr.write('audit-sqlite bench: how this machine holds a main thread by itself…\n');
  const floor = await machineFloor();
  try {
    for (const c of chosen) {
      process.stderr.write(`audit-sqlite bench: ${c.label}, batches of ${c.batch}, ${c.inFlight} in flight, ${c.synchronous}…\n`);
      results.push(await benchSqliteSink(c, records, scratch, values.verify === true));
    }
  } finally {
    if (values.dir === undefined) rmSync(scratch, { recursive: true, force: true });
  }
  const md = auditSqliteMarkdown(results, `node dist/bench/audit-sqlite.js${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`, values.dir === undefined ? 'the system temp dir' : scratch, floor);
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
