/**
 * Who may use the admin API: an admin credential (`pla_…`, created on the host with
 * `policylayer admins create`) or, when OIDC is configured, a JWT whose groups map to a role.
 * Grant tokens (`plg_…`) are agents' credentials and never open the admin API.
 */
import type { AdminCredentialRecord, AdminRole, ControlStore } from '../store/store.js';
import { looksLikeJwt } from '../identity/jwt.js';
import { LookupCache } from '../identity/lookup-cache.js';
import { hashToken, looksLikeAdminToken, looksLikeToken } from '../identity/tokens.js';
import type { Actor } from './control.js';

export type AdminAuthResult = { readonly ok: true; readonly actor: Actor } | { readonly ok: false; readonly description: string };

/** Verifies a JWT for the admin API: the subject and the role its groups map to (if any). */
export type AdminJwtCheck = (token: string) => Promise<{ ok: true; subject: string; role: AdminRole | undefined } | { ok: false; description: string }>;

export interface AdminAuthenticatorOptions {
  readonly now?: () => number;
  /** How long a lookup is reused; default 500 ms, so a revoked admin credential stops within a second. */
  readonly cacheMs?: number;
  readonly jwt?: AdminJwtCheck | undefined;
}

/** The rank of each role: a route needing `policy_manager` admits `admin` too. */
const RANK: Record<AdminRole, number> = { viewer: 0, policy_manager: 1, admin: 2 };

export function roleAllows(role: AdminRole, needed: AdminRole): boolean {
  return RANK[role] >= RANK[needed];
}

export class AdminAuthenticator {
  private readonly store: ControlStore;
  private readonly opts: AdminAuthenticatorOptions;
  private readonly now: () => number;
  private readonly cache: LookupCache<AdminCredentialRecord | undefined>;

  constructor(store: ControlStore, opts: AdminAuthenticatorOptions = {}) {
    this.store = store;
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    // Admin requests are few: a small bound is plenty.
    this.cache = new LookupCache(opts.cacheMs ?? 500, 1000, this.now);
  }

  /** Checks an `Authorization` header value. Rejects only if the store fails. */
  async authenticate(authorization: string | undefined): Promise<AdminAuthResult> {
    if (authorization === undefined || authorization.trim() === '') {
      return { ok: false, description: 'the admin API needs an admin credential: Authorization: Bearer <token>' };
    }
    const m = /^Bearer +(\S+)\s*$/i.exec(authorization);
    if (m === null) return { ok: false, description: 'the Authorization header must be "Bearer <token>"' };
    const token = m[1]!;
    if (looksLikeToken(token)) {
      return { ok: false, description: 'a grant token is an agent credential and cannot use the admin API: use an admin credential (policylayer admins create)' };
    }
    if (!looksLikeAdminToken(token)) {
      if (this.opts.jwt !== undefined && looksLikeJwt(token)) return this.viaJwt(this.opts.jwt, token);
      return { ok: false, description: 'the token is not a PolicyLayer admin credential' };
    }
    const hash = hashToken(token);
    const found = await this.cache.get(hash, () => this.store.findAdminByTokenHash(hash));
    if (found === undefined) return { ok: false, description: 'unknown admin credential' };
    if (found.revokedAt !== null && found.revokedAt <= this.now()) return { ok: false, description: `the admin credential '${found.label}' was revoked` };
    return { ok: true, actor: { name: found.label, role: found.role } };
  }

  private async viaJwt(check: AdminJwtCheck, token: string): Promise<AdminAuthResult> {
    const r = await check(token);
    if (!r.ok) return { ok: false, description: r.description };
    if (r.role === undefined) return { ok: false, description: `the token of '${r.subject}' maps to no admin role (auth.oidc.roles_by_group)` };
    return { ok: true, actor: { name: `oidc:${r.subject}`, role: r.role } };
  }
}
