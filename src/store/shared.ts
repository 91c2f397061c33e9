/** Rules and row shapes both control stores share, so the contract cannot drift between them. */
import type { AdminCredentialRecord, AdminRole, PolicyVersion } from './store.js';

/** Column lists both dialects select (the grants one with the `g` alias of its queries). */
export const GRANT_COLUMNS = 'g.id, g.label, g.servers, g.policies, g.created_at, g.expires_at, g.revoked_at';
export const ADMIN_COLUMNS = 'id, label, role, created_at, revoked_at';
export const EVENT_COLUMNS = 'id, at, actor, role, action, target, before, after';
export const VERSION_COLUMNS = 'server, version, text, created_at, actor, note';

/** An admin credential as both drivers return it (no JSON column, so no dialect difference). */
export interface AdminRow {
  id: string;
  label: string;
  role: AdminRole;
  created_at: number;
  revoked_at: number | null;
}

/** A policy version as both drivers return it. */
export interface VersionRow {
  server: string;
  version: number;
  text: string;
  created_at: number;
  actor: string;
  note: string | null;
}

export function toAdmin(row: AdminRow): AdminCredentialRecord {
  return { id: row.id, label: row.label, role: row.role, createdAt: row.created_at, revokedAt: row.revoked_at };
}

export function toVersion(row: VersionRow): PolicyVersion {
  return { server: row.server, version: row.version, text: row.text, createdAt: row.created_at, actor: row.actor, note: row.note };
}

/**
 * An admin event's state as stored: JSON text, or SQL NULL for null and for what JSON cannot
 * express (undefined), so "did not exist" has one spelling however the caller wrote it. Always
 * text, never the value itself: pg would turn a JavaScript array into a PostgreSQL array literal.
 */
export function jsonOrNull(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  return JSON.stringify(value) ?? null;
}

/** How many events a page holds: 100 unless asked, and never fewer than 1 or more than 1,000. */
export function pageSize(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return 100;
  return Math.min(1_000, Math.max(1, Math.trunc(limit)));
}

/** Event ids are whole numbers; a cursor that is not one is a caller's bug, refused as PostgreSQL's bigint refuses it. */
export function wholeCursor(beforeId: number): number {
  if (!Number.isSafeInteger(beforeId)) throw new RangeError(`beforeId must be a whole number, got ${beforeId}`);
  return beforeId;
}

/** Servers are a set: sorted (by UTF-16 code unit, as JavaScript sorts) and without repeats. */
export function sortedServers(servers: readonly string[]): string[] {
  return [...new Set(servers)].sort();
}
