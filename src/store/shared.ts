/** Rules both control stores apply the same way, so the contract cannot drift between them. */

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
