/**
 * `node dist/bench/audit-thread.js [--quick] [--write]`: the audit log as the gateway runs it,
 * through its trail into the default SQLite sink, without the gateway around it, recorded both
 * ways: by the event loop (src/audit/loop-recorder.ts, the default for `async` SQLite logs) and by
 * the audit thread (src/audit/thread.ts, which records `strict` logs and any other sink). Two
 * questions:
 *
 * - What does recording cost the event loop, and the rest of the process? Calls are recorded the
 *   way the gateway records a forwarded call (begin, allowed, forwarding, finished: one outcome
 *   record) at a steady rate, a few per millisecond, and the main thread's time on CPU (Linux's
 *   schedstat) is compared with the same loop recording nothing; the rest of the process (the
 *   audit thread, V8's helpers) likewise, until every record is written. And the "a batch
 *   never blocks the event loop for more than about a millisecond": the longest single step is
 *   timed, for the loop each turn's chaining and each slice, commit and try for the lock (the
 *   longest of each millisecond), for the thread each hand-over (a record() call including the
 *   message it sends when POST_AT events have piled up, or a timer-driven send). Timed two ways:
 *   on the clock, and less the time the main thread waited for a CPU (Linux's schedstat) while
 *   the step was under way. On this 2-core machine the kernel gives the main thread's core to
 *   V8's garbage collection helpers, the audit thread, its own threads or another process now and
 *   then, for up to a scheduler tick (4 ms): a step on the clock counts that whole, though no
 *   work of the step's held the loop for it. The steps are timed in a pass of their own, as
 *   reading the clock costs each step some µs; the cost a call is measured without it. Then the
 *   event loop records at the highest rate into one file for longer (40 s), for what only shows
 *   over time: the WAL's growth, checkpoints, a database larger than SQLite's page cache.
 * - How many records a second can each take? Events are recorded as fast as the loop can, in
 *   bursts, and the rate is the records over the time until the last one is written.
 *
 * Records carry `keys` arguments (the default), one of a thousand grants and a hundred sessions.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, platform, release, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { AuditConfig } from '../src/config/index.js';
import { AuditLog } from '../src/audit/log.js';
import { AuditThread } from '../src/audit/thread.js';
import { AUDIT_WRITER_DEFAULTS } from '../src/audit/writer.js';
import type { AuditRequest } from '../src/audit/trail.js';
import { LongestStep, type StepTimes } from '../src/util/longest-step.js';
import { ThreadClock } from './procs.js';
import { BENCH_DOC, writeMarkedSection } from './report.js';
import { percentile } from './stats.js';

const USAGE = `Usage: node dist/bench/audit-thread.js [--quick] [--write]

  --quick   shorter runs (about half a minute instead of three)
  --write   also write the results into docs/benchmarks.md (audit-thread-bench markers)
`;

/** The bound on how long a batch may hold the event loop. */
const HOLD_MS = 1;

/** This thread's time on CPU in µs so far (exact at scheduler ticks: fine over a run of seconds). */
function onCpuUs(): number {
  return (clock.read()?.run ?? NaN) * 1000;
}
const clock = new ThreadClock();
/** How long this thread has waited for a CPU so far, ms (exact); 0 where Linux does not say. */
const waited = (): number => clock.read()?.wait ?? 0;

function request(i: number): AuditRequest {
  return {
    requestId: i,
    grantId: `grant-${String(i % 1000).padStart(4, '0')}`,
    grantLabel: `agent-${i % 1000}`,
    session: `5f0c${String(i % 100).padStart(4, '0')}-1b2c-4d5e-8f90-a1b2c3d4e5f6`,
    server: 'files',
    method: 'tools/call',
    tool: 'read_file',
    args: { path: `/srv/data/report-${i % 5000}.csv`, encoding: 'utf8' },
    policyVersion: 'sha256:4f1c0e9d2a7b',
  };
}

type Recorder = 'loop' | 'thread';

function config(dir: string): AuditConfig {
  return {
    sinks: [`sqlite:${path.join(dir, 'audit.db')}`],
    arguments: 'keys',
    durability: 'async',
    // The writer's own defaults, which an `audit:` section that names only its sinks gets.
    flushIntervalMs: AUDIT_WRITER_DEFAULTS.flushIntervalMs,
    batchSize: AUDIT_WRITER_DEFAULTS.batchSize,
    maxQueue: AUDIT_WRITER_DEFAULTS.maxQueue,
    onFull: 'block',
    spillDir: path.join(dir, 'spill'),
  };
}

