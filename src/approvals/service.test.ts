import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { ApprovalSpec } from '../policy/types.js';
import { openPostgresStore } from '../store/postgres.js';
import { openSqliteStore } from '../store/sqlite.js';
import type { ControlStore } from '../store/store.js';
import type { ApprovalNotifier } from './notifier.js';
import { createLocalNotifier } from './notifier/local.js';
import { createRedisNotifier } from './notifier/redis.js';
import { ApprovalService, bindCall, CLIENT_CANCELLED, DEFAULT_APPROVAL_TIMEOUT_MS, GATEWAY_CLOSED } from './service.js';
import type { ApprovalCall, ApprovalEvent, ApprovalOutcome, ApprovalServiceOptions } from './service.js';

const DATABASE_URL = process.env.DATABASE_URL;
const REDIS_URL = process.env.REDIS_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
const T0 = 1_700_000_000_000;
const MINUTE = 60_000;
const RUN = `pl_test_${randomBytes(5).toString('hex')}`;

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-approvals-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A call to create a charge, with defaults for what a test does not care about. */
function charge(fields: Partial<ApprovalCall> = {}): ApprovalCall {
  return {
    grantId: 'grant-alice',
    grantLabel: 'alice-laptop',
    server: 'payments',
    tool: 'create_charge',
    arguments: { amount: 500, currency: 'usd' },
    policyVersion: 'sha256:0123456789abcdef',
    rule: '/tools/create_charge',
    reason: 'charges need a person',
    ...fields,
  };
}

const TEN_MINUTES: ApprovalSpec = { timeoutMs: 10 * MINUTE, pointer: '/tools/create_charge/approval' };

/** Whether `p` settles within `ms`: its value, or 'still waiting'. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | 'still waiting'> {
  return Promise.race([p, sleep(ms).then(() => 'still waiting' as const)]);
}

/**
 * Where replicas live: a database they share, a way for them to hear each other, and a clock the
 * test moves. Each replica gets its own store handle, as separate processes would.
 */
interface World {
  /** The time every replica's clock reads; tests move it. */
  now: number;
  readonly events: ApprovalEvent[];
  /** A new replica (started); `notifier: false` gives it none, so only polling can wake it. */
  replica(opts?: Omit<Partial<ApprovalServiceOptions>, 'notifier' | 'store'> & { notifier?: false }): Promise<ApprovalService>;
  /** Another handle on the shared database, e.g. for a replica started after a crash. */
  openStore(): Promise<ControlStore>;
  /** Whether a decision on one replica reaches another through a notifier (not only by polling). */
  readonly crossReplica: boolean;
}

type WorldFactory = () => Promise<{ world: World; close: () => Promise<void> }>;

function makeWorld(openStore: () => Promise<ControlStore>, notifier: () => ApprovalNotifier, crossReplica: boolean) {
  return async () => {
    const stores: ControlStore[] = [];
    const notifiers: ApprovalNotifier[] = [];
    const services: ApprovalService[] = [];
    const world: World = {
      now: T0,
      events: [],
      crossReplica,
      async openStore() {
        const store = await openStore();
        stores.push(store);
        await store.migrate();
        return store;
      },
      async replica(opts = {}) {
        const store = await world.openStore();
        let n: ApprovalNotifier | undefined;
        if (opts.notifier !== false) {
          n = notifier();
          notifiers.push(n);
        }
        const service = new ApprovalService({
          clock: () => world.now,
          pollIntervalMs: 0,
          onEvent: (e) => world.events.push(e),
          onError: (err) => assert.fail(`unexpected error: ${String(err)}`),
          ...opts,
          store,
          notifier: n,
        });
        services.push(service);
        await service.start();
        return service;
      },
    };
    const close = async () => {
      for (const s of services) await s.close();
      for (const n of new Set(notifiers)) await n.close();
      for (const s of stores) await s.close();
    };
    return { world, close };
  };
}

/** Every replica of a world over one SQLite file, hearing each other through one in-process notifier. */
function sqliteWorld(): WorldFactory {
  return () => {
    const file = path.join(dir, `approvals-${randomBytes(4).toString('hex')}.db`);
    const bus = createLocalNotifier();
    return makeWorld(async () => openSqliteStore(file), () => bus, true)();
  };
}

