/**
 * The processes a benchmark run starts, and the guarantee that none outlives it: each one is
 * stopped by closing its stdin (which every process here treats as "exit"), then SIGTERM, then
 * SIGKILL; and since each holds a pipe from the runner, even a runner killed with SIGKILL leaves
 * no orphan behind, because their stdin then reaches end-of-file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';

export interface Started {
  name: string;
  child: ChildProcess;
  /** The first stdout line that matched `ready`, as matched. */
  match: string[];
  /** Everything the process wrote on stderr so far (kept short), for error messages. */
  stderr(): string;
  exited: Promise<void>;
}

const running = new Set<Started>();

export interface StartOptions {
  name: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /**
   * A stdout line matching this means the process is ready. Without it the process counts as
   * ready once spawned, and its stdout is left to the caller (a stdio MCP server).
   */
  ready?: RegExp;
  timeoutMs?: number;
  /** Called with each stderr line once the process is ready (a gateway's warnings, say). */
  onStderrLine?: (line: string) => void;
}

export function start(opts: StartOptions): Promise<Started> {
  const child = spawn(opts.command, opts.args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let errText = '';
  let ready = false;
  let errBuf = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    if (errText.length < 20_000) errText += chunk;
    if (!ready || !opts.onStderrLine) return;
    errBuf += chunk;
    let nl: number;
    while ((nl = errBuf.indexOf('\n')) >= 0) {
      const line = errBuf.slice(0, nl);
      errBuf = errBuf.slice(nl + 1);
      if (line.trim()) opts.onStderrLine(line);
    }
  });
  child.stdin!.on('error', () => {});
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const register = (m: string[]) => {
      ready = true;
      clearTimeout(timer);
      const s: Started = { name: opts.name, child, match: m, stderr: () => errText, exited };
      running.add(s);
      void exited.then(() => running.delete(s));
      resolve(s);
    };
    let out = '';
    const fail = (why: string) => {
      clearTimeout(timer);
      kill(child, 'SIGKILL');
      reject(new Error(`${opts.name} ${why}${errText ? `; its stderr:\n${errText.trim()}` : ''}`));
    };
    const timer = setTimeout(() => fail(`was not ready within ${opts.timeoutMs ?? 15_000} ms`), opts.timeoutMs ?? 15_000);
    child.once('error', (err) => fail(`could not be started: ${err.message}`));
    child.once('exit', (code, signal) => {
      if (!ready) fail(`exited before it was ready (${signal ?? `code ${code}`})`);
    });
    const pattern = opts.ready;
    if (pattern === undefined) {
      child.once('spawn', () => register(['']));
      return;
    }
    child.stdout!.setEncoding('utf8');
    const onData = (chunk: string) => {
      out += chunk;
      const m = out.match(pattern);
      if (!m) return;
      child.stdout!.off('data', onData);
      child.stdout!.resume(); // keep draining whatever else it prints
      register(m);
    };
    child.stdout!.on('data', onData);
  });
}

function kill(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    child.kill(signal);
  } catch {
    // already gone
  }
}

/** Closes stdin, waits up to `graceMs`, then SIGTERM, then SIGKILL. */
export async function stop(s: Started, graceMs = 5000): Promise<void> {
  const gone = () => s.child.exitCode !== null || s.child.signalCode !== null;
  const wait = (ms: number) =>
    Promise.race([s.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(gone()), ms).unref())]);
  if (gone()) return;
  s.child.stdin?.end();
  if (await wait(graceMs)) return;
  kill(s.child, 'SIGTERM');
  if (await wait(2000)) return;
  kill(s.child, 'SIGKILL');
  await wait(2000);
}

/** Stops every process still running, in reverse start order (the gateway before its upstreams). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].reverse().map((s) => stop(s)));
}

/** Last resort on a synchronous exit path: SIGKILL whatever still runs. */
export function killAllNow(): void {
  for (const s of running) kill(s.child, 'SIGKILL');
}

/** Pids of the direct children of `pid` (Linux /proc), e.g. the stdio server a gateway spawned. */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // Kernels without CONFIG_PROC_CHILDREN: scan every process for its parent.
    const out: number[] = [];
    let entries: string[] = [];
    try {
      entries = readdirSync('/proc');
    } catch {
      return out;
    }
    for (const e of entries) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        if (Number(fields[1]) === pid) out.push(Number(e));
      } catch {
        // gone meanwhile
      }
    }
    return out;
  }
}

/**
 * CPU time (user + system) a process has used, in microseconds, from /proc/<pid>/stat; undefined
 * where /proc is not available. Resolution is one clock tick (10 ms at the usual 100 Hz).
 */
export function cpuMicros(pid: number, ticksPerSecond = 100): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat(5) (utime, stime) are at 11 and 12 once pid and comm are removed.
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticksPerSecond;
  } catch {
    return undefined;
  }
}

/** Machine-wide CPU time so far, µs, from /proc/stat: busy (user, nice, system) and stolen by the hypervisor. */
export function machineCpu(ticksPerSecond = 100): { busy: number; steal: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const us = (t: number | undefined) => ((t ?? 0) * 1e6) / ticksPerSecond;
    return { busy: us(f[0]) + us(f[1]) + us(f[2]), steal: us(f[7]) };
  } catch {
    return undefined;
  }
}

/**
 * Times the process's main thread (its event loop) went to sleep and was woken again: voluntary
 * context switches, from /proc/<pid>/status. Undefined where /proc is not available.
 */
export function wakeups(pid: number | 'self'): number | undefined {
  try {
    const m = /voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The calling thread's time on a CPU and waiting for one so far, in ms, from
 * /proc/thread-self/schedstat (Linux); undefined elsewhere. The file stays open: a read is a few µs.
 * The time waited is exact; the time run is only brought up to date at scheduler ticks.
 */
export class ThreadClock {
  private readonly fd: number | undefined;
  private readonly buf = Buffer.alloc(128);

  constructor() {
    try {
      this.fd = openSync('/proc/thread-self/schedstat', 'r');
    } catch {
      this.fd = undefined;
    }
  }

  read(): { run: number; wait: number } | undefined {
    if (this.fd === undefined) return undefined;
    const n = readSync(this.fd, this.buf, 0, this.buf.length, 0);
    const [run, wait] = this.buf.toString('latin1', 0, n).split(' ');
    return { run: Number(run) / 1e6, wait: Number(wait) / 1e6 };
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
  }
}
