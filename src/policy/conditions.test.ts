import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError } from '../errors.js';
import { normaliseHostPattern, normalisePrefix, preview, underPrefix, urlHost } from './conditions.js';
import { evaluate, parseConditionPath, parsePolicy } from './index.js';
import type { CompiledPolicy, Decision } from './index.js';

function policy(doc: Record<string, unknown>): CompiledPolicy {
  return parsePolicy(JSON.stringify({ version: '1', default: 'deny', ...doc }), 'policy.json');
}

/** A policy with one tool `t` carrying the given rule. */
function rule(r: Record<string, unknown>): CompiledPolicy {
  return policy({ tools: { t: r } });
}

function call(p: CompiledPolicy, args: unknown): Decision {
  return evaluate({ tool: 't', args }, p);
}

/** Whether `args` passes a single `require` condition and whether it fires the same `deny_if`. */
function both(cond: Record<string, unknown>, args: unknown): { require: boolean; denyIf: boolean } {
  return {
    require: call(rule({ require: [cond] }), args).effect === 'allow',
    denyIf: call(rule({ deny_if: [cond] }), args).effect === 'deny',
  };
}

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.issues;
  }
  assert.fail('expected a ConfigError');
}

const CHARGE = policy({
  tools: {
    create_charge: {
      require: [
        { path: 'args.currency', op: 'in', value: ['usd', 'eur'] },
        { path: 'args.amount', op: 'gte', value: 1 },
      ],
      deny_if: [
        { path: 'args.amount', op: 'gt', value: 50000 },
        { path: 'args.memo', op: 'regex', value: '(?i)refund', reason: 'refunds go through the refunds tool' },
      ],
    },
  },
});

function charge(args: unknown): Decision {
  return evaluate({ tool: 'create_charge', args }, CHARGE);
}

// ---- decisions and reasons ----

test('allows a call that meets every require and fires no deny_if', () => {
  const d = charge({ currency: 'usd', amount: 100 });
  assert.equal(d.effect, 'allow');
  assert.equal(d.rule, '/tools/create_charge');
  assert.equal(d.enforced, true);
});

test('names the deny_if that fired as a JSON pointer and explains it in words', () => {
  const d = charge({ currency: 'usd', amount: 75000 });
  assert.equal(d.effect, 'deny');
  assert.equal(d.rule, '/tools/create_charge/deny_if/0');
  assert.equal(d.reason, 'args.amount must be at most 50000, got 75000 (rule /tools/create_charge/deny_if/0)');
  assert.deepEqual(d.limits, []);
});

test('names the first failing require and says the argument is missing', () => {
  const d = charge({ amount: 5 });
  assert.equal(d.rule, '/tools/create_charge/require/0');
  assert.equal(d.reason, 'args.currency must be one of "usd" or "eur", but it is missing (rule /tools/create_charge/require/0)');
  const second = charge({ currency: 'eur', amount: '5' });
  assert.equal(second.rule, '/tools/create_charge/require/1');
  assert.equal(second.reason, 'args.amount must be a number at least 1, got "5" (rule /tools/create_charge/require/1)');
});

test("uses the condition's own reason when it has one", () => {
  const d = charge({ currency: 'usd', amount: 10, memo: 'Refund for order 7' });
  assert.equal(d.rule, '/tools/create_charge/deny_if/1');
  assert.equal(d.reason, 'refunds go through the refunds tool');
});

test("never echoes more than about 100 characters of the agent's argument", () => {
  const p = rule({ require: [{ path: 'args.name', op: 'eq', value: 'x' }] });
  const d = call(p, { name: 'A'.repeat(10_000) });
  assert.ok(d.reason.length < 250, d.reason);
  assert.match(d.reason, /^args\.name must be "x", got "A{100}…" \(10000 characters\) \(rule \/tools\/t\/require\/0\)$/);
  assert.equal(preview({ a: 1 }), 'an object');
  assert.equal(preview([1, 2]), 'an array of 2 items');
  assert.doesNotMatch(preview('a' + '😀'.repeat(60)), /[\uD800-\uDBFF]…/u);
});

