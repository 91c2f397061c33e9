/**
 * Intercept policies: validated with Intercept's own rules, converted, and then deciding every
 * call as Intercept would. The expected outcomes in the tables below are Intercept's, worked out
 * from its documented semantics; the converted policy must reproduce them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors.js';
import { readSource } from './diagnostics.js';
import { compilePolicy, evaluate, checkPolicyValue, loadPolicyFile, parsePolicy, visibleTools } from './index.js';
import type { CompiledPolicy, Decision, LimitSpec } from './index.js';
import { convertIntercept, goFloatText, isInterceptPolicy } from './intercept.js';

// This file runs as dist/src/policy/intercept.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const EXAMPLES = path.join(ROOT, 'examples/intercept');

const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

function load(yaml: string): CompiledPolicy {
  return parsePolicy(yaml, 'intercept.yaml');
}

function convert(yaml: string) {
  const read = readSource(yaml, 'intercept.yaml');
  assert.deepEqual(read.errors, []);
  return convertIntercept(read.value, 'intercept.yaml', read.text);
}

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  assert.fail('expected a ConfigError');
}

/** A limit as the decision carries it, without the pointer (which names the converted document). */
function limitOf(l: LimitSpec) {
  const out: Record<string, unknown> = { counter: l.counter, kind: l.kind, windowMs: l.windowMs, max: l.max, scope: l.scope };
  if (l.increment !== undefined) out.increment = l.increment;
  if (l.incrementFrom !== undefined) out.incrementFrom = l.incrementFrom;
  return out;
}

interface Row {
  tool: string;
  args?: Record<string, unknown>;
  /** What Intercept decides (a hidden tool is refused by Intercept and hidden here). */
  intercept: 'allow' | 'deny' | 'hidden';
  /** The on_deny text Intercept would send, where the rule has one. */
  reason?: string;
  /** For an allowed call: the counters Intercept reserves, as limits. */
  limits?: Array<Record<string, unknown>>;
}

function check(policy: CompiledPolicy, rows: readonly Row[]): void {
  for (const row of rows) {
    const d: Decision = evaluate({ tool: row.tool, args: row.args ?? {} }, policy);
    const label = `${row.tool} ${JSON.stringify(row.args ?? {})}`;
    assert.equal(d.effect, row.intercept, `${label}: ${d.reason}`);
    if (row.reason !== undefined) assert.equal(d.reason, row.reason, label);
    if (row.limits !== undefined) assert.deepEqual(d.limits.map(limitOf), row.limits, label);
  }
}

// ---- the two complete examples -------------------------------------------------------------

const GITHUB_GLOBAL = { counter: '_global._rate_minute', kind: 'calendar', windowMs: MINUTE, max: 60, scope: 'server' };

test('the GitHub example decides every call as Intercept does: hourly rate limits, a blocked delete, hidden tools, a global rate', () => {
  const policy = loadPolicyFile(path.join(EXAMPLES, 'github.policy.yaml'));
  assert.equal(policy.convertedFrom, 'intercept');
  assert.equal(policy.warnings, undefined);
  check(policy, [
    {
      tool: 'create_issue',
      args: { title: 'x' },
      intercept: 'allow',
      limits: [{ counter: 'create_issue._rate_hour', kind: 'calendar', windowMs: HOUR, max: 5, scope: 'server' }, GITHUB_GLOBAL],
    },
    {
      tool: 'create_pull_request',
      intercept: 'allow',
      limits: [{ counter: 'create_pull_request._rate_hour', kind: 'calendar', windowMs: HOUR, max: 3, scope: 'server' }, GITHUB_GLOBAL],
    },
    { tool: 'delete_repository', args: { repo: 'x' }, intercept: 'deny', reason: 'Agents may not delete repositories.' },
    { tool: 'transfer_repository', intercept: 'hidden' },
    { tool: 'list_webhooks', intercept: 'hidden' },
    { tool: 'list_issues', intercept: 'allow', limits: [GITHUB_GLOBAL] },
  ]);
  const listed = visibleTools(policy, [{ name: 'create_issue' }, { name: 'transfer_repository' }, { name: 'list_webhooks' }]);
  assert.deepEqual(listed, [{ name: 'create_issue' }]);
  assert.equal(policy.document.description, 'GitHub MCP server: pace the writes, block the destructive calls');
});

const STRIPE_GLOBAL = { counter: '_global.calls_per_minute', kind: 'calendar', windowMs: MINUTE, max: 60, scope: 'server' };
const DAILY_SPEND = { counter: 'create_charge.daily_spend', kind: 'calendar', windowMs: DAY, max: 1_000_000, scope: 'server', incrementFrom: 'args.amount' };

