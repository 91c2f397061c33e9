/**
 * Serving clients of the stateless revision (2026-07-28), whatever the upstream speaks.
 *
 * - An upstream that speaks the revision itself gets each request forwarded as it came, headers
 *   included; multi-round-trip results and subscriptions pass through untouched.
 * - A session-era upstream (any stdio server, older HTTP servers) is reached through one session
 *   the gateway opens on the clients' behalf and shares among them, with ids and progress tokens
 *   made unique. Server-to-client requests cannot reach a stateless client there, so they are
 *   answered with an error rather than left hanging.
 *
 * Either way the call goes through the same `Gateway.call` as every other call, so the policy
 * is applied exactly once.
 */
import type { Logger } from '../telemetry/logger.js';
import { JsonRpcErrors } from '../errors.js';
import { HttpUpstream } from '../transport/upstream/http.js';
import { MultiplexedSession } from '../transport/upstream/multiplex.js';
import { answeredBy, type CallHandlers, type CallOptions, type ServerMessage, type UpstreamSession } from '../transport/upstream/types.js';
import {
  errorResponse,
  resultResponse,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../util/jsonrpc.js';
import { Session, type Gateway, type ServerRuntime } from './gateway.js';
import {
  GATEWAY_CLIENT_CAPABILITIES,
  GATEWAY_INFO,
  LATEST_SESSION_VERSION,
  META_LOG_LEVEL,
  META_SERVER_INFO,
  META_SUBSCRIPTION_ID,
  SESSION_PROTOCOL_VERSIONS,
  STATELESS_PROTOCOL_VERSION,
} from './protocol.js';

/** A session-era session seen through the multiplexer, so it can stand behind a gateway Session. */
class SharedUpstream implements UpstreamSession {
  readonly mux: MultiplexedSession;
  private readonly listeners = new Set<(m: ServerMessage) => void>();
  private stream: Promise<{ close(): void } | undefined> | undefined;

  constructor(inner: UpstreamSession) {
    this.mux = new MultiplexedSession(inner, 'pl-stateless');
  }

  get initializeResult(): Record<string, unknown> {
    return this.mux.initializeResult;
  }

  call(req: JsonRpcRequest, _raw: string | undefined, handlers: CallHandlers, options?: CallOptions): void {
    const wantsLogs = (req.params?._meta as Record<string, unknown> | undefined)?.[META_LOG_LEVEL] !== undefined;
    const gid = this.mux.call(req, {
      onRelated: (m) => {
        const msg = m.message;
        if ('id' in msg && 'method' in msg) {
          // A stateless client cannot be sent a request: refuse it upstream so the tool does not hang.
          this.mux.inner.send(
            errorResponse(msg.id, JsonRpcErrors.INTERNAL_ERROR, 'the client uses the stateless protocol and cannot answer server requests through PolicyLayer'),
            undefined,
          );
          return;
        }
        if ('method' in msg && msg.method === 'notifications/message' && !wantsLogs) return;
        handlers.onRelated(m);
      },
      onResponse: handlers.onResponse,
    });
    options?.signal?.addEventListener('abort', () => this.mux.cancel(gid, 'the client closed the stream'), { once: true });
  }

  send(msg: JsonRpcNotification | JsonRpcResponse, raw: string | undefined): void {
    this.mux.inner.send(msg, raw);
  }

  /** Fans the shared session's server-message stream out to every subscriber. */
  async listen(onMessage: (m: ServerMessage) => void): Promise<{ close(): void }> {
    this.listeners.add(onMessage);
    this.stream ??= this.mux.inner.listen((m) => {
      for (const l of this.listeners) l(m);
    });
    await this.stream;
    return { close: () => void this.listeners.delete(onMessage) };
  }

  close(): Promise<void> {
    return this.mux.inner.close();
  }
}

type Channel = { kind: 'forward'; session: Session } | { kind: 'shared'; session: Session; shared: SharedUpstream };

export class StatelessBridge {
  private readonly gateway: Gateway;
  private readonly server: ServerRuntime;
  private readonly log: Logger;
  private channel: Promise<Channel> | undefined;

  constructor(gateway: Gateway, server: ServerRuntime, logger: Logger) {
    this.gateway = gateway;
    this.server = server;
    this.log = logger;
  }

  private open(): Promise<Channel> {
    this.channel ??= (async (): Promise<Channel> => {
      const up = this.server.upstream;
      if (up instanceof HttpUpstream && (await up.speaksStateless())) {
        const session = new Session(`stateless:${this.server.name}`, this.server, up.statelessChannel(), STATELESS_PROTOCOL_VERSION, Date.now());
        session.shared = true;
        return { kind: 'forward', session };
      }
      const init: JsonRpcRequest = {
        jsonrpc: '2.0',
        id: 'policylayer-init',
        method: 'initialize',
        params: { protocolVersion: LATEST_SESSION_VERSION, capabilities: GATEWAY_CLIENT_CAPABILITIES, clientInfo: GATEWAY_INFO },
      };
      const inner = await up.open(init, LATEST_SESSION_VERSION);
      inner.send({ jsonrpc: '2.0', method: 'notifications/initialized' }, undefined);
      const shared = new SharedUpstream(inner);
      const session = new Session(`stateless:${this.server.name}`, this.server, shared, LATEST_SESSION_VERSION, Date.now());
      session.shared = true;
      this.log.debug({ server: this.server.name }, 'opened a shared upstream session for stateless clients');
      return { kind: 'shared', session, shared };
    })();
    this.channel.catch(() => (this.channel = undefined));
    return this.channel;
  }

  /** Answers `server/discover`: the upstream's own answer, or one built from its initialize result. */
  async discover(req: JsonRpcRequest, raw: string, reply: CallHandlers, options: CallOptions): Promise<void> {
    const ch = await this.open();
    if (ch.kind === 'forward') {
      this.gateway.call(ch.session, req, raw, reply, options);
      return;
    }
    const init = ch.session.upstream.initializeResult;
    const result: Record<string, unknown> = {
      resultType: 'complete',
      supportedVersions: [STATELESS_PROTOCOL_VERSION, ...SESSION_PROTOCOL_VERSIONS],
      capabilities: init.capabilities ?? {},
      ttlMs: 0,
      cacheScope: 'private',
      _meta: { [META_SERVER_INFO]: init.serverInfo ?? GATEWAY_INFO },
    };
    if (typeof init.instructions === 'string') result.instructions = init.instructions;
    reply.onResponse(resultResponse(req.id, result), undefined);
  }

  async call(req: JsonRpcRequest, raw: string, reply: CallHandlers, options: CallOptions): Promise<void> {
    const ch = await this.open();
    reply = asStatelessResult(reply, req.method);
    if (ch.kind === 'shared' && req.method === 'subscriptions/listen') {
      await this.listenShared(ch, req, reply, options);
      return;
    }
    this.gateway.call(ch.session, req, raw, reply, options);
  }

  notify(msg: JsonRpcNotification, raw: string): void {
    void this.open().then((ch) => {
      // Cancellation by id cannot be mapped without a session; over HTTP closing the stream cancels.
      if (ch.kind === 'forward') ch.session.upstream.send(msg, raw);
    });
  }

  /**
   * `subscriptions/listen` against a session-era upstream: the shared session's server messages,
   * filtered to what the client asked for, each tagged with the subscription id.
   */
  private async listenShared(ch: Extract<Channel, { kind: 'shared' }>, req: JsonRpcRequest, reply: CallHandlers, options: CallOptions): Promise<void> {
    const wanted = (req.params?.notifications ?? {}) as {
      toolsListChanged?: boolean;
      promptsListChanged?: boolean;
      resourcesListChanged?: boolean;
      resourceSubscriptions?: string[];
    };
    const caps = (ch.session.upstream.initializeResult.capabilities ?? {}) as Record<string, { listChanged?: boolean; subscribe?: boolean } | undefined>;
    const honoured: Record<string, unknown> = {};
    if (wanted.toolsListChanged && caps.tools?.listChanged) honoured.toolsListChanged = true;
    if (wanted.promptsListChanged && caps.prompts?.listChanged) honoured.promptsListChanged = true;
    if (wanted.resourcesListChanged && caps.resources?.listChanged) honoured.resourcesListChanged = true;
    const uris = caps.resources?.subscribe && Array.isArray(wanted.resourceSubscriptions) ? wanted.resourceSubscriptions : [];
    if (uris.length > 0) honoured.resourceSubscriptions = uris;
    for (const uri of uris) {
      ch.shared.mux.call({ jsonrpc: '2.0', id: 0, method: 'resources/subscribe', params: { uri } }, { onRelated: () => {}, onResponse: () => {} });
    }
    const tag = { [META_SUBSCRIPTION_ID]: req.id };
    reply.onRelated({
      message: { jsonrpc: '2.0', method: 'notifications/subscriptions/acknowledged', params: { notifications: honoured, _meta: tag } },
    });
    const wants = (msg: JsonRpcNotification): boolean => {
      switch (msg.method) {
        case 'notifications/tools/list_changed':
          return honoured.toolsListChanged === true;
        case 'notifications/prompts/list_changed':
          return honoured.promptsListChanged === true;
        case 'notifications/resources/list_changed':
          return honoured.resourcesListChanged === true;
        case 'notifications/resources/updated':
          return uris.includes(msg.params?.uri as string);
        default:
          return false;
      }
    };
    const handle = await ch.shared.listen((m) => {
      const msg = m.message;
      if (!('method' in msg) || 'id' in msg || !wants(msg)) return;
      const meta = (msg.params?._meta as Record<string, unknown> | undefined) ?? {};
      reply.onRelated({ message: { ...msg, params: { ...msg.params, _meta: { ...meta, ...tag } } } });
    });
    // The subscription lasts until the client closes its stream.
    if (options.signal?.aborted) handle.close();
    else options.signal?.addEventListener('abort', () => handle.close(), { once: true });
  }

  async close(): Promise<void> {
    const ch = await this.channel?.catch(() => undefined);
    if (ch?.kind === 'shared') await ch.shared.close();
  }
}

/** Results the stateless revision makes cacheable: they must say for how long and for whom (SEP-2549). */
const CACHEABLE = new Set(['tools/list', 'prompts/list', 'resources/list', 'resources/templates/list', 'resources/read']);

/**
 * Every result of the stateless revision names its `resultType`, and cacheable ones carry `ttlMs`
 * and `cacheScope`; clients of the revision refuse a result without them. Session-era servers
 * never send them, nor does the gateway's own answer (a policy denial), so a result that lacks
 * them is completed the way the revision's servers do: `complete`, immediately stale, private
 * (a policy-filtered list is per grant). A result that already has them passes byte for byte.
 */
function asStatelessResult(reply: CallHandlers, method: string): CallHandlers {
  return answeredBy(reply, (msg, raw) => {
    const r = msg.result as Record<string, unknown> | undefined;
    if (typeof r !== 'object' || r === null || Array.isArray(r) || 'resultType' in r) return reply.onResponse(msg, raw);
    const result: Record<string, unknown> = { resultType: 'complete', ...r };
    if (CACHEABLE.has(method)) {
      result.ttlMs ??= 0;
      result.cacheScope ??= 'private';
    }
    reply.onResponse({ ...msg, result }, undefined);
  });
}

export function methodNotFound(req: JsonRpcRequest): JsonRpcResponse {
  return errorResponse(req.id, JsonRpcErrors.METHOD_NOT_FOUND, `Method not found: ${req.method} (removed in protocol revision ${STATELESS_PROTOCOL_VERSION})`);
}
