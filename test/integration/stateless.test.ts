/**
 * Both eras of MCP through one gateway. Clients of the stateless revision (2026-07-28: no
 * initialize, no sessions, a `_meta` envelope and Mcp-Method / Mcp-Name headers on every request)
 * reach session-era servers, and session-era clients reach servers of the stateless revision, with
 * the policy applied the same way in every combination.
 *
 * Clients: the v2 TypeScript SDK client (`@modelcontextprotocol/client`) pinned to 2026-07-28 or in
 * auto mode, the v1 SDK client, and raw HTTP for the revision's error cases. Servers:
 * server-everything from npm (stdio, and Streamable HTTP through test/helpers/everything-http.ts),
 * and a v2 SDK server of the stateless revision (test/helpers/stateless-server.ts).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client as V2Client, StreamableHTTPClientTransport as V2HttpTransport, ProtocolError } from '@modelcontextprotocol/client';
import { ElicitRequestSchema, McpError } from '@modelcontextprotocol/sdk/types.js';
import { connectHttp, type V1Connection, type V1Options, textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { postJson } from '../helpers/net.js';
import { npmServerCommand, startEverythingHttp, tappedCommand, type HttpServerProcess, toolCallsIn } from '../helpers/processes.js';
import { STATELESS_SERVER_INFO, startStatelessServer, type StatelessServer } from '../helpers/stateless-server.js';

const REVISION = '2026-07-28';
const META_VERSION = 'io.modelcontextprotocol/protocolVersion';
const META_CAPABILITIES = 'io.modelcontextprotocol/clientCapabilities';
const META_CLIENT_INFO = 'io.modelcontextprotocol/clientInfo';

const EVERYTHING_POLICY = {
  version: '1',
  default: 'allow',
  hide: ['get-env'],
  tools: { 'get-tiny-image': { action: 'deny', reason: 'images are off for stateless agents' } },
};
const MODERN_POLICY = {
  version: '1',
  default: 'allow',
  hide: ['secret'],
  tools: { danger: { action: 'deny', reason: 'danger is never run' } },
};

let tmp: TempDir;
let tapLog: string;
let everythingHttp: HttpServerProcess;
let modern: StatelessServer;
let gw: TestGateway;
const closers = new Set<() => Promise<void>>();

before(async () => {
  tmp = tempDir();
  tapLog = path.join(tmp.path, 'stdio-received.jsonl');
  [everythingHttp, modern] = await Promise.all([startEverythingHttp(), startStatelessServer()]);
  gw = await startTestGateway(`
servers:
  stdio:
    command: ${yamlValue(tappedCommand(tapLog, npmServerCommand('everything')))}
    policy: ${yamlValue(EVERYTHING_POLICY)}
  http:
    url: ${everythingHttp.url}
    policy: ${yamlValue(EVERYTHING_POLICY)}
  modern:
    url: ${modern.url}
    policy: ${yamlValue(MODERN_POLICY)}
`);
});

after(async () => {
  await Promise.allSettled([...closers].map((c) => c()));
  await gw?.stop();
  await everythingHttp?.stop();
  await modern?.close();
  tmp?.remove();
});

type Mode = 'auto' | { pin: string };

/** A v2 SDK client negotiating with `mode`; closed after the file's tests. */
async function v2(server: string, mode: Mode = { pin: REVISION }, name = 'stateless-test-client'): Promise<V2Client> {
  const client = new V2Client({ name, version: '2.0.0' }, { versionNegotiation: { mode }, capabilities: { elicitation: {} } });
  await client.connect(new V2HttpTransport(new URL(gw.endpoint(server))));
  closers.add(() => client.close());
  return client;
}

async function v1(server: string, setup?: V1Options['setup']): Promise<V1Connection> {
  const conn = await connectHttp(gw.endpoint(server), { capabilities: { elicitation: {} }, setup });
  closers.add(() => conn.close());
  return conn;
}


function envelope(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { [META_VERSION]: REVISION, [META_CAPABILITIES]: {}, [META_CLIENT_INFO]: { name: 'raw-client', version: '1' }, ...extra };
}

/** A tools/call of the stateless revision with matching headers, which `overrides` then changes. */
function rawCall(name: string, args: Record<string, unknown>, overrides: { headers?: Record<string, string | undefined>; meta?: Record<string, unknown>; id?: number } = {}) {
  const body = { jsonrpc: '2.0', id: overrides.id ?? 1, method: 'tools/call', params: { name, arguments: args, _meta: overrides.meta ?? envelope() } };
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries({ 'mcp-protocol-version': REVISION, 'mcp-method': 'tools/call', 'mcp-name': name, ...overrides.headers })) {
    if (v !== undefined) headers[k] = v;
  }
  return { body, headers };
}


