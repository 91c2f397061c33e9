/**
 * Bearer-token authentication of MCP requests against the grants in the control-plane store.
 * Answers are cached for a short time so a call does not wait for the database, and the cache
 * is short enough that a revocation made by any gateway process takes effect within a second.
 */
import type { ControlStore, GrantRecord, TokenRecord } from '../store/store.js';
import { hashToken, looksLikeToken, sameHash } from './tokens.js';

/** Who is calling: the grant a valid token belongs to. */
export interface Principal {
  readonly grantId: string;
  readonly label: string;
  readonly servers: readonly string[];
  readonly policies: Readonly<Record<string, string>>;
}

/** RFC 6750 section 3.1 error codes. */
export type AuthErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope';

export type AuthResult =
  | { readonly ok: true; readonly principal: Principal }
  | {
      readonly ok: false;
      readonly status: 401 | 403;
      /** Absent when no credentials were sent at all (RFC 6750 section 3.1: then no error code). */
      readonly error: AuthErrorCode | undefined;
      readonly description: string;
    };

export interface AuthenticatorOptions {
  readonly now?: () => number;
  /** How long a lookup (found or not) is reused; default 500 ms, so revocations apply within a second. */
  readonly cacheMs?: number;
  /** Most cached lookups; default 10,000. */
  readonly cacheSize?: number;
}

type Lookup = { grant: GrantRecord; token: TokenRecord } | undefined;

export class GrantAuthenticator {
  private readonly store: ControlStore;
  private readonly now: () => number;
  private readonly cacheMs: number;
  private readonly cacheSize: number;
  private readonly cache = new Map<string, { at: number; lookup: Promise<Lookup> }>();

  constructor(store: ControlStore, opts: AuthenticatorOptions = {}) {
    this.store = store;
    this.now = opts.now ?? Date.now;
    this.cacheMs = opts.cacheMs ?? 500;
    this.cacheSize = opts.cacheSize ?? 10_000;
  }

  /** Checks an `Authorization` header value for a call to `server`. Rejects only if the store fails. */
  async authenticate(authorization: string | undefined, server: string): Promise<AuthResult> {
    if (authorization === undefined || authorization.trim() === '') {
      return { ok: false, status: 401, error: undefined, description: 'this endpoint needs a grant token: Authorization: Bearer <token>' };
    }
    const m = /^Bearer +(\S+)\s*$/i.exec(authorization);
    if (m === null) {
      return { ok: false, status: 401, error: 'invalid_request', description: 'the Authorization header must be "Bearer <token>"' };
    }
    const token = m[1]!;
    if (!looksLikeToken(token)) return invalid('the token is not a PolicyLayer grant token');
    const hash = hashToken(token);
    const found = await this.lookup(hash);
    if (found === undefined || !sameHash(found.token.hash, hash)) return invalid('unknown token');
    const { grant, token: record } = found;
    const refusal = grantRefusal(grant, server, this.now(), record);
    if (refusal !== undefined) {
      const label = grant.label;
      const description = {
        revoked: `the grant '${label}' was revoked`,
        expired: `the grant '${label}' has expired`,
        rotated: `this token of '${label}' was rotated out`,
        unbound: `the grant '${label}' is not bound to the server '${server}'`,
      }[refusal.why];
      return { ok: false, status: refusal.status, error: refusal.error, description };
    }
    return { ok: true, principal: { grantId: grant.id, label: grant.label, servers: grant.servers, policies: grant.policies } };
  }

  /** Forgets every cached lookup (after this process changes grants itself). */
  forget(): void {
    this.cache.clear();
  }

  private lookup(hash: string): Promise<Lookup> {
    const now = this.now();
    const hit = this.cache.get(hash);
    if (hit !== undefined && now - hit.at < this.cacheMs) return hit.lookup;
    const lookup = this.store.findByTokenHash(hash);
    // A failed lookup is not remembered: the next request asks the store again.
    lookup.catch(() => this.cache.delete(hash));
    if (this.cache.size >= this.cacheSize) {
      // Maps iterate in insertion order: the first key is the oldest entry.
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.delete(hash);
    this.cache.set(hash, { at: now, lookup });
    return lookup;
  }
}

/** Why a grant is refused before any policy is asked, with the HTTP status and RFC 6750 error it gets. */
export interface GrantRefusal {
  readonly why: 'revoked' | 'expired' | 'rotated' | 'unbound';
  readonly status: 401 | 403;
  readonly error: 'invalid_token' | 'insufficient_scope';
}

/**
 * Whether the gateway refuses `grant` (and, given, this token of it) on `server` at `now`, and
 * how: the one rule the authenticator applies and `explain --grant` reports.
 */
export function grantRefusal(grant: GrantRecord, server: string, now: number, token?: TokenRecord): GrantRefusal | undefined {
  if (grant.revokedAt !== null) return { why: 'revoked', status: 401, error: 'invalid_token' };
  if (grant.expiresAt !== null && grant.expiresAt <= now) return { why: 'expired', status: 401, error: 'invalid_token' };
  if (token !== undefined && token.validUntil !== null && token.validUntil <= now) return { why: 'rotated', status: 401, error: 'invalid_token' };
  if (!grant.servers.includes(server)) return { why: 'unbound', status: 403, error: 'insufficient_scope' };
  return undefined;
}

function invalid(description: string): AuthResult {
  return { ok: false, status: 401, error: 'invalid_token', description };
}
