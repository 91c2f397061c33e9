/**
 * The control store in one SQLite file: the embedded default, nothing to run beside the gateway.
 *
 * Why it is shaped this way:
 * - better-sqlite3 is synchronous; every method does its work at once and returns a settled
 *   promise, so callers cannot tell it from the PostgreSQL store. Errors become rejections, never
 *   synchronous throws (the methods are `async`).
 * - Several gateway processes may share the file. WAL lets readers go on while one writes;
 *   `busy_timeout` makes a writer wait for another process's write instead of failing at once;
 *   and every write transaction begins IMMEDIATE, taking the write lock before it reads, because a
 *   transaction that reads first and upgrades later can fail with SQLITE_BUSY whatever the
 *   timeout (its snapshot may already be stale).
 * - `synchronous` stays FULL: writes are rare (grants, revocations) and a revocation lost to a
 *   power cut would bring a revoked token back.
 * - Statements are prepared once, on first use rather than at open: they name tables that exist
 *   only once `migrate()` (here or in another process) has run.
 * - Tables are STRICT, so a time that is not a whole number of ms is refused as PostgreSQL's
 *   bigint refuses it, rather than stored as a float.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS, SCHEMA_MIGRATIONS_SQL, nextMigration } from './migrations.js';
import type { Migration } from './migrations.js';
import { StoreConflictError } from './store.js';
import {
  ADMIN_COLUMNS,
  APPROVAL_COLUMNS,
  approvalChange,
  byExpiry,
  CATALOG_CHANGE_COLUMNS,
  CATALOG_SERVER_COLUMNS,
  CATALOG_TOOL_COLUMNS,
  catalogKeyCandidate,
  catalogTargetText,
  categoryCounts,
  checkCatalogScan,
  checkedDecision,
  EVENT_COLUMNS,
  GRANT_COLUMNS,
  jsonOrNull,
  pageSize,
  sortedServers,
  toAdmin,
  toApproval,
  toVersion,
  VERSION_COLUMNS,
  wholeCursor,
  wholeMs,
  planCatalogRecording,
  toCatalogChange,
  toCatalogServer,
  toCatalogTool,
  type AdminRow,
  type ApprovalRow,
  type CatalogChangeRow,
  type CatalogServerRow,
  type CatalogToolRow,
  type StoredToolState,
  type VersionRow,
} from './shared.js';
import type {
  AdminCredentialRecord,
  AdminEvent,
  AdminEventQuery,
  AdminRole,
  ApprovalCallKey,
  ApprovalChange,
  ApprovalDecision,
  ApprovalQuery,
  ApprovalRecord,
  ApprovalStatus,
  CatalogChange,
  CatalogChangeQuery,
  CatalogRecordResult,
  CatalogScan,
  CatalogServerRecord,
  CatalogToolRecord,
  ControlStore,
  GrantRecord,
  NewAdminCredential,
  NewAdminEvent,
  NewApproval,
  NewGrant,
  NewPolicyVersion,
  PolicyVersion,
  StoredServer,
  TokenRecord,
} from './store.js';

export interface SqliteStoreOptions {
  /** The clock `migrate()` records `applied_at` with; default `Date.now`. (Every other write takes its time from the caller.) */
  clock?: () => number;
}

/** How long a write waits for another process's write to finish before it fails with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5_000;

/**
 * Opens (creating the file and its folder if missing) the SQLite control store at `file`, or a
 * private in-memory one for `:memory:`. Call `migrate()` before anything else.
 */
export function openSqliteStore(file: string, opts: SqliteStoreOptions = {}): ControlStore {
  if (file !== ':memory:' && file !== '') mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const db = new Database(file);
  try {
    // The timeout first: switching to WAL itself needs a lock another process may hold.
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma('journal_mode = WAL');
    db.pragma('foreign_keys = ON');
  } catch (err) {
    db.close();
    throw err;
  }
  return new SqliteControlStore(db, opts.clock ?? Date.now);
}

/**
 * Applies every pending migration of `migrations` to `db`, one IMMEDIATE transaction each, and
 * throws NewerSchemaError if the database is newer than `migrations`. The store's `migrate()` is
 * this with MIGRATIONS; exported so tests can run it with lists of their own.
 */
