/**
 * A remote server on the legacy HTTP+SSE transport (`transport: sse`), reached by a client that
 * speaks Streamable HTTP to the gateway: the gateway bridges the two and governs on the way. The
 * upstream is the v1 SDK's own SSEServerTransport (test/fixtures/http-servers.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { startLegacySseServer, type FixtureHttpServer } from '../fixtures/http-servers.js';
import { textOf } from '../helpers/clients.js';


describe('a legacy HTTP+SSE upstream', () => {
  let upstream: FixtureHttpServer;
  let gw: TestGateway;
  let client: Client;

  before(async () => {
    upstream = await startLegacySseServer();
    gw = await startTestGateway(`
servers:
  legacy:
    url: ${yamlValue(upstream.url)}
    transport: sse
    headers: { X-Upstream-Key: "legacy-key-123" }
    policy: ${yamlValue({
      version: '1',
      default: 'allow',
      hide: ['secret_tool'],
      tools: { delete_everything: { action: 'deny', reason: 'nothing is deleted through the gateway' } },
    })}
`);
    client = new Client({ name: 'policylayer-test', version: '0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gw.endpoint('legacy'))));
  });

  after(async () => {
    await client?.close().catch(() => {});
    await gw?.stop();
    await upstream?.close();
  });

  it('initializes through the gateway with the upstream server identity', () => {
    assert.equal(client.getServerVersion()?.name, 'policylayer-http-fixture');
    assert.ok(client.getServerCapabilities()?.tools, 'the upstream declares tools');
    const stream = upstream.requests.find((r) => r.method === 'GET' && r.url === '/sse');
    assert.ok(stream, 'the gateway opened the legacy event stream');
    assert.equal(stream.headers['x-upstream-key'], 'legacy-key-123');
  });

  it('lists the upstream tools without the hidden ones', async () => {
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    assert.deepEqual(names, ['add', 'delete_everything', 'echo', 'sleep']);
  });

  it('runs an allowed tools/call on the upstream and returns its answer', async () => {
    const sum = await client.callTool({ name: 'add', arguments: { a: 40, b: 2 } });
    assert.equal(textOf(sum), '42');
    const echoed = await client.callTool({ name: 'echo', arguments: { text: 'over legacy SSE' } });
    assert.equal(textOf(echoed), 'over legacy SSE');
    assert.equal(upstream.calls.get('add'), 1);
    const posts = upstream.requests.filter((r) => r.method === 'POST' && r.url.startsWith('/messages?sessionId='));
    assert.ok(posts.length >= 3, 'initialize, initialized and the calls were posted to the endpoint the stream named');
    for (const p of posts) assert.equal(p.headers['x-upstream-key'], 'legacy-key-123');
  });

  it('refuses a denied call as an isError result without it reaching the upstream', async () => {
    const denied = await client.callTool({ name: 'delete_everything', arguments: {} });
    assert.equal(denied.isError, true);
    assert.match(textOf(denied), /nothing is deleted through the gateway/);
    assert.equal(upstream.calls.get('delete_everything'), undefined);
  });

  it('answers a hidden tool as an unknown tool', async () => {
    await assert.rejects(client.callTool({ name: 'secret_tool', arguments: {} }), /Unknown tool: secret_tool/);
    assert.equal(upstream.calls.get('secret_tool'), undefined);
  });

  // Last: it ends the upstream session.
  it('fails a call in flight at once with a clear error when the upstream closes its event stream, and ends the session with 404', async () => {
    const t0 = Date.now();
    const pending = client.callTool({ name: 'sleep', arguments: { ms: 20_000 } }).then(
      () => null,
      (e: Error) => e,
    );
    const started = await new Promise<boolean>((resolve) => {
      const poll = setInterval(() => {
        if (upstream.calls.get('sleep') === 1 || Date.now() - t0 > 3000) {
          clearInterval(poll);
          resolve(upstream.calls.get('sleep') === 1);
        }
      }, 10);
    });
    assert.ok(started, 'the upstream is running the call');
    await upstream.dropSessions();
    const err = await pending;
    assert.ok(err, 'the call failed');
    assert.match(err.message, /upstream server 'legacy' closed its event stream/);
    assert.ok(Date.now() - t0 < 5000, 'at once, not at a timeout');
    const later = await client.callTool({ name: 'echo', arguments: { text: 'x' } }).then(
      () => null,
      (e: Error) => e,
    );
    assert.ok(later, 'a later call in the dead session fails');
    // The session is over for the client too (HTTP 404 with the session error), so it starts a new one.
    assert.equal((later as Error & { code?: number }).code, 404);
    assert.match(later.message, /upstream server 'legacy' ended this session/);
  });
});
