/**
 * The benchmark's minimal MCP server over stdio: newline-delimited JSON-RPC on stdin/stdout,
 * the same answers as the HTTP one. Exits when stdin closes (that is how a client stops it).
 */
import { answer, type Incoming } from './upstream-core.js';

let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk: string) => {
  buf += chunk;
  let out = '';
  let start = 0;
  let nl: number;
  while ((nl = buf.indexOf('\n', start)) >= 0) {
    const line = buf.slice(start, nl);
    start = nl + 1;
    if (line.trim().length === 0) continue;
    let msg: Incoming;
    try {
      msg = JSON.parse(line) as Incoming;
    } catch {
      out += JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }) + '\n';
      continue;
    }
    const reply = answer(msg);
    if (reply !== undefined) out += reply + '\n';
  }
  buf = start === 0 ? buf : buf.slice(start);
  // One write per chunk read: answers to lines that arrived together leave together.
  if (out.length > 0) process.stdout.write(out);
});
process.stdin.on('end', () => process.exit(0));
// A closed stdout (the client went away) must end the process, not crash it with EPIPE.
process.stdout.on('error', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