export function applySqliteMigrations(db: Database.Database, migrations: readonly Migration[], clock: () => number): void {
  const step = db
    .transaction((): boolean => {
      db.exec(SCHEMA_MIGRATIONS_SQL.sqlite);
      const rows = db.prepare<[], { version: number }>('SELECT version FROM schema_migrations').all();
      const next = nextMigration(
        rows.map((r) => r.version),
        migrations,
      );
      if (next === undefined) return false;
      db.exec(next.sqlite);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(next.version, next.name, clock());
      return true;
    })
    .immediate;
  // Each pass re-reads what is applied inside its own transaction, so a migration another process
  // applied in between is noticed rather than repeated.
  let applied = true;
  while (applied) applied = step();
}

interface GrantRow {
  id: string;
  label: string;
  servers: string;
  policies: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
}

interface FoundRow extends GrantRow {
  token_hash: string;
  token_created_at: number;
  token_valid_until: number | null;
}

interface EventRow {
  id: number;
  at: number;
  actor: string;
  role: AdminRole;
  action: string;
  target: string;
  before: string | null;
  after: string | null;
}

interface ServerRow {
  name: string;
  definition: string;
  created_at: number;
}

// An id wins over a label spelled the same (a label may look like a UUID): `id = @key` sorts first.
const RESOLVE = 'SELECT id FROM grants WHERE id = @key OR label = @key ORDER BY id = @key DESC LIMIT 1';

