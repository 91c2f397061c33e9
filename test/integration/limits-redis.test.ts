/**
 * Limits across gateway replicas: three `policylayer serve` processes share one real Redis, and
 * many clients spread over them call one limited tool at once. Exactly the limit is admitted in
 * total, for a call count and for a spend quota.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectHttp, textOf, type V1Connection } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { REPO_ROOT, startProcess, type StartedProcess } from '../helpers/processes.js';
import { hashToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';

const REDIS_URL = process.env.REDIS_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
const skip = REDIS_URL === undefined ? (REQUIRED ? false : 'REDIS_URL is not set (CI sets it; REQUIRE_SERVICES=1 makes this a failure)') : false;

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const CLI = path.join(REPO_ROOT, 'bin/policylayer.js');
const REPLICAS = 3;
const CLIENTS = 60;

describe('three gateway replicas sharing one Redis', { skip }, () => {
  let tmp: TempDir;
  const replicas: StartedProcess[] = [];
  const urls: string[] = [];
  const clients: V1Connection[] = [];
  const others: V1Connection[] = [];

  before(async () => {
    assert.ok(REDIS_URL, 'REDIS_URL must be set when REQUIRE_SERVICES=1');
    tmp = tempDir();
    // A fresh counter name per run, so counts left by an earlier run in the same Redis never matter.
    const run = randomUUID().slice(0, 8);
    const policy = {
      version: '1',
      default: 'deny',
      tools: {
        create_session: { limits: [{ counter: `sessions-${run}`, window: 'minute', max: 100, scope: 'grant' }] },
        charge: {
          limits: [{ counter: `spend-${run}`, window: 'day', max: 1000, scope: 'grant', increment_from: 'args.amount' }],
        },
      },
    };
    tmp.write('policy.json', policy);
    tmp.write(
      'gateway.yaml',
      `listen: 127.0.0.1:0
counters: ${REDIS_URL}
auth: { required: true }
store: sqlite:./control.db
servers:
  shared:
    command: ${JSON.stringify([process.execPath, FIXTURE, '--tools', 'create_session,charge'])}
    policy: policy.json
`,
    );
    // Two agents, each with its own grant: the `grant` scope counts them apart on every replica.
    const store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    const alice = newToken();
    const bob = newToken();
    await store.createGrant({ label: 'alice', servers: ['shared'] }, hashToken(alice), Date.now());
    await store.createGrant({ label: 'bob', servers: ['shared'] }, hashToken(bob), Date.now());
    await store.close();
    const started = await Promise.all(
      Array.from({ length: REPLICAS }, () =>
        startProcess([process.execPath, CLI, 'serve', '-c', path.join(tmp.path, 'gateway.yaml'), '--log-level', 'warn'], {
          ready: /PolicyLayer listening on (http:\/\/\S+)/,
          env: { POLICYLAYER_EXIT_ON_STDIN_CLOSE: '1' },
        }),
      ),
    );
    for (const p of started) {
      replicas.push(p);
      urls.push(`${p.ready![1]!}/mcp/shared`);
    }
    const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
    for (let i = 0; i < CLIENTS; i++) clients.push(await connectHttp(urls[i % REPLICAS]!, as(alice)));
    for (let i = 0; i < REPLICAS * 2; i++) others.push(await connectHttp(urls[i % REPLICAS]!, as(bob)));
  });

  after(async () => {
    await Promise.all([...clients, ...others].map((c) => c.close().catch(() => {})));
    await Promise.all(replicas.map((p) => p.stop()));
    tmp?.remove();
  });

  async function admittedOf(calls: Array<Promise<unknown>>): Promise<{ admitted: number; refusals: string[] }> {
    const results = (await Promise.all(calls)) as Array<{ isError?: boolean }>;
    const refusals = results.filter((r) => r.isError === true).map(textOf);
    return { admitted: results.length - refusals.length, refusals };
  }

  test('admits exactly 100 of 180 concurrent create_session calls from 60 clients of one grant over 3 replicas', async () => {
    const calls = clients.flatMap((c) => [0, 1, 2].map(() => c.client.callTool({ name: 'create_session', arguments: {} })));
    const { admitted, refusals } = await admittedOf(calls);
    assert.equal(admitted, 100);
    assert.equal(refusals.length, 80);
    for (const r of refusals) assert.match(r, /allows at most 100 calls per minute per agent grant/);
  });

  test('gives a second grant its own 100, over the same replicas', async () => {
    const calls = others.flatMap((c) => Array.from({ length: 20 }, () => c.client.callTool({ name: 'create_session', arguments: {} })));
    const { admitted } = await admittedOf(calls);
    assert.equal(admitted, 100);
  });

  test('admits spend up to exactly the 1000 quota across replicas, whatever the interleaving', async () => {
    // 60 clients × 2 charges of 15 = 1800 asked for; 66 fit (990), the 67th would take it to 1005.
    const calls = clients.flatMap((c) => [0, 1].map(() => c.client.callTool({ name: 'charge', arguments: { amount: 15 } })));
    const { admitted, refusals } = await admittedOf(calls);
    assert.equal(admitted, 66);
    for (const r of refusals) assert.match(r, /quota 'spend-[0-9a-f]+' allows at most 1000 of args\.amount per day/);
    // What is left (10) still admits a charge that fits, on any replica.
    const last = await clients[7]!.client.callTool({ name: 'charge', arguments: { amount: 10 } });
    assert.equal(last.isError ?? false, false);
    const none = await clients[8]!.client.callTool({ name: 'charge', arguments: { amount: 1 } });
    assert.equal(none.isError, true);
  });
});
