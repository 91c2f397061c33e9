import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { assertStoresShareState, controlStoreContract } from './contract.js';
import { LATEST_VERSION, MIGRATIONS, NewerSchemaError } from './migrations.js';
import type { Migration } from './migrations.js';
import { applyPostgresMigrations, openPostgresStore } from './postgres.js';
import type { ControlStore } from './store.js';

const DATABASE_URL = process.env.DATABASE_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
const T0 = 1_700_000_000_000;
// Every schema this run creates starts with this, so parallel runs never meet and cleanup is exact.
const RUN = `pl_test_${randomBytes(5).toString('hex')}`;
const hash = () => createHash('sha256').update(randomBytes(32)).digest('hex');

if (DATABASE_URL === undefined) {
  if (REQUIRED) {
    it('the PostgreSQL control store is tested against DATABASE_URL, which REQUIRE_SERVICES=1 makes mandatory', () => {
      assert.fail('REQUIRE_SERVICES=1 but DATABASE_URL is not set');
    });
  } else {
    it('the PostgreSQL control store is tested against DATABASE_URL', { skip: 'DATABASE_URL is not set (REQUIRE_SERVICES=1 makes this a failure)' }, () => {});
  }
} else {
  storeTests(DATABASE_URL);
}

function storeTests(url: string): void {
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  const schemas: string[] = [];
  const stores: ControlStore[] = [];

  /** A new, empty schema of this run, and the URL of a connection that works in it. */
  async function freshSchema(): Promise<{ schema: string; schemaUrl: string }> {
    const schema = `${RUN}_${schemas.length + 1}`;
    await admin.query(`CREATE SCHEMA ${pg.escapeIdentifier(schema)}`);
    schemas.push(schema);
    const u = new URL(url);
    u.searchParams.set('options', `-c search_path=${schema}`);
    return { schema, schemaUrl: u.href };
  }
  function open(schemaUrl: string): ControlStore {
    const store = openPostgresStore(schemaUrl, { poolSize: 4 });
    stores.push(store);
    return store;
  }
  async function count(schema: string, sql: string): Promise<number> {
    const { rows } = await admin.query<{ n: string }>(sql.replace('$schema', pg.escapeIdentifier(schema)));
    return Number(rows[0]?.n);
  }

  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`);
    await admin.end();
  });

  describe('PostgreSQL control store', () => {
    // One schema for the whole contract: its tests keep apart by label, as on a shared database.
    let contractUrl = '';
    before(async () => {
      contractUrl = (await freshSchema()).schemaUrl;
    });
    controlStoreContract('postgres', async () => openPostgresStore(contractUrl));

    it("lets two stores on one database see each other's grants, admin credentials, admin events, servers and policy versions at once", async () => {
      const { schemaUrl } = await freshSchema();
      const a = open(schemaUrl);
      const b = open(schemaUrl);
      await assertStoresShareState(a, b);
    });

    it('applies each migration exactly once when several stores migrate a new schema at the same time', async () => {
      const { schema, schemaUrl } = await freshSchema();
      const racers = Array.from({ length: 5 }, () => open(schemaUrl));
      await Promise.all(racers.map((s) => s.migrate()));
      for (const m of MIGRATIONS) {
        assert.equal(await count(schema, `SELECT count(*) AS n FROM $schema.schema_migrations WHERE version = ${m.version}`), 1, `version ${m.version}`);
      }
      assert.equal(await count(schema, 'SELECT count(*) AS n FROM $schema.schema_migrations'), MIGRATIONS.length);
      await racers[0]!.createGrant({ label: 'works', servers: [] }, hash(), T0);
      assert.equal((await racers[4]!.getGrant('works'))?.label, 'works');
    });

    it('creates its tables in the schema of its connection, not in public', async () => {
      const { schema, schemaUrl } = await freshSchema();
      await open(schemaUrl).migrate();
      const { rows } = await admin.query<{ table_name: string }>(
        'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
        [schema],
      );
      assert.deepEqual(
        rows.map((r) => r.table_name),
        ['admin_credentials', 'admin_events', 'approvals', 'catalog_changes', 'catalog_servers', 'catalog_tools', 'gateway_keys', 'grant_tokens', 'grants', 'policy_versions', 'schema_migrations', 'servers'],
      );
    });

    it('declares labels and server names byte-ordered, so they list alike whatever the database collation', async () => {
      // The contract's ordering tests cannot see this on a database whose default is already C.
      const { schema, schemaUrl } = await freshSchema();
      await open(schemaUrl).migrate();
      const { rows } = await admin.query<{ column: string; collation_name: string | null }>(
        `SELECT table_name || '.' || column_name AS column, collation_name FROM information_schema.columns
         WHERE table_schema = $1 AND (table_name, column_name) IN (('grants', 'label'), ('admin_credentials', 'label'), ('servers', 'name'), ('policy_versions', 'server'))
         ORDER BY 1`,
        [schema],
      );
      assert.deepEqual(rows, [
        { column: 'admin_credentials.label', collation_name: 'C' },
        { column: 'grants.label', collation_name: 'C' },
        { column: 'policy_versions.server', collation_name: 'C' },
        { column: 'servers.name', collation_name: 'C' },
      ]);
    });

    it('gives policy writers on two stores, writing at once, the versions 1 to 40 without a gap or a repeat', async () => {
      const { schemaUrl } = await freshSchema();
      const [a, b] = [open(schemaUrl), open(schemaUrl)];
      await a.migrate();
      const writes = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).addPolicyVersion('github', { text: `t${i}`, actor: `w${i}` }, T0 + i));
      const added = await Promise.all(writes);
      assert.deepEqual(
        added.map((v) => v.version).sort((x, y) => x - y),
        Array.from({ length: 40 }, (_, i) => i + 1),
      );
      for (const v of added) assert.deepEqual(await b.getPolicyVersion('github', v.version), v);
      assert.deepEqual(await a.latestPolicyVersions(), new Map([['github', 40]]));
    });

    it('makes a policy writer that read the same newest version as another, still uncommitted, writer take the number after it', async () => {
      // Deterministic, unlike a race: a transaction holds version 1 uncommitted while the store
      // writes, so the store's insert must wait for it, fail on the key, and try again.
      const { schema, schemaUrl } = await freshSchema();
      const store = open(schemaUrl);
      await store.migrate();
      const holder = await admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(
          `INSERT INTO ${pg.escapeIdentifier(schema)}.policy_versions (server, version, text, created_at, actor, note) VALUES ('github', 1, 'held', $1, 'holder', NULL)`,
          [T0],
        );
        const { rows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        const pending = store.addPolicyVersion('github', { text: 'waiting', actor: 'store' }, T0 + 1);
        pending.catch(() => {});
        await waitUntilBlockedBy(rows[0]!.pid);
        await holder.query('COMMIT');
        const added = await pending;
        assert.equal(added.version, 2);
        assert.deepEqual(
          (await store.listPolicyVersions('github')).map((v) => [v.version, v.text]),
          [
            [2, 'waiting'],
            [1, 'held'],
          ],
        );
      } finally {
        await holder.query('ROLLBACK').catch(() => {});
        holder.release();
      }
    });

    it('tells a decision that waited behind another, still uncommitted, decision what that one committed, not the pending it first saw', async () => {
      // Deterministic, unlike a race: a transaction holds a denial uncommitted while the store
      // approves, so the store's UPDATE waits, then finds the row no longer pending. Read in the
      // same statement, the loser would be shown the snapshot from before it waited: pending.
      const { schema, schemaUrl } = await freshSchema();
      const store = open(schemaUrl);
      await store.migrate();
      const args = '{"amount":500}';
      const created = await store.createApproval(
        {
          grantId: 'g',
          grantLabel: 'alice',
          server: 'payments',
          tool: 'create_charge',
          arguments: args,
          argumentsDigest: createHash('sha256').update(args).digest('hex'),
          policyVersion: 'sha256:0123456789abcdef',
          rule: '/tools/create_charge',
          reason: 'r',
          via: ['dashboard'],
          expiresAt: T0 + 60_000,
          heldBy: 'a',
        },
        T0,
      );
      const holder = await admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(
          `UPDATE ${pg.escapeIdentifier(schema)}.approvals SET status = 'denied', decided_at = $2, decided_by = 'holder', comment = 'first' WHERE id = $1`,
          [created.id, T0 + 1],
        );
        const { rows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        const pending = store.decideApproval(created.id, { decision: 'approved', by: 'store', now: T0 + 2 });
        pending.catch(() => {});
        await waitUntilBlockedBy(rows[0]!.pid);
        await holder.query('COMMIT');
        assert.deepEqual(await pending, {
          ok: false,
          approval: { ...created, status: 'denied', decidedAt: T0 + 1, decidedBy: 'holder', comment: 'first' },
          expiredNow: false,
        });
      } finally {
        await holder.query('ROLLBACK').catch(() => {});
        holder.release();
      }
    });

    /** Resolves once some session waits for a lock that the backend `pid` holds. */
    async function waitUntilBlockedBy(pid: number): Promise<void> {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const { rows } = await admin.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))', [pid]);
        if (Number(rows[0]?.n) > 0) return;
        if (Date.now() > deadline) throw new Error(`no session started waiting for backend ${pid}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }

    it('deletes a server and its policy versions in one transaction, so a failure keeps both', async () => {
      const { schema, schemaUrl } = await freshSchema();
      const store = open(schemaUrl);
      await store.migrate();
      await store.createServer('github', { command: 'x' }, T0);
      await store.addPolicyVersion('github', { text: 'v1', actor: 'cli' }, T0);
      // A trigger that refuses to delete versions stands in for any failure half-way through.
      const q = pg.escapeIdentifier(schema);
      await admin.query(`CREATE FUNCTION ${q}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`);
      await admin.query(`CREATE TRIGGER refuse BEFORE DELETE ON ${q}.policy_versions FOR EACH ROW EXECUTE FUNCTION ${q}.refuse()`);
      await assert.rejects(store.deleteServer('github'), /refused/);
      assert.ok(await store.getServer('github'));
      assert.equal((await store.listPolicyVersions('github')).length, 1);
    });

    it('refuses a schema written by a newer PolicyLayer, naming both versions, and leaves it as it was', async () => {
      const { schema, schemaUrl } = await freshSchema();
      await open(schemaUrl).migrate();
      await admin.query(
        `INSERT INTO ${pg.escapeIdentifier(schema)}.schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
        [LATEST_VERSION + 1, 'from the future', T0],
      );
      await assert.rejects(open(schemaUrl).migrate(), (err: unknown) => {
        assert.ok(err instanceof NewerSchemaError, String(err));
        assert.match(err.message, /newer PolicyLayer/);
        assert.match(err.message, new RegExp(`version ${LATEST_VERSION + 1}\\b`));
        assert.match(err.message, new RegExp(`up to ${LATEST_VERSION}\\b`));
        return true;
      });
      assert.equal(await count(schema, 'SELECT count(*) AS n FROM $schema.schema_migrations'), MIGRATIONS.length + 1);
    });

    it('applies nothing again when migrated by a later store on the same schema', async () => {
      const { schema, schemaUrl } = await freshSchema();
      await open(schemaUrl).migrate();
      const before = await admin.query(`SELECT version, name, applied_at FROM ${pg.escapeIdentifier(schema)}.schema_migrations ORDER BY version`);
      await open(schemaUrl).migrate();
      const afterwards = await admin.query(`SELECT version, name, applied_at FROM ${pg.escapeIdentifier(schema)}.schema_migrations ORDER BY version`);
      assert.deepEqual(afterwards.rows, before.rows);
      assert.deepEqual(
        before.rows.map((r: { version: number }) => r.version),
        MIGRATIONS.map((m) => m.version),
      );
    });

    it('rolls a failing migration back whole, keeps the ones before it, and applies it once it is fixed', async () => {
      const { schema, schemaUrl } = await freshSchema();
      const pool = new pg.Pool({ connectionString: schemaUrl, max: 1 });
      try {
        const broken: Migration = {
          version: 2,
          name: 'half done',
          sqlite: '',
          postgres: 'CREATE TABLE half (x integer); INSERT INTO half VALUES (1); SELECT * FROM no_such_table;',
        };
        await assert.rejects(applyPostgresMigrations(pool, [MIGRATIONS[0]!, broken]), /no_such_table/);
        const tables = async () =>
          (
            await admin.query<{ table_name: string }>('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name', [schema])
          ).rows.map((r) => r.table_name);
        assert.deepEqual(await tables(), ['grant_tokens', 'grants', 'schema_migrations']);
        assert.equal(await count(schema, 'SELECT count(*) AS n FROM $schema.schema_migrations'), 1);

        await applyPostgresMigrations(pool, [MIGRATIONS[0]!, { ...broken, postgres: 'CREATE TABLE half (x integer);' }]);
        assert.deepEqual(await tables(), ['grant_tokens', 'grants', 'half', 'schema_migrations']);
        assert.equal(await count(schema, 'SELECT count(*) AS n FROM $schema.schema_migrations'), 2);
      } finally {
        await pool.end();
      }
    });

    it("returns bigint columns as numbers without changing pg's parser for anyone else", async () => {
      const { schemaUrl } = await freshSchema();
      const store = open(schemaUrl);
      await store.migrate();
      const h = hash();
      await store.createGrant({ label: 'typed', servers: [], expiresAt: T0 + 5 }, h, T0);
      const found = await store.findByTokenHash(h);
      for (const v of [found?.grant.createdAt, found?.grant.expiresAt, found?.token.createdAt]) assert.equal(typeof v, 'number');
      // The identity column of admin events is a bigint too.
      const event = await store.appendAdminEvent({ at: T0, actor: 'cli', role: 'admin', action: 'a', target: 't', before: null, after: null });
      assert.equal(typeof event.id, 'number');
      assert.equal(typeof (await store.listAdminEvents())[0]?.id, 'number');
      // Other pools of the process still get pg's default: a string.
      const { rows } = await admin.query<{ n: unknown }>('SELECT 9007199254740993::bigint AS n');
      assert.equal(rows[0]?.n, '9007199254740993');
    });
  });
}
