/**
 * The control store in PostgreSQL: for several gateways on several hosts sharing one set of grants.
 *
 * Why it is shaped this way:
 * - One pg.Pool per store; single-statement operations use the pool directly, each of them atomic
 *   by itself (a grant and its first token go in with one statement; a server and its policy
 *   versions go out with one). Only rotation needs an explicit transaction, see rotateToken.
 * - bigint columns come back as JavaScript numbers through a type parser of this pool only (not
 *   pg's global one, which other code in the process may rely on); a value past 2^53 would lose
 *   precision, so it is refused instead. Times in ms stay below that for 285,000 years.
 * - `migrate()` holds a transaction-scoped advisory lock keyed by the schema it migrates, so
 *   gateways starting together apply each migration once (the others wait, then find nothing to
 *   do), while gateways using other schemas of the same database do not wait for each other.
 * - Everything is created in, and read from, the connection's current schema (the first of its
 *   search_path), never a qualified one: a deployment chooses its schema with
 *   `?options=-c search_path=...` in the URL.
 * - Every value reaches the server as a query parameter; the only SQL built from strings is the
 *   migrations' own text.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { inTransaction } from './pg-transaction.js';
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

export interface PostgresStoreOptions {
  /** Most connections the store opens at once; default 10. */
  poolSize?: number;
  /**
   * Told about errors of idle pooled connections (the server restarted, a network cut). The pool
   * drops such a connection and the next query opens another, so they are not fatal; by default
   * they are ignored rather than left to crash the process as an unhandled 'error' event.
   */
  onError?: (err: unknown) => void;
}

/**
 * Opens a PostgreSQL control store on `url` (`postgres://user:password@host:port/database`, plus
 * any libpq-style parameters pg accepts). Connects lazily; call `migrate()` before anything else.
 */
export function openPostgresStore(url: string, opts: PostgresStoreOptions = {}): ControlStore {
  const types = new pg.TypeOverrides();
  types.setTypeParser(pg.types.builtins.INT8, parseBigint);
  const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10, types });
  pool.on('error', (err) => opts.onError?.(err));
  return new PostgresControlStore(pool);
}

function parseBigint(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`bigint ${text} does not fit a JavaScript number exactly`);
  return n;
}

// Two keys for pg_advisory_xact_lock(int, int): what is locked, and in which schema.
const LOCK_SQL = `SELECT pg_advisory_xact_lock(hashtext('policylayer schema migrations'), hashtext(coalesce(current_schema(), '')))`;
// Catalogue recordings take turns per schema: scans are rare (a person runs them), and one lock
// makes reading the stored tools and writing the changes one step however many replicas record.
const CATALOG_LOCK_SQL = `SELECT pg_advisory_xact_lock(hashtext('policylayer catalogue'), hashtext(coalesce(current_schema(), '')))`;

/**
 * Applies every pending migration of `migrations`, each in a transaction of its own under the
 * migration lock, and throws NewerSchemaError if the schema is newer than `migrations`. The store's
 * `migrate()` is this with MIGRATIONS; exported so tests can run it with lists of their own.
 */
export async function applyPostgresMigrations(pool: pg.Pool, migrations: readonly Migration[], clock: () => number = Date.now): Promise<void> {
  for (;;) {
    const applied = await inTransaction(pool, async (client) => {
      await client.query(LOCK_SQL);
      // Under the lock: two first-time runners would otherwise race to create the table.
      await client.query(SCHEMA_MIGRATIONS_SQL.postgres);
      const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations');
      const next = nextMigration(
        rows.map((r) => r.version),
        migrations,
      );
      if (next === undefined) return false;
      await client.query(next.postgres);
      await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [next.version, next.name, clock()]);
      return true;
    });
    if (!applied) return;
  }
}

interface GrantRow {
  id: string;
  label: string;
  servers: string[];
  policies: Record<string, string>;
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
  before: unknown;
  after: unknown;
}

interface ServerRow {
  name: string;
  definition: Record<string, unknown>;
  created_at: number;
}

// An id wins over a label spelled the same (a label may look like a UUID): `id = $1` sorts first.
const BY_KEY = 'WHERE g.id = $1 OR g.label = $1 ORDER BY g.id = $1 DESC LIMIT 1';

class PostgresControlStore implements ControlStore {
  readonly kind = 'postgres';

