import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openSqliteStore } from '../store/sqlite.js';
import type { ControlStore } from '../store/store.js';
import { GrantAuthenticator } from './authenticator.js';
import { hashToken, newToken } from './tokens.js';

const T0 = Date.UTC(2026, 10, 22, 12);

async function setup() {
  const store = openSqliteStore(':memory:');
  await store.migrate();
  let now = T0;
  const auth = new GrantAuthenticator(store, { now: () => now, cacheMs: 500 });
  const grant = async (label: string, servers: string[], expiresAt: number | null = null) => {
    const token = newToken();
    const record = await store.createGrant({ label, servers, expiresAt }, hashToken(token), now);
    return { token, record };
  };
  return { store, auth, grant, advance: (ms: number) => (now += ms), now: () => now };
}

const bearer = (t: string) => `Bearer ${t}`;

/** A real store whose token lookups go through `lookup` (to fail them, or to see what is asked). */
function withLookup(real: ControlStore, lookup: ControlStore['findByTokenHash']): ControlStore {
  return {
    kind: real.kind,
    migrate: () => real.migrate(),
    createGrant: (...a) => real.createGrant(...a),
    getGrant: (x) => real.getGrant(x),
    listGrants: () => real.listGrants(),
    revokeGrant: (...a) => real.revokeGrant(...a),
    rotateToken: (...a) => real.rotateToken(...a),
    close: () => real.close(),
    findByTokenHash: lookup,
  };
}

async function refused(auth: GrantAuthenticator, header: string | undefined, server: string) {
  const r = await auth.authenticate(header, server);
  assert.equal(r.ok, false);
  if (r.ok) throw new Error('unreachable');
  return r;
}

test('admits a valid token on a server its grant is bound to, naming the grant', async () => {
  const { store, auth, grant } = await setup();
  const { token, record } = await grant('alice-laptop', ['piloty', 'poolparty']);
  const r = await auth.authenticate(bearer(token), 'piloty');
  assert.equal(r.ok, true);
  if (r.ok) assert.deepEqual(r.principal, { grantId: record.id, label: 'alice-laptop', servers: ['piloty', 'poolparty'], policies: {} });
  // The scheme is case-insensitive (RFC 9110 section 11.1).
  assert.equal((await auth.authenticate(`bearer ${token}`, 'piloty')).ok, true);
  await store.close();
});

test('answers 401 without an error code when no credentials are sent', async () => {
  const { store, auth } = await setup();
  for (const header of [undefined, '', '  ']) {
    const r = await refused(auth, header, 'piloty');
    assert.equal(r.status, 401);
    assert.equal(r.error, undefined);
  }
  await store.close();
});

test('answers 401 invalid_request for a header that is not a bearer token', async () => {
  const { store, auth, grant } = await setup();
  const { token } = await grant('a', ['piloty']);
  for (const header of [`Basic ${Buffer.from('a:b').toString('base64')}`, 'Bearer', `Bearer ${token} extra`, token]) {
    const r = await refused(auth, header, 'piloty');
    assert.equal(r.status, 401);
    assert.equal(r.error, 'invalid_request', header);
  }
  await store.close();
});

test('answers 401 invalid_token for an unknown, malformed, revoked, expired or rotated-out token', async () => {
  const { store, auth, grant, advance, now } = await setup();
  assert.match((await refused(auth, bearer(newToken()), 'piloty')).description, /unknown token/);
  assert.match((await refused(auth, bearer('not-a-token'), 'piloty')).description, /not a PolicyLayer grant token/);

  const revoked = await grant('revoked', ['piloty']);
  await store.revokeGrant('revoked', now());
  assert.match((await refused(auth, bearer(revoked.token), 'piloty')).description, /'revoked' was revoked/);

  const expiring = await grant('expiring', ['piloty'], now() + 60_000);
  assert.equal((await auth.authenticate(bearer(expiring.token), 'piloty')).ok, true);
  advance(60_000);
  const r = await refused(auth, bearer(expiring.token), 'piloty');
  assert.equal(r.error, 'invalid_token');
  assert.match(r.description, /'expiring' has expired/);

  const rotating = await grant('rotating', ['piloty']);
  const next = newToken();
  await store.rotateToken('rotating', hashToken(next), now(), now() + 10_000);
  auth.forget();
  // Both work during the grace period; only the new one after it.
  assert.equal((await auth.authenticate(bearer(rotating.token), 'piloty')).ok, true);
  assert.equal((await auth.authenticate(bearer(next), 'piloty')).ok, true);
  advance(10_000);
  assert.match((await refused(auth, bearer(rotating.token), 'piloty')).description, /rotated out/);
  assert.equal((await auth.authenticate(bearer(next), 'piloty')).ok, true);
  await store.close();
});

test('answers 403 insufficient_scope for a valid grant on a server it is not bound to', async () => {
  const { store, auth, grant } = await setup();
  const { token } = await grant('ci-runner', ['poolparty']);
  const r = await refused(auth, bearer(token), 'piloty');
  assert.equal(r.status, 403);
  assert.equal(r.error, 'insufficient_scope');
  assert.match(r.description, /'ci-runner' is not bound to the server 'piloty'/);
  await store.close();
});

test('sees a revocation made elsewhere once its cached answer is half a second old', async () => {
  const { store, auth, grant, advance, now } = await setup();
  const { token } = await grant('alice', ['piloty']);
  assert.equal((await auth.authenticate(bearer(token), 'piloty')).ok, true);
  // Another process (here: the store directly) revokes it.
  await store.revokeGrant('alice', now());
  advance(499);
  assert.equal((await auth.authenticate(bearer(token), 'piloty')).ok, true);
  advance(1);
  assert.equal((await auth.authenticate(bearer(token), 'piloty')).ok, false);
  await store.close();
});

test('asks the store again after a failed lookup instead of remembering the failure', async () => {
  let fail = true;
  const real = openSqliteStore(':memory:');
  await real.migrate();
  const token = newToken();
  await real.createGrant({ label: 'a', servers: ['s'] }, hashToken(token), T0);
  const flaky = withLookup(real, (h) => (fail ? Promise.reject(new Error('database is down')) : real.findByTokenHash(h)));
  const auth = new GrantAuthenticator(flaky, { now: () => T0 });
  await assert.rejects(auth.authenticate(bearer(token), 's'), /database is down/);
  fail = false;
  assert.equal((await auth.authenticate(bearer(token), 's')).ok, true);
  await real.close();
});

test('asks the store by the token hash only: the token itself never reaches the store, so lookup timing cannot leak it', async () => {
  const real = openSqliteStore(':memory:');
  await real.migrate();
  const token = newToken();
  await real.createGrant({ label: 'a', servers: ['s'] }, hashToken(token), T0);
  const asked: string[] = [];
  const spying = withLookup(real, (h) => {
    asked.push(h);
    return real.findByTokenHash(h);
  });
  const auth = new GrantAuthenticator(spying, { now: () => T0 });
  const other = newToken();
  assert.equal((await auth.authenticate(bearer(token), 's')).ok, true);
  assert.equal((await auth.authenticate(bearer(other), 's')).ok, false);
  assert.deepEqual(asked, [hashToken(token), hashToken(other)]);
  await real.close();
});
