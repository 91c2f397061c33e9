import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { RiskClassifier, recommendRule } from '../risk/index.js';
import type { ToolDefinition } from '../risk/index.js';
import { renderTable, ruleLabel, runScan, slug } from './scan.js';

const TOOLS: ToolDefinition[] = [
  { name: 'list_invoices', description: 'List invoices for a customer.' },
  { name: 'run_command', description: 'Executes a shell command on the host and returns its output.', inputSchema: { type: 'object', properties: { command: { type: 'string' } } } },
  { name: 'create_customer', description: 'Create a new customer record with a very long description that goes on and on about what the record holds.' },
];

function rows() {
  return new RiskClassifier().classifyServer({ tools: TOOLS }).map((classification, i) => ({
    definition: { ...TOOLS[i]!, inputSchema: { type: 'object' as const } },
    classification,
    recommendation: recommendRule(classification, TOOLS[i]),
  }));
}

test('the table puts the riskiest tool first and keeps every line within the width', () => {
  const table = renderTable(rows(), 100, false);
  const lines = table.trimEnd().split('\n');
  assert.match(lines[0]!, /^TOOL +CATEGORY +SEVERITY +CONF +RULE +TOP REASONS$/);
  assert.match(lines[1]!, /^run_command +Execute +Critical +\d\.\d\d +10\/min \+1 check +/);
  for (const l of lines) assert.ok(l.length <= 100, `${l.length} columns: ${l}`);
  assert.ok(lines.some((l) => l.endsWith('…')), 'a long reason is cut with an ellipsis');
});

test('a narrow terminal gets the reasons on indented lines of their own', () => {
  const lines = renderTable(rows(), 72, false).trimEnd().split('\n');
  assert.match(lines[0]!, /^TOOL +CATEGORY +SEVERITY +CONF +RULE$/);
  assert.match(lines[1]!, /^run_command +Execute +Critical +\d\.\d\d +10\/min \+1 check$/);
  assert.match(lines[2]!, /^ {4}\S/);
  for (const l of lines) assert.ok(l.length <= 72, `${l.length} columns: ${l}`);
});

test('the table colours severities only when asked to', () => {
  assert.doesNotMatch(renderTable(rows(), 120, false), /\x1b\[/);
  assert.match(renderTable(rows(), 120, true), /\x1b\[1;31mCritical/);
});

test('rules are named briefly for the table', () => {
  const labels = rows().map((r) => ruleLabel(r.recommendation));
  assert.deepEqual(labels, ['allow', '10/min +1 check', '30/min']);
});

test('a policy file is named after the last part of the server name', () => {
  assert.equal(slug({ name: 'mcp-servers/everything' }), 'everything');
  assert.equal(slug({ name: 'PoolParty Main Stage Airtime' }), 'poolparty-main-stage-airtime');
  assert.equal(slug({ name: '///' }), 'server');
});

function io() {
  let stdout = '';
  let stderr = '';
  const sink = (add: (s: string) => void) => new Writable({ write: (c, _e, cb) => (add(String(c)), cb()) });
  return {
    io: { stdout: sink((s) => (stdout += s)), stderr: sink((s) => (stderr += s)), env: {}, now: () => new Date(0) },
    out: () => stdout,
    err: () => stderr,
  };
}

test('wrong options exit 2 without starting anything', async () => {
  const t = io();
  assert.equal(await runScan(['--timeout', 'soon', '--', 'never-started'], t.io), 2);
  assert.match(t.err(), /^policylayer scan: --timeout: invalid duration/);
  assert.equal(t.out(), '');
});

test('a header reference to an unset variable exits 2 and names the variable, not a value', async () => {
  const t = io();
  assert.equal(await runScan(['--url', 'https://example.com/mcp', '-H', 'Authorization: Bearer ${SCAN_UNIT_TOKEN}'], t.io), 2);
  assert.equal(t.err(), 'policylayer scan: --header Authorization: environment variable SCAN_UNIT_TOKEN is not set\n');
});

test('a header may read its value from a file with ${file:PATH}; a file that cannot be read exits 2 and names the file', async () => {
  const t = io();
  assert.equal(await runScan(['--url', 'https://example.com/mcp', '-H', 'Authorization: Bearer ${file:/nonexistent/policylayer-token}'], t.io), 2);
  assert.match(t.err(), /^policylayer scan: --header Authorization: cannot read the secret file \/nonexistent\/policylayer-token: /);
});

test('catalogue options that contradict each other, or a store that is no store, exit 2 without starting anything', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--no-record', '--store', 'sqlite:x.db'], /^policylayer scan: --no-record records nothing: leave out --store\n/],
    [['--no-record', '-c', 'gateway.yaml'], /^policylayer scan: --no-record records nothing: leave out -c\n/],
    [['-c', 'gateway.yaml', '--store', 'sqlite:x.db'], /^policylayer scan: give -c <gateway\.yaml> or --store, not both\n/],
    [['--store', 'redis://localhost:6379'], /^policylayer scan: --store expects sqlite:<path> or postgres:\/\/…; got 'redis:\/\/localhost:6379'\n/],
  ];
  for (const [args, message] of cases) {
    const t = io();
    assert.equal(await runScan([...args, '--', 'never-started'], t.io), 2, args.join(' '));
    assert.match(t.err(), message);
    assert.equal(t.out(), '');
  }
});