function statements(db: Database.Database) {
  return {
    insertGrant: db.prepare<[string, string, string, string, number, number | null]>(
      'INSERT INTO grants (id, label, servers, policies, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, NULL)',
    ),
    insertToken: db.prepare<[string, string, number]>('INSERT INTO grant_tokens (hash, grant_id, created_at, valid_until) VALUES (?, ?, ?, NULL)'),
    getGrant: db.prepare<{ key: string }, GrantRow>(
      `SELECT ${GRANT_COLUMNS} FROM grants g WHERE g.id = @key OR g.label = @key ORDER BY g.id = @key DESC LIMIT 1`,
    ),
    listGrants: db.prepare<[], GrantRow>(`SELECT ${GRANT_COLUMNS} FROM grants g ORDER BY g.label`),
    revoke: db.prepare<{ key: string; now: number }>(`UPDATE grants SET revoked_at = coalesce(revoked_at, @now) WHERE id = (${RESOLVE})`),
    retireCurrent: db.prepare<[number, string]>('UPDATE grant_tokens SET valid_until = ? WHERE grant_id = ? AND valid_until IS NULL'),
    findByHash: db.prepare<[string], FoundRow>(
      `SELECT ${GRANT_COLUMNS}, t.hash AS token_hash, t.created_at AS token_created_at, t.valid_until AS token_valid_until
       FROM grant_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?`,
    ),

    insertAdmin: db.prepare<[string, string, string, string, number]>(
      'INSERT INTO admin_credentials (id, label, role, token_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL)',
    ),
    listAdmins: db.prepare<[], AdminRow>(`SELECT ${ADMIN_COLUMNS} FROM admin_credentials ORDER BY label`),
    revokeAdmin: db.prepare<{ key: string; now: number }>(
      `UPDATE admin_credentials SET revoked_at = coalesce(revoked_at, @now)
       WHERE id = (SELECT id FROM admin_credentials WHERE id = @key OR label = @key ORDER BY id = @key DESC LIMIT 1)`,
    ),
    findAdminByHash: db.prepare<[string], AdminRow>(`SELECT ${ADMIN_COLUMNS} FROM admin_credentials WHERE token_hash = ?`),

    insertEvent: db.prepare<[number, string, string, string, string, string | null, string | null], { id: number }>(
      'INSERT INTO admin_events (at, actor, role, action, target, before, after) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id',
    ),

    insertServer: db.prepare<[string, string, number]>('INSERT INTO servers (name, definition, created_at) VALUES (?, ?, ?)'),
    getServer: db.prepare<[string], ServerRow>('SELECT name, definition, created_at FROM servers WHERE name = ?'),
    listServers: db.prepare<[], ServerRow>('SELECT name, definition, created_at FROM servers ORDER BY name'),
    deleteServer: db.prepare<[string]>('DELETE FROM servers WHERE name = ?'),

    insertVersion: db.prepare<{ server: string; text: string; now: number; actor: string; note: string | null }, { version: number }>(
      `INSERT INTO policy_versions (server, version, text, created_at, actor, note)
       SELECT @server, coalesce(max(version), 0) + 1, @text, @now, @actor, @note FROM policy_versions WHERE server = @server
       RETURNING version`,
    ),
    getVersion: db.prepare<[string, number], VersionRow>(`SELECT ${VERSION_COLUMNS} FROM policy_versions WHERE server = ? AND version = ? AND retired = 0`),
    getNewestVersion: db.prepare<[string], VersionRow>(
      `SELECT ${VERSION_COLUMNS} FROM policy_versions WHERE server = ? AND retired = 0 ORDER BY version DESC LIMIT 1`,
    ),
    listVersions: db.prepare<[string], VersionRow>(`SELECT ${VERSION_COLUMNS} FROM policy_versions WHERE server = ? AND retired = 0 ORDER BY version DESC`),
    latestVersions: db.prepare<[], { server: string; version: number }>(
      'SELECT server, max(version) AS version FROM policy_versions WHERE retired = 0 GROUP BY server',
    ),
    deleteVersions: db.prepare<[string]>('DELETE FROM policy_versions WHERE server = ?'),
    retireVersions: db.prepare<[string]>('UPDATE policy_versions SET retired = 1 WHERE server = ? AND retired = 0'),

    insertApproval: db.prepare<Record<string, string | number | null>, SqliteApprovalRow>(
      `INSERT INTO approvals (id, status, grant_id, grant_label, server, tool, arguments, arguments_digest, policy_version, rule, reason, via,
                              requested_at, expires_at, decided_at, decided_by, comment, executed_at, held_by)
       VALUES (@id, 'pending', @grantId, @grantLabel, @server, @tool, @arguments, @argumentsDigest, @policyVersion, @rule, @reason, @via,
               @now, @expiresAt, NULL, NULL, NULL, NULL, @heldBy)
       RETURNING ${APPROVAL_COLUMNS}`,
    ),
    getApproval: db.prepare<[string], SqliteApprovalRow>(`SELECT ${APPROVAL_COLUMNS} FROM approvals WHERE id = ?`),
    // Decided at or after its expiry, an approval expires instead: the same statement says so,
    // so no decision can slip in between a check and the write.
    decideApproval: db.prepare<{ id: string; decision: string; by: string; comment: string | null; now: number }, SqliteApprovalRow>(
      `UPDATE approvals SET
         status = CASE WHEN expires_at > @now THEN @decision ELSE 'expired' END,
         decided_at = CASE WHEN expires_at > @now THEN @now ELSE expires_at END,
         decided_by = CASE WHEN expires_at > @now THEN @by END,
         comment = CASE WHEN expires_at > @now THEN @comment END
       WHERE id = @id AND status = 'pending'
       RETURNING ${APPROVAL_COLUMNS}`,
    ),
    cancelApproval: db.prepare<{ id: string; reason: string; now: number }, SqliteApprovalRow>(
      `UPDATE approvals SET
         status = CASE WHEN expires_at > @now THEN 'cancelled' ELSE 'expired' END,
         decided_at = CASE WHEN expires_at > @now THEN @now ELSE expires_at END,
         comment = CASE WHEN expires_at > @now THEN @reason END
       WHERE id = @id AND status = 'pending'
       RETURNING ${APPROVAL_COLUMNS}`,
    ),
    markExecuted: db.prepare<{ id: string; now: number }, SqliteApprovalRow>(
      `UPDATE approvals SET status = 'executed', executed_at = @now WHERE id = @id AND status = 'approved' RETURNING ${APPROVAL_COLUMNS}`,
    ),
    expireApprovals: db.prepare<[number], SqliteApprovalRow>(
      `UPDATE approvals SET status = 'expired', decided_at = expires_at WHERE status = 'pending' AND expires_at <= ? RETURNING ${APPROVAL_COLUMNS}`,
    ),
    // `grant_id IS @grantId`: equal, or both NULL (a gateway without authentication).
    findRemembered: db.prepare<Record<string, string | number | null>, SqliteApprovalRow>(
      `SELECT ${APPROVAL_COLUMNS} FROM approvals
       WHERE status = 'executed' AND arguments_digest = @argumentsDigest AND grant_id IS @grantId AND server = @server AND tool = @tool
         AND policy_version = @policyVersion AND decided_at >= @since
       ORDER BY decided_at DESC, id DESC LIMIT 1`,
    ),
    insertKey: db.prepare<[string, string, number]>('INSERT INTO gateway_keys (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING'),
    getKey: db.prepare<[string], { value: string }>('SELECT value FROM gateway_keys WHERE name = ?'),

    findCatalogServer: db.prepare<[string, string], CatalogServerRow>(`SELECT ${CATALOG_SERVER_COLUMNS} FROM catalog_servers WHERE name = ? AND target = ?`),
    getCatalogServer: db.prepare<[string], CatalogServerRow>(`SELECT ${CATALOG_SERVER_COLUMNS} FROM catalog_servers WHERE key = ?`),
    listCatalogServers: db.prepare<[], CatalogServerRow>(`SELECT ${CATALOG_SERVER_COLUMNS} FROM catalog_servers ORDER BY key`),
    insertCatalogServer: db.prepare<Record<string, string | number | null>>(
      `INSERT INTO catalog_servers (${CATALOG_SERVER_COLUMNS})
       VALUES (@key, @name, @target, @title, @version, @displayName, @description, @instructions, @trusted, @transport, @classifierVersion, @now, @now, 1)`,
    ),
    updateCatalogServer: db.prepare<Record<string, string | number | null>>(
      `UPDATE catalog_servers SET title = @title, version = @version, display_name = @displayName, description = @description,
         instructions = @instructions, trusted = @trusted, transport = @transport, classifier_version = @classifierVersion,
         last_seen = @now, scans = scans + 1
       WHERE key = @key`,
    ),
    catalogToolStates: db.prepare<[string], { name: string; definition_hash: string; removed_at: number | null }>(
      'SELECT name, definition_hash, removed_at FROM catalog_tools WHERE server = ?',
    ),
    upsertCatalogTool: db.prepare<Record<string, string | number>>(
      `INSERT INTO catalog_tools (${CATALOG_TOOL_COLUMNS})
       VALUES (@server, @name, @position, @definition, @hash, @classification, @category, @severity, @now, @now, NULL)
       ON CONFLICT (server, name) DO UPDATE SET position = excluded.position, definition = excluded.definition,
         definition_hash = excluded.definition_hash, classification = excluded.classification, category = excluded.category,
         severity = excluded.severity, last_seen = excluded.last_seen, removed_at = NULL`,
    ),
    removeCatalogTool: db.prepare<[number, string, string]>('UPDATE catalog_tools SET removed_at = ? WHERE server = ? AND name = ?'),
    insertCatalogChange: db.prepare<Record<string, string | number | null>, CatalogChangeRow>(
      `INSERT INTO catalog_changes (server, tool, kind, old_hash, new_hash, definition, at)
       VALUES (@server, @tool, @kind, @oldHash, @newHash, @definition, @now)
       RETURNING ${CATALOG_CHANGE_COLUMNS}`,
    ),
    listCatalogTools: db.prepare<[string], CatalogToolRow>(
      `SELECT ${CATALOG_TOOL_COLUMNS} FROM catalog_tools WHERE server = ?
       ORDER BY removed_at IS NOT NULL, CASE WHEN removed_at IS NULL THEN position ELSE 0 END, name`,
    ),
    catalogCounts: db.prepare<[], { server: string; category: string; n: number }>(
      'SELECT server, category, count(*) AS n FROM catalog_tools WHERE removed_at IS NULL GROUP BY server, category',
    ),
    catalogCountsOf: db.prepare<[string], { server: string; category: string; n: number }>(
      'SELECT server, category, count(*) AS n FROM catalog_tools WHERE removed_at IS NULL AND server = ? GROUP BY server, category',
    ),
    listCatalogChanges: db.prepare<{ key: string; limit: number }, CatalogChangeRow>(
      `SELECT ${CATALOG_CHANGE_COLUMNS} FROM catalog_changes WHERE server = @key ORDER BY id DESC LIMIT @limit`,
    ),
    listCatalogChangesBefore: db.prepare<{ key: string; limit: number; beforeId: number }, CatalogChangeRow>(
      `SELECT ${CATALOG_CHANGE_COLUMNS} FROM catalog_changes WHERE server = @key AND id < @beforeId ORDER BY id DESC LIMIT @limit`,
    ),
  };
}

