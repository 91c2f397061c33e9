import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hashToken, looksLikeToken, newToken, sameHash, TOKEN_PREFIX } from './tokens.js';

test('makes tokens of 32 random bytes behind a recognisable prefix, never the same twice', () => {
  const tokens = new Set(Array.from({ length: 1000 }, newToken));
  assert.equal(tokens.size, 1000);
  for (const t of tokens) {
    assert.ok(t.startsWith(TOKEN_PREFIX));
    assert.equal(Buffer.from(t.slice(TOKEN_PREFIX.length), 'base64url').length, 32);
    assert.equal(looksLikeToken(t), true);
  }
});

test('tells a token from things that only resemble one', () => {
  const t = newToken();
  for (const bad of ['', 'plg_', t.slice(0, -1), `${t}x`, t.replace('plg_', 'pat_'), `${t.slice(0, -1)}!`, ` ${t}`]) {
    assert.equal(looksLikeToken(bad), false, JSON.stringify(bad));
  }
});

test('stores a token as its SHA-256 in hex, which does not contain the token', () => {
  const t = newToken();
  const h = hashToken(t);
  assert.match(h, /^[0-9a-f]{64}$/);
  assert.equal(hashToken(t), h);
  assert.notEqual(hashToken(newToken()), h);
  assert.equal(h.includes(t.slice(4, 12)), false);
});

test('compares hashes as equal only when they are identical, whatever their length', () => {
  const h = hashToken(newToken());
  assert.equal(sameHash(h, h), true);
  assert.equal(sameHash(h, `${h.slice(0, -1)}${h.endsWith('0') ? '1' : '0'}`), false);
  assert.equal(sameHash(h, h.slice(0, 10)), false);
  assert.equal(sameHash('', ''), true);
});