test('evaluates require before deny_if, and the tool’s own conditions before those of all_tools', () => {
  const p = policy({
    all_tools: {
      require: [{ path: 'args.tenant', op: 'exists', value: true }],
      deny_if: [{ path: 'args.dry_run', op: 'eq', value: false }],
    },
    tools: {
      t: {
        require: [{ path: 'args.n', op: 'lte', value: 10 }],
        deny_if: [{ path: 'args.n', op: 'eq', value: 7 }],
      },
    },
  });
  assert.equal(call(p, { n: 11, dry_run: false }).rule, '/tools/t/require/0');
  assert.equal(call(p, { n: 7, dry_run: false }).rule, '/tools/t/deny_if/0');
  assert.equal(call(p, { n: 1, dry_run: false }).rule, '/all_tools/require/0');
  assert.equal(call(p, { n: 1, tenant: 'a', dry_run: false }).rule, '/all_tools/deny_if/0');
  assert.equal(call(p, { n: 1, tenant: 'a' }).rule, '/tools/t');
});

test('lets a deny rule decide before any condition, and checks the conditions of a require_approval rule before asking a person', () => {
  const cond = [{ path: 'args.x', op: 'exists', value: true }];
  const p = policy({
    all_tools: { require: [{ path: 'args.tenant', op: 'eq', value: 'a' }] },
    tools: { d: { action: 'deny', require: cond }, a: { action: 'require_approval', deny_if: cond } },
  });
  assert.equal(evaluate({ tool: 'd', args: {} }, p).rule, '/tools/d');
  const refused = evaluate({ tool: 'a', args: { x: 1, tenant: 'a' } }, p);
  assert.deepEqual([refused.effect, refused.rule], ['deny', '/tools/a/deny_if/0'], 'what no person should be asked about is refused outright');
  const wrongTenant = evaluate({ tool: 'a', args: { tenant: 'b' } }, p);
  assert.deepEqual([wrongTenant.effect, wrongTenant.rule], ['deny', '/all_tools/require/0']);
  const asks = evaluate({ tool: 'a', args: { tenant: 'a' } }, p);
  assert.deepEqual([asks.effect, asks.rule], ['require_approval', '/tools/a']);
});

test('applies all_tools conditions to unlisted tools under default allow', () => {
  const p = policy({ default: 'allow', all_tools: { deny_if: [{ path: 'args.path', op: 'contains', value: '.ssh' }] } });
  assert.equal(evaluate({ tool: 'any', args: { path: '/home/u/.ssh/id_rsa' } }, p).rule, '/all_tools/deny_if/0');
  assert.equal(evaluate({ tool: 'any', args: { path: '/tmp/x' } }, p).rule, '(default allow)');
});

test('applies the conditions of a glob rule', () => {
  const p = policy({ tools: { 'send_*': { deny_if: [{ path: 'args.to', op: 'regex', value: '@competitor\\.com$' }] } } });
  assert.equal(evaluate({ tool: 'send_email', args: { to: 'ceo@competitor.com' } }, p).rule, '/tools/send_*/deny_if/0');
  assert.equal(evaluate({ tool: 'send_sms', args: { to: 'me@us.com' } }, p).effect, 'allow');
});

// ---- operators ----

test('eq and neq compare JSON values deeply, ignoring key order', () => {
  const obj = { a: [1, { b: null }], c: 'x' };
  assert.deepEqual(both({ path: 'args.v', op: 'eq', value: obj }, { v: { c: 'x', a: [1, { b: null }] } }), { require: true, denyIf: true });
  assert.deepEqual(both({ path: 'args.v', op: 'eq', value: obj }, { v: { c: 'x', a: [1, { b: 0 }] } }), { require: false, denyIf: false });
  assert.deepEqual(both({ path: 'args.v', op: 'eq', value: 1 }, { v: '1' }), { require: false, denyIf: false });
  assert.deepEqual(both({ path: 'args.v', op: 'neq', value: 'prod' }, { v: 'dev' }), { require: true, denyIf: true });
  assert.deepEqual(both({ path: 'args.v', op: 'neq', value: 'prod' }, { v: 'prod' }), { require: false, denyIf: false });
});

