/**
 * The control-plane store contract: grants and their tokens, admin credentials and events, servers,
 * policy versions, pending human approvals and the catalogue of scanned servers. SQLite (one file, the embedded default) and PostgreSQL implement it
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

  // --- Admin credentials: who may use the admin API, and with which role. ---

  /**
   * Creates an admin credential with its token (by hash). Rejects with StoreConflictError when
   * the label is taken or the hash is already an admin credential's; nothing is stored then.
   */
  createAdminCredential(cred: NewAdminCredential, tokenHash: string, now: number): Promise<AdminCredentialRecord>;
  /** All admin credentials, revoked ones included, by label. */
  listAdminCredentials(): Promise<AdminCredentialRecord[]>;
  /** Marks it revoked; false if there is no such credential. Revoking twice keeps the first time. */
  revokeAdminCredential(idOrLabel: string, now: number): Promise<boolean>;
  /** The admin credential a token hash belongs to (revoked ones too: deciding is the caller's job). */
  findAdminByTokenHash(hash: string): Promise<AdminCredentialRecord | undefined>;

  // --- The admin audit stream: one event per admin action, append-only. ---

  /** Appends an event; the store gives it the next id (ids only grow). */
  appendAdminEvent(event: NewAdminEvent): Promise<AdminEvent>;
  /**
   * Events newest first; `beforeId` pages back (events with a smaller id), `limit` defaults to 100
   * and is clamped to 1..1000; `action` and `target`, when given, keep only events equal to them.
   */
  listAdminEvents(query?: AdminEventQuery): Promise<AdminEvent[]>;

  // --- Servers registered at run time (servers in gateway.yaml are not stored). ---

  /** Stores a new server; StoreConflictError when the name is taken. */
  createServer(name: string, definition: Readonly<Record<string, unknown>>, now: number): Promise<StoredServer>;
  getServer(name: string): Promise<StoredServer | undefined>;
  /** All stored servers, by name. */
  listServers(): Promise<StoredServer[]>;
  /** Deletes the server and its policy versions; false if there is no such server (nothing is deleted then). */
  deleteServer(name: string): Promise<boolean>;

  // --- Policy versions per server: every change is a new version; the newest is in force. ---

  /**
   * Stores `text` as the server's next version (1 for the first), atomically: two writers at
   * once get two different versions, never the same one.
   */
  addPolicyVersion(server: string, version: NewPolicyVersion, now: number): Promise<PolicyVersion>;
  /** One version, or the newest when `version` is omitted; undefined when there is none. */
  getPolicyVersion(server: string, version?: number): Promise<PolicyVersion | undefined>;
  /** Every version of the server, newest first. */
  listPolicyVersions(server: string): Promise<PolicyVersion[]>;
  /** The newest version number of every server that has one (what a gateway polls for changes). */
  latestPolicyVersions(): Promise<Map<string, number>>;
  /**
   * Retires every version of the server (its policy goes back to gateway.yaml): they no longer
   * read back, and the next version is numbered after them, so a number never stands for two
   * texts of one server while it exists. How many were retired.
   */
  deletePolicyVersions(server: string): Promise<number>;

  // --- Human approvals: one record per call held for a person's decision (approvals/service.ts). ---
  //
  // Every change of status is one conditional write (`… WHERE status = 'pending'`), so two
  // approvers, or two replicas, acting on one approval at once cannot both win: the loser is told
  // so and given the record as the winner left it. Statuses only move forward:
  //   pending → approved → executed;  pending → denied | expired | cancelled.

  /** Stores a new approval, `pending`, requested at `now`, under a new id (a UUID). */
  createApproval(approval: NewApproval, now: number): Promise<ApprovalRecord>;
  getApproval(id: string): Promise<ApprovalRecord | undefined>;
  /**
   * Approvals newest first (by requestedAt, then id). `status` keeps only those in it; `cursor`,
   * the id of the last approval of the previous page, pages back (an unknown id gives an empty
   * page); `limit` defaults to 100 and is clamped to 1..1000.
   */
  listApprovals(query?: ApprovalQuery): Promise<ApprovalRecord[]>;
  /**
   * A person's decision. Succeeds only while the approval is pending and `now` is before its
   * `expiresAt`; decided at or after that moment, the approval is marked `expired` instead (its
   * decidedAt is its expiresAt, nobody is named) and the decision loses. A loser gets the record
   * as it now stands: who won and how, or that it expired; undefined for an unknown id.
   */
  decideApproval(id: string, decision: ApprovalDecision): Promise<ApprovalChange>;
  /**
   * Marks every pending approval whose `expiresAt` is at or before `now` expired (decidedAt =
   * expiresAt, decidedBy null) and returns them; each is returned by exactly one call, however
   * many replicas sweep at once.
   */
  expireApprovals(now: number): Promise<ApprovalRecord[]>;
  /** Single use: approved → executed, at most once. Fails from any other status. */
  markExecuted(id: string, now: number): Promise<ApprovalChange>;
  /** Withdraws a pending approval (its caller went away): pending → cancelled, with `reason` as the comment. */
  cancelApproval(id: string, reason: string, now: number): Promise<ApprovalChange>;
  /**
   * For `approval.remember`: the most recently decided approval of exactly this call (same grant,
   * server, tool, arguments digest and policy version) that was approved and executed, and decided
   * at or after `decidedSince`; undefined when there is none.
   */
  findRemembered(call: ApprovalCallKey, decidedSince: number): Promise<ApprovalRecord | undefined>;

  // --- keys the replicas share ---

  /**
   * The key stored under `name`; when there is none yet, stores `candidate` as that key first.
   * Every caller gets the same value, however many replicas ask at once (the first write wins);
   * a key, once stored, never changes. Used for the signing key of approval links.
   */
  sharedKey(name: string, candidate: string, now: number): Promise<string>;

  // --- The catalogue: every server `policylayer scan` listed, its tools, and how they changed. ---
  //
  // A catalogue server is one server reached one way: its name (serverInfo.name) and its target
  // (the command or URL, secrets left out) are its identity, so a server of the same name at
  // another address is another entry; a rug pull (one address, new definitions) is a change of
  // that entry. Every recording happens in one transaction, serialised with any other, so two
  // scans at once cannot both record the same tool as added, or lose a change.

  /**
   * Records a finished scan at `now`. The first scan of an identity creates its entry under
   * `scan.key` (or `<key>-2`, `<key>-3`, … when another identity holds it) and records every tool
   * as added. A later scan updates the server's facts and everyone's last_seen; a tool whose
   * definitionHash differs is recorded as changed, a tool no longer listed as removed (kept, with
   * removedAt), a tool listed anew as added. Rejects with a TypeError (storing nothing) when two
   * tools share a name or the key is empty.
   */
  recordCatalogScan(scan: CatalogScan, now: number): Promise<CatalogRecordResult>;
  /** Every catalogue server, by key. */
  listCatalogServers(): Promise<CatalogServerRecord[]>;
  getCatalogServer(key: string): Promise<CatalogServerRecord | undefined>;
  /** The server's tools in the order its last scan listed them, then the removed ones (by name); none for an unknown key. */
  listCatalogTools(key: string): Promise<CatalogToolRecord[]>;
  /**
   * The server's recorded changes newest first (by id); `beforeId` pages back, `limit` defaults to
   * 100 and is clamped to 1..1000. None for an unknown key.
   */
  listCatalogChanges(key: string, query?: CatalogChangeQuery): Promise<CatalogChange[]>;

  close(): Promise<void>;
}

