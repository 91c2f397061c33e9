/**
 * No orphans, even when the gateway itself is killed with SIGKILL and cannot clean up.
 *
 * Each stdio server runs in its own process group. A small reaper process, started with the first
 * server, is told each group as it starts and ends. It holds a pipe from the gateway and nothing
 * else: when the pipe closes because the gateway died, it signals every group still listed
 * (SIGTERM, then SIGKILL). Node cannot ask the kernel to signal a child when its parent dies
 * (prctl PR_SET_PDEATHSIG), so this is the portable way to keep that promise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

let reaper: ChildProcess | undefined;

function ensure(): ChildProcess | undefined {
  if (reaper && reaper.exitCode === null && reaper.stdin?.writable) return reaper;
  const script = fileURLToPath(new URL('./reaper-main.js', import.meta.url));
  // Its own group, so a signal to the gateway's group (Ctrl-C) does not end it before its work.
  reaper = spawn(process.execPath, [script], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
  reaper.on('error', () => (reaper = undefined));
  reaper.stdin!.on('error', () => {});
  // Neither the process nor its pipe may keep the gateway's event loop alive.
  reaper.unref();
  (reaper.stdin as unknown as { unref?: () => void }).unref?.();
  return reaper;
}

/** Lists a process group for the reaper; `untrack` removes it once the gateway has ended it itself. */
export function trackGroup(pgid: number): void {
  ensure()?.stdin?.write(`+${pgid}\n`);
}

export function untrackGroup(pgid: number): void {
  if (reaper?.stdin?.writable) reaper.stdin.write(`-${pgid}\n`);
}
