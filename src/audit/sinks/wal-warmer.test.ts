import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { WARM_AHEAD, WalWarmer } from './wal-warmer.js';

async function dbFile(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'pl-wal-warmer-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'audit.db');
}

/** A database in WAL mode that never checkpoints by itself, with a table of blobs. */
function openWal(t: TestContext, file: string, pageSize = 4096): Database.Database {
  const db = new Database(file);
  t.after(() => {
    if (db.open) db.close();
  });
  db.pragma(`page_size = ${pageSize}`);
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE IF NOT EXISTS t (b BLOB)');
  return db;
}

function warmer(t: TestContext, file: string): WalWarmer {
  const w = new WalWarmer(file);
  t.after(() => w.close());
  return w;
}

/** Commits `rows` rows of `bytes` each, one transaction. */
function commit(db: Database.Database, rows: number, bytes = 3000): void {
  const insert = db.prepare('INSERT INTO t VALUES (randomblob(?))');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(bytes);
  })();
}

const walSize = (file: string): number => statSync(`${file}-wal`).size;

/** The frames the WAL holds, as SQLite counts them (a passive checkpoint reports them). */
function framesInWal(db: Database.Database): number {
  const [row] = db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number }>;
  return row!.log;
}

/**
 * A WAL of `commits` small commits that a RESTART checkpoint emptied, the warmer told so, and a
 * writer then started over with one more commit.
 */
async function startedOver(t: TestContext, commits: number): Promise<{ file: string; db: Database.Database; w: WalWarmer }> {
  const file = await dbFile(t);
  const db = openWal(t, file);
  for (let i = 0; i < commits; i++) commit(db, 10);
  const w = warmer(t, file);
  db.pragma('wal_checkpoint(RESTART)');
  w.startingOver();
  commit(db, 10);
  return { file, db, w };
}

describe('WalWarmer', () => {
  it('finds the next frame at the end of a WAL that was never started over, and reads nothing past the end of the file', async (t) => {
    const file = await dbFile(t);
    const db = openWal(t, file);
    for (let i = 0; i < 5; i++) commit(db, 20);
    const warmth = warmer(t, file).warm();
    assert.deepEqual(warmth, { next: walSize(file), warmTo: walSize(file) });
  });

  it('reads the page size from the WAL index, 65,536 included', async (t) => {
    const file = await dbFile(t);
    const db = openWal(t, file, 65_536);
    commit(db, 40);
    const frames = framesInWal(db);
    assert.equal(warmer(t, file).warm()?.next, 32 + frames * (24 + 65_536));
    assert.equal(walSize(file), 32 + frames * (24 + 65_536));
  });

  it('reads from the start of the file once a checkpoint has emptied the WAL, before the next writer starts it over', async (t) => {
    const file = await dbFile(t);
    const db = openWal(t, file);
    for (let i = 0; i < 200; i++) commit(db, 10);
    const w = warmer(t, file);
    const before = w.warm()!;
    assert.ok(before.next > WARM_AHEAD.minBytes * 2, 'the WAL is longer than the least read-ahead');
    db.pragma('wal_checkpoint(RESTART)');
    const emptied = w.startingOver();
    assert.equal(emptied?.next, 32);
    assert.ok(emptied.warmTo >= 32 + WARM_AHEAD.minBytes, `reads ahead from the start (to ${emptied.warmTo})`);
    assert.ok(emptied.warmTo < before.next, 'and not the whole old WAL');
    // Until a writer starts the WAL over, the next frame is still at its start.
    assert.equal(w.warm()?.next, 32);
  });

  it('follows the writer into the WAL it started over', async (t) => {
    const { file, db, w } = await startedOver(t, 200);
    const after = w.warm()!;
    assert.equal(after.next, 32 + framesInWal(db) * (24 + 4096));
    assert.ok(after.next < walSize(file), 'the writer is overwriting the old WAL');
    assert.ok(after.warmTo > after.next, 'so there is something ahead of it to read');
  });

  it('reads ahead in proportion to what was written since the last call, within its bounds', async (t) => {
    const { file, db, w } = await startedOver(t, 400);
    const first = w.warm()!;
    commit(db, 100);
    const second = w.warm()!;
    const written = second.next - first.next;
    const ahead = Math.min(WARM_AHEAD.maxBytes, Math.max(WARM_AHEAD.minBytes, WARM_AHEAD.perWritten * written));
    assert.equal(second.warmTo, Math.min(walSize(file), second.next + ahead));
  });

  it('reads nothing when nothing was written since the last call', async (t) => {
    const { w } = await startedOver(t, 200);
    const first = w.warm()!;
    assert.ok(first.warmTo > first.next, 'the first call reads ahead');
    const again = w.warm()!;
    assert.deepEqual(again, { next: first.next, warmTo: first.next });
  });

  it('says nothing for a database without a WAL, or with none yet', async (t) => {
    const file = await dbFile(t);
    assert.equal(warmer(t, file).warm(), undefined);
    const db = new Database(file);
    t.after(() => db.close());
    db.exec('CREATE TABLE t (b BLOB)');
    assert.equal(warmer(t, file).warm(), undefined);
    assert.equal(warmer(t, file).startingOver(), undefined);
  });

  it('opens the WAL again after the last connection removed it and a new one made another', async (t) => {
    const file = await dbFile(t);
    const first = openWal(t, file);
    commit(first, 20);
    const w = warmer(t, file);
    assert.ok(w.warm() !== undefined);
    first.close();
    assert.throws(() => statSync(`${file}-wal`), /ENOENT/);
    assert.equal(w.warm(), undefined);
    const second = openWal(t, file);
    commit(second, 30);
    assert.equal(w.warm()?.next, walSize(file));
  });
});
