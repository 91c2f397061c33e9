/**
 * A remote MCP server over Streamable HTTP. Each client session gets its own upstream session
 * (the client's own initialize is forwarded), so request ids, progress tokens and SSE event ids
 * pass through untouched and the bytes of an answer can be forwarded as they came.
 */
import { Readable } from 'node:stream';
import type { Logger } from '../../telemetry/logger.js';
import { JsonRpcErrors } from '../../errors.js';
import {
  classify,
  ForwardedResult,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../../util/jsonrpc.js';
import { resultAnswerId } from '../../util/raw-id.js';
import { sseParser, type SseEvent } from '../../util/sse.js';
import { Http1Pool, headerBlock, type Exchange, type ExchangeRequest, type ResponseHeaders } from './http1.js';
import { TranslatedSession } from './translated.js';
import { OAuthTokenError, sendWithToken, tokenRefused, type UpstreamTokenSource } from './oauth.js';
import { GATEWAY_INFO, META_CAPABILITIES, META_CLIENT_INFO, META_VERSION, STATELESS_PROTOCOL_VERSION } from '../../gateway/protocol.js';
import { UpstreamHttpError, upstreamError, type CallHandlers, type CallOptions, type ListenHandle, type ServerMessage, type Upstream, type UpstreamSession } from './types.js';

export interface HttpUpstreamOptions {
  name: string;
  url: string;
  /** Credentials and other headers from the gateway config; never the client's own Authorization. */
  headers?: Record<string, string> | undefined;
  /**
   * OAuth access tokens for this server, sent as `Authorization: Bearer` with every request to
   * `url` (its origin is the only one this upstream's pool talks to).
   */
  tokens?: UpstreamTokenSource | undefined;
  timeoutMs: number;
  logger: Logger;
}

const ACCEPT_BOTH = 'application/json, text/event-stream';
/**
 * Requests that only read, sent once more when they meet a keep-alive connection the server had
 * just closed. Anything else (a tools/call above all) is not: the server may have acted on it.
 */
const SAFE_TO_RESEND = new Set(['ping', 'tools/list', 'prompts/list', 'prompts/get', 'resources/list', 'resources/templates/list', 'resources/read', 'completion/complete']);
/** Abort reason of a call the client cancelled. */
const CANCELLED_BY_CLIENT = Symbol('cancelled by the client');

/** An answer read as a stream: what the requests off the hot path (initialize, GET streams) use. */
export interface UpstreamResponse {
  statusCode: number;
  headers: ResponseHeaders;
  /** Destroying it ends the exchange (and closes its connection). */
  body: Readable;
}

/** A request off the hot path, whose answer is read as a stream. */
interface UpstreamRequest {
  method: 'GET' | 'POST' | 'DELETE';
  headers: Record<string, string>;
  body?: string | undefined;
  timeoutMs: number;
  bodyTimeoutMs?: number | undefined;
  /** See ExchangeRequest.idempotent. */
  idempotent?: boolean | undefined;
}

export class HttpUpstream implements Upstream {
  readonly name: string;
  readonly pool: Http1Pool;
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
    this.pool = new Http1Pool(url.origin, { keepAliveMs: 30_000, keepAliveMaxMs: 300_000 });
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
    return this.opts.tokens?.redact(out) ?? out;
  }

  /** One request with the server's access token, if it has OAuth: see sendWithToken. */
  request(options: UpstreamRequest): Promise<UpstreamResponse> {
    return sendWithToken(
      this.opts.tokens,
      (auth) =>
        streamed(this.pool, {
          method: options.method,
          path: this.path,
          headers: headerBlock({ ...options.headers, ...auth }),
          body: options.body,
          timeoutMs: options.timeoutMs,
          bodyTimeoutMs: options.bodyTimeoutMs,
          idempotent: options.idempotent,
        }),
      refused,
    );
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
    let res: UpstreamResponse;
    try {
      res = await this.request({
        method: 'POST',
        headers: this.headers(undefined, undefined, { 'content-type': 'application/json', accept: ACCEPT_BOTH }),
        body,
        timeoutMs: this.opts.timeoutMs,
        // Sent again, at worst the server holds a session nobody uses, and expires it.
        idempotent: true,
      });
    } catch (err) {
      if (err instanceof OAuthTokenError) throw err;
      throw new Error(`upstream server '${this.name}' is unreachable: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode === 401 && this.opts.tokens !== undefined) {
      res.body.destroy();
      throw new Error(tokenRefused(this.name));
    }
    const sessionId = res.headers['mcp-session-id'];
    let response: JsonRpcResponse;
    try {
      response = await readSingleResponse(res, init.id);
    } catch (err) {
      // The message quotes the upstream's body, and a refusal may quote the credential it was sent.
      const message = `upstream server '${this.name}': ${this.redact((err as Error).message)}`;
      if (err instanceof HttpStatusBody) throw new UpstreamHttpError(err.status, message, this.redact(err.body), { cause: err });
      throw new Error(message, { cause: err });
    }
    if (response.error) {
      const e = (
        res.statusCode >= 400 ? new UpstreamHttpError(res.statusCode, response.error.message, this.redact(response.error.message)) : new Error(response.error.message)
      ) as Error & { rpc?: JsonRpcResponse };
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
        const res = await this.request({
          method: 'POST',
          headers: this.headers(undefined, STATELESS_PROTOCOL_VERSION, {
            'content-type': 'application/json',
            accept: ACCEPT_BOTH,
            'mcp-method': 'server/discover',
          }),
          body,
          timeoutMs: this.opts.timeoutMs,
          idempotent: true,
        });
        if (res.statusCode !== 200) {
          res.body.destroy();
          // A refusal says nothing about the revision it speaks: ask again next time.
          if (res.statusCode === 401) this.discovered = undefined;
          return undefined;
        }
        const m = await readSingleResponse(res, 'policylayer-discover');
        const result = m.result as { supportedVersions?: unknown } | undefined;
        const versions = result?.supportedVersions;
        return Array.isArray(versions) && versions.includes(STATELESS_PROTOCOL_VERSION) ? (result as Record<string, unknown>) : undefined;
      } catch (err) {
        this.discovered = undefined; // unreachable now: ask again next time
        // Without a token nothing else can succeed either: the caller gets the reason now.
        if (err instanceof OAuthTokenError) throw err;
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

/** A 401 answer, read no further: the request goes again with a fresh token. */
function refused(res: UpstreamResponse): boolean {
  if (res.statusCode !== 401) return false;
  res.body.destroy();
  return true;
}

/**
 * One exchange whose answer is a Readable, resolved at its head. The stream has an error listener
 * of its own, so a failure nobody reads (a body left unread) cannot take the process down.
 */
function streamed(pool: Http1Pool, req: ExchangeRequest): Promise<UpstreamResponse> {
  return new Promise((resolve, reject) => {
    let body: Readable | undefined;
    const ex: Exchange = pool.exchange(req, {
      onHead: (statusCode, headers) => {
        body = new Readable({
          read() {},
          destroy(err, cb) {
            ex.abort();
            cb(err);
          },
        });
        body.on('error', () => {});
        resolve({ statusCode, headers, body });
      },
      onData: (chunk) => body!.push(chunk),
      onEnd: () => body!.push(null),
      onError: (err) => (body === undefined ? reject(err) : body.destroy(err)),
    });
  });
}

async function readText(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads a response that must hold exactly one JSON-RPC answer, as JSON or as an SSE stream. */
async function readSingleResponse(res: UpstreamResponse, id: JsonRpcRequest['id']): Promise<JsonRpcResponse> {
  const ct = res.headers['content-type'] ?? '';
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
  const text = await readText(res.body);
  if (res.statusCode >= 400) {
    const m = safeParse(text);
    if (m && !('method' in m)) return m;
    throw new HttpStatusBody(res.statusCode, text.slice(0, 200));
  }
  const m = safeParse(text);
  if (!m || 'method' in m) throw new Error('upstream answered initialize with something that is not a JSON-RPC response');
  return m;
}

/** A refusal whose body is not JSON-RPC: its status and the start of its body. */
class HttpStatusBody extends Error {
  readonly status: number;
  readonly body: string;
  constructor(status: number, body: string) {
    super(`upstream answered HTTP ${status}: ${body}`);
    this.status = status;
    this.body = body;
  }
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

/** One call in flight on an HTTP session: what its answer needs, whichever response carries it. */
interface CallState {
  readonly req: JsonRpcRequest;
  readonly handlers: CallHandlers;
  readonly longLived: boolean;
  answered: boolean;
  lastEventId: string | undefined;
  retryMs: number | undefined;
  resumes: number;
  /** Whether the call was already sent again with a fresh OAuth token after a 401. */
  tokenRetried: boolean;
  controller: Exchange | undefined;
  /** Why the call was aborted, once it is. */
  reason: unknown;
}

/** Abort reasons, so the error the client gets says what happened. */
const CANCELLED_BY_SIGNAL = Symbol('the client closed its stream');
const SESSION_CLOSED = Symbol('the session was closed');
/** How often one call's stream may be resumed after the upstream closed it early. */
const MAX_RESUMES = 10;

export class HttpSession implements UpstreamSession {
  readonly initializeResult: Record<string, unknown>;
  private readonly up: HttpUpstream;
  private readonly sessionId: string | undefined;
  private readonly protocolVersion: string | undefined;
  /** Serialised once: every call of the session sends the same headers. */
  private readonly postHeaders: string;
  /** Server-message streams (GET), ended with the session. */
  private readonly streams = new Set<Readable>();
  gone = false;
  /** Calls in flight by the client's id, so a notifications/cancelled can end them. */
  private readonly calls = new Map<JsonRpcRequest['id'], CallState>();
  private closed = false;

  constructor(up: HttpUpstream, sessionId: string | undefined, protocolVersion: string | undefined, result: Record<string, unknown>) {
    this.up = up;
    this.sessionId = sessionId;
    this.protocolVersion = protocolVersion;
    this.initializeResult = result;
    this.postHeaders = headerBlock(up.headers(sessionId, protocolVersion, { 'content-type': 'application/json', accept: ACCEPT_BOTH }));
  }

  /**
   * Sends one call through the pool's exchange API with a plain handler: no Readable body, no
   * promise chain, no AbortController per call. This is the gateway's hottest path (measured in bench/).
   */
  call(req: JsonRpcRequest, raw: string | undefined, handlers: CallHandlers, options?: CallOptions): void {
    const call: CallState = {
      req,
      handlers,
      longLived: options?.longLived === true,
      answered: false,
      lastEventId: undefined,
      retryMs: undefined,
      resumes: 0,
      tokenRetried: false,
      controller: undefined,
      reason: undefined,
    };
    this.calls.set(req.id, call);
    const signal = options?.signal;
    if (signal) {
      if (signal.aborted) call.reason = CANCELLED_BY_SIGNAL;
      else signal.addEventListener('abort', () => this.abort(call, CANCELLED_BY_SIGNAL), { once: true });
    }
    let headers = this.postHeaders;
    if (options?.headers) {
      try {
        headers += headerBlock(options.headers);
      } catch (err) {
        // A header made from what the client sent (a tool name, say) that cannot go on the wire.
        process.nextTick(() => this.fail(call, `upstream server '${this.up.name}': ${(err as Error).message}`));
        return;
      }
    }
    this.exchange(call, 'POST', headers, raw ?? JSON.stringify(req));
  }

  private abort(call: CallState, reason: unknown): void {
    if (call.answered) return;
    call.reason ??= reason;
    call.controller?.abort(new Error(String(reason)));
  }

  private answer(call: CallState, msg: JsonRpcResponse, raw: string | undefined): void {
    if (call.answered) return;
    call.answered = true;
    if (this.calls.get(call.req.id) === call) this.calls.delete(call.req.id);
    call.handlers.onResponse(msg, raw);
  }

  private fail(call: CallState, message: string): void {
    this.answer(call, upstreamError(call.req.id, JsonRpcErrors.UPSTREAM_ERROR, message), undefined);
  }

  /** One HTTP exchange of a call: its POST, or a GET that resumes its stream. */
  private exchange(call: CallState, method: 'POST' | 'GET', headers: string, body: string | undefined): void {
    const tokens = this.up.opts.tokens;
    if (tokens === undefined) return this.dispatch(call, method, headers, body, undefined);
    // A cached token is used synchronously, so only a call that must wait for a fetch waits.
    const cached = tokens.current();
    if (cached !== undefined) return this.dispatch(call, method, headers, body, cached);
    tokens.token().then(
      (token) => this.dispatch(call, method, headers, body, token),
      (err: Error) => this.fail(call, err.message),
    );
  }

  private dispatch(call: CallState, method: 'POST' | 'GET', headers: string, body: string | undefined, token: string | undefined): void {
    const up = this.up;
    let status = 0;
    let chunks: Buffer[] | undefined = [];
    let parser: ReturnType<typeof sseParser> | undefined;
    /** The upstream refused the token: the answer's body is not the call's. */
    let refused = false;
    let sent = headers;
    if (token !== undefined) {
      try {
        sent += headerBlock({ authorization: `Bearer ${token}` });
      } catch (err) {
        process.nextTick(() => this.fail(call, `upstream server '${up.name}': the OAuth access token cannot be sent: ${(err as Error).message}`));
        return;
      }
    }
    const ex = up.pool.exchange(
      {
        method,
        path: up.path,
        headers: sent,
        body,
        timeoutMs: up.opts.timeoutMs,
        bodyTimeoutMs: call.longLived ? 0 : up.opts.timeoutMs,
        idempotent: method === 'GET' || SAFE_TO_RESEND.has(call.req.method),
      },
      {
        onHead: (statusCode, h) => {
          status = statusCode;
          if (statusCode === 401 && token !== undefined) {
            refused = true;
            return;
          }
          if (h['content-type']?.includes('text/event-stream')) {
            chunks = undefined;
            if (method === 'POST') call.handlers.onStreamStart?.();
            parser = sseParser(
              (ev) => this.onEvent(call, ev),
              (ms) => {
                call.retryMs = ms;
                call.handlers.onRetryHint?.(ms);
              },
            );
          }
        },
        onData: (chunk) => {
          if (refused) return;
          if (parser) parser.feed(chunk);
          else chunks!.push(chunk);
        },
        onEnd: () => {
          if (refused) return this.onTokenRefused(call, method, headers, body, token!);
          if (parser) this.onStreamEnded(call);
          else this.onBody(call, status, chunks!.length === 1 ? chunks![0]!.toString('utf8') : Buffer.concat(chunks!).toString('utf8'));
        },
        onError: (err) => this.onError(call, err),
      },
    );
    call.controller = ex;
    if (call.reason !== undefined) ex.abort(new Error(String(call.reason)));
  }

  /** A 401 with an OAuth token: the call is sent once more with a fresh token, then given up. */
  private onTokenRefused(call: CallState, method: 'POST' | 'GET', headers: string, body: string | undefined, token: string): void {
    if (call.answered) return;
    if (call.reason !== undefined || this.closed) return this.onError(call, new Error(String(call.reason)));
    if (call.tokenRetried) return this.fail(call, tokenRefused(this.up.name));
    call.tokenRetried = true;
    this.up.opts.tokens!.invalidate(token);
    this.exchange(call, method, headers, body);
  }

  private onEvent(call: CallState, ev: SseEvent): void {
    if (ev.id) call.lastEventId = ev.id;
    if (ev.data.length === 0) {
      // A priming event: an id to resume from, no message (SEP-1699).
      if (ev.id) call.handlers.onPriming?.(ev.id);
      return;
    }
    const m = safeParse(ev.data);
    if (!m) return;
    if (!('method' in m) && m.id === call.req.id) this.answer(call, m as JsonRpcResponse, ev.data);
    else call.handlers.onRelated({ message: m, raw: ev.data, eventId: ev.id });
  }

  private onStreamEnded(call: CallState): void {
    if (call.answered) return;
    if (call.reason !== undefined) return this.onError(call, new Error(String(call.reason)));
    const last = call.lastEventId;
    // The server may end a call's stream early and expect the client to resume it (SEP-1699):
    // an HTTP client does so through us; for any other the gateway resumes it itself.
    if (last !== undefined && call.handlers.onStreamEnd?.(last)) {
      call.answered = true;
      if (this.calls.get(call.req.id) === call) this.calls.delete(call.req.id);
      return;
    }
    if (last !== undefined && !this.closed && call.resumes < MAX_RESUMES) {
      call.resumes++;
      let headers: string;
      try {
        headers = headerBlock(this.up.headers(this.sessionId, this.protocolVersion, { accept: 'text/event-stream', 'last-event-id': last }));
      } catch (err) {
        return this.fail(call, `upstream server '${this.up.name}': ${(err as Error).message}`);
      }
      setTimeout(() => this.exchange(call, 'GET', headers, undefined), call.retryMs ?? 0).unref();
      return;
    }
    this.fail(call, `upstream server '${this.up.name}' closed the stream without answering`);
  }

  private onBody(call: CallState, status: number, text: string): void {
    // A success answer is forwarded as the server wrote it; its result is parsed only if read.
    const id = resultAnswerId(text);
    if (id !== undefined) return this.answer(call, new ForwardedResult(id, text), text);
    const m = safeParse(text);
    if (m && !('method' in m)) return this.answer(call, m as JsonRpcResponse, text);
    if (status === 404 && this.sessionId !== undefined) {
      this.gone = true;
      return this.fail(call, `upstream server '${this.up.name}' no longer knows this session; start a new one`);
    }
    this.fail(call, `upstream server '${this.up.name}' answered HTTP ${status} without a JSON-RPC response`);
  }

  private onError(call: CallState, e: Error & { code?: string }): void {
    if (call.answered) return;
    if (call.reason === SESSION_CLOSED || this.closed) this.fail(call, 'the session was closed');
    else if (call.reason === CANCELLED_BY_CLIENT) this.fail(call, 'Request was cancelled by the client');
    else if (call.reason === CANCELLED_BY_SIGNAL) this.fail(call, 'the client closed its stream');
    else if (e.code === 'HEADERS_TIMEOUT' || e.code === 'BODY_TIMEOUT')
      this.fail(call, `upstream server '${this.up.name}' did not answer within ${this.up.opts.timeoutMs} ms`);
    // It was reached: what it sent could not be read, or it hung up before its answer was whole.
    else if (e.code === 'PROTOCOL' || e.code === 'CLOSED_EARLY') this.fail(call, `upstream server '${this.up.name}': ${e.message}`);
    else this.fail(call, `upstream server '${this.up.name}' is unreachable: ${e.message}`);
  }

  send(msg: JsonRpcNotification | JsonRpcResponse, raw: string | undefined): void {
    this.up
      .request({
        method: 'POST',
        headers: this.up.headers(this.sessionId, this.protocolVersion, { 'content-type': 'application/json', accept: ACCEPT_BOTH }),
        body: raw ?? JSON.stringify(msg),
        timeoutMs: this.up.opts.timeoutMs,
      })
      .then(
        (res) => void res.body.resume(),
        (err: Error) => this.up.log.warn({ err: err.message }, 'could not forward a client message upstream'),
      );
    // The server will not answer a cancelled request (spec: utilities/cancellation): stop waiting
    // for it rather than hold the call, and the client's stream, open until the timeout.
    if ('method' in msg && msg.method === 'notifications/cancelled') {
      const call = this.calls.get(msg.params?.requestId as JsonRpcRequest['id']);
      if (call) this.abort(call, CANCELLED_BY_CLIENT);
    }
  }

  async listen(onMessage: (msg: ServerMessage) => void, lastEventId?: string): Promise<ListenHandle | undefined> {
    const extra: Record<string, string> = { accept: 'text/event-stream' };
    if (lastEventId !== undefined) extra['last-event-id'] = lastEventId;
    let res: UpstreamResponse;
    try {
      res = await this.up.request({
        method: 'GET',
        headers: this.up.headers(this.sessionId, this.protocolVersion, extra),
        timeoutMs: this.up.opts.timeoutMs,
        bodyTimeoutMs: 0,
      });
    } catch (err) {
      this.up.log.warn({ err: (err as Error).message }, 'upstream refused the server-message stream');
      return undefined;
    }
    if (res.statusCode !== 200) {
      res.body.destroy();
      return undefined;
    }
    const stream = res.body;
    this.streams.add(stream);
    const parser = sseParser((ev) => {
      if (ev.data.length === 0) return;
      const m = safeParse(ev.data);
      if (m) onMessage({ message: m, raw: ev.data, eventId: ev.id });
    });
    stream.on('data', (chunk: Buffer) => parser.feed(chunk));
    const ended: Array<() => void> = [];
    let over = false;
    const end = () => {
      if (over) return;
      over = true;
      this.streams.delete(stream);
      for (const fn of ended) fn();
    };
    stream.on('end', end);
    stream.on('error', end);
    return {
      close: () => {
        over = true;
        this.streams.delete(stream);
        stream.destroy();
      },
      onEnd: (fn) => void ended.push(fn),
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.up.sessions.delete(this);
    for (const stream of this.streams) stream.destroy();
    this.streams.clear();
    for (const call of this.calls.values()) this.abort(call, SESSION_CLOSED);
    if (this.sessionId === undefined) return;
    try {
      const res = await this.up.request({
        method: 'DELETE',
        headers: this.up.headers(this.sessionId, this.protocolVersion),
        timeoutMs: 5000,
      });
      res.body.resume();
    } catch {
      // The upstream will expire the session on its own.
    }
  }
}