  constructor(private readonly pool: pg.Pool) {}

  async migrate(): Promise<void> {
    await applyPostgresMigrations(this.pool, MIGRATIONS);
  }

  async createGrant(grant: NewGrant, tokenHash: string, now: number): Promise<GrantRecord> {
    const id = randomUUID();
    const servers = sortedServers(grant.servers);
    const policies = { ...grant.policies };
    const expiresAt = grant.expiresAt ?? null;
    try {
      // One statement, so one implicit transaction: both rows or neither.
      await this.pool.query(
        `WITH g AS (
           INSERT INTO grants (id, label, servers, policies, created_at, expires_at, revoked_at)
           VALUES ($1, $2, $3::jsonb, $4::jsonb, $5, $6, NULL)
           RETURNING id
         )
         INSERT INTO grant_tokens (hash, grant_id, created_at, valid_until) SELECT $7, id, $5, NULL FROM g`,
        [id, grant.label, JSON.stringify(servers), JSON.stringify(policies), now, expiresAt, tokenHash],
      );
    } catch (err) {
      throw conflict(err, grant.label) ?? err;
    }
    return { id, label: grant.label, servers, policies, createdAt: now, expiresAt, revokedAt: null };
  }

  async getGrant(idOrLabel: string): Promise<GrantRecord | undefined> {
    const { rows } = await this.pool.query<GrantRow>(`SELECT ${GRANT_COLUMNS} FROM grants g ${BY_KEY}`, [idOrLabel]);
    return rows[0] === undefined ? undefined : toGrant(rows[0]);
  }

  async listGrants(): Promise<GrantRecord[]> {
    const { rows } = await this.pool.query<GrantRow>(`SELECT ${GRANT_COLUMNS} FROM grants g ORDER BY g.label`);
    return rows.map(toGrant);
  }

  async revokeGrant(idOrLabel: string, now: number): Promise<boolean> {
    // Under concurrent revokes the later UPDATE waits for the earlier and re-reads the row, so
    // coalesce keeps whichever time committed first.
    const result = await this.pool.query(
      `UPDATE grants SET revoked_at = coalesce(revoked_at, $2) WHERE id = (SELECT g.id FROM grants g ${BY_KEY})`,
      [idOrLabel, now],
    );
    return (result.rowCount ?? 0) > 0;
  }

  async rotateToken(idOrLabel: string, newHash: string, now: number, oldValidUntil: number): Promise<boolean> {
    try {
      return await inTransaction(this.pool, async (client) => {
        // FOR UPDATE makes rotations (and revocations) of one grant take turns: the second
        // rotation's statements run after the first commits and see its new token as current,
        // and a rotation waiting behind a revocation sees the grant revoked.
        const { rows } = await client.query<{ id: string; revoked_at: number | null }>(
          `SELECT g.id, g.revoked_at FROM grants g ${BY_KEY} FOR UPDATE`,
          [idOrLabel],
        );
        const row = rows[0];
        if (row === undefined || row.revoked_at !== null) return false;
        await client.query('UPDATE grant_tokens SET valid_until = $2 WHERE grant_id = $1 AND valid_until IS NULL', [row.id, oldValidUntil]);
        await client.query('INSERT INTO grant_tokens (hash, grant_id, created_at, valid_until) VALUES ($1, $2, $3, NULL)', [newHash, row.id, now]);
        return true;
      });
    } catch (err) {
      throw conflict(err, undefined) ?? err;
    }
  }

  async findByTokenHash(hash: string): Promise<{ grant: GrantRecord; token: TokenRecord } | undefined> {
    const { rows } = await this.pool.query<FoundRow>(
      `SELECT ${GRANT_COLUMNS}, t.hash AS token_hash, t.created_at AS token_created_at, t.valid_until AS token_valid_until
       FROM grant_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = $1`,
      [hash],
    );
    const row = rows[0];
    if (row === undefined) return undefined;
    return {
      grant: toGrant(row),
      token: { grantId: row.id, hash: row.token_hash, createdAt: row.token_created_at, validUntil: row.token_valid_until },
    };
  }