test('lt, lte, gt and gte compare numbers only: a non-number makes require deny and deny_if not fire', () => {
  const cases: [string, number, unknown, boolean][] = [
    ['lt', 10, 9, true],
    ['lt', 10, 10, false],
    ['lte', 10, 10, true],
    ['gt', 10, 11, true],
    ['gt', 10, 10, false],
    ['gte', 10, 10, true],
    ['gte', 10, 9.99, false],
  ];
  for (const [op, value, arg, passes] of cases) {
    assert.deepEqual(both({ path: 'args.n', op, value }, { n: arg }), { require: passes, denyIf: passes }, `${op} ${value} on ${arg}`);
  }
  for (const op of ['lt', 'lte', 'gt', 'gte']) {
    for (const arg of ['5', '50001', null, true, [5], { n: 5 }]) {
      assert.deepEqual(both({ path: 'args.n', op, value: 10 }, { n: arg }), { require: false, denyIf: false }, `${op} on ${JSON.stringify(arg)}`);
    }
    assert.deepEqual(both({ path: 'args.n', op, value: 10 }, {}), { require: false, denyIf: false }, `${op} on a missing argument`);
  }
});

test('in and not_in test membership by deep equality; a missing argument passes neither', () => {
  const inList = { path: 'args.c', op: 'in', value: ['usd', { code: 'eur' }] };
  assert.equal(both(inList, { c: 'usd' }).require, true);
  assert.equal(both(inList, { c: { code: 'eur' } }).require, true);
  assert.equal(both(inList, { c: 'USD' }).require, false);
  const notIn = { path: 'args.c', op: 'not_in', value: ['root', 'admin'] };
  assert.deepEqual(both(notIn, { c: 'alice' }), { require: true, denyIf: true });
  assert.deepEqual(both(notIn, { c: 'root' }), { require: false, denyIf: false });
  assert.deepEqual(both(notIn, {}), { require: false, denyIf: false });
});

test('exists true and false test presence; null counts as present', () => {
  assert.deepEqual(both({ path: 'args.x', op: 'exists', value: true }, { x: null }), { require: true, denyIf: true });
  assert.deepEqual(both({ path: 'args.x', op: 'exists', value: true }, {}), { require: false, denyIf: false });
  assert.deepEqual(both({ path: 'args.x', op: 'exists', value: false }, {}), { require: true, denyIf: true });
  const d = call(rule({ deny_if: [{ path: 'args.force', op: 'exists', value: true }] }), { force: 1 });
  assert.equal(d.reason, 'args.force must be absent, but it is present (rule /tools/t/deny_if/0)');
});

test('regex searches strings (unanchored) with RE2 syntax and never matches other types', () => {
  const r = { path: 'args.s', op: 'regex', value: '^[a-z]+$' };
  assert.equal(both(r, { s: 'abc' }).require, true);
  assert.equal(both(r, { s: 'abc1' }).require, false);
  assert.deepEqual(both({ path: 'args.s', op: 'regex', value: 'b' }, { s: 'abc' }), { require: true, denyIf: true });
  assert.deepEqual(both({ path: 'args.s', op: 'regex', value: '1' }, { s: 1 }), { require: false, denyIf: false });
});

test('regex finishes fast on a catastrophic-backtracking input', () => {
  const p = rule({ deny_if: [{ path: 'args.s', op: 'regex', value: '(a+)+$' }] });
  const started = performance.now();
  const d = call(p, { s: 'a'.repeat(50_000) + '!' });
  const ms = performance.now() - started;
  assert.equal(d.effect, 'allow');
  assert.ok(ms < 2_000, `took ${ms} ms`);
});

test('contains finds substrings of strings and deep-equal elements of arrays', () => {
  assert.deepEqual(both({ path: 'args.s', op: 'contains', value: 'DROP' }, { s: 'x; DROP TABLE' }), { require: true, denyIf: true });
  assert.deepEqual(both({ path: 'args.s', op: 'contains', value: 1 }, { s: 'a1' }), { require: false, denyIf: false });
  assert.deepEqual(both({ path: 'args.l', op: 'contains', value: { id: 2 } }, { l: [{ id: 1 }, { id: 2 }] }), { require: true, denyIf: true });
  assert.deepEqual(both({ path: 'args.l', op: 'contains', value: 'a' }, { l: { a: 1 } }), { require: false, denyIf: false });
});

