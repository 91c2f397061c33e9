/**
 * Grant tokens: how they look, how they are stored (a hash only) and how they are compared.
 *
 * A token is `plg_` and 43 base64url characters (32 random bytes). The prefix lets secret
 * scanners recognise a leaked one; 256 random bits make guessing hopeless and make a plain
 * SHA-256 the right way to store it (a slow password hash only helps low-entropy secrets).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const TOKEN_PREFIX = 'plg_';
const TOKEN_PATTERN = /^plg_[A-Za-z0-9_-]{43}$/;

/** A new random token. Shown to the operator once; only its hash is kept. */
export function newToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/**
 * Admin credentials look different (`pla_`): a grant token presented to the admin API is refused
 * by its shape before any lookup, and a leaked one is told apart by secret scanners.
 */
export const ADMIN_TOKEN_PREFIX = 'pla_';
const ADMIN_TOKEN_PATTERN = /^pla_[A-Za-z0-9_-]{43}$/;

/** A new random admin token; like a grant token, shown once and stored as a hash. */
export function newAdminToken(): string {
  return ADMIN_TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/** Whether `s` has the shape of an admin token. */
export function looksLikeAdminToken(s: string): boolean {
  return ADMIN_TOKEN_PATTERN.test(s);
}

/** Whether `s` has the shape of a grant token (says nothing of whether it is valid). */
export function looksLikeToken(s: string): boolean {
  return TOKEN_PATTERN.test(s);
}

/** Lowercase hex SHA-256 of the token: what the store keeps and looks tokens up by. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Compares two hex hashes in time independent of where they differ. The store finds a token by
 * its hash (an index lookup, whose timing can only reveal something about a hash, never about
 * the token); this second comparison keeps the check itself constant-time whatever the store does.
 */
export function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}