  async createAdminCredential(cred: NewAdminCredential, tokenHash: string, now: number): Promise<AdminCredentialRecord> {
    const id = randomUUID();
    try {
      await this.pool.query(
        'INSERT INTO admin_credentials (id, label, role, token_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, NULL)',
        [id, cred.label, cred.role, tokenHash, now],
      );
    } catch (err) {
      throw conflict(err, cred.label) ?? err;
    }
    return { id, label: cred.label, role: cred.role, createdAt: now, revokedAt: null };
  }

  async listAdminCredentials(): Promise<AdminCredentialRecord[]> {
    const { rows } = await this.pool.query<AdminRow>(`SELECT ${ADMIN_COLUMNS} FROM admin_credentials ORDER BY label`);
    return rows.map(toAdmin);
  }

  async revokeAdminCredential(idOrLabel: string, now: number): Promise<boolean> {
    // As in revokeGrant: a concurrent revoke waits, re-reads, and coalesce keeps the first time.
    const result = await this.pool.query(
      `UPDATE admin_credentials SET revoked_at = coalesce(revoked_at, $2)
       WHERE id = (SELECT a.id FROM admin_credentials a WHERE a.id = $1 OR a.label = $1 ORDER BY a.id = $1 DESC LIMIT 1)`,
      [idOrLabel, now],
    );
    return (result.rowCount ?? 0) > 0;
  }

  async findAdminByTokenHash(hash: string): Promise<AdminCredentialRecord | undefined> {
    const { rows } = await this.pool.query<AdminRow>(`SELECT ${ADMIN_COLUMNS} FROM admin_credentials WHERE token_hash = $1`, [hash]);
    return rows[0] === undefined ? undefined : toAdmin(rows[0]);
  }

  async appendAdminEvent(event: NewAdminEvent): Promise<AdminEvent> {
    // RETURNING the stored columns, not the given ones: the event comes back as jsonb will give it
    // to every later reader (keys reordered, duplicates dropped), so the caller's copy matches theirs.
    const { rows } = await this.pool.query<EventRow>(
      `INSERT INTO admin_events (at, actor, role, action, target, before, after)
       VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb) RETURNING ${EVENT_COLUMNS}`,
      [event.at, event.actor, event.role, event.action, event.target, jsonOrNull(event.before), jsonOrNull(event.after)],
    );
    return toEvent(rows[0]!);
  }