test('path_prefix normalises lexically and refuses .., NUL bytes and relative paths under absolute prefixes', () => {
  const prefixes = ['/srv/data/', '/tmp'];
  const ok = (s: string): boolean => both({ path: 'args.p', op: 'path_prefix', value: prefixes }, { p: s }).require;
  for (const s of ['/srv/data', '/srv/data/a.txt', '//srv//data/./x', '/srv/data/a/../b', '/tmp/x/y']) assert.equal(ok(s), true, s);
  for (const s of [
    '/srv/database',
    '/srv',
    '/srv/data/..',
    '/srv/data/../../etc/passwd',
    '/srv/data/../data/x',
    '/srv/../srv/data/x',
    '/..',
    '/srv/data/x\0.txt',
    'srv/data/x',
    './srv/data',
    '/etc/passwd',
  ]) {
    assert.equal(ok(s), false, JSON.stringify(s));
  }
  assert.equal(underPrefix('docs/a', [normalisePrefix('docs')!]), true);
  assert.equal(underPrefix('/docs/a', [normalisePrefix('docs')!]), false);
  assert.equal(underPrefix('/any/where', [normalisePrefix('/')!]), true);
});

test('url_host allows listed hosts and subdomains of *. entries, and refuses userinfo tricks', () => {
  const hosts = ['api.example.com', '*.example.org', 'bücher.de'];
  const ok = (s: unknown): boolean => both({ path: 'args.u', op: 'url_host', value: hosts }, { u: s }).require;
  for (const s of [
    'https://api.example.com/v1',
    'http://API.Example.COM./x',
    'https://a.example.org',
    'https://x.y.example.org:8443/p?q#f',
    'https://xn--bcher-kva.de/',
    'https://bücher.de/',
  ]) {
    assert.equal(ok(s), true, s);
  }
  for (const s of [
    'https://example.org',
    'https://evil.com',
    'https://api.example.com@evil.com/',
    'https://api.example.com:pw@evil.com/',
    'https://@api.example.com/',
    'https://evil.com#@api.example.com',
    'https://evil.com\\@api.example.com',
    'https://api.example.com.evil.com',
    'https://evilexample.org',
    'ftp://api.example.com/',
    'https:api.example.com',
    'api.example.com',
    'javascript://api.example.com/%0aalert(1)',
    'https://api.example.com\n.evil.com',
    42,
  ]) {
    assert.equal(ok(s), false, JSON.stringify(s));
  }
  assert.equal(urlHost('https://good.com@evil.com'), undefined);
  assert.equal(urlHost('HTTPS://Ex.COM.'), 'ex.com');
  assert.deepEqual(normaliseHostPattern('*.Bücher.de'), { host: 'xn--bcher-kva.de', wildcard: true });
  assert.equal(normaliseHostPattern('example.com:80'), undefined);
  assert.equal(normaliseHostPattern('*.10.0.0.1'), undefined);
});

// ---- paths ----

test('reads nested properties and array elements by dot or bracket index', () => {
  const args = { a: { b: { c: 5 } }, items: [{ name: 'x' }, { name: 'y' }], obj: { 0: 'zero' } };
  for (const path of ['args.a.b.c']) assert.equal(both({ path, op: 'eq', value: 5 }, args).require, true);
  for (const path of ['args.items.1.name', 'args.items[1].name']) assert.equal(both({ path, op: 'eq', value: 'y' }, args).require, true, path);
  assert.equal(both({ path: 'args.items[2].name', op: 'exists', value: true }, args).require, false);
  assert.equal(both({ path: 'args.obj.0', op: 'eq', value: 'zero' }, args).require, true);
  assert.equal(both({ path: 'args.a.b.c.d', op: 'exists', value: true }, args).require, false);
});

test('[*] means every element for require and any element for deny_if, naming the element that decided', () => {
  const maxPrice = { path: 'args.items[*].price', op: 'lte', value: 100 };
  const p = rule({ require: [maxPrice] });
  assert.equal(call(p, { items: [{ price: 1 }, { price: 100 }] }).effect, 'allow');
  const d = call(p, { items: [{ price: 1 }, { price: 101 }, { price: 'x' }] });
  assert.equal(d.reason, 'args.items[1].price must be a number at most 100, got 101 (rule /tools/t/require/0)');
  // An empty list has no element to fail; a missing or non-array list fails.
  assert.equal(call(p, { items: [] }).effect, 'allow');
  assert.equal(call(p, {}).effect, 'deny');
  assert.equal(call(p, { items: { price: 1 } }).effect, 'deny');

  const q = rule({ deny_if: [{ path: 'args.items[*].sku', op: 'in', value: ['BANNED'] }] });
  assert.equal(call(q, { items: [{ sku: 'A' }, { sku: 'BANNED' }] }).reason, 'args.items[1].sku must not be any of "BANNED", got "BANNED" (rule /tools/t/deny_if/0)');
  assert.equal(call(q, { items: [{ sku: 'A' }] }).effect, 'allow');
  assert.equal(call(q, { items: [] }).effect, 'allow');
  assert.equal(call(q, { items: 'BANNED' }).effect, 'allow');

  const nested = rule({ deny_if: [{ path: 'args.a[*].b[*]', op: 'eq', value: 3 }] });
  assert.equal(call(nested, { a: [{ b: [1] }, { b: [2, 3] }] }).reason, 'args.a[1].b[1] must not be 3, got 3 (rule /tools/t/deny_if/0)');
});

