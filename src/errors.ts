/**
 * The one table of PolicyLayer error codes. Every error the gateway raises carries a stable
 * `code` from here; docs/errors.md documents each one, and `toHttp`/`toJsonRpc` are the only
 * places that decide how an error reaches a client.
 */

export const ErrorCodes = {
  /** A gateway config or policy file is invalid; the message names file, path and line. */
  CONFIG_INVALID: 'PL_CONFIG_INVALID',
  /** A config or policy file could not be read. */
  CONFIG_UNREADABLE: 'PL_CONFIG_UNREADABLE',
  /** An `${ENV}` reference in the config names a variable that is not set. */
  CONFIG_ENV_MISSING: 'PL_CONFIG_ENV_MISSING',
  /** The request body is not valid JSON. */
  PARSE_ERROR: 'PL_PARSE_ERROR',
  /** The body is JSON but not a valid JSON-RPC 2.0 message, or a batch. */
  INVALID_REQUEST: 'PL_INVALID_REQUEST',
  /** The request body is larger than `limits.max_body_bytes`. */
  BODY_TOO_LARGE: 'PL_BODY_TOO_LARGE',
  /** Host or Origin header not allowed (DNS rebinding protection). */
  FORBIDDEN_ORIGIN: 'PL_FORBIDDEN_ORIGIN',
  /** No server is registered under that name. */
  UNKNOWN_SERVER: 'PL_UNKNOWN_SERVER',
  /** The Mcp-Session-Id is unknown or expired. */
  UNKNOWN_SESSION: 'PL_UNKNOWN_SESSION',
  /** A request other than initialize came without a session id. */
  SESSION_REQUIRED: 'PL_SESSION_REQUIRED',
  /** The MCP-Protocol-Version header names a version the gateway does not speak. */
  UNSUPPORTED_PROTOCOL_VERSION: 'PL_UNSUPPORTED_PROTOCOL_VERSION',
  /** The client did not accept the content types the transport requires. */
  NOT_ACCEPTABLE: 'PL_NOT_ACCEPTABLE',
  /** The request's Content-Type is not application/json. */
  UNSUPPORTED_MEDIA_TYPE: 'PL_UNSUPPORTED_MEDIA_TYPE',
  /** HTTP method not supported on this endpoint. */
  METHOD_NOT_ALLOWED: 'PL_METHOD_NOT_ALLOWED',
  /** The upstream server is not reachable or its process is not running. */
  UPSTREAM_UNAVAILABLE: 'PL_UPSTREAM_UNAVAILABLE',
  /** The upstream process exited or the connection broke while the call was in flight. */
  UPSTREAM_CRASHED: 'PL_UPSTREAM_CRASHED',
  /** The upstream answered with something that is not MCP. */
  UPSTREAM_PROTOCOL: 'PL_UPSTREAM_PROTOCOL',
  /** The upstream did not answer within `timeout`. */
  UPSTREAM_TIMEOUT: 'PL_UPSTREAM_TIMEOUT',
  /** The gateway is shutting down and takes no new calls. */
  SHUTTING_DOWN: 'PL_SHUTTING_DOWN',
  /** A policy refused the call (reaches the agent as an isError tool result). */
  POLICY_DENIED: 'PL_POLICY_DENIED',
  /** An admin API request without a valid admin credential. */
  ADMIN_UNAUTHORIZED: 'PL_ADMIN_UNAUTHORIZED',
  /** An admin credential whose role may not do what the request asks. */
  ADMIN_FORBIDDEN: 'PL_ADMIN_FORBIDDEN',
  /** An admin API request names a grant, server, policy version or route that does not exist. */
  NOT_FOUND: 'PL_NOT_FOUND',
  /** An admin API write conflicts with what exists (a label or name taken, a server defined in gateway.yaml). */
  CONFLICT: 'PL_CONFLICT',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** JSON-RPC 2.0 error numbers used on the wire (spec section 5.1, plus MCP's own). */
export const JsonRpcErrors = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  /** Implementation-defined server error range: used for upstream failures. */
  UPSTREAM_ERROR: -32000,
  /** Also in the server range: a session is needed or unknown. */
  SESSION_ERROR: -32001,
} as const;

export class PolicyLayerError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PolicyLayerError';
    this.code = code;
    this.details = details;
  }
}

/** A config or policy problem; `issues` hold one line each, already formatted with location. */
export class ConfigError extends PolicyLayerError {
  readonly issues: string[];
  constructor(issues: string[], code: ErrorCode = ErrorCodes.CONFIG_INVALID) {
    super(code, issues.join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

interface WireError {
  status: number;
  rpcCode: number;
}

/**
 * The exhaustive mapping from an error code to how it is answered over HTTP and JSON-RPC.
 * A `satisfies` check makes adding a code without deciding its mapping a compile error.
 */
const WIRE: { [K in ErrorCode]: WireError } = {
  PL_CONFIG_INVALID: { status: 500, rpcCode: JsonRpcErrors.INTERNAL_ERROR },
  PL_CONFIG_UNREADABLE: { status: 500, rpcCode: JsonRpcErrors.INTERNAL_ERROR },
  PL_CONFIG_ENV_MISSING: { status: 500, rpcCode: JsonRpcErrors.INTERNAL_ERROR },
  PL_PARSE_ERROR: { status: 400, rpcCode: JsonRpcErrors.PARSE_ERROR },
  PL_INVALID_REQUEST: { status: 400, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_BODY_TOO_LARGE: { status: 413, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_FORBIDDEN_ORIGIN: { status: 403, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_UNKNOWN_SERVER: { status: 404, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_UNKNOWN_SESSION: { status: 404, rpcCode: JsonRpcErrors.SESSION_ERROR },
  PL_SESSION_REQUIRED: { status: 400, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_UNSUPPORTED_PROTOCOL_VERSION: { status: 400, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_NOT_ACCEPTABLE: { status: 406, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_UNSUPPORTED_MEDIA_TYPE: { status: 415, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_METHOD_NOT_ALLOWED: { status: 405, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_UPSTREAM_UNAVAILABLE: { status: 502, rpcCode: JsonRpcErrors.UPSTREAM_ERROR },
  PL_UPSTREAM_CRASHED: { status: 502, rpcCode: JsonRpcErrors.UPSTREAM_ERROR },
  PL_UPSTREAM_PROTOCOL: { status: 502, rpcCode: JsonRpcErrors.UPSTREAM_ERROR },
  PL_UPSTREAM_TIMEOUT: { status: 504, rpcCode: JsonRpcErrors.UPSTREAM_ERROR },
  PL_SHUTTING_DOWN: { status: 503, rpcCode: JsonRpcErrors.UPSTREAM_ERROR },
  PL_POLICY_DENIED: { status: 200, rpcCode: JsonRpcErrors.INTERNAL_ERROR },
  PL_ADMIN_UNAUTHORIZED: { status: 401, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_ADMIN_FORBIDDEN: { status: 403, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_NOT_FOUND: { status: 404, rpcCode: JsonRpcErrors.INVALID_REQUEST },
  PL_CONFLICT: { status: 409, rpcCode: JsonRpcErrors.INVALID_REQUEST },
};

export function wireOf(code: ErrorCode): WireError {
  return WIRE[code];
}