type SqliteApprovalRow = ApprovalRow<string>;

class SqliteControlStore implements ControlStore {
  readonly kind = 'sqlite';
  private prepared: ReturnType<typeof statements> | undefined;
  private readonly createTx: (id: string, grant: NewGrant, servers: string[], tokenHash: string, now: number) => void;
  private readonly rotateTx: (key: string, newHash: string, now: number, oldValidUntil: number) => boolean;
  private readonly addVersionTx: (server: string, text: string, now: number, actor: string, note: string | null) => number;
  private readonly deleteServerTx: (name: string) => boolean;
  private readonly changeTx: (change: () => SqliteApprovalRow | undefined, id: string) => { row: SqliteApprovalRow | undefined; changed: boolean };
  private readonly recordTx: (scan: CatalogScan, now: number) => CatalogRecordResult;
  /** listApprovals statements by which filters they have (four shapes). */
  private readonly approvalQueries = new Map<string, Database.Statement<Record<string, string | number>, SqliteApprovalRow>>();
  /** listAdminEvents statements by which filters they have (at most eight shapes). */
  private readonly eventQueries = new Map<string, Database.Statement<Record<string, string | number>, EventRow>>();

  constructor(
    private readonly db: Database.Database,
    private readonly clock: () => number,
  ) {
    this.createTx = db.transaction((id: string, grant: NewGrant, servers: string[], tokenHash: string, now: number) => {
      const s = this.stmts;
      s.insertGrant.run(id, grant.label, JSON.stringify(servers), JSON.stringify({ ...grant.policies }), now, grant.expiresAt ?? null);
      s.insertToken.run(tokenHash, id, now);
    }).immediate;
    this.rotateTx = db.transaction((key: string, newHash: string, now: number, oldValidUntil: number): boolean => {
      const s = this.stmts;
      const row = s.getGrant.get({ key });
      if (row === undefined || row.revoked_at !== null) return false;
      s.retireCurrent.run(oldValidUntil, row.id);
      s.insertToken.run(newHash, row.id, now);
      return true;
    }).immediate;
    // The write lock is taken before the newest version is read, so a writer in another process
    // cannot read the same maximum in between: each gets its own next number.
    this.addVersionTx = db.transaction((server: string, text: string, now: number, actor: string, note: string | null): number => {
      const row = this.stmts.insertVersion.get({ server, text, now, actor, note });
      return row!.version;
    }).immediate;
    this.deleteServerTx = db.transaction((name: string): boolean => {
      const s = this.stmts;
      // Versions go only with a stored server: a server of gateway.yaml spelled the same keeps its own.
      if (s.deleteServer.run(name).changes === 0) return false;
      s.deleteVersions.run(name);
      return true;
    }).immediate;
    // A conditional UPDATE, and when it matched nothing, the row as it stands, read under the same
    // write lock: what the loser is told is what the winner wrote, not an older state.
    this.changeTx = db.transaction((change: () => SqliteApprovalRow | undefined, id: string) => {
      const row = change();
      if (row !== undefined) return { row, changed: true };
      return { row: this.stmts.getApproval.get(id), changed: false };
    }).immediate;
    // One IMMEDIATE transaction: the write lock is held from the first read of the stored tools
    // to the last change written, so a scan recorded by another process at the same moment runs
    // before or after this one, never between its reading and its writing.
    this.recordTx = db.transaction((scan: CatalogScan, now: number): CatalogRecordResult => {
      const s = this.stmts;
      const target = catalogTargetText(scan.target);
      const facts = {
        name: scan.name,
        target,
        title: scan.title,
        version: scan.version,
        displayName: scan.displayName,
        description: scan.description,
        instructions: scan.instructions,
        trusted: scan.trusted ? 1 : 0,
        transport: scan.transport,
        classifierVersion: scan.classifierVersion,
        now,
      };
      const found = s.findCatalogServer.get(scan.name, target);
      let key: string;
      if (found === undefined) {
        for (let attempt = 1; ; attempt++) {
          key = catalogKeyCandidate(scan.key, attempt);
          if (s.getCatalogServer.get(key) === undefined) break;
        }
        s.insertCatalogServer.run({ ...facts, key });
      } else {
        key = found.key;
        s.updateCatalogServer.run({ ...facts, key });
      }
      const stored: StoredToolState[] = s.catalogToolStates.all(key).map((r) => ({ name: r.name, definitionHash: r.definition_hash, removedAt: r.removed_at }));
      const plan = planCatalogRecording(stored, scan.tools);
      scan.tools.forEach((t, position) => {
        s.upsertCatalogTool.run({
          server: key,
          name: t.name,
          position,
          definition: JSON.stringify(t.definition),
          hash: t.definitionHash,
          classification: JSON.stringify(t.classification),
          category: t.classification.category,
          severity: t.classification.severity,
          now,
        });
      });
      for (const name of plan.removed) s.removeCatalogTool.run(now, key, name);
      const changes = plan.changes.map((c) => toCatalogChange(s.insertCatalogChange.get({ server: key, ...c, now })!));
      const server = toCatalogServer(s.getCatalogServer.get(key)!, categoryCounts(s.catalogCountsOf.all(key)));
      return { server, created: found === undefined, changes };
    }).immediate;
  }

