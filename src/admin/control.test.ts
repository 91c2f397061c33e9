import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePolicy } from '../policy/index.js';
import { openSqliteStore } from '../store/sqlite.js';
import type { ServerConfig } from '../config/index.js';
import { ControlPlane, maskDefinition, type Actor } from './control.js';

const OPS: Actor = { name: 'ops', role: 'admin' };
const POLICY = '{"version":"1","default":"allow"}';

async function plane(now = () => 1_000_000) {
  const store = openSqliteStore(':memory:');
  await store.migrate();
  const configServers = new Map<string, ServerConfig>([
    ['fixed', { name: 'fixed', kind: 'http', url: 'https://user:pw-secret-1@fixed.example/mcp?key=query-secret-2', headers: { 'X-Key': 'hdr-secret-3' }, policy: parsePolicy(POLICY, '<inline>'), timeoutMs: 60_000 }],
  ]);
  return { store, control: new ControlPlane({ store, configServers, configSecrets: ['query-secret-2', 'hdr-secret-3'], now }) };
}

test('masks header and env values, an OAuth client secret and a URL password of a stored definition', () => {
  const masked = maskDefinition({
    url: 'https://bot:hunter2@api.example.com/mcp',
    headers: { Authorization: 'Bearer ${TOKEN}' },
    oauth: { token_url: 'https://auth.example.com/token', client_id: 'gw', client_secret: '${SECRET}' },
    timeout: '30s',
  });
  assert.deepEqual(masked, {
    url: 'https://bot:%5Bredacted%5D@api.example.com/mcp',
    headers: { Authorization: '[redacted]' },
    oauth: { token_url: 'https://auth.example.com/token', client_id: 'gw', client_secret: '[redacted]' },
    timeout: '30s',
  });
});

test("shows a gateway.yaml server without its URL password, its headers' values or any secret substituted into its URL", async () => {
  const { store, control } = await plane();
  const text = JSON.stringify(await control.getServer('fixed'));
  for (const secret of ['pw-secret-1', 'query-secret-2', 'hdr-secret-3']) assert.doesNotMatch(text, new RegExp(secret));
  assert.match(text, /"X-Key":"\[redacted\]"/);
  await store.close();
});

test('refuses a rollback to a version that does not exist, and a reset of a server added at run time', async () => {
  const { store, control } = await plane();
  await assert.rejects(control.rollbackPolicy(OPS, 'fixed', 7), /no policy version 7/);
  await control.addServer(OPS, 'added', { url: 'https://added.example/mcp' }, POLICY);
  await assert.rejects(control.resetPolicy(OPS, 'added'), /its policy lives only in the store/);
  await assert.rejects(control.getPolicy('nowhere'), /no server named 'nowhere'/);
  await store.close();
});

test('refuses a grant whose expiry is in the past or given twice, storing nothing', async () => {
  const { store, control } = await plane();
  await assert.rejects(control.createGrant(OPS, { label: 'late', servers: ['fixed'], expiresAt: 999_999 }), /a time in the future/);
  await assert.rejects(control.createGrant(OPS, { label: 'twice', servers: ['fixed'], expiresAt: 2_000_000, expiresInMs: 1000 }), /not both/);
  await assert.rejects(control.createGrant(OPS, { label: 'own', servers: ['fixed'], policies: { other: POLICY } }), /not one of the grant's servers/);
  assert.deepEqual(await store.listGrants(), []);
  assert.deepEqual(await store.listAdminEvents(), []);
  await store.close();
});

test('decides an approval once, recording the decider in the admin events; a later decision is a conflict showing the winner', async () => {
  let now = 1_000_000;
  const { store, control } = await plane(() => now);
  const base = { grantId: null, grantLabel: null, server: 'fixed', tool: 'pay', arguments: '{"amount":5}', argumentsDigest: 'a'.repeat(64), policyVersion: 'sha256:0', rule: '/tools/pay', reason: 'payments need a person', via: ['dashboard'], heldBy: null };
  const first = await store.createApproval({ ...base, expiresAt: now + 60_000 }, now);
  const second = await store.createApproval({ ...base, expiresAt: now + 1_000 }, now);

  const approved = await control.approve({ name: 'ops-alice', role: 'policy_manager' }, first.id, 'ok');
  assert.deepEqual([approved.status, approved.decidedBy, approved.comment, approved.arguments], ['approved', 'ops-alice', 'ok', { amount: 5 }]);
  await assert.rejects(control.deny(OPS, first.id, 'too late'), (err: Error & { code?: string; details?: { approval?: { decidedBy?: string } } }) => {
    assert.equal(err.code, 'PL_CONFLICT');
    assert.match(err.message, /was already approved by ops-alice/);
    assert.equal(err.details?.approval?.decidedBy, 'ops-alice');
    return true;
  });
  await assert.rejects(control.deny(OPS, second.id, '  '), /a denial says why/);
  await assert.rejects(control.approve(OPS, 'nope'), /no approval 'nope'/);

  // A read after the expiry finds it expired, even with no gateway sweeping.
  now += 2_000;
  assert.equal((await control.getApproval(second.id)).status, 'expired');
  const page = await control.listApprovals({ limit: 1 });
  assert.equal(page.approvals.length, 1);
  assert.equal(page.next, page.approvals[0]!.id);
  assert.equal((await control.listApprovals({ limit: 1, cursor: page.next! })).next, null);
  await assert.rejects(control.listApprovals({ status: 'maybe' }), /status: expected one of pending/);

  const events = await store.listAdminEvents({ action: 'approval.approve' });
  assert.deepEqual(events.map((e) => [e.actor, e.target]), [['ops-alice', `approval:${first.id}`]]);
  assert.deepEqual(await store.listAdminEvents({ action: 'approval.deny' }), []);
  await store.close();
});
