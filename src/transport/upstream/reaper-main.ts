/**
 * The reaper process (see reaper.ts). Reads `+<pgid>` / `-<pgid>` lines on stdin; when stdin ends,
 * whether the gateway closed it or died, every process group still listed gets SIGTERM and, after a
 * grace period, SIGKILL. Then it exits.
 */
import { lineSplitter } from '../../util/lines.js';

const groups = new Set<number>();
const GRACE_MS = Number(process.env.POLICYLAYER_REAPER_GRACE_MS ?? 2000);

function signalAll(signal: NodeJS.Signals): void {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, signal);
    } catch {
      groups.delete(pgid); // the group is gone
    }
  }
}

process.stdin.setEncoding('utf8');
process.stdin.on(
  'data',
  lineSplitter((line) => {
    const pgid = Number(line.slice(1));
    if (!Number.isInteger(pgid) || pgid <= 1) return;
    if (line[0] === '+') groups.add(pgid);
    else if (line[0] === '-') groups.delete(pgid);
  }),
);
const reap = () => {
  if (groups.size === 0) process.exit(0);
  signalAll('SIGTERM');
  setTimeout(() => {
    signalAll('SIGKILL');
    process.exit(0);
  }, GRACE_MS);
};
process.stdin.on('end', reap);
process.stdin.on('error', reap);
// The gateway's terminal or supervisor may signal its whole group: the reaper finishes its work first.
process.on('SIGINT', () => {});
process.on('SIGHUP', () => {});
