import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hashToken, newAdminToken, newToken } from '../identity/tokens.js';
import { openSqliteStore } from '../store/sqlite.js';
import type { ControlStore } from '../store/store.js';
import { AdminAuthenticator, roleAllows } from './auth.js';

async function storeWith(): Promise<{ store: ControlStore; token: string; asked: string[] }> {
  const store = openSqliteStore(':memory:');
  await store.migrate();
  const token = newAdminToken();
  await store.createAdminCredential({ label: 'ops', role: 'policy_manager' }, hashToken(token), 1000);
  const asked: string[] = [];
  const find = store.findAdminByTokenHash.bind(store);
  store.findAdminByTokenHash = (hash: string) => {
    asked.push(hash);
    return find(hash);
  };
  return { store, token, asked };
}

test('admits an admin credential as its label with its role, asking the store by the hash only', async () => {
  const { store, token, asked } = await storeWith();
  const r = await new AdminAuthenticator(store).authenticate(`Bearer ${token}`);
  assert.deepEqual(r, { ok: true, actor: { name: 'ops', role: 'policy_manager' } });
  assert.deepEqual(asked, [hashToken(token)]);
  await store.close();
});

test('refuses a grant token by its shape without asking the store, whether or not it is valid', async () => {
  const { store, asked } = await storeWith();
  const r = await new AdminAuthenticator(store).authenticate(`Bearer ${newToken()}`);
  assert.equal(r.ok, false);
  assert.match((r as { description: string }).description, /agent credential/);
  assert.deepEqual(asked, []);
  await store.close();
});

test('refuses a missing header, another scheme, an unknown credential and a JWT when OIDC is off', async () => {
  const { store } = await storeWith();
  const auth = new AdminAuthenticator(store);
  for (const header of [undefined, '', 'Basic b3BzOnB3', `Bearer ${newAdminToken()}`, 'Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln']) {
    assert.equal((await auth.authenticate(header)).ok, false, String(header));
  }
  await store.close();
});

test('stops admitting a revoked credential once its cached lookup is older than half a second', async () => {
  const { store, token } = await storeWith();
  let now = 10_000;
  const auth = new AdminAuthenticator(store, { now: () => now });
  assert.equal((await auth.authenticate(`Bearer ${token}`)).ok, true);
  await store.revokeAdminCredential('ops', now);
  now += 499;
  assert.equal((await auth.authenticate(`Bearer ${token}`)).ok, true, 'still cached');
  now += 1;
  const r = await auth.authenticate(`Bearer ${token}`);
  assert.deepEqual(r, { ok: false, description: "the admin credential 'ops' was revoked" });
  await store.close();
});

test('admits a JWT whose groups map to a role as oidc:<subject>, and refuses one that maps to none', async () => {
  const { store } = await storeWith();
  const jwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';
  const withRole = new AdminAuthenticator(store, { jwt: async () => ({ ok: true, subject: 'dana', role: 'viewer' }) });
  assert.deepEqual(await withRole.authenticate(`Bearer ${jwt}`), { ok: true, actor: { name: 'oidc:dana', role: 'viewer' } });
  const noRole = new AdminAuthenticator(store, { jwt: async () => ({ ok: true, subject: 'erin', role: undefined }) });
  assert.equal((await noRole.authenticate(`Bearer ${jwt}`)).ok, false);
  const invalid = new AdminAuthenticator(store, { jwt: async () => ({ ok: false, description: 'the token has expired' }) });
  assert.deepEqual(await invalid.authenticate(`Bearer ${jwt}`), { ok: false, description: 'the token has expired' });
  await store.close();
});

test('ranks roles: admin may do what a policy manager may, who may do what a viewer may, never the reverse', () => {
  assert.ok(roleAllows('admin', 'policy_manager') && roleAllows('admin', 'viewer') && roleAllows('policy_manager', 'viewer'));
  assert.ok(!roleAllows('viewer', 'policy_manager') && !roleAllows('viewer', 'admin') && !roleAllows('policy_manager', 'admin'));
});
