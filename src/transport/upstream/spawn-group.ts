/**
 * Starting a stdio server in a process group of its own, inside the gateway's session.
 *
 * The server needs a group of its own: shutdown and the reaper signal the whole group, so that
 * what the server started (npx's node, a shell's children) ends with it. Node's one way to get a
 * group is `detached`, which calls setsid(): a new session too. On Linux with autogroup scheduling
 * (on by default in most distributions) every session is a CPU group of its own, weighed as one
 * against all the others. A server that a client starts itself shares the client's session; one
 * in a session of its own competes as a whole with the client and the gateway together, and
 * through `policylayer run` with 16 calls in flight on two cores that cost some 15% of the calls a
 * second (docs/benchmarks.md). So the server is started as a client would start it, in the
 * gateway's session, and moved into a group of its own before its command runs: perl, found on
 * Debian, Ubuntu, macOS and most other systems, calls setpgid(0, 0) and execs the command. Node
 * has no call for setpgid. Where there is no perl, the server gets a session of its own as before.
 *
 * A command that cannot be run must fail as spawn() fails (an `error` with ENOENT, EACCES…), not
 * as a server that exits: perl reports a failed exec on a close-on-exec pipe (fd 3), as libuv
 * does for spawn() itself. The pipe closes empty when the command starts.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';

/**
 * Run as `perl -e SHIM -- command args…`. fcntl 2, 1 is F_SETFD, FD_CLOEXEC (the same numbers on
 * Linux, macOS and the BSDs), written out so that no module is loaded before the exec. A failure
 * reports the errno's name (ENOENT…) on fd 3 and exits 127.
 */
const SHIM = [
  'open(my $status, ">&=", 3) or exit 126;',
  'fcntl($status, 2, 1);',
  'my $failed = setpgrp(0, 0) ? "" : "setpgid";',
  'if ($failed eq "") { exec { $ARGV[0] } @ARGV; $failed = "exec"; }',
  'my $errno = $! + 0;',
  'require Errno;',
  '$! = $errno;',
  'my ($name) = grep { $!{$_} } keys %!;',
  'syswrite($status, ($name // "EIO") . " " . $failed);',
  'exit 127;',
].join(' ');

export interface SpawnedServer {
  child: ChildProcess;
  /**
   * Settles once the command runs (undefined) or has failed to (an error shaped as spawn()'s own:
   * `code`, `errno`, `syscall`, `path`). Until then an exit of the child is perl's, not the
   * server's. A failure to spawn at all (no such cwd) is the child's `error` event, as with spawn().
   */
  started: Promise<Error | undefined>;
}

export interface SpawnServerOptions {
  cwd?: string | undefined;
  env: NodeJS.ProcessEnv;
  /** The perl to use; null for none (a session of its own). Found on PATH when absent. */
  perl?: string | null;
}

/** Spawns `command` with stdin, stdout and stderr piped, in a process group of its own. */
export function spawnServer(command: string, args: readonly string[], opts: SpawnServerOptions): SpawnedServer {
  const perl = opts.perl === undefined ? systemPerl() : opts.perl;
  // PERL5OPT would have perl load modules or run a debugger before the exec; such a perl is not a shim.
  if (perl === null || opts.env.PERL5OPT !== undefined) {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    return { child, started: Promise.resolve(undefined) };
  }
  const child = spawn(perl, ['-e', SHIM, '--', command, ...args], {
    cwd: opts.cwd,
    env: opts.env,
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
  });
  const status = child.stdio[3] as Readable | null | undefined;
  if (status === null || status === undefined) return { child, started: Promise.resolve(undefined) };
  const started = new Promise<Error | undefined>((resolve) => {
    let report = '';
    status.setEncoding('utf8');
    status.on('data', (text: string) => (report += text));
    // Closed: by the exec (close-on-exec) when the command runs, by perl's exit when it does not,
    // or with the child never started (its `error` event says why).
    status.on('close', () => resolve(report === '' ? undefined : execError(command, args, report)));
    status.on('error', () => {});
  });
  return { child, started };
}

/** The error spawn() would have given for `command`, from the shim's report ("ENOENT exec"). */
function execError(command: string, args: readonly string[], report: string): Error {
  const [code = 'EIO', step = 'exec'] = report.trim().split(' ');
  const errno = (osConstants.errno as Record<string, number>)[code];
  const err = new Error(step === 'exec' ? `spawn ${command} ${code}` : `${step} before running ${command}: ${code}`) as NodeJS.ErrnoException;
  err.code = code;
  if (errno !== undefined) err.errno = -errno;
  err.syscall = `spawn ${command}`;
  err.path = command;
  (err as { spawnargs?: string[] }).spawnargs = [...args];
  return err;
}

let found: string | null | undefined;

/** The perl `spawnServer` uses: findPerl() on the gateway's PATH, looked up once; null on Windows. */
export function systemPerl(): string | null {
  if (found === undefined) found = process.platform === 'win32' ? null : findPerl(process.env.PATH ?? '');
  return found;
}

/**
 * The first `perl` on `searchPath` that runs: a file that is there but does not start (a broken
 * install, a stub) would make every server fail to start, so each candidate is tried once.
 */
export function findPerl(searchPath: string): string | null {
  for (const dir of searchPath.split(path.delimiter)) {
    if (dir === '' || !path.isAbsolute(dir)) continue;
    const candidate = path.join(dir, 'perl');
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (!statSync(candidate).isFile()) continue;
    } catch {
      continue;
    }
    const tried = spawnSync(candidate, ['-e', 'exit 0'], { stdio: 'ignore', timeout: 5_000, env: {} });
    if (tried.status === 0) return candidate;
  }
  return null;
}
