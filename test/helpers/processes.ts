/**
 * Child processes for integration tests: npm MCP servers and fixtures, each in its own process
 * group so stopping it reaches everything it spawned, and killed when the test process exits even
 * if a test forgot to (or failed before) stopping it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** The repository root (this file runs as dist/test/helpers/processes.js). */
export const REPO_ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');

const NPM_SERVERS = {
  everything: '@modelcontextprotocol/server-everything/dist/index.js',
  filesystem: '@modelcontextprotocol/server-filesystem/dist/index.js',
  memory: '@modelcontextprotocol/server-memory/dist/index.js',
} as const;

export type NpmServer = keyof typeof NPM_SERVERS;

/**
 * The argv that runs one of the npm reference servers on stdio with this Node, for a gateway
 * config's `command:` or for spawning directly. Running the script with `process.execPath`
 * avoids npx and any network access.
 */
export function npmServerCommand(name: NpmServer, ...args: string[]): string[] {
  const script = path.join(REPO_ROOT, 'node_modules', NPM_SERVERS[name]);
  if (!existsSync(script)) throw new Error(`${script} is missing: the devDependency is not installed`);
  return [process.execPath, script, ...args];
}

/** The argv that runs a compiled test helper script (dist/test/helpers/<name>.js). */
export function helperScriptCommand(name: string, ...args: string[]): string[] {
  return [process.execPath, path.join(REPO_ROOT, 'dist', 'test', 'helpers', `${name}.js`), ...args];
}

export interface StartedProcess {
  child: ChildProcess;
  pid: number;
  /** The match of `ready` against the output, when one was asked for. */
  ready: RegExpExecArray | undefined;
  /** Everything written so far on stdout and stderr (for failure messages). */
  output(): string;
  /** SIGTERM to the group, SIGKILL after `graceMs`; resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is gone already
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous last resort: whatever a test left running dies with the test process.
  process.on('exit', () => {
    for (const c of live) killGroup(c, 'SIGKILL');
  });
}

export interface StartProcessOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Wait until stdout or stderr matches this before resolving. */
  ready?: RegExp;
  /** How long to wait for `ready`; default 15 s. */
  timeoutMs?: number;
  /** Keep stdin open as a pipe (fixtures that exit when stdin closes); default true. */
  stdinPipe?: boolean;
}

/** Starts `argv` in its own process group; see StartedProcess. */
export async function startProcess(argv: readonly string[], opts: StartProcessOptions = {}): Promise<StartedProcess> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('empty command');
  installExitHook();
  const child = spawn(cmd, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: [opts.stdinPipe === false ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    detached: true,
  });
  live.add(child);
  const exited = once(child, 'exit').then(() => undefined, () => undefined);
  child.on('exit', () => live.delete(child));
  child.stdin?.on('error', () => {});
  let out = '';
  let match: RegExpExecArray | undefined;
  let notifyReady: (() => void) | undefined;
  const onData = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    if (opts.ready && match === undefined) {
      const m = opts.ready.exec(out);
      if (m) {
        match = m;
        notifyReady?.();
      }
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);

  const stop = async (graceMs = 2000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) {
      killGroup(child, 'SIGKILL'); // grandchildren, if any survived
      return;
    }
    child.stdin?.end();
    killGroup(child, 'SIGTERM');
    const t = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
    killGroup(child, 'SIGKILL');
  };

  if (opts.ready) {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    try {
      await new Promise<void>((resolve, reject) => {
        if (match) return resolve();
        notifyReady = resolve;
        const t = setTimeout(() => reject(new Error(`${argv.join(' ')} did not print ${opts.ready} within ${timeoutMs} ms:\n${out}`)), timeoutMs);
        t.unref();
        child.once('exit', (code, signal) => reject(new Error(`${argv.join(' ')} exited (${signal ?? code}) before it was ready:\n${out}`)));
        child.once('error', reject);
      });
    } catch (err) {
      await stop(500);
      throw err;
    }
  }
  return { child, pid: child.pid!, ready: match, output: () => out, stop };
}

/**
 * The fields of /proc/<pid>/stat after the parenthesised command name (which may itself hold
 * spaces or parens): state, ppid, pgrp, session…; undefined when there is no such process.
 */
function statFields(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Whether a process (or, with a negative pid, a process group) still exists. */
export function isAlive(pid: number): boolean {
  // A zombie waiting to be reaped counts as gone.
  const state = statFields(pid)?.[0];
  return state !== undefined && state !== 'Z' && state !== 'X';
}

/** A running process's process group and session (Linux, from /proc). */
export function groupAndSession(pid: number): { pgid: number; sid: number } {
  const fields = statFields(pid);
  if (fields === undefined) throw new Error(`no process ${pid}`);
  return { pgid: Number(fields[2]), sid: Number(fields[3]) };
}

export interface HttpServerProcess extends StartedProcess {
  /** The MCP endpoint, e.g. http://127.0.0.1:41234/mcp */
  url: string;
}

/** server-everything over Streamable HTTP on 127.0.0.1 (see everything-http.ts). */
export async function startEverythingHttp(): Promise<HttpServerProcess> {
  const p = await startProcess(helperScriptCommand('everything-http'), { ready: /listening (http:\/\/127\.0\.0\.1:\d+\/mcp)/ });
  return { ...p, url: p.ready![1]! };
}

/**
 * Wraps a stdio server command so every line it receives is appended to `logFile`
 * (see stdio-tap.ts); the result goes into a gateway config's `command:`.
 */
export function tappedCommand(logFile: string, argv: readonly string[]): string[] {
  return helperScriptCommand('stdio-tap', logFile, ...argv);
}

/** The names of the tools/call requests a tapped stdio server received (see `tappedCommand`). */
export function toolCallsIn(tapLog: string): string[] {
  if (!existsSync(tapLog)) return [];
  return readFileSync(tapLog, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { method?: string; params?: { name?: string } })
    .filter((m) => m.method === 'tools/call')
    .map((m) => String(m.params?.name));
}
