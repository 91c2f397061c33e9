/**
 * Bearer-token authentication of MCP requests against the grants in the control-plane store.
 * Answers are cached for a short time so a call does not wait for the database, and the cache
 * is short enough that a revocation made by any gateway process takes effect within a second.
 *
 * With `auth.oidc` a JWT from the configured issuer is accepted too: it names a grant (by a claim
 * or a group) and that grant is then held to exactly the rules a grant token is.
 */
import type { ControlStore, GrantRecord, TokenRecord } from '../store/store.js';
import type { JwtVerifier } from './jwt.js';
import { looksLikeJwt } from './jwt.js';
import { LookupCache } from './lookup-cache.js';
import { hashToken, looksLikeToken, sameHash } from './tokens.js';

/** Who is calling: the grant a valid token belongs to. */
export interface Principal {
  readonly grantId: string;
  readonly label: string;
  readonly servers: readonly string[];
  readonly policies: Readonly<Record<string, string>>;
  /** How the caller proved it: a grant token, or a JWT from the OIDC issuer. */
  readonly via?: 'token' | 'oidc';
  /** The JWT's `sub`, when `via` is `oidc`. */
  readonly subject?: string;
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
  /** Verifies JWTs from `auth.oidc`'s issuer; without it only grant tokens are accepted. */
  readonly verifier?: JwtVerifier | undefined;
}

type Lookup = { grant: GrantRecord; token: TokenRecord } | undefined;

// The grant label rule of `policylayer grants create`: a claim value outside it names no grant,
// and is not echoed into a response header.
const GRANT_LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class GrantAuthenticator {
  private readonly store: ControlStore;
  private readonly now: () => number;
  private readonly cache: LookupCache<Lookup>;
  private readonly verifier: JwtVerifier | undefined;
  private readonly grantsByLabel: LookupCache<GrantRecord | undefined>;

  constructor(store: ControlStore, opts: AuthenticatorOptions = {}) {
    this.store = store;
    this.now = opts.now ?? Date.now;
    const ttl = opts.cacheMs ?? 500;
    const size = opts.cacheSize ?? 10_000;
    this.cache = new LookupCache(ttl, size, this.now);
    this.grantsByLabel = new LookupCache(ttl, size, this.now);
    this.verifier = opts.verifier;
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
    if (!looksLikeToken(token)) {
      if (this.verifier !== undefined && looksLikeJwt(token)) return this.authenticateJwt(this.verifier, token, server);
      return invalid(this.verifier === undefined ? 'the token is not a PolicyLayer grant token' : 'the token is neither a PolicyLayer grant token nor a JWT');
    }
    const hash = hashToken(token);
    const found = await this.lookup(hash);
    if (found === undefined || !sameHash(found.token.hash, hash)) return invalid('unknown token');
    const { grant, token: record } = found;
    const refusal = grantRefusal(grant, server, this.now(), record);
    if (refusal !== undefined) return refused(refusal, grant.label, server);
    return { ok: true, principal: { grantId: grant.id, label: grant.label, servers: grant.servers, policies: grant.policies, via: 'token' } };
  }

  /** Forgets every cached lookup (after this process changes grants itself). */
  forget(): void {
    this.cache.clear();
    this.grantsByLabel.clear();
  }

  private async authenticateJwt(verifier: JwtVerifier, token: string, server: string): Promise<AuthResult> {
    // The signature, issuer, audience and times (exp included) are checked on every request:
    // only the grant lookup is cached.
    const v = await verifier.verify(token);
    if (!v.ok) return invalid(v.description);
    // The grant claim wins; grants_by_group is asked only when that claim names no grant at all
    // (a revoked grant named by the claim stays refused rather than falling back to a group's).
    const tried: string[] = [];
    let grant: GrantRecord | undefined;
    for (const label of [v.grantLabel, v.groupGrantLabel]) {
      if (label === undefined || !GRANT_LABEL.test(label) || tried.includes(label)) continue;
      tried.push(label);
      grant = await this.grantByLabel(label);
      if (grant !== undefined) break;
    }
    if (grant === undefined) {
      const claim = verifier.config.grantClaim;
      const named = tried.length > 0 ? `no grant is labelled ${tried.map((l) => `'${l}'`).join(' or ')}` : `it has no usable ${claim} claim and none of its groups maps to a grant`;
      return invalid(`the token names no grant: ${named}`);
    }
    const refusal = grantRefusal(grant, server, this.now());
    if (refusal !== undefined) return refused(refusal, grant.label, server);
    return {
      ok: true,
      principal: { grantId: grant.id, label: grant.label, servers: grant.servers, policies: grant.policies, via: 'oidc', subject: v.subject },
    };
  }

  private lookup(hash: string): Promise<Lookup> {
    return this.cache.get(hash, () => this.store.findByTokenHash(hash));
  }

  private grantByLabel(label: string): Promise<GrantRecord | undefined> {
    // getGrant also answers by id; a claim must name a label, so an id match is no match.
    return this.grantsByLabel.get(label, async () => {
      const grant = await this.store.getGrant(label);
      return grant?.label === label ? grant : undefined;
    });
  }
}

function refused(refusal: GrantRefusal, label: string, server: string): AuthResult {
  const description = {
    revoked: `the grant '${label}' was revoked`,
    expired: `the grant '${label}' has expired`,
    rotated: `this token of '${label}' was rotated out`,
    unbound: `the grant '${label}' is not bound to the server '${server}'`,
  }[refusal.why];
  return { ok: false, status: refusal.status, error: refusal.error, description };
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
