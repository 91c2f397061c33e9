/**
 * The control-plane schema as an ordered list of migrations, each written once per dialect, and
 * the one rule both stores follow to decide what to apply.
 *
 * Why data rather than files: the list ships inside the build, so a gateway can never run with a
 * schema its code does not match, and each store applies the same versions in the same order.
 * Migrations are append-only: a released migration is never edited, a change is a new version.
 *
 * Why the runner, not migration 1, creates `schema_migrations`: the runner has to read that table
 * before it can know whether migration 1 is applied, so the table must exist before any migration
 * runs. Its shape (version, name, applied_at) therefore never changes.
 *
 * Choices shared by both dialects:
 * - Times are integer milliseconds since the epoch (INTEGER in SQLite, bigint in PostgreSQL), like
 *   every `now` the store is given: no time zones, no conversions, and the stores compare them
 *   as plain numbers.
 * - `servers` and `policies` are JSON: TEXT checked with json_valid in SQLite, jsonb in
 *   PostgreSQL (not text[]), so both columns have one shape in both dialects and a future query
 *   such as "grants that may call server X" can use `servers ? 'X'` in PostgreSQL.
 * - A grant has at most one current token (valid_until IS NULL): a partial unique index says so,
 *   so even a rotation race the code failed to prevent could not leave two current tokens.
 * - Labels compare and sort byte by byte (COLLATE "C" in PostgreSQL, SQLite's BINARY default),
 *   so both stores list grants in the same order whatever the database's locale.
 */

