/**
 * The gateway is invisible to everything it does not govern: a real MCP client talking to a real
 * server through it sees what it would see talking to the server directly, for every feature of
 * the protocol, whether the server is a local stdio process or a remote Streamable HTTP service.
 *
 * Upstreams: @modelcontextprotocol/server-everything from npm, on stdio (behind a tap that records
 * what the process receives) and over Streamable HTTP (test/helpers/everything-http.ts).
 * Client: the v1 TypeScript SDK Client with its Streamable HTTP transport.
 */
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import {
  CallToolResultSchema,
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  LoggingMessageNotificationSchema,
  ProgressNotificationSchema,
  ResourceUpdatedNotificationSchema,
  type LoggingMessageNotification,
  type ProgressNotification,
} from '@modelcontextprotocol/sdk/types.js';
import { connectHttp, connectStdio, waitFor, type V1Connection, type V1Options, textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { npmServerCommand, startEverythingHttp, tappedCommand, type HttpServerProcess } from '../helpers/processes.js';

// get-sum's own argument errors are compared with the server's below, so the gateway's check of
// its input schema (on for every other tool) is off for it; that check is tested in validation.test.ts.
const ALLOW_ALL = { version: '1', default: 'allow', tools: { 'get-sum': { validate_arguments: false } } };
/** What a host with a model and a user declares; the gateway declares the same to a shared stdio server. */
const CAPABILITIES = { sampling: {}, elicitation: {} };

let tmp: TempDir;
let everythingHttp: HttpServerProcess;
let gw: TestGateway;
let tapLog: string;
const open = new Set<V1Connection>();

before(async () => {
  tmp = tempDir();
  tapLog = `${tmp.path}/stdio-received.jsonl`;
  everythingHttp = await startEverythingHttp();
  gw = await startTestGateway(`
servers:
  stdio:
    command: ${yamlValue(tappedCommand(tapLog, npmServerCommand('everything')))}
    policy: ${yamlValue(ALLOW_ALL)}
  http:
    url: ${everythingHttp.url}
    policy: ${yamlValue(ALLOW_ALL)}
`);
});

after(async () => {
  await Promise.allSettled([...open].map((c) => c.close()));
  await gw?.stop();
  await everythingHttp?.stop();
  tmp?.remove();
});

async function track(c: Promise<V1Connection>): Promise<V1Connection> {
  const conn = await c;
  open.add(conn);
  return conn;
}

async function release(conn: V1Connection): Promise<void> {
  open.delete(conn);
  await conn.close();
}


interface Upstream {
  kind: 'stdio' | 'http';
  /** A client through the gateway. */
  viaGateway(opts?: V1Options): Promise<V1Connection>;
  /** The same client straight to the server, for comparison. */
  direct(opts?: V1Options): Promise<V1Connection>;
  /** Client notifications the server has received, parsed. */
  received(): Array<{ method: string; params?: Record<string, unknown> }>;
  /** Requests the server has received (stdio only: the tap sees everything; empty for http). */
  requests(): Array<{ id: number | string; method: string; params?: Record<string, unknown> }>;
}

const withCaps = (opts: V1Options = {}): V1Options => ({ capabilities: CAPABILITIES, ...opts });

const upstreams: Upstream[] = [
  {
    kind: 'stdio',
    viaGateway: (opts) => track(connectHttp(gw.endpoint('stdio'), withCaps(opts))),
    direct: (opts) => track(connectStdio(npmServerCommand('everything'), withCaps(opts))),
    received: () => tapLines().filter((m) => !('id' in m)) as Array<{ method: string; params?: Record<string, unknown> }>,
    requests: () => tapLines().filter((m) => 'id' in m && 'method' in m) as Array<{ id: number; method: string; params?: Record<string, unknown> }>,
  },
  {
    kind: 'http',
    viaGateway: (opts) => track(connectHttp(gw.endpoint('http'), withCaps(opts))),
    direct: (opts) => track(connectHttp(everythingHttp.url, withCaps(opts))),
    received: () =>
      everythingHttp
        .output()
        .split('\n')
        .filter((l) => l.startsWith('received '))
        .map((l) => JSON.parse(l.slice('received '.length)) as { method: string; params?: Record<string, unknown> }),
    requests: () => [],
  },
];

function tapLines(): Array<Record<string, unknown>> {
  if (!existsSync(tapLog)) return [];
  return readFileSync(tapLog, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The gateway's session behind a client connection. */
function gatewaySession(conn: V1Connection) {
  const id = conn.transport?.sessionId;
  assert.ok(id, 'the gateway assigned a session id');
  const s = gw.gateway.sessions.get(id);
  assert.ok(s, 'the gateway knows the session');
  return s;
}

for (const up of upstreams) {
  describe(`through the gateway to a ${up.kind} upstream`, () => {
    test('initialize passes the server’s serverInfo, capabilities and instructions through unchanged', async () => {
      const via = await up.viaGateway();
      const direct = await up.direct();
      assert.deepEqual(via.client.getServerVersion(), direct.client.getServerVersion());
      assert.equal(via.client.getServerVersion()?.name, 'mcp-servers/everything');
      assert.deepEqual(via.client.getServerCapabilities(), direct.client.getServerCapabilities());
      assert.equal(via.client.getInstructions(), direct.client.getInstructions());
      assert.ok((via.client.getInstructions() ?? '').length > 0, 'server-everything sends instructions');
      await release(via);
      await release(direct);
    });

    test('tools/list returns exactly the server’s tools, schemas and annotations included', async () => {
      const via = await up.viaGateway();
      const direct = await up.direct();
      const [a, b] = await Promise.all([via.client.listTools(), direct.client.listTools()]);
      assert.deepEqual(a.tools, b.tools);
      const names = a.tools.map((t) => t.name);
      for (const n of ['echo', 'get-sum', 'trigger-long-running-operation', 'trigger-sampling-request', 'trigger-elicitation-request']) {
        assert.ok(names.includes(n), `${n} is listed`);
      }
      await release(via);
      await release(direct);
    });

    test('tools/call returns the server’s result unchanged, structured content and images included', async () => {
      const via = await up.viaGateway();
      const direct = await up.direct();
      const echo = await via.client.callTool({ name: 'echo', arguments: { message: 'héllo ✓ "quoted"\nnewline' } });
      assert.deepEqual(echo, await direct.client.callTool({ name: 'echo', arguments: { message: 'héllo ✓ "quoted"\nnewline' } }));
      assert.equal(textOf(echo), 'Echo: héllo ✓ "quoted"\nnewline');
      const sum = await via.client.callTool({ name: 'get-sum', arguments: { a: 19, b: 23 } });
      assert.match(textOf(sum), /42/);
      const structured = await via.client.callTool({ name: 'get-structured-content', arguments: { location: 'New York' } });
      assert.deepEqual(structured, await direct.client.callTool({ name: 'get-structured-content', arguments: { location: 'New York' } }));
      assert.ok(structured.structuredContent, 'structuredContent passes through');
      const image = await via.client.callTool({ name: 'get-tiny-image', arguments: {} });
      assert.deepEqual(image, await direct.client.callTool({ name: 'get-tiny-image', arguments: {} }));
      assert.ok((image.content as Array<{ type: string }>).some((c) => c.type === 'image'));
      // A tool error is the server's own answer, passed through as a result or an error alike.
      const bad = await via.client.callTool({ name: 'get-sum', arguments: { a: 'not a number' } }).then(
        (r) => ({ result: r }),
        (e: Error) => ({ error: e.message }),
      );
      const badDirect = await direct.client.callTool({ name: 'get-sum', arguments: { a: 'not a number' } }).then(
        (r) => ({ result: r }),
        (e: Error) => ({ error: e.message }),
      );
      assert.deepEqual(bad, badDirect);
      await release(via);
      await release(direct);
    });

    test('resources are listed and read, and resource templates listed, as the server gives them', async () => {
      const via = await up.viaGateway();
      const direct = await up.direct();
      const listed = await via.client.listResources();
      assert.deepEqual(listed, await direct.client.listResources());
      assert.ok(listed.resources.length > 0);
      const first = listed.resources[0]!;
      const read = await via.client.readResource({ uri: first.uri });
      assert.deepEqual(read, await direct.client.readResource({ uri: first.uri }));
      assert.equal(read.contents[0]?.uri, first.uri);
      const templates = await via.client.listResourceTemplates();
      assert.deepEqual(templates, await direct.client.listResourceTemplates());
      assert.ok(templates.resourceTemplates.some((t) => t.uriTemplate === 'demo://resource/dynamic/text/{resourceId}'));
      const dynamic = await via.client.readResource({ uri: 'demo://resource/dynamic/text/7' });
      assert.match(String((dynamic.contents[0] as { text?: string }).text), /^Resource 7: /);
      // An unknown resource is the server's error, with the server's code.
      const missing = await via.client.readResource({ uri: 'demo://resource/nope' }).then(
        () => undefined,
        (e: { code?: number }) => e.code,
      );
      const missingDirect = await direct.client.readResource({ uri: 'demo://resource/nope' }).then(
        () => undefined,
        (e: { code?: number }) => e.code,
      );
      assert.equal(missing, missingDirect);
      assert.notEqual(missing, undefined);
      await release(via);
      await release(direct);
    });

    test('prompts are listed and got with their arguments as the server gives them', async () => {
      const via = await up.viaGateway();
      const direct = await up.direct();
      const prompts = await via.client.listPrompts();
      assert.deepEqual(prompts, await direct.client.listPrompts());
      assert.ok(prompts.prompts.some((p) => p.name === 'simple-prompt'));
      const simple = await via.client.getPrompt({ name: 'simple-prompt' });
      assert.deepEqual(simple, await direct.client.getPrompt({ name: 'simple-prompt' }));
      const team = await via.client.getPrompt({ name: 'completable-prompt', arguments: { department: 'Sales', name: 'Eve' } });
      assert.match(JSON.stringify(team.messages), /Please promote Eve to the head of the Sales team/);
      await release(via);
      await release(direct);
    });

    test('completion/complete answers prompt arguments and resource template variables', async () => {
      const via = await up.viaGateway();
      const dept = await via.client.complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'S' } });
      assert.deepEqual(dept.completion.values, ['Sales', 'Support']);
      const person = await via.client.complete({
        ref: { type: 'ref/prompt', name: 'completable-prompt' },
        argument: { name: 'name', value: '' },
        context: { arguments: { department: 'Engineering' } },
      });
      assert.deepEqual(person.completion.values, ['Alice', 'Bob', 'Charlie']);
      const id = await via.client.complete({
        ref: { type: 'ref/resource', uri: 'demo://resource/dynamic/text/{resourceId}' },
        argument: { name: 'resourceId', value: '12' },
      });
      assert.deepEqual(id.completion.values, ['12']);
      await release(via);
    });

    test('ping is answered', async () => {
      const via = await up.viaGateway();
      assert.deepEqual(await via.client.ping(), {});
      await release(via);
    });

    test('logging/setLevel is accepted and the server’s log notifications reach the client', async () => {
      const via = await up.viaGateway();
      const logs: LoggingMessageNotification['params'][] = [];
      via.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => void logs.push(n.params));
      assert.deepEqual(await via.client.setLoggingLevel('debug'), {});
      // Logs outside a call travel on the session's GET stream, which the client opens after initialize.
      if (up.kind === 'http') await waitFor(() => gatewaySession(via).listener !== undefined, 'the GET stream');
      const on = await via.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
      assert.match(textOf(on), /Started simulated/);
      try {
        await waitFor(() => logs.length > 0, 'a log notification');
        assert.match(String(logs[0]!.data), /-level message|level-message/);
        assert.ok(['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'].includes(logs[0]!.level));
      } finally {
        const off = await via.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
        assert.match(textOf(off), /Stopped simulated/);
      }
      await release(via);
    });

    test('progress notifications reach the caller with its own progress token', async () => {
      const via = await up.viaGateway();
      const seen: Array<{ progress: number; total?: number }> = [];
      const result = await via.client.callTool(
        { name: 'trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } },
        CallToolResultSchema,
        { onprogress: (p) => void seen.push(p) },
      );
      assert.match(textOf(result), /Long running operation completed/);
      assert.deepEqual(
        seen.map((p) => [p.progress, p.total]),
        [
          [1, 3],
          [2, 3],
          [3, 3],
        ],
      );
      await release(via);
    });

    test('two sessions using the same progress token concurrently each get only their own progress', async () => {
      const a = await up.viaGateway({ name: 'client-a' });
      const b = await up.viaGateway({ name: 'client-b' });
      const got = new Map<Client, ProgressNotification['params'][]>([
        [a.client, []],
        [b.client, []],
      ]);
      for (const c of [a.client, b.client]) c.setNotificationHandler(ProgressNotificationSchema, (n) => void got.get(c)!.push(n.params));
      const call = (c: Client, steps: number) =>
        c.request(
          {
            method: 'tools/call',
            params: { name: 'trigger-long-running-operation', arguments: { duration: 0.6, steps }, _meta: { progressToken: 'same-token' } },
          },
          CallToolResultSchema,
        );
      const [ra, rb] = await Promise.all([call(a.client, 3), call(b.client, 6)]);
      assert.match(textOf(ra), /Steps: 3\./);
      assert.match(textOf(rb), /Steps: 6\./);
      assert.deepEqual(
        got.get(a.client)!.map((p) => [p.progressToken, p.progress, p.total]),
        [1, 2, 3].map((i) => ['same-token', i, 3]),
      );
      assert.deepEqual(
        got.get(b.client)!.map((p) => [p.progressToken, p.progress, p.total]),
        [1, 2, 3, 4, 5, 6].map((i) => ['same-token', i, 6]),
      );
      await release(a);
      await release(b);
    });

    test('a call cancelled by the client is cancelled at the server, and the gateway stays healthy', async () => {
      const via = await up.viaGateway();
      const ac = new AbortController();
      const reason = `cancelled-by-test-${up.kind}`;
      const started = Date.now();
      const call = via.client.callTool(
        { name: 'trigger-long-running-operation', arguments: { duration: 10, steps: 100 } },
        CallToolResultSchema,
        { signal: ac.signal, onprogress: () => ac.abort(reason) },
      );
      await assert.rejects(call);
      assert.ok(Date.now() - started < 3000, 'the cancelled call answered promptly');
      await waitFor(
        () => up.received().some((m) => m.method === 'notifications/cancelled' && m.params?.reason === reason),
        'notifications/cancelled at the server',
      );
      if (up.kind === 'stdio') {
        // The tap sees the server's side: the cancellation names the id the call was sent under.
        const sent = up.requests().filter((r) => r.method === 'tools/call' && (r.params?.arguments as { steps?: number })?.steps === 100);
        const cancelled = up.received().find((m) => m.method === 'notifications/cancelled' && m.params?.reason === reason);
        assert.equal(cancelled?.params?.requestId, sent.at(-1)?.id);
      }
      // The gateway no longer counts the call as in flight, and the session keeps working.
      await waitFor(() => gatewaySession(via).inflight === 0, 'the cancelled call to leave the gateway', 2000);
      assert.match(textOf(await via.client.callTool({ name: 'echo', arguments: { message: 'still here' } })), /still here/);
      // A cancelled call left behind would make another session's server request look ambiguous
      // on a shared stdio server; the other client's sampling must still reach it.
      const other = await up.viaGateway({
        setup: (c) =>
          c.setRequestHandler(CreateMessageRequestSchema, async () => ({ model: 'm', role: 'assistant', content: { type: 'text', text: 'ok' } })),
      });
      assert.match(textOf(await other.client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'x' } })), /LLM sampling result/);
      await release(other);
      await release(via);
    });

    test('a sampling request from the server reaches the calling client and its answer reaches the server', async () => {
      const asked: unknown[] = [];
      const via = await up.viaGateway({
        setup: (c) =>
          c.setRequestHandler(CreateMessageRequestSchema, async (req) => {
            asked.push(req.params);
            return { model: 'test-model', role: 'assistant', content: { type: 'text', text: `sampled ${req.params.maxTokens}` } };
          }),
      });
      const result = await via.client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'Say hi', maxTokens: 17 } });
      assert.equal(asked.length, 1);
      assert.match(JSON.stringify(asked[0]), /Say hi/);
      assert.match(textOf(result), /LLM sampling result/);
      assert.match(textOf(result), /sampled 17/);
      assert.match(textOf(result), /test-model/);
      await release(via);
    });

    test('an elicitation request from the server reaches the calling client and its answer reaches the server', async () => {
      const via = await up.viaGateway({
        setup: (c) =>
          c.setRequestHandler(ElicitRequestSchema, async (req) => {
            assert.match(String(req.params.message), /Please provide inputs/);
            return { action: 'accept', content: { name: 'Ada Lovelace', check: true } };
          }),
      });
      const result = await via.client.callTool({ name: 'trigger-elicitation-request', arguments: {} });
      assert.match(textOf(result), /User provided the requested information/);
      assert.match(textOf(result), /- Name: Ada Lovelace/);
      assert.match(textOf(result), /- Agreed to terms: true/);
      await release(via);
    });

    test('resource update notifications for a subscribed resource reach the subscriber', async () => {
      const via = await up.viaGateway();
      const uri = 'demo://resource/dynamic/text/1';
      const updates: string[] = [];
      via.client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => void updates.push(n.params.uri));
      // The server sends updates outside any call: on HTTP they travel on the session's GET stream.
      if (up.kind === 'http') await waitFor(() => gatewaySession(via).listener !== undefined, 'the GET stream');
      assert.deepEqual(await via.client.subscribeResource({ uri }), {});
      const on = await via.client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
      try {
        assert.match(textOf(on), /Started simulated resource updated notifications/);
        await waitFor(() => updates.includes(uri), 'notifications/resources/updated');
      } finally {
        await via.client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
        await via.client.unsubscribeResource({ uri });
      }
      await release(via);
    });
  });
}
