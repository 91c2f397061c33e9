/** MCP protocol revisions the gateway speaks, and what it says about itself. */

/** Session-based revisions (initialize handshake, Mcp-Session-Id), newest first. */
export const SESSION_PROTOCOL_VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'] as const;
export const LATEST_SESSION_VERSION = '2025-11-25';
/** The stateless revision: no initialize, no sessions, Mcp-Method/Mcp-Name headers, server/discover. */
export const STATELESS_PROTOCOL_VERSION = '2026-07-28';

export const GATEWAY_INFO = { name: 'policylayer', version: '0.1.0' } as const;

export function isSessionVersion(v: string): boolean {
  return (SESSION_PROTOCOL_VERSIONS as readonly string[]).includes(v);
}

/** The version to answer an initialize with: the client's if we speak it, else our latest (spec: lifecycle/version negotiation). */
export function negotiateSessionVersion(requested: unknown): string {
  return typeof requested === 'string' && isSessionVersion(requested) ? requested : LATEST_SESSION_VERSION;
}

/**
 * What the gateway declares when it initializes an upstream on its own behalf (a shared process).
 * Sampling and elicitation are routed to the client whose call asked for them. Roots are not
 * declared: one client's roots must never widen what a server shared with other clients may touch.
 */
export const GATEWAY_CLIENT_CAPABILITIES = { sampling: {}, elicitation: {} } as const;

/** `_meta` keys of the stateless revision's per-request envelope. */
export const META_VERSION = 'io.modelcontextprotocol/protocolVersion';
export const META_CAPABILITIES = 'io.modelcontextprotocol/clientCapabilities';
export const META_CLIENT_INFO = 'io.modelcontextprotocol/clientInfo';
export const META_LOG_LEVEL = 'io.modelcontextprotocol/logLevel';
export const META_SERVER_INFO = 'io.modelcontextprotocol/serverInfo';
export const META_SUBSCRIPTION_ID = 'io.modelcontextprotocol/subscriptionId';

/** Error numbers the stateless revision reserves (-32020..-32099). */
export const HEADER_MISMATCH = -32020;
export const MISSING_CAPABILITY = -32021;
export const UNSUPPORTED_VERSION = -32022;

/** Session-era methods that the stateless revision removed. */
export const REMOVED_IN_STATELESS = new Set(['initialize', 'ping', 'logging/setLevel', 'resources/subscribe', 'resources/unsubscribe']);

/** Methods whose target the client mirrors in the Mcp-Name header, and where in params it lives. */
export const NAME_PARAM: Readonly<Record<string, string>> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' };