  private get stmts(): ReturnType<typeof statements> {
    this.prepared ??= statements(this.db);
    return this.prepared;
  }

  async migrate(): Promise<void> {
    applySqliteMigrations(this.db, MIGRATIONS, this.clock);
  }

  async createGrant(grant: NewGrant, tokenHash: string, now: number): Promise<GrantRecord> {
    const id = randomUUID();
    const servers = sortedServers(grant.servers);
    try {
      this.createTx(id, grant, servers, tokenHash, now);
    } catch (err) {
      throw conflict(err, grant.label) ?? err;
    }
    return { id, label: grant.label, servers, policies: { ...grant.policies }, createdAt: now, expiresAt: grant.expiresAt ?? null, revokedAt: null };
  }

  async getGrant(idOrLabel: string): Promise<GrantRecord | undefined> {
    const row = this.stmts.getGrant.get({ key: idOrLabel });
    return row === undefined ? undefined : toGrant(row);
  }

  async listGrants(): Promise<GrantRecord[]> {
    return this.stmts.listGrants.all().map(toGrant);
  }

  async revokeGrant(idOrLabel: string, now: number): Promise<boolean> {
    return this.stmts.revoke.run({ key: idOrLabel, now }).changes > 0;
  }

  async rotateToken(idOrLabel: string, newHash: string, now: number, oldValidUntil: number): Promise<boolean> {
    try {
      return this.rotateTx(idOrLabel, newHash, now, oldValidUntil);
    } catch (err) {
      throw conflict(err, undefined) ?? err;
    }
  }