/** One schema change, in both dialects. */
export interface Migration {
  /** 1, 2, 3, …: applied in this order, recorded in `schema_migrations`. */
  readonly version: number;
  /** A short description, recorded with the version (for people reading the table). */
  readonly name: string;
  /** Statements for SQLite, run together in one transaction. */
  readonly sqlite: string;
  /** Statements for PostgreSQL, run together in one transaction. */
  readonly postgres: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'grants and their tokens',
    sqlite: `
      CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        label TEXT NOT NULL UNIQUE,
        servers TEXT NOT NULL CHECK (json_valid(servers) AND json_type(servers) = 'array'),
        policies TEXT NOT NULL CHECK (json_valid(policies) AND json_type(policies) = 'object'),
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
      ) STRICT;
      CREATE TABLE grant_tokens (
        hash TEXT PRIMARY KEY,
        grant_id TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        valid_until INTEGER
      ) STRICT;
      CREATE INDEX grant_tokens_grant_id ON grant_tokens (grant_id);
      CREATE UNIQUE INDEX grant_tokens_current ON grant_tokens (grant_id) WHERE valid_until IS NULL;
    `,
    postgres: `
      CREATE TABLE grants (
        id text PRIMARY KEY,
        label text COLLATE "C" NOT NULL CONSTRAINT grants_label_key UNIQUE,
        servers jsonb NOT NULL CHECK (jsonb_typeof(servers) = 'array'),
        policies jsonb NOT NULL CHECK (jsonb_typeof(policies) = 'object'),
        created_at bigint NOT NULL,
        expires_at bigint,
        revoked_at bigint
      );
      CREATE TABLE grant_tokens (
        hash text PRIMARY KEY,
        grant_id text NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
        created_at bigint NOT NULL,
        valid_until bigint
      );
      CREATE INDEX grant_tokens_grant_id ON grant_tokens (grant_id);
      CREATE UNIQUE INDEX grant_tokens_current ON grant_tokens (grant_id) WHERE valid_until IS NULL;
    `,
  },
  // Migration 2, beyond the shared choices above:
  // - An admin credential has exactly one token, so its hash is a column with its own unique
  //   constraint rather than a table of tokens: there is no rotation to keep history for.
  // - Roles are checked by the database as well as the code: a role the code does not know (a
  //   typo in a hand-run UPDATE, an older build reading a newer role) must not grant anything.
  // - Admin event ids come from AUTOINCREMENT in SQLite, because a plain rowid may be handed out
  //   again after the newest row is deleted, and an audit cursor (`beforeId`) must never meet a
  //   reused id; from an identity column in PostgreSQL, whose sequence never goes back either.
  //   Newest-first paging walks the primary key backwards; the (action, id) and (target, id)
  //   indexes let a filtered page do the same within one action or target.
  // - An event's before/after is nullable JSON of any type (not only objects): null, the SQL
  //   NULL, is "did not exist". PostgreSQL's jsonb cannot hold the escape \u0000, so an event
  //   carrying one is refused there rather than stored altered.
  // - Dropping a server's versions (its policy goes back to gateway.yaml) marks them retired
  //   instead of deleting them, so the next version takes the number after every one ever
  //   written: a gateway that polls for the newest number can never see the same number stand
  //   for two different texts. Only deleting a stored server removes its rows (a server added
  //   again is told apart by its created_at).
  // - policy_versions has no foreign key to servers: servers defined in gateway.yaml are not
  //   stored, yet their policies are versioned here too. Deleting a stored server deletes its
  //   versions in the store's code instead. Server names compare byte by byte in both tables
  //   (COLLATE "C"), so they list in one order everywhere and the two columns compare without a
  //   collation conflict.
  // - The newest version of a server is the greatest `version` under the (server, version)
  //   primary key, so reading it, or every server's, is an index walk: no "current" flag that a
  //   writer would have to keep in step.
  {
    version: 2,
    name: 'admin credentials, admin events, servers and policy versions',
    sqlite: `
      CREATE TABLE admin_credentials (
        id TEXT NOT NULL PRIMARY KEY,
        label TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'policy_manager', 'viewer')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
      ) STRICT;
      CREATE TABLE admin_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'policy_manager', 'viewer')),
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT CHECK (before IS NULL OR json_valid(before)),
        after TEXT CHECK (after IS NULL OR json_valid(after))
      ) STRICT;
      CREATE INDEX admin_events_action ON admin_events (action, id);
      CREATE INDEX admin_events_target ON admin_events (target, id);
      CREATE TABLE servers (
        name TEXT NOT NULL PRIMARY KEY,
        definition TEXT NOT NULL CHECK (json_valid(definition) AND json_type(definition) = 'object'),
        created_at INTEGER NOT NULL
      ) STRICT;
      CREATE TABLE policy_versions (
        server TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        text TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        note TEXT,
        retired INTEGER NOT NULL DEFAULT 0 CHECK (retired IN (0, 1)),
        PRIMARY KEY (server, version)
      ) STRICT;
    `,
    postgres: `
      CREATE TABLE admin_credentials (
        id text PRIMARY KEY,
        label text COLLATE "C" NOT NULL CONSTRAINT admin_credentials_label_key UNIQUE,
        role text NOT NULL CHECK (role IN ('admin', 'policy_manager', 'viewer')),
        token_hash text NOT NULL CONSTRAINT admin_credentials_token_hash_key UNIQUE,
        created_at bigint NOT NULL,
        revoked_at bigint
      );
      CREATE TABLE admin_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at bigint NOT NULL,
        actor text NOT NULL,
        role text NOT NULL CHECK (role IN ('admin', 'policy_manager', 'viewer')),
        action text NOT NULL,
        target text NOT NULL,
        before jsonb,
        after jsonb
      );
      CREATE INDEX admin_events_action ON admin_events (action, id);
      CREATE INDEX admin_events_target ON admin_events (target, id);
      CREATE TABLE servers (
        name text COLLATE "C" CONSTRAINT servers_pkey PRIMARY KEY,
        definition jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
        created_at bigint NOT NULL
      );
      CREATE TABLE policy_versions (
        server text COLLATE "C" NOT NULL,
        version integer NOT NULL CHECK (version >= 1),
        text text NOT NULL,
        created_at bigint NOT NULL,
        actor text NOT NULL,
        note text,
        retired boolean NOT NULL DEFAULT false,
        CONSTRAINT policy_versions_pkey PRIMARY KEY (server, version)
      );
    `,
  },
  // Migration 3, human approvals, beyond the shared choices above:
  // - One row per held call, its status moving only forward (pending → approved → executed;
  //   pending → denied | expired | cancelled). Every change is an UPDATE conditional on the status
  //   it leaves, so two approvers or two replicas acting at once cannot both win (see store.ts).
  // - The CHECKs tie the times to the status (pending ⇔ no decidedAt; approved, denied and executed
  //   ⇔ a named approver; executed ⇔ executedAt), so no write, however buggy, can record a
  //   half-made decision; and the digest must be lowercase hex SHA-256.
  // - `arguments` is TEXT in both dialects, checked as JSON: it holds the canonical JSON whose hash
  //   is `arguments_digest`, and jsonb would reorder its keys (and refuse \u0000), so the text
  //   read back would no longer be the text hashed. `via` is a JSON array, like grants.servers.
  // - grant_id has no foreign key: a caller may come from OIDC (no stored grant) or, without
  //   authentication, from no grant at all (NULL), and the record must outlive a deleted grant.
  // - Ids compare byte by byte (COLLATE "C"), as the listing's tie-breaker after requested_at, so
  //   both stores page in one order. Indexes: the listing (all, and by status), the expiry sweep
  //   (only pending rows), and `remember` (only executed rows, by the arguments digest first,
  //   the most selective column of the call's key).
  {
    version: 3,
    name: 'human approvals',
    sqlite: `
      CREATE TABLE approvals (
        id TEXT NOT NULL PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled', 'executed')),
        grant_id TEXT,
        grant_label TEXT,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL CHECK (json_valid(arguments)),
        arguments_digest TEXT NOT NULL CHECK (length(arguments_digest) = 64 AND arguments_digest NOT GLOB '*[^0-9a-f]*'),
        policy_version TEXT NOT NULL,
        rule TEXT NOT NULL,
        reason TEXT NOT NULL,
        via TEXT NOT NULL CHECK (json_valid(via) AND json_type(via) = 'array'),
        requested_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL CHECK (expires_at > requested_at),
        decided_at INTEGER,
        decided_by TEXT,
        comment TEXT,
        executed_at INTEGER,
        held_by TEXT,
        CHECK ((status = 'pending') = (decided_at IS NULL)),
        CHECK ((status IN ('approved', 'denied', 'executed')) = (decided_by IS NOT NULL)),
        CHECK ((status = 'executed') = (executed_at IS NOT NULL))
      ) STRICT;
      CREATE INDEX approvals_listing ON approvals (requested_at, id);
      CREATE INDEX approvals_status ON approvals (status, requested_at, id);
      CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE status = 'pending';
      CREATE INDEX approvals_remembered ON approvals (arguments_digest, decided_at) WHERE status = 'executed';
    `,
    postgres: `
      CREATE TABLE approvals (
        id text COLLATE "C" CONSTRAINT approvals_pkey PRIMARY KEY,
        status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled', 'executed')),
        grant_id text,
        grant_label text,
        server text NOT NULL,
        tool text NOT NULL,
        arguments text NOT NULL CHECK (arguments::json IS NOT NULL),
        arguments_digest text NOT NULL CHECK (arguments_digest ~ '^[0-9a-f]{64}$'),
        policy_version text NOT NULL,
        rule text NOT NULL,
        reason text NOT NULL,
        via jsonb NOT NULL CHECK (jsonb_typeof(via) = 'array'),
        requested_at bigint NOT NULL,
        expires_at bigint NOT NULL CHECK (expires_at > requested_at),
        decided_at bigint,
        decided_by text,
        comment text,
        executed_at bigint,
        held_by text,
        CHECK ((status = 'pending') = (decided_at IS NULL)),
        CHECK ((status IN ('approved', 'denied', 'executed')) = (decided_by IS NOT NULL)),
        CHECK ((status = 'executed') = (executed_at IS NOT NULL))
      );
      CREATE INDEX approvals_listing ON approvals (requested_at, id);
      CREATE INDEX approvals_status ON approvals (status, requested_at, id);
      CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE status = 'pending';
      CREATE INDEX approvals_remembered ON approvals (arguments_digest, decided_at) WHERE status = 'executed';
    `,
  },
  // Version 4: keys the gateway makes for itself and every replica must share, by name (the key
  // of the signed approve/deny links in approval webhooks, when approvals.link_secret names
  // none). A row is written once and never changed: the first replica's INSERT wins, the others
  // read it back (ControlStore.sharedKey).
  {
    version: 4,
    name: 'shared gateway keys',
    sqlite: `
      CREATE TABLE gateway_keys (
        name TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL CHECK (length(value) > 0),
        created_at INTEGER NOT NULL
      ) STRICT;
    `,
    postgres: `
      CREATE TABLE gateway_keys (
        name text COLLATE "C" CONSTRAINT gateway_keys_pkey PRIMARY KEY,
        value text NOT NULL CHECK (length(value) > 0),
        created_at bigint NOT NULL
      );
    `,
  },
  // Version 5: the catalogue of scanned servers (ControlStore.recordCatalogScan), beyond the
  // shared choices above:
  // - A server's identity is its name and its target (the command or URL, as canonical JSON),
  //   unique together; its `key` is what people type (`catalog show everything`), assigned once.
  // - Definitions and classifications are TEXT checked as JSON objects, not jsonb: a definition
  //   comes from the server, which may put \u0000 in a description (jsonb refuses it, and a server
  //   must not be able to keep itself out of the catalogue that way); the text read back is the
  //   text stored. Category and severity are columns of their own, so counts are plain GROUP BYs.
  // - A removed tool keeps its row, with removed_at, so its first_seen and last definition stay.
  // - catalog_changes is the whole history: the first scan records every tool as added, and every
  //   added or changed row carries the definition from then on, so any earlier definition can be
  //   shown (what a rug pull changed). Ids grow as admin event ids do (AUTOINCREMENT, identity),
  //   so a history cursor never meets a reused id. The CHECKs tie the hashes to the kind.
  // - Tools and changes go with their server (ON DELETE CASCADE).
  {
    version: 5,
    name: 'the catalogue of scanned servers and tools',
    sqlite: `
      CREATE TABLE catalog_servers (
        key TEXT NOT NULL PRIMARY KEY CHECK (length(key) > 0),
        name TEXT NOT NULL,
        target TEXT NOT NULL CHECK (json_valid(target) AND json_type(target) = 'object'),
        title TEXT,
        version TEXT,
        display_name TEXT,
        description TEXT,
        instructions TEXT,
        trusted INTEGER NOT NULL CHECK (trusted IN (0, 1)),
        transport TEXT NOT NULL,
        classifier_version INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        scans INTEGER NOT NULL CHECK (scans >= 1),
        UNIQUE (name, target)
      ) STRICT;
      CREATE TABLE catalog_tools (
        server TEXT NOT NULL REFERENCES catalog_servers (key) ON DELETE CASCADE,
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        definition TEXT NOT NULL CHECK (json_valid(definition) AND json_type(definition) = 'object'),
        definition_hash TEXT NOT NULL,
        classification TEXT NOT NULL CHECK (json_valid(classification) AND json_type(classification) = 'object'),
        category TEXT NOT NULL,
        severity TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        removed_at INTEGER,
        PRIMARY KEY (server, name)
      ) STRICT;
      CREATE TABLE catalog_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        server TEXT NOT NULL REFERENCES catalog_servers (key) ON DELETE CASCADE,
        tool TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('added', 'changed', 'removed')),
        old_hash TEXT,
        new_hash TEXT,
        definition TEXT CHECK (definition IS NULL OR (json_valid(definition) AND json_type(definition) = 'object')),
        at INTEGER NOT NULL,
        CHECK ((kind = 'added') = (old_hash IS NULL)),
        CHECK ((kind = 'removed') = (new_hash IS NULL)),
        CHECK ((kind = 'removed') = (definition IS NULL)),
        CHECK (kind <> 'changed' OR old_hash <> new_hash)
      ) STRICT;
      CREATE INDEX catalog_changes_server ON catalog_changes (server, id);
    `,
    postgres: `
      CREATE TABLE catalog_servers (
        key text COLLATE "C" CONSTRAINT catalog_servers_pkey PRIMARY KEY CHECK (length(key) > 0),
        name text COLLATE "C" NOT NULL,
        target text COLLATE "C" NOT NULL CHECK (json_typeof(target::json) = 'object'),
        title text,
        version text,
        display_name text,
        description text,
        instructions text,
        trusted boolean NOT NULL,
        transport text NOT NULL,
        classifier_version integer NOT NULL,
        first_seen bigint NOT NULL,
        last_seen bigint NOT NULL,
        scans integer NOT NULL CHECK (scans >= 1),
        CONSTRAINT catalog_servers_identity UNIQUE (name, target)
      );
      CREATE TABLE catalog_tools (
        server text COLLATE "C" NOT NULL REFERENCES catalog_servers (key) ON DELETE CASCADE,
        name text COLLATE "C" NOT NULL,
        position integer NOT NULL,
        definition text NOT NULL CHECK (json_typeof(definition::json) = 'object'),
        definition_hash text NOT NULL,
        classification text NOT NULL CHECK (json_typeof(classification::json) = 'object'),
        category text NOT NULL,
        severity text NOT NULL,
        first_seen bigint NOT NULL,
        last_seen bigint NOT NULL,
        removed_at bigint,
        CONSTRAINT catalog_tools_pkey PRIMARY KEY (server, name)
      );
      CREATE TABLE catalog_changes (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        server text COLLATE "C" NOT NULL REFERENCES catalog_servers (key) ON DELETE CASCADE,
        tool text COLLATE "C" NOT NULL,
        kind text NOT NULL CHECK (kind IN ('added', 'changed', 'removed')),
        old_hash text,
        new_hash text,
        definition text CHECK (definition IS NULL OR json_typeof(definition::json) = 'object'),
        at bigint NOT NULL,
        CHECK ((kind = 'added') = (old_hash IS NULL)),
        CHECK ((kind = 'removed') = (new_hash IS NULL)),
        CHECK ((kind = 'removed') = (definition IS NULL)),
        CHECK (kind <> 'changed' OR old_hash <> new_hash)
      );
      CREATE INDEX catalog_changes_server ON catalog_changes (server, id);
    `,
  },
];

