import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
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

test('the fast canonical form of a record is exactly the generic canonical JSON, whatever the values', () => {
  // Values from a few constants too, so that consecutive records often repeat a field (the fast
  // form remembers each field's last value) and differ from it just as often.
  const text = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('', '"', '\\', '\u2028', '\ud800', 'é\u0000', 'files'));
  const orNull = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: null });
  const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(-0, 1e21, 5e-324, Number.MAX_SAFE_INTEGER, 1_700_000_000_000, 1_700_000_000_001));
  const args = fc.oneof(fc.constant(undefined), fc.jsonValue(), fc.dictionary(text, fc.jsonValue()));
  const record = fc.record({
    at: num,
    requestId: orNull(text),
    grantId: orNull(text),
    grantLabel: orNull(text),
    session: orNull(text),
    server: text,
    method: text,
    tool: orNull(text),
    decision: fc.constantFrom('allow', 'deny'),
    rule: orNull(text),
    reason: orNull(text),
    policyVersion: orNull(text),
    arguments: args,
    upstreamStatus: orNull(text),
    latencyMs: orNull(num),
    resultBytes: orNull(num),
    error: orNull(text),
    stream: text,
    seq: num,
    prevHash: text,
  });
  fc.assert(
    fc.property(record, fc.boolean(), (r, afterChain) => {
      // Or the prevHash of a record chained after the one chained last: its hash, as most are.
      const rec = (afterChain ? { ...r, prevHash: chain('s', undefined, EVENT).hash } : r) as unknown as Omit<AuditRecord, 'hash'>;
      assert.equal(canonicalRecord(rec), canonicalJson(rec));
      assert.equal(canonicalRecord({ ...rec, hash: 'x' } as AuditRecord), canonicalJson(rec));
    }),
    { numRuns: 2_000 },
  );
});

test('keys arguments are written in the canonical form the generic way gives, and any other shape goes the generic way', async () => {
  const { auditArguments, keysArgumentsJson } = await import('./arguments.js');
  const a = auditArguments({ zeta: 1, alpha: { y: [1, 2], x: 'é"\\\u2028' } }, 'keys');
  assert.equal(keysArgumentsJson(a), canonicalJson(a));
  // Look-alikes: an extra key, keys that are not all strings, a hole, inherited keys.
  const sha256 = 'f'.repeat(64);
  assert.equal(keysArgumentsJson({ keys: ['a'], sha256, more: 1 }), undefined);
  assert.equal(keysArgumentsJson({ keys: ['a', 1], sha256 }), undefined);
  assert.equal(keysArgumentsJson({ keys: [, 'a'], sha256 }), undefined);
  assert.equal(keysArgumentsJson(Object.create({ keys: ['a'], sha256 })), undefined);
  const r = chain('s', undefined, { ...EVENT, arguments: { keys: [, 'a'], sha256 } });
  const { hash: _h, ...rest } = r;
  assert.equal(canonicalRecord(r), canonicalJson(rest));
});
