/**
 * A session-era client's session over an upstream that speaks only the stateless revision
 * (2026-07-28). What the session era expresses with state is carried per request instead:
 *
 * - the client's capabilities and info from its initialize, and the level from logging/setLevel,
 *   go into every request's `_meta` envelope, with the Mcp-Method / Mcp-Name headers;
 * - an `input_required` answer (the revision's multi-round-trip requests) becomes ordinary
 *   server-to-client requests on the call's stream; the client's answers are sent back with the
 *   retried call, so the client sees one call that asked it something, as in its own era;
 * - the GET stream becomes a `subscriptions/listen` stream, resources/subscribe a filter on it;
 * - ping is answered here (the revision removed it).
 */
import { JsonRpcErrors } from '../../errors.js';
import {
  LATEST_SESSION_VERSION,
  META_CAPABILITIES,
  META_CLIENT_INFO,
  META_LOG_LEVEL,
  META_SERVER_INFO,
  META_VERSION,
  NAME_PARAM,
  STATELESS_PROTOCOL_VERSION,
  isSessionVersion,
} from '../../gateway/protocol.js';
import type { JsonRpcId, JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../util/jsonrpc.js';
import type { HttpSession, HttpUpstream } from './http.js';
import { upstreamError, type CallHandlers, type CallOptions, type ServerMessage, type UpstreamSession } from './types.js';

/** How many times one call may come back asking for input before the gateway gives up on it. */
const MAX_INPUT_ROUNDS = 8;

/** Header values must be visible ASCII without edge whitespace; anything else is base64-wrapped (SEP-2243). */
export function encodeHeaderValue(v: string): string {
  return /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(v) && !v.startsWith('=?') ? v : `=?base64?${Buffer.from(v, 'utf8').toString('base64')}?=`;
}

interface InputRequest {
  method: string;
  params?: Record<string, unknown>;
}

export class TranslatedSession implements UpstreamSession {
  readonly initializeResult: Record<string, unknown>;
  private readonly channel: HttpSession;
  private readonly clientCapabilities: unknown;
  private readonly clientInfo: unknown;
  private logLevel: string | undefined;
  private readonly resourceSubscriptions = new Set<string>();
  private nextInputId = 1;
  /** Server-to-client requests sent to the client, waiting for its answer. */
  private readonly awaiting = new Map<JsonRpcId, (r: JsonRpcResponse) => void>();
  /** The client's calls in flight, so notifications/cancelled can abort them. */
  private readonly calls = new Map<JsonRpcId, AbortController>();
  private listener: { onMessage: (m: ServerMessage) => void; ac: AbortController } | undefined;

  constructor(up: HttpUpstream, init: JsonRpcRequest, protocolVersion: string, discovered: Record<string, unknown>) {
    this.channel = up.statelessChannel();
    this.clientCapabilities = init.params?.capabilities ?? {};
    this.clientInfo = init.params?.clientInfo;
    const meta = (discovered._meta ?? {}) as Record<string, unknown>;
    const result: Record<string, unknown> = {
      protocolVersion: isSessionVersion(protocolVersion) ? protocolVersion : LATEST_SESSION_VERSION,
      capabilities: discovered.capabilities ?? {},
      serverInfo: meta[META_SERVER_INFO] ?? { name: up.name, version: 'unknown' },
    };
    if (typeof discovered.instructions === 'string') result.instructions = discovered.instructions;
    this.initializeResult = result;
  }

  private envelope(req: JsonRpcRequest): { request: JsonRpcRequest; headers: Record<string, string> } {
    const meta: Record<string, unknown> = { ...(req.params?._meta as Record<string, unknown> | undefined) };
    meta[META_VERSION] = STATELESS_PROTOCOL_VERSION;
    meta[META_CAPABILITIES] = this.clientCapabilities;
    if (this.clientInfo !== undefined) meta[META_CLIENT_INFO] = this.clientInfo;
    if (this.logLevel !== undefined) meta[META_LOG_LEVEL] = this.logLevel;
    const request: JsonRpcRequest = { jsonrpc: '2.0', id: req.id, method: req.method, params: { ...req.params, _meta: meta } };
    const headers: Record<string, string> = { 'mcp-method': encodeHeaderValue(req.method) };
    const nameParam = NAME_PARAM[req.method];
    const target = nameParam !== undefined ? req.params?.[nameParam] : undefined;
    if (typeof target === 'string') headers['mcp-name'] = encodeHeaderValue(target);
    return { request, headers };
  }

  call(req: JsonRpcRequest, _raw: string | undefined, handlers: CallHandlers, options?: CallOptions): void {
    switch (req.method) {
      case 'ping':
        handlers.onResponse({ jsonrpc: '2.0', id: req.id, result: {} }, undefined);
        return;
      case 'logging/setLevel':
        this.logLevel = typeof req.params?.level === 'string' ? req.params.level : undefined;
        handlers.onResponse({ jsonrpc: '2.0', id: req.id, result: {} }, undefined);
        return;
      case 'resources/subscribe':
      case 'resources/unsubscribe': {
        const uri = req.params?.uri;
        if (typeof uri === 'string') {
          if (req.method === 'resources/subscribe') this.resourceSubscriptions.add(uri);
          else this.resourceSubscriptions.delete(uri);
          this.resubscribe();
        }
        handlers.onResponse({ jsonrpc: '2.0', id: req.id, result: {} }, undefined);
        return;
      }
    }
    const ac = new AbortController();
    this.calls.set(req.id, ac);
    options?.signal?.addEventListener('abort', () => ac.abort(), { once: true });
    void this.round(req, req.params ?? {}, handlers, ac, 0);
  }

  /** One attempt of a call; an `input_required` answer asks the client, then tries again. */
  private async round(req: JsonRpcRequest, params: Record<string, unknown>, handlers: CallHandlers, ac: AbortController, n: number): Promise<void> {
    const { request, headers } = this.envelope({ ...req, params });
    const answer = await new Promise<{ msg: JsonRpcResponse; raw: string | undefined }>((resolve) => {
      this.channel.call(request, undefined, { onRelated: handlers.onRelated, onResponse: (msg, raw) => resolve({ msg, raw }) }, { headers, signal: ac.signal });
    });
    const result = answer.msg.result as { resultType?: string; inputRequests?: Record<string, InputRequest>; requestState?: string } | undefined;
    if (result?.resultType !== 'input_required') {
      this.calls.delete(req.id);
      handlers.onResponse(answer.msg, answer.raw);
      return;
    }
    if (n >= MAX_INPUT_ROUNDS || ac.signal.aborted) {
      this.calls.delete(req.id);
      handlers.onResponse(upstreamError(req.id, JsonRpcErrors.UPSTREAM_ERROR, `the upstream asked for input more than ${MAX_INPUT_ROUNDS} times for one call`), undefined);
      return;
    }
    const inputResponses: Record<string, unknown> = {};
    for (const [key, input] of Object.entries(result.inputRequests ?? {})) {
      const id = `pl-input-${this.nextInputId++}`;
      const reply = await new Promise<JsonRpcResponse>((resolve) => {
        this.awaiting.set(id, resolve);
        const ask: JsonRpcRequest = { jsonrpc: '2.0', id, method: input.method };
        if (input.params !== undefined) ask.params = input.params;
        handlers.onRelated({ message: ask });
        ac.signal.addEventListener('abort', () => resolve(upstreamError(id, JsonRpcErrors.INTERNAL_ERROR, 'cancelled')), { once: true });
      });
      this.awaiting.delete(id);
      if (reply.error) {
        this.calls.delete(req.id);
        handlers.onResponse(upstreamError(req.id, reply.error.code, `the client could not answer the server's ${input.method}: ${reply.error.message}`), undefined);
        return;
      }
      inputResponses[key] = reply.result;
    }
    const next: Record<string, unknown> = { ...params, inputResponses };
    if (result.requestState !== undefined) next.requestState = result.requestState;
    else delete next.requestState;
    await this.round(req, next, handlers, ac, n + 1);
  }

  send(msg: JsonRpcNotification | JsonRpcResponse): void {
    if (!('method' in msg)) {
      const waiting = msg.id === null ? undefined : this.awaiting.get(msg.id);
      waiting?.(msg);
      return;
    }
    if (msg.method === 'notifications/cancelled') {
      this.calls.get(msg.params?.requestId as JsonRpcId)?.abort();
    }
    // Other client notifications (initialized, roots/list_changed) have no stateless counterpart.
  }

  async listen(onMessage: (m: ServerMessage) => void): Promise<{ close(): void }> {
    this.listener?.ac.abort();
    this.listener = { onMessage, ac: new AbortController() };
    this.subscribe(this.listener);
    return {
      close: () => {
        this.listener?.ac.abort();
        this.listener = undefined;
      },
    };
  }

  private resubscribe(): void {
    if (!this.listener) return;
    this.listener.ac.abort();
    this.listener = { onMessage: this.listener.onMessage, ac: new AbortController() };
    this.subscribe(this.listener);
  }

  private subscribe(l: { onMessage: (m: ServerMessage) => void; ac: AbortController }): void {
    const notifications: Record<string, unknown> = { toolsListChanged: true, promptsListChanged: true, resourcesListChanged: true };
    if (this.resourceSubscriptions.size > 0) notifications.resourceSubscriptions = [...this.resourceSubscriptions];
    const { request, headers } = this.envelope({ jsonrpc: '2.0', id: 'pl-listen', method: 'subscriptions/listen', params: { notifications } });
    this.channel.call(
      request,
      undefined,
      {
        onRelated: (m) => {
          const msg = m.message;
          if ('method' in msg && msg.method === 'notifications/subscriptions/acknowledged') return;
          l.onMessage({ message: msg });
        },
        onResponse: () => {},
      },
      { headers, signal: l.ac.signal, longLived: true },
    );
  }

  async close(): Promise<void> {
    this.listener?.ac.abort();
    this.listener = undefined;
    for (const ac of this.calls.values()) ac.abort();
    this.calls.clear();
  }
}