  async listAdminEvents(query: AdminEventQuery = {}): Promise<AdminEvent[]> {
    // Only the filters asked for appear in the SQL, so each shape of query can use its index.
    const params: Array<string | number> = [pageSize(query.limit)];
    const where: string[] = [];
    if (query.beforeId !== undefined) where.push(`id < $${params.push(wholeCursor(query.beforeId))}`);
    if (query.action !== undefined) where.push(`action = $${params.push(query.action)}`);
    if (query.target !== undefined) where.push(`target = $${params.push(query.target)}`);
    const { rows } = await this.pool.query<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM admin_events ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ORDER BY id DESC LIMIT $1`,
      params,
    );
    return rows.map(toEvent);
  }

  async createServer(name: string, definition: Readonly<Record<string, unknown>>, now: number): Promise<StoredServer> {
    try {
      const { rows } = await this.pool.query<ServerRow>(
        'INSERT INTO servers (name, definition, created_at) VALUES ($1, $2::jsonb, $3) RETURNING name, definition, created_at',
        [name, JSON.stringify(definition), now],
      );
      return toServer(rows[0]!);
    } catch (err) {
      throw conflict(err, name) ?? err;
    }
  }

  async getServer(name: string): Promise<StoredServer | undefined> {
    const { rows } = await this.pool.query<ServerRow>('SELECT name, definition, created_at FROM servers WHERE name = $1', [name]);
    return rows[0] === undefined ? undefined : toServer(rows[0]);
  }

  async listServers(): Promise<StoredServer[]> {
    const { rows } = await this.pool.query<ServerRow>('SELECT name, definition, created_at FROM servers ORDER BY name');
    return rows.map(toServer);
  }

  async deleteServer(name: string): Promise<boolean> {
    // One statement, so one transaction. Versions go only when a stored server went: the policy
    // versions of a gateway.yaml server spelled the same are not this call's to delete.
    const { rows } = await this.pool.query<{ deleted: boolean }>(
      `WITH s AS (DELETE FROM servers WHERE name = $1 RETURNING name),
            v AS (DELETE FROM policy_versions WHERE server IN (SELECT name FROM s))
       SELECT EXISTS (SELECT 1 FROM s) AS deleted`,
      [name],
    );
    return rows[0]?.deleted === true;
  }

  async addPolicyVersion(server: string, version: NewPolicyVersion, now: number): Promise<PolicyVersion> {
    const note = version.note ?? null;
    // Two writers can read the same maximum; the primary key lets one of them in and makes the
    // other fail with a unique violation once the first commits. The loser reads again and takes
    // the number after. Every lost round means another writer got a version, so the loop always
    // ends; the bound only turns a fault no one foresaw into an error instead of a spin.
    for (let attempt = 1; ; attempt++) {
      try {
        const { rows } = await this.pool.query<{ version: number }>(
          `INSERT INTO policy_versions (server, version, text, created_at, actor, note)
           SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5 FROM policy_versions WHERE server = $1
           RETURNING version`,
          [server, version.text, now, version.actor, note],
        );
        return { server, version: rows[0]!.version, text: version.text, createdAt: now, actor: version.actor, note };
      } catch (err) {
        if (attempt >= MAX_VERSION_ATTEMPTS || !(err instanceof pg.DatabaseError) || err.code !== '23505' || err.constraint !== 'policy_versions_pkey') {
          throw err;
        }
      }
    }
  }

  async getPolicyVersion(server: string, version?: number): Promise<PolicyVersion | undefined> {
    const { rows } =
      version === undefined
        ? await this.pool.query<VersionRow>(`SELECT ${VERSION_COLUMNS} FROM policy_versions WHERE server = $1 AND NOT retired ORDER BY version DESC LIMIT 1`, [server])
        : await this.pool.query<VersionRow>(`SELECT ${VERSION_COLUMNS} FROM policy_versions WHERE server = $1 AND version = $2 AND NOT retired`, [server, version]);
    return rows[0] === undefined ? undefined : toVersion(rows[0]);
  }

  async listPolicyVersions(server: string): Promise<PolicyVersion[]> {
    const { rows } = await this.pool.query<VersionRow>(`SELECT ${VERSION_COLUMNS} FROM policy_versions WHERE server = $1 AND NOT retired ORDER BY version DESC`, [server]);
    return rows.map(toVersion);
  }

  async latestPolicyVersions(): Promise<Map<string, number>> {
    const { rows } = await this.pool.query<{ server: string; version: number }>('SELECT server, max(version) AS version FROM policy_versions WHERE NOT retired GROUP BY server');
    return new Map(rows.map((r) => [r.server, r.version]));
  }

  async deletePolicyVersions(server: string): Promise<number> {
    const result = await this.pool.query('UPDATE policy_versions SET retired = true WHERE server = $1 AND NOT retired', [server]);
    return result.rowCount ?? 0;
  }

  async createApproval(approval: NewApproval, now: number): Promise<ApprovalRecord> {
    const { rows } = await this.pool.query<PgApprovalRow>(
      `INSERT INTO approvals (id, status, grant_id, grant_label, server, tool, arguments, arguments_digest, policy_version, rule, reason, via,
                              requested_at, expires_at, decided_at, decided_by, comment, executed_at, held_by)
       VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, NULL, NULL, NULL, NULL, $14)
       RETURNING ${APPROVAL_COLUMNS}`,
      [
        randomUUID(),
        approval.grantId,
        approval.grantLabel,
        approval.server,
        approval.tool,
        approval.arguments,
        approval.argumentsDigest,
        approval.policyVersion,
        approval.rule,
        approval.reason,
        JSON.stringify(approval.via),
        wholeMs('now', now),
        approval.expiresAt,
        approval.heldBy,
      ],
    );
    return toPgApproval(rows[0]!);
  }

  async sharedKey(name: string, candidate: string, now: number): Promise<string> {
    if (candidate === '') throw new TypeError('a shared key cannot be empty');
    // One statement: the insert, or, when another replica's row is there, that row. A row
    // inserted by a concurrent transaction is not visible to this statement's snapshot, so the
    // loser of a race reads it back in a second statement.
    const { rows } = await this.pool.query<{ value: string }>(
      `WITH ins AS (
         INSERT INTO gateway_keys (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING value
       )
       SELECT value FROM ins UNION ALL SELECT value FROM gateway_keys WHERE name = $1 LIMIT 1`,
      [name, candidate, wholeMs('now', now)],
    );
    if (rows[0] !== undefined) return rows[0].value;
    const again = await this.pool.query<{ value: string }>('SELECT value FROM gateway_keys WHERE name = $1', [name]);
    return again.rows[0]!.value;
  }

  async getApproval(id: string): Promise<ApprovalRecord | undefined> {
    const { rows } = await this.pool.query<PgApprovalRow>(`SELECT ${APPROVAL_COLUMNS} FROM approvals WHERE id = $1`, [id]);
    return rows[0] === undefined ? undefined : toPgApproval(rows[0]);
  }

  async listApprovals(query: ApprovalQuery = {}): Promise<ApprovalRecord[]> {
    const params: Array<string | number> = [pageSize(query.limit)];
    const where: string[] = [];
    if (query.status !== undefined) where.push(`status = $${params.push(query.status)}`);
    if (query.cursor !== undefined) {
      where.push(`(requested_at, id) < (SELECT c.requested_at, c.id FROM approvals c WHERE c.id = $${params.push(query.cursor)})`);
    }
    const { rows } = await this.pool.query<PgApprovalRow>(
      `SELECT ${APPROVAL_COLUMNS} FROM approvals ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`}
       ORDER BY requested_at DESC, id DESC LIMIT $1`,
      params,
    );
    return rows.map(toPgApproval);
  }

  async decideApproval(id: string, d: ApprovalDecision): Promise<ApprovalChange> {
    // Decided at or after its expiry, an approval expires instead: the same statement says so,
    // so no decision can slip in between a check and the write.
    return this.change(
      `UPDATE approvals SET
         status = CASE WHEN expires_at > $2 THEN $3::text ELSE 'expired' END,
         decided_at = CASE WHEN expires_at > $2 THEN $2 ELSE expires_at END,
         decided_by = CASE WHEN expires_at > $2 THEN $4::text END,
         comment = CASE WHEN expires_at > $2 THEN $5::text END
       WHERE id = $1 AND status = 'pending'
       RETURNING ${APPROVAL_COLUMNS}`,
      [id, wholeMs('now', d.now), checkedDecision(d.decision), d.by, d.comment ?? null],
      d.decision,
    );
  }

  async expireApprovals(now: number): Promise<ApprovalRecord[]> {
    // Sweeps of several replicas at once: a row locked by one waits in the other, which then sees
    // it no longer pending and skips it, so each approval is returned once.
    const { rows } = await this.pool.query<PgApprovalRow>(
      `UPDATE approvals SET status = 'expired', decided_at = expires_at WHERE status = 'pending' AND expires_at <= $1 RETURNING ${APPROVAL_COLUMNS}`,
      [wholeMs('now', now)],
    );
    return byExpiry(rows.map(toPgApproval));
  }

  async markExecuted(id: string, now: number): Promise<ApprovalChange> {
    return this.change(
      `UPDATE approvals SET status = 'executed', executed_at = $2 WHERE id = $1 AND status = 'approved' RETURNING ${APPROVAL_COLUMNS}`,
      [id, wholeMs('now', now)],
      'executed',
    );
  }

  async cancelApproval(id: string, reason: string, now: number): Promise<ApprovalChange> {
    return this.change(
      `UPDATE approvals SET
         status = CASE WHEN expires_at > $2 THEN 'cancelled' ELSE 'expired' END,
         decided_at = CASE WHEN expires_at > $2 THEN $2 ELSE expires_at END,
         comment = CASE WHEN expires_at > $2 THEN $3::text END
       WHERE id = $1 AND status = 'pending'
       RETURNING ${APPROVAL_COLUMNS}`,
      [id, wholeMs('now', now), reason],
      'cancelled',
    );
  }

  async findRemembered(call: ApprovalCallKey, decidedSince: number): Promise<ApprovalRecord | undefined> {
    // IS NOT DISTINCT FROM: equal, or both NULL (a gateway without authentication).
    const { rows } = await this.pool.query<PgApprovalRow>(
      `SELECT ${APPROVAL_COLUMNS} FROM approvals
       WHERE status = 'executed' AND arguments_digest = $1 AND grant_id IS NOT DISTINCT FROM $2::text AND server = $3 AND tool = $4
         AND policy_version = $5 AND decided_at >= $6
       ORDER BY decided_at DESC, id DESC LIMIT 1`,
      [call.argumentsDigest, call.grantId, call.server, call.tool, call.policyVersion, wholeMs('decidedSince', decidedSince)],
    );
    return rows[0] === undefined ? undefined : toPgApproval(rows[0]);
  }

  async recordCatalogScan(scan: CatalogScan, now: number): Promise<CatalogRecordResult> {
    checkCatalogScan(scan);
    wholeMs('now', now);
    const target = catalogTargetText(scan.target);
    return inTransaction(this.pool, async (client) => {
      await client.query(CATALOG_LOCK_SQL);
      const facts = [scan.title, scan.version, scan.displayName, scan.description, scan.instructions, scan.trusted, scan.transport, scan.classifierVersion, now];
      const found = await client.query<{ key: string }>('SELECT key FROM catalog_servers WHERE name = $1 AND target = $2', [scan.name, target]);
      let key = found.rows[0]?.key;
      const created = key === undefined;
      if (key === undefined) {
        for (let attempt = 1; key === undefined; attempt++) {
          const candidate = catalogKeyCandidate(scan.key, attempt);
          const ins = await client.query<{ key: string }>(
            `INSERT INTO catalog_servers (${CATALOG_SERVER_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, 1) ON CONFLICT (key) DO NOTHING RETURNING key`,
            [candidate, scan.name, target, ...facts],
          );
          key = ins.rows[0]?.key;
        }
      } else {
        await client.query(
          `UPDATE catalog_servers SET title = $2, version = $3, display_name = $4, description = $5, instructions = $6, trusted = $7,
             transport = $8, classifier_version = $9, last_seen = $10, scans = scans + 1
           WHERE key = $1`,
          [key, ...facts],
        );
      }
      const stored = await client.query<{ name: string; definition_hash: string; removed_at: number | null }>(
        'SELECT name, definition_hash, removed_at FROM catalog_tools WHERE server = $1',
        [key],
      );
      const plan = planCatalogRecording(
        stored.rows.map((r) => ({ name: r.name, definitionHash: r.definition_hash, removedAt: r.removed_at })),
        scan.tools,
      );
      for (const [position, t] of scan.tools.entries()) {
        await client.query(
          `INSERT INTO catalog_tools (${CATALOG_TOOL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, NULL)
           ON CONFLICT (server, name) DO UPDATE SET position = excluded.position, definition = excluded.definition,
             definition_hash = excluded.definition_hash, classification = excluded.classification, category = excluded.category,
             severity = excluded.severity, last_seen = excluded.last_seen, removed_at = NULL`,
          [key, t.name, position, JSON.stringify(t.definition), t.definitionHash, JSON.stringify(t.classification), t.classification.category, t.classification.severity, now],
        );
      }
      if (plan.removed.length > 0) {
        await client.query('UPDATE catalog_tools SET removed_at = $2 WHERE server = $1 AND name = ANY ($3::text[])', [key, now, plan.removed]);
      }
      const changes: CatalogChange[] = [];
      for (const c of plan.changes) {
        const { rows } = await client.query<CatalogChangeRow>(
          `INSERT INTO catalog_changes (server, tool, kind, old_hash, new_hash, definition, at) VALUES ($1, $2, $3, $4, $5, $6, $7)
           RETURNING ${CATALOG_CHANGE_COLUMNS}`,
          [key, c.tool, c.kind, c.oldHash, c.newHash, c.definition, now],
        );
        changes.push(toCatalogChange(rows[0]!));
      }
      const server = await this.catalogServer(client, key);
      return { server: server!, created, changes };
    });
  }

  async listCatalogServers(): Promise<CatalogServerRecord[]> {
    const [servers, counts] = await Promise.all([
      this.pool.query<CatalogServerRow>(`SELECT ${CATALOG_SERVER_COLUMNS} FROM catalog_servers ORDER BY key`),
      this.pool.query<{ server: string; category: string; n: number }>(
        'SELECT server, category, count(*) AS n FROM catalog_tools WHERE removed_at IS NULL GROUP BY server, category',
      ),
    ]);
    const byServer = categoryCounts(counts.rows);
    return servers.rows.map((r) => toCatalogServer(r, byServer));
  }

  async getCatalogServer(key: string): Promise<CatalogServerRecord | undefined> {
    return this.catalogServer(this.pool, key);
  }

  private async catalogServer(db: pg.Pool | pg.PoolClient, key: string): Promise<CatalogServerRecord | undefined> {
    const { rows } = await db.query<CatalogServerRow>(`SELECT ${CATALOG_SERVER_COLUMNS} FROM catalog_servers WHERE key = $1`, [key]);
    if (rows[0] === undefined) return undefined;
    const counts = await db.query<{ server: string; category: string; n: number }>(
      'SELECT server, category, count(*) AS n FROM catalog_tools WHERE removed_at IS NULL AND server = $1 GROUP BY server, category',
      [key],
    );
    return toCatalogServer(rows[0], categoryCounts(counts.rows));
  }

  async listCatalogTools(key: string): Promise<CatalogToolRecord[]> {
    const { rows } = await this.pool.query<CatalogToolRow>(
      `SELECT ${CATALOG_TOOL_COLUMNS} FROM catalog_tools WHERE server = $1
       ORDER BY removed_at IS NOT NULL, CASE WHEN removed_at IS NULL THEN position ELSE 0 END, name`,
      [key],
    );
    return rows.map(toCatalogTool);
  }

  async listCatalogChanges(key: string, query: CatalogChangeQuery = {}): Promise<CatalogChange[]> {
    const params: Array<string | number> = [key, pageSize(query.limit)];
    const before = query.beforeId === undefined ? '' : `AND id < $${params.push(wholeCursor(query.beforeId))}`;
    const { rows } = await this.pool.query<CatalogChangeRow>(
      `SELECT ${CATALOG_CHANGE_COLUMNS} FROM catalog_changes WHERE server = $1 ${before} ORDER BY id DESC LIMIT $2`,
      params,
    );
    return rows.map(toCatalogChange);
  }

  /**
   * Runs a conditional UPDATE of the approval whose id is the first parameter; ok when it matched and left the approval `wanted`.
   * When it matched nothing, the row is read by a second statement, not within the first: under
   * READ COMMITTED an UPDATE that waited for a concurrent change re-checks the row as committed,
   * but any other part of the same statement still reads the snapshot taken before it waited, and
   * would tell the loser the approval is pending. A new statement sees what the winner committed.
   */
  private async change(sql: string, params: [id: string, ...rest: unknown[]], wanted: ApprovalStatus): Promise<ApprovalChange> {
    const { rows } = await this.pool.query<PgApprovalRow>(sql, params);
    if (rows[0] !== undefined) return approvalChange(toPgApproval(rows[0]), true, wanted);
    return approvalChange(await this.getApproval(params[0]), false, wanted);
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
  }
}

