/**
 * Grants end to end: a gateway with `auth.required: true` on a SQLite store, a real SDK client
 * with a bearer token, and the authorization attack suite. Every refused request gets the
 * documented status, and nothing of it reaches the upstream server.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { REPO_ROOT, tappedCommand, toolCallsIn } from '../helpers/processes.js';
import { MCP_HEADERS, PROTOCOL_VERSION, raw } from '../helpers/safety-helpers.js';
import { hashToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import type { ControlStore } from '../../src/store/store.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');

const POLICY = {
  version: '1',
  default: 'allow',
  tools: { create_session: { limits: [{ counter: 'sessions', window: 'minute', max: 2, scope: 'grant' }] } },
};
const READ_ONLY = { version: '1', default: 'deny', tools: { echo: {} } };

const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'attacker', version: '0' } },
});

describe('a gateway with auth.required: true', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let store: ControlStore;
  let tap: string;
  const tokens: Record<string, string> = {};
  const clients: Client[] = [];

  const endpoint = () => gw.endpoint('fixture');
  async function grant(label: string, servers: string[], extra: { expiresAt?: number; policies?: Record<string, string> } = {}) {
    const token = newToken();
    await store.createGrant({ label, servers, ...extra }, hashToken(token), Date.now());
    tokens[label] = token;
    return token;
  }
  async function connect(token: string): Promise<Client> {
    const client = new Client({ name: 'agent', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(endpoint()), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
    await client.connect(transport);
    clients.push(client);
    return client;
  }
  const post = (headers: Record<string, string>, body = INITIALIZE, url = endpoint()) => raw(url, { headers: { ...MCP_HEADERS, ...headers }, body });

  before(async () => {
    tmp = tempDir();
    tap = path.join(tmp.path, 'tap.jsonl');
    gw = await startTestGateway(
      `
store: sqlite:./control.db
auth: { required: true }
servers:
  fixture:
    command: ${yamlValue(tappedCommand(tap, [process.execPath, FIXTURE, '--tools', 'create_session']))}
    policy: ${yamlValue(POLICY)}
  other:
    command: ${yamlValue([process.execPath, FIXTURE])}
    policy: { version: "1", default: allow }
`,
      { dir: tmp.path },
    );
    // A second handle on the same file, as `policylayer grants` in another process would have.
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    await grant('alice', ['fixture']);
    await grant('bob', ['fixture']);
    await grant('carol', ['fixture'], { policies: { fixture: JSON.stringify(READ_ONLY) } });
    await grant('other-only', ['other']);
    await grant('expired', ['fixture'], { expiresAt: Date.now() - 1000 });
    await grant('revoked', ['fixture']);
    await store.revokeGrant('revoked', Date.now());
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await gw.stop();
    await store.close();
    tmp.remove();
  });

  test('serves a valid grant end to end with a real client', async () => {
    const client = await connect(tokens.alice!);
    const r = await client.callTool({ name: 'echo', arguments: { text: 'hello' } });
    assert.equal(textOf(r), 'hello');
  });

  test('answers a request without a token with 401 and a challenge naming the resource metadata', async () => {
    const res = await post({});
    assert.equal(res.status, 401);
    const challenge = String(res.headers['www-authenticate']);
    assert.match(challenge, /^Bearer realm="policylayer", resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp\/fixture"$/);
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)![1]!;
    const metadata = await raw(metadataUrl, { method: 'GET' });
    assert.equal(metadata.status, 200);
    assert.deepEqual(metadata.json, {
      resource: endpoint(),
      authorization_servers: [],
      bearer_methods_supported: ['header'],
      resource_name: 'PolicyLayer: fixture',
    });
  });

  const refusals: Array<[string, () => Record<string, string>, number, string]> = [
    ['a malformed Authorization header', () => ({ authorization: 'Token abc' }), 401, 'invalid_request'],
    ['a token that is not a grant token', () => ({ authorization: 'Bearer hunter2' }), 401, 'invalid_token'],
    ['an unknown grant token', () => ({ authorization: `Bearer ${newToken()}` }), 401, 'invalid_token'],
    ['the token of a revoked grant', () => ({ authorization: `Bearer ${tokens.revoked}` }), 401, 'invalid_token'],
    ['the token of an expired grant', () => ({ authorization: `Bearer ${tokens.expired}` }), 401, 'invalid_token'],
    ['the token of a grant bound to another server', () => ({ authorization: `Bearer ${tokens['other-only']}` }), 403, 'insufficient_scope'],
  ];
  for (const [what, headers, status, error] of refusals) {
    test(`refuses ${what} with ${status} ${error}`, async () => {
      const res = await post(headers());
      assert.equal(res.status, status);
      assert.equal((res.json as { error?: string }).error, error);
      assert.match(String(res.headers['www-authenticate']), new RegExp(`error="${error}"`));
    });
  }

  test('refuses a token in the query string even when it is valid', async () => {
    const res = await post({}, INITIALIZE, `${endpoint()}?access_token=${tokens.alice}`);
    assert.equal(res.status, 401);
    assert.equal((res.json as { error?: string }).error, 'invalid_request');
    const disguised = await post({ authorization: `Bearer ${tokens.alice}` }, INITIALIZE, `${endpoint()}?t=${tokens.alice}`);
    assert.equal(disguised.status, 401);
  });

  test("rejects a session id presented with another grant's token, as an unknown session", async () => {
    const init = await post({ authorization: `Bearer ${tokens.alice}` });
    assert.equal(init.status, 200);
    const sid = String(init.headers['mcp-session-id']);
    const stolen = await post(
      { authorization: `Bearer ${tokens.bob}`, 'mcp-session-id': sid, 'mcp-protocol-version': PROTOCOL_VERSION },
      JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'echo', arguments: { text: 'stolen' } } }),
    );
    assert.equal(stolen.status, 404);
    const own = await post(
      { authorization: `Bearer ${tokens.alice}`, 'mcp-session-id': sid, 'mcp-protocol-version': PROTOCOL_VERSION },
      JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo', arguments: { text: 'mine' } } }),
    );
    assert.equal(own.status, 200);
  });

  test('counts grant-scoped limits per grant: each grant has its own two create_session calls a minute', async () => {
    const alice = await connect(tokens.alice!);
    const bob = await connect(tokens.bob!);
    const calls = async (c: Client) => {
      const out: boolean[] = [];
      for (let i = 0; i < 3; i++) out.push(((await c.callTool({ name: 'create_session', arguments: {} })) as { isError?: boolean }).isError === true);
      return out;
    };
    assert.deepEqual(await calls(alice), [false, false, true]);
    assert.deepEqual(await calls(bob), [false, false, true]);
  });

  test("applies the grant's own policy on the server instead of the server's", async () => {
    const carol = await connect(tokens.carol!);
    assert.equal(textOf(await carol.callTool({ name: 'echo', arguments: { text: 'ok' } })), 'ok');
    const refused = (await carol.callTool({ name: 'create_session', arguments: {} })) as { isError?: boolean };
    assert.equal(refused.isError, true);
    assert.match(textOf(refused), /default: deny/);
  });

  test('serves /metrics to a loopback client without a token, counting refusals by outcome', async () => {
    const res = await raw(`${gw.url}/metrics`, { method: 'GET' });
    assert.equal(res.status, 200);
    assert.match(res.text, /^policylayer_tool_calls_total\{server="fixture",outcome="limited"\} 2$/m);
  });

  test('lets nothing of a refused request reach the upstream server', () => {
    const calls = toolCallsIn(tap);
    assert.equal(calls.filter((n) => n === 'echo').length, 3, calls.join(','));
    assert.equal(calls.filter((n) => n === 'create_session').length, 4, calls.join(','));
  });
});