test('looks only at own properties, never the prototype chain', () => {
  const p = rule({ require: [{ path: 'args.constructor', op: 'exists', value: false }, { path: 'args.toString', op: 'exists', value: false }] });
  assert.equal(call(p, {}).effect, 'allow');
  assert.equal(call(p, JSON.parse('{"constructor": 1}')).effect, 'deny');
  const q = rule({ deny_if: [{ path: 'args.__proto__.x', op: 'eq', value: 1 }] });
  assert.equal(call(q, JSON.parse('{"__proto__": {"x": 1}}')).effect, 'deny');
  assert.equal(call(q, {}).effect, 'allow');
});

test('parses condition paths into steps and rejects malformed ones', () => {
  assert.deepEqual(
    parseConditionPath('args.items[0].name')?.map((s) => [s.key, s.index, s.any]),
    [
      ['items', -1, false],
      ['0', 0, false],
      ['name', -1, false],
    ],
  );
  assert.equal(parseConditionPath('args.items[*]')?.[1]?.any, true);
  for (const bad of ['args', 'amount', 'args.', 'args..a', 'args.items[01]', 'args.items[-1]', 'args.a*', 'args.items.*.x', 'args.a b']) {
    assert.equal(parseConditionPath(bad), undefined, bad);
  }
});

// ---- shadow and approval ----

test('shadow on a rule keeps the effect and marks the decision not enforced', () => {
  const p = policy({
    tools: { t: { shadow: true, deny_if: [{ path: 'args.n', op: 'gt', value: 1 }] }, u: { action: 'deny', shadow: true }, v: {} },
  });
  const d = call(p, { n: 2 });
  assert.equal(d.effect, 'deny');
  assert.equal(d.rule, '/tools/t/deny_if/0');
  assert.equal(d.enforced, false);
  assert.equal(d.shadow, true);
  assert.equal(call(p, { n: 0 }).enforced, false);
  assert.equal(evaluate({ tool: 'u', args: {} }, p).enforced, false);
  const v = evaluate({ tool: 'v', args: {} }, p);
  assert.equal(v.enforced, true);
  assert.equal(Object.hasOwn(v, 'shadow'), false);
});

test('a shadowed require_approval rule says it would hold the call, not enforced, with its limits', () => {
  const p = policy({ tools: { pay: { action: 'require_approval', shadow: true, limits: [{ counter: 'pay', window: 'minute', max: 1, scope: 'grant' }] } } });
  const d = evaluate({ tool: 'pay', args: {} }, p);
  assert.equal(d.effect, 'require_approval');
  assert.equal(d.enforced, false);
  assert.equal(d.shadow, true);
  assert.deepEqual(d.limits.map((l) => l.counter), ['pay']);
});

test('shadow on the policy covers every decision, and a rule may opt back into enforcement', () => {
  const p = policy({ shadow: true, hide: ['h'], tools: { strict: { shadow: false, action: 'deny' }, t: {} } });
  for (const tool of ['h', 'unlisted', 't']) {
    const d = evaluate({ tool, args: {} }, p);
    assert.equal(d.enforced, false, tool);
    assert.equal(d.shadow, true, tool);
  }
  assert.equal(evaluate({ tool: 'h', args: {} }, p).effect, 'hidden');
  assert.equal(evaluate({ tool: 'unlisted', args: {} }, p).effect, 'deny');
  assert.equal(evaluate({ tool: 'strict', args: {} }, p).enforced, true);
  assert.equal(evaluate({ tool: 'x', args: {} }, {} as CompiledPolicy).enforced, true);
});