/** How a catalogue server was reached: the stdio command (argv), or the URL; never a secret. */
export type CatalogTarget = { readonly command: readonly string[] } | { readonly url: string };

/** One tool as a scan listed and classified it. */
export interface CatalogToolScan {
  readonly name: string;
  /** The definition exactly as `tools/list` gave it (a JSON object). */
  readonly definition: Readonly<Record<string, unknown>>;
  /** `sha256:` of the definition's canonical JSON: equal hashes, equal definitions. */
  readonly definitionHash: string;
  /** The risk classification (a JSON object); its category and severity are also kept as columns. */
  readonly classification: Readonly<Record<string, unknown>> & { readonly category: string; readonly severity: string };
}

/** What a scan learnt about its server, kept with it in the catalogue. */
export interface CatalogServerFacts {
  /** serverInfo.name from initialize. */
  readonly name: string;
  readonly target: CatalogTarget;
  /** serverInfo.title and serverInfo.version, when the server sent them. */
  readonly title: string | null;
  readonly version: string | null;
  /** The name the classifier was told (`scan --name`), when it was not the server's own. */
  readonly displayName: string | null;
  /** The server description the classifier read (the server's own, or `scan --description`). */
  readonly description: string | null;
  /** The `instructions` of the initialize result. */
  readonly instructions: string | null;
  /** Marked trusted for the scan (annotations may lower risk). */
  readonly trusted: boolean;
  /** `stdio`, `streamable-http` or `sse`. */
  readonly transport: string;
}

