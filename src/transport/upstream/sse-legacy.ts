/**
 * A remote server on the legacy HTTP+SSE transport (protocol 2024-11-05): the client opens a GET
 * event stream, the server names a POST endpoint in an `endpoint` event, and every answer comes
 * back on the stream. Each client session gets its own stream, so ids pass through unchanged.
 */
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from '../../telemetry/logger.js';
import { JsonRpcErrors } from '../../errors.js';
import {
  classify,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../../util/jsonrpc.js';
import { sseParser } from '../../util/sse.js';
import { UpstreamHttpError, upstreamError, type CallHandlers, type ServerMessage, type Upstream, type UpstreamSession } from './types.js';
import type { HttpUpstreamOptions } from './http.js';
import { OAuthTokenError, sendWithToken, tokenRefused } from './oauth.js';

export class LegacySseUpstream implements Upstream {
  readonly name: string;
  readonly opts: HttpUpstreamOptions;
  readonly log: Logger;
  readonly url: URL;
  readonly pool: Pool;
  readonly sessions = new Set<LegacySession>();

  constructor(opts: HttpUpstreamOptions) {
    this.name = opts.name;
    this.opts = opts;
    this.log = opts.logger.child({ server: opts.name });
    this.url = new URL(opts.url);
    this.pool = new Pool(this.url.origin, { keepAliveTimeout: 30_000 });
  }

  async start(): Promise<void> {}

  async open(init: JsonRpcRequest): Promise<UpstreamSession> {
    const session = new LegacySession(this);
    this.sessions.add(session);
    try {
      await session.connect();
    } catch (err) {
      // A stream that opened but never named its endpoint would otherwise stay open, unowned.
      await session.close();
      throw err;
    }
    const response = await new Promise<JsonRpcResponse>((resolve) => {
      session.call(init, undefined, { onRelated: () => {}, onResponse: (m) => resolve(m) });
    });
    if (response.error) {
      await session.close();
      throw Object.assign(new Error(response.error.message), { rpc: response });
    }
    session.initializeResult = response.result as Record<string, unknown>;
    return session;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => s.close()));
    await this.pool.close().catch(() => {});
  }
}

interface Pending {
  handlers: CallHandlers;
  progressToken: unknown;
  timer: NodeJS.Timeout;
}

class LegacySession implements UpstreamSession {
  initializeResult: Record<string, unknown> = {};
  private readonly up: LegacySseUpstream;
  private readonly ac = new AbortController();
  private endpoint: string | undefined;
  private readonly pending = new Map<JsonRpcId, Pending>();
  private listener: ((m: ServerMessage) => void) | undefined;
  private closed = false;

  constructor(up: LegacySseUpstream) {
    this.up = up;
  }

