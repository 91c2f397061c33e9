/** `policylayer explain`, end to end: the real binary on policies written to a temporary folder. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// This file runs as dist/src/cli/explain.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const BIN = path.join(ROOT, 'bin/policylayer.js');

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-explain-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'explain', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const POLICY = write(
  'policy.yaml',
  `version: "1"
default: deny
hide: [ "admin_*" ]
all_tools:
  limits: [ { counter: all_calls, window: day, max: 1000, scope: server } ]
tools:
  read_file:
    limits: [ { counter: reads, window: 90s, max: 5, scope: args.path } ]
  "delete_*": { action: deny, reason: "destructive operations are not allowed" }
`,
);

test('explains a denial with the rule, the reason and the exact text the agent reads, and exits 0', () => {
  const r = cli(POLICY, '--tool', 'delete_file', '--args', '{"path":"/tmp/x"}');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^effect: +deny$/m);
  assert.match(r.stdout, /^rule: +\/tools\/delete_\*$/m);
  assert.match(r.stdout, /^reason: +destructive operations are not allowed$/m);
  assert.match(
    r.stdout,
    /Blocked by PolicyLayer policy: the call to 'delete_file' was refused\. Reason: destructive operations are not allowed \(rule \/tools\/delete_\*, policy sha256:[0-9a-f]{16}\)\./,
  );
  assert.match(r.stdout, /^limits: +none$/m);
});

test('explains a call held for approval: the timeout, what the agent sees, and limits reserved only once a person approves', () => {
  const policy = write(
    'approval.yaml',
    `version: "1"
default: deny
tools:
  create_charge:
    action: require_approval
    reason: charges need a person
    approval: { timeout: 90s, remember: 1h }
    deny_if: [ { path: args.amount, op: gt, value: 50000 } ]
    limits: [ { counter: charges, window: day, max: 5, scope: grant } ]
  "pay_*": { action: require_approval, shadow: true }
`,
  );
  const r = cli(policy, '--tool', 'create_charge', '--args', '{"amount":500}');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^effect: +require_approval$/m);
  assert.match(r.stdout, /^reason: +charges need a person$/m);
  assert.match(r.stdout, /^approval: +timeout 1m30s, remember 1h \(\/tools\/create_charge\/approval\)$/m);
  assert.match(r.stdout, /^agent sees: +the call is held until a person decides \(policylayer approvals approve\|deny, timeout 1m30s\); approved, it is forwarded/m);
  assert.match(r.stdout, /^limits: +1 reserved once a person approves the call, before it is forwarded$/m);
  const tooLarge = cli(policy, '--tool', 'create_charge', '--args', '{"amount":60000}');
  assert.match(tooLarge.stdout, /^effect: +deny$/m, 'a condition refuses outright what no person should be asked about');
  const shadowed = cli(policy, '--tool', 'pay_invoice');
  assert.match(shadowed.stdout, /^approval: +timeout 10m \(\/tools\/pay_\*\)$/m);
  assert.match(shadowed.stdout, /shadow mode: it would have been held for a person's approval/);
  const json = JSON.parse(cli(policy, '--tool', 'create_charge', '--args', '{"amount":1}', '--format', 'json').stdout);
  assert.deepEqual(json.decision.approval, { timeoutMs: 90_000, rememberMs: 3_600_000, pointer: '/tools/create_charge/approval' });
});

test('lists the limits an allowed call would reserve: counter, window, max and scope', () => {
  const r = cli(POLICY, '--tool', 'read_file', '--args', '{"path":"/etc/hosts"}');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^effect: +allow$/m);
  assert.match(r.stdout, /counter reads, window 1m30s, max 5, scope args\.path \(\/tools\/read_file\/limits\/0\)/);
  assert.match(r.stdout, /counter all_calls, window day, max 1000, scope server \(\/all_tools\/limits\/0\)/);
  assert.match(r.stdout, /^policy: .*\(sha256:[0-9a-f]{16}\)$/m);
});

test('prints the whole decision as JSON with --format json, including the policy version', () => {
  const r = cli(POLICY, '--tool', 'read_file', '--format', 'json');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.decision.effect, 'allow');
  assert.equal(out.decision.rule, '/tools/read_file');
  assert.match(out.decision.policyVersion, /^sha256:[0-9a-f]{16}$/);
  assert.equal(out.policy.version, out.decision.policyVersion);
  assert.deepEqual(
    out.decision.limits.map((l: { counter: string; windowMs: number; max: number; scope: string }) => [l.counter, l.windowMs, l.max, l.scope]),
    [
      ['reads', 90_000, 5, 'args.path'],
      ['all_calls', 86_400_000, 1000, 'server'],
    ],
  );
  assert.deepEqual(out.call, { tool: 'read_file', args: {} });
});

test('shows a hidden tool as the unknown-tool error the agent would get', () => {
  const r = cli(POLICY, '--tool', 'admin_reset');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^effect: +hidden$/m);
  assert.match(r.stdout, /^rule: +\(hidden\)$/m);
  assert.match(r.stdout, /-32602: Unknown tool: admin_reset/);
});

test('names the default rule when no rule matches', () => {
  const r = cli(POLICY, '--tool', 'send_email');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^rule: +\(default deny\)$/m);
});

test('refuses --args that is not a JSON object, saying what was given', () => {
  for (const [bad, said] of [
    ['[1,2]', /must be a JSON object, got an array/],
    ['"x"', /must be a JSON object, got a string/],
    ['null', /must be a JSON object, got null/],
    ['{path:', /--args is not valid JSON/],
  ] as const) {
    const r = cli(POLICY, '--tool', 'read_file', '--args', bad);
    assert.equal(r.code, 1, bad);
    assert.match(r.stderr, said);
    assert.equal(r.stdout, '');
  }
});

test('reports an invalid policy with file, pointer and line, and exits 1', () => {
  const bad = write('bad.json', '{\n  "version": "1",\n  "default": "deny",\n  "tools": { "a": { "action": "maybe" } }\n}\n');
  const r = cli(bad, '--tool', 'a');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad\.json: \/tools\/a\/action: expected allow\|deny\|require_approval \(line 4:\d+\)/);
  const json = cli(bad, '--tool', 'a', '--format', 'json');
  assert.equal(json.code, 1);
  assert.equal(JSON.parse(json.stdout).ok, false);
});

test('exits 1 with a pointer to --help when the tool or the policy is missing', () => {
  const noTool = cli(POLICY);
  assert.equal(noTool.code, 1);
  assert.match(noTool.stderr, /missing --tool/);
  const noPolicy = cli('--tool', 'x');
  assert.equal(noPolicy.code, 1);
  assert.match(noPolicy.stderr, /policylayer explain --help/);
  const unreadable = cli(path.join(dir, 'nope.json'), '--tool', 'x');
  assert.equal(unreadable.code, 1);
  assert.match(unreadable.stderr, /nope\.json: cannot read: no such file/);
});

test('--help shows an example and exits 0', () => {
  const r = cli('--help');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Examples?:\n +policylayer explain /);
});
