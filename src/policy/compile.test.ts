import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../errors.js';
import { compilePolicy, evaluate, parsePolicy, policyVersion } from './index.js';
import type { PolicyDocument } from './index.js';

const DOC: PolicyDocument = {
  version: '1',
  default: 'deny',
  tools: { create_session: { limits: [{ counter: 'create_session_rate', window: 'minute', max: 10, scope: 'grant' }] } },
};

test('versions a policy as sha256: and 16 hex characters of its content', () => {
  assert.match(compilePolicy(DOC, '<inline>').version, /^sha256:[0-9a-f]{16}$/);
});

test('gives the same version regardless of key order, whitespace or JSON versus YAML', () => {
  const a = parsePolicy('{"version":"1","default":"deny","tools":{"a":{},"b":{"action":"deny"}}}', 'a.json');
  const b = parsePolicy('tools:\n  b: { action: deny }\n  a: {}\ndefault: deny\nversion: "1"\n', 'b.yaml');
  assert.equal(a.version, b.version);
  assert.equal(a.version, policyVersion({ tools: { b: { action: 'deny' }, a: {} }, default: 'deny', version: '1' }));
});

test('ignores the $schema editor hint when versioning', () => {
  assert.equal(compilePolicy({ ...DOC, $schema: './policy.schema.json' }, 'a').version, compilePolicy(DOC, 'b').version);
});

test('gives a different version when any rule changes', () => {
  const a = compilePolicy(DOC, '<inline>');
  const b = compilePolicy({ ...DOC, default: 'allow' }, '<inline>');
  const c = compilePolicy({ ...DOC, tools: { create_session: { limits: [{ counter: 'create_session_rate', window: 'minute', max: 11, scope: 'grant' }] } } }, '<inline>');
  assert.notEqual(a.version, b.version);
  assert.notEqual(a.version, c.version);
});

test('validates documents built in code and reports every problem', () => {
  const bad = { version: '1', default: 'sometimes', tools: { x: { action: 'deny', bogus: true } } } as unknown as PolicyDocument;
  assert.throws(
    () => compilePolicy(bad, 'code'),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.issues.length === 2 &&
      err.issues.includes('code: /default: expected allow|deny') &&
      err.issues.includes('code: /tools/x/bogus: unknown field; expected one of: action, reason, on_deny, limits, require, deny_if, approval, shadow, validate_arguments'),
  );
});

test('freezes the compiled policy, its document and its rule lists', () => {
  const p = compilePolicy({ ...DOC, hide: ['x_*'], tools: { 'a_*': {}, ...DOC.tools } }, '<inline>');
  assert.ok(Object.isFrozen(p));
  assert.ok(Object.isFrozen(p.document));
  assert.ok(Object.isFrozen(p.document.tools));
  assert.ok(Object.isFrozen(p.globs));
  assert.ok(Object.isFrozen(p.globs[0]));
  assert.ok(Object.isFrozen(p.exact.get('create_session')));
  assert.throws(() => {
    (p as { source: string }).source = 'changed';
  }, TypeError);
});

test('does not freeze or keep the caller’s own document object', () => {
  const doc = structuredClone(DOC);
  const p = compilePolicy(doc, '<inline>');
  assert.equal(Object.isFrozen(doc), false);
  doc.default = 'allow';
  assert.equal(evaluate({ tool: 'other', args: {} }, p).effect, 'deny');
});

test('pre-builds the decision of every exact rule at compile time', () => {
  const p = compilePolicy({ ...DOC, tools: { ...DOC.tools, gone: { action: 'deny' } } }, '<inline>');
  for (const [name, rule] of p.exact) {
    assert.ok(rule.decision !== undefined && Object.isFrozen(rule.decision), name);
    assert.equal(evaluate({ tool: name, args: {} }, p), rule.decision);
  }
});
