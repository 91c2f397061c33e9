import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_APPROVAL_TIMEOUT_MS, evaluate, isHidden, parsePolicy, usesApproval, visibleTools } from './index.js';
import type { CompiledPolicy } from './index.js';

function policy(doc: Record<string, unknown>): CompiledPolicy {
  return parsePolicy(JSON.stringify({ version: '1', default: 'deny', ...doc }), 'policy.json');
}

function ruleFor(p: CompiledPolicy, tool: string): string {
  return evaluate({ tool, args: {} }, p).rule;
}

const SEED_EXTENDED = policy({
  hide: ['delete_account', 'admin_*'],
  all_tools: { limits: [{ counter: 'calls', window: 'minute', max: 120, scope: 'grant' }] },
  tools: {
    create_session: { limits: [{ counter: 'create_session_rate', window: 'minute', max: 10, scope: 'grant' }] },
    'delete_*': { action: 'deny', reason: 'destructive tools are off in this deployment' },
    read_file: {},
  },
});

test('allows a tool listed as {} under default deny, carrying the all_tools limits', () => {
  const d = evaluate({ tool: 'read_file', args: {} }, SEED_EXTENDED);
  assert.equal(d.effect, 'allow');
  assert.equal(d.rule, '/tools/read_file');
  assert.equal(d.policyVersion, SEED_EXTENDED.version);
  assert.deepEqual(
    d.limits.map((l) => l.pointer),
    ['/all_tools/limits/0'],
  );
});

test("carries the tool's own limits first, then the all_tools limits", () => {
  const d = evaluate({ tool: 'create_session', args: {} }, SEED_EXTENDED);
  assert.deepEqual(
    d.limits.map((l) => l.pointer),
    ['/tools/create_session/limits/0', '/all_tools/limits/0'],
  );
});

test('denies an unlisted tool under default deny, naming the tool and the default', () => {
  const d = evaluate({ tool: 'foo', args: {} }, SEED_EXTENDED);
  assert.deepEqual(d, {
    effect: 'deny',
    rule: '(default deny)',
    reason: "'foo' is not allowed by the policy (default: deny)",
    policyVersion: SEED_EXTENDED.version,
    limits: [],
    enforced: true,
  });
});

test('allows an unlisted tool under default allow, with the all_tools limits', () => {
  const p = policy({ default: 'allow', all_tools: { limits: [{ counter: 'calls', window: 60, max: 5, scope: 'session' }] } });
  const d = evaluate({ tool: 'anything', args: {} }, p);
  assert.equal(d.effect, 'allow');
  assert.equal(d.rule, '(default allow)');
  assert.equal(d.reason, 'allowed by the policy (default: allow)');
  assert.equal(d.limits[0]?.counter, 'calls');
});

test('still denies a listed deny rule under default allow', () => {
  const p = policy({ default: 'allow', tools: { drop_table: { action: 'deny' } } });
  const d = evaluate({ tool: 'drop_table', args: {} }, p);
  assert.equal(d.effect, 'deny');
  assert.equal(d.rule, '/tools/drop_table');
  assert.equal(d.reason, "'drop_table' is denied by the policy (rule /tools/drop_table)");
});

test("denies by a glob rule with the rule's reason and pointer", () => {
  const d = evaluate({ tool: 'delete_user', args: {} }, SEED_EXTENDED);
  assert.equal(d.effect, 'deny');
  assert.equal(d.rule, '/tools/delete_*');
  assert.equal(d.reason, 'destructive tools are off in this deployment');
  assert.deepEqual(d.limits, []);
});

test('names the called tool when a glob deny rule has no reason', () => {
  const p = policy({ tools: { 'rm_*': { action: 'deny' } } });
  assert.equal(evaluate({ tool: 'rm_rf', args: {} }, p).reason, "'rm_rf' is denied by the policy (rule /tools/rm_*)");
});

test('hides admin_* tools from tools/list and answers a call to one as an unknown tool', () => {
  const tools = [{ name: 'read_file' }, { name: 'admin_reset' }, { name: 'delete_account' }, { name: 'delete_user' }];
  assert.deepEqual(
    visibleTools(SEED_EXTENDED, tools).map((t) => t.name),
    ['read_file', 'delete_user'],
  );
  const d = evaluate({ tool: 'admin_reset', args: {} }, SEED_EXTENDED);
  assert.equal(d.effect, 'hidden');
  assert.equal(d.rule, '(hidden)');
  assert.equal(d.reason, 'Unknown tool: admin_reset');
  assert.doesNotMatch(d.reason, /polic|hidden/i);
});