  async findByTokenHash(hash: string): Promise<{ grant: GrantRecord; token: TokenRecord } | undefined> {
    const row = this.stmts.findByHash.get(hash);
    if (row === undefined) return undefined;
    return {
      grant: toGrant(row),
      token: { grantId: row.id, hash: row.token_hash, createdAt: row.token_created_at, validUntil: row.token_valid_until },
    };
  }

  async createAdminCredential(cred: NewAdminCredential, tokenHash: string, now: number): Promise<AdminCredentialRecord> {
    const id = randomUUID();
    try {
      this.stmts.insertAdmin.run(id, cred.label, cred.role, tokenHash, now);
    } catch (err) {
      throw conflict(err, cred.label) ?? err;
    }
    return { id, label: cred.label, role: cred.role, createdAt: now, revokedAt: null };
  }

  async listAdminCredentials(): Promise<AdminCredentialRecord[]> {
    return this.stmts.listAdmins.all().map(toAdmin);
  }

  async revokeAdminCredential(idOrLabel: string, now: number): Promise<boolean> {
    return this.stmts.revokeAdmin.run({ key: idOrLabel, now }).changes > 0;
  }

  async findAdminByTokenHash(hash: string): Promise<AdminCredentialRecord | undefined> {
    const row = this.stmts.findAdminByHash.get(hash);
    return row === undefined ? undefined : toAdmin(row);
  }

  async appendAdminEvent(event: NewAdminEvent): Promise<AdminEvent> {
    const before = jsonOrNull(event.before);
    const after = jsonOrNull(event.after);
    const row = this.stmts.insertEvent.get(event.at, event.actor, event.role, event.action, event.target, before, after);
    return toEvent({ id: row!.id, at: event.at, actor: event.actor, role: event.role, action: event.action, target: event.target, before, after });
  }

  async listAdminEvents(query: AdminEventQuery = {}): Promise<AdminEvent[]> {
    const params: Record<string, string | number> = { limit: pageSize(query.limit) };
    const where: string[] = [];
    if (query.beforeId !== undefined) {
      params.beforeId = wholeCursor(query.beforeId);
      where.push('id < @beforeId');
    }
    if (query.action !== undefined) {
      params.action = query.action;
      where.push('action = @action');
    }
    if (query.target !== undefined) {
      params.target = query.target;
      where.push('target = @target');
    }
    const key = where.join(' AND ');
    let stmt = this.eventQueries.get(key);
    if (stmt === undefined) {
      stmt = this.db.prepare<Record<string, string | number>, EventRow>(
        `SELECT ${EVENT_COLUMNS} FROM admin_events ${key === '' ? '' : `WHERE ${key}`} ORDER BY id DESC LIMIT @limit`,
      );
      this.eventQueries.set(key, stmt);
    }
    return stmt.all(params).map(toEvent);
  }

