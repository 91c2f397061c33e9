/**
 * A transparent stdio wrapper for tests: `node stdio-tap.js <log file> <command> [args...]` runs
 * the command with its stdin and stdout passed through unchanged, and appends every line the
 * client wrote (what the server received) to the log file. Tests read the file to prove a
 * message reached the server, e.g. a notifications/cancelled the gateway forwarded.
 *
 * The child shares this process's group, so whoever stops the tap's group stops the server too.
 */
import { spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';

const [logFile, cmd, ...args] = process.argv.slice(2);
if (logFile === undefined || cmd === undefined) {
  process.stderr.write('usage: stdio-tap <log file> <command> [args...]\n');
  process.exit(2);
}

const child = spawn(cmd, args, { stdio: ['pipe', 'inherit', 'inherit'] });
child.stdin.on('error', () => {});
let buf = '';
process.stdin.on('data', (chunk: Buffer) => {
  // Logged before it is passed on: a test that has the server's answer must find the line logged,
  // even when this process is descheduled between the two.
  buf += chunk.toString('utf8');
  let nl: number;
  while ((nl = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (line.trim() !== '') appendFileSync(logFile, line + '\n');
  }
  child.stdin.write(chunk);
});
process.stdin.on('end', () => child.stdin.end());
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
process.on('SIGTERM', () => child.kill('SIGTERM'));