test('the Stripe example decides every call as Intercept does: argument caps, a currency list, a spend quota and call counts', () => {
  const policy = loadPolicyFile(path.join(EXAMPLES, 'stripe.policy.yaml'));
  assert.equal(policy.warnings, undefined);
  const tooMuch = 'One charge may not exceed $500.00 (50000 cents).';
  const currency = 'Only usd and eur charges are allowed.';
  check(policy, [
    { tool: 'create_charge', args: { amount: 50000, currency: 'usd' }, intercept: 'allow', limits: [DAILY_SPEND, STRIPE_GLOBAL] },
    { tool: 'create_charge', args: { amount: 1, currency: 'eur' }, intercept: 'allow', limits: [DAILY_SPEND, STRIPE_GLOBAL] },
    { tool: 'create_charge', args: { amount: 50001, currency: 'usd' }, intercept: 'deny', reason: tooMuch },
    // Intercept compares numbers only: a string amount fails lte, as does a missing one.
    { tool: 'create_charge', args: { amount: '100', currency: 'usd' }, intercept: 'deny', reason: tooMuch },
    { tool: 'create_charge', args: { currency: 'usd' }, intercept: 'deny', reason: tooMuch },
    { tool: 'create_charge', args: { amount: 100, currency: 'gbp' }, intercept: 'deny', reason: currency },
    { tool: 'create_charge', args: { amount: 100 }, intercept: 'deny', reason: currency },
    {
      tool: 'create_refund',
      args: { amount: 10000 },
      intercept: 'allow',
      limits: [{ counter: 'create_refund.daily_count', kind: 'calendar', windowMs: DAY, max: 10, scope: 'server' }, STRIPE_GLOBAL],
    },
    { tool: 'create_refund', args: { amount: 10001 }, intercept: 'deny', reason: 'One refund may not exceed $100.00.' },
    { tool: 'delete_customer', intercept: 'deny', reason: 'Agents may not delete customers.' },
    { tool: 'list_customers', intercept: 'allow', limits: [STRIPE_GLOBAL] },
  ]);
});

test('the version of a converted policy is the hash of the converted document, stable across loads', () => {
  const file = path.join(EXAMPLES, 'stripe.policy.yaml');
  const a = loadPolicyFile(file);
  const b = loadPolicyFile(file);
  assert.equal(a.version, b.version);
  assert.equal(a.version, compilePolicy(a.document, 'converted').version);
});

// ---- detection ------------------------------------------------------------------------------

test('a file is read as Intercept only when some tool under tools has rules', () => {
  assert.equal(isInterceptPolicy({ version: '1', tools: { a: { rules: [] } } }), true);
  assert.equal(isInterceptPolicy({ version: '1', tools: { a: {}, b: { rules: null } } }), true);
  assert.equal(isInterceptPolicy({ version: '1', default: 'deny', tools: { a: {}, b: { action: 'deny' } } }), false);
  assert.equal(isInterceptPolicy({ version: '1', default: 'deny' }), false);
  assert.equal(isInterceptPolicy({ tools: [{ rules: [] }] }), false);
  assert.equal(isInterceptPolicy('tools'), false);
});

test('a PolicyLayer policy loads exactly as before, with no conversion recorded', () => {
  const p = load('version: "1"\ndefault: deny\ntools:\n  a: {}\n');
  assert.equal(p.convertedFrom, undefined);
  assert.equal(p.warnings, undefined);
});

// ---- default, hide and the "*" rules --------------------------------------------------------

test('default deny refuses an unlisted tool before any rule, even one the "*" rules would pass; a listed tool with no rules is allowed', () => {
  const policy = load(`version: "1"
default: deny
tools:
  read_file:
    rules: []
  "*":
    rules:
      - name: global
        rate_limit: 10/minute
`);
  const global = { counter: '_global._rate_minute', kind: 'calendar', windowMs: MINUTE, max: 10, scope: 'server' };
  check(policy, [
    { tool: 'read_file', intercept: 'allow', limits: [global] },
    { tool: 'write_file', intercept: 'deny', limits: [] },
  ]);
  assert.equal(policy.document.default, 'deny');
});

test('default allow (also when default is omitted) applies the "*" rules to unlisted tools too', () => {
  const policy = load(`version: "1"
tools:
  "*":
    rules:
      - name: no dry runs
        conditions:
          - { path: args.dry_run, op: exists, value: false }
        on_deny: dry runs are not supported
`);
  assert.equal(policy.document.default, 'allow');
  check(policy, [
    { tool: 'anything', intercept: 'allow' },
    { tool: 'anything', args: { dry_run: true }, intercept: 'deny', reason: 'dry runs are not supported' },
  ]);
});

