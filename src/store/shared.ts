/** Rules and row shapes both control stores share, so the contract cannot drift between them. */
import { canonicalJson } from '../util/canonical-json.js';
import type {
  AdminCredentialRecord,
  AdminRole,
  ApprovalChange,
  ApprovalRecord,
  ApprovalStatus,
  CatalogChange,
  CatalogChangeKind,
  CatalogScan,
  CatalogServerRecord,
  CatalogTarget,
  CatalogToolRecord,
  CatalogToolScan,
  PolicyVersion,
} from './store.js';

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

// --- The catalogue ---

export const CATALOG_SERVER_COLUMNS =
  'key, name, target, title, version, display_name, description, instructions, trusted, transport, classifier_version, first_seen, last_seen, scans';
export const CATALOG_TOOL_COLUMNS = 'server, name, position, definition, definition_hash, classification, category, severity, first_seen, last_seen, removed_at';
export const CATALOG_CHANGE_COLUMNS = 'id, server, tool, kind, old_hash, new_hash, definition, at';

/** A catalogue server as both drivers return it, but for `trusted`: 0/1 from SQLite, a boolean from PostgreSQL. */
export interface CatalogServerRow {
  key: string;
  name: string;
  target: string;
  title: string | null;
  version: string | null;
  display_name: string | null;
  description: string | null;
  instructions: string | null;
  trusted: number | boolean;
  transport: string;
  classifier_version: number;
  first_seen: number;
  last_seen: number;
  scans: number;
}

/** Every JSON column of the catalogue is TEXT in both dialects (see migration 5), so rows read alike. */
export interface CatalogToolRow {
  server: string;
  name: string;
  position: number;
  definition: string;
  definition_hash: string;
  classification: string;
  category: string;
  severity: string;
  first_seen: number;
  last_seen: number;
  removed_at: number | null;
}

export interface CatalogChangeRow {
  id: number;
  server: string;
  tool: string;
  kind: CatalogChangeKind;
  old_hash: string | null;
  new_hash: string | null;
  definition: string | null;
  at: number;
}

/** The identity text of a target: canonical JSON, so one target is always spelled one way. */
export function catalogTargetText(target: CatalogTarget): string {
  if ('command' in target) return canonicalJson({ command: [...target.command] });
  return canonicalJson({ url: target.url });
}

export function toCatalogServer(row: CatalogServerRow, counts: ReadonlyMap<string, Record<string, number>>): CatalogServerRecord {
  const categories = counts.get(row.key) ?? {};
  return {
    key: row.key,
    name: row.name,
    target: JSON.parse(row.target) as CatalogTarget,
    title: row.title,
    version: row.version,
    displayName: row.display_name,
    description: row.description,
    instructions: row.instructions,
    trusted: row.trusted === true || row.trusted === 1,
    transport: row.transport,
    classifierVersion: row.classifier_version,
    firstSeen: row.first_seen,
    lastSeen: row.last_seen,
    scans: row.scans,
    tools: Object.values(categories).reduce((a, b) => a + b, 0),
    categories,
  };
}

/** `(server, category, n)` rows of the current tools → counts by server, categories in name order. */
export function categoryCounts(rows: readonly { server: string; category: string; n: number | string }[]): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const r of [...rows].sort((a, b) => (a.category < b.category ? -1 : a.category > b.category ? 1 : 0))) {
    const m = out.get(r.server) ?? {};
    m[r.category] = Number(r.n);
    out.set(r.server, m);
  }
  return out;
}

export function toCatalogTool(row: CatalogToolRow): CatalogToolRecord {
  return {
    server: row.server,
    name: row.name,
    position: row.position,
    definition: JSON.parse(row.definition) as Record<string, unknown>,
    definitionHash: row.definition_hash,
    classification: JSON.parse(row.classification) as CatalogToolRecord['classification'],
    category: row.category,
    severity: row.severity,
    firstSeen: row.first_seen,
    lastSeen: row.last_seen,
    removedAt: row.removed_at,
  };
}

export function toCatalogChange(row: CatalogChangeRow): CatalogChange {
  return {
    id: row.id,
    server: row.server,
    tool: row.tool,
    kind: row.kind,
    oldHash: row.old_hash,
    newHash: row.new_hash,
    definition: row.definition === null ? null : (JSON.parse(row.definition) as Record<string, unknown>),
    at: row.at,
  };
}

/** The tools of a catalogue server as stored, as much of them as a recording compares. */
export interface StoredToolState {
  readonly name: string;
  readonly definitionHash: string;
  readonly removedAt: number | null;
}

/** A change a recording is to write (the store gives it its id). */
export interface PlannedChange {
  readonly tool: string;
  readonly kind: CatalogChangeKind;
  readonly oldHash: string | null;
  readonly newHash: string | null;
  /** The definition as JSON text, for added and changed. */
  readonly definition: string | null;
}

/**
 * What recording `scan` over the stored tools changes: the changes in the scan's order (removed
 * ones last, by name), and the tools that stop being listed. Both stores write exactly this, so
 * they cannot disagree on what counts as a change. A tool listed again after being removed is
 * added again (its old hash kept as oldHash would make it look changed while it was gone).
 */
export function planCatalogRecording(stored: readonly StoredToolState[], tools: readonly CatalogToolScan[]): { changes: PlannedChange[]; removed: string[] } {
  const before = new Map(stored.map((t) => [t.name, t]));
  const changes: PlannedChange[] = [];
  for (const t of tools) {
    const was = before.get(t.name);
    const definition = JSON.stringify(t.definition);
    if (was === undefined || was.removedAt !== null) changes.push({ tool: t.name, kind: 'added', oldHash: null, newHash: t.definitionHash, definition });
    else if (was.definitionHash !== t.definitionHash) changes.push({ tool: t.name, kind: 'changed', oldHash: was.definitionHash, newHash: t.definitionHash, definition });
  }
  const listed = new Set(tools.map((t) => t.name));
  const removed = stored
    .filter((t) => t.removedAt === null && !listed.has(t.name))
    .map((t) => t.name)
    .sort();
  for (const name of removed) changes.push({ tool: name, kind: 'removed', oldHash: before.get(name)!.definitionHash, newHash: null, definition: null });
  return { changes, removed };
}

/** Refuses what no store may record, before anything is written: an empty key, a tool name twice. */
export function checkCatalogScan(scan: CatalogScan): void {
  if (typeof scan.key !== 'string' || scan.key === '') throw new TypeError('a catalogue key cannot be empty');
  const seen = new Set<string>();
  for (const t of scan.tools) {
    if (seen.has(t.name)) throw new TypeError(`the scan lists the tool ${JSON.stringify(t.name)} twice; a catalogue server's tool names are unique`);
    seen.add(t.name);
  }
}

/** `key`, then `key-2`, `key-3`, …: the keys a new server may be filed under, in order. */
export function catalogKeyCandidate(key: string, attempt: number): string {
  return attempt === 1 ? key : `${key}-${attempt}`;
}