/** Replicas over one PostgreSQL schema, each with its own Redis connection on one channel. */
function postgresRedisWorld(databaseUrl: string, redisUrl: string): WorldFactory {
  let schemas = 0;
  return async () => {
    const admin = new pg.Pool({ connectionString: databaseUrl, max: 1 });
    const schema = `${RUN}_${++schemas}`;
    await admin.query(`CREATE SCHEMA ${pg.escapeIdentifier(schema)}`);
    const u = new URL(databaseUrl);
    u.searchParams.set('options', `-c search_path=${schema}`);
    const channel = `${RUN}:${schemas}:approvals`;
    const { world, close } = await makeWorld(
      async () => openPostgresStore(u.href, { poolSize: 4 }),
      () => createRedisNotifier({ url: redisUrl, channel }),
      true,
    )();
    return {
      world,
      close: async () => {
        await close();
        await admin.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`);
        await admin.end();
      },
    };
  };
}

function serviceBehaviour(label: string, factory: WorldFactory): void {
  function withWorld(body: (world: World) => Promise<void>): () => Promise<void> {
    return async () => {
      const { world, close } = await factory();
      try {
        await body(world);
      } finally {
        await close();
      }
    };
  }
  const types = (world: World, id: string) => world.events.filter((e) => e.approval.id === id).map((e) => e.type);

  describe(`approval service (${label})`, () => {
    it('holds the call as a pending approval bound to its grant, server, tool, arguments and policy version', withWorld(async (world) => {
      const service = await world.replica({ replicaId: 'replica-a' });
      const handle = await service.request(charge(), { ...TEN_MINUTES, via: ['webhook'] });
      const digest = createHash('sha256').update('{"amount":500,"currency":"usd"}').digest('hex');
      assert.deepEqual(handle.approval, {
        id: handle.approval.id,
        status: 'pending',
        grantId: 'grant-alice',
        grantLabel: 'alice-laptop',
        server: 'payments',
        tool: 'create_charge',
        arguments: '{"amount":500,"currency":"usd"}',
        argumentsDigest: digest,
        policyVersion: 'sha256:0123456789abcdef',
        rule: '/tools/create_charge',
        reason: 'charges need a person',
        via: ['webhook'],
        requestedAt: T0,
        expiresAt: T0 + 10 * MINUTE,
        decidedAt: null,
        decidedBy: null,
        comment: null,
        executedAt: null,
        heldBy: 'replica-a',
      });
      assert.equal(handle.remembered, false);
      assert.deepEqual(await service.get(handle.approval.id), handle.approval);
      assert.deepEqual(types(world, handle.approval.id), ['requested']);
      assert.equal(service.holding, 1);
    }));

    it('waits ten minutes by default, through the dashboard, when the rule has no approval block', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge());
      assert.equal(handle.approval.expiresAt, T0 + DEFAULT_APPROVAL_TIMEOUT_MS);
      assert.equal(DEFAULT_APPROVAL_TIMEOUT_MS, 10 * MINUTE);
      assert.deepEqual(handle.approval.via, ['dashboard']);
    }));

    it('wakes the held call when a person approves, with the approver and the comment, and lets it be forwarded once', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge(), TEN_MINUTES);
      const waiting = handle.wait();
      assert.equal(await within(waiting, 20), 'still waiting');
      world.now = T0 + 5_000;
      assert.equal((await service.approve(handle.approval.id, 'ops-alice', 'amount checked')).ok, true);
      const outcome = await waiting;
      assert.equal(outcome.status, 'approved');
      assert.deepEqual(outcome, { status: 'approved', approval: outcome.approval, by: 'ops-alice', comment: 'amount checked', remembered: false });
      assert.equal(outcome.approval.decidedAt, T0 + 5_000);
      assert.equal(await handle.markExecuted(), true, 'the first claim forwards the call');
      assert.equal(await handle.markExecuted(), false, 'an approval is single use');
      assert.equal((await service.get(handle.approval.id))?.status, 'executed');
      assert.deepEqual(types(world, handle.approval.id), ['requested', 'approved', 'executed']);
      assert.equal(service.holding, 0);
    }));

    it('answers a denial with the approver and the reason, and the denied call can never be forwarded', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge(), TEN_MINUTES);
      await service.deny(handle.approval.id, 'ops-bob', 'amount too large for a test account');
      const outcome = await handle.wait();
      assert.equal(outcome.status, 'denied');
      assert.deepEqual(outcome, { status: 'denied', approval: outcome.approval, by: 'ops-bob', reason: 'amount too large for a test account' });
      assert.equal(await handle.markExecuted(), false);
      assert.equal((await service.approve(handle.approval.id, 'ops-alice')).ok, false, 'a later approval loses');
      assert.deepEqual(types(world, handle.approval.id), ['requested', 'denied']);
    }));

    it('refuses a denial without a reason and a decision that names nobody', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge(), TEN_MINUTES);
      await assert.rejects(service.deny(handle.approval.id, 'ops-bob', '  '), TypeError);
      await assert.rejects(service.approve(handle.approval.id, ''), TypeError);
      assert.equal((await service.get(handle.approval.id))?.status, 'pending');
    }));

    it('expires a call nobody decided when its timeout passes, by its timer, naming nobody', withWorld(async (world) => {
      const service = await world.replica({ clock: Date.now });
      const handle = await service.request(charge(), { timeoutMs: 100, pointer: '/tools/create_charge/approval' });
      const outcome = await handle.wait();
      assert.equal(outcome.status, 'expired');
      assert.equal(outcome.approval.status, 'expired');
      assert.equal(outcome.approval.decidedAt, handle.approval.expiresAt);
      assert.equal(outcome.approval.decidedBy, null);
      assert.equal((await service.approve(handle.approval.id, 'ops-alice')).ok, false, 'too late to approve');
      assert.deepEqual(types(world, handle.approval.id), ['requested', 'expired']);
    }));

    it('expires at exactly expiresAt: a decision at that moment loses and the call learns it expired', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge(), TEN_MINUTES);
      world.now = T0 + 10 * MINUTE - 1;
      assert.deepEqual(await service.expireDue(), []);
      world.now = T0 + 10 * MINUTE;
      const change = await service.approve(handle.approval.id, 'ops-alice', 'just in time?');
      assert.equal(change.ok, false);
      assert.equal(change.approval?.status, 'expired');
      const outcome = await handle.wait();
      assert.deepEqual(outcome, { status: 'expired', approval: change.approval });
      assert.deepEqual(types(world, handle.approval.id), ['requested', 'expired']);
    }));

    it('sweeps every expired approval, however many calls wait, each reported once', withWorld(async (world) => {
      const service = await world.replica();
      const handles = await Promise.all([1, 2, 3].map((m) => service.request(charge({ arguments: { amount: m } }), { ...TEN_MINUTES, timeoutMs: m * MINUTE })));
      world.now = T0 + 2 * MINUTE;
      const [a, b] = await Promise.all([service.expireDue(), service.expireDue()]);
      assert.deepEqual(
        [...a!, ...b!].map((r) => r.id).sort(),
        [handles[0]!.approval.id, handles[1]!.approval.id].sort(),
      );
      assert.equal((await handles[0]!.wait()).status, 'expired');
      assert.equal((await handles[1]!.wait()).status, 'expired');
      assert.equal(await within(handles[2]!.wait(), 20), 'still waiting');
      assert.equal(world.events.filter((e) => e.type === 'expired').length, 2);
    }));

    it('withdraws the approval when the client cancels the call, recording why, so nobody can approve it afterwards', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge(), TEN_MINUTES);
      const controller = new AbortController();
      const waiting = handle.wait(controller.signal);
      world.now = T0 + 1_000;
      controller.abort('notifications/cancelled: user pressed stop');
      const outcome = await waiting;
      assert.equal(outcome.status, 'cancelled');
      assert.equal(outcome.status === 'cancelled' && outcome.reason, 'notifications/cancelled: user pressed stop');
      const record = await service.get(handle.approval.id);
      assert.equal(record?.status, 'cancelled');
      assert.equal(record?.decidedAt, T0 + 1_000);
      assert.equal((await service.approve(handle.approval.id, 'ops-alice')).ok, false);
      assert.deepEqual(types(world, handle.approval.id), ['requested', 'cancelled']);
    }));

    it('cancels at once when the client had already cancelled, with the default reason', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge(), TEN_MINUTES);
      const controller = new AbortController();
      controller.abort();
      const outcome = await handle.wait(controller.signal);
      assert.deepEqual(outcome, { status: 'cancelled', approval: outcome.approval, reason: CLIENT_CANCELLED });
    }));

    it('keeps a decision made before the client cancelled: the approval is not withdrawn', withWorld(async (world) => {
      const service = await world.replica();
      const handle = await service.request(charge(), TEN_MINUTES);
      const controller = new AbortController();
      const waiting = handle.wait(controller.signal);
      await service.approve(handle.approval.id, 'ops-alice');
      controller.abort();
      assert.equal((await waiting).status, 'approved');
      assert.equal((await service.get(handle.approval.id))?.status, 'approved');
    }));

    it('lets exactly one of two concurrent decisions win, and the held call learns the winner’s', withWorld(async (world) => {
      const [a, b] = [await world.replica(), await world.replica()];
      const handle = await a.request(charge(), TEN_MINUTES);
      const waiting = handle.wait();
      const [approve, deny] = await Promise.all([a.approve(handle.approval.id, 'ops-alice', 'yes'), b.deny(handle.approval.id, 'ops-bob', 'no')]);
      assert.equal(Number(approve.ok) + Number(deny.ok), 1, 'exactly one decision wins');
      const winner = approve.ok ? approve.approval : deny.approval!;
      assert.deepEqual(approve.approval, winner);
      assert.deepEqual(deny.approval, winner);
      const outcome = await waiting;
      assert.equal(outcome.status, winner.status);
      assert.deepEqual(outcome.approval, winner);
      assert.deepEqual(types(world, handle.approval.id), ['requested', winner.status]);
    }));

    it('does not release call B when call A, with other arguments, is approved', withWorld(async (world) => {
      const service = await world.replica();
      const a = await service.request(charge({ arguments: { amount: 500, currency: 'usd' } }), TEN_MINUTES);
      const b = await service.request(charge({ arguments: { amount: 50_000, currency: 'usd' } }), TEN_MINUTES);
      assert.notEqual(a.approval.argumentsDigest, b.approval.argumentsDigest);
      await service.approve(a.approval.id, 'ops-alice');
      assert.equal((await a.wait()).status, 'approved');
      assert.equal(await within(b.wait(), 30), 'still waiting');
      assert.equal((await service.get(b.approval.id))?.status, 'pending');
      assert.equal(await b.markExecuted(), false, "A's approval cannot be spent by B");
    }));

    it('asks again for an identical call after its approval was used, when the rule does not remember', withWorld(async (world) => {
      const service = await world.replica();
      const first = await service.request(charge(), TEN_MINUTES);
      await service.approve(first.approval.id, 'ops-alice');
      await first.wait();
      assert.equal(await first.markExecuted(), true);
      const again = await service.request(charge(), TEN_MINUTES);
      assert.equal(again.remembered, false);
      assert.notEqual(again.approval.id, first.approval.id);
      assert.equal(again.approval.status, 'pending');
    }));

    it('re-admits the identical call within the remember window without asking, and not a different one or after the window', withWorld(async (world) => {
      const service = await world.replica();
      const spec: ApprovalSpec = { ...TEN_MINUTES, rememberMs: 10 * MINUTE };
      const first = await service.request(charge(), spec);
      world.now = T0 + 1_000;
      await service.approve(first.approval.id, 'ops-alice', 'fine for today');
      await first.wait();
      // Approved but not yet forwarded: nothing to remember.
      assert.equal((await service.request(charge({ reason: 'not yet' }), spec)).remembered, false);
      assert.equal(await first.markExecuted(), true);

      world.now = T0 + 1_000 + 10 * MINUTE;
      // The same arguments, keys in another order: the same call.
      const same = await service.request(charge({ arguments: { currency: 'usd', amount: 500 } }), spec);
      assert.equal(same.remembered, true);
      assert.equal(same.approval.id, first.approval.id);
      assert.deepEqual(await same.wait(), { status: 'approved', approval: same.approval, by: 'ops-alice', comment: 'fine for today', remembered: true });
      assert.equal(await same.markExecuted(), true);
      assert.equal(world.events.filter((e) => e.type === 'remembered').length, 1);

      for (const [what, call] of [
        ['other arguments', charge({ arguments: { amount: 501, currency: 'usd' } })],
        ['another grant', charge({ grantId: 'grant-bob', grantLabel: 'bob' })],
        ['another tool', charge({ tool: 'create_refund' })],
        ['another server', charge({ server: 'payments-eu' })],
        ['another policy version', charge({ policyVersion: 'sha256:fedcba9876543210' })],
      ] as const) {
        assert.equal((await service.request(call, spec)).remembered, false, what);
      }
      world.now = T0 + 1_000 + 10 * MINUTE + 1;
      assert.equal((await service.request(charge(), spec)).remembered, false, 'after the window');
    }));

    it('wakes a call held by one replica when a person decides on another', withWorld(async (world) => {
      // No polling: only the notifier can carry the decision across.
      const [a, b] = [await world.replica(), await world.replica()];
      const held = await a.request(charge(), TEN_MINUTES);
      const waiting = held.wait();
      assert.deepEqual((await b.list({ status: 'pending' })).map((r) => r.id), [held.approval.id]);
      await b.approve(held.approval.id, 'ops-alice', 'from the other replica');
      const outcome = await within(waiting, 2_000);
      assert.notEqual(outcome, 'still waiting', 'the notifier woke the held call');
      assert.equal((outcome as ApprovalOutcome).status, 'approved');
      assert.equal(await held.markExecuted(), true);
      assert.deepEqual(types(world, held.approval.id), ['requested', 'approved', 'executed']);
    }));

    it('finds a decision made on another replica by polling the store when no notification reaches it', withWorld(async (world) => {
      const a = await world.replica({ notifier: false, pollIntervalMs: 20 });
      const b = await world.replica({ notifier: false });
      const held = await a.request(charge(), TEN_MINUTES);
      await b.deny(held.approval.id, 'ops-bob', 'not today');
      const outcome = await within(held.wait(), 2_000);
      assert.notEqual(outcome, 'still waiting');
      assert.deepEqual(outcome, { status: 'denied', approval: (outcome as ApprovalOutcome).approval, by: 'ops-bob', reason: 'not today' });
    }));

    it('keeps a pending approval truthful across a restart, and a sweep by the new process ends it', withWorld(async (world) => {
      // Replica a holds the call, then "crashes": it is never asked again, and hears nothing.
      const crashed = await world.replica({ replicaId: 'replica-a', notifier: false });
      const held = await crashed.request(charge(), TEN_MINUTES);
      const restarted = await world.replica({ replicaId: 'replica-a2' });
      const found = await restarted.get(held.approval.id);
      assert.deepEqual(found, held.approval, 'still pending, still naming the replica that held it');
      world.now = T0 + 10 * MINUTE;
      const swept = await restarted.expireDue();
      assert.deepEqual(swept.map((r) => r.id), [held.approval.id]);
      assert.equal((await restarted.get(held.approval.id))?.status, 'expired');
      assert.equal((await restarted.approve(held.approval.id, 'ops-alice')).ok, false, 'nobody approves a call that is gone');
      assert.deepEqual(types(world, held.approval.id), ['requested', 'expired']);
    }));

    it('cancels the approvals a closing replica still holds, so none is left for a person to approve in vain', withWorld(async (world) => {
      const service = await world.replica();
      const held = await service.request(charge(), TEN_MINUTES);
      const waiting = held.wait();
      await service.close();
      const outcome = await waiting;
      assert.deepEqual(outcome, { status: 'cancelled', approval: outcome.approval, reason: GATEWAY_CLOSED });
      assert.equal((await service.get(held.approval.id))?.status, 'cancelled');
      await assert.rejects(service.request(charge(), TEN_MINUTES), /closed/);
    }));
  });
}

describe('binding an approval to its call', () => {
  it('hashes the canonical JSON of the arguments, so key order does not make another call', () => {
    const a = bindCall(charge({ arguments: { b: [1, { y: 2, x: 1 }], a: 'é' } }));
    const b = bindCall(charge({ arguments: { a: 'é', b: [1, { x: 1, y: 2 }] } }));
    assert.equal(a.arguments, '{"a":"é","b":[1,{"x":1,"y":2}]}');
    assert.equal(a.argumentsDigest, createHash('sha256').update(a.arguments).digest('hex'));
    assert.deepEqual(a, b);
  });

  it('takes absent arguments as an empty object, and keeps a call without a grant apart from any grant', () => {
    assert.equal(bindCall(charge({ arguments: undefined })).arguments, '{}');
    assert.equal(bindCall(charge({ grantId: null })).grantId, null);
  });
});

serviceBehaviour('SQLite, replicas in one process', sqliteWorld());

if (DATABASE_URL === undefined || REDIS_URL === undefined) {
  const unset = [DATABASE_URL === undefined ? 'DATABASE_URL' : '', REDIS_URL === undefined ? 'REDIS_URL' : ''].filter(Boolean);
  const missing = `${unset.join(' and ')} ${unset.length > 1 ? 'are' : 'is'}`;
  if (REQUIRED) {
    it('the approval service is tested across replicas on PostgreSQL and Redis, which REQUIRE_SERVICES=1 makes mandatory', () => {
      assert.fail(`REQUIRE_SERVICES=1 but ${missing} not set`);
    });
  } else {
    it('the approval service is tested across replicas on PostgreSQL and Redis', { skip: `${missing} not set (REQUIRE_SERVICES=1 makes this a failure)` }, () => {});
  }
} else {
  serviceBehaviour('PostgreSQL and Redis, replicas with their own connections', postgresRedisWorld(DATABASE_URL, REDIS_URL));
}