test('the "*" rules run after the tool\'s own, in order, so the tool\'s failing rule is the one named', () => {
  const policy = load(`version: "1"
tools:
  transfer:
    rules:
      - name: cap
        conditions: [ { path: args.amount, op: lte, value: 100 } ]
        on_deny: transfer cap
  "*":
    rules:
      - name: ticket
        conditions: [ { path: args.ticket, op: exists, value: true } ]
        on_deny: every call needs a ticket
`);
  check(policy, [
    { tool: 'transfer', args: { amount: 500 }, intercept: 'deny', reason: 'transfer cap' },
    { tool: 'transfer', args: { amount: 5 }, intercept: 'deny', reason: 'every call needs a ticket' },
    { tool: 'transfer', args: { amount: 5, ticket: 'T-1' }, intercept: 'allow' },
    { tool: 'other', intercept: 'deny', reason: 'every call needs a ticket' },
  ]);
});

test('a deny rule under "*" denies every call: listed tools take its reason unless they have a deny rule of their own', () => {
  const yaml = (def: string) => `version: "1"
default: ${def}
tools:
  read_file:
    rules:
      - name: small reads
        conditions: [ { path: args.length, op: lte, value: 10 } ]
  delete_file:
    rules:
      - name: no deletes
        action: deny
        on_deny: deletes are off
  "*":
    rules:
      - name: maintenance
        action: deny
        on_deny: the server is in maintenance
`;
  const allow = convert(yaml('allow'));
  assert.match(allow.warnings.join('\n'), /intercept\.yaml: \/tools\/\*\/rules\/0: the "\*" rule "maintenance" denies every call, of every tool \(line 15:9\)/);
  const allowPolicy = compilePolicy(allow.document, 'x');
  check(allowPolicy, [
    { tool: 'read_file', args: { length: 1 }, intercept: 'deny', reason: 'the server is in maintenance' },
    { tool: 'delete_file', intercept: 'deny', reason: 'deletes are off' },
    { tool: 'unlisted', intercept: 'deny', reason: 'the server is in maintenance' },
  ]);
  assert.equal(allow.document.all_tools, undefined);

  const denyPolicy = compilePolicy(convert(yaml('deny')).document, 'x');
  check(denyPolicy, [
    { tool: 'read_file', args: { length: 1 }, intercept: 'deny', reason: 'the server is in maintenance' },
    { tool: 'unlisted', intercept: 'deny' },
  ]);
  assert.equal(denyPolicy.document.tools?.['*'], undefined);
});

test('a tool with a deny rule is denied with its on_deny, or with a reason naming the rule', () => {
  const policy = load(`version: "1"
tools:
  drop_table:
    rules:
      - name: never drop
        action: deny
  truncate:
    rules:
      - name: small
        conditions: [ { path: args.rows, op: lt, value: 10 } ]
      - name: never truncate
        action: deny
        on_deny: truncation is off
`);
  check(policy, [
    { tool: 'drop_table', intercept: 'deny', reason: 'denied by the rule "never drop"' },
    { tool: 'truncate', args: { rows: 1 }, intercept: 'deny', reason: 'truncation is off' },
  ]);
});

test('hide "*" hides every tool, as Intercept does', () => {
  const policy = load('version: "1"\nhide: ["*"]\ntools:\n  a:\n    rules: []\n');
  check(policy, [
    { tool: 'a', intercept: 'hidden' },
    { tool: 'b', intercept: 'hidden' },
  ]);
  assert.deepEqual(visibleTools(policy, [{ name: 'a' }, { name: 'b' }]), []);
});

// ---- conditions: Intercept's comparisons, reproduced -----------------------------------------

function decide(conditions: string, args: Record<string, unknown>): Decision['effect'] {
  const policy = load(`version: "1"\ntools:\n  t:\n    rules:\n      - name: r\n        conditions:\n${conditions}\n`);
  return evaluate({ tool: 't', args }, policy).effect;
}

const cond = (op: string, value: string) => `          - { path: args.x, op: ${op}, value: ${value} }`;