type PgApprovalRow = ApprovalRow<string[]>;

function toPgApproval(row: PgApprovalRow): ApprovalRecord {
  return toApproval(row, row.via);
}

/** Far more rounds than writers a deployment runs at once; see addPolicyVersion. */
const MAX_VERSION_ATTEMPTS = 100;

function toGrant(row: GrantRow): GrantRecord {
  return {
    id: row.id,
    label: row.label,
    servers: row.servers,
    policies: row.policies,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
  };
}

function toEvent(row: EventRow): AdminEvent {
  return { id: row.id, at: row.at, actor: row.actor, role: row.role, action: row.action, target: row.target, before: row.before, after: row.after };
}

function toServer(row: ServerRow): StoredServer {
  return { name: row.name, definition: row.definition, createdAt: row.created_at };
}

/** The StoreConflictError a unique violation means, or undefined for any other error. */
function conflict(err: unknown, name: string | undefined): StoreConflictError | undefined {
  if (!(err instanceof pg.DatabaseError) || err.code !== '23505') return undefined;
  switch (err.constraint) {
    case 'grants_label_key':
      return new StoreConflictError(`a grant labelled "${name}" already exists`);
    case 'grant_tokens_pkey':
      return new StoreConflictError('that token hash already belongs to a grant');
    case 'admin_credentials_label_key':
      return new StoreConflictError(`an admin credential labelled "${name}" already exists`);
    case 'admin_credentials_token_hash_key':
      return new StoreConflictError('that token hash already belongs to an admin credential');
    case 'servers_pkey':
      return new StoreConflictError(`a server named "${name}" already exists`);
    default:
      return undefined;
  }
}
