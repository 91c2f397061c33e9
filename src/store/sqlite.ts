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
import type { ControlStore, GrantRecord, NewGrant, TokenRecord } from './store.js';

export interface SqliteStoreOptions {
  /** The clock `migrate()` records `applied_at` with; default `Date.now`. (Grants and tokens take `now` from the caller.) */
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

const GRANT_COLUMNS = 'g.id, g.label, g.servers, g.policies, g.created_at, g.expires_at, g.revoked_at';
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
  };
}

class SqliteControlStore implements ControlStore {
  readonly kind = 'sqlite';
  private prepared: ReturnType<typeof statements> | undefined;
  private readonly createTx: (id: string, grant: NewGrant, servers: string[], tokenHash: string, now: number) => void;
  private readonly rotateTx: (key: string, newHash: string, now: number, oldValidUntil: number) => boolean;

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

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

/** Servers are a set: sorted (by UTF-16 code unit, as JavaScript sorts) and without repeats. */
function sortedServers(servers: readonly string[]): string[] {
  return [...new Set(servers)].sort();
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

/** The StoreConflictError a uniqueness failure means, or undefined for any other error. */
function conflict(err: unknown, label: string | undefined): StoreConflictError | undefined {
  if (!(err instanceof Database.SqliteError) || !err.code.startsWith('SQLITE_CONSTRAINT')) return undefined;
  if (err.message.includes('grants.label')) return new StoreConflictError(`a grant labelled "${label}" already exists`);
  if (err.message.includes('grant_tokens.hash')) return new StoreConflictError('that token hash already belongs to a grant');
  return undefined;
}