/** A finished scan, as recordCatalogScan takes it. */
export interface CatalogScan extends CatalogServerFacts {
  /** The key a server seen for the first time is filed under (a slug of its name). */
  readonly key: string;
  readonly classifierVersion: number;
  /** In the order the server listed them; names unique. */
  readonly tools: readonly CatalogToolScan[];
}

export interface CatalogServerRecord extends CatalogServerFacts {
  readonly key: string;
  /** The classifier version of the last scan. */
  readonly classifierVersion: number;
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** How many scans were recorded. */
  readonly scans: number;
  /** Tools listed by the last scan (removed ones not counted). */
  readonly tools: number;
  /** Those tools by category, e.g. `{ Read: 9, Write: 4 }`. */
  readonly categories: Readonly<Record<string, number>>;
}

export interface CatalogToolRecord {
  readonly server: string;
  readonly name: string;
  /** Its place in the last scan that listed it (0 first). */
  readonly position: number;
  readonly definition: Readonly<Record<string, unknown>>;
  readonly definitionHash: string;
  readonly classification: Readonly<Record<string, unknown>> & { readonly category: string; readonly severity: string };
  readonly category: string;
  readonly severity: string;
  readonly firstSeen: number;
  /** The last scan that listed it. */
  readonly lastSeen: number;
  /** The first scan that no longer listed it, or null while listed. */
  readonly removedAt: number | null;
}

export type CatalogChangeKind = 'added' | 'changed' | 'removed';

export const CATALOG_CHANGE_KINDS: readonly CatalogChangeKind[] = ['added', 'changed', 'removed'];

/** One change of a catalogue server's tools; added and changed carry the definition from then on. */
export interface CatalogChange {
  readonly id: number;
  readonly server: string;
  readonly tool: string;
  readonly kind: CatalogChangeKind;
  /** The hash before (null for added). */
  readonly oldHash: string | null;
  /** The hash after (null for removed). */
  readonly newHash: string | null;
  /** The definition after (null for removed). */
  readonly definition: Readonly<Record<string, unknown>> | null;
  readonly at: number;
}

export interface CatalogChangeQuery {
  readonly limit?: number;
  readonly beforeId?: number;
}

export interface CatalogRecordResult {
  /** The server as it stands after the recording. */
  readonly server: CatalogServerRecord;
  /** True when this scan created the entry. */
  readonly created: boolean;
  /** What this scan changed, in the server's order (removed ones last); empty for a rescan with the same definitions. */
  readonly changes: readonly CatalogChange[];
}

/** What an admin credential may do: `viewer` reads; `policy_manager` also writes policies; `admin` does everything. */
export type AdminRole = 'admin' | 'policy_manager' | 'viewer';

export const ADMIN_ROLES: readonly AdminRole[] = ['admin', 'policy_manager', 'viewer'];

export interface AdminCredentialRecord {
  /** Stable id (a UUID). */
  readonly id: string;
  /** Unique label, same rule as grant labels (e.g. `ops-alice`). */
  readonly label: string;
  readonly role: AdminRole;
  readonly createdAt: number;
  readonly revokedAt: number | null;
}

export interface NewAdminCredential {
  readonly label: string;
  readonly role: AdminRole;
}

export interface NewAdminEvent {
  readonly at: number;
  /** Who acted: an admin credential's label, `oidc:<subject>`, or `cli` for the command line on the host. */
  readonly actor: string;
  /** The actor's role at the time. */
  readonly role: AdminRole;
  /** What was done, e.g. `grant.create`, `policy.update`, `server.remove`. */
  readonly action: string;
  /** What it was done to, e.g. `grant:alice-laptop`, `server:github`. */
  readonly target: string;
  /** JSON-serialisable state before and after (null when it did not exist); never a secret. */
  readonly before: unknown;
  readonly after: unknown;
}

export interface AdminEvent extends NewAdminEvent {
  readonly id: number;
}

export interface AdminEventQuery {
  readonly limit?: number;
  readonly beforeId?: number;
  readonly action?: string;
  readonly target?: string;
}

