/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`, e.g. `npm run bench -- --profile DIR`):
 * self time per function and per source file, heaviest first.
 *
 * Usage: node dist/bench/profile.js <file.cpuprofile> [top=25]
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

// Piped into head, stdout closes early: that is not an error.
process.stdout.on('error', () => process.exit(0));
const [file, topArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node dist/bench/profile.js <file.cpuprofile> [top]\n');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = prof.endTime - prof.startTime;

function shortUrl(url: string): string {
  const m = /\/(node_modules\/.*|dist\/.*)$/.exec(url);
  if (m) return m[1]!;
  if (url.startsWith('node:')) return url;
  return url === '' ? '(native)' : url.replace(/^file:\/\//, '');
}

const fn = new Map<string, number>();
const files = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  const f = shortUrl(n.callFrame.url);
  const key = `${n.callFrame.functionName || '(anonymous)'}  ${f}:${n.callFrame.lineNumber + 1}`;
  fn.set(key, (fn.get(key) ?? 0) + us);
  const group = f.startsWith('node_modules/') ? f.split('/').slice(0, 2).join('/') : f;
  files.set(group, (files.get(group) ?? 0) + us);
}
const row = (us: number, label: string) => `${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${label}`;
process.stdout.write(`${file}: ${(total / 1000).toFixed(0)} ms profiled\n\nself time by function:\n`);
for (const [k, us] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(row(us, k) + '\n');
process.stdout.write('\nself time by file:\n');
for (const [k, us] of [...files].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(row(us, k) + '\n');