  async connect(): Promise<void> {
    let res: Dispatcher.ResponseData;
    try {
      res = await sendWithToken(this.up.opts.tokens, (auth) =>
        this.up.pool.request({
          path: this.up.url.pathname + this.up.url.search,
          method: 'GET',
          headers: { ...this.up.opts.headers, accept: 'text/event-stream', ...auth },
          signal: this.ac.signal,
          headersTimeout: this.up.opts.timeoutMs,
          bodyTimeout: 0,
        }),
        refusedToken,
      );
    } catch (err) {
      if (err instanceof OAuthTokenError) throw err;
      throw new Error(`upstream server '${this.up.name}' is unreachable: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode === 401 && this.up.opts.tokens !== undefined) {
      await res.body.dump();
      throw new Error(tokenRefused(this.up.name));
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new UpstreamHttpError(res.statusCode, `upstream server '${this.up.name}' refused the event stream (HTTP ${res.statusCode})`);
    }
    let gotEndpoint!: () => void;
    const endpointReady = new Promise<void>((r) => (gotEndpoint = r));
    const parser = sseParser((ev) => {
      if (ev.event === 'endpoint') {
        this.endpoint = new URL(ev.data, this.up.url).toString();
        gotEndpoint();
        return;
      }
      if (ev.event !== undefined && ev.event !== 'message') return;
      let msg: JsonRpcMessage;
      try {
        msg = JSON.parse(ev.data) as JsonRpcMessage;
        classify(msg);
      } catch {
        return;
      }
      this.onMessage(msg, ev.data);
    });
    res.body.on('data', (c: Buffer) => parser.feed(c));
    res.body.on('error', () => {});
    res.body.on('end', () => this.onStreamEnd());
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`upstream server '${this.up.name}' sent no endpoint event`)), this.up.opts.timeoutMs).unref(),
    );
    await Promise.race([endpointReady, timeout]);
  }

  gone = false;

  private onStreamEnd(): void {
    // Without its event stream the session can never answer again: the client must start anew.
    if (!this.closed) this.gone = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.handlers.onResponse(upstreamError(id, JsonRpcErrors.UPSTREAM_ERROR, `upstream server '${this.up.name}' closed its event stream`), undefined);
    }
    this.pending.clear();
  }

  private onMessage(msg: JsonRpcMessage, raw: string): void {
    if (!('method' in msg)) {
      const p = msg.id === null ? undefined : this.pending.get(msg.id);
      if (!p) return;
      clearTimeout(p.timer);
      this.pending.delete(msg.id!);
      p.handlers.onResponse(msg, raw);
      return;
    }
    if (msg.method === 'notifications/progress') {
      for (const p of this.pending.values()) {
        if (p.progressToken === msg.params?.progressToken) {
          p.timer.refresh();
          p.handlers.onRelated({ message: msg, raw });
          return;
        }
      }
    }
    // Other server messages carry no call id: with one call in flight they can only concern it.
    if (this.pending.size === 1) {
      this.pending.values().next().value!.handlers.onRelated({ message: msg, raw });
      return;
    }
    this.listener?.({ message: msg, raw });
  }

  call(req: JsonRpcRequest, raw: string | undefined, handlers: CallHandlers): void {
    const meta = req.params?._meta as Record<string, unknown> | undefined;
    const timer = setTimeout(() => {
      if (!this.pending.delete(req.id)) return;
      handlers.onResponse(upstreamError(req.id, JsonRpcErrors.UPSTREAM_ERROR, `upstream server '${this.up.name}' did not answer within ${this.up.opts.timeoutMs} ms`), undefined);
    }, this.up.opts.timeoutMs);
    timer.unref();
    this.pending.set(req.id, { handlers, progressToken: meta?.progressToken, timer });
    this.post(raw ?? JSON.stringify(req)).catch((err: Error) => {
      const p = this.pending.get(req.id);
      if (!p) return;
      clearTimeout(p.timer);
      this.pending.delete(req.id);
      handlers.onResponse(upstreamError(req.id, JsonRpcErrors.UPSTREAM_ERROR, err.message), undefined);
    });
  }

  private async post(body: string): Promise<void> {
    if (!this.endpoint || this.closed) throw new Error(`upstream server '${this.up.name}' has no open session`);
    const url = new URL(this.endpoint);
    // Sent through the pool of the configured URL's origin whatever origin the endpoint event
    // named, so the token goes nowhere else.
    const res = await sendWithToken(this.up.opts.tokens, (auth) =>
      this.up.pool.request({
        path: url.pathname + url.search,
        method: 'POST',
        headers: { ...this.up.opts.headers, 'content-type': 'application/json', ...auth },
        body,
        headersTimeout: this.up.opts.timeoutMs,
      }),
      refusedToken,
    );
    await res.body.dump();
    if (res.statusCode === 401 && this.up.opts.tokens !== undefined) throw new Error(tokenRefused(this.up.name));
    if (res.statusCode >= 300) throw new Error(`upstream server '${this.up.name}' refused the message (HTTP ${res.statusCode})`);
  }

  send(msg: JsonRpcNotification | JsonRpcResponse, raw: string | undefined): void {
    this.post(raw ?? JSON.stringify(msg)).catch((err: Error) => this.up.log.warn({ err: err.message }, 'could not forward a client message upstream'));
  }

  async listen(onMessage: (m: ServerMessage) => void): Promise<{ close(): void }> {
    this.listener = onMessage;
    return { close: () => void (this.listener === onMessage && (this.listener = undefined)) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.up.sessions.delete(this);
    this.ac.abort();
    this.onStreamEnd();
  }
}

/** A 401 answer, read no further: the request goes again with a fresh token. */
async function refusedToken(res: Dispatcher.ResponseData): Promise<boolean> {
  if (res.statusCode !== 401) return false;
  await res.body.dump();
  return true;
}