  async createServer(name: string, definition: Readonly<Record<string, unknown>>, now: number): Promise<StoredServer> {
    const text = JSON.stringify(definition);
    try {
      this.stmts.insertServer.run(name, text, now);
    } catch (err) {
      throw conflict(err, name) ?? err;
    }
    return toServer({ name, definition: text, created_at: now });
  }

  async getServer(name: string): Promise<StoredServer | undefined> {
    const row = this.stmts.getServer.get(name);
    return row === undefined ? undefined : toServer(row);
  }

  async listServers(): Promise<StoredServer[]> {
    return this.stmts.listServers.all().map(toServer);
  }

  async deleteServer(name: string): Promise<boolean> {
    return this.deleteServerTx(name);
  }

  async addPolicyVersion(server: string, version: NewPolicyVersion, now: number): Promise<PolicyVersion> {
    const note = version.note ?? null;
    const number = this.addVersionTx(server, version.text, now, version.actor, note);
    return { server, version: number, text: version.text, createdAt: now, actor: version.actor, note };
  }

  async getPolicyVersion(server: string, version?: number): Promise<PolicyVersion | undefined> {
    const row = version === undefined ? this.stmts.getNewestVersion.get(server) : this.stmts.getVersion.get(server, version);
    return row === undefined ? undefined : toVersion(row);
  }

  async listPolicyVersions(server: string): Promise<PolicyVersion[]> {
    return this.stmts.listVersions.all(server).map(toVersion);
  }

  async latestPolicyVersions(): Promise<Map<string, number>> {
    return new Map(this.stmts.latestVersions.all().map((r) => [r.server, r.version]));
  }

  async deletePolicyVersions(server: string): Promise<number> {
    return this.stmts.retireVersions.run(server).changes;
  }

  async createApproval(approval: NewApproval, now: number): Promise<ApprovalRecord> {
    const row = this.stmts.insertApproval.get({
      id: randomUUID(),
      grantId: approval.grantId,
      grantLabel: approval.grantLabel,
      server: approval.server,
      tool: approval.tool,
      arguments: approval.arguments,
      argumentsDigest: approval.argumentsDigest,
      policyVersion: approval.policyVersion,
      rule: approval.rule,
      reason: approval.reason,
      via: JSON.stringify(approval.via),
      now: wholeMs('now', now),
      expiresAt: approval.expiresAt,
      heldBy: approval.heldBy,
    });
    return toSqliteApproval(row!);
  }

  async sharedKey(name: string, candidate: string, now: number): Promise<string> {
    if (candidate === '') throw new TypeError('a shared key cannot be empty');
    this.stmts.insertKey.run(name, candidate, wholeMs('now', now));
    return this.stmts.getKey.get(name)!.value;
  }

  async getApproval(id: string): Promise<ApprovalRecord | undefined> {
    const row = this.stmts.getApproval.get(id);
    return row === undefined ? undefined : toSqliteApproval(row);
  }

  async listApprovals(query: ApprovalQuery = {}): Promise<ApprovalRecord[]> {
    const params: Record<string, string | number> = { limit: pageSize(query.limit) };
    const where: string[] = [];
    if (query.status !== undefined) {
      params.status = query.status;
      where.push('status = @status');
    }
    if (query.cursor !== undefined) {
      params.cursor = query.cursor;
      where.push('(requested_at, id) < (SELECT requested_at, id FROM approvals WHERE id = @cursor)');
    }
    const key = where.join(' AND ');
    let stmt = this.approvalQueries.get(key);
    if (stmt === undefined) {
      stmt = this.db.prepare<Record<string, string | number>, SqliteApprovalRow>(
        `SELECT ${APPROVAL_COLUMNS} FROM approvals ${key === '' ? '' : `WHERE ${key}`} ORDER BY requested_at DESC, id DESC LIMIT @limit`,
      );
      this.approvalQueries.set(key, stmt);
    }
    return stmt.all(params).map(toSqliteApproval);
  }

  async decideApproval(id: string, d: ApprovalDecision): Promise<ApprovalChange> {
    const params = { id, decision: checkedDecision(d.decision), by: d.by, comment: d.comment ?? null, now: wholeMs('now', d.now) };
    // Changed to `expired` is not a won decision: the caller is told it lost, and why.
    return this.change(() => this.stmts.decideApproval.get(params), id, d.decision);
  }

  async expireApprovals(now: number): Promise<ApprovalRecord[]> {
    return byExpiry(this.stmts.expireApprovals.all(wholeMs('now', now)).map(toSqliteApproval));
  }