test('parses approval and carries it on the decisions of its rule', () => {
  const p = policy({
    tools: {
      pay: { action: 'require_approval', approval: { timeout: '10m', remember: '1h', via: 'elicitation' } },
      t: { approval: { timeout: 30 }, deny_if: [{ path: 'args.x', op: 'exists', value: true }] },
    },
  });
  const d = evaluate({ tool: 'pay', args: {} }, p);
  assert.equal(d.effect, 'require_approval');
  assert.deepEqual(d.approval, { timeoutMs: 600_000, rememberMs: 3_600_000, via: ['elicitation'], pointer: '/tools/pay/approval' });
  assert.deepEqual(call(p, {}).approval, { timeoutMs: 30_000, pointer: '/tools/t/approval' });
  assert.equal(call(p, { x: 1 }).approval?.timeoutMs, 30_000);
});

test('takes approval.via as one channel or a list of distinct channels', () => {
  const p = policy({ tools: { pay: { action: 'require_approval', approval: { timeout: '1m', via: ['webhook', 'elicitation'] } } } });
  assert.deepEqual(evaluate({ tool: 'pay', args: {} }, p).approval?.via, ['webhook', 'elicitation']);
  const bad = (via: unknown) =>
    issuesOf(() => parsePolicy(JSON.stringify({ version: '1', default: 'deny', tools: { t: { approval: { timeout: 30, via } } } }), 'p.json'));
  assert.match(bad([]).join('\n'), /approval\/via: expected dashboard\|elicitation\|webhook, or an array of them/);
  assert.match(bad(['webhook', 'webhook']).join('\n'), /approval\/via/);
  assert.match(bad(['pigeon']).join('\n'), /approval\/via/);
});

// ---- load errors ----

test('reports invalid or unsupported regular expressions as load errors with pointer and line', () => {
  const text = `version: "1"
default: deny
tools:
  t:
    deny_if:
      - { path: args.s, op: regex, value: "(?=lookahead)" }
      - { path: args.s, op: regex, value: "(a)\\\\1" }
      - { path: args.s, op: regex, value: "[" }
`;
  const issues = issuesOf(() => parsePolicy(text, 'policy.yaml'));
  assert.equal(issues.length, 3);
  assert.match(issues[0] ?? '', /^policy\.yaml: \/tools\/t\/deny_if\/0\/value: invalid or unsupported regular expression .*\(\?=.* \(line 6:43\)$/);
  assert.match(issues[1] ?? '', /^policy\.yaml: \/tools\/t\/deny_if\/1\/value: .*\\1.* \(line 7:43\)$/);
  assert.match(issues[2] ?? '', /^policy\.yaml: \/tools\/t\/deny_if\/2\/value: .*missing closing \].* \(line 8:43\)$/);
});

test('reports bad conditions and approvals field by field', () => {
  const text = `{ "version": "1", "default": "deny",
  "all_tools": { "require": [ { "path": "amount", "op": "eq", "value": 1 } ] },
  "tools": { "t": {
    "require": [ { "path": "args.n", "op": "between", "value": 1 } ],
    "deny_if": [ { "path": "args.n", "op": "gt", "value": "5" },
                 { "path": "args.n", "op": "in", "value": [] },
                 { "path": "args.n", "op": "exists", "value": "yes" },
                 { "path": "args.n", "op": "eq" },
                 { "path": "args.p", "op": "path_prefix", "value": ["/srv/../etc"] },
                 { "path": "args.u", "op": "url_host", "value": ["https://x.com"] },
                 { "path": "args.n", "op": "eq", "value": 1, "why": "x" } ],
    "approval": { "timeout": "soon", "via": "carrier pigeon" },
    "shadow": "yes" } } }`;
  assert.deepEqual(issuesOf(() => parsePolicy(text, 'p.json')), [
    'p.json: /all_tools/require/0/path: expected args.<path>, e.g. "args.amount", "args.items.0.sku" or "args.items[*].sku" (line 2:41)',
    'p.json: /tools/t/require/0/op: expected op: eq|neq|lt|lte|gt|gte|in|not_in|exists|regex|contains|path_prefix|url_host (line 4:44)',
    'p.json: /tools/t/deny_if/0/value: expected a number (line 5:59)',
    'p.json: /tools/t/deny_if/1/value: expected a non-empty array of values (line 6:59)',
    'p.json: /tools/t/deny_if/2/value: expected true or false (line 7:63)',
    'p.json: /tools/t/deny_if/3/value: required field is missing; expected a JSON value (line 8:18)',
    'p.json: /tools/t/deny_if/4/value/0: expected a directory prefix without ".." or NUL bytes (line 9:69)',
    'p.json: /tools/t/deny_if/5/value/0: expected a host name like "example.com" or "*.example.com" (no scheme, port or path) (line 10:66)',
    'p.json: /tools/t/deny_if/6/why: unknown field; expected one of: path, op, value, reason (line 11:62)',
    'p.json: /tools/t/approval/timeout: expected a duration like "10m" or a number of seconds (line 12:30)',
    'p.json: /tools/t/approval/via: expected dashboard|elicitation|webhook, or an array of them (line 12:45)',
    'p.json: /tools/t/shadow: expected true or false (line 13:15)',
  ]);
  assert.deepEqual(issuesOf(() => parsePolicy('{ "version": "1", "default": "deny", "tools": { "t": { "approval": {} } } }', 'p.json')), [
    'p.json: /tools/t/approval/timeout: required field is missing; expected a duration like "10m" or a number of seconds (line 1:68)',
  ]);
});

