/**
 * A minimal MCP server over Streamable HTTP on plain node:http, for the benchmark: sessions,
 * `application/json` answers only (no SSE), 202 for notifications. No SDK, so that what is
 * measured through the gateway is the gateway.
 *
 * Usage: node dist/bench/upstream-http.js [port]   (binds 127.0.0.1; prints `listening <url>`)
 * Exits when its stdin closes, so it never outlives the runner that started it.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { answer, type Incoming } from './upstream-core.js';

export const MCP_PATH = '/mcp';

const sessions = new Set<string>();

function send(res: ServerResponse, status: number, body: string, extra?: Record<string, string>): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

function rpcError(id: unknown, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id: id ?? null, error: { code, message } });
}

function onPost(req: IncomingMessage, res: ServerResponse, body: string): void {
  let msg: Incoming;
  try {
    msg = JSON.parse(body) as Incoming;
  } catch {
    send(res, 400, rpcError(null, -32700, 'Parse error'));
    return;
  }
  if (msg.method === 'initialize') {
    const id = randomUUID();
    sessions.add(id);
    send(res, 200, answer(msg)!, { 'mcp-session-id': id });
    return;
  }
  const sid = req.headers['mcp-session-id'];
  if (typeof sid !== 'string') {
    send(res, 400, rpcError(msg.id, -32000, 'Bad Request: Mcp-Session-Id header is required'));
    return;
  }
  if (!sessions.has(sid)) {
    send(res, 404, rpcError(msg.id, -32001, 'Session not found'));
    return;
  }
  const out = answer(msg);
  if (out === undefined) {
    res.writeHead(202).end();
    return;
  }
  send(res, 200, out);
}

const server = createServer({ keepAliveTimeout: 120_000 }, (req, res) => {
  const path = req.url === undefined ? '' : req.url.split('?', 1)[0];
  if (path !== MCP_PATH) {
    send(res, 404, rpcError(null, -32600, 'not found'));
    return;
  }
  if (req.method === 'POST') {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => onPost(req, res, chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8')));
    return;
  }
  if (req.method === 'DELETE') {
    const sid = req.headers['mcp-session-id'];
    const known = typeof sid === 'string' && sessions.delete(sid);
    res.writeHead(known ? 200 : 404).end();
    return;
  }
  // No GET stream: this server never sends messages outside a call.
  res.writeHead(405, { allow: 'POST, DELETE' }).end();
});

const port = Number(process.argv[2] ?? 0);
server.listen(port, '127.0.0.1', () => {
  const a = server.address() as AddressInfo;
  process.stdout.write(`listening http://127.0.0.1:${a.port}${MCP_PATH}\n`);
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.stdin.on('end', stop).on('error', stop).resume();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
