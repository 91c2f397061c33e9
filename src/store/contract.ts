/**
 * The behaviour every control store owes its callers, as node:test tests any store can run:
 * `controlStoreContract('sqlite', async () => openSqliteStore(…))` in that store's test file.
 *
 * Why it is written this way: the SQLite and PostgreSQL stores must be interchangeable, and the
 * only way to keep them so is one list of expectations both pass. Each test opens its own store,
 * migrates it, and uses labels with a random part, so a database shared across tests and runs (one
 * PostgreSQL schema) never shows a test another test's grants; it never relies on the store being
 * empty. Times are fixed numbers, never the clock: the store keeps the times it is given and
 * compares none of them (deciding whether a token still works is the authenticator's job).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { StoreConflictError } from './store.js';
import type { ControlStore } from './store.js';

const T0 = 1_700_000_000_000;
const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
/** The last ms a JavaScript Date can show: far past 32 bits, so it needs the 64-bit columns. */
const LAST_DATE_MS = 8_640_000_000_000_000;

/** A fresh token hash (lowercase hex SHA-256, like the real ones). */
function tokenHash(): string {
  return createHash('sha256').update(randomBytes(32)).digest('hex');
}

async function rejectsWithConflict(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof StoreConflictError, `${what}: expected StoreConflictError, got ${String(err)}`);
    return true;
  });
}

/**
 * Registers the control store contract as a `describe` block named after `label`. `open` returns a
 * store (migrated or not: every test calls `migrate()` first); each test closes the store it opened.
 */