// ---- robustness ----

const EVERY_OPERATOR = policy({
  default: 'allow',
  all_tools: { deny_if: [{ path: 'args.z[*]', op: 'contains', value: 'x' }] },
  tools: {
    '*': {
      require: [
        { path: 'args.a', op: 'exists', value: false },
        { path: 'args.b[*].c', op: 'neq', value: null },
        { path: 'args.b.0', op: 'not_in', value: [1, 'x', { k: [] }] },
      ],
      deny_if: [
        { path: 'args.a', op: 'eq', value: { k: [1, 2] } },
        { path: 'args.n', op: 'lt', value: 0 },
        { path: 'args.n', op: 'lte', value: -1 },
        { path: 'args.n', op: 'gt', value: 10 },
        { path: 'args.n', op: 'gte', value: 11 },
        { path: 'args.s', op: 'in', value: ['a', 1, null] },
        { path: 'args[*]', op: 'regex', value: '(a+)+$' },
        { path: 'args.s', op: 'contains', value: 'zz' },
        { path: 'args.p', op: 'path_prefix', value: ['/etc', 'rel'] },
        { path: 'args.u', op: 'url_host', value: ['evil.com', '*.evil.org'] },
        { path: 'args.x.y.z', op: 'exists', value: true },
      ],
    },
  },
});

test('returns a decision and never throws for arbitrary arguments and tool names (property)', () => {
  const args = fc.oneof(
    fc.jsonValue(),
    fc.record({
      a: fc.jsonValue(),
      b: fc.array(fc.jsonValue()),
      n: fc.oneof(fc.double(), fc.integer(), fc.string()),
      s: fc.string(),
      p: fc.oneof(fc.constantFrom('/etc/x', '/etc/../x', 'rel/./a', '/\0'), fc.string()),
      u: fc.oneof(fc.webUrl(), fc.string()),
      x: fc.jsonValue(),
      z: fc.array(fc.string()),
    }),
  );
  fc.assert(
    fc.property(fc.string(), args, (tool, a) => {
      const d = evaluate({ tool, args: a }, EVERY_OPERATOR);
      assert.ok(['allow', 'deny', 'hidden'].includes(d.effect));
      assert.equal(typeof d.reason, 'string');
      assert.ok(d.reason.length < 1_000);
      assert.equal(typeof d.enforced, 'boolean');
    }),
    { numRuns: 2_000 },
  );
});

test('denies, rather than throws, when the arguments misbehave', () => {
  const hostile = new Proxy(
    {},
    {
      has: () => {
        throw new Error('boom');
      },
      getOwnPropertyDescriptor: () => {
        throw new Error('boom');
      },
    },
  );
  const d = evaluate({ tool: 'anything', args: { b: hostile } }, EVERY_OPERATOR);
  assert.equal(d.effect, 'deny');
  assert.equal(d.enforced, true);
  const deep: Record<string, unknown> = {};
  let at = deep;
  for (let i = 0; i < 100_000; i++) at = at.a = {} as Record<string, unknown>;
  assert.equal(typeof evaluate({ tool: 'anything', args: deep }, EVERY_OPERATOR).effect, 'string');
});