interface RpcError {
  jsonrpc: '2.0';
  id: unknown;
  error: { code: number; message: string; data?: Record<string, unknown> };
}

for (const kind of ['stdio', 'http'] as const) {
  describe(`a stateless (2026-07-28) client through the gateway to a session-era ${kind} upstream`, () => {
    test('server/discover is answered with the revision, the upstream’s serverInfo and capabilities', async () => {
      const c = await v2(kind);
      assert.equal(c.getProtocolEra(), 'modern');
      assert.equal(c.getNegotiatedProtocolVersion(), REVISION);
      assert.equal(c.getServerVersion()?.name, 'mcp-servers/everything');
      const discovered = c.getDiscoverResult();
      assert.ok(discovered?.supportedVersions.includes(REVISION));
      assert.ok(discovered?.capabilities.tools, 'the upstream’s tools capability is announced');
      assert.ok((discovered?.instructions ?? '').length > 0, 'the upstream’s instructions are passed on');
    });

    test('tools/list is filtered by the policy and carries what the revision requires of a result', async () => {
      const c = await v2(kind);
      const names = (await c.listTools()).tools.map((t) => t.name);
      assert.ok(!names.includes('get-env'), 'the hidden tool is not listed');
      assert.ok(names.includes('echo') && names.includes('get-tiny-image'));
      const raw = await postJson(gw.endpoint(kind), { jsonrpc: '2.0', id: 7, method: 'tools/list', params: { _meta: envelope() } }, {
        'mcp-protocol-version': REVISION,
        'mcp-method': 'tools/list',
      });
      const result = (raw.json as { result: Record<string, unknown> }).result;
      assert.equal(result.resultType, 'complete');
      assert.equal(typeof result.ttlMs, 'number');
      assert.ok(result.cacheScope === 'private' || result.cacheScope === 'public');
    });

    test('tools/call is allowed, denied with the policy’s reason, or answered as an unknown tool when hidden', async () => {
      const c = await v2(kind);
      assert.equal(textOf(await c.callTool({ name: 'echo', arguments: { message: 'stateless hello' } })), 'Echo: stateless hello');
      const denied = await c.callTool({ name: 'get-tiny-image', arguments: {} });
      assert.equal(denied.isError, true);
      assert.match(textOf(denied), /Blocked by PolicyLayer policy/);
      assert.match(textOf(denied), /images are off for stateless agents/);
      assert.match(textOf(denied), /rule \/tools\/get-tiny-image\b/);
      const hidden = await c.callTool({ name: 'get-env', arguments: {} }).then(
        () => assert.fail('a hidden tool must not answer'),
        (e: unknown) => e,
      );
      assert.ok(hidden instanceof ProtocolError, String(hidden));
      assert.equal(hidden.code, -32602);
      assert.match(hidden.message, /Unknown tool: get-env/);
      if (kind === 'stdio') {
        assert.ok(!toolCallsIn(tapLog).includes('get-tiny-image'), 'the denied call never reached the server');
        assert.ok(!toolCallsIn(tapLog).includes('get-env'), 'the hidden call never reached the server');
      }
    });

    test('progress notifications reach the stateless caller', async () => {
      const c = await v2(kind);
      const seen: Array<{ progress: number; total?: number }> = [];
      const result = await c.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } }, { onprogress: (p) => void seen.push(p) });
      assert.match(textOf(result), /Long running operation completed/);
      assert.deepEqual(
        seen.map((p) => [p.progress, p.total]),
        [
          [1, 3],
          [2, 3],
          [3, 3],
        ],
      );
    });

    test('two stateless requests with the same id and progress token, in flight together, each get their own progress', async () => {
      const call = (steps: number) => {
        const { body, headers } = rawCall('trigger-long-running-operation', { duration: 0.4, steps }, { meta: envelope({ progressToken: 'same-token' }) });
        return postJson(gw.endpoint(kind), body, headers);
      };
      const [a, b] = await Promise.all([call(2), call(4)]);
      const progress = (r: Awaited<ReturnType<typeof call>>) =>
        r.events
          .filter((e) => (e as { method?: string }).method === 'notifications/progress')
          .map((e) => {
            const p = (e as { params: { progressToken: unknown; progress: number; total: number } }).params;
            return [p.progressToken, p.progress, p.total];
          });
      assert.deepEqual(progress(a), [1, 2].map((i) => ['same-token', i, 2]));
      assert.deepEqual(progress(b), [1, 2, 3, 4].map((i) => ['same-token', i, 4]));
      assert.deepEqual((a.json as { id: unknown }).id, 1);
      assert.match(JSON.stringify(a.json), /Steps: 2\./);
      assert.match(JSON.stringify(b.json), /Steps: 4\./);
    });

    test('a stateless client that abandons a call cancels it at the server, and the gateway stays healthy', async () => {
      const c = await v2(kind);
      const ac = new AbortController();
      const started = Date.now();
      await assert.rejects(
        c.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 10, steps: 100 } }, { signal: ac.signal, onprogress: () => ac.abort() }),
      );
      assert.ok(Date.now() - started < 3000, 'the abandoned call ended promptly');
      if (kind === 'stdio') {
        // In this revision closing the stream is the cancellation; the gateway turns it into the
        // session era's notifications/cancelled for the id it sent the call under.
        const lines = () =>
          existsSync(tapLog)
            ? readFileSync(tapLog, 'utf8')
                .split('\n')
                .filter((l) => l.trim() !== '')
                .map((l) => JSON.parse(l) as { id?: unknown; method?: string; params?: Record<string, unknown> })
            : [];
        const deadline = Date.now() + 3000;
        let cancelled: unknown;
        while (cancelled === undefined && Date.now() < deadline) {
          const sent = lines().filter((m) => m.method === 'tools/call' && (m.params?.arguments as { steps?: number })?.steps === 100).at(-1);
          cancelled = lines().find((m) => m.method === 'notifications/cancelled' && sent !== undefined && m.params?.requestId === sent.id);
          if (cancelled === undefined) await new Promise((r) => setTimeout(r, 20));
        }
        assert.ok(cancelled, 'the server received notifications/cancelled for the abandoned call');
      }
      assert.equal(textOf(await c.callTool({ name: 'echo', arguments: { message: 'after cancel' } })), 'Echo: after cancel');
    });

    test('a server request that a stateless client cannot receive fails the tool promptly instead of hanging it', async () => {
      const c = await v2(kind);
      const started = Date.now();
      const outcome = await c.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi' } }).then(
        (r) => ({ isError: r.isError, text: textOf(r) }),
        (e: Error) => ({ isError: true, text: e.message }),
      );
      assert.equal(outcome.isError, true);
      assert.match(outcome.text, /stateless/);
      assert.ok(Date.now() - started < 3000);
    });

    test('resources, prompts and completions are reachable from a stateless client', async () => {
      const c = await v2(kind);
      const resources = await c.listResources();
      assert.ok(resources.resources.length > 0);
      const read = await c.readResource({ uri: 'demo://resource/dynamic/text/3' });
      assert.match(String((read.contents[0] as { text?: string }).text), /^Resource 3: /);
      const templates = await c.listResourceTemplates();
      assert.ok(templates.resourceTemplates.some((t) => t.uriTemplate === 'demo://resource/dynamic/text/{resourceId}'));
      const prompt = await c.getPrompt({ name: 'completable-prompt', arguments: { department: 'Support', name: 'Kim' } });
      assert.match(JSON.stringify(prompt.messages), /Please promote Kim to the head of the Support team/);
      const done = await c.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'Ma' } });
      assert.deepEqual(done.completion.values, ['Marketing']);
    });
  });
}

