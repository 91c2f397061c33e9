/**
 * MCP clients for integration tests: the real SDK clients, connected to a gateway endpoint (or
 * straight to a server, for comparison), closed by the returned `close`.
 */
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { ClientCapabilities } from '@modelcontextprotocol/sdk/types.js';

export interface V1Connection {
  client: Client;
  /** The HTTP transport (session id, terminateSession), or undefined for a stdio connection. */
  transport: StreamableHTTPClientTransport | undefined;
  close(): Promise<void>;
}

export interface V1Options {
  name?: string;
  capabilities?: ClientCapabilities;
  /** Called before connect, to register request handlers (sampling, elicitation) the capabilities promise. */
  setup?: (client: Client) => void;
  /** Extra HTTP headers on every request (Authorization, for a gateway with grants). */
  headers?: Record<string, string>;
}

function makeClient(opts: V1Options): Client {
  const client = new Client({ name: opts.name ?? 'policylayer-test', version: '1.0.0' }, { capabilities: opts.capabilities ?? {} });
  opts.setup?.(client);
  return client;
}

/** A v1 SDK client over Streamable HTTP (session era). */
export async function connectHttp(url: string, opts: V1Options = {}): Promise<V1Connection> {
  const client = makeClient(opts);
  const transport = new StreamableHTTPClientTransport(new URL(url), opts.headers ? { requestInit: { headers: opts.headers } } : undefined);
  await client.connect(transport);
  return {
    client,
    transport,
    close: async () => {
      await transport.terminateSession().catch(() => {});
      await client.close();
    },
  };
}

/** A v1 SDK client that spawns `argv` itself and speaks stdio to it: the baseline without a gateway. */
export async function connectStdio(argv: readonly string[], opts: V1Options = {}): Promise<V1Connection> {
  const client = makeClient(opts);
  const [command, ...args] = argv;
  const transport = new StdioClientTransport({ command: command!, args, stderr: 'ignore' });
  await client.connect(transport);
  return { client, transport: undefined, close: () => client.close() };
}

/** Resolves when `predicate` holds, polling every 10 ms; rejects with `what` after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The text of a tool result: its text content blocks, joined by newlines. */
export function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
  return content.map((c) => (c.type === 'text' ? (c.text ?? '') : '')).join('\n');
}

/** A tool call's outcome as the policy tests read it: refused or not, its text, and the retry hint of a limit. */
export interface CallResult {
  isError: boolean;
  text: string;
  retryAfter: number | undefined;
}

/** Calls `name` with `args` through `c`. */
export async function callTool(c: V1Connection, name: string, args: Record<string, unknown> = {}): Promise<CallResult> {
  const r = (await c.client.callTool({ name, arguments: args })) as { isError?: boolean; _meta?: Record<string, unknown> };
  const retry = r._meta?.['policylayer/retryAfterSeconds'];
  return { isError: r.isError === true, text: textOf(r), retryAfter: typeof retry === 'number' ? retry : undefined };
}

/**
 * Asserts that `r` is a refusal by the rate limit `counter` of `max` calls a minute per grant: the
 * agent is told which limit, which rule (when `rule` is given) and when to retry, in text and in `_meta`.
 */
export function assertRateLimited(r: CallResult, counter: string, max: number, rule?: string): void {
  assert.equal(r.isError, true);
  assert.match(r.text, /Blocked by PolicyLayer policy/);
  assert.ok(r.text.includes(`rate limit '${counter}' allows at most ${max} calls per minute per agent grant`), r.text);
  if (rule !== undefined) assert.ok(r.text.includes(`rule ${rule}`), r.text);
  assert.match(r.text, /Retry in \d+ s/);
  assert.ok(r.retryAfter !== undefined && r.retryAfter >= 1 && r.retryAfter <= 60, `retry after ${r.retryAfter}`);
}