/** Times every hand-over of events to the thread (the private post(), called by record() and by its timer). */
function timePosts(): { steps: StepTimes[]; stop(): void } {
  const proto = AuditThread.prototype as unknown as { post(this: AuditThread): void };
  const original = proto.post;
  const steps: StepTimes[] = [];
  proto.post = function (this: AuditThread) {
    const w = waited();
    const t = performance.now();
    original.call(this);
    const clock = performance.now() - t;
    steps.push({ clock, own: clock - (waited() - w) });
  };
  return { steps, stop: () => (proto.post = original) };
}

interface Steady {
  calls: number;
  mainUsPerCall: number;
  baselineUsPerCall: number;
  /** The rest of the process on CPU a call, recording less not recording: the audit thread, and V8's helpers for it. */
  threadUsPerCall: number;
  /** The steps timed (in a pass of their own), ms: the thread's hand-overs, or the loop's longest step of each millisecond. */
  steps: StepTimes[];
}

/**
 * Records `rate` calls a second for `seconds`, in timer turns of a millisecond, on `log` (or
 * none); `steps` gets the longest step the loop recorder took since the turn before, when it took one.
 */
async function steady(log: AuditLog | undefined, rate: number, seconds: number, steps?: StepTimes[]): Promise<{ calls: number; usPerCall: number }> {
  let i = 0;
  const t0 = performance.now();
  const c0 = onCpuUs();
  await new Promise<void>((resolve) => {
    const tick = () => {
      const step = log?.takeLongestLoopStep();
      if (step !== undefined && step.clock > 0) steps?.push(step);
      const due = Math.floor(((performance.now() - t0) * rate) / 1000);
      while (i < due) {
        const req = request(i++);
        if (log !== undefined) {
          const call = log.trail.begin(req);
          call.allowedBy('/tools/read_file', null);
          void call.forwarding();
          call.finished('ok', 180, null);
        }
      }
      if (performance.now() - t0 < seconds * 1000) setTimeout(tick, 1);
      else resolve();
    };
    tick();
  });
  return { calls: i, usPerCall: (onCpuUs() - c0) / i };
}

