#!/usr/bin/env node
// Runs the whole suite on the compiled output: unit tests beside the code, integration tests in
// test/, then the conformance comparison. Test files are listed explicitly because `node --test
// <dir>` would also run every .js file under a folder named `test` (fixtures included).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const only = process.argv.slice(2);

function collect(dir, out = []) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

let files = [...collect(path.join(root, 'dist/src')), ...collect(path.join(root, 'dist/test'))].sort();
if (only.length > 0) files = files.filter((f) => only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error('no test files found: run `npm run build` first');
  process.exit(1);
}

// The TAP stream goes to the terminal as usual and, once more, to a file the summary is read from.
const scratch = mkdtempSync(path.join(tmpdir(), 'policylayer-test-'));
const tapFile = path.join(scratch, 'results.tap');
const run = spawnSync(
  process.execPath,
  [
    '--test',
    '--test-concurrency=2',
    '--test-timeout=120000',
    '--test-reporter=tap',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tapFile}`,
    ...files,
  ],
  {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, POLICYLAYER_LOG_LEVEL: process.env.POLICYLAYER_LOG_LEVEL ?? 'silent' },
  },
);
let tap = '';
try {
  tap = readFileSync(tapFile, 'utf8');
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
const count = (name) => Number(tap.match(new RegExp(`^# ${name} (\\d+)$`, 'm'))?.[1] ?? 0);
// Cancelled tests (a test left waiting on a promise that never settles) fail the run as failures do.
const summary = `${count('pass')} passed, ${count('fail')} failed${count('cancelled') ? `, ${count('cancelled')} cancelled` : ''}${count('skipped') ? `, ${count('skipped')} skipped` : ''}`;
if (run.status !== 0) {
  console.log(`tests: ${summary}`);
  process.exit(run.status ?? 1);
}

if (only.length === 0 && process.env.SKIP_CONFORMANCE !== '1') {
  const conf = spawnSync(process.execPath, [path.join(root, 'dist/test/conformance/compare.js')], { cwd: root, stdio: 'inherit' });
  if (conf.status !== 0) {
    console.error('conformance comparison failed');
    console.log(`tests: ${summary}`);
    process.exit(conf.status ?? 1);
  }
}
console.log(`tests: ${summary}`);
