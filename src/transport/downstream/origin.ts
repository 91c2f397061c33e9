/**
 * DNS-rebinding protection (MCP transports spec, "Security Warning"): a browser page on another
 * site must not be able to reach a gateway bound to localhost by pointing its own hostname here.
 * The Host header must name an allowed host and any Origin header an allowed origin, else 403.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { ErrorCodes, PolicyLayerError } from '../../errors.js';

export interface OriginPolicy {
  /** Host names without port (`localhost`, `127.0.0.1`, `[::1]`, or a configured public name). */
  hosts: ReadonlySet<string>;
  /** Full origins (`http://localhost:3000`) or host names, which then allow any scheme and port. */
  origins: ReadonlySet<string>;
}

export function originPolicy(hosts: readonly string[], origins: readonly string[]): OriginPolicy {
  return { hosts: new Set(hosts.map((h) => h.toLowerCase())), origins: new Set(origins.map((o) => o.toLowerCase())) };
}

/** Strips the port from a Host header value, keeping IPv6 brackets. */
export function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end >= 0 ? h.slice(0, end + 1) : h;
  }
  const colon = h.indexOf(':');
  return colon >= 0 ? h.slice(0, colon) : h;
}

export function checkHostAndOrigin(req: { headers: IncomingHttpHeaders }, policy: OriginPolicy): void {
  const host = req.headers.host;
  if (host === undefined || !policy.hosts.has(hostName(host))) {
    throw new PolicyLayerError(ErrorCodes.FORBIDDEN_ORIGIN, `Host '${host ?? ''}' is not allowed (see allowed_hosts in the gateway config)`);
  }
  const origin = req.headers.origin;
  if (origin === undefined) return;
  const o = origin.toLowerCase();
  if (policy.origins.has(o)) return;
  let name: string;
  try {
    name = hostName(new URL(o).host);
  } catch {
    throw new PolicyLayerError(ErrorCodes.FORBIDDEN_ORIGIN, `Origin '${origin}' is not allowed`);
  }
  if (!policy.origins.has(name)) {
    throw new PolicyLayerError(ErrorCodes.FORBIDDEN_ORIGIN, `Origin '${origin}' is not allowed (see allowed_origins in the gateway config)`);
  }
}