describe('the stateless revision’s request checks at the gateway', () => {
  test('a request whose Mcp-Method header disagrees with its body is refused with 400 and -32020', async () => {
    const { body, headers } = rawCall('echo', { message: 'x' }, { headers: { 'mcp-method': 'tools/list' } });
    const r = await postJson(gw.endpoint('stdio'), body, headers);
    assert.equal(r.status, 400);
    assert.equal((r.json as RpcError).error.code, -32020);
    assert.equal((r.json as RpcError).id, 1);
    const missing = rawCall('echo', { message: 'x' }, { headers: { 'mcp-method': undefined } });
    const r2 = await postJson(gw.endpoint('stdio'), missing.body, missing.headers);
    assert.equal(r2.status, 400);
    assert.equal((r2.json as RpcError).error.code, -32020);
  });

  test('a tools/call whose Mcp-Name header names another tool than its body is refused with 400 and -32020, and never runs', async () => {
    // An intermediary that routes or filters on the header must not be steered past the policy.
    const before = toolCallsIn(tapLog).filter((n) => n === 'get-tiny-image').length;
    const { body, headers } = rawCall('get-tiny-image', {}, { headers: { 'mcp-name': 'echo' } });
    const r = await postJson(gw.endpoint('stdio'), body, headers);
    assert.equal(r.status, 400);
    assert.equal((r.json as RpcError).error.code, -32020);
    assert.match((r.json as RpcError).error.message, /Mcp-Name/);
    const absent = rawCall('echo', { message: 'x' }, { headers: { 'mcp-name': undefined } });
    const r2 = await postJson(gw.endpoint('stdio'), absent.body, absent.headers);
    assert.equal(r2.status, 400);
    assert.equal((r2.json as RpcError).error.code, -32020);
    assert.equal(toolCallsIn(tapLog).filter((n) => n === 'get-tiny-image').length, before);
  });

  test('a request missing a required envelope key is refused with 400 and -32602', async () => {
    const noCaps = rawCall('echo', { message: 'x' }, { meta: { [META_VERSION]: REVISION, [META_CLIENT_INFO]: { name: 'raw', version: '1' } } });
    const r = await postJson(gw.endpoint('stdio'), noCaps.body, noCaps.headers);
    assert.equal(r.status, 400);
    assert.equal((r.json as RpcError).error.code, -32602);
    assert.match((r.json as RpcError).error.message, /clientCapabilities/);
    const noVersion = rawCall('echo', { message: 'x' }, { meta: { [META_CAPABILITIES]: {} } });
    const r2 = await postJson(gw.endpoint('stdio'), noVersion.body, noVersion.headers);
    assert.equal(r2.status, 400);
    assert.equal((r2.json as RpcError).error.code, -32602);
    assert.match((r2.json as RpcError).error.message, /protocolVersion/);
  });

  test('a request of an unsupported revision gets -32022 with the supported versions, as a server of the revision answers', async () => {
    const future = '2099-01-01';
    const { body, headers } = rawCall('echo', { message: 'x' }, { meta: envelope({ [META_VERSION]: future }), headers: { 'mcp-protocol-version': future } });
    for (const url of [gw.endpoint('stdio'), gw.endpoint('modern'), modern.url]) {
      const r = await postJson(url, body, headers);
      assert.equal(r.status, 400, url);
      const err = (r.json as RpcError).error;
      assert.equal(err.code, -32022, `${url}: ${err.message}`);
      assert.equal((r.json as RpcError).id, 1);
      assert.ok(Array.isArray(err.data?.supported) && (err.data.supported as string[]).includes(REVISION), `${url}: ${JSON.stringify(err.data)}`);
      assert.equal(err.data?.requested, future);
    }
  });

  test('methods the revision removed (ping, initialize, logging/setLevel) answer -32601', async () => {
    for (const [method, params] of [
      ['ping', {}],
      ['logging/setLevel', { level: 'debug' }],
      ['initialize', { protocolVersion: REVISION, capabilities: {}, clientInfo: { name: 'raw', version: '1' } }],
    ] as const) {
      for (const url of [gw.endpoint('stdio'), gw.endpoint('modern'), modern.url]) {
        const r = await postJson(url, { jsonrpc: '2.0', id: 3, method, params: { ...params, _meta: envelope() } }, { 'mcp-protocol-version': REVISION, 'mcp-method': method });
        assert.equal((r.json as RpcError).error?.code, -32601, `${method} at ${url}`);
        assert.equal(r.status, 404, `${method} at ${url}`);
      }
    }
  });
});

