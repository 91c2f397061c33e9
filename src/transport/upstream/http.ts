/**
 * A remote MCP server over Streamable HTTP. Each client session gets its own upstream session
 * (the client's own initialize is forwarded), so request ids, progress tokens and SSE event ids
 * pass through untouched and the bytes of an answer can be forwarded as they came.
 */
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from '../../telemetry/logger.js';
import { JsonRpcErrors } from '../../errors.js';
import {
  classify,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../../util/jsonrpc.js';
import { sseParser, type SseEvent } from '../../util/sse.js';
import { TranslatedSession } from './translated.js';
import { GATEWAY_INFO, META_CAPABILITIES, META_CLIENT_INFO, META_VERSION, STATELESS_PROTOCOL_VERSION } from '../../gateway/protocol.js';
import { upstreamError, type CallHandlers, type CallOptions, type ListenHandle, type ServerMessage, type Upstream, type UpstreamSession } from './types.js';

export interface HttpUpstreamOptions {
  name: string;
  url: string;
  /** Credentials and other headers from the gateway config; never the client's own Authorization. */
  headers?: Record<string, string> | undefined;
  timeoutMs: number;
  logger: Logger;
}

const ACCEPT_BOTH = 'application/json, text/event-stream';
/** Abort reason of a call the client cancelled. */
const CANCELLED_BY_CLIENT = Symbol('cancelled by the client');

export class HttpUpstream implements Upstream {
  readonly name: string;
  readonly pool: Pool;
  readonly path: string;
  readonly opts: HttpUpstreamOptions;
  readonly log: Logger;
  readonly sessions = new Set<HttpSession>();

  constructor(opts: HttpUpstreamOptions) {
    this.name = opts.name;
    this.opts = opts;
    this.log = opts.logger.child({ server: opts.name });
    const url = new URL(opts.url);
    this.path = url.pathname + url.search;
    // One keep-alive pool per upstream origin: connection set-up is the largest cost of a proxied call.
    this.pool = new Pool(url.origin, { keepAliveTimeout: 30_000, keepAliveMaxTimeout: 300_000 });
  }

  async start(): Promise<void> {}

  /** Removes the configured header values (and the token of an `<scheme> <token>` value) from text. */
  redact(text: string): string {
    let out = text;
    for (const v of Object.values(this.opts.headers ?? {})) {
      for (const secret of [v, ...v.split(/\s+/).filter((part) => part.length >= 8)]) {
        if (secret.length >= 4) out = out.split(secret).join('[redacted]');
      }
    }
    return out;
  }

  headers(sessionId: string | undefined, protocolVersion: string | undefined, extra?: Record<string, string>): Record<string, string> {
    const h: Record<string, string> = { ...this.opts.headers, ...extra };
    if (sessionId !== undefined) h['mcp-session-id'] = sessionId;
    if (protocolVersion !== undefined) h['mcp-protocol-version'] = protocolVersion;
    return h;
  }

  async open(init: JsonRpcRequest, protocolVersion: string): Promise<UpstreamSession> {
    // A server of the stateless revision is spoken to in its own terms, so that what the session
    // era has and it lacks (server-to-client requests, the GET stream) is translated, not lost.
    const discovered = await this.discover();
    if (discovered) return new TranslatedSession(this, init, protocolVersion, discovered);
    const body = JSON.stringify(init);
    let res: Dispatcher.ResponseData;
    try {
      res = await this.pool.request({
        path: this.path,
        method: 'POST',
        headers: this.headers(undefined, undefined, { 'content-type': 'application/json', accept: ACCEPT_BOTH }),
        body,
        headersTimeout: this.opts.timeoutMs,
        bodyTimeout: this.opts.timeoutMs,
      });
    } catch (err) {
      throw new Error(`upstream server '${this.name}' is unreachable: ${(err as Error).message}`, { cause: err });
    }
    const sessionId = headerValue(res.headers['mcp-session-id']);
    let response: JsonRpcResponse;
    try {
      response = await readSingleResponse(res, init.id);
    } catch (err) {
      // The message quotes the upstream's body, and a refusal may quote the credential it was sent.
      throw new Error(`upstream server '${this.name}': ${this.redact((err as Error).message)}`, { cause: err });
    }
    if (response.error) {
      const e = new Error(response.error.message) as Error & { rpc?: JsonRpcResponse };
      e.rpc = response;
      throw e;
    }
    const result = response.result as Record<string, unknown>;
    const version = typeof result.protocolVersion === 'string' ? result.protocolVersion : undefined;
    const session = new HttpSession(this, sessionId, version, result);
    this.sessions.add(session);
    return session;
  }

  private discovered: Promise<Record<string, unknown> | undefined> | undefined;

  /**
   * The upstream's `server/discover` answer if it speaks the stateless revision, asked once: a
   * session-era server answers it with an error, which is the fallback signal the revision defines.
   */
  discover(): Promise<Record<string, unknown> | undefined> {
    return (this.discovered ??= (async () => {
      const body = JSON.stringify({
        jsonrpc: '2.0',
        id: 'policylayer-discover',
        method: 'server/discover',
        params: { _meta: { [META_VERSION]: STATELESS_PROTOCOL_VERSION, [META_CAPABILITIES]: {}, [META_CLIENT_INFO]: GATEWAY_INFO } },
      });
      try {
        const res = await this.pool.request({
          path: this.path,
          method: 'POST',
          headers: this.headers(undefined, STATELESS_PROTOCOL_VERSION, {
            'content-type': 'application/json',
            accept: ACCEPT_BOTH,
            'mcp-method': 'server/discover',
          }),
          body,
          headersTimeout: this.opts.timeoutMs,
          bodyTimeout: this.opts.timeoutMs,
        });
        if (res.statusCode !== 200) {
          await res.body.dump();
          return undefined;
        }
        const m = await readSingleResponse(res, 'policylayer-discover');
        const result = m.result as { supportedVersions?: unknown } | undefined;
        const versions = result?.supportedVersions;
        return Array.isArray(versions) && versions.includes(STATELESS_PROTOCOL_VERSION) ? (result as Record<string, unknown>) : undefined;
      } catch {
        this.discovered = undefined; // unreachable now: ask again next time
        return undefined;
      }
    })());
  }

  async speaksStateless(): Promise<boolean> {
    return (await this.discover()) !== undefined;
  }

  /** A session-less channel for stateless requests, forwarded as they came. */
  statelessChannel(): HttpSession {
    return new HttpSession(this, undefined, STATELESS_PROTOCOL_VERSION, {});
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => s.close()));
    await this.pool.close().catch(() => {});
  }
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a response that must hold exactly one JSON-RPC answer, as JSON or as an SSE stream. */
async function readSingleResponse(res: Dispatcher.ResponseData, id: JsonRpcRequest['id']): Promise<JsonRpcResponse> {
  const ct = headerValue(res.headers['content-type']) ?? '';
  if (ct.includes('text/event-stream')) {
    let found: JsonRpcResponse | undefined;
    const parser = sseParser((ev) => {
      const m = safeParse(ev.data);
      if (m && !('method' in m) && m.id === id) found = m;
    });
    for await (const chunk of res.body) {
      parser.feed(chunk as Buffer);
      if (found) break;
    }
    if (!found) throw new Error('upstream closed the stream without answering initialize');
    res.body.destroy();
    return found;
  }
  const text = await res.body.text();
  if (res.statusCode >= 400) {
    const m = safeParse(text);
    if (m && !('method' in m)) return m;
    throw new Error(`upstream answered HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
  }
  const m = safeParse(text);
  if (!m || 'method' in m) throw new Error('upstream answered initialize with something that is not a JSON-RPC response');
  return m;
}

function safeParse(text: string): (JsonRpcMessage & Partial<JsonRpcResponse>) | undefined {
  try {
    const v = JSON.parse(text) as JsonRpcMessage;
    classify(v);
    return v as JsonRpcMessage & Partial<JsonRpcResponse>;
  } catch {
    return undefined;
  }
}

export class HttpSession implements UpstreamSession {
  readonly initializeResult: Record<string, unknown>;
  private readonly up: HttpUpstream;
  private readonly sessionId: string | undefined;
  private readonly protocolVersion: string | undefined;
  private readonly aborts = new Set<AbortController>();
  gone = false;
  /** Calls in flight by the client's id, so a notifications/cancelled can end them. */
  private readonly calls = new Map<JsonRpcRequest['id'], AbortController>();
  private closed = false;

  constructor(up: HttpUpstream, sessionId: string | undefined, protocolVersion: string | undefined, result: Record<string, unknown>) {
    this.up = up;
    this.sessionId = sessionId;
    this.protocolVersion = protocolVersion;
    this.initializeResult = result;
  }

  call(req: JsonRpcRequest, raw: string | undefined, handlers: CallHandlers, options?: CallOptions): void {
    void this.doCall(req, raw ?? JSON.stringify(req), handlers, options);
  }

  private async doCall(req: JsonRpcRequest, body: string, handlers: CallHandlers, options?: CallOptions): Promise<void> {
    const ac = new AbortController();
    this.aborts.add(ac);
    this.calls.set(req.id, ac);
    options?.signal?.addEventListener('abort', () => ac.abort(), { once: true });
    let answered = false;
    const answer = (msg: JsonRpcResponse, raw: string | undefined) => {
      if (answered) return;
      answered = true;
      handlers.onResponse(msg, raw);
    };
    const fail = (message: string) => answer(upstreamError(req.id, JsonRpcErrors.UPSTREAM_ERROR, message), undefined);
    try {
      const res = await this.up.pool.request({
        path: this.up.path,
        method: 'POST',
        headers: this.up.headers(this.sessionId, this.protocolVersion, {
          ...options?.headers,
          'content-type': 'application/json',
          accept: ACCEPT_BOTH,
        }),
        body,
        signal: ac.signal,
        headersTimeout: this.up.opts.timeoutMs,
        bodyTimeout: options?.longLived ? 0 : this.up.opts.timeoutMs,
      });
      const ct = headerValue(res.headers['content-type']) ?? '';
      if (ct.includes('text/event-stream')) {
        handlers.onStreamStart?.();
        let lastEventId: string | undefined;
        let retryMs: number | undefined;
        const onEvent = (ev: SseEvent) => {
          if (ev.id) lastEventId = ev.id;
          if (ev.data.length === 0) {
            if (ev.id) handlers.onPriming?.(ev.id);
            return;
          }
          const m = safeParse(ev.data);
          if (!m) return;
          if (!('method' in m) && m.id === req.id) answer(m as JsonRpcResponse, ev.data);
          else handlers.onRelated({ message: m, raw: ev.data, eventId: ev.id });
        };
        const parser = sseParser(onEvent, (ms) => {
          retryMs = ms;
          handlers.onRetryHint?.(ms);
        });
        for await (const chunk of res.body) parser.feed(chunk as Buffer);
        // The server may end a call's stream early and expect the client to resume it (SEP-1699):
        // an HTTP client does so through us; for any other the gateway resumes it itself.
        if (!answered && lastEventId !== undefined && handlers.onStreamEnd?.(lastEventId)) {
          answered = true;
          return;
        }
        let attempts = 0;
        while (!answered && lastEventId !== undefined && !this.closed && attempts < 10) {
          attempts++;
          await new Promise((r) => setTimeout(r, retryMs ?? 0));
          const resumed = await this.up.pool.request({
            path: this.up.path,
            method: 'GET',
            headers: this.up.headers(this.sessionId, this.protocolVersion, { accept: 'text/event-stream', 'last-event-id': lastEventId }),
            signal: ac.signal,
            headersTimeout: this.up.opts.timeoutMs,
            bodyTimeout: this.up.opts.timeoutMs,
          });
          if (resumed.statusCode !== 200) {
            await resumed.body.dump();
            break;
          }
          parser.reset();
          for await (const chunk of resumed.body) parser.feed(chunk as Buffer);
        }
        if (!answered) fail(`upstream server '${this.up.name}' closed the stream without answering`);
        return;
      }
      const text = await res.body.text();
      const m = safeParse(text);
      if (m && !('method' in m)) {
        answer(m as JsonRpcResponse, text);
        return;
      }
      if (res.statusCode === 404 && this.sessionId !== undefined) {
        this.gone = true;
        fail(`upstream server '${this.up.name}' no longer knows this session; start a new one`);
        return;
      }
      fail(`upstream server '${this.up.name}' answered HTTP ${res.statusCode} without a JSON-RPC response`);
    } catch (err) {
      const e = err as Error & { code?: string };
      if (this.closed) fail('the session was closed');
      else if (ac.signal.reason === CANCELLED_BY_CLIENT) fail('Request was cancelled by the client');
      else if (e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT')
        fail(`upstream server '${this.up.name}' did not answer within ${this.up.opts.timeoutMs} ms`);
      else fail(`upstream server '${this.up.name}' is unreachable: ${e.message}`);
    } finally {
      this.aborts.delete(ac);
      if (this.calls.get(req.id) === ac) this.calls.delete(req.id);
    }
  }

  send(msg: JsonRpcNotification | JsonRpcResponse, raw: string | undefined): void {
    this.up.pool
      .request({
        path: this.up.path,
        method: 'POST',
        headers: this.up.headers(this.sessionId, this.protocolVersion, { 'content-type': 'application/json', accept: ACCEPT_BOTH }),
        body: raw ?? JSON.stringify(msg),
        headersTimeout: this.up.opts.timeoutMs,
      })
      .then(
        (res) => res.body.dump(),
        (err: Error) => this.up.log.warn({ err: err.message }, 'could not forward a client message upstream'),
      );
    // The server will not answer a cancelled request (spec: utilities/cancellation): stop waiting
    // for it rather than hold the call, and the client's stream, open until the timeout.
    if ('method' in msg && msg.method === 'notifications/cancelled') {
      this.calls.get(msg.params?.requestId as JsonRpcRequest['id'])?.abort(CANCELLED_BY_CLIENT);
    }
  }

  async listen(onMessage: (msg: ServerMessage) => void, lastEventId?: string): Promise<ListenHandle | undefined> {
    const ac = new AbortController();
    const extra: Record<string, string> = { accept: 'text/event-stream' };
    if (lastEventId !== undefined) extra['last-event-id'] = lastEventId;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.up.pool.request({
        path: this.up.path,
        method: 'GET',
        headers: this.up.headers(this.sessionId, this.protocolVersion, extra),
        signal: ac.signal,
        headersTimeout: this.up.opts.timeoutMs,
        bodyTimeout: 0,
      });
    } catch (err) {
      this.up.log.warn({ err: (err as Error).message }, 'upstream refused the server-message stream');
      return undefined;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      return undefined;
    }
    this.aborts.add(ac);
    const parser = sseParser((ev) => {
      if (ev.data.length === 0) return;
      const m = safeParse(ev.data);
      if (m) onMessage({ message: m, raw: ev.data, eventId: ev.id });
    });
    res.body.on('data', (chunk: Buffer) => parser.feed(chunk));
    res.body.on('error', () => {});
    const ended: Array<() => void> = [];
    res.body.on('end', () => {
      this.aborts.delete(ac);
      for (const fn of ended) fn();
    });
    return {
      close: () => {
        this.aborts.delete(ac);
        ac.abort();
      },
      onEnd: (fn) => void ended.push(fn),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.up.sessions.delete(this);
    for (const ac of this.aborts) ac.abort();
    this.aborts.clear();
    if (this.sessionId === undefined) return;
    try {
      const res = await this.up.pool.request({
        path: this.up.path,
        method: 'DELETE',
        headers: this.up.headers(this.sessionId, this.protocolVersion),
        headersTimeout: 5000,
      });
      await res.body.dump();
    } catch {
      // The upstream will expire the session on its own.
    }
  }
}