test('eq follows Intercept: numbers compare as numbers, anything else by its Go text, so 5 and "5" are equal', () => {
  const rows: Array<[string, string, unknown, 'allow' | 'deny']> = [
    ['eq', '5', 5, 'allow'],
    ['eq', '5', '5', 'allow'],
    ['eq', '5', 5.0, 'allow'],
    ['eq', '5', '5.0', 'deny'],
    ['eq', '5', true, 'deny'],
    ['eq', '"5"', 5, 'allow'],
    ['eq', '"5"', '5', 'allow'],
    ['eq', '"0.5"', 0.5, 'allow'],
    // Go renders the float64 1000000 as 1e+06, so the string "1000000" does not equal it.
    ['eq', '"1000000"', 1_000_000, 'deny'],
    ['eq', '"1e+06"', 1_000_000, 'allow'],
    // A YAML int renders in full, a YAML float in Go's short form.
    ['eq', '1000000', '1000000', 'allow'],
    ['eq', '1e6', '1e+06', 'allow'],
    ['eq', '1e6', '1000000', 'deny'],
    ['eq', '1e6', 1_000_000, 'allow'],
    ['eq', 'true', true, 'allow'],
    ['eq', 'true', 'true', 'allow'],
    ['eq', '"true"', true, 'allow'],
    ['eq', 'true', 1, 'deny'],
    ['eq', 'staging', 'staging', 'allow'],
    ['eq', 'staging', 'prod', 'deny'],
    ['neq', '5', '5', 'deny'],
    ['neq', '5', 6, 'allow'],
    ['neq', 'staging', 'prod', 'allow'],
    ['in', '[1, usd]', '1', 'allow'],
    ['in', '[1, usd]', 'usd', 'allow'],
    ['in', '[1, usd]', 2, 'deny'],
    ['not_in', '[1, root]', 1, 'deny'],
    ['not_in', '[1, root]', '1', 'deny'],
    ['not_in', '[1, root]', 'alice', 'allow'],
  ];
  for (const [op, value, arg, expected] of rows) {
    assert.equal(decide(cond(op, value), { x: arg }), expected, `${op} ${value} against ${JSON.stringify(arg)}`);
  }
});

test('a missing argument fails every operator but exists: false, and Intercept counts null as absent', () => {
  for (const [op, value] of [
    ['eq', '1'],
    ['neq', '1'],
    ['in', '[1]'],
    ['not_in', '[1]'],
    ['lt', '1'],
    ['gte', '1'],
    ['regex', '"."'],
    ['contains', 'a'],
    ['exists', 'true'],
  ] as const) {
    assert.equal(decide(cond(op, value), {}), 'deny', `${op} on a missing argument`);
  }
  assert.equal(decide(cond('exists', 'false'), {}), 'allow');
  assert.equal(decide(cond('exists', 'false'), { x: null }), 'allow');
  assert.equal(decide(cond('exists', 'false'), { x: 0 }), 'deny');
  assert.equal(decide(cond('exists', 'true'), { x: null }), 'deny');
  assert.equal(decide(cond('exists', 'true'), { x: '' }), 'allow');
});

test('lt lte gt gte compare numbers only, regex is unanchored RE2 on strings, contains reads substrings and list elements', () => {
  assert.equal(decide(cond('gt', '10'), { x: 11 }), 'allow');
  assert.equal(decide(cond('gt', '10'), { x: '11' }), 'deny');
  assert.equal(decide(cond('lt', '10'), { x: 9.5 }), 'allow');
  assert.equal(decide(cond('regex', '"^prod-[0-9]+$"'), { x: 'prod-12' }), 'allow');
  assert.equal(decide(cond('regex', '"prod"'), { x: 'my-prod-db' }), 'allow');
  assert.equal(decide(cond('regex', '"prod"'), { x: 5 }), 'deny');
  assert.equal(decide(cond('contains', '"@corp.com"'), { x: 'a@corp.com' }), 'allow');
  assert.equal(decide(cond('contains', 'admin'), { x: ['user', 'admin'] }), 'allow');
  assert.equal(decide(cond('contains', 'admin'), { x: ['user'] }), 'deny');
  assert.equal(decide(cond('contains', '5'), { x: 'a5' }), 'deny');
});

test('conditions convert to require entries carrying the rule\'s on_deny; exists becomes neq null, or a deny_if for false', () => {
  const { document } = convert(`version: "1"
tools:
  t:
    rules:
      - name: env
        conditions:
          - { path: args.env, op: eq, value: 5 }
          - { path: args.ticket, op: exists, value: true }
          - { path: args.force, op: exists, value: false }
        on_deny: not like that
      - name: no reason
        conditions:
          - { path: args.user, op: not_in, value: [] }
`);
  assert.deepEqual(document.tools?.t, {
    require: [
      { path: 'args.env', op: 'in', value: [5, '5'], reason: 'not like that' },
      { path: 'args.ticket', op: 'neq', value: null, reason: 'not like that' },
      { path: 'args.user', op: 'exists', value: true },
    ],
    deny_if: [{ path: 'args.force', op: 'neq', value: null, reason: 'not like that' }],
  });
});

