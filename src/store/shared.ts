/** Rules and row shapes both control stores share, so the contract cannot drift between them. */
import type { AdminCredentialRecord, AdminRole, ApprovalChange, ApprovalRecord, ApprovalStatus, PolicyVersion } from './store.js';

/** Column lists both dialects select (the grants one with the `g` alias of its queries). */
export const GRANT_COLUMNS = 'g.id, g.label, g.servers, g.policies, g.created_at, g.expires_at, g.revoked_at';
export const ADMIN_COLUMNS = 'id, label, role, created_at, revoked_at';
export const EVENT_COLUMNS = 'id, at, actor, role, action, target, before, after';
export const VERSION_COLUMNS = 'server, version, text, created_at, actor, note';
export const APPROVAL_COLUMNS =
  'id, status, grant_id, grant_label, server, tool, arguments, arguments_digest, policy_version, rule, reason, via, ' +
  'requested_at, expires_at, decided_at, decided_by, comment, executed_at, held_by';

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

/** An approval as both drivers return it, but for `via`: JSON text from SQLite, an array from PostgreSQL's jsonb. */
export interface ApprovalRow<Via> {
  id: string;
  status: ApprovalStatus;
  grant_id: string | null;
  grant_label: string | null;
  server: string;
  tool: string;
  arguments: string;
  arguments_digest: string;
  policy_version: string;
  rule: string;
  reason: string;
  via: Via;
  requested_at: number;
  expires_at: number;
  decided_at: number | null;
  decided_by: string | null;
  comment: string | null;
  executed_at: number | null;
  held_by: string | null;
}

export function toApproval(row: ApprovalRow<unknown>, via: readonly string[]): ApprovalRecord {
  return {
    id: row.id,
    status: row.status,
    grantId: row.grant_id,
    grantLabel: row.grant_label,
    server: row.server,
    tool: row.tool,
    arguments: row.arguments,
    argumentsDigest: row.arguments_digest,
    policyVersion: row.policy_version,
    rule: row.rule,
    reason: row.reason,
    via,
    requestedAt: row.requested_at,
    expiresAt: row.expires_at,
    decidedAt: row.decided_at,
    decidedBy: row.decided_by,
    comment: row.comment,
    executedAt: row.executed_at,
    heldBy: row.held_by,
  };
}

/**
 * What a conditional status change answers: ok when its UPDATE matched and left the approval in
 * the status the caller wanted (a decision that found the approval past its time expired it:
 * changed, but not ok); otherwise the record as it stands, or undefined for an unknown id.
 */
export function approvalChange(approval: ApprovalRecord | undefined, changed: boolean, wanted: ApprovalStatus): ApprovalChange {
  if (approval === undefined) return { ok: false, approval: undefined, expiredNow: false };
  if (changed && approval.status === wanted) return { ok: true, approval };
  return { ok: false, approval, expiredNow: changed && approval.status === 'expired' };
}

/** Expired approvals in the order they expired (then by id), whatever order the UPDATE returned them in. */
export function byExpiry(approvals: ApprovalRecord[]): ApprovalRecord[] {
  return approvals.sort((a, b) => a.expiresAt - b.expiresAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
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

/** How many events (or approvals) a page holds: 100 unless asked, and never fewer than 1 or more than 1,000. */
export function pageSize(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return 100;
  return Math.min(1_000, Math.max(1, Math.trunc(limit)));
}

/** Event ids are whole numbers; a cursor that is not one is a caller's bug, refused as PostgreSQL's bigint refuses it. */
export function wholeCursor(beforeId: number): number {
  if (!Number.isSafeInteger(beforeId)) throw new RangeError(`beforeId must be a whole number, got ${beforeId}`);
  return beforeId;
}

/**
 * Times are whole ms (see store.ts). Columns refuse anything else by themselves, but an approval's
 * time may only be compared, never stored (an expired decision, a sweep), so it is checked here,
 * alike in both stores, rather than silently compared as a fraction.
 */
export function wholeMs(name: string, ms: number): number {
  if (!Number.isSafeInteger(ms)) throw new RangeError(`${name} must be a whole number of ms, got ${ms}`);
  return ms;
}

/** The two decisions a person can make; anything else is a caller's bug. */
export function checkedDecision(decision: string): 'approved' | 'denied' {
  if (decision !== 'approved' && decision !== 'denied') throw new TypeError(`a decision is approved or denied, not ${JSON.stringify(decision)}`);
  return decision;
}

/** Servers are a set: sorted (by UTF-16 code unit, as JavaScript sorts) and without repeats. */
export function sortedServers(servers: readonly string[]): string[] {
  return [...new Set(servers)].sort();
}
