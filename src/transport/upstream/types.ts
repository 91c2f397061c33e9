/**
 * The contract between the gateway and an upstream MCP server, whatever its transport.
 * One `UpstreamSession` stands for one MCP session as the downstream client sees it.
 */
import type { CompiledPolicy } from '../../policy/types.js';
import type { JsonRpcMessage, JsonRpcNotification, JsonRpcRequest, JsonRpcResponse } from '../../util/jsonrpc.js';

/** A server message on its way to the client, with what is needed to forward it unchanged. */
export interface ServerMessage {
  message: JsonRpcMessage;
  /** The upstream's exact serialisation, when the message is forwarded as it came. */
  raw?: string | undefined;
  /** SSE event id from an HTTP upstream, kept so the client can resume with Last-Event-ID. */
  eventId?: string | undefined;
}

export interface CallHandlers {
  /** A message tied to the call that arrives before its response: progress, logging, sampling, elicitation, roots. */
  onRelated(msg: ServerMessage): void;
  /** The final response; called exactly once. */
  onResponse(msg: JsonRpcResponse, raw: string | undefined): void;
  /** The upstream sent an SSE `retry:` hint with the call's stream (resumable streams). */
  onRetryHint?(ms: number): void;
  /** The upstream chose to answer as an event stream; a transport that can mirrors that choice. */
  onStreamStart?(): void;
  /** An event carrying only an id: a point the client may resume from (SEP-1699). */
  onPriming?(eventId: string): void;
  /**
   * The upstream closed the call's stream before answering, expecting the client to resume it with
   * Last-Event-ID. Returns true when the client's transport can do that itself (the call is then
   * over for the gateway); otherwise the upstream side resumes it and the answer comes as usual.
   */
  onStreamEnd?(lastEventId: string): boolean;
  /**
   * Calls `fn` if the client's side of the call (the HTTP response its answer would go on) closes
   * before the answer is written, e.g. its process died; returns what stops watching. Only the
   * gateway uses it, for calls it holds itself (human approval), which nobody could resume.
   */
  watchClientGone?(fn: () => void): () => void;
}

/**
 * `reply` with its answer (and, when given, its stream's end) handled by someone else first: what
 * each layer of the gateway wraps around a call. Built as one literal of a fixed shape, not as
 * `{ ...reply, onResponse }`: redefining a member the spread has just copied takes V8's slow path,
 * which was 5% of `policylayer run`'s CPU at 16 calls in flight (bench: wrap-stdio, perf).
 */
export function answeredBy(
  reply: CallHandlers,
  onResponse: CallHandlers['onResponse'],
  onStreamEnd: CallHandlers['onStreamEnd'] = reply.onStreamEnd,
): CallHandlers {
  return {
    onRelated: reply.onRelated,
    onResponse,
    onRetryHint: reply.onRetryHint,
    onStreamStart: reply.onStreamStart,
    onPriming: reply.onPriming,
    onStreamEnd,
    watchClientGone: reply.watchClientGone,
  };
}

export interface CallOptions {
  /** Aborting it cancels the call upstream (a stateless client closed its stream). */
  signal?: AbortSignal | undefined;
  /** Extra HTTP headers for this call (the stateless revision's Mcp-Method, Mcp-Name, Mcp-Param-*). */
  headers?: Record<string, string> | undefined;
  /** The answer may take arbitrarily long (a subscription stream): no body timeout. */
  longLived?: boolean | undefined;
  /**
   * The grant making this call, when it is not the session's own: stateless clients share one
   * session, so their identity travels with each call. Never sent upstream.
   */
  grant?: string | undefined;
  /** That grant's label, for the audit log. Never sent upstream. */
  grantLabel?: string | undefined;
  /** The policy for this call when the grant has its own on this server. Never sent upstream. */
  policy?: CompiledPolicy | undefined;
}

export interface ListenHandle {
  close(): void;
  /** Called when the upstream ends the stream (a resumed stream ends after the call's answer). */
  onEnd?(fn: () => void): void;
}

export interface UpstreamSession {
  /**
   * True once the upstream has ended the session on its own (it forgot it, or dropped its event
   * stream): the gateway then answers the client 404 so it starts a new session, as the spec says.
   */
  readonly gone?: boolean;
  /** The initialize result the client receives (server info, capabilities, instructions). */
  readonly initializeResult: Record<string, unknown>;
  /** Sends a request and delivers what comes back to `handlers`. Never throws: failures arrive as error responses. */
  call(req: JsonRpcRequest, raw: string | undefined, handlers: CallHandlers, options?: CallOptions): void;
  /** Client notifications (cancelled, progress, roots/list_changed...) and answers to server requests. */
  send(msg: JsonRpcNotification | JsonRpcResponse, raw: string | undefined): void;
  /**
   * Opens the stream of server messages that belong to no call (the GET stream of Streamable HTTP).
   * `lastEventId` resumes an HTTP upstream's stream where the client left it.
   */
  listen(onMessage: (msg: ServerMessage) => void, lastEventId?: string): Promise<ListenHandle | undefined>;
  /** Ends the session upstream (DELETE for HTTP). */
  close(): Promise<void>;
}

export interface Upstream {
  readonly name: string;
  /** Starts what must run before the first session (a stdio process); idempotent. */
  start(): Promise<void>;
  /** Opens a session for a client whose `initialize` request is `init`; returns the session and the result to answer with. */
  open(init: JsonRpcRequest, protocolVersion: string): Promise<UpstreamSession>;
  /** Stops everything: sessions, streams, child processes. */
  close(): Promise<void>;
  /**
   * Runs `fn`; what it sends to the server goes in one write when it returns, rather than one
   * each (for a stdio server, a system call and a wake-up of the process per message saved).
   */
  batch?(fn: () => void): void;
}

/** The response sent when a call cannot reach the upstream or loses it. */
export function upstreamError(id: JsonRpcResponse['id'], code: number, message: string, data?: unknown): JsonRpcResponse {
  const error: NonNullable<JsonRpcResponse['error']> = { code, message };
  if (data !== undefined) error.data = data;
  return { jsonrpc: '2.0', id, error };
}

/**
 * An HTTP upstream refused to open a session with this status. The status is kept apart from the
 * message so a caller can tell a missing endpoint (404, 405: perhaps a legacy SSE server) from
 * missing credentials (401, 403) without reading prose.
 */
export class UpstreamHttpError extends Error {
  readonly status: number;
  /** The start of the refusal's body, with configured credentials removed; empty when there was none. */
  readonly detail: string;
  constructor(status: number, message: string, detail = '', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UpstreamHttpError';
    this.status = status;
    this.detail = detail;
  }
}
