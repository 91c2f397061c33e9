/**
 * JSON-RPC 2.0 envelope handling. The gateway works at this level: it reads just enough of a
 * message to route and govern it, and forwards the original bytes whenever it changes nothing.
 */
import { ErrorCodes, JsonRpcErrors, PolicyLayerError } from '../errors.js';

export type JsonRpcId = string | number;

export interface JsonRpcRequest {
  jsonrpc: '2.0';
  id: JsonRpcId;
  method: string;
  params?: Record<string, unknown>;
}

export interface JsonRpcNotification {
  jsonrpc: '2.0';
  method: string;
  params?: Record<string, unknown>;
}

export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

export interface JsonRpcResponse {
  jsonrpc: '2.0';
  id: JsonRpcId | null;
  result?: unknown;
  error?: JsonRpcErrorObject;
}

export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResponse;

/**
 * A server's success answer that the gateway forwards as the server's own text: only its envelope
 * was read (`resultAnswerId`), and `result` is parsed the first time something reads it (a
 * tools/list the policy filters, the audit log's outcome, a limit's refund). Most answers are only
 * forwarded, and parsing each one, and collecting the objects, was 9% of `policylayer run`'s CPU
 * at 16 calls in flight (bench: wrap-stdio, perf).
 *
 * `result` and `error` are getters of the class, and a spread copies only own members: copy an
 * answer with `withId` or by naming `result`, as `{ ...msg, result }` does. (Getters of the object
 * itself would survive a spread, but an object literal with getters is built on V8's slow path and
 * cost more than the parse it saves.) `JSON.stringify` sees the whole answer. Text whose result
 * turns out not to be JSON reads as an upstream error, since nobody can use that result.
 */
export class ForwardedResult implements JsonRpcResponse {
  readonly jsonrpc = '2.0' as const;
  id: JsonRpcId;
  // Private fields proper, not members: whatever copies the object's own members leaves them.
  readonly #text: string;
  #parsed: { result?: unknown; error?: JsonRpcErrorObject } | undefined;

  constructor(id: JsonRpcId, text: string) {
    this.id = id;
    this.#text = text;
  }

  get result(): unknown {
    return this.#read().result;
  }

  get error(): JsonRpcErrorObject | undefined {
    return this.#read().error;
  }

  toJSON(): JsonRpcResponse {
    return withId(this, this.id);
  }

  /**
   * The answer's outcome, from its text where that settles it: a text with no `isError` in it, and
   * no `\u` escape that could spell the key, is a success, parsed or not (the audit log and the
   * limits ask this of every answer). Whether the rest of the text is JSON is the client's to see.
   */
  get outcome(): Outcome {
    if (this.#parsed === undefined && !this.#text.includes('isError') && !this.#text.includes('\\u')) return 'ok';
    return parsedOutcome(this);
  }

  #read(): { result?: unknown; error?: JsonRpcErrorObject } {
    if (this.#parsed === undefined) {
      try {
        this.#parsed = { result: (JSON.parse(this.#text) as { result: unknown }).result };
      } catch (err) {
        this.#parsed = { error: { code: JsonRpcErrors.UPSTREAM_ERROR, message: `the upstream server answered with text that is not JSON: ${(err as Error).message}` } };
      }
    }
    return this.#parsed;
  }
}

/** How a call's answer ended: a JSON-RPC error, a tool result with `isError: true`, or a success. */
export type Outcome = 'error' | 'tool_error' | 'ok';

export function outcomeOf(msg: JsonRpcResponse): Outcome {
  return msg instanceof ForwardedResult ? msg.outcome : parsedOutcome(msg);
}

function parsedOutcome(msg: JsonRpcResponse): Outcome {
  if (msg.error !== undefined) return 'error';
  return (msg.result as { isError?: unknown } | undefined)?.isError === true ? 'tool_error' : 'ok';
}

/** A plain copy of an answer under another id (a ForwardedResult's `result` is not an own member). */
export function withId(msg: JsonRpcResponse, id: JsonRpcId | null): JsonRpcResponse {
  const error = msg.error;
  return error !== undefined ? { jsonrpc: '2.0', id, error } : { jsonrpc: '2.0', id, result: msg.result };
}

export type MessageKind = 'request' | 'notification' | 'response';

export function isRequest(m: JsonRpcMessage): m is JsonRpcRequest {
  return 'method' in m && 'id' in m && m.id !== undefined;
}
export function isNotification(m: JsonRpcMessage): m is JsonRpcNotification {
  return 'method' in m && !('id' in m && m.id !== undefined);
}
export function isResponse(m: JsonRpcMessage): m is JsonRpcResponse {
  return !('method' in m);
}

function isValidId(id: unknown): id is JsonRpcId {
  return typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
}

/**
 * Checks a parsed value is one JSON-RPC 2.0 message and says what kind. Batches are refused:
 * MCP removed JSON-RPC batching in 2025-06-18, and governing each element separately would only
 * add a second path around the policy.
 */
export function classify(value: unknown): MessageKind {
  if (Array.isArray(value)) {
    throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, 'JSON-RPC batches are not supported: send one message per request');
  }
  if (typeof value !== 'object' || value === null) {
    throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, 'expected a JSON-RPC 2.0 message object');
  }
  const m = value as Record<string, unknown>;
  if (m.jsonrpc !== '2.0') {
    throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, 'expected "jsonrpc": "2.0"');
  }
  if ('method' in m) {
    if (typeof m.method !== 'string' || m.method.length === 0) {
      throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, '"method" must be a non-empty string');
    }
    if (m.params !== undefined && (typeof m.params !== 'object' || m.params === null || Array.isArray(m.params))) {
      throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, '"params" must be an object (MCP uses named parameters)');
    }
    if (!('id' in m) || m.id === undefined) return 'notification';
    if (!isValidId(m.id)) {
      throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, '"id" must be a string or a number');
    }
    return 'request';
  }
  if ('result' in m === 'error' in m) {
    throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, 'a response must have exactly one of "result" or "error"');
  }
  if (!isValidId(m.id) && m.id !== null) {
    throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, '"id" must be a string or a number');
  }
  return 'response';
}

/** Parses one message from text; throws a PolicyLayerError with PARSE_ERROR or INVALID_REQUEST. */
export function parseMessage(text: string): { message: JsonRpcMessage; kind: MessageKind } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new PolicyLayerError(ErrorCodes.PARSE_ERROR, `the body is not valid JSON: ${(err as Error).message}`);
  }
  const kind = classify(value);
  return { message: value as JsonRpcMessage, kind };
}

export function errorResponse(id: JsonRpcId | null, code: number, message: string, data?: unknown): JsonRpcResponse {
  const error: JsonRpcErrorObject = { code, message };
  if (data !== undefined) error.data = data;
  return { jsonrpc: '2.0', id, error };
}

export function resultResponse(id: JsonRpcId | null, result: unknown): JsonRpcResponse {
  return { jsonrpc: '2.0', id, result };
}

/** Best effort: the id of a body that failed validation, so the error can still be correlated. */
export function idOf(value: unknown): JsonRpcId | null {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const id = (value as Record<string, unknown>).id;
    if (isValidId(id)) return id;
  }
  return null;
}

export { JsonRpcErrors };