test('goFloatText renders numbers as Go\'s %v does', () => {
  const cases: Array<[number, string]> = [
    [0, '0'],
    [5, '5'],
    [-5, '-5'],
    [0.5, '0.5'],
    [123456, '123456'],
    [1_000_000, '1e+06'],
    [123456789, '1.23456789e+08'],
    [0.0001, '0.0001'],
    [0.00001, '1e-05'],
    [-2.5e-7, '-2.5e-07'],
    [1e21, '1e+21'],
    [1.5e300, '1.5e+300'],
  ];
  for (const [n, text] of cases) assert.equal(goFloatText(n), text, String(n));
});

// ---- state: counters become limits ----------------------------------------------------------

test('a state condition with lte N becomes a calendar limit of N on the server, and lt N a limit of N - 1', () => {
  const { document } = convert(`version: "1"
tools:
  send:
    rules:
      - name: per hour
        conditions: [ { path: state.send.sent, op: lt, value: 10 } ]
        state: { counter: sent, window: hour, increment: 2 }
      - name: bytes per day
        conditions: [ { path: state.send.bytes, op: lte, value: 5000 } ]
        state: { counter: bytes, window: day, increment_from: args.size }
`);
  assert.deepEqual(document.tools?.send?.limits, [
    { counter: 'send.sent', window: 'hour', align: 'calendar', max: 9, scope: 'server', increment: 2 },
    { counter: 'send.bytes', window: 'day', align: 'calendar', max: 5000, scope: 'server', increment_from: 'args.size' },
  ]);
});

test('increment 0 is Intercept\'s default of 1, and an increment beside increment_from is dropped with a warning', () => {
  const r = convert(`version: "1"
tools:
  t:
    rules:
      - name: a
        conditions: [ { path: state.t.a, op: lte, value: 5 } ]
        state: { counter: a, window: minute, increment: 0 }
      - name: b
        conditions: [ { path: state.t.b, op: lte, value: 5 } ]
        state: { counter: b, window: minute, increment: 3, increment_from: args.n }
`);
  assert.deepEqual(
    r.document.tools?.t?.limits?.map((l) => [l.counter, l.increment, l.increment_from]),
    [
      ['t.a', undefined, undefined],
      ['t.b', undefined, 'args.n'],
    ],
  );
  assert.deepEqual(r.warnings, [
    'intercept.yaml: /tools/t/rules/1/state/increment: increment is ignored when increment_from is set (as Intercept ignores it); dropped (line 10:57)',
  ]);
});

test('a state block with no lt or lte condition on its counter limits nothing: dropped, with a warning', () => {
  const r = convert(`version: "1"
tools:
  t:
    rules:
      - name: count only
        conditions: [ { path: args.a, op: exists, value: true } ]
        state: { counter: seen, window: day }
`);
  assert.equal(r.document.tools?.t?.limits, undefined);
  assert.deepEqual(r.warnings, [
    'intercept.yaml: /tools/t/rules/0/state: the counter "seen" has no lte or lt condition on state.t.seen in this rule, so it limits nothing (Intercept does not even count it); dropped (line 7:16)',
  ]);
});

