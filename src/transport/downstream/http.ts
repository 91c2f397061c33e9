/**
 * The Streamable HTTP endpoint clients connect to: `/mcp/<server>` with POST, GET and DELETE.
 * This file turns HTTP into gateway calls and gateway answers back into HTTP; it decides nothing.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GrantAuthenticator, Principal } from '../../identity/authenticator.js';
import { parsePolicy } from '../../policy/index.js';
import type { CompiledPolicy } from '../../policy/types.js';
import type { Logger } from '../../telemetry/logger.js';
import { ErrorCodes, PolicyLayerError, wireOf } from '../../errors.js';
import type { Gateway, ServerRuntime, Session } from '../../gateway/gateway.js';
import { isSessionVersion, META_VERSION, STATELESS_PROTOCOL_VERSION } from '../../gateway/protocol.js';
import {
  errorResponse,
  idOf,
  parseMessage,
  type JsonRpcId,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../../util/jsonrpc.js';
import { formatSse } from '../../util/sse.js';
import type { CallHandlers, ServerMessage } from '../upstream/types.js';
import { FastLane, type LaneRequest } from './lane.js';
import { checkHostAndOrigin, type OriginPolicy } from './origin.js';
import { StatelessHandler } from './stateless.js';

export interface HttpListenerOptions {
  host: string;
  port: number;
  maxBodyBytes: number;
  origins: OriginPolicy;
  logger: Logger;
  /** Present when `auth.required`: every MCP request must carry a grant's bearer token. */
  authenticator?: GrantAuthenticator | undefined;
  /** Serves /admin/api on this listener (when no separate admin address is configured). */
  admin?: AdminHandler | undefined;
  /** False when /metrics moved to the admin listener; default true. */
  serveMetrics?: boolean;
  /** Issuers whose JWTs the endpoints accept (`auth.oidc`), named in the resource metadata. */
  authorizationServers?: readonly string[];
  /**
   * The pages of approval webhooks' approve/deny links (`/approvals/<id>/approve|deny`), when
   * webhooks are configured. Outside grant authentication: the link's signed token is the credential.
   */
  approvalLinks?: AdminHandler | undefined;
}

/** What answers /admin/api requests (the admin API, wired in by the composition root). */
export interface AdminHandler {
  handle(req: IncomingMessage, res: ServerResponse, path: string, query: string): Promise<void>;
}

export const ADMIN_API_PREFIX = '/admin/api';

const MCP_PREFIX = '/mcp/';
/** node:http's idle limit between requests on a connection, and the lane's. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/** A request to an MCP endpoint: node:http's, or the fast lane's with its body already read. */
export type McpRequest = IncomingMessage | LaneRequest;

/** What the MCP endpoints do with a response: met by node:http's ServerResponse and the fast lane's. */
export interface McpResponse {
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  readonly closed: boolean;
  setHeader(name: string, value: string | number): unknown;
  writeHead(status: number, headers?: Record<string, string | number>): { end(): unknown };
  write(chunk: string): boolean;
  end(chunk?: string): unknown;
  flushHeaders(): void;
  on(event: 'close', fn: () => void): unknown;
  off(event: 'close', fn: () => void): unknown;
}
/** Where approval webhooks' links point (approvals/link-pages.ts). */
const APPROVAL_LINKS_PREFIX = '/approvals/';
/** RFC 9728 section 3: the metadata of resource `/mcp/<server>` is at this path followed by it. */
const RESOURCE_METADATA = '/.well-known/oauth-protected-resource';
/** How long close() lets connections with nothing left to answer linger before cutting them. */
const CLOSE_GRACE_MS = 250;

export class HttpListener {
  readonly gateway: Gateway;
  readonly opts: HttpListenerOptions;
  private readonly log: Logger;
  private readonly server: Server;
  private readonly lane: FastLane;
  private readonly stateless: StatelessHandler;
  /** Open SSE responses, ended at shutdown so clients see a clean close rather than a reset. */
  private readonly streams = new Set<McpResponse>();
  /** Grants' own policies, compiled once per grant, server and text. */
  private readonly grantPolicies = new Map<string, { text: string; policy: CompiledPolicy }>();

