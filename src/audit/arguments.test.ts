import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { canonicalJson } from '../util/canonical-json.js';
import { auditArguments, keysArgumentsJson, REDACTED } from './arguments.js';

test('keys mode keeps the sorted top-level names and a SHA-256 of the canonical arguments', () => {
  const args = { b: 2, a: { y: 1, x: 2 } };
  assert.deepEqual(auditArguments(args, 'keys'), {
    keys: ['a', 'b'],
    sha256: createHash('sha256').update(canonicalJson(args)).digest('hex'),
  });
  // Key order does not change the hash: the same arguments are provably the same.
  assert.deepEqual(auditArguments({ a: { x: 2, y: 1 }, b: 2 }, 'keys'), auditArguments(args, 'keys'));
});

test('keys mode hashes exactly the canonical JSON of any arguments, whatever their keys and their order', () => {
  const sha256 = (v: unknown) => createHash('sha256').update(canonicalJson(v)).digest('hex');
  // Few key names, so that shapes repeat (and are found again) in and out of order; integer-like
  // names come first in an object's own order but sort as text.
  const name = fc.constantFrom('a', 'b', 'path', 'ä', '"q"', '', '10', '9', '__proto__x', 'z\u2028');
  const args = fc.oneof(
    fc.dictionary(name, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }),
    fc.dictionary(name, fc.oneof(fc.string(), fc.integer(), fc.constant(undefined)), { maxKeys: 4 }),
  );
  fc.assert(
    fc.property(args, (a) => {
      const r = auditArguments(a, 'keys') as { keys: string[]; sha256: string };
      assert.deepEqual(r, { keys: Object.keys(a).sort(), sha256: sha256(a) });
      // Its stored form is the one the generic canonical JSON gives.
      assert.equal(keysArgumentsJson(r), canonicalJson(r));
    }),
    { numRuns: 2_000 },
  );
});

test('keys mode shares one frozen list of names among arguments of the same shape', () => {
  const first = auditArguments({ path: '/a', mode: 'r' }, 'keys') as { keys: string[] };
  auditArguments({ other: 1 }, 'keys');
  const again = auditArguments({ path: '/b', mode: 'w' }, 'keys') as { keys: string[] };
  assert.equal(again.keys, first.keys);
  assert.ok(Object.isFrozen(first.keys));
  // Another order of the same names is another shape, with the same sorted names.
  assert.deepEqual((auditArguments({ mode: 'w', path: '/b' }, 'keys') as { keys: string[] }).keys, ['mode', 'path']);
});

test('keys mode of arguments that are not an object has no keys but still a hash', () => {
  const r = auditArguments([1, 2], 'keys') as { keys: string[]; sha256: string };
  assert.deepEqual(r.keys, []);
  assert.match(r.sha256, /^[0-9a-f]{64}$/);
});

test('a request without arguments records none in any mode', () => {
  for (const mode of ['keys', 'redacted', 'full'] as const) assert.equal(auditArguments(undefined, mode), undefined);
});

test('full mode keeps the arguments as they are', () => {
  const args = { password: 'p4ssw0rd!' };
  assert.equal(auditArguments(args, 'full'), args);
});

test('redacted mode masks values under secret names at any depth, and leaves the arguments sent untouched', () => {
  const args = { user: 'ann', password: 'p4ssw0rd!', headers: { Authorization: 'x', 'X-Api-Key': 'k' }, list: [{ client_secret: 's' }] };
  assert.deepEqual(auditArguments(args, 'redacted'), {
    user: 'ann',
    password: REDACTED,
    headers: { Authorization: REDACTED, 'X-Api-Key': REDACTED },
    list: [{ client_secret: REDACTED }],
  });
  assert.equal(args.password, 'p4ssw0rd!');
});

test('redacted mode masks credential-shaped strings wherever they appear', () => {
  const cases: Array<[string, string]> = [
    ['use sk_live_4eC39HqLyjWDarjtT1zdp7dc now', `use ${REDACTED} now`],
    ['ghp_abcdefghijklmnopqrstuvwxyz0123456789', REDACTED],
    ['AKIAIOSFODNN7EXAMPLE', REDACTED],
    ['curl -H "Authorization: Bearer abcdefgh12345678"', `curl -H "Authorization: Bearer ${REDACTED}"`],
    ['postgres://app:s3cret@db:5432/x', `postgres://app:${REDACTED}@db:5432/x`],
    ['eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl', REDACTED],
    ['-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----', REDACTED],
    ['an ordinary sentence about tokens', 'an ordinary sentence about tokens'],
  ];
  for (const [input, expected] of cases) assert.deepEqual(auditArguments({ text: input }, 'redacted'), { text: expected }, input);
});

test('redacted mode keeps empty and null values under secret names as they are', () => {
  assert.deepEqual(auditArguments({ token: '', password: null }, 'redacted'), { token: '', password: null });
});