test('hides a tool even when a rule under tools allows it', () => {
  const p = policy({ default: 'allow', hide: ['secret_*', 'exact_one'], tools: { secret_tool: {}, exact_one: {}, 'secret_*': {} } });
  assert.equal(evaluate({ tool: 'secret_tool', args: {} }, p).effect, 'hidden');
  assert.equal(evaluate({ tool: 'exact_one', args: {} }, p).effect, 'hidden');
  assert.equal(evaluate({ tool: 'secret_other', args: {} }, p).effect, 'hidden');
  assert.equal(isHidden(p, 'secret_tool'), true);
  assert.equal(isHidden(p, 'public_tool'), false);
});

test('leaves tools/list untouched when nothing is hidden', () => {
  const p = policy({});
  const tools = [{ name: 'a', description: 'x' }, { name: 'b' }];
  assert.deepEqual(visibleTools(p, tools), tools);
});

test('answers require_approval as a decision to hold the call, with the rule, its reason, its limits and a 10-minute default timeout', () => {
  const p = policy({
    all_tools: { limits: [{ counter: 'calls', window: 'minute', max: 100, scope: 'grant' }] },
    tools: {
      create_charge: { action: 'require_approval', limits: [{ counter: 'charges', window: 'day', max: 5, scope: 'grant' }] },
      'pay_*': { action: 'require_approval', reason: 'payments need a person', approval: { timeout: '30s', remember: '1h' } },
    },
  });
  const charge = evaluate({ tool: 'create_charge', args: { amount: 5 } }, p);
  assert.equal(charge.effect, 'require_approval');
  assert.equal(charge.rule, '/tools/create_charge');
  assert.equal(charge.reason, 'a person must approve this call (rule /tools/create_charge)');
  assert.equal(charge.enforced, true);
  assert.deepEqual(charge.limits.map((l) => l.counter), ['charges', 'calls'], 'the limits are reserved once the call is approved');
  assert.deepEqual(charge.approval, { timeoutMs: DEFAULT_APPROVAL_TIMEOUT_MS, pointer: '/tools/create_charge' });
  assert.equal(DEFAULT_APPROVAL_TIMEOUT_MS, 600_000);
  assert.equal(charge.validateArguments, true, 'the arguments are checked before a person is asked');

  const invoice = evaluate({ tool: 'pay_invoice', args: {} }, p);
  assert.equal(invoice.effect, 'require_approval');
  assert.equal(invoice.reason, 'payments need a person');
  assert.deepEqual(invoice.approval, { timeoutMs: 30_000, rememberMs: 3_600_000, pointer: '/tools/pay_*/approval' });
});

test('says whether a policy can hold a call for approval at all', () => {
  assert.equal(usesApproval(policy({ tools: { a: {}, b: { action: 'deny' } } })), false);
  assert.equal(usesApproval(policy({ tools: { a: {}, 'pay_*': { action: 'require_approval' } } })), true);
  assert.equal(usesApproval(policy({ tools: { create_charge: { action: 'require_approval' } } })), true);
});

// Precedence: exact name > most literal characters > fewest wildcards > earliest in the file.

test('prefers an exact name over a glob written before it', () => {
  const p = policy({ tools: { 'delete_*': { action: 'deny' }, delete_draft: {} } });
  assert.equal(ruleFor(p, 'delete_draft'), '/tools/delete_draft');
  assert.equal(evaluate({ tool: 'delete_draft', args: {} }, p).effect, 'allow');
});

test('prefers an exact name over a glob with more literal characters', () => {
  const p = policy({ tools: { 'send_email_to_*': { action: 'deny' }, send_email_to_me: {} } });
  assert.equal(ruleFor(p, 'send_email_to_me'), '/tools/send_email_to_me');
});

test('prefers the glob with more literal characters, whatever the file order', () => {
  const p = policy({ tools: { '*': { action: 'deny' }, 'delete_*': { action: 'deny' }, 'delete_user_*': {} } });
  assert.equal(ruleFor(p, 'delete_user_42'), '/tools/delete_user_*');
  assert.equal(ruleFor(p, 'delete_group'), '/tools/delete_*');
  assert.equal(ruleFor(p, 'list'), '/tools/*');
  const reversed = policy({ tools: { 'delete_user_*': {}, 'delete_*': { action: 'deny' }, '*': { action: 'deny' } } });
  assert.equal(ruleFor(reversed, 'delete_user_42'), '/tools/delete_user_*');
  assert.equal(ruleFor(reversed, 'delete_group'), '/tools/delete_*');
});

test('prefers fewer wildcards when literal characters tie', () => {
  // Both have 4 literal characters; `get_*` has one wildcard, `g*et_*` two.
  const p = policy({ tools: { 'g*et_*': { action: 'deny' }, 'get_*': {} } });
  assert.equal(ruleFor(p, 'get_user'), '/tools/get_*');
  // `?` counts as a wildcard too: `get_??` (4 literals, 2 wildcards) loses to `get_*`.
  const q = policy({ tools: { 'get_??': { action: 'deny' }, 'get_*': {} } });
  assert.equal(ruleFor(q, 'get_id'), '/tools/get_*');
});

