/** `policylayer test`, end to end: the real binary on tests files written to a temporary folder. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// This file runs as dist/src/cli/test.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const BIN = path.join(ROOT, 'bin/policylayer.js');

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-cli-test-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'test', ...args], { encoding: 'utf8', cwd: ROOT });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

write(
  'policies/policy.json',
  JSON.stringify({
    version: '1',
    default: 'deny',
    hide: ['admin_*'],
    tools: { read_file: {}, 'delete_*': { action: 'deny', reason: 'destructive operations are not allowed' } },
  }),
);

const PASSING = `policy: policies/policy.json   # relative to this file, not to the working directory
tests:
  - name: reads are allowed
    tool: read_file
    args: { path: /tmp/x }
    expect: allow
  - name: deletes are refused with the reason
    tool: delete_file
    expect: deny
    rule: /tools/delete_*
    reason_contains: destructive
  - name: admin tools are hidden
    tool: admin_reset
    expect: hidden
`;

test('passes a file whose every expectation holds: one ok line per test, a summary, exit 0', () => {
  const r = cli(write('pass.yaml', PASSING));
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), [
    'ok    reads are allowed',
    'ok    deletes are refused with the reason',
    'ok    admin tools are hidden',
    '3 passed, 0 failed',
  ]);
});

test('checks that a call is held for approval, and that a condition refuses it outright instead', () => {
  const file = write(
    'approval.yaml',
    `policy:
  version: "1"
  default: deny
  tools:
    create_charge:
      action: require_approval
      reason: charges need a person
      deny_if: [ { path: args.amount, op: gt, value: 50000 } ]
tests:
  - name: a charge waits for a person
    tool: create_charge
    args: { amount: 500 }
    expect: require_approval
    rule: /tools/create_charge
    reason_contains: a person
  - name: a huge charge is refused without asking anyone
    tool: create_charge
    args: { amount: 60000 }
    expect: deny
    rule: /tools/create_charge/deny_if/0
  - name: wrongly expects a charge to pass
    tool: create_charge
    args: { amount: 1 }
    expect: allow
`,
  );
  const r = cli(file);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^ok +a charge waits for a person$/m);
  assert.match(r.stdout, /^ok +a huge charge is refused without asking anyone$/m);
  assert.match(r.stdout, /^FAIL +wrongly expects a charge to pass$/m);
  assert.match(r.stdout, /effect: expected allow, got require_approval \(rule \/tools\/create_charge: charges need a person\)/);
});

test('reports each failed expectation with what was expected and what the policy decided, and exits 1', () => {
  const file = write(
    'fail.yaml',
    `policy: policies/policy.json
tests:
  - name: reads are allowed
    tool: read_file
    expect: allow
  - name: wrongly expects a write to pass
    tool: write_file
    expect: allow
  - name: wrong rule and reason
    tool: delete_file
    expect: deny
    rule: /tools/delete_file
    reason_contains: quota
`,
  );
  const r = cli(file);
  assert.equal(r.code, 1);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], 'ok    reads are allowed');
  assert.equal(lines[1], 'FAIL  wrongly expects a write to pass');
  assert.match(lines[2] ?? '', /^ +effect: expected allow, got deny \(rule \(default deny\): /);
  assert.equal(lines[3], 'FAIL  wrong rule and reason');
  assert.match(r.stdout, /rule: expected \/tools\/delete_file, got \/tools\/delete_\*/);
  assert.match(r.stdout, /reason: expected it to contain "quota", got "destructive operations are not allowed"/);
  assert.equal(lines.at(-1), '1 passed, 2 failed');
});

test('gives every result as JSON with --format json', () => {
  const r = cli(write('pass-json.yaml', PASSING), '--format', 'json');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.ok, true);
  assert.equal(out.passed, 3);
  assert.equal(out.failed, 0);
  assert.match(out.policy.version, /^sha256:[0-9a-f]{16}$/);
  assert.deepEqual(out.tests[1].expected, { effect: 'deny', rule: '/tools/delete_*', reason_contains: 'destructive' });
  assert.equal(out.tests[1].actual.rule, '/tools/delete_*');
});

test('accepts the policy written inline as an object', () => {
  const file = write(
    'inline.yaml',
    `policy:
  version: "1"
  default: allow
  tools: { drop_table: { action: deny, reason: "no schema changes" } }
tests:
  - { name: anything else is allowed, tool: select, expect: allow, rule: (default allow) }
  - { name: drops are refused, tool: drop_table, expect: deny, reason_contains: schema }
`,
  );
  const r = cli(file);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^2 passed, 0 failed$/m);
});

test('rejects unknown keys in a test, naming the test index, its name and the line', () => {
  const file = write(
    'unknown-key.yaml',
    `policy: policies/policy.json
tests:
  - name: fine
    tool: read_file
    expect: allow
  - name: misspelt
    tool: read_file
    expcet: allow
`,
  );
  const r = cli(file);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /unknown-key\.yaml: \/tests\/1\/expcet: unknown field; expected one of: [^\n]*\[test 1 "misspelt"\] \(line 8:5\)/);
  assert.match(r.stderr, /\/tests\/1\/expect: required field is missing/);
});

test('rejects an expectation other than allow, deny, hidden or require_approval, and an unknown top-level key', () => {
  const file = write('bad-values.yaml', `policy: policies/policy.json\ncases: []\ntests:\n  - { name: a, tool: b, expect: maybe }\n`);
  const r = cli(file);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\/cases: unknown field; expected one of: policy, tests \(line 2:1\)/);
  assert.match(r.stderr, /\/tests\/0\/expect: expected allow\|deny\|hidden\|require_approval \[test 0 "a"\] \(line 4:\d+\)/);
});

test('reports a policy that cannot be read where the tests file names it', () => {
  const r = cli(write('missing.yaml', `policy: nowhere.json\ntests: [ { name: a, tool: b, expect: deny } ]\n`));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing\.yaml: \/policy: cannot read .*nowhere\.json: no such file \(line 1:9\)/);
});

test('reports an invalid inline policy with its pointer inside the tests file', () => {
  const file = write('bad-inline.yaml', `policy: { version: "1", default: deny, tools: { a: { actoin: deny } } }\ntests: [ { name: a, tool: a, expect: deny } ]\n`);
  const r = cli(file);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad-inline\.yaml: \/policy\/tools\/a\/actoin: unknown field; [^\n]*\(line 1:\d+\)/);
});

test('reports a YAML syntax error and a file without tests as invalid', () => {
  const syntax = cli(write('syntax.yaml', 'policy: [\n'));
  assert.equal(syntax.code, 1);
  assert.match(syntax.stderr, /syntax\.yaml: syntax error: /);
  const empty = cli(write('empty.yaml', 'policy: policies/policy.json\ntests: []\n'));
  assert.equal(empty.code, 1);
  assert.match(empty.stderr, /\/tests: expected at least one test/);
});

test('passes the example tests shipped beside the filesystem example policy', () => {
  const r = cli('examples/filesystem/policy.test.yaml');
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^\d+ passed, 0 failed$/m);
  assert.doesNotMatch(r.stdout, /FAIL/);
});

test('--help shows the file format and an example, and exits 0', () => {
  const r = cli('--help');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /reason_contains/);
  assert.match(r.stdout, /Example:\n +policylayer test /);
});
