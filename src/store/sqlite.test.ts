import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { assertStoresShareState, controlStoreContract } from './contract.js';
import { LATEST_VERSION, MIGRATIONS, NewerSchemaError, nextMigration } from './migrations.js';
import type { Migration } from './migrations.js';
import { applySqliteMigrations, openSqliteStore } from './sqlite.js';

const T0 = 1_700_000_000_000;
const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-sqlite-'));
let files = 0;
const freshFile = () => path.join(dir, `store-${++files}.db`);
const hash = () => createHash('sha256').update(randomBytes(32)).digest('hex');

after(() => rmSync(dir, { recursive: true, force: true }));

controlStoreContract('sqlite (file)', async () => openSqliteStore(freshFile()));
controlStoreContract('sqlite (:memory:)', async () => openSqliteStore(':memory:'));

/** The bookkeeping rows of the database file, read with a connection of its own. */
function migrationRows(file: string): Array<{ version: number; name: string; applied_at: number }> {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare<[], { version: number; name: string; applied_at: number }>('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all();
  } finally {
    db.close();
  }
}

describe('SQLite control store', () => {
  it('creates the file and its missing folders, and keeps the file in WAL mode', async () => {
    const file = path.join(dir, 'nested', 'deeper', 'control.db');
    assert.equal(existsSync(path.dirname(file)), false);
    const store = openSqliteStore(file);
    try {
      await store.migrate();
      assert.equal(existsSync(file), true);
      assert.equal(store.kind, 'sqlite');
    } finally {
      await store.close();
    }
    const db = new Database(file, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      db.close();
    }
  });

  it("lets two stores on one file, as two processes would, see each other's grants, admin credentials, admin events, servers and policy versions at once", async () => {
    const file = freshFile();
    const a = openSqliteStore(file);
    const b = openSqliteStore(file);
    try {
      await assertStoresShareState(a, b);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('lets several processes migrate one new file and write to it at the same time without a busy error', async () => {
    const file = freshFile();
    const script = `
      const { randomBytes } = await import('node:crypto');
      const { openSqliteStore } = await import(process.env.PL_MODULE);
      const store = openSqliteStore(process.env.PL_FILE);
      await store.migrate();
      for (let i = 0; i < 25; i++) {
        const g = await store.createGrant({ label: process.env.PL_PREFIX + i, servers: ['s'] }, randomBytes(32).toString('hex'), Date.now());
        await store.rotateToken(g.id, randomBytes(32).toString('hex'), Date.now(), Date.now());
      }
      await store.close();
    `;
    await inFourProcesses(script, file);
    assert.deepEqual(
      migrationRows(file).map((r) => r.version),
      MIGRATIONS.map((m) => m.version),
    );
    const store = openSqliteStore(file);
    try {
      assert.equal((await store.listGrants()).length, 100);
    } finally {
      await store.close();
    }
  });

  it('gives policy writers in several processes, writing at once, the versions 1 to 100 without a gap or a repeat', async () => {
    const file = freshFile();
    const setup = openSqliteStore(file);
    await setup.migrate();
    await setup.close();
    const script = `
      const { openSqliteStore } = await import(process.env.PL_MODULE);
      const store = openSqliteStore(process.env.PL_FILE);
      for (let i = 0; i < 25; i++) await store.addPolicyVersion('github', { text: process.env.PL_PREFIX + i, actor: 'cli' }, Date.now());
      await store.close();
    `;
    await inFourProcesses(script, file);
    const store = openSqliteStore(file);
    try {
      const versions = await store.listPolicyVersions('github');
      assert.deepEqual(
        versions.map((v) => v.version),
        Array.from({ length: 100 }, (_, i) => 100 - i),
      );
      assert.equal(new Set(versions.map((v) => v.text)).size, 100);
    } finally {
      await store.close();
    }
  });

  it('lets exactly one of several processes deciding one approval at once win, and shows every loser the winner', async () => {
    const file = freshFile();
    const setup = openSqliteStore(file);
    await setup.migrate();
    const args = '{"amount":500}';
    const held = await setup.createApproval(
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
        expiresAt: Date.now() + 60_000,
        heldBy: 'a',
      },
      Date.now(),
    );
    await setup.close();
    // Each process decides 25 times; it records a win, and fails if a loss shows anything but the winner.
    const script = `
      const { openSqliteStore } = await import(process.env.PL_MODULE);
      const store = openSqliteStore(process.env.PL_FILE);
      for (let i = 0; i < 25; i++) {
        const c = await store.decideApproval(process.env.PL_APPROVAL, { decision: 'approved', by: process.env.PL_PREFIX + i, now: Date.now() });
        if (c.ok) await store.appendAdminEvent({ at: Date.now(), actor: c.approval.decidedBy, role: 'admin', action: 'won', target: 'approval', before: null, after: null });
        else if (c.approval.status !== 'approved' || c.approval.decidedBy === null) throw new Error('a loser was shown ' + JSON.stringify(c.approval));
      }
      await store.close();
    `;
    await inFourProcesses(script, file, { PL_APPROVAL: held.id });
    const store = openSqliteStore(file);
    try {
      const wins = await store.listAdminEvents({ action: 'won' });
      assert.equal(wins.length, 1, `${wins.length} decisions won`);
      assert.equal((await store.getApproval(held.id))?.decidedBy, wins[0]?.actor);
    } finally {
      await store.close();
    }
  });

  it('deletes a server and its policy versions in one transaction, so a failure keeps both', async () => {
    const file = freshFile();
    const store = openSqliteStore(file);
    try {
      await store.migrate();
      await store.createServer('github', { command: 'x' }, T0);
      await store.addPolicyVersion('github', { text: 'v1', actor: 'cli' }, T0);
      // A trigger that refuses to delete versions stands in for any failure half-way through.
      const db = new Database(file);
      db.exec("CREATE TRIGGER refuse BEFORE DELETE ON policy_versions BEGIN SELECT RAISE(ABORT, 'refused'); END");
      db.close();
      await assert.rejects(store.deleteServer('github'), /refused/);
      assert.ok(await store.getServer('github'));
      assert.equal((await store.listPolicyVersions('github')).length, 1);
    } finally {
      await store.close();
    }
  });

  it('refuses a database written by a newer PolicyLayer, naming both versions, and leaves it as it was', async () => {
    const file = freshFile();
    const store = openSqliteStore(file);
    await store.migrate();
    await store.close();
    const db = new Database(file);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(LATEST_VERSION + 1, 'from the future', T0);
    db.close();

    const older = openSqliteStore(file);
    try {
      await assert.rejects(older.migrate(), (err: unknown) => {
        assert.ok(err instanceof NewerSchemaError, String(err));
        assert.match(err.message, /newer PolicyLayer/);
        assert.match(err.message, new RegExp(`version ${LATEST_VERSION + 1}\\b`));
        assert.match(err.message, new RegExp(`up to ${LATEST_VERSION}\\b`));
        return true;
      });
    } finally {
      await older.close();
    }
    assert.equal(migrationRows(file).length, MIGRATIONS.length + 1);
  });

  it('records each migration with its name and the time of the given clock, and applies nothing again when reopened', async () => {
    const file = freshFile();
    const first = openSqliteStore(file, { clock: () => T0 });
    await first.migrate();
    await first.createGrant({ label: 'survivor', servers: [] }, hash(), T0);
    await first.close();
    const expected = MIGRATIONS.map((m) => ({ version: m.version, name: m.name, applied_at: T0 }));
    assert.deepEqual(migrationRows(file), expected);

    const again = openSqliteStore(file, { clock: () => T0 + 1_000 });
    try {
      await again.migrate();
      await again.migrate();
      assert.deepEqual(migrationRows(file), expected);
      assert.equal((await again.getGrant('survivor'))?.label, 'survivor');
    } finally {
      await again.close();
    }
  });

  it('rolls a failing migration back whole, keeps the ones before it, and applies it once it is fixed', () => {
    const db = new Database(':memory:');
    try {
      const broken: Migration = {
        version: 2,
        name: 'half done',
        sqlite: 'CREATE TABLE half (x INTEGER); INSERT INTO half VALUES (1); SELECT * FROM no_such_table;',
        postgres: '',
      };
      assert.throws(() => applySqliteMigrations(db, [MIGRATIONS[0]!, broken], () => T0), /no_such_table/);
      const tables = () => db.prepare<[], { name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all().map((r) => r.name);
      assert.deepEqual(tables(), ['grant_tokens', 'grants', 'schema_migrations']);
      assert.deepEqual(db.prepare('SELECT version FROM schema_migrations').pluck().all(), [1]);

      applySqliteMigrations(db, [MIGRATIONS[0]!, { ...broken, sqlite: 'CREATE TABLE half (x INTEGER);' }], () => T0);
      assert.deepEqual(tables(), ['grant_tokens', 'grants', 'half', 'schema_migrations']);
      assert.deepEqual(db.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all(), [1, 2]);
    } finally {
      db.close();
    }
  });

  it("deletes a grant's tokens along with the grant", async () => {
    const file = freshFile();
    const store = openSqliteStore(file);
    const h = hash();
    try {
      await store.migrate();
      const g = await store.createGrant({ label: 'doomed', servers: [] }, h, T0);
      await store.rotateToken(g.id, hash(), T0 + 1, T0 + 1);
      const db = new Database(file);
      db.pragma('foreign_keys = ON');
      db.prepare('DELETE FROM grants WHERE id = ?').run(g.id);
      assert.equal(db.prepare('SELECT count(*) FROM grant_tokens').pluck().get(), 0);
      db.close();
      assert.equal(await store.findByTokenHash(h), undefined);
    } finally {
      await store.close();
    }
  });

  it('rejects, rather than throws, when used before migrate()', async () => {
    const store = openSqliteStore(':memory:');
    try {
      const pending = store.getGrant('anyone');
      assert.ok(pending instanceof Promise);
      await assert.rejects(pending, /no such table/);
    } finally {
      await store.close();
    }
  });
});

describe('migrations', () => {
  it('are numbered 1, 2, 3… in order, each with a name and SQL for both dialects', () => {
    assert.deepEqual(
      MIGRATIONS.map((m) => m.version),
      MIGRATIONS.map((_, i) => i + 1),
    );
    assert.equal(LATEST_VERSION, MIGRATIONS.length);
    for (const m of MIGRATIONS) {
      assert.ok(m.name.trim().length > 0, `version ${m.version} has a name`);
      assert.ok(m.sqlite.trim().length > 0 && m.postgres.trim().length > 0, `version ${m.version} has SQL for both dialects`);
    }
  });

  it('apply the lowest pending version next, none when all are applied, and refuse a newer database', () => {
    const list: Migration[] = [3, 1, 2].map((version) => ({ version, name: `m${version}`, sqlite: '', postgres: '' }));
    assert.equal(nextMigration([], list)?.version, 1);
    assert.equal(nextMigration([1, 3], list)?.version, 2);
    assert.equal(nextMigration([1, 2, 3], list), undefined);
    assert.throws(() => nextMigration([1, 2, 3, 4], list), NewerSchemaError);
  });
});

/**
 * Runs `script` (an ES module reading PL_MODULE, the store's module; PL_FILE, the database;
 * PL_PREFIX, p0- to p3-; and `env`) in four processes at once, and asserts each one exits cleanly.
 */
async function inFourProcesses(script: string, file: string, env: Record<string, string> = {}): Promise<void> {
  const moduleUrl = new URL('./sqlite.js', import.meta.url).href;
  const children = [0, 1, 2, 3].map(
    (n) =>
      new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
          env: { ...process.env, ...env, PL_MODULE: moduleUrl, PL_FILE: file, PL_PREFIX: `p${n}-` },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        child.once('error', reject);
        child.once('close', (code) => resolve({ code, stderr }));
      }),
  );
  for (const { code, stderr } of await Promise.all(children)) assert.equal(code, 0, stderr);
}
