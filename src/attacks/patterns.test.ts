import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CATEGORIES, FLAGS } from '../risk/types.js';
import { ATTACK_PATTERNS, attackPattern, attacksOn } from './patterns.js';

test('every attack pattern has a unique, stable-looking id, a name, a one-line summary and something it abuses', () => {
  const ids = ATTACK_PATTERNS.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length);
  for (const p of ATTACK_PATTERNS) {
    assert.match(p.id, /^[a-z]+(?:-[a-z]+)*$/, p.id);
    assert.ok(p.name.length > 0, p.id);
    assert.ok(p.summary.length > 20 && !p.summary.includes('\n') && p.summary.endsWith('.'), p.id);
    assert.ok(p.abuses.anyTool || p.abuses.categories.length + p.abuses.flags.length > 0, `${p.id} abuses nothing`);
    for (const c of p.abuses.categories) assert.ok(CATEGORIES.includes(c), `${p.id}: ${c}`);
    for (const f of p.abuses.flags) assert.ok(FLAGS.includes(f), `${p.id}: ${f}`);
  }
});

test('holds the well-known MCP attack patterns under the ids the catalogue links to', () => {
  for (const id of [
    'tool-poisoning',
    'rug-pull',
    'tool-shadowing',
    'data-exfiltration',
    'prompt-injection',
    'command-injection',
    'credential-theft',
    'runaway-loop',
    'unauthorised-transaction',
    'destructive-bulk-operation',
    'path-traversal',
  ]) {
    assert.ok(attackPattern(id), id);
  }
  assert.equal(attackPattern('no-such-attack'), undefined);
});

test('is data nobody can change at run time', () => {
  assert.throws(() => {
    (ATTACK_PATTERNS as unknown as unknown[]).push({});
  }, TypeError);
  assert.throws(() => {
    (ATTACK_PATTERNS[0]!.abuses.flags as unknown as string[]).push('x');
  }, TypeError);
});

test('lists for a tool the patterns its category and flags expose first, then those every tool is open to', () => {
  const exec = attacksOn('Execute', []).map((m) => m.pattern.id);
  assert.deepEqual(exec.slice(0, 3), ['command-injection', 'credential-theft', 'runaway-loop']);
  assert.deepEqual(exec.slice(3), ['tool-poisoning', 'rug-pull', 'tool-shadowing']);

  const reader = attacksOn('Read', ['filesystem', 'private_data']);
  assert.deepEqual(
    reader.map((m) => [m.pattern.id, m.because]),
    [
      ['data-exfiltration', { flag: 'private_data' }],
      ['path-traversal', { flag: 'filesystem' }],
      ['tool-poisoning', { anyTool: true }],
      ['rug-pull', { anyTool: true }],
      ['tool-shadowing', { anyTool: true }],
    ],
  );
  assert.ok(attacksOn('Financial', []).some((m) => m.pattern.id === 'unauthorised-transaction'));
  assert.ok(attacksOn('Destructive', []).some((m) => m.pattern.id === 'destructive-bulk-operation'));
  assert.ok(!attacksOn('Read', []).some((m) => m.pattern.id === 'runaway-loop'));
});