  constructor(gateway: Gateway, opts: HttpListenerOptions) {
    this.gateway = gateway;
    this.opts = opts;
    this.log = opts.logger;
    this.stateless = new StatelessHandler(gateway, opts.logger);
    this.server = createServer({ keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err, null));
    });
    // MCP's POSTs, nearly every request a client makes, take the fast lane; the rest of the
    // listener (admin API, metrics, GET streams, anything unusual) is node:http's.
    this.lane = new FastLane(this.server, {
      maxBodyBytes: opts.maxBodyBytes,
      keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
      accepts: (method, path) => method === 'POST' && path.startsWith(MCP_PREFIX),
      handle: (req, res) => {
        this.mcp(req, res, req.path, req.query).catch((err: unknown) => this.fail(res, err, null));
      },
    });
  }

  listen(): Promise<AddressInfo> {
    return listenOn(this.server, this.opts.host, this.opts.port);
  }

  get url(): string {
    return urlOf(this.server);
  }

  /** Stops accepting connections; open streams are ended once the gateway has drained. */
  async close(): Promise<void> {
    await this.stateless.close();
    for (const res of this.streams) res.end();
    this.streams.clear();
    await new Promise<void>((resolve) => {
      // A connection whose request never completed (a client that aborted a stream it was
      // opening) is neither idle nor answered, and would hold close() until the client goes away.
      // Every answer has been sent by now (the gateway drained), so after a moment for the last
      // bytes to leave, whatever is still connected is cut.
      const cut = setTimeout(() => {
        this.server.closeAllConnections();
        this.lane.closeAll();
      }, CLOSE_GRACE_MS);
      cut.unref();
      this.server.close(() => {
        clearTimeout(cut);
        resolve();
      });
      this.server.closeIdleConnections();
      this.lane.closeIdle();
    });
  }

  stopAccepting(): void {
    this.server.close();
    this.server.closeIdleConnections();
    this.lane.closeIdle();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    if (path === '/healthz') {
      this.sendJson(res, this.gateway.isDraining ? 503 : 200, { status: this.gateway.isDraining ? 'draining' : 'ok' });
      return;
    }
    if (path === ADMIN_API_PREFIX || path.startsWith(`${ADMIN_API_PREFIX}/`)) {
      if (this.opts.admin === undefined) {
        this.sendJson(res, 404, { error: 'not found: the admin API is not served on this address' });
        return;
      }
      return this.opts.admin.handle(req, res, path, q >= 0 ? url.slice(q + 1) : '');
    }
    if (path.startsWith(APPROVAL_LINKS_PREFIX) && this.opts.approvalLinks !== undefined) {
      return this.opts.approvalLinks.handle(req, res, path, q >= 0 ? url.slice(q + 1) : '');
    }
    const metrics = this.opts.serveMetrics === false ? undefined : this.gateway.metrics;
    if (path === '/metrics' && metrics !== undefined) {
      // Same Host/Origin check as the MCP endpoints: a web page must not read them through the browser.
      checkHostAndOrigin(req, this.opts.origins);
      // With grants on, the listener may face the network; server names and call counts are for
      // the operator, who scrapes from the host itself, or from the admin listener when there is one.
      if (this.opts.authenticator !== undefined && !isLoopback(req.socket.remoteAddress)) {
        this.sendJson(res, 403, { error: 'metrics are served to loopback clients only when auth.required is true' });
        return;
      }
      const text = await metrics.text();
      res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
      res.end(text);
      return;
    }
    const auth = this.opts.authenticator;
    if (auth !== undefined && (path === RESOURCE_METADATA || path.startsWith(`${RESOURCE_METADATA}${MCP_PREFIX}`))) {
      this.resourceMetadata(req, res, path.slice(RESOURCE_METADATA.length));
      return;
    }
    if (!path.startsWith(MCP_PREFIX)) {
      this.sendJson(res, 404, { error: 'not found: MCP endpoints are at /mcp/<server>' });
      return;
    }
    return this.mcp(req, res, path, q >= 0 ? url.slice(q + 1) : '');
  }

  /** `/mcp/<server>`, whichever way the request came in. */
  private async mcp(req: McpRequest, res: McpResponse, path: string, query: string): Promise<void> {
    checkHostAndOrigin(req, this.opts.origins);
    const auth = this.opts.authenticator;
    const server = this.gateway.server(decodeSegment(path.slice(MCP_PREFIX.length)));
    if (this.gateway.isDraining) throw new PolicyLayerError(ErrorCodes.SHUTTING_DOWN, 'the gateway is shutting down');
    let principal: Principal | undefined;
    if (auth !== undefined) {
      principal = await this.authenticate(req, res, auth, server, query);
      if (principal === undefined) return;
    }
    const version = header(req, 'mcp-protocol-version');
    // A POST is checked once its body is read: a request of the stateless revision naming a version
    // the gateway lacks must get -32022 with the supported list, so its client can choose again.
    if (req.method !== 'POST' && version !== undefined && version !== STATELESS_PROTOCOL_VERSION && !isSessionVersion(version)) {
      throw new PolicyLayerError(ErrorCodes.UNSUPPORTED_PROTOCOL_VERSION, `unsupported MCP-Protocol-Version '${version}'`);
    }
    switch (req.method) {
      case 'POST':
        return this.post(req, res, server, version, principal);
      case 'GET':
        return this.get(req, res, server, version, principal);
      case 'DELETE':
        return this.delete(req, res, server, principal);
      default:
        res.setHeader('allow', 'GET, POST, DELETE');
        throw new PolicyLayerError(ErrorCodes.METHOD_NOT_ALLOWED, `method ${req.method} is not allowed here`);
    }
  }

  /**
   * Checks the request's bearer token; on failure answers 401 or 403 with the WWW-Authenticate
   * challenge that points at the resource metadata (RFC 6750 section 3, RFC 9728 section 5.1) and
   * returns undefined. Nothing reaches the gateway, let alone the upstream.
   */
  private async authenticate(
    req: McpRequest,
    res: McpResponse,
    auth: GrantAuthenticator,
    server: ServerRuntime,
    query: string,
  ): Promise<Principal | undefined> {
    const challenge = (status: 401 | 403, error: string | undefined, description: string) => {
      const metadata = `${this.baseUrl(req)}${RESOURCE_METADATA}${MCP_PREFIX}${encodeURIComponent(server.name)}`;
      const parts = [`realm="policylayer"`, `resource_metadata="${metadata}"`];
      if (error !== undefined) parts.push(`error="${error}"`, `error_description="${description.replace(/["\\]/g, '')}"`);
      res.setHeader('www-authenticate', `Bearer ${parts.join(', ')}`);
      this.sendJson(res, status, { error: error ?? 'unauthorized', error_description: description });
      return undefined;
    };
    // A token in a URL ends up in logs, histories and Referer headers: refused even when valid.
    if (query !== '' && (new URLSearchParams(query).has('access_token') || /plg_[A-Za-z0-9_-]{20,}/.test(decodeURIComponentSafe(query)))) {
      return challenge(401, 'invalid_request', 'tokens are not accepted in the URL: send Authorization: Bearer <token>');
    }
    const result = await auth.authenticate(header(req, 'authorization'), server.name);
    if (!result.ok) {
      this.log.info({ server: server.name, status: result.status, error: result.error, reason: result.description }, 'request refused: authentication');
      return challenge(result.status, result.error, result.description);
    }
    return result.principal;
  }

  /** The grant's own policy on `server`, compiled (once per text), or undefined when it has none. */
  private policyOf(principal: Principal, server: ServerRuntime): CompiledPolicy | undefined {
    const text = principal.policies[server.name];
    if (text === undefined) return undefined;
    const key = `${principal.grantId}\u0000${server.name}`;
    const cached = this.grantPolicies.get(key);
    if (cached !== undefined && cached.text === text) return cached.policy;
    // Validated when the grant was created; a policy this build cannot read fails the request
    // (and so fails closed) rather than falling back to a more permissive one.
    const policy = parsePolicy(text, `grant ${principal.label}, server ${server.name}`);
    this.grantPolicies.set(key, { text, policy });
    return policy;
  }

  /** RFC 9728 protected-resource metadata of `/mcp/<server>` (or of the gateway as a whole). */
  private resourceMetadata(req: IncomingMessage, res: ServerResponse, resourcePath: string): void {
    checkHostAndOrigin(req, this.opts.origins);
    if (resourcePath !== '') this.gateway.server(decodeSegment(resourcePath.slice(MCP_PREFIX.length)));
    const base = this.baseUrl(req);
    res.setHeader('cache-control', 'max-age=300');
    this.sendJson(res, 200, {
      resource: `${base}${resourcePath}`,
      // Grant tokens are issued by the gateway's operators, not by an OAuth authorization server;
      // with auth.oidc, the issuer is one a client may get a token from.
      authorization_servers: this.opts.authorizationServers ?? [],
      bearer_methods_supported: ['header'],
      resource_name: resourcePath === '' ? 'PolicyLayer gateway' : `PolicyLayer: ${decodeSegment(resourcePath.slice(MCP_PREFIX.length))}`,
    });
  }

  /** The URL the client used to reach this listener (its Host header has passed the origin check). */
  private baseUrl(req: McpRequest): string {
    return `http://${header(req, 'host') ?? this.url.slice('http://'.length)}`;
  }

  private async post(
    req: McpRequest,
    res: McpResponse,
    server: ServerRuntime,
    version: string | undefined,
    principal: Principal | undefined,
  ): Promise<void> {
    const ct = header(req, 'content-type') ?? '';
    if (!ct.toLowerCase().startsWith('application/json')) {
      throw new PolicyLayerError(ErrorCodes.UNSUPPORTED_MEDIA_TYPE, 'Content-Type must be application/json');
    }
    const accept = header(req, 'accept');
    if (accept !== undefined && !/application\/json|text\/event-stream|\*\/\*/i.test(accept)) {
      throw new PolicyLayerError(ErrorCodes.NOT_ACCEPTABLE, 'Accept must include application/json and text/event-stream');
    }
    const raw = 'body' in req ? req.body : await readBody(req, this.opts.maxBodyBytes);
    let parsed;
    try {
      parsed = parseMessage(raw);
    } catch (err) {
      let id: JsonRpcId | null = null;
      try {
        id = idOf(JSON.parse(raw));
      } catch {
        // not JSON at all: the id is unknowable
      }
      throw Object.assign(err as Error, { rpcId: id });
    }
    const { message, kind } = parsed;
    const sessionId = header(req, 'mcp-session-id');

    if (version === STATELESS_PROTOCOL_VERSION || (kind === 'request' && isStatelessRequest(message as JsonRpcRequest))) {
      // A stateless client cannot resume a stream (the revision has no Last-Event-ID), so an early
      // close upstream is resumed by the gateway itself.
      const caller = principal === undefined ? undefined : { grant: principal.grantId, grantLabel: principal.label, policy: this.policyOf(principal, server) };
      return this.stateless.post(req, res, server, message, kind, raw, this.replyOver(res, false), caller);
    }
    if (version !== undefined && !isSessionVersion(version)) {
      throw Object.assign(new PolicyLayerError(ErrorCodes.UNSUPPORTED_PROTOCOL_VERSION, `unsupported MCP-Protocol-Version '${version}'`), {
        rpcId: idOf(message),
      });
    }
    if (kind === 'request' && (message as JsonRpcRequest).method === 'initialize') {
      if (sessionId !== undefined) {
        throw Object.assign(new PolicyLayerError(ErrorCodes.INVALID_REQUEST, 'initialize must not carry an Mcp-Session-Id'), {
          rpcId: (message as JsonRpcRequest).id,
        });
      }
      // A failed initialize still answers with the request's id (JSON-RPC 2.0 section 5: null only when the id is unknowable).
      const { session, response } = await this.gateway.initialize(server, message as JsonRpcRequest).catch((err: unknown) => {
        throw Object.assign(err as Error, { rpcId: (message as JsonRpcRequest).id });
      });
      // The session is the grant's: limits count against it, and no other grant may use the session.
      if (principal !== undefined) {
        session.grant = principal.grantId;
        session.grantLabel = principal.label;
        session.policy = this.policyOf(principal, server);
      }
      res.setHeader('mcp-session-id', session.id);
      this.sendJson(res, 200, response);
      return;
    }
    const session = this.requireSession(sessionId, server, message, principal);
    if (kind === 'request') {
      this.gateway.call(session, message as JsonRpcRequest, raw, this.replyOver(res));
      return;
    }
    this.gateway.send(session, message as JsonRpcNotification | JsonRpcResponse, raw);
    res.writeHead(202).end();
  }

  private requireSession(sessionId: string | undefined, server: ServerRuntime, message: unknown, principal: Principal | undefined): Session {
    if (sessionId === undefined) {
      throw Object.assign(
        new PolicyLayerError(ErrorCodes.SESSION_REQUIRED, 'Mcp-Session-Id header is required: send initialize first'),
        { rpcId: idOf(message) },
      );
    }
    let session: Session;
    try {
      session = this.gateway.session(sessionId, server);
    } catch (err) {
      throw Object.assign(err as Error, { rpcId: idOf(message) });
    }
    // A session id presented with another grant's token answers as unknown: a stolen id is worth
    // nothing, and the answer does not even confirm that the session exists.
    if (principal !== undefined && session.grant !== principal.grantId) {
      this.log.warn({ server: server.name, grant: principal.label }, 'request refused: the session belongs to another grant');
      throw Object.assign(new PolicyLayerError(ErrorCodes.UNKNOWN_SESSION, 'unknown or expired session: start a new one with initialize'), {
        rpcId: idOf(message),
      });
    }
    return session;
  }

  /**
   * Answers a call with plain JSON when the upstream sends nothing but the answer, and switches the
   * response to an SSE stream as soon as a message related to the call arrives first.
   */
  replyOver(res: McpResponse, resumable = true): CallHandlers {
    let streaming = false;
    const startStream = () => {
      if (streaming) return;
      streaming = true;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      this.streams.add(res);
      res.on('close', () => this.streams.delete(res));
    };
    const handlers: CallHandlers = {
      onRelated: (m: ServerMessage) => {
        if (res.writableEnded) return;
        startStream();
        res.write(formatSse({ id: m.eventId, data: m.raw ?? JSON.stringify(m.message) }));
      },
      onStreamStart: () => {
        if (!res.writableEnded) startStream();
      },
      onPriming: (eventId: string) => {
        if (res.writableEnded) return;
        startStream();
        res.write(formatSse({ id: eventId, data: '' }));
      },
      onRetryHint: (ms: number) => {
        if (res.writableEnded) return;
        startStream();
        res.write(`retry: ${ms}\n\n`);
      },
      watchClientGone: (fn: () => void) => {
        const onClose = () => {
          if (!res.writableFinished) fn();
        };
        if (res.closed) {
          queueMicrotask(onClose);
          return () => {};
        }
        res.on('close', onClose);
        return () => res.off('close', onClose);
      },
      onResponse: (msg, raw) => {
        if (res.writableEnded) return;
        const data = raw ?? JSON.stringify(msg);
        if (streaming) {
          res.end(formatSse({ data }));
          this.streams.delete(res);
        } else {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
          res.end(data);
        }
      },
    };
    if (resumable) {
      // Mirror an early close: the client resumes with GET + Last-Event-ID, which reaches the upstream.
      handlers.onStreamEnd = () => {
        if (!streaming || res.writableEnded) return false;
        res.end();
        this.streams.delete(res);
        return true;
      };
    }
    return handlers;
  }

  private async get(
    req: McpRequest,
    res: McpResponse,
    server: ServerRuntime,
    version: string | undefined,
    principal: Principal | undefined,
  ): Promise<void> {
    if (version === STATELESS_PROTOCOL_VERSION) {
      res.setHeader('allow', 'POST');
      throw new PolicyLayerError(ErrorCodes.METHOD_NOT_ALLOWED, 'the stateless protocol has no GET stream');
    }
    const accept = header(req, 'accept') ?? '';
    if (!/text\/event-stream/i.test(accept)) {
      throw new PolicyLayerError(ErrorCodes.NOT_ACCEPTABLE, 'Accept must include text/event-stream');
    }
    const session = this.requireSession(header(req, 'mcp-session-id'), server, undefined, principal);
    const lastEventId = header(req, 'last-event-id');
    // A GET with Last-Event-ID resumes one earlier stream; only the plain GET is the session's one stream.
    const resuming = lastEventId !== undefined;
    if (!resuming && session.listener) {
      this.sendJson(res, 409, errorResponse(null, -32600, 'this session already has an open stream'));
      return;
    }
    let opened = false;
    const stream = await this.gateway.listen(
      session,
      (m) => {
        if (!opened || res.writableEnded) return;
        res.write(formatSse({ id: m.eventId, data: m.raw ?? JSON.stringify(m.message) }));
      },
      lastEventId,
    );
    if (!stream) {
      res.setHeader('allow', 'POST, DELETE');
      throw new PolicyLayerError(ErrorCodes.METHOD_NOT_ALLOWED, 'the upstream server offers no stream for server messages');
    }
    if (!resuming) session.listener = stream;
    opened = true;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    this.streams.add(res);
    stream.onEnd?.(() => res.end());
    res.on('close', () => {
      this.streams.delete(res);
      stream.close();
      if (session.listener === stream) session.listener = undefined;
    });
  }

  private async delete(req: McpRequest, res: McpResponse, server: ServerRuntime, principal: Principal | undefined): Promise<void> {
    const session = this.requireSession(header(req, 'mcp-session-id'), server, undefined, principal);
    await this.gateway.closeSession(session);
    res.writeHead(200).end();
  }

  private sendJson(res: McpResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** The one place an error becomes an HTTP answer: status from the error table, body a JSON-RPC error. */
  private fail(res: McpResponse, err: unknown, id: JsonRpcId | null): void {
    if (res.headersSent) {
      res.end();
      return;
    }
    const rpcId = (err as { rpcId?: JsonRpcId | null }).rpcId ?? id;
    if (err instanceof PolicyLayerError) {
      const wire = wireOf(err.code);
      if (wire.status >= 500) this.log.warn({ code: err.code, err: err.message }, 'request failed');
      const rpc = (err as { rpc?: JsonRpcResponse }).rpc;
      this.sendJson(res, wire.status === 200 ? 400 : wire.status, rpc ? { ...rpc, id: rpcId } : errorResponse(rpcId, wire.rpcCode, err.message, { code: err.code }));
      return;
    }
    this.log.error({ err: (err as Error).stack ?? String(err) }, 'unexpected error handling a request');
    this.sendJson(res, 500, errorResponse(rpcId, -32603, 'internal gateway error'));
  }
}

/** A request is of the stateless revision when it carries the revision's envelope or is its discovery call. */
function isStatelessRequest(req: JsonRpcRequest): boolean {
  if (req.method === 'server/discover') return true;
  const meta = req.params?._meta;
  return typeof meta === 'object' && meta !== null && META_VERSION in meta;
}

/** A malformed %-escape cannot name a configured server: it is an unknown server (404), not a gateway fault (500). */
function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.'));
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return text;
  }
}

/** A path segment percent-decoded, or as it is when its escapes are malformed. */
export function decodeSegment(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Binds `server`; a port clash or a bad address rejects instead of throwing later. */
export async function listenOn(server: Server, host: string, port: number): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}

/** The base URL of a bound server, with IPv6 addresses in brackets. */
export function urlOf(server: Server): string {
  const a = server.address() as AddressInfo;
  return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
}

export function header(req: { headers: IncomingHttpHeaders }, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads the body up to `limit` bytes; a larger body is refused before it is buffered (413). */
export function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(new PolicyLayerError(ErrorCodes.BODY_TOO_LARGE, `request body of ${declared} bytes exceeds the limit of ${limit} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new PolicyLayerError(ErrorCodes.BODY_TOO_LARGE, `request body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
