/**
 * An MCP server of the stateless revision (2026-07-28), built with the v2 SDK
 * (`@modelcontextprotocol/server`, `createMcpHandler`) and served on node:http at 127.0.0.1 on a
 * port the OS picks, in the test's own process.
 *
 * Tools: `echo`, `add`, `count` (one progress notification per step), `secret` and `danger` (for
 * policies to hide and deny) and `confirm` (asks the user through a multi-round-trip
 * `input_required` elicitation). Every POST it receives is recorded in `received`, headers and
 * body, so tests can see exactly what the gateway forwarded.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer, acceptedContent, createMcpHandler, inputRequired } from '@modelcontextprotocol/server';
import * as z from 'zod';

export interface ReceivedRequest {
  headers: Record<string, string>;
  body: { id?: unknown; method?: string; params?: Record<string, unknown> } | undefined;
}

export interface StatelessServer {
  /** The MCP endpoint, e.g. http://127.0.0.1:41234/mcp */
  url: string;
  received: ReceivedRequest[];
  close(): Promise<void>;
}

export const STATELESS_SERVER_INFO = { name: 'stateless-fixture', version: '1.2.3' };

function buildServer(): McpServer {
  const server = new McpServer(STATELESS_SERVER_INFO, { capabilities: { tools: {} }, instructions: 'A server of the stateless revision.' });
  server.registerTool('echo', { description: 'Echoes the message', inputSchema: z.object({ message: z.string() }) }, async ({ message }) => ({
    content: [{ type: 'text', text: `Echo: ${message}` }],
  }));
  server.registerTool('add', { description: 'Adds two numbers', inputSchema: z.object({ a: z.number(), b: z.number() }) }, async ({ a, b }) => ({
    content: [{ type: 'text', text: String(a + b) }],
  }));
  server.registerTool(
    'count',
    { description: 'Counts to steps, reporting progress', inputSchema: z.object({ steps: z.number().int().min(1).max(20) }) },
    async ({ steps }, ctx) => {
      const token = ctx.mcpReq._meta?.progressToken;
      for (let i = 1; i <= steps; i++) {
        await new Promise((r) => setTimeout(r, 20));
        if (token !== undefined) {
          await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: token, progress: i, total: steps } });
        }
      }
      return { content: [{ type: 'text', text: `counted to ${steps}` }] };
    },
  );
  server.registerTool('secret', { description: 'Must never be seen', inputSchema: z.object({}) }, async () => ({
    content: [{ type: 'text', text: 'the secret' }],
  }));
  server.registerTool('danger', { description: 'Must never run', inputSchema: z.object({}) }, async () => ({
    content: [{ type: 'text', text: 'it ran' }],
  }));
  const answer = z.object({ name: z.string() });
  server.registerTool('confirm', { description: 'Asks the user for a name', inputSchema: z.object({}) }, async (_args, ctx) => {
    const got = acceptedContent(ctx.mcpReq.inputResponses, 'who', answer);
    if (got === undefined) {
      return inputRequired({ inputRequests: { who: inputRequired.elicit({ message: 'What is your name?', requestedSchema: answer }) } });
    }
    return { content: [{ type: 'text', text: `Hello, ${got.name}` }] };
  });
  return server;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function startStatelessServer(opts: { legacy?: 'stateless' | 'reject' } = {}): Promise<StatelessServer> {
  const handler = createMcpHandler(() => buildServer(), { legacy: opts.legacy ?? 'reject' });
  const received: ReceivedRequest[] = [];
  let base = '';
  const http = createServer((req, res) => {
    void (async () => {
      const body = req.method === 'POST' ? await readBody(req) : undefined;
      const headers = new Headers();
      const plain: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (typeof v === 'string') {
          headers.set(k, v);
          plain[k] = v;
        } else if (Array.isArray(v)) for (const x of v) headers.append(k, x);
      }
      if (body !== undefined) {
        let parsed: ReceivedRequest['body'];
        try {
          parsed = JSON.parse(body.toString('utf8')) as ReceivedRequest['body'];
        } catch {
          parsed = undefined;
        }
        received.push({ headers: plain, body: parsed });
      }
      const request = new Request(base + (req.url ?? '/'), { method: req.method ?? 'GET', headers, body: body && body.length > 0 ? body : undefined });
      const response = await handler.fetch(request);
      res.writeHead(response.status, Object.fromEntries(response.headers));
      if (response.body) {
        const reader = response.body.getReader();
        res.on('close', () => void reader.cancel().catch(() => {}));
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          res.write(value);
        }
      }
      res.end();
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  return {
    url: `${base}/mcp`,
    received,
    close: async () => {
      await handler.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
