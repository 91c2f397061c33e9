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

    it("lets two stores on one database see each other's grants, revocations and rotations at once", async () => {
      const { schemaUrl } = await freshSchema();
      const a = open(schemaUrl);
      const b = open(schemaUrl);
      await assertStoresShareState(a, b);
    });

    it('applies migration 1 exactly once when several stores migrate a new schema at the same time', async () => {
      const { schema, schemaUrl } = await freshSchema();
      const racers = Array.from({ length: 5 }, () => open(schemaUrl));
      await Promise.all(racers.map((s) => s.migrate()));
      assert.equal(await count(schema, 'SELECT count(*) AS n FROM $schema.schema_migrations WHERE version = 1'), 1);
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
        ['grant_tokens', 'grants', 'schema_migrations'],
      );
    });

    it('declares labels byte-ordered, so grants list alike whatever the database collation', async () => {
      // The contract's ordering test cannot see this on a database whose default is already C.
      const { schema, schemaUrl } = await freshSchema();
      await open(schemaUrl).migrate();
      const { rows } = await admin.query<{ collation_name: string | null }>(
        "SELECT collation_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'grants' AND column_name = 'label'",
        [schema],
      );
      assert.equal(rows[0]?.collation_name, 'C');
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
      // Other pools of the process still get pg's default: a string.
      const { rows } = await admin.query<{ n: unknown }>('SELECT 9007199254740993::bigint AS n');
      assert.equal(rows[0]?.n, '9007199254740993');
    });
  });
}