/** The newest schema version this build knows. */
export const LATEST_VERSION: number = MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0);

/** The bookkeeping table, per dialect; created by the runner (see above) if missing. */
export const SCHEMA_MIGRATIONS_SQL = {
  sqlite: `CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`,
  postgres: `CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at bigint NOT NULL
  )`,
} as const;

/**
 * The database's schema is newer than this build: a newer PolicyLayer migrated it. Refused rather
 * than ignored, because this build's queries may no longer mean what they did on that schema.
 */
export class NewerSchemaError extends Error {
  constructor(
    readonly databaseVersion: number,
    readonly knownVersion: number,
  ) {
    super(
      `the control-plane database was written by a newer PolicyLayer: it is at schema version ${databaseVersion}, ` +
        `this build knows versions up to ${knownVersion}. Upgrade PolicyLayer, or point it at another database.`,
    );
    this.name = 'NewerSchemaError';
  }
}

/**
 * The next migration to apply given the versions already applied, or undefined when none is
 * pending. Throws NewerSchemaError if any applied version is newer than `migrations` knows.
 * A runner calls this inside the transaction (and, in PostgreSQL, under the lock) that would
 * apply the answer, so two runners never act on the same stale reading.
 */
export function nextMigration(applied: Iterable<number>, migrations: readonly Migration[] = MIGRATIONS): Migration | undefined {
  const done = new Set(applied);
  const known = migrations.reduce((max, m) => Math.max(max, m.version), 0);
  const newest = Math.max(0, ...done);
  if (newest > known) throw new NewerSchemaError(newest, known);
  return [...migrations].sort((a, b) => a.version - b.version).find((m) => !done.has(m.version));
}
