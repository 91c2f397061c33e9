/** `policylayer convert`, end to end: the real binary on Intercept policies written to a temporary folder. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPolicyFile, parsePolicy } from '../policy/index.js';

// This file runs as dist/src/cli/convert.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const BIN = path.join(ROOT, 'bin/policylayer.js');
const STRIPE = path.join(ROOT, 'examples/intercept/stripe.policy.yaml');

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-convert-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function run(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: ROOT });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const cli = (...args: string[]) => run('convert', ...args);

test('prints the converted policy as YAML under a header naming its origin, and it loads as the same policy', () => {
  const r = cli(STRIPE);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /^# PolicyLayer policy converted from the Intercept policy stripe\.policy\.yaml by `policylayer convert`\.\n/);
  assert.match(r.stdout, /^version: "1"$/m);
  const converted = parsePolicy(r.stdout, 'converted.yaml');
  const original = loadPolicyFile(STRIPE);
  assert.equal(converted.convertedFrom, undefined);
  assert.equal(converted.version, original.version);
  assert.deepEqual(converted.document, original.document);
});

test('prints JSON with --format json', () => {
  const r = cli(STRIPE, '--format', 'json');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), loadPolicyFile(STRIPE).document);
});

test('writes the result to the file given with -o and prints nothing on stdout', () => {
  const out = path.join(dir, 'out.yaml');
  const r = cli(STRIPE, '-o', out);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, `wrote ${out}\n`);
  assert.equal(loadPolicyFile(out).version, loadPolicyFile(STRIPE).version);
});

test('refuses to write over the file it converts', () => {
  const file = write('self.yaml', readFileSync(STRIPE, 'utf8'));
  const r = cli(file, '-o', file);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /is the file being converted/);
  assert.equal(readFileSync(file, 'utf8'), readFileSync(STRIPE, 'utf8'));
});

const WITH_CAVEAT = write(
  'caveat.yaml',
  `version: "1"
tools:
  notify:
    rules:
      - name: count notifications
        conditions: [ { path: args.channel, op: exists, value: true } ]
        state: { counter: sent, window: day }
`,
);

test('prints warnings to stderr and as comments in the YAML, and still exits 0', () => {
  const r = cli(WITH_CAVEAT);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^warning: .*caveat\.yaml: \/tools\/notify\/rules\/0\/state: the counter "sent" has no lte or lt condition .*dropped \(line 7:16\)\n$/);
  assert.match(r.stdout, /^# Warnings from the conversion:\n# {3}.*\/tools\/notify\/rules\/0\/state: the counter "sent"/m);
  assert.doesNotMatch(r.stdout, /^ *limits:/m);
});

test('an invalid Intercept policy exits 1 naming the file, the pointer and the line of each problem', () => {
  const file = write('bad.yaml', 'version: "1"\ntools:\n  create_issue:\n    rules:\n      - name: hourly\n        rate_limit: 5/week\n');
  const r = cli(file);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, `error ${file}\n  ${file}: /tools/create_issue/rules/0/rate_limit: rate_limit window must be minute|hour|day, got "week" (line 6:21)\n`);
});

test('an Intercept policy PolicyLayer cannot express exits 1 with the reason', () => {
  const file = write('gt.yaml', 'version: "1"\ntools:\n  t:\n    rules:\n      - name: r\n        conditions: [ { path: state.t.n, op: gte, value: 3 } ]\n        state: { counter: n, window: hour }\n');
  const r = cli(file);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\/tools\/t\/rules\/0\/conditions\/0\/op: gte on a counter has no PolicyLayer equivalent/);
});

test('a file that is not an Intercept policy is refused, saying whether it is already a PolicyLayer one', () => {
  const native = write('native.yaml', 'version: "1"\ndefault: deny\ntools:\n  a: {}\n');
  const r = cli(native);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /native\.yaml: already a PolicyLayer policy; there is nothing to convert/);
  const other = write('other.yaml', 'version: "1"\ntools:\n  a: {}\n');
  assert.match(cli(other).stderr, /other\.yaml: not an Intercept policy: no entry under tools has rules/);
  const broken = write('broken.yaml', 'version: "1"\ntools: [\n');
  const b = cli(broken);
  assert.equal(b.code, 1);
  assert.match(b.stderr, /broken\.yaml: syntax error/);
  const missing = cli(path.join(dir, 'nope.yaml'));
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /nope\.yaml: cannot read: no such file/);
});

test('bad options exit 1 with a pointer to --help', () => {
  const a = cli(STRIPE, '--format', 'toml');
  assert.equal(a.code, 1);
  assert.match(a.stderr, /--format must be yaml or json, got 'toml'/);
  const b = cli();
  assert.equal(b.code, 1);
  assert.match(b.stderr, /expected exactly one Intercept policy file, got 0\nSee 'policylayer convert --help'\./);
});

test('--help shows the usage with an example, and the command list names convert', () => {
  const r = cli('--help');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: policylayer convert <intercept\.yaml>/);
  assert.match(r.stdout, /Examples:\n {2}policylayer convert /);
  assert.match(run('--help').stdout, /^ {2}convert +convert a policy written for the Intercept proxy/m);
});

test('validate accepts an Intercept policy as the policy it converts to and prints its warnings', () => {
  const r = run('validate', STRIPE, WITH_CAVEAT);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    `ok    ${STRIPE} (an Intercept policy, converted on load)\nok    ${WITH_CAVEAT} (an Intercept policy, converted on load)\n`,
  );
  assert.match(r.stderr, /^warning: .*caveat\.yaml: \/tools\/notify\/rules\/0\/state: /);
});

test('explain decides calls of an Intercept policy and says that its rule pointers are into the converted policy', () => {
  const r = run('explain', STRIPE, '--tool', 'create_charge', '--args', '{"amount":60000,"currency":"usd"}');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^effect: +deny$/m);
  assert.match(r.stdout, /^reason: +One charge may not exceed \$500\.00 \(50000 cents\)\.$/m);
  assert.match(r.stdout, /an Intercept policy converted on load: rule pointers are into the converted policy/);
});
