/**
 * Safety at the door: what the Streamable HTTP listener refuses before anything reaches a policy or
 * an upstream (raw HTTP, so every header is under the test's control); graceful shutdown, in process
 * and as a real `policylayer serve` process; and upstream credentials, which must reach the
 * upstream and nothing else (not the log, and never replaced by the client's own).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import {
  EVERYTHING_BIN,
  MCP_HEADERS,
  MEMORY_BIN,
  POLICYLAYER_BIN,
  ROOT,
  answerOf,
  captureLogger,
  childrenByKind,
  isAlive,
  killGroup,
  openSession,
  raw,
  sessionHeaders,
  waitFor,
} from '../helpers/safety-helpers.js';
import { startRecordingServer, type FixtureHttpServer } from '../fixtures/http-servers.js';
import type { StdioUpstream } from '../../src/transport/upstream/stdio.js';
import { textOf } from '../helpers/clients.js';

const MAX_BODY = 4096;

const toolsList = (id: number) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/list' });
const toolCall = (id: number, name: string, args: Record<string, unknown>) =>
  JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });


function connectClient(endpoint: string, headers?: Record<string, string>): Promise<Client> {
  const client = new Client({ name: 'policylayer-test', version: '0' });
  const transport = new StreamableHTTPClientTransport(new URL(endpoint), headers ? { requestInit: { headers } } : undefined);
  return client.connect(transport).then(() => client);
}

describe('the HTTP listener', () => {
  let gw: TestGateway;
  let tmp: string;
  let memoryFile: string;
  let memory: string;
  let everything: string;

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'pl-safety-'));
    memoryFile = path.join(tmp, 'memory.jsonl');
    gw = await startTestGateway(`
limits:
  max_body_bytes: ${MAX_BODY}
servers:
  memory:
    command: ${yamlValue([process.execPath, MEMORY_BIN])}
    env: { MEMORY_FILE_PATH: ${yamlValue(memoryFile)} }
    policy: ${yamlValue({ version: '1', default: 'allow', tools: { delete_entities: { action: 'deny', reason: 'the graph is append-only' } } })}
  everything:
    command: ${yamlValue([process.execPath, EVERYTHING_BIN])}
    policy: ${yamlValue({ version: '1', default: 'allow' })}
`);
    memory = gw.endpoint('memory');
    everything = gw.endpoint('everything');
  });

  after(async () => {
    await gw?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('answers /healthz with 200 while it runs', async () => {
    const res = await raw(`${gw.url}/healthz`, { method: 'GET' });
    assert.equal(res.status, 200);
    assert.equal(res.json.status, 'ok');
  });

  it('answers 404 for a path outside /mcp/', async () => {
    const res = await raw(`${gw.url}/nowhere`, { headers: { ...MCP_HEADERS }, body: toolsList(1) });
    assert.equal(res.status, 404);
  });

  it('answers 404 for a server name that is not configured', async () => {
    const res = await raw(`${gw.url}/mcp/no-such-server`, { headers: { ...MCP_HEADERS }, body: toolsList(1) });
    assert.equal(res.status, 404);
    assert.match(res.json.error.message, /no-such-server/);
  });

  it('answers 404, not 500, for a server name that is not valid percent-encoding', async () => {
    const res = await raw(`${gw.url}/mcp/%E0%A4%A`, { headers: { ...MCP_HEADERS }, body: toolsList(1) });
    assert.equal(res.status, 404);
    assert.equal(res.json.error.code, -32600);
  });

  it('refuses a Host header that names a host it was not told to allow with 403', async () => {
    const res = await raw(memory, { headers: { ...MCP_HEADERS, host: 'evil.example:4100' }, body: toolsList(1) });
    assert.equal(res.status, 403);
    assert.match(res.json.error.message, /Host/);
  });

  it('refuses a request from an Origin it was not told to allow with 403', async () => {
    const res = await raw(memory, { headers: { ...MCP_HEADERS, origin: 'https://evil.example' }, body: toolsList(1) });
    assert.equal(res.status, 403);
    assert.match(res.json.error.message, /Origin/);
  });

  it('accepts an initialize from a localhost origin on any port', async () => {
    const res = await raw(memory, {
      headers: { ...MCP_HEADERS, origin: 'http://localhost:5173' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'browser', version: '0' } },
      }),
    });
    assert.equal(res.status, 200);
    assert.equal(typeof res.headers['mcp-session-id'], 'string');
    assert.equal(res.json.result.serverInfo.name, 'memory-server');
  });

  it('refuses a body over limits.max_body_bytes with 413 when Content-Length declares it', async () => {
    const sid = await openSession(memory);
    const big = toolCall(2, 'create_entities', { entities: [{ name: 'x'.repeat(MAX_BODY), entityType: 't', observations: [] }] });
    const res = await raw(memory, { headers: sessionHeaders(sid), body: big });
    assert.equal(res.status, 413);
    assert.match(res.json.error.message, /exceeds the limit of 4096 bytes/);
  });

  it('refuses a chunked body over limits.max_body_bytes with 413 without Content-Length', async () => {
    const sid = await openSession(memory);
    const chunk = Buffer.from(' '.repeat(1024));
    // Valid JSON padded with whitespace, sent in 1 KiB chunks with no Content-Length: only counting stops it.
    const body = Readable.from((function* () {
      yield Buffer.from(toolsList(3));
      for (let i = 0; i < 8; i++) yield chunk;
    })());
    const res = await raw(memory, { headers: sessionHeaders(sid), body });
    assert.equal(res.status, 413);
    assert.match(res.json.error.message, /exceeds the limit/);
  });

  it('answers a call the same whether it comes plainly, on the fast lane, or chunked, through node:http', async () => {
    const sid = await openSession(memory);
    const plain = await raw(memory, { headers: sessionHeaders(sid), body: toolsList(4) });
    const chunked = await raw(memory, { headers: sessionHeaders(sid), body: Readable.from([Buffer.from(toolsList(4))]) });
    assert.equal(plain.status, 200);
    assert.equal(chunked.status, plain.status);
    assert.equal(chunked.headers['content-type'], plain.headers['content-type']);
    assert.deepEqual(chunked.json, plain.json);
    assert.ok(Array.isArray(plain.json.result.tools) && plain.json.result.tools.length > 0);
  });

  it('answers malformed JSON with 400 and JSON-RPC error -32700', async () => {
    const res = await raw(memory, { headers: { ...MCP_HEADERS }, body: '{"jsonrpc": "2.0", "id": 1, "method": ' });
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, -32700);
    assert.equal(res.json.id, null);
  });

  it('answers JSON that is not a JSON-RPC message with 400 and -32600', async () => {
    const res = await raw(memory, { headers: { ...MCP_HEADERS }, body: JSON.stringify({ hello: 'world', id: 7 }) });
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, -32600);
    assert.equal(res.json.id, 7);
  });

  it('refuses a JSON-RPC batch with -32600 and none of its calls reach the upstream', async () => {
    const sid = await openSession(memory);
    const batch = `[${toolCall(10, 'create_entities', { entities: [{ name: 'batch-probe', entityType: 'probe', observations: ['x'] }] })},${toolCall(11, 'delete_entities', { entityNames: ['batch-probe'] })}]`;
    const res = await raw(memory, { headers: sessionHeaders(sid), body: batch });
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, -32600);
    assert.match(res.json.error.message, /batch/);

    // The denied call inside the batch was never evaluated, and the allowed one never ran.
    const graph = answerOf(await raw(memory, { headers: sessionHeaders(sid), body: toolCall(12, 'read_graph', {}) }));
    assert.equal(graph.result.isError, undefined);
    assert.doesNotMatch(JSON.stringify(graph.result), /batch-probe/);
    assert.equal(existsSync(memoryFile), false, 'the memory server never wrote its file');
    // The same denied tool sent alone is refused by the policy, as a tool result.
    const denied = answerOf(await raw(memory, { headers: sessionHeaders(sid), body: toolCall(13, 'delete_entities', { entityNames: ['batch-probe'] }) }));
    assert.equal(denied.result.isError, true);
    assert.match(denied.result.content[0].text, /append-only/);
  });

  it('answers 400 to a request other than initialize that carries no Mcp-Session-Id', async () => {
    const res = await raw(memory, { headers: { ...MCP_HEADERS }, body: toolsList(4) });
    assert.equal(res.status, 400);
    assert.match(res.json.error.message, /Mcp-Session-Id/);
    assert.equal(res.json.id, 4);
  });

  it('answers 404 to an Mcp-Session-Id it never issued', async () => {
    const res = await raw(memory, { headers: sessionHeaders('00000000-0000-4000-8000-000000000000'), body: toolsList(5) });
    assert.equal(res.status, 404);
    assert.equal(res.json.id, 5);
  });

  it('ends a session on DELETE, after which its id answers 404', async () => {
    const sid = await openSession(memory);
    const ok = await raw(memory, { headers: sessionHeaders(sid), body: toolsList(6) });
    assert.equal(ok.status, 200);
    const del = await raw(memory, { method: 'DELETE', headers: sessionHeaders(sid) });
    assert.equal(del.status, 200);
    const later = await raw(memory, { headers: sessionHeaders(sid), body: toolsList(7) });
    assert.equal(later.status, 404);
    const again = await raw(memory, { method: 'DELETE', headers: sessionHeaders(sid) });
    assert.equal(again.status, 404);
  });

  it('refuses an MCP-Protocol-Version it does not speak with 400', async () => {
    const sid = await openSession(memory);
    const res = await raw(memory, { headers: { ...sessionHeaders(sid), 'mcp-protocol-version': '1999-01-01' }, body: toolsList(8) });
    assert.equal(res.status, 400);
    assert.match(res.json.error.message, /1999-01-01/);
  });

  it('refuses a POST whose Content-Type is not application/json with 415', async () => {
    const sid = await openSession(memory);
    const res = await raw(memory, { headers: { ...sessionHeaders(sid), 'content-type': 'text/plain' }, body: toolsList(9) });
    assert.equal(res.status, 415);
  });

  it('answers 406 to a GET that does not accept text/event-stream', async () => {
    const sid = await openSession(memory);
    const res = await raw(memory, { method: 'GET', headers: { ...sessionHeaders(sid), accept: 'application/json' } });
    assert.equal(res.status, 406);
  });

  it('answers 404 when a session id from one server is used on another', async () => {
    const sid = await openSession(memory);
    const own = await raw(memory, { headers: sessionHeaders(sid), body: toolsList(20) });
    assert.equal(own.status, 200);
    const other = await raw(everything, { headers: sessionHeaders(sid), body: toolsList(21) });
    assert.equal(other.status, 404);
    const del = await raw(everything, { method: 'DELETE', headers: sessionHeaders(sid) });
    assert.equal(del.status, 404);
    // The session is untouched on its own server.
    assert.equal((await raw(memory, { headers: sessionHeaders(sid), body: toolsList(22) })).status, 200);
  });
});

describe('graceful shutdown', () => {
  const slowPolicy = { version: '1', default: 'allow' };

  it('lets a call in flight finish with its real result, answers a request that arrives while draining with 503, refuses new connections, and leaves no upstream process', async () => {
    const gw = await startTestGateway(`
servers:
  everything:
    command: ${yamlValue([process.execPath, EVERYTHING_BIN])}
    policy: ${yamlValue(slowPolicy)}
`);
    let pid: number | undefined;
    try {
      const client = await connectClient(gw.endpoint('everything'));
      pid = (gw.gateway.servers.get('everything')!.upstream as StdioUpstream).pid;
      assert.ok(pid !== undefined && isAlive(pid));

      // An initialize whose body is still arriving when the drain begins: its connection is busy, not idle.
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      const init = JSON.stringify({
        jsonrpc: '2.0',
        id: 'late',
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'late', version: '0' } },
      });
      const late = raw(gw.endpoint('everything'), {
        headers: { ...MCP_HEADERS },
        body: Readable.from(
          (async function* () {
            yield Buffer.from(init.slice(0, 10));
            await released;
            yield Buffer.from(init.slice(10));
          })(),
        ),
      });
      const slow = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 2 } });
      assert.ok(await waitFor(() => [...gw.gateway.sessions.values()].some((s) => s.inflight > 0)), 'the call reached the gateway (and the late request its headers, sent before it)');

      const stopping = gw.stop();
      release();
      const lateAnswer = await late;
      assert.equal(lateAnswer.status, 503);
      assert.equal(lateAnswer.json.id, 'late');
      assert.match(lateAnswer.json.error.message, /shutting down/);

      const refused = await raw(gw.endpoint('everything'), { headers: { ...MCP_HEADERS }, body: toolsList(1) }).then(
        (r) => r.status,
        (err: Error & { code?: string }) => err.code ?? err.message,
      );
      assert.ok(refused === 503 || refused === 'ECONNREFUSED' || refused === 'UND_ERR_SOCKET', `new request refused (got ${refused})`);

      const result = await slow;
      assert.equal(result.isError, undefined);
      assert.match((result.content as Array<{ text: string }>)[0]!.text, /Long running operation completed/);
      await stopping;
      assert.ok(await waitFor(() => !isAlive(pid!)), `upstream pid ${pid} is gone`);
      await client.close().catch(() => {});
    } finally {
      await gw.stop();
      killGroup(pid);
    }
  });

  describe('of a real `policylayer serve` process', () => {
    let tmp: string;
    let proc: ChildProcess | undefined;
    let upstreamPids: number[] = [];

    before(() => {
      tmp = mkdtempSync(path.join(tmpdir(), 'pl-serve-'));
    });
    after(() => {
      killGroup(proc?.pid);
      for (const p of upstreamPids) killGroup(p);
      rmSync(tmp, { recursive: true, force: true });
    });

    it('drains the call in flight on SIGTERM, exits 0 and leaves no child process', async () => {
      const config = path.join(tmp, 'gateway.yaml');
      writeFileSync(
        config,
        `listen: 127.0.0.1:0
servers:
  everything:
    command: ${yamlValue([process.execPath, EVERYTHING_BIN])}
    policy: ${yamlValue(slowPolicy)}
`,
      );
      proc = spawn(process.execPath, [POLICYLAYER_BIN, 'serve', '-c', config], {
        cwd: ROOT,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, POLICYLAYER_LOG_LEVEL: 'warn' },
      });
      let stderr = '';
      proc.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const exited = new Promise<number | null>((r) => proc!.once('exit', (code) => r(code)));
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        proc!.stdout!.setEncoding('utf8').on('data', (c: string) => {
          out += c;
          const m = /PolicyLayer listening on (http:\/\/\S+)/.exec(out);
          if (m) resolve(m[1]!);
        });
        void exited.then((code) => reject(new Error(`serve exited with ${code} before listening: ${stderr}`)));
      });

      const client = await connectClient(`${url}/mcp/everything`);
      // Its children: the upstream server, and the reaper that would end it if the gateway died.
      const { servers, reapers } = childrenByKind(proc.pid!);
      upstreamPids = servers;
      assert.equal(upstreamPids.length, 1, 'one upstream child process');
      assert.equal(reapers.length, 1, 'one reaper');
      upstreamPids.push(...reapers);
      let progressed!: () => void;
      const firstProgress = new Promise<void>((r) => (progressed = r));
      const slow = client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 2 } }, undefined, {
        onprogress: () => progressed(),
      });
      await firstProgress; // the upstream is working on it now
      process.kill(proc.pid!, 'SIGTERM');

      const result = await slow;
      assert.match((result.content as Array<{ text: string }>)[0]!.text, /Long running operation completed/);
      assert.equal(await exited, 0, `serve exits 0 (stderr: ${stderr})`);
      for (const p of upstreamPids) assert.ok(await waitFor(() => !isAlive(p)), `upstream pid ${p} is gone`);
      await client.close().catch(() => {});
    });
  });
});

describe('upstream credentials', () => {
  let upstream: FixtureHttpServer;
  let gw: TestGateway;
  const log = captureLogger('trace');
  const SECRET = 'pl-test-secret-7c1e9a44d2';
  const KEY = 'pl-test-key-55ab01';

  before(async () => {
    upstream = await startRecordingServer();
    gw = await startTestGateway(
      `
servers:
  remote:
    url: ${yamlValue(upstream.url)}
    headers:
      Authorization: "Bearer \${REMOTE_TOKEN}"
      X-Api-Key: "\${REMOTE_KEY}"
    policy: ${yamlValue({ version: '1', default: 'allow', tools: { delete_everything: { action: 'deny', reason: 'never' } } })}
  bare:
    url: ${yamlValue(upstream.url)}
    policy: ${yamlValue({ version: '1', default: 'allow' })}
  refusing:
    url: ${yamlValue(upstream.url.replace(/\/mcp$/, '/refuse'))}
    headers: { Authorization: "Bearer \${REMOTE_TOKEN}" }
    policy: ${yamlValue({ version: '1', default: 'allow' })}
`,
      { env: { REMOTE_TOKEN: SECRET, REMOTE_KEY: KEY }, logger: log.logger },
    );
  });

  after(async () => {
    await gw?.stop();
    await upstream?.close();
  });

  it('sends the configured headers with ${ENV} resolved, never the client Authorization, and never logs the credential', async () => {
    const client = await connectClient(gw.endpoint('remote'), { authorization: 'Bearer client-own-token', 'x-api-key': 'client-own-key' });
    const tools = await client.listTools();
    assert.ok(tools.tools.some((t) => t.name === 'echo'));
    const echoed = await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
    assert.deepEqual(echoed.content, [{ type: 'text', text: 'hi' }]);
    const denied = await client.callTool({ name: 'delete_everything', arguments: {} });
    assert.equal(denied.isError, true);
    await client.close();

    assert.ok(upstream.requests.length >= 3, 'the upstream saw the session');
    for (const r of upstream.requests) {
      assert.equal(r.headers.authorization, `Bearer ${SECRET}`, `${r.method} carried the configured credential`);
      assert.equal(r.headers['x-api-key'], KEY);
      assert.doesNotMatch(JSON.stringify(r.headers), /client-own/);
    }
    assert.equal(upstream.calls.get('delete_everything'), undefined);
    assert.ok(log.lines.length > 0, 'the gateway logged something');
    assert.ok(!log.text().includes(SECRET), 'the credential never appears in the log');
    assert.ok(!log.text().includes(KEY), 'the API key never appears in the log');
  });

  it('never forwards the client Authorization header to an upstream configured without one', async () => {
    const before = upstream.requests.length;
    const client = await connectClient(gw.endpoint('bare'), { authorization: 'Bearer client-own-token' });
    assert.equal(textOf(await client.callTool({ name: 'add', arguments: { a: 1, b: 2 } })), '3');
    await client.close();
    const seen = upstream.requests.slice(before);
    assert.ok(seen.length >= 3);
    for (const r of seen) assert.equal(r.headers.authorization, undefined, `${r.method} carried no Authorization`);
  });

  it('keeps the credential out of the log and out of the client error when the upstream refuses it and quotes it back', async () => {
    const err = await connectClient(gw.endpoint('refusing')).then(
      () => null,
      (e: Error) => e,
    );
    assert.ok(err, 'initialize failed');
    assert.match(err.message, /401/);
    assert.ok(!err.message.includes(SECRET), `the client error does not quote the credential: ${err.message}`);
    assert.ok(upstream.requests.some((r) => r.url.startsWith('/refuse') && r.headers.authorization === `Bearer ${SECRET}`));
    assert.ok(!log.text().includes(SECRET), 'the credential never appears in the log');
  });
});