export function controlStoreContract(label: string, open: () => Promise<ControlStore>): void {
  function withStore(body: (store: ControlStore, unique: (name: string) => string) => Promise<void>): () => Promise<void> {
    return async () => {
      const store = await open();
      try {
        await store.migrate();
        const run = randomBytes(6).toString('hex');
        await body(store, (name) => `contract-${run}-${name}`);
      } finally {
        await store.close();
      }
    };
  }

  describe(`${label} control store contract`, () => {
    test('creates a grant and finds it by id, by label and by its token hash', withStore(async (store, unique) => {
      const hash = tokenHash();
      const created = await store.createGrant({ label: unique('alice'), servers: ['github'] }, hash, T0);
      assert.match(created.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      assert.deepEqual(created, {
        id: created.id,
        label: unique('alice'),
        servers: ['github'],
        policies: {},
        createdAt: T0,
        expiresAt: null,
        revokedAt: null,
      });
      assert.deepEqual(await store.getGrant(created.id), created);
      assert.deepEqual(await store.getGrant(unique('alice')), created);
      assert.deepEqual(await store.findByTokenHash(hash), {
        grant: created,
        token: { grantId: created.id, hash, createdAt: T0, validUntil: null },
      });
    }));

    test('gives every grant a new id', withStore(async (store, unique) => {
      const ids = new Set<string>();
      for (let i = 0; i < 5; i++) ids.add((await store.createGrant({ label: unique(`g${i}`), servers: [] }, tokenHash(), T0)).id);
      assert.equal(ids.size, 5);
    }));

    test('answers undefined for an unknown id, label or token hash', withStore(async (store, unique) => {
      assert.equal(await store.getGrant(unique('nobody')), undefined);
      assert.equal(await store.getGrant('00000000-0000-4000-8000-000000000000'), undefined);
      assert.equal(await store.findByTokenHash(tokenHash()), undefined);
    }));

    test('refuses a duplicate label with StoreConflictError and stores nothing of the second grant', withStore(async (store, unique) => {
      const first = await store.createGrant({ label: unique('dup'), servers: ['a'] }, tokenHash(), T0);
      const secondHash = tokenHash();
      await rejectsWithConflict(store.createGrant({ label: unique('dup'), servers: ['b'], expiresAt: T0 + DAY }, secondHash, T0 + 1), 'same label');
      assert.deepEqual(await store.getGrant(unique('dup')), first);
      assert.equal(await store.findByTokenHash(secondHash), undefined);
      assert.equal((await store.listGrants()).filter((g) => g.label === unique('dup')).length, 1);
    }));

    test('refuses a token hash that already belongs to a grant with StoreConflictError and creates no grant', withStore(async (store, unique) => {
      const hash = tokenHash();
      const first = await store.createGrant({ label: unique('owner'), servers: [] }, hash, T0);
      await rejectsWithConflict(store.createGrant({ label: unique('thief'), servers: [] }, hash, T0 + 1), 'same hash');
      assert.equal(await store.getGrant(unique('thief')), undefined);
      assert.equal((await store.findByTokenHash(hash))?.grant.id, first.id);
    }));

    test('lets exactly one of ten concurrent creations of one label succeed; the others get StoreConflictError', withStore(async (store, unique) => {
      const hashes = Array.from({ length: 10 }, () => tokenHash());
      const outcomes = await Promise.allSettled(hashes.map((h, i) => store.createGrant({ label: unique('race'), servers: [`s${i}`] }, h, T0 + i)));
      const won = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [{ grant: o.value, hash: hashes[i]! }] : []));
      assert.equal(won.length, 1, `${won.length} creations succeeded`);
      for (const o of outcomes) if (o.status === 'rejected') assert.ok(o.reason instanceof StoreConflictError, String(o.reason));
      const winner = won[0]!;
      assert.deepEqual(await store.getGrant(unique('race')), winner.grant);
      for (const h of hashes) assert.equal((await store.findByTokenHash(h))?.grant.id, h === winner.hash ? winner.grant.id : undefined);
    }));

    test('lists every grant, revoked ones included, ordered by label byte by byte', withStore(async (store, unique) => {
      // Upper case before lower, and `-` < `.` < digits < `_`: byte order, whatever the locale.
      const names = ['b', 'a_1', 'B', 'a-1', 'a.1', 'a1', 'Z', 'a'];
      for (const n of names) await store.createGrant({ label: unique(n), servers: [] }, tokenHash(), T0);
      assert.equal(await store.revokeGrant(unique('a1'), T0 + 1), true);
      const ours = (await store.listGrants()).filter((g) => g.label.startsWith(unique('')));
      assert.deepEqual(
        ours.map((g) => g.label),
        names.map(unique).sort(),
      );
      assert.equal(ours.find((g) => g.label === unique('a1'))?.revokedAt, T0 + 1);
      // The list holds whole records, the same as getGrant's.
      for (const g of ours) assert.deepEqual(g, await store.getGrant(g.id));
    }));

    test('keeps servers sorted without repeats and policies exactly as given', withStore(async (store, unique) => {
      const policies = {
        github: '{"tools": {"delete_repo": {"allow": false}}}',
        'slack-prod': "tools:\n  post_message:\n    allow: true # it's fine\n  'quoted': \"x\"\n",
        'ünïcode': 'naïve — ✓ \\ \u{1F600}',
      };
      const hash = tokenHash();
      const created = await store.createGrant({ label: unique('shapes'), servers: ['slack-prod', 'github', 'Zed', 'github', 'ünïcode'], policies }, hash, T0);
      const expected = ['Zed', 'github', 'slack-prod', 'ünïcode'];
      assert.deepEqual(created.servers, expected);
      assert.deepEqual(created.policies, policies);
      for (const g of [await store.getGrant(created.id), (await store.findByTokenHash(hash))?.grant]) {
        assert.deepEqual(g?.servers, expected);
        assert.deepEqual(g?.policies, policies);
      }
      const none = await store.createGrant({ label: unique('bare'), servers: [] }, tokenHash(), T0);
      assert.deepEqual((await store.getGrant(none.id))?.servers, []);
      assert.deepEqual((await store.getGrant(none.id))?.policies, {});
    }));

    test('does not let a change to the given objects reach the stored grant', withStore(async (store, unique) => {
      const servers = ['b', 'a'];
      const policies: Record<string, string> = { a: 'x' };
      const created = await store.createGrant({ label: unique('copy'), servers, policies }, tokenHash(), T0);
      servers.push('c');
      policies.a = 'changed';
      assert.deepEqual(created.policies, { a: 'x' });
      assert.deepEqual((await store.getGrant(created.id))?.servers, ['a', 'b']);
      assert.deepEqual((await store.getGrant(created.id))?.policies, { a: 'x' });
    }));

    test('round-trips expiresAt: a time, null, left out (null), and the largest time a Date can hold', withStore(async (store, unique) => {
      const cases: Array<[string, number | null | undefined, number | null]> = [
        ['in-a-day', T0 + DAY, T0 + DAY],
        ['never', null, null],
        ['omitted', undefined, null],
        ['far', LAST_DATE_MS, LAST_DATE_MS],
      ];
      for (const [name, given, expected] of cases) {
        const hash = tokenHash();
        const grant = name === 'omitted' ? { label: unique(name), servers: [] } : { label: unique(name), servers: [], expiresAt: given };
        const created = await store.createGrant(grant, hash, T0);
        assert.strictEqual(created.expiresAt, expected, name);
        assert.strictEqual((await store.getGrant(created.id))?.expiresAt, expected, name);
        assert.strictEqual((await store.findByTokenHash(hash))?.grant.expiresAt, expected, name);
        assert.strictEqual((await store.listGrants()).find((g) => g.id === created.id)?.expiresAt, expected, name);
      }
    }));

    test('keeps every time as the number given, even the largest a Date can hold', withStore(async (store, unique) => {
      const hash = tokenHash();
      const created = await store.createGrant({ label: unique('late'), servers: [] }, hash, LAST_DATE_MS - 10);
      assert.equal(await store.revokeGrant(created.id, LAST_DATE_MS), true);
      const found = await store.findByTokenHash(hash);
      assert.strictEqual(found?.grant.createdAt, LAST_DATE_MS - 10);
      assert.strictEqual(found?.grant.revokedAt, LAST_DATE_MS);
      assert.strictEqual(found?.token.createdAt, LAST_DATE_MS - 10);
    }));

    test('refuses a time that is not a whole number of ms rather than storing something else', withStore(async (store, unique) => {
      await assert.rejects(store.createGrant({ label: unique('frac'), servers: [] }, tokenHash(), T0 + 0.5));
      assert.equal(await store.getGrant(unique('frac')), undefined);
    }));

    test('revokes a grant once: a second revoke keeps the first time and still answers true', withStore(async (store, unique) => {
      const created = await store.createGrant({ label: unique('bob'), servers: ['x'] }, tokenHash(), T0);
      assert.equal(await store.revokeGrant(unique('bob'), T0 + 10), true);
      assert.equal((await store.getGrant(created.id))?.revokedAt, T0 + 10);
      assert.equal(await store.revokeGrant(created.id, T0 + 20), true);
      assert.equal((await store.getGrant(created.id))?.revokedAt, T0 + 10);
      // Nothing else about the grant changes.
      assert.deepEqual(await store.getGrant(created.id), { ...created, revokedAt: T0 + 10 });
    }));

    test('answers false when revoking a grant that does not exist', withStore(async (store, unique) => {
      assert.equal(await store.revokeGrant(unique('ghost'), T0), false);
      assert.equal(await store.revokeGrant('00000000-0000-4000-8000-000000000000', T0), false);
    }));

    test('still finds a revoked grant by its token hash, with revokedAt set, for the authenticator to refuse', withStore(async (store, unique) => {
      const hash = tokenHash();
      const created = await store.createGrant({ label: unique('carol'), servers: [] }, hash, T0);
      await store.revokeGrant(created.id, T0 + 5);
      const found = await store.findByTokenHash(hash);
      assert.equal(found?.grant.id, created.id);
      assert.equal(found?.grant.revokedAt, T0 + 5);
      assert.deepEqual(found?.token, { grantId: created.id, hash, createdAt: T0, validUntil: null });
    }));

    test('rotates: the new hash is current, the old one is valid until the given time', withStore(async (store, unique) => {
      const [h1, h2] = [tokenHash(), tokenHash()];
      const created = await store.createGrant({ label: unique('dave'), servers: [] }, h1, T0);
      assert.equal(await store.rotateToken(unique('dave'), h2, T0 + MINUTE, T0 + 2 * MINUTE), true);
      assert.deepEqual((await store.findByTokenHash(h2))?.token, { grantId: created.id, hash: h2, createdAt: T0 + MINUTE, validUntil: null });
      assert.deepEqual((await store.findByTokenHash(h1))?.token, { grantId: created.id, hash: h1, createdAt: T0, validUntil: T0 + 2 * MINUTE });
      // Rotation changes tokens, not the grant.
      assert.deepEqual(await store.getGrant(created.id), created);
      assert.deepEqual((await store.findByTokenHash(h1))?.grant, created);
    }));

    test('rotates again: only the current token is rotated out, and a token past its validUntil is still returned', withStore(async (store, unique) => {
      const [h1, h2, h3] = [tokenHash(), tokenHash(), tokenHash()];
      const created = await store.createGrant({ label: unique('erin'), servers: [] }, h1, T0);
      assert.equal(await store.rotateToken(created.id, h2, T0 + 1_000, T0 + 1_000 + MINUTE), true);
      // No grace this time: the token being replaced ends now.
      assert.equal(await store.rotateToken(created.id, h3, T0 + 2 * MINUTE, T0 + 2 * MINUTE), true);
      assert.equal((await store.findByTokenHash(h3))?.token.validUntil, null);
      assert.equal((await store.findByTokenHash(h2))?.token.validUntil, T0 + 2 * MINUTE);
      // h1's end, long past, is kept as it was: the authenticator compares it with its clock.
      assert.deepEqual((await store.findByTokenHash(h1))?.token, { grantId: created.id, hash: h1, createdAt: T0, validUntil: T0 + 1_000 + MINUTE });
    }));

    test('refuses to rotate a revoked grant, answering false and storing nothing', withStore(async (store, unique) => {
      const [h1, h2] = [tokenHash(), tokenHash()];
      await store.createGrant({ label: unique('frank'), servers: [] }, h1, T0);
      await store.revokeGrant(unique('frank'), T0 + 1);
      assert.equal(await store.rotateToken(unique('frank'), h2, T0 + 2, T0 + 2), false);
      assert.equal(await store.findByTokenHash(h2), undefined);
      assert.equal((await store.findByTokenHash(h1))?.token.validUntil, null);
    }));

    test('answers false when rotating a grant that does not exist', withStore(async (store, unique) => {
      const h = tokenHash();
      assert.equal(await store.rotateToken(unique('ghost'), h, T0, T0), false);
      assert.equal(await store.findByTokenHash(h), undefined);
    }));

    test('refuses to rotate to a hash that already belongs to a grant, and changes nothing', withStore(async (store, unique) => {
      const [h1, h2] = [tokenHash(), tokenHash()];
      const a = await store.createGrant({ label: unique('a'), servers: [] }, h1, T0);
      const b = await store.createGrant({ label: unique('b'), servers: [] }, h2, T0);
      await rejectsWithConflict(store.rotateToken(a.id, h2, T0 + 1, T0 + 1), 'rotate to a taken hash');
      assert.deepEqual((await store.findByTokenHash(h1))?.token.validUntil, null);
      assert.equal((await store.findByTokenHash(h2))?.grant.id, b.id);
    }));

    test('keeps one current token under concurrent rotations of one grant', withStore(async (store, unique) => {
      const first = tokenHash();
      const created = await store.createGrant({ label: unique('spin'), servers: [] }, first, T0);
      const hashes = Array.from({ length: 8 }, () => tokenHash());
      const results = await Promise.all(hashes.map((h, i) => store.rotateToken(created.id, h, T0 + 1 + i, T0 + MINUTE)));
      assert.deepEqual(results, hashes.map(() => true));
      const tokens = await Promise.all([first, ...hashes].map(async (h) => (await store.findByTokenHash(h))?.token));
      assert.equal(tokens.filter((t) => t?.validUntil === null).length, 1, 'exactly one current token');
      assert.equal(tokens.filter((t) => t?.validUntil === T0 + MINUTE).length, hashes.length, 'every other token rotated out with its grace');
    }));

    test('takes an id over a label spelled the same', withStore(async (store, unique) => {
      const a = await store.createGrant({ label: unique('real'), servers: [] }, tokenHash(), T0);
      // A label may be any of letters, digits, `.`, `_`, `-`: a UUID is one.
      const hb = tokenHash();
      const b = await store.createGrant({ label: a.id, servers: [] }, hb, T0);
      assert.equal((await store.getGrant(a.id))?.id, a.id);
      assert.equal((await store.getGrant(b.id))?.id, b.id);
      assert.equal(await store.revokeGrant(a.id, T0 + 1), true);
      assert.equal((await store.getGrant(a.id))?.revokedAt, T0 + 1);
      assert.equal((await store.getGrant(b.id))?.revokedAt, null);
      // a is revoked, so no rotation: b is not rotated in its place.
      assert.equal(await store.rotateToken(a.id, tokenHash(), T0 + 2, T0 + 2), false);
      assert.equal((await store.findByTokenHash(hb))?.token.validUntil, null);
    }));

    test('migrates a second time without changing anything', withStore(async (store, unique) => {
      const hash = tokenHash();
      const created = await store.createGrant({ label: unique('kept'), servers: ['a'] }, hash, T0);
      await store.migrate();
      await store.migrate();
      assert.deepEqual(await store.getGrant(created.id), created);
      assert.equal((await store.findByTokenHash(hash))?.grant.id, created.id);
      await store.createGrant({ label: unique('after'), servers: [] }, tokenHash(), T0);
    }));
  });
}

/**
 * Two handles on one database, as two gateway processes would hold: each sees the other's
 * grants, revocations and rotations at once. Both must be migrated-or-migratable by `a`.
 */
export async function assertStoresShareState(a: ControlStore, b: ControlStore): Promise<void> {
  await a.migrate();
  const [h1, h2] = [tokenHash(), tokenHash()];
  const created = await a.createGrant({ label: 'shared', servers: ['x'] }, h1, T0);
  assert.deepEqual(await b.getGrant('shared'), created);
  assert.equal(await b.revokeGrant('shared', T0 + 1), true);
  assert.equal((await a.findByTokenHash(h1))?.grant.revokedAt, T0 + 1);
  const other = await b.createGrant({ label: 'other', servers: [] }, tokenHash(), T0);
  assert.equal(await a.rotateToken(other.id, h2, T0 + 2, T0 + 3), true);
  assert.equal((await b.findByTokenHash(h2))?.grant.id, other.id);
  assert.deepEqual((await a.listGrants()).map((g) => g.label), ['other', 'shared']);
}