  async markExecuted(id: string, now: number): Promise<ApprovalChange> {
    const params = { id, now: wholeMs('now', now) };
    return this.change(() => this.stmts.markExecuted.get(params), id, 'executed');
  }

  async cancelApproval(id: string, reason: string, now: number): Promise<ApprovalChange> {
    const params = { id, reason, now: wholeMs('now', now) };
    return this.change(() => this.stmts.cancelApproval.get(params), id, 'cancelled');
  }

  async findRemembered(call: ApprovalCallKey, decidedSince: number): Promise<ApprovalRecord | undefined> {
    const row = this.stmts.findRemembered.get({
      argumentsDigest: call.argumentsDigest,
      grantId: call.grantId,
      server: call.server,
      tool: call.tool,
      policyVersion: call.policyVersion,
      since: wholeMs('decidedSince', decidedSince),
    });
    return row === undefined ? undefined : toSqliteApproval(row);
  }

  async recordCatalogScan(scan: CatalogScan, now: number): Promise<CatalogRecordResult> {
    checkCatalogScan(scan);
    return this.recordTx(scan, wholeMs('now', now));
  }

  async listCatalogServers(): Promise<CatalogServerRecord[]> {
    const counts = categoryCounts(this.stmts.catalogCounts.all());
    return this.stmts.listCatalogServers.all().map((r) => toCatalogServer(r, counts));
  }

  async getCatalogServer(key: string): Promise<CatalogServerRecord | undefined> {
    const row = this.stmts.getCatalogServer.get(key);
    return row === undefined ? undefined : toCatalogServer(row, categoryCounts(this.stmts.catalogCountsOf.all(key)));
  }

  async listCatalogTools(key: string): Promise<CatalogToolRecord[]> {
    return this.stmts.listCatalogTools.all(key).map(toCatalogTool);
  }

  async listCatalogChanges(key: string, query: CatalogChangeQuery = {}): Promise<CatalogChange[]> {
    const limit = pageSize(query.limit);
    const rows =
      query.beforeId === undefined
        ? this.stmts.listCatalogChanges.all({ key, limit })
        : this.stmts.listCatalogChangesBefore.all({ key, limit, beforeId: wholeCursor(query.beforeId) });
    return rows.map(toCatalogChange);
  }

  /** Runs a conditional UPDATE of approval `id`; ok when it matched and left the approval `wanted`. */
  private change(update: () => SqliteApprovalRow | undefined, id: string, wanted: ApprovalStatus): ApprovalChange {
    const { row, changed } = this.changeTx(update, id);
    return approvalChange(row === undefined ? undefined : toSqliteApproval(row), changed, wanted);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

function toSqliteApproval(row: SqliteApprovalRow): ApprovalRecord {
  return toApproval(row, JSON.parse(row.via) as string[]);
}

function toGrant(row: GrantRow): GrantRecord {
  return {
    id: row.id,
    label: row.label,
    servers: JSON.parse(row.servers) as string[],
    policies: JSON.parse(row.policies) as Record<string, string>,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
  };
}

function toEvent(row: EventRow): AdminEvent {
  return {
    id: row.id,
    at: row.at,
    actor: row.actor,
    role: row.role,
    action: row.action,
    target: row.target,
    before: row.before === null ? null : JSON.parse(row.before),
    after: row.after === null ? null : JSON.parse(row.after),
  };
}

function toServer(row: ServerRow): StoredServer {
  return { name: row.name, definition: JSON.parse(row.definition) as Record<string, unknown>, createdAt: row.created_at };
}

/** The StoreConflictError a uniqueness failure means, or undefined for any other error. */
function conflict(err: unknown, name: string | undefined): StoreConflictError | undefined {
  if (!(err instanceof Database.SqliteError) || !err.code.startsWith('SQLITE_CONSTRAINT')) return undefined;
  // The message names the column, e.g. "UNIQUE constraint failed: grants.label".
  const column = /constraint failed: (\S+)/.exec(err.message)?.[1];
  switch (column) {
    case 'grants.label':
      return new StoreConflictError(`a grant labelled "${name}" already exists`);
    case 'grant_tokens.hash':
      return new StoreConflictError('that token hash already belongs to a grant');
    case 'admin_credentials.label':
      return new StoreConflictError(`an admin credential labelled "${name}" already exists`);
    case 'admin_credentials.token_hash':
      return new StoreConflictError('that token hash already belongs to an admin credential');
    case 'servers.name':
      return new StoreConflictError(`a server named "${name}" already exists`);
    default:
      return undefined;
  }
}