test('prefers the glob written first when literal characters and wildcards tie', () => {
  const p = policy({ tools: { 'read_*': {}, '*_file': { action: 'deny' } } });
  assert.equal(ruleFor(p, 'read_file'), '/tools/read_*');
  const q = policy({ tools: { '*_file': { action: 'deny' }, 'read_*': {} } });
  assert.equal(ruleFor(q, 'read_file'), '/tools/*_file');
});

test('matches ? to exactly one character and * to any run, including none', () => {
  const p = policy({ tools: { 'tool_?': {}, 'x*y': {} } });
  assert.equal(evaluate({ tool: 'tool_1', args: {} }, p).effect, 'allow');
  assert.equal(evaluate({ tool: 'tool_12', args: {} }, p).effect, 'deny');
  assert.equal(evaluate({ tool: 'tool_', args: {} }, p).effect, 'deny');
  assert.equal(evaluate({ tool: 'tool_é', args: {} }, p).effect, 'allow');
  assert.equal(evaluate({ tool: 'xy', args: {} }, p).effect, 'allow');
  assert.equal(evaluate({ tool: 'x-anything-y', args: {} }, p).effect, 'allow');
  assert.equal(evaluate({ tool: 'x\ny', args: {} }, p).effect, 'allow');
});

test('treats regular-expression characters in globs literally', () => {
  const p = policy({ tools: { 'a.b(c)+[d]|e$*': {} } });
  assert.equal(evaluate({ tool: 'a.b(c)+[d]|e$z', args: {} }, p).effect, 'allow');
  assert.equal(evaluate({ tool: 'aXb(c)+[d]|e$z', args: {} }, p).effect, 'deny');
  const h = policy({ hide: ['x.y*'] });
  assert.equal(isHidden(h, 'x.yz'), true);
  assert.equal(isHidden(h, 'xzyz'), false);
});

test('escapes tool names in rule pointers', () => {
  const p = policy({ tools: { 'ns/tool~1': { action: 'deny', reason: 'no' } } });
  assert.equal(ruleFor(p, 'ns/tool~1'), '/tools/ns~1tool~01');
});

test('returns the same frozen decision for repeated allowed calls', () => {
  const a = evaluate({ tool: 'read_file', args: { path: '/a' } }, SEED_EXTENDED);
  const b = evaluate({ tool: 'read_file', args: { path: '/b' } }, SEED_EXTENDED);
  assert.equal(a, b);
  assert.ok(Object.isFrozen(a));
  assert.ok(Object.isFrozen(a.limits));
  assert.ok(Object.isFrozen(a.limits[0]));
  const allowAll = policy({ default: 'allow' });
  assert.equal(evaluate({ tool: 'x', args: {} }, allowAll), evaluate({ tool: 'y', args: {} }, allowAll));
});

test('never throws, denying calls that name no tool', () => {
  const bad: unknown[] = [undefined, null, {}, { tool: 42 }, { tool: null }, { tool: { toString: () => 'read_file' } }];
  for (const call of bad) {
    const d = evaluate(call as { tool: string; args: unknown }, SEED_EXTENDED);
    assert.equal(d.effect, 'deny');
    assert.equal(d.rule, '(default deny)');
  }
  const broken = evaluate({ tool: 'x', args: {} }, {} as CompiledPolicy);
  assert.equal(broken.effect, 'deny');
});

test('does not let a tool named like an Object prototype key match anything', () => {
  for (const tool of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    assert.equal(evaluate({ tool, args: {} }, SEED_EXTENDED).rule, '(default deny)');
  }
});

test('finds the same glob through its prefix index as a scan of every glob in precedence order would (property)', () => {
  // Names and globs over a small alphabet, so prefixes overlap and most names match something.
  const piece = fc.string({ unit: fc.constantFrom('a', 'b', '_', 'é'), maxLength: 4 });
  const glob = fc.tuple(piece, fc.constantFrom('*', '?', '*_', '?b*'), piece).map(([a, w, b]) => `${a}${w}${b}`);
  fc.assert(
    fc.property(fc.uniqueArray(glob, { minLength: 1, maxLength: 12 }), fc.array(fc.string({ unit: fc.constantFrom('a', 'b', '_', 'é'), maxLength: 7 }), { maxLength: 20 }), (globs, names) => {
      const p = policy({ tools: Object.fromEntries(globs.map((g) => [g, {}])) });
      for (const name of names) {
        const scanned = p.globs.find((g) => g.matcher.test(name));
        assert.equal(ruleFor(p, name), scanned?.pointer ?? '(default deny)', `${name} against ${globs.join(' ')}`);
      }
    }),
    { numRuns: 500 },
  );
});
