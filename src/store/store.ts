/**
 * The control-plane store contract: grants and their tokens (later: servers, policy versions,
 * the catalogue, approvals). SQLite (one file, the embedded default) and PostgreSQL implement it
 * (store/sqlite.ts, store/postgres.ts); the same contract tests run against both.
 *
 * The store never sees a token, only its hash: a leaked database does not leak credentials.
 */

/** A grant: one agent identity, bound to servers, with an optional policy of its own per server. */
export interface GrantRecord {
  /** Stable id (a UUID), never reused. */
  readonly id: string;
  /** Unique human label, e.g. `alice-laptop`: letters, digits, `.`, `_`, `-`. */
  readonly label: string;
  /** Names of the servers this grant may call, sorted. */
  readonly servers: readonly string[];
  /** Policy text (JSON or YAML) by server name, for servers where this grant has its own policy. */
  readonly policies: Readonly<Record<string, string>>;
  /** ms since the epoch. */
  readonly createdAt: number;
  /** When the grant stops working, or null for never. */
  readonly expiresAt: number | null;
  /** When it was revoked, or null. */
  readonly revokedAt: number | null;
}

/** One token of a grant, by its hash. A rotated-out token stays valid until `validUntil`. */
export interface TokenRecord {
  readonly grantId: string;
  /** Lowercase hex SHA-256 of the token. */
  readonly hash: string;
  readonly createdAt: number;
  /** null while it is the grant's current token; the end of the grace period once rotated out. */
  readonly validUntil: number | null;
}

export interface NewGrant {
  readonly label: string;
  readonly servers: readonly string[];
  readonly policies?: Readonly<Record<string, string>>;
  readonly expiresAt?: number | null;
}

export interface ControlStore {
  /** `sqlite` or `postgres`. */
  readonly kind: string;
  /** Applies the migrations not applied yet, in order, each in a transaction. Idempotent. */
  migrate(): Promise<void>;
  /**
   * Creates a grant with its first token (by hash). Rejects with StoreConflictError when the
   * label is taken or the hash already belongs to a grant; nothing is stored then. `servers` are
   * stored sorted and without repeats. Every time given to a store is a whole number of ms; a
   * store rejects anything else rather than round it.
   */
  createGrant(grant: NewGrant, tokenHash: string, now: number): Promise<GrantRecord>;
  /** By id or by label; an id wins over another grant's label spelled the same. */
  getGrant(idOrLabel: string): Promise<GrantRecord | undefined>;
  /** All grants, revoked ones included, by label. */
  listGrants(): Promise<GrantRecord[]>;
  /** Marks the grant revoked (every token stops working); false if there is no such grant. Revoking twice keeps the first time. */
  revokeGrant(idOrLabel: string, now: number): Promise<boolean>;
  /**
   * Gives the grant a new current token; the old current one stays valid until `oldValidUntil`
   * (now, for no grace). False if there is no such grant or it is revoked. Tokens rotated out
   * earlier keep their own `validUntil`. Rejects with StoreConflictError when `newHash` already
   * belongs to a grant, changing nothing.
   */
  rotateToken(idOrLabel: string, newHash: string, now: number, oldValidUntil: number): Promise<boolean>;
  /**
   * The grant a token hash belongs to, with that token's record; undefined if unknown. Revoked
   * grants and tokens past their `validUntil` are returned too: deciding is the caller's job.
   */
  findByTokenHash(hash: string): Promise<{ grant: GrantRecord; token: TokenRecord } | undefined>;
  close(): Promise<void>;
}

/** A write that conflicts with what is stored (a label already taken, a token hash already in use). */
export class StoreConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreConflictError';
  }
}
