import assert from 'node:assert/strict';
import { test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { JWTPayload } from 'jose';
import { openSqliteStore } from '../store/sqlite.js';
import type { ControlStore } from '../store/store.js';
import { GrantAuthenticator } from './authenticator.js';
import { JwtVerifier } from './jwt.js';
import type { OidcConfig } from './jwt.js';
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
  // A proxy rather than a list of methods, so the wrapper keeps up as the store contract grows.
  return new Proxy(real, {
    get(target, prop) {
      if (prop === 'findByTokenHash') return lookup;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
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
  if (r.ok) assert.deepEqual(r.principal, { grantId: record.id, label: 'alice-laptop', servers: ['piloty', 'poolparty'], policies: {}, via: 'token' });
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

// --- JWTs from the configured OIDC issuer (auth.oidc) ---

const ISSUER = 'https://id.example.com/';
const AUDIENCE = 'https://gateway.example.com';

async function setupOidc(over: Partial<OidcConfig> = {}) {
  const base = await setup();
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const config: OidcConfig = {
    issuer: ISSUER,
    audience: AUDIENCE,
    publicKey: { file: 'jwks.json', kind: 'jwks', jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1' }] } },
    algorithms: ['ES256'],
    clockToleranceMs: 0,
    grantClaim: 'sub',
    groupsClaim: 'groups',
    grantsByGroup: { ci: 'ci-runner' },
    rolesByGroup: {},
    ...over,
  };
  const verifier = new JwtVerifier(config, { now: base.now });
  const auth = new GrantAuthenticator(base.store, { now: base.now, cacheMs: 500, verifier });
  const jwt = (claims: JWTPayload) =>
    new SignJWT({ iss: ISSUER, aud: AUDIENCE, exp: Math.floor(base.now() / 1000) + 300, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .sign(privateKey);
  return { ...base, auth, jwt, verifier };
}

test('admits a JWT whose subject is the label of a grant bound to the server, saying it came through OIDC', async () => {
  const { store, auth, grant, jwt } = await setupOidc();
  const { record } = await grant('alice-laptop', ['piloty']);
  const r = await auth.authenticate(bearer(await jwt({ sub: 'alice-laptop' })), 'piloty');
  assert.equal(r.ok, true);
  if (r.ok) {
    assert.deepEqual(r.principal, { grantId: record.id, label: 'alice-laptop', servers: ['piloty'], policies: {}, via: 'oidc', subject: 'alice-laptop' });
  }
  await store.close();
});

test('maps a JWT to a grant through grants_by_group when its subject names no grant', async () => {
  const { store, auth, grant, jwt } = await setupOidc();
  await grant('ci-runner', ['piloty']);
  const r = await auth.authenticate(bearer(await jwt({ sub: 'svc-8f2e', groups: ['ci'] })), 'piloty');
  assert.equal(r.ok, true);
  if (r.ok) assert.deepEqual([r.principal.label, r.principal.subject], ['ci-runner', 'svc-8f2e']);
  await store.close();
});

test('refuses a JWT naming no grant with 401 invalid_token and says which labels were tried', async () => {
  const { store, auth, jwt } = await setupOidc();
  let r = await refused(auth, bearer(await jwt({ sub: 'nobody', groups: ['ci'] })), 'piloty');
  assert.deepEqual([r.status, r.error], [401, 'invalid_token']);
  assert.equal(r.description, "the token names no grant: no grant is labelled 'nobody' or 'ci-runner'");
  // A subject that is no possible label is not looked up, nor repeated back.
  r = await refused(auth, bearer(await jwt({ sub: 'a b"\n' })), 'piloty');
  assert.equal(r.description, 'the token names no grant: it has no usable sub claim and none of its groups maps to a grant');
  await store.close();
});

test("does not take a grant's id for its label", async () => {
  const { store, auth, grant, jwt } = await setupOidc();
  const { record } = await grant('alice', ['piloty']);
  assert.match((await refused(auth, bearer(await jwt({ sub: record.id })), 'piloty')).description, /names no grant/);
  await store.close();
});

test('holds a JWT-named grant to the grant rules: revoked and expired get 401, unbound 403', async () => {
  const { store, auth, grant, jwt, now, advance } = await setupOidc();
  await grant('ci-runner', ['piloty']);
  await grant('revoked', ['piloty']);
  await store.revokeGrant('revoked', now());
  // The claim names a grant, revoked: no falling back to the group's grant.
  let r = await refused(auth, bearer(await jwt({ sub: 'revoked', groups: ['ci'] })), 'piloty');
  assert.deepEqual([r.status, r.error, r.description], [401, 'invalid_token', "the grant 'revoked' was revoked"]);

  await grant('expiring', ['piloty'], now() + 60_000);
  const token = await jwt({ sub: 'expiring', exp: Math.floor(now() / 1000) + 600 });
  assert.equal((await auth.authenticate(bearer(token), 'piloty')).ok, true);
  advance(60_000);
  assert.match((await refused(auth, bearer(token), 'piloty')).description, /'expiring' has expired/);

  await grant('other-only', ['poolparty']);
  r = await refused(auth, bearer(await jwt({ sub: 'other-only' })), 'piloty');
  assert.deepEqual([r.status, r.error], [403, 'insufficient_scope']);
  assert.match(r.description, /'other-only' is not bound to the server 'piloty'/);
  await store.close();
});

test('refuses a JWT once its own exp has passed, though its grant still works', async () => {
  const { store, auth, grant, jwt, now, advance } = await setupOidc();
  await grant('alice', ['piloty']);
  const token = await jwt({ sub: 'alice', exp: Math.floor(now() / 1000) + 10 });
  assert.equal((await auth.authenticate(bearer(token), 'piloty')).ok, true);
  advance(10_000);
  const r = await refused(auth, bearer(token), 'piloty');
  assert.deepEqual([r.status, r.error, r.description], [401, 'invalid_token', 'the token has expired']);
  await store.close();
});

test('sees a revocation of a JWT-named grant once its cached lookup is half a second old', async () => {
  const { store, auth, grant, jwt, now, advance } = await setupOidc();
  await grant('alice', ['piloty']);
  const token = await jwt({ sub: 'alice', exp: Math.floor(now() / 1000) + 600 });
  assert.equal((await auth.authenticate(bearer(token), 'piloty')).ok, true);
  await store.revokeGrant('alice', now());
  advance(499);
  assert.equal((await auth.authenticate(bearer(token), 'piloty')).ok, true);
  advance(1);
  assert.match((await refused(auth, bearer(token), 'piloty')).description, /was revoked/);
  await store.close();
});

test('refuses a JWT with a bad signature or audience before asking the store', async () => {
  const { store, grant, jwt, verifier } = await setupOidc();
  await grant('alice', ['piloty']);
  const asked: string[] = [];
  const spying = new Proxy(store, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (prop === 'getGrant') return (x: string) => (asked.push(x), target.getGrant(x));
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  const spied = new GrantAuthenticator(spying, { verifier, now: () => T0 });
  const [h, p, s] = (await jwt({ sub: 'alice' })).split('.') as [string, string, string];
  assert.match((await refused(spied, bearer(`${h}.${p}.${s.slice(0, -4)}AAAA`), 'piloty')).description, /signature does not verify/);
  assert.match((await refused(spied, bearer(await jwt({ sub: 'alice', aud: 'https://upstream.example.com' })), 'piloty')).description, /not meant for this gateway/);
  assert.deepEqual(asked, []);
  await store.close();
});

test('answers a bearer that is neither a grant token nor a JWT with 401 invalid_token', async () => {
  const { store, auth } = await setupOidc();
  const r = await refused(auth, bearer('hunter2'), 'piloty');
  assert.deepEqual([r.status, r.error, r.description], [401, 'invalid_token', 'the token is neither a PolicyLayer grant token nor a JWT']);
  await store.close();
});

test('without a verifier, a JWT is just not a grant token', async () => {
  const { store, jwt } = await setupOidc();
  const plain = new GrantAuthenticator(store, { now: () => T0 });
  assert.match((await refused(plain, bearer(await jwt({ sub: 'alice' })), 'piloty')).description, /not a PolicyLayer grant token/);
  await store.close();
});