export interface StoredServer {
  readonly name: string;
  /**
   * The server as gateway.yaml would define it (command/args/env/cwd/isolation, or
   * url/transport/headers/oauth, timeout), without `policy`: secrets stay `${ENV}` or file
   * references, resolved only when the gateway starts the server.
   */
  readonly definition: Readonly<Record<string, unknown>>;
  readonly createdAt: number;
}

export interface NewPolicyVersion {
  /** The policy text (JSON or YAML), validated before it is stored. */
  readonly text: string;
  /** Who stored it (as in admin events). */
  readonly actor: string;
  /** Why, e.g. `rollback to 3`; null when not given. */
  readonly note?: string | null;
}

export interface PolicyVersion {
  readonly server: string;
  readonly version: number;
  readonly text: string;
  readonly createdAt: number;
  readonly actor: string;
  readonly note: string | null;
}

/** Where an approval stands. `pending` is the only status a decision, expiry or cancellation leaves. */
export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'cancelled' | 'executed';

export const APPROVAL_STATUSES: readonly ApprovalStatus[] = ['pending', 'approved', 'denied', 'expired', 'cancelled', 'executed'];

/**
 * What binds an approval to one call: a call that differs in any of these is another call, which
 * this approval does not release.
 */
export interface ApprovalCallKey {
  /** The caller's grant id; null when the gateway runs without authentication. */
  readonly grantId: string | null;
  readonly server: string;
  readonly tool: string;
  /** Lowercase hex SHA-256 of `arguments` (the canonical JSON). */
  readonly argumentsDigest: string;
  /** The version of the policy that asked for approval (`sha256:…`). */
  readonly policyVersion: string;
}

export interface NewApproval extends ApprovalCallKey {
  /** The grant's label at the time (null with grantId). */
  readonly grantLabel: string | null;
  /** The call's arguments as canonical JSON (keys sorted at every depth): exactly what will be forwarded. */
  readonly arguments: string;
  /** JSON pointer of the rule that asked, e.g. `/tools/create_charge`. */
  readonly rule: string;
  /** Why approval is needed, as the policy says it. */
  readonly reason: string;
  /** The channels the person is asked through, e.g. `["dashboard"]`, `["elicitation"]`. */
  readonly via: readonly string[];
  /** When an undecided approval expires (after `now` of createApproval). */
  readonly expiresAt: number;
  /** The replica holding the call open, or null when no call waits (a record made by hand). */
  readonly heldBy: string | null;
}

export interface ApprovalRecord extends NewApproval {
  /** A UUID. */
  readonly id: string;
  readonly status: ApprovalStatus;
  readonly requestedAt: number;
  /** When it left `pending`: the decision, the cancellation, or (expired) its expiresAt; null while pending. */
  readonly decidedAt: number | null;
  /** Who approved or denied (an admin label, `oidc:<subject>`, `cli`, `elicitation:<grant>`); null while pending, and for expired and cancelled ones. */
  readonly decidedBy: string | null;
  /** The approver's comment, the reason of a denial, or why it was cancelled; null when none was given. */
  readonly comment: string | null;
  /** When the approved call was forwarded; null until then. */
  readonly executedAt: number | null;
}

export interface ApprovalDecision {
  readonly decision: 'approved' | 'denied';
  /** Who decides (see ApprovalRecord.decidedBy). */
  readonly by: string;
  /** A comment on an approval, the reason for a denial; null or omitted for none. */
  readonly comment?: string | null;
  readonly now: number;
}

/**
 * The result of a status change: `ok` and the changed record, or not `ok` and the record as it
 * stands (whoever changed it first, and how), undefined when there is no such approval.
 * `expiredNow` is true when this very call found the approval pending past its expiresAt and
 * marked it expired (the one write that did, so the one caller to report the expiry).
 */
export type ApprovalChange =
  | { readonly ok: true; readonly approval: ApprovalRecord }
  | { readonly ok: false; readonly approval: ApprovalRecord | undefined; readonly expiredNow: boolean };

export interface ApprovalQuery {
  readonly status?: ApprovalStatus;
  readonly limit?: number;
  /** The id of the last approval of the previous page. */
  readonly cursor?: string;
}

/** A write that conflicts with what is stored (a label already taken, a token hash already in use). */
export class StoreConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreConflictError';
  }
}
