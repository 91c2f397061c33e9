/**
 * The admin API end to end: a real gateway on a SQLite store, admin credentials of each role, a
 * real MCP client on the endpoints the API changes, and the admin side of the authorization
 * attack suite. Every refused request gets the documented status and changes nothing.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/processes.js';
import { raw, waitFor, type RawResponse } from '../helpers/safety-helpers.js';
import { ControlPlane } from '../../src/admin/control.js';
import { hashToken, newAdminToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import type { ControlStore } from '../../src/store/store.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const ALLOW_ALL = { version: '1', default: 'allow' };
const NO_ECHO = { version: '1', default: 'allow', tools: { echo: { action: 'deny', reason: 'echo is off today' } } };
const SECRET = 'sk-live-do-not-show-4242';

describe('the admin API', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let store: ControlStore;
  let admin: string;
  let policyManager: string;
  let viewer: string;
  let revokedAdmin: string;
  const clients: Client[] = [];

  const api = (p: string) => `${gw.running.adminUrl}${p}`;
  function call(method: string, p: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}): Promise<RawResponse> {
    const h: Record<string, string> = { ...headers };
    if (token !== undefined) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] ??= 'application/json';
    return raw(api(p), { method, headers: h, body: body === undefined ? null : typeof body === 'string' ? body : JSON.stringify(body) });
  }
  async function connect(server: string, token: string): Promise<Client> {
    const client = new Client({ name: 'agent', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(gw.endpoint(server)), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
    await client.connect(transport);
    clients.push(client);
    return client;
  }
  async function credential(label: string, role: 'admin' | 'policy_manager' | 'viewer'): Promise<string> {
    const token = newAdminToken();
    await store.createAdminCredential({ label, role }, hashToken(token), Date.now());
    return token;
  }

  before(async () => {
    tmp = tempDir();
    // Servers added at run time resolve their references from the gateway's own environment.
    process.env.REMOTE_KEY = SECRET;
    gw = await startTestGateway(
      `
store: sqlite:./control.db
auth: { required: true }
servers:
  fixture:
    command: ${yamlValue([process.execPath, FIXTURE])}
    policy: ${yamlValue(ALLOW_ALL)}
  remote:
    url: https://remote.example.invalid/mcp
    headers: { Authorization: "Bearer \${REMOTE_KEY}" }
    policy: ${yamlValue(ALLOW_ALL)}
`,
      { dir: tmp.path },
    );
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    admin = await credential('ops-admin', 'admin');
    policyManager = await credential('sec-policy', 'policy_manager');
    viewer = await credential('auditor', 'viewer');
    revokedAdmin = await credential('former', 'admin');
    await store.revokeAdminCredential('former', Date.now());
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await gw.stop();
    await store.close();
    tmp.remove();
  });

  test('says who is calling and with which role', async () => {
    const res = await call('GET', '/whoami', policyManager);
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { actor: 'sec-policy', role: 'policy_manager' });
  });

  describe('refuses, changing nothing,', () => {
    const refusals: Array<[string, () => Record<string, string>]> = [
      ['a request without a credential', () => ({})],
      ['a malformed Authorization header', () => ({ authorization: 'Basic b3BzOmh1bnRlcjI=' })],
      ['a token that is no admin credential', () => ({ authorization: 'Bearer hunter2' })],
      ['an unknown admin credential', () => ({ authorization: `Bearer ${newAdminToken()}` })],
      ['a revoked admin credential', () => ({ authorization: `Bearer ${revokedAdmin}` })],
    ];
    for (const [what, headers] of refusals) {
      test(`${what}, with 401 and a challenge`, async () => {
        const res = await raw(api('/grants'), { method: 'POST', headers: { ...headers(), 'content-type': 'application/json' }, body: JSON.stringify({ label: 'sneaky', servers: ['fixture'] }) });
        assert.equal(res.status, 401);
        assert.equal(res.json.error.code, 'PL_ADMIN_UNAUTHORIZED');
        assert.match(String(res.headers['www-authenticate']), /^Bearer realm="policylayer-admin", error="invalid_token"/);
        assert.equal(await store.getGrant('sneaky'), undefined);
      });
    }

    test("an agent's grant token on an admin route, even a valid one", async () => {
      const created = await call('POST', '/grants', admin, { label: 'agent-x', servers: ['fixture'] });
      assert.equal(created.status, 201);
      const res = await call('POST', '/grants', created.json.token, { label: 'escalated', servers: ['fixture'] });
      assert.equal(res.status, 401);
      assert.match(res.json.error.message, /grant token is an agent credential/);
      assert.equal(await store.getGrant('escalated'), undefined);
    });

    test('an admin credential in the URL, even a valid one', async () => {
      const res = await raw(`${api('/grants')}?access_token=${admin}`, { method: 'GET' });
      assert.equal(res.status, 401);
      const disguised = await raw(`${api('/grants')}?t=${admin}`, { method: 'GET', headers: { authorization: `Bearer ${admin}` } });
      assert.equal(disguised.status, 401);
    });

    test('a viewer trying a write, with 403', async () => {
      const grant = await call('POST', '/grants', viewer, { label: 'by-viewer', servers: ['fixture'] });
      assert.equal(grant.status, 403);
      assert.equal(grant.json.error.code, 'PL_ADMIN_FORBIDDEN');
      assert.match(grant.json.error.message, /the role 'viewer' may not POST \/admin\/api\/grants: it needs 'admin'/);
      const policy = await call('PUT', '/servers/fixture/policy', viewer, { policy: NO_ECHO });
      assert.equal(policy.status, 403);
      assert.equal(await store.getGrant('by-viewer'), undefined);
      assert.equal(await store.getPolicyVersion('fixture'), undefined);
    });

    test('a policy manager managing grants or servers, with 403', async () => {
      assert.equal((await call('POST', '/grants', policyManager, { label: 'by-pm', servers: ['fixture'] })).status, 403);
      assert.equal((await call('DELETE', '/servers/fixture', policyManager)).status, 403);
      assert.equal((await call('GET', '/admins', policyManager)).status, 403);
    });

    test('a page of another site, with 403, before any credential is looked at', async () => {
      const res = await call('GET', '/whoami', admin, undefined, { origin: 'https://evil.example' });
      assert.equal(res.status, 403);
    });
  });

  test('lets viewers read servers with every credential masked', async () => {
    const res = await call('GET', '/servers', viewer);
    assert.equal(res.status, 200);
    assert.doesNotMatch(res.text, new RegExp(SECRET));
    const remote = (res.json.servers as Array<{ name: string; definition: { headers: Record<string, string> } }>).find((s) => s.name === 'remote')!;
    assert.deepEqual(remote.definition.headers, { Authorization: '[redacted]' });
    const fixture = (await call('GET', '/servers/fixture', viewer)).json;
    assert.deepEqual([fixture.source, fixture.kind, fixture.policy.source], ['config', 'stdio', 'inline']);
  });

  test('creates a grant whose token works on the MCP endpoint, and revokes it so it stops within a second', async () => {
    const created = await call('POST', '/grants', admin, { label: 'ci-runner', servers: ['fixture'], expiresIn: '30d' });
    assert.equal(created.status, 201);
    assert.match(created.json.token, /^plg_/);
    assert.equal(created.json.grant.state, 'active');
    const client = await connect('fixture', created.json.token);
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'hi' } })), 'hi');

    const listed = await call('GET', '/grants', viewer);
    assert.doesNotMatch(listed.text, /plg_/);
    const revoked = await call('POST', '/grants/ci-runner/revoke', admin);
    assert.equal(revoked.status, 200);
    assert.equal(revoked.json.state, 'revoked');
    const init = await raw(gw.endpoint('fixture'), {
      headers: { authorization: `Bearer ${created.json.token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '0' } } }),
    });
    assert.equal(init.status, 401);
  });

  test('rotates a grant token with a grace period for the old one', async () => {
    const created = await call('POST', '/grants', admin, { label: 'rotating', servers: ['fixture'] });
    const rotated = await call('POST', '/grants/rotating/rotate', admin, { grace: '1h' });
    assert.equal(rotated.status, 200);
    assert.notEqual(rotated.json.token, created.json.token);
    assert.ok(Date.parse(rotated.json.oldTokenValidUntil) > Date.now() + 3_500_000);
    const old = await connect('fixture', created.json.token);
    const fresh = await connect('fixture', rotated.json.token);
    assert.equal(textOf(await old.callTool({ name: 'echo', arguments: { text: 'old' } })), 'old');
    assert.equal(textOf(await fresh.callTool({ name: 'echo', arguments: { text: 'new' } })), 'new');
  });

  test('puts a new policy version in force for the next call, rolls it back, and resets to gateway.yaml', async () => {
    const { token } = (await call('POST', '/grants', admin, { label: 'policy-watcher', servers: ['fixture'] })).json;
    const client = await connect('fixture', token);
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'before' } })), 'before');

    const put = await call('PUT', '/servers/fixture/policy', policyManager, { policy: NO_ECHO, note: 'incident 42' });
    assert.equal(put.status, 200);
    assert.deepEqual([put.json.source, put.json.version], ['store', 1]);
    const denied = await client.callTool({ name: 'echo', arguments: { text: 'during' } });
    assert.equal((denied as { isError?: boolean }).isError, true);
    assert.match(textOf(denied), /echo is off today/);

    const yaml = await call('PUT', '/servers/fixture/policy', policyManager, { policy: 'version: "1"\ndefault: allow\n' });
    assert.equal(yaml.json.version, 2);
    const versions = await call('GET', '/servers/fixture/policy/versions', viewer);
    assert.deepEqual(
      (versions.json.versions as Array<{ version: number; actor: string; note: string | null }>).map((v) => [v.version, v.actor, v.note]),
      [
        [2, 'sec-policy', null],
        [1, 'sec-policy', 'incident 42'],
      ],
    );
    const one = await call('GET', '/servers/fixture/policy/versions/1', viewer);
    assert.deepEqual(JSON.parse(one.json.text), NO_ECHO);

    const rollback = await call('POST', '/servers/fixture/policy/rollback', policyManager, { version: 1 });
    assert.equal(rollback.status, 200);
    assert.equal(rollback.json.version, 3);
    assert.equal(((await client.callTool({ name: 'echo', arguments: { text: 'x' } })) as { isError?: boolean }).isError, true);

    const reset = await call('DELETE', '/servers/fixture/policy', policyManager);
    assert.equal(reset.status, 200);
    assert.deepEqual([reset.json.source, reset.json.version], ['inline', null]);
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'after' } })), 'after');
  });

  test('refuses an invalid policy with 400 naming every problem, keeping the one in force', async () => {
    const res = await call('PUT', '/servers/fixture/policy', policyManager, { policy: { version: '1', default: 'maybe', tools: { x: { action: 'explode' } } } });
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, 'PL_INVALID_REQUEST');
    assert.ok(res.json.error.problems.some((p: string) => /\/default: expected allow\|deny/.test(p)), res.text);
    assert.ok(res.json.error.problems.some((p: string) => /\/tools\/x\/action/.test(p)), res.text);
    assert.equal((await call('GET', '/servers/fixture/policy', viewer)).json.source, 'inline');
  });

  test('adds a server that clients can use at once, and removes it so they cannot', async () => {
    const added = await call('POST', '/servers', admin, {
      name: 'scratch',
      definition: { command: [process.execPath, FIXTURE, '--tools', 'scratch_tool'], env: { SCRATCH_KEY: '${REMOTE_KEY}' } },
      policy: ALLOW_ALL,
    });
    assert.equal(added.status, 201, added.text);
    assert.deepEqual([added.json.source, added.json.policy.version], ['store', 1]);
    assert.deepEqual(added.json.definition.env, { SCRATCH_KEY: '[redacted]' });
    const { token } = (await call('POST', '/grants', admin, { label: 'scratcher', servers: ['scratch'] })).json;
    const client = await connect('scratch', token);
    const tools = (await client.listTools()).tools.map((t) => t.name);
    assert.ok(tools.includes('scratch_tool'), tools.join(','));

    const removed = await call('DELETE', '/servers/scratch', admin);
    assert.equal(removed.status, 204);
    const gone = await raw(gw.endpoint('scratch'), { headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
    assert.equal(gone.status, 404);
    assert.equal((await call('GET', '/servers/scratch', viewer)).status, 404);
  });

  test('refuses to add an invalid server or one named like a server of gateway.yaml, and to remove a gateway.yaml server', async () => {
    const invalid = await call('POST', '/servers', admin, { name: 'broken', definition: { url: 'ftp://nope' }, policy: ALLOW_ALL });
    assert.equal(invalid.status, 400);
    assert.ok(invalid.json.error.problems.some((p: string) => /expected an http:\/\/ or https:\/\/ URL/.test(p)), invalid.text);
    const missingEnv = await call('POST', '/servers', admin, { name: 'nokey', definition: { url: 'https://x.example/mcp', headers: { 'X-Key': '${NOT_SET_ANYWHERE_42}' } }, policy: ALLOW_ALL });
    assert.equal(missingEnv.status, 400);
    assert.ok(missingEnv.json.error.problems.some((p: string) => /NOT_SET_ANYWHERE_42 is not set/.test(p)), missingEnv.text);
    assert.equal((await call('POST', '/servers', admin, { name: 'fixture', definition: { url: 'https://x.example/mcp' }, policy: ALLOW_ALL })).status, 409);
    const configured = await call('DELETE', '/servers/fixture', admin);
    assert.equal(configured.status, 409);
    assert.match(configured.json.error.message, /defined in gateway\.yaml/);
    assert.equal(await store.getServer('broken'), undefined);
  });

  test('answers malformed requests with a clear error', async () => {
    const notJson = await call('POST', '/grants', admin, '{"label":', {});
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.error.code, 'PL_PARSE_ERROR');
    const form = await call('POST', '/grants', admin, 'label=x', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(form.status, 415);
    const huge = await call('PUT', '/servers/fixture/policy', admin, { policy: { version: '1', default: 'allow', padding: 'x'.repeat(5 * 1024 * 1024) } });
    assert.equal(huge.status, 413);
    const unknownRoute = await call('GET', '/nothing-here', admin);
    assert.equal(unknownRoute.status, 404);
    const wrongMethod = await call('PATCH', '/grants', admin, {});
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.allow, 'GET, POST');
    assert.equal((await call('GET', '/grants/nobody', admin)).status, 404);
    assert.equal((await call('POST', '/grants', admin, { label: 'bad label!', servers: ['fixture'] })).status, 400);
    assert.equal((await call('POST', '/grants', admin, { label: 'nowhere', servers: ['no-such-server'] })).status, 400);
    assert.equal((await call('GET', '/servers/fixture/policy/versions/0', admin)).status, 400);
  });

  test('records every admin action in the admin audit stream: who, what, before and after', async () => {
    const res = await call('GET', '/events?limit=500', viewer);
    assert.equal(res.status, 200);
    const events = res.json.events as Array<{ id: number; actor: string; role: string; action: string; target: string; before: unknown; after: any }>;
    const ids = events.map((e) => e.id);
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first');
    const revoke = events.find((e) => e.action === 'grant.revoke' && e.target === 'grant:ci-runner')!;
    assert.equal(revoke.actor, 'ops-admin');
    assert.equal((revoke.before as { state: string }).state, 'active');
    assert.equal(revoke.after.state, 'revoked');
    const policy = events.find((e) => e.action === 'policy.update' && e.after?.version === 1)!;
    assert.deepEqual([policy.actor, policy.role, policy.target], ['sec-policy', 'policy_manager', 'server:fixture']);
    assert.equal((policy.before as { source: string }).source, 'inline');
    for (const action of ['grant.create', 'grant.rotate', 'policy.rollback', 'policy.reset', 'server.add', 'server.remove']) {
      assert.ok(events.some((e) => e.action === action), `no ${action} event`);
    }
    assert.doesNotMatch(res.text, /plg_|pla_/);
    assert.doesNotMatch(res.text, new RegExp(SECRET));
    const filtered = await call('GET', '/events?action=grant.revoke', viewer);
    assert.ok((filtered.json.events as Array<{ action: string }>).every((e) => e.action === 'grant.revoke'));
    assert.equal(events.some((e) => e.actor === 'auditor'), false, 'reads are not admin actions');
  });

  test('applies a policy version written by another process (the CLI, another gateway) within a second', async () => {
    const { token } = (await call('POST', '/grants', admin, { label: 'elsewhere', servers: ['fixture'] })).json;
    const client = await connect('fixture', token);
    const other = new ControlPlane({ store, configServers: gw.config.servers });
    await other.putPolicy({ name: 'cli:someone', role: 'admin' }, 'fixture', JSON.stringify(NO_ECHO));
    const started = Date.now();
    assert.ok(await waitFor(() => gw.gateway.servers.get('fixture')!.storedPolicyVersion !== undefined, 1500), 'not applied within 1.5 s');
    assert.ok(Date.now() - started < 1500);
    assert.equal(((await client.callTool({ name: 'echo', arguments: { text: 'x' } })) as { isError?: boolean }).isError, true);
    await other.resetPolicy({ name: 'cli:someone', role: 'admin' }, 'fixture');
  });
});

describe('an admin API on its own address', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let admin: string;

  before(async () => {
    tmp = tempDir();
    gw = await startTestGateway(
      `
admin: 127.0.0.1:0
store: sqlite:./control.db
servers:
  fixture:
    command: ${yamlValue([process.execPath, FIXTURE])}
    policy: ${yamlValue(ALLOW_ALL)}
`,
      { dir: tmp.path },
    );
    const store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    admin = newAdminToken();
    await store.createAdminCredential({ label: 'ops', role: 'admin' }, hashToken(admin), Date.now());
    await store.close();
  });

  after(async () => {
    await gw.stop();
    tmp.remove();
  });

  test('serves the admin API and /metrics there, and neither on the MCP address', async () => {
    const adminUrl = gw.running.adminUrl!;
    assert.ok(!adminUrl.startsWith(gw.url), `${adminUrl} should not be on ${gw.url}`);
    const who = await raw(`${adminUrl}/whoami`, { method: 'GET', headers: { authorization: `Bearer ${admin}` } });
    assert.equal(who.status, 200);
    assert.equal((await raw(`${gw.url}/admin/api/whoami`, { method: 'GET', headers: { authorization: `Bearer ${admin}` } })).status, 404);
    const adminBase = adminUrl.slice(0, -'/admin/api'.length);
    assert.equal((await raw(`${adminBase}/metrics`, { method: 'GET' })).status, 200);
    assert.equal((await raw(`${gw.url}/metrics`, { method: 'GET' })).status, 404);
    assert.equal((await raw(`${adminBase}/mcp/fixture`, { headers: { 'content-type': 'application/json' }, body: '{}' })).status, 404);
  });

  test('still needs an admin credential while MCP runs without grants', async () => {
    const res = await raw(`${gw.running.adminUrl}/servers`, { method: 'GET' });
    assert.equal(res.status, 401);
  });
});
