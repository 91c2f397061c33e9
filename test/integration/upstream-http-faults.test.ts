/**
 * A remote (Streamable HTTP) upstream that misbehaves at the HTTP level: the call it breaks gets
 * an error that says what happened, and the gateway keeps serving the session. The upstream is a
 * raw TCP server, so that it can send exactly the bytes no well-behaved HTTP library would.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';

interface Rpc {
  id?: number | string;
  method?: string;
  params?: { name?: string; arguments?: { text?: string } };
}

/** What the upstream does with a tools/call of each tool name. */
const BREAKS: Record<string, (socket: net.Socket) => void> = {
  // Both framings at once: a response that could be read two ways (request smuggling's shape).
  ambiguous: (socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'),
  not_http: (socket) => socket.write('SSH-2.0-OpenSSH_9.6\r\n\r\n'),
  half_answer: (socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"jsonrpc":"2.0",'),
  hang_up: (socket) => socket.destroy(),
};

function json(socket: net.Socket, body: unknown, extra = ''): void {
  const text = JSON.stringify(body);
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${extra}\r\n${text}`);
}

/** A minimal MCP server over raw HTTP/1.1: initialize, tools/list, an echo tool, and the tools in BREAKS. */
function startRawUpstream(): Promise<{ url: string; connections: () => number; calls: Map<string, number>; close: () => Promise<void> }> {
  let connections = 0;
  const calls = new Map<string, number>();
  const server = net.createServer((socket) => {
    connections++;
    let buf = Buffer.alloc(0);
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end);
        const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = buf.toString('utf8', end + 4, end + 4 + length);
        buf = buf.subarray(end + 4 + length);
        const msg = (body === '' ? {} : JSON.parse(body)) as Rpc;
        if (msg.method === 'tools/call') calls.set(msg.params?.name ?? '', (calls.get(msg.params?.name ?? '') ?? 0) + 1);
        if (msg.method === 'initialize') {
          json(socket, { jsonrpc: '2.0', id: msg.id, result: { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'raw', version: '1' } } }, 'Mcp-Session-Id: raw-session\r\n');
        } else if (msg.id === undefined) {
          socket.write('HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n');
        } else if (msg.method === 'tools/call' && BREAKS[msg.params?.name ?? ''] !== undefined) {
          BREAKS[msg.params!.name!]!(socket);
        } else if (msg.method === 'tools/call') {
          json(socket, { jsonrpc: '2.0', id: msg.id, result: { content: [{ type: 'text', text: msg.params?.arguments?.text ?? '' }] } });
        } else {
          json(socket, { jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'not here' } });
        }
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}/mcp`,
        connections: () => connections,
        calls,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}

describe('an HTTP upstream that breaks HTTP', () => {
  let upstream: Awaited<ReturnType<typeof startRawUpstream>>;
  let gw: TestGateway;
  let sessionId: string;
  let seq = 0;

  async function rpc(method: string, params: unknown): Promise<{ result?: { content?: Array<{ text?: string }> }; error?: { code: number; message: string } }> {
    const res = await fetch(gw.endpoint('raw'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++seq, method, params }),
    });
    assert.equal(res.status, 200);
    return (await res.json()) as never;
  }

  const echo = async (text: string) => (await rpc('tools/call', { name: 'echo', arguments: { text } })).result?.content?.[0]?.text;

  before(async () => {
    upstream = await startRawUpstream();
    gw = await startTestGateway(`
servers:
  raw:
    url: ${yamlValue(upstream.url)}
    timeout: 5s
    policy: ${yamlValue({ version: '1', default: 'allow' })}
`);
    const init = await fetch(gw.endpoint('raw'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    assert.equal(init.status, 200);
    sessionId = init.headers.get('mcp-session-id')!;
    await fetch(gw.endpoint('raw'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sessionId },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
  });

  after(async () => {
    await gw?.stop();
    await upstream?.close();
  });

  const cases: Array<[tool: string, says: RegExp]> = [
    ['ambiguous', /upstream server 'raw': invalid HTTP response: both Transfer-Encoding and Content-Length/],
    ['not_http', /upstream server 'raw': invalid HTTP response: invalid status line 'SSH-2\.0-OpenSSH_9\.6'/],
    ['half_answer', /upstream server 'raw': the server closed the connection in the middle of its response/],
    ['hang_up', /upstream server 'raw': the server closed the connection without answering/],
  ];
  for (const [tool, says] of cases) {
    it(`answers a call whose answer is '${tool}' with an error saying so, and serves the next call on a new connection`, async () => {
      assert.equal(await echo('before'), 'before');
      const connectionsBefore = upstream.connections();
      const answer = await rpc('tools/call', { name: tool, arguments: {} });
      assert.equal(answer.result, undefined);
      assert.match(answer.error?.message ?? '', says);
      assert.doesNotMatch(answer.error?.message ?? '', /unreachable/, 'the server was reached');
      assert.equal(await echo('after'), 'after');
      assert.ok(upstream.connections() > connectionsBefore, 'the broken connection was not used again');
      // Not even the hang-up on a reused connection is sent again: the server may have acted on it.
      assert.equal(upstream.calls.get(tool), 1, 'the call reached the server once');
    });
  }
});
