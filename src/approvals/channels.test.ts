import assert from 'node:assert/strict';
import { test } from 'node:test';
import { approvalChannels, canElicitForm } from './channels.js';

test('asks through the admin API always, webhooks unless the rule names channels without them, and elicitation only when the rule names it and the client can answer', () => {
  const all = { webhook: true, elicitation: true };
  assert.deepEqual(approvalChannels(undefined, all), ['dashboard', 'webhook']);
  assert.deepEqual(approvalChannels(['dashboard'], all), ['dashboard']);
  assert.deepEqual(approvalChannels(['webhook'], all), ['dashboard', 'webhook']);
  assert.deepEqual(approvalChannels(['elicitation'], all), ['dashboard', 'elicitation']);
  assert.deepEqual(approvalChannels(['elicitation', 'webhook'], all), ['dashboard', 'webhook', 'elicitation']);
  assert.deepEqual(approvalChannels(['elicitation', 'webhook'], { webhook: false, elicitation: false }), ['dashboard']);
  assert.deepEqual(approvalChannels(undefined, { webhook: false, elicitation: true }), ['dashboard']);
});

test('takes a client as able to answer a form question when it declared elicitation (empty, or with form) on a revision that has it', () => {
  assert.equal(canElicitForm({ elicitation: {} }, '2025-06-18'), true);
  assert.equal(canElicitForm({ elicitation: { form: {} } }, '2025-11-25'), true);
  assert.equal(canElicitForm({ elicitation: { form: {}, url: {} } }, '2025-11-25'), true);
  assert.equal(canElicitForm({ elicitation: { url: {} } }, '2025-11-25'), false);
  assert.equal(canElicitForm({ sampling: {} }, '2025-11-25'), false);
  assert.equal(canElicitForm({}, '2025-11-25'), false);
  assert.equal(canElicitForm(undefined, '2025-11-25'), false);
  assert.equal(canElicitForm({ elicitation: {} }, '2025-03-26'), false);
});