/** The whole process's time on CPU in µs so far (every thread). */
function processCpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** Runs `use` on a new audit log recorded by `recorder` into a fresh folder, closing and removing both after. */
async function withLog<T>(recorder: Recorder, use: (log: AuditLog, dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-audit-thread-'));
  try {
    const log = await AuditLog.open(config(dir), undefined, { recordOn: recorder });
    try {
      return await use(log, dir);
    } finally {
      await log.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measureSteady(recorder: Recorder, rate: number, seconds: number): Promise<Steady> {
  // What the process's other threads (V8's helpers) use while the loop records nothing.
  const p0 = processCpuUs();
  const m0 = onCpuUs();
  const base = await steady(undefined, rate, seconds);
  const baseOthers = (processCpuUs() - p0 - (onCpuUs() - m0)) / base.calls;
  return withLog(recorder, async (log) => {
    // Warm: the first calls compile the trail's code and send strings the thread has not seen.
    await steady(log, rate, 1);
    await log.flush();
    const q0 = processCpuUs();
    const n0 = onCpuUs();
    const on = await steady(log, rate, seconds);
    // Until every record is written: the work for the last calls is theirs too.
    await log.flush();
    const others = (processCpuUs() - q0 - (onCpuUs() - n0)) / on.calls;
    // The steps, timed both ways.
    log.takeLongestLoopStep();
    LongestStep.waited = waited;
    const posts = timePosts();
    const loopSteps: StepTimes[] = [];
    try {
      await steady(log, rate, seconds, loopSteps);
      await log.flush();
    } finally {
      posts.stop();
      LongestStep.waited = () => 0;
    }
    return {
      calls: on.calls,
      mainUsPerCall: on.usPerCall,
      baselineUsPerCall: base.usPerCall,
      threadUsPerCall: others - baseOthers,
      steps: recorder === 'loop' ? loopSteps : posts.steps,
    };
  });
}

/**
 * The event loop recording `rate` calls a second for `seconds` into one file: what only shows
 * over time (the WAL's growth and its checkpoints, a database many times the page cache). The
 * steps, timed both ways, and the WAL file's largest size.
 */
async function measureSustained(rate: number, seconds: number): Promise<{ calls: number; steps: StepTimes[]; walMaxBytes: number }> {
  return withLog('loop', async (log, dir) => {
    const wal = path.join(dir, 'audit.db-wal');
    let walMaxBytes = 0;
    const sampler = setInterval(() => {
      try {
        walMaxBytes = Math.max(walMaxBytes, statSync(wal).size);
      } catch {
        // Not made yet.
      }
    }, 100);
    try {
      await steady(log, rate, 1);
      log.takeLongestLoopStep();
      LongestStep.waited = waited;
      const steps: StepTimes[] = [];
      const { calls } = await steady(log, rate, seconds, steps);
      await log.flush();
      return { calls, steps, walMaxBytes };
    } finally {
      LongestStep.waited = () => 0;
      clearInterval(sampler);
    }
  });
}

/** Records `total` calls as fast as the loop can, a message's worth per turn; records/s until all are written. */
async function measureCapacity(recorder: Recorder, total: number): Promise<{ perSecond: number; written: number }> {
  return withLog(recorder, async (log) => {
    const t0 = performance.now();
    for (let i = 0; i < total; ) {
      for (const end = Math.min(total, i + 256); i < end; i++) {
        const call = log.trail.begin(request(i));
        call.allowedBy('/tools/read_file', null);
        void call.forwarding();
        call.finished('ok', 180, null);
      }
      // A turn of the event loop between bursts, as the gateway has between requests.
      await new Promise((r) => setImmediate(r));
    }
    await log.flush();
    const seconds = (performance.now() - t0) / 1000;
    const written = (await log.stats())[0]!.written;
    return { perSecond: total / seconds, written };
  });
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { quick: { type: 'boolean' }, write: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const quick = values.quick === true;
  const rates = [2_000, 8_000, 16_000];
  const seconds = quick ? 2 : 6;
  const rows: string[] = [];
  /** Per recorder, each way of timing: the longest step, and how many of the steps took over HOLD_MS. */
  type Tally = { longest: number; over: number };
  const tally = (): Record<keyof StepTimes, Tally> => ({ clock: { longest: 0, over: 0 }, own: { longest: 0, over: 0 } });
  const held: Record<Recorder, Record<keyof StepTimes, Tally> & { steps: number }> = { loop: { ...tally(), steps: 0 }, thread: { ...tally(), steps: 0 } };
  /** `steps` timed `way`, sorted, counted in `recorder`'s tally. */
  const tallied = (recorder: Recorder, steps: readonly StepTimes[], way: keyof StepTimes): Float64Array => {
    const ms = Float64Array.from(steps, (t) => t[way]).sort();
    const t = held[recorder][way];
    t.longest = Math.max(t.longest, ms.at(-1) ?? 0);
    t.over += ms.filter((x) => x > HOLD_MS).length;
    return ms;
  };
  const us = (ms: number) => (ms * 1000).toFixed(0);
  /**
   * Counts `steps` in `recorder`'s tally; gives the table's step cells (how many, on the clock
   * p50 / p99 / max, less waits p99 / max) and the longest each way, µs.
   */
  const stepCells = (recorder: Recorder, steps: readonly StepTimes[]): { cells: string; clock: string; own: string } => {
    const clock = tallied(recorder, steps, 'clock');
    const own = tallied(recorder, steps, 'own');
    held[recorder].steps += steps.length;
    const [clockMax, ownMax] = [us(clock.at(-1) ?? 0), us(own.at(-1) ?? 0)];
    return {
      cells: `${fmt(steps.length)} | ${us(percentile(clock, 50))} / ${us(percentile(clock, 99))} / ${clockMax} | ${us(percentile(own, 99))} / ${ownMax} |`,
      clock: clockMax,
      own: ownMax,
    };
  };
  const by: Record<Recorder, string> = { loop: 'event loop', thread: 'audit thread' };
  for (const recorder of ['loop', 'thread'] as const) {
    for (const rate of rates) {
      const r = await measureSteady(recorder, rate, seconds);
      const steps = stepCells(recorder, r.steps);
      rows.push(
        `| ${by[recorder]} | ${fmt(rate)} | ${fmt(r.calls)} | ${r.baselineUsPerCall.toFixed(1)} | ${r.mainUsPerCall.toFixed(1)} | ${(r.mainUsPerCall - r.baselineUsPerCall).toFixed(1)} | ${r.threadUsPerCall.toFixed(1)} | ` +
          steps.cells,
      );
      process.stderr.write(
        `${by[recorder]}, steady ${fmt(rate)} calls/s: ${(r.mainUsPerCall - r.baselineUsPerCall).toFixed(1)} µs of the event loop and ${r.threadUsPerCall.toFixed(1)} µs of the rest a call; ` +
          `longest step ${steps.clock} µs on the clock, ${steps.own} µs less waits for a CPU\n`,
      );
    }
  }
  const sustainedRate = rates.at(-1)!;
  const sustainedSeconds = quick ? 10 : 40;
  const sustained = await measureSustained(sustainedRate, sustainedSeconds);
  const sustainedSteps = stepCells('loop', sustained.steps);
  rows.push(`| event loop, ${sustainedSeconds} s into one file | ${fmt(sustainedRate)} | ${fmt(sustained.calls)} | | | | | ${sustainedSteps.cells}`);
  process.stderr.write(
    `event loop, ${sustainedSeconds} s at ${fmt(sustainedRate)} calls/s: longest step ${sustainedSteps.clock} µs on the clock, ${sustainedSteps.own} µs less waits for a CPU; ` +
      `WAL at most ${(sustained.walMaxBytes / 2 ** 20).toFixed(0)} MiB\n`,
  );
  const cap = { loop: await measureCapacity('loop', quick ? 60_000 : 300_000), thread: await measureCapacity('thread', quick ? 60_000 : 300_000) };
  process.stderr.write(`capacity: ${fmt(cap.loop.perSecond)} records/s on the event loop, ${fmt(cap.thread.perSecond)} on the audit thread\n`);
  const met = (ms: number) => (ms <= HOLD_MS ? 'met' : '**not met**');
  const outcome = (recorder: Recorder, what: string) => {
    const h = held[recorder];
    return (
      `Recorded by the ${by[recorder]}, the longest ${what} took ${us(h.own.longest)} µs less waits for a CPU (${fmt(h.own.over)} of ${fmt(h.steps)} over ${HOLD_MS} ms), ${met(h.own.longest)}; ` +
      `on the clock ${us(h.clock.longest)} µs (${fmt(h.clock.over)} over).`
    );
  };
  const lines = [
    `Measured with \`node dist/bench/audit-thread.js${quick ? ' --quick' : ''}\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${cpus()[0]?.model.trim() ?? 'unknown CPU'} × ${cpus().length} cores, ${platform()} ${release()}.`,
    '',
    '| recorded by | calls/s | calls | event loop µs/call on CPU, nothing recorded | same, recorded | recording costs the event loop, µs/call | the rest of the process (audit thread, V8 helpers), µs/call on CPU | steps timed | step on the clock p50 / p99 / max µs | step less waits for a CPU p99 / max µs |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    'Steps timed, in a second pass at the same rate: for the event loop, the longest step of each millisecond that had one (a turn chaining what was recorded, a slice of rows, a step of the summary, a commit, a try for the lock); for the audit thread, every hand-over of events to it. ' +
      'Less waits for a CPU: less the time Linux says the main thread was runnable but waiting for a core during the step. Garbage collection pauses that fell in a step count in both. ' +
      `The sustained row: ${sustainedSeconds} s of calls into one file after a second's warm-up, its steps timed both ways throughout; the WAL file was at most ${(sustained.walMaxBytes / 2 ** 20).toFixed(0)} MiB.`,
    '',
    `Recorded as fast as one event loop can, until every record is written: ${fmt(cap.loop.perSecond)} records/s by the event loop (${fmt(cap.loop.written)} written), ${fmt(cap.thread.perSecond)} by the audit thread (${fmt(cap.thread.written)} written).`,
    `Target: a batch holds the event loop for no more than about ${HOLD_MS} ms. ${outcome('loop', 'step')} ${outcome('thread', 'hand-over')}`,
  ];
  const md = lines.join('\n');
  process.stdout.write(`${md}\n`);
  if (values.write) {
    writeMarkedSection(BENCH_DOC, 'audit-thread-bench', md);
    process.stderr.write(`wrote ${BENCH_DOC} (audit-thread-bench)\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`audit-thread bench: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
