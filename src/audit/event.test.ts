import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canonicalJson } from '../util/canonical-json.js';
import { canonicalRecord, chain, recordHash, type AuditEventInput, type AuditRecord } from './event.js';

const EVENT: AuditEventInput = {
  at: 1_700_000_000_000,
  requestId: '7',
  grantId: 'g1',
  grantLabel: 'ci',
  session: 's1',
  server: 'fs',
  method: 'tools/call',
  tool: 'read_file',
  decision: 'allow',
  rule: '/tools/read_file',
  reason: null,
  policyVersion: 'v1',
  arguments: { path: '/tmp/x', nested: { b: 1, a: [true, null] } },
  upstreamStatus: 'ok',
  latencyMs: 1.5,
  resultBytes: 10,
  error: null,
};

test('the canonical form of a record is canonical JSON without its hash', () => {
  const r = chain('s', undefined, EVENT);
  const { hash: _h, ...rest } = r;
  assert.equal(canonicalRecord(r), canonicalJson(rest));
});

test('a record without arguments leaves them out of its canonical form, like canonical JSON does', () => {
  const r = chain('s', undefined, { ...EVENT, arguments: undefined });
  assert.ok(!canonicalRecord(r).includes('"arguments"'));
  const { hash: _h, ...rest } = r;
  assert.equal(canonicalRecord(r), canonicalJson(rest));
});

test('a record with a key its type does not have is hashed with that key, so adding one is detected', () => {
  const r = chain('s', undefined, EVENT);
  const forged = { ...r, extra: 'x' } as unknown as AuditRecord;
  assert.notEqual(recordHash(forged), r.hash);
  const swapped = { ...r, extra: 'x' } as Record<string, unknown>;
  delete swapped.tool;
  assert.notEqual(recordHash(swapped as unknown as AuditRecord), r.hash);
});

test('chained records number themselves and carry the previous hash', () => {
  const a = chain('s', undefined, EVENT);
  const b = chain('s', a, EVENT);
  assert.equal(a.seq, 1);
  assert.equal(a.prevHash, '0'.repeat(64));
  assert.equal(b.seq, 2);
  assert.equal(b.prevHash, a.hash);
  assert.equal(recordHash(b), b.hash);
});
