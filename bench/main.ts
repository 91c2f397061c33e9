/**
 * How a benchmark that starts processes runs as a command: however it ends (its own exit, an
 * error, Ctrl-C or SIGTERM), every process it started is stopped and its scratch folders removed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { killAllNow, stopAll } from './procs.js';

/** A mistake on the command line: printed with a pointer to --help, without a stack. */
export class UsageError extends Error {}

/** Option `--what` as a positive number, or `def` when it was not given. */
export function positiveOption(v: string | undefined, def: number, what: string): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${what} expects a positive number, got '${v}'`);
  return n;
}

export function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

const scratch: string[] = [];

/** A new folder in the OS temp folder, removed when the process exits. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

/**
 * Runs `main` on the command line's arguments and exits with the code it returns. `name` prefixes
 * an error's message; `script` is what --help is pointed at.
 */
export function runAsCommand(name: string, script: string, main: (argv: string[]) => Promise<number>): void {
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      // A second signal does not wait for the processes to stop by themselves.
      if (interrupted) {
        killAllNow();
        process.exit(130);
      }
      interrupted = true;
      log(`\n${sig}: stopping every process the benchmark started`);
      stopAll().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
    });
  }
  process.on('exit', () => {
    killAllNow();
    for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
  });
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      log(err instanceof UsageError ? `${name}: ${err.message}\nSee 'node ${script} --help'.` : `${name}: ${(err as Error)?.stack ?? String(err)}`);
      stopAll().finally(() => process.exit(1));
    },
  );
}

/** The git commit of the checkout a gateway build comes from, marked when its src/ has local changes. */
export function buildOf(bin: string): string | undefined {
  const dir = resolve(dirname(bin), '..');
  try {
    const git = (...args: string[]) => execFileSync('git', ['-C', dir, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const commit = git('rev-parse', '--short', 'HEAD');
    return git('status', '--porcelain', '--', 'src').length > 0 ? `${commit} with local changes to src/` : commit;
  } catch {
    return undefined;
  }
}