describe('version negotiation against the gateway', () => {
  for (const server of ['stdio', 'http', 'modern']) {
    test(`a v2 client in auto mode is served the stateless revision (${server} upstream)`, async () => {
      const c = await v2(server, 'auto');
      assert.equal(c.getProtocolEra(), 'modern');
      assert.equal(c.getNegotiatedProtocolVersion(), REVISION);
      assert.match(textOf(await c.callTool({ name: 'echo', arguments: { message: 'auto' } })), /Echo: auto/);
    });
  }

  test('a v1 client on the same endpoint is served the session era', async () => {
    const c = await v1('stdio');
    assert.ok(c.transport?.sessionId, 'a session was opened');
    assert.equal(textOf(await c.client.callTool({ name: 'echo', arguments: { message: 'legacy' } })), 'Echo: legacy');
  });
});

describe('a server of the stateless revision behind the gateway', () => {
  test('a stateless client’s requests are forwarded as they came, envelope and headers included', async () => {
    const c = await v2('modern', { pin: REVISION }, 'forwarded-client');
    assert.deepEqual(c.getServerVersion(), STATELESS_SERVER_INFO);
    const marker = `forwarded ${Date.now()}`;
    assert.equal(textOf(await c.callTool({ name: 'echo', arguments: { message: marker } })), `Echo: ${marker}`);
    const got = modern.received.find((r) => (r.body?.params?.arguments as { message?: string } | undefined)?.message === marker);
    assert.ok(got, 'the server received the call');
    assert.equal(got.headers['mcp-method'], 'tools/call');
    assert.equal(got.headers['mcp-name'], 'echo');
    assert.equal(got.headers['mcp-protocol-version'], REVISION);
    assert.equal(got.headers['mcp-session-id'], undefined, 'no session is invented');
    const meta = got.body?.params?._meta as Record<string, unknown>;
    assert.equal(meta[META_VERSION], REVISION);
    assert.equal((meta[META_CLIENT_INFO] as { name: string }).name, 'forwarded-client', 'the client’s own envelope, not the gateway’s');
  });

  test('the policy applies to a stateless client: hidden tools unlisted and unknown, denied tools refused before the server', async () => {
    const c = await v2('modern');
    const names = (await c.listTools()).tools.map((t) => t.name);
    assert.ok(!names.includes('secret'));
    assert.ok(names.includes('danger') && names.includes('echo'));
    await assert.rejects(c.callTool({ name: 'secret', arguments: {} }), (e: unknown) => e instanceof ProtocolError && e.code === -32602);
    const denied = await c.callTool({ name: 'danger', arguments: {} });
    assert.equal(denied.isError, true);
    assert.match(textOf(denied), /danger is never run/);
    assert.ok(!modern.received.some((r) => r.body?.method === 'tools/call' && ['secret', 'danger'].includes(String(r.body.params?.name))));
  });

  test('progress and multi-round-trip input requests pass through to a stateless client', async () => {
    const c = await v2('modern');
    c.setRequestHandler('elicitation/create', async () => ({ action: 'accept', content: { name: 'Ada' } }));
    const seen: number[] = [];
    assert.equal(textOf(await c.callTool({ name: 'count', arguments: { steps: 4 } }, { onprogress: (p) => void seen.push(p.progress) })), 'counted to 4');
    assert.deepEqual(seen, [1, 2, 3, 4]);
    assert.equal(textOf(await c.callTool({ name: 'confirm', arguments: {} })), 'Hello, Ada');
  });

  test('a session-era client reaches it: tools, progress, policy, ping, and input requests as elicitation', async () => {
    let asked = '';
    const c = await v1('modern', (client) =>
      client.setRequestHandler(ElicitRequestSchema, async (req) => {
        asked = req.params.message;
        return { action: 'accept', content: { name: 'Grace' } };
      }),
    );
    assert.deepEqual(c.client.getServerVersion(), STATELESS_SERVER_INFO);
    assert.ok(c.transport?.sessionId, 'the gateway keeps the session the client expects');
    const names = (await c.client.listTools()).tools.map((t) => t.name);
    assert.deepEqual(names.sort(), ['add', 'confirm', 'count', 'danger', 'echo']);
    assert.equal(textOf(await c.client.callTool({ name: 'add', arguments: { a: 40, b: 2 } })), '42');
    const seen: number[] = [];
    await c.client.callTool({ name: 'count', arguments: { steps: 3 } }, undefined, { onprogress: (p) => void seen.push(p.progress) });
    assert.deepEqual(seen, [1, 2, 3]);
    const denied = await c.client.callTool({ name: 'danger', arguments: {} });
    assert.equal(denied.isError, true);
    assert.match(textOf(denied), /Blocked by PolicyLayer policy/);
    await assert.rejects(c.client.callTool({ name: 'secret', arguments: {} }), (e: unknown) => e instanceof McpError && e.code === -32602);
    assert.deepEqual(await c.client.ping(), {});
    assert.equal(textOf(await c.client.callTool({ name: 'confirm', arguments: {} })), 'Hello, Grace');
    assert.equal(asked, 'What is your name?');
  });
});
