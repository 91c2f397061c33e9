/**
 * server-everything (the MCP reference server, from npm) served over Streamable HTTP on
 * 127.0.0.1 and a port the OS picks.
 *
 * The package's own `streamableHttp` entry point listens on every interface and on a fixed PORT,
 * which a test suite must not do; this fixture hosts the same server (its exported
 * `createServer`, so every tool, resource and prompt is the package's) behind the v1 SDK's
 * Streamable HTTP transport, one server instance per session.
 *
 * Prints `listening http://127.0.0.1:PORT/mcp` when ready, then one line `received <json>` for
 * every notification a client sends (tests read them to prove a notifications/cancelled arrived).
 * Exits when its stdin closes or on SIGTERM, so it never outlives the test that started it.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';

interface EverythingModule {
  createServer(): { server: McpServer; cleanup(sessionId?: string): void };
}

// The package ships JavaScript without declarations; the specifier is a variable so the compiler
// does not look for them.
const specifier = '@modelcontextprotocol/server-everything/dist/server/index.js';
const everything = (await import(specifier)) as EverythingModule;

const sessions = new Map<string, StreamableHTTPServerTransport>();

const http = createHttpServer((req, res) => {
  void (async () => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/mcp') {
      res.writeHead(404).end();
      return;
    }
    const sid = req.headers['mcp-session-id'];
    const known = typeof sid === 'string' ? sessions.get(sid) : undefined;
    if (known) {
      await known.handleRequest(req, res);
      return;
    }
    if (req.method === 'POST' && sid === undefined) {
      const { server, cleanup } = everything.createServer();
      const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void sessions.set(id, transport),
      });
      transport.onclose = () => {
        const id = transport.sessionId;
        if (id !== undefined && sessions.delete(id)) cleanup(id);
      };
      await server.connect(transport);
      const deliver = transport.onmessage;
      transport.onmessage = (message, extra) => {
        if ('method' in message && !('id' in message)) process.stdout.write(`received ${JSON.stringify(message)}\n`);
        deliver?.(message, extra);
      };
      await transport.handleRequest(req, res);
      return;
    }
    const status = sid === undefined ? 400 : 404;
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: sid === undefined ? 'Bad Request: no session id' : 'Session not found' } }));
  })().catch((err: unknown) => {
    process.stderr.write(`everything-http: ${(err as Error).stack ?? String(err)}\n`);
    if (!res.headersSent) res.writeHead(500).end();
  });
});

http.listen(0, '127.0.0.1', () => {
  const { port } = http.address() as AddressInfo;
  process.stdout.write(`listening http://127.0.0.1:${port}/mcp\n`);
});

const quit = () => {
  for (const t of sessions.values()) void t.close();
  http.closeAllConnections();
  http.close();
  process.exit(0);
};
process.stdin.on('end', quit);
process.stdin.on('error', quit);
process.stdin.resume();
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
