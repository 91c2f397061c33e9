/**
 * HTTP side of the stateless revision (2026-07-28): every POST stands alone, carries its version
 * and capabilities in `_meta`, and mirrors its method and target in headers that must agree with
 * the body. The checks here are the revision's; what happens next is the bridge's.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { McpRequest, McpResponse } from './http.js';
import type { Logger } from '../../telemetry/logger.js';
import type { Gateway, ServerRuntime } from '../../gateway/gateway.js';
import {
  HEADER_MISMATCH,
  META_CAPABILITIES,
  META_VERSION,
  NAME_PARAM,
  REMOVED_IN_STATELESS,
  SESSION_PROTOCOL_VERSIONS,
  STATELESS_PROTOCOL_VERSION,
  UNSUPPORTED_VERSION,
} from '../../gateway/protocol.js';
import { methodNotFound, StatelessBridge } from '../../gateway/stateless.js';
import {
  errorResponse,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
  type MessageKind,
} from '../../util/jsonrpc.js';
import type { CallHandlers } from '../upstream/types.js';
import type { CompiledPolicy } from '../../policy/types.js';

/** Header values that are not plain visible ASCII travel as `=?base64?...?=` (SEP-2243). */
export function decodeHeaderValue(v: string): string {
  const m = /^=\?base64\?(.*)\?=$/.exec(v);
  return m ? Buffer.from(m[1]!, 'base64').toString('utf8') : v;
}

export class StatelessHandler {
  private readonly gateway: Gateway;
  private readonly log: Logger;
  private readonly bridges = new Map<ServerRuntime, StatelessBridge>();

  constructor(gateway: Gateway, logger: Logger) {
    this.gateway = gateway;
    this.log = logger;
  }

  private bridge(server: ServerRuntime): StatelessBridge {
    let b = this.bridges.get(server);
    if (!b) {
      b = new StatelessBridge(this.gateway, server, this.log);
      this.bridges.set(server, b);
    }
    return b;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.bridges.values()].map((b) => b.close()));
  }

  async post(
    req: McpRequest,
    res: McpResponse,
    server: ServerRuntime,
    message: JsonRpcMessage,
    kind: MessageKind,
    raw: string,
    reply: CallHandlers,
    caller?: { grant: string; grantLabel: string; policy: CompiledPolicy | undefined },
  ): Promise<void> {
    if (kind === 'response') {
      send(res, 400, errorResponse(null, -32600, 'clients of the stateless protocol must not post responses'));
      return;
    }
    if (kind === 'notification') {
      this.bridge(server).notify(message as JsonRpcNotification, raw);
      res.writeHead(202).end();
      return;
    }
    const request = message as JsonRpcRequest;
    const problem = checkEnvelope(req, request);
    if (problem) {
      send(res, 400, problem);
      return;
    }
    if (REMOVED_IN_STATELESS.has(request.method)) {
      send(res, 404, methodNotFound(request));
      return;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      // Forwarded so a stateless upstream can make the same checks (Mcp-Param-* are defined per tool).
      if (typeof v === 'string' && (k === 'mcp-method' || k === 'mcp-name' || k.startsWith('mcp-param-'))) headers[k] = v;
    }
    const ac = new AbortController();
    // In this revision a client cancels by closing the stream.
    res.on('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    const options = { signal: ac.signal, headers, longLived: request.method === 'subscriptions/listen', grant: caller?.grant, grantLabel: caller?.grantLabel, policy: caller?.policy };
    const bridge = this.bridge(server);
    try {
      if (request.method === 'server/discover') await bridge.discover(request, raw, reply, options);
      else await bridge.call(request, raw, reply, options);
    } catch (err) {
      reply.onResponse(errorResponse(request.id, -32000, `upstream server '${server.name}' is unavailable: ${(err as Error).message}`), undefined);
    }
  }
}

/** Checks the per-request envelope and the headers that mirror it; returns the error to answer, if any. */
export function checkEnvelope(req: { headers: IncomingHttpHeaders }, request: JsonRpcRequest): JsonRpcResponse | undefined {
  const meta = request.params?._meta as Record<string, unknown> | undefined;
  const version = meta?.[META_VERSION];
  const headerVersion = req.headers['mcp-protocol-version'];
  if (typeof version !== 'string') {
    return errorResponse(request.id, -32602, `Invalid _meta envelope for protocol revision ${STATELESS_PROTOCOL_VERSION}: ${META_VERSION}: missing`);
  }
  if (version !== STATELESS_PROTOCOL_VERSION) {
    return errorResponse(request.id, UNSUPPORTED_VERSION, `Unsupported protocol version: ${version}`, {
      supported: [STATELESS_PROTOCOL_VERSION, ...SESSION_PROTOCOL_VERSIONS],
      requested: version,
    });
  }
  if (headerVersion !== version) {
    return errorResponse(request.id, HEADER_MISMATCH, `the request headers and body disagree: MCP-Protocol-Version is '${headerVersion ?? '(missing)'}' but the body says '${version}'`);
  }
  if (typeof meta?.[META_CAPABILITIES] !== 'object' || meta[META_CAPABILITIES] === null) {
    return errorResponse(request.id, -32602, `Invalid _meta envelope for protocol revision ${STATELESS_PROTOCOL_VERSION}: ${META_CAPABILITIES}: missing`);
  }
  const method = req.headers['mcp-method'];
  if (typeof method !== 'string' || decodeHeaderValue(method) !== request.method) {
    return errorResponse(
      request.id,
      HEADER_MISMATCH,
      `the request headers and body disagree: the body names method ${request.method} but the Mcp-Method header ${typeof method === 'string' ? `names ${method}` : 'is absent'}`,
    );
  }
  const nameParam = NAME_PARAM[request.method];
  if (nameParam !== undefined) {
    const target = request.params?.[nameParam];
    const name = req.headers['mcp-name'];
    if (typeof name !== 'string' || decodeHeaderValue(name) !== target) {
      return errorResponse(
        request.id,
        HEADER_MISMATCH,
        `the request headers and body disagree: the body carries params.${nameParam}=${JSON.stringify(target)} but the Mcp-Name header ${typeof name === 'string' ? `names ${JSON.stringify(decodeHeaderValue(name))}` : 'is absent'}`,
      );
    }
  }
  return undefined;
}

function send(res: McpResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