test('counter conditions PolicyLayer cannot express are refused: other operators, other rules\' counters, fractions, limits below 1', () => {
  const cases: Array<[string, RegExp]> = [
    [
      `  t:\n    rules:\n      - name: r\n        conditions: [ { path: state.t.c, op: gt, value: 5 } ]\n        state: { counter: c, window: day }\n`,
      /\/tools\/t\/rules\/0\/conditions\/0\/op: gt on a counter has no PolicyLayer equivalent: a counter can only be capped, with lte \(at most\) or lt \(below\) \(line 6:/,
    ],
    [
      `  t:\n    rules:\n      - name: r\n        rate_limit: 5/hour\n  u:\n    rules:\n      - name: s\n        conditions: [ { path: state.t._rate_hour, op: lte, value: 3 } ]\n`,
      /\/tools\/u\/rules\/0\/conditions\/0\/path: a condition on state\.t\._rate_hour outside the rule whose state block counts it has no PolicyLayer equivalent/,
    ],
    [
      `  t:\n    rules:\n      - name: r\n        conditions: [ { path: state.t.c, op: lte, value: 10.5 } ]\n        state: { counter: c, window: day }\n`,
      /\/tools\/t\/rules\/0\/conditions\/0\/value: a counter limit must be a whole number \(counters add whole amounts\), got 10\.5/,
    ],
    [
      `  t:\n    rules:\n      - name: r\n        conditions: [ { path: state.t.c, op: lt, value: 1 } ]\n        state: { counter: c, window: day }\n`,
      /\/tools\/t\/rules\/0\/conditions\/0\/value: lt 1 admits no call once anything is counted; PolicyLayer limits need a maximum of at least 1/,
    ],
    [
      `  t:\n    rules:\n      - name: r\n        conditions:\n          - { path: state.t.c, op: lte, value: 10 }\n          - { path: state.t.c, op: lte, value: 5 }\n        state: { counter: c, window: day }\n`,
      /\/tools\/t\/rules\/0\/conditions\/1\/path: a second limit on state\.t\.c in the same rule has no PolicyLayer equivalent; keep one/,
    ],
  ];
  for (const [tools, expected] of cases) {
    const issues = issuesOf(() => load(`version: "1"\ntools:\n${tools}`));
    assert.equal(issues.length, 1, issues.join('\n'));
    assert.match(issues[0] ?? '', expected);
    assert.match(issues[0] ?? '', /^intercept\.yaml: /);
  }
});

test('rate_limit N/window is a calendar limit of N calls on the tool, or on every call under "*"', () => {
  const { document } = convert(`version: "1"
tools:
  a:
    rules:
      - { name: a per day, rate_limit: 100/day }
  "*":
    rules:
      - { name: all per minute, rate_limit: 30/minute }
`);
  assert.deepEqual(document.tools?.a?.limits, [{ counter: 'a._rate_day', window: 'day', align: 'calendar', max: 100, scope: 'server' }]);
  assert.deepEqual(document.all_tools?.limits, [{ counter: '_global._rate_minute', window: 'minute', align: 'calendar', max: 30, scope: 'server' }]);
});

// ---- what cannot be expressed ---------------------------------------------------------------

test('tool names and hide entries with * or ? are refused: Intercept matches them literally, PolicyLayer would read globs', () => {
  const issues = issuesOf(() => load('version: "1"\nhide: [ "*", "admin_?" ]\ntools:\n  "delete_*":\n    rules: []\n'));
  assert.deepEqual(issues, [
    'intercept.yaml: /hide/1: "admin_?" contains * or ?: Intercept hides the tool of exactly this name, but PolicyLayer would read it as a glob (line 2:14)',
    'intercept.yaml: /tools/delete_*: tool name "delete_*" contains * or ?: Intercept matches it literally, but PolicyLayer would read it as a glob (line 4:3)',
  ]);
});

test('argument paths PolicyLayer cannot name are refused, and numeric segments are converted with a warning', () => {
  const issues = issuesOf(() => decide(cond('eq', '1').replace('args.x', '"args.a b"'), {}));
  assert.match(issues[0] ?? '', /\/tools\/t\/rules\/0\/conditions\/0\/path: PolicyLayer cannot name the argument "args\.a b": a path segment is empty or contains whitespace, "\[", "\]" or "\*"/);
  const r = convert('version: "1"\ntools:\n  t:\n    rules:\n      - name: r\n        conditions: [ { path: args.items.0, op: exists, value: true } ]\n');
  assert.match(r.warnings[0] ?? '', /\/tools\/t\/rules\/0\/conditions\/0\/path: a numeric segment of args\.items\.0 also selects an array element here/);
});

test('in with an empty list is refused (it denies every call), and list values of eq are converted with a warning', () => {
  const issues = issuesOf(() => decide(cond('in', '[]'), {}));
  assert.match(issues[0] ?? '', /\/tools\/t\/rules\/0\/conditions\/0\/value: in with an empty list never holds/);
  const r = convert('version: "1"\ntools:\n  t:\n    rules:\n      - name: r\n        conditions: [ { path: args.tags, op: eq, value: [a, b] } ]\n');
  assert.match(r.warnings[0] ?? '', /\/tools\/t\/rules\/0\/conditions\/0\/value: eq with a list or object value compares JSON values here/);
});

// ---- Intercept's own validation -------------------------------------------------------------

function invalid(yaml: string): string[] {
  return issuesOf(() => load(yaml));
}

const TOOL = (rule: string) => `version: "1"\ntools:\n  t:\n    rules:\n${rule}`;

test('version must be "1" and default allow or deny', () => {
  assert.deepEqual(invalid('version: "2"\ndefault: maybe\ntools:\n  t:\n    rules: []\n'), [
    'intercept.yaml: /version: expected "1" (line 1:10)',
    'intercept.yaml: /default: expected allow|deny (line 2:10)',
  ]);
  assert.deepEqual(invalid('tools:\n  t:\n    rules: []\n'), ['intercept.yaml: /version: required field is missing; expected "1" (line 1:1)']);
});

test('every rule needs a name, and action is evaluate or deny', () => {
  assert.deepEqual(invalid(TOOL('      - action: deny\n      - name: ""\n        action: block\n')), [
    'intercept.yaml: /tools/t/rules/0/name: required field is missing; every rule needs a name (a non-empty string) (line 5:9)',
    'intercept.yaml: /tools/t/rules/1/name: every rule needs a name (a non-empty string) (line 6:15)',
    'intercept.yaml: /tools/t/rules/1/action: expected evaluate|deny (line 7:17)',
  ]);
});

test('a deny rule must not have conditions, and an evaluate rule needs at least one', () => {
  assert.deepEqual(
    invalid(TOOL('      - name: d\n        action: deny\n        conditions: [ { path: args.a, op: exists, value: true } ]\n      - name: e\n')),
    [
      'intercept.yaml: /tools/t/rules/0/conditions: a deny rule must not have conditions: it denies every call (line 7:21)',
      'intercept.yaml: /tools/t/rules/1/conditions: required field is missing; an evaluate rule needs at least one condition (or write rate_limit, or action: deny) (line 8:9)',
    ],
  );
});

test('a condition path starts with args. or state., and its operator is one Intercept knows', () => {
  assert.deepEqual(invalid(TOOL('      - name: r\n        conditions:\n          - { path: amount, op: lte, value: 1 }\n          - { path: args.a, op: like, value: x }\n')), [
    'intercept.yaml: /tools/t/rules/0/conditions/0/path: path must start with "args." or "state.", e.g. "args.amount" (line 7:21)',
    'intercept.yaml: /tools/t/rules/0/conditions/1/op: unknown operator; expected eq|neq|in|not_in|lt|lte|gt|gte|regex|contains|exists (line 8:33)',
  ]);
});

test('each operator checks its value: in and not_in a list, lt..gte a number, exists a boolean, regex a pattern that compiles', () => {
  assert.deepEqual(
    invalid(
      TOOL(
        '      - name: r\n        conditions:\n' +
          '          - { path: args.a, op: in, value: usd }\n' +
          '          - { path: args.a, op: lte, value: "5" }\n' +
          '          - { path: args.a, op: exists, value: "yes" }\n' +
          '          - { path: args.a, op: regex, value: 5 }\n' +
          '          - { path: args.a, op: regex, value: "(" }\n' +
          '          - { path: args.a, op: eq }\n',
      ),
    ).map((l) => l.replace(/ \(line.*$/, '').replace(/: invalid or unsupported regular expression.*/, ': invalid or unsupported regular expression')),
    [
      'intercept.yaml: /tools/t/rules/0/conditions/0/value: operator in needs a list value, e.g. [usd, eur]',
      'intercept.yaml: /tools/t/rules/0/conditions/1/value: operator lte needs a number',
      'intercept.yaml: /tools/t/rules/0/conditions/2/value: operator exists needs true or false',
      'intercept.yaml: /tools/t/rules/0/conditions/3/value: operator regex needs a string (an RE2 pattern)',
      'intercept.yaml: /tools/t/rules/0/conditions/4/value: invalid or unsupported regular expression',
      'intercept.yaml: /tools/t/rules/0/conditions/5/value: required field is missing; expected a value for operator eq',
    ],
  );
});

test('a state block needs a counter and a window of minute, hour or day, and increment_from starts with args.', () => {
  assert.deepEqual(
    invalid(
      TOOL(
        '      - name: r\n        conditions: [ { path: state.t.c, op: lte, value: 5 } ]\n        state: { counter: "", window: week, increment_from: amount }\n',
      ),
    ),
    [
      'intercept.yaml: /tools/t/rules/0/state/counter: expected a counter name (a non-empty string) (line 7:27)',
      'intercept.yaml: /tools/t/rules/0/state/window: expected minute|hour|day (line 7:39)',
      'intercept.yaml: /tools/t/rules/0/state/increment_from: increment_from must start with "args.", e.g. "args.amount" (line 7:61)',
    ],
  );
});

test('a condition on state.<tool>.<counter> needs a state block that defines that counter', () => {
  assert.deepEqual(invalid(TOOL('      - name: r\n        conditions: [ { path: state.t.calls, op: lte, value: 5 } ]\n')), [
    'intercept.yaml: /tools/t/rules/0/conditions/0/path: no state block defines the counter "calls" of "t" (add state: { counter: calls, window: ... } to the rule) (line 6:31)',
  ]);
  assert.deepEqual(invalid(TOOL('      - name: r\n        conditions: [ { path: state._global.calls, op: lte, value: 5 } ]\n')), [
    'intercept.yaml: /tools/t/rules/0/conditions/0/path: no state block defines the counter "calls" of the "*" rules (add state: { counter: calls, window: ... } to the rule) (line 6:31)',
  ]);
});

test('rate_limit is a positive count per minute, hour or day, and cannot be combined with conditions, state or action deny', () => {
  assert.deepEqual(
    invalid(
      TOOL(
        '      - { name: a, rate_limit: "0/hour" }\n' +
          '      - { name: b, rate_limit: "5/week" }\n' +
          '      - { name: c, rate_limit: "often" }\n' +
          '      - { name: d, rate_limit: 5/hour, conditions: [ { path: args.a, op: exists, value: true } ] }\n' +
          '      - { name: e, rate_limit: 5/day, action: deny }\n',
      ),
    ).map((l) => l.replace(/ \(line.*$/, '')),
    [
      'intercept.yaml: /tools/t/rules/0/rate_limit: rate_limit count must be a positive integer, got "0"',
      'intercept.yaml: /tools/t/rules/1/rate_limit: rate_limit window must be minute|hour|day, got "week"',
      'intercept.yaml: /tools/t/rules/2/rate_limit: expected <count>/<window>, e.g. "5/hour", got "often"',
      'intercept.yaml: /tools/t/rules/3/rate_limit: rate_limit cannot be combined with conditions or state; write the rule out in full instead',
      'intercept.yaml: /tools/t/rules/4/action: rate_limit cannot be used with action: deny',
    ],
  );
});

test('one tool may not use a state counter twice, rate limits included', () => {
  assert.deepEqual(
    invalid(
      TOOL(
        '      - { name: a, rate_limit: 5/hour }\n      - { name: b, rate_limit: 10/hour }\n' +
          '      - name: c\n        conditions: [ { path: state.t.n, op: lte, value: 5 } ]\n        state: { counter: n, window: day }\n' +
          '      - name: d\n        conditions: [ { path: args.a, op: exists, value: true } ]\n        state: { counter: n, window: day }\n',
      ),
    ),
    [
      'intercept.yaml: /tools/t/rules/1/rate_limit: duplicate state counter "_rate_hour" (also used by tools/t/rules/0) (line 6:32)',
      'intercept.yaml: /tools/t/rules/3/state/counter: duplicate state counter "n" (also used by tools/t/rules/2) (line 12:27)',
    ],
  );
});

test('hide entries may not be empty or repeated', () => {
  assert.deepEqual(invalid('version: "1"\nhide: [ a, "  " ]\ntools:\n  t:\n    rules: []\n'), ['intercept.yaml: /hide/1: hide entries must not be empty (line 2:12)']);
  assert.deepEqual(invalid('version: "1"\nhide: [ a, b, a ]\ntools:\n  t:\n    rules: []\n'), ['intercept.yaml: /hide/2: duplicate entry "a" (also hide/0) (line 2:15)']);
});

test('unknown fields are errors listing the expected ones, rather than ignored as Intercept ignores them', () => {
  assert.deepEqual(invalid(TOOL('      - { name: r, rate_limit: 5/hour, ondeny: slow down }\n')), [
    'intercept.yaml: /tools/t/rules/0/ondeny: unknown field; expected one of: name, action, rate_limit, conditions, on_deny, state (line 5:40)',
  ]);
});

// ---- inline policies ------------------------------------------------------------------------

test('an Intercept policy written inside another file is converted there, with errors located in that file', () => {
  const text = 'servers:\n  s:\n    policy:\n      version: "1"\n      tools:\n        t:\n          rules:\n            - { name: r, rate_limit: 5/fortnight }\n';
  const read = readSource(text, 'gateway.yaml');
  const value = (read.value as { servers: { s: { policy: unknown } } }).servers.s.policy;
  const checked = checkPolicyValue(value, read.text, ['servers', 's', 'policy']);
  assert.deepEqual(checked, {
    ok: false,
    issues: ['gateway.yaml: /servers/s/policy/tools/t/rules/0/rate_limit: rate_limit window must be minute|hour|day, got "fortnight" (line 8:38)'],
  });
  const good = readSource(text.replace('fortnight', 'hour'), 'gateway.yaml');
  const ok = checkPolicyValue((good.value as { servers: { s: { policy: unknown } } }).servers.s.policy, good.text, ['servers', 's', 'policy']);
  assert.equal(ok.ok && ok.convertedFrom, 'intercept');
});
