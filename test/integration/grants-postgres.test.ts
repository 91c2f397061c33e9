/**
 * Two `policylayer serve` processes sharing one real PostgreSQL: a grant created anywhere works on
 * both, and a revocation made anywhere stops it on both within a second; a server added or a
 * policy changed through one gateway's admin API is in force on the other within a second.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { REPO_ROOT, startProcess, type StartedProcess } from '../helpers/processes.js';
import { MCP_HEADERS, PROTOCOL_VERSION, raw } from '../helpers/safety-helpers.js';
import { hashToken, newAdminToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import type { ControlStore } from '../../src/store/store.js';

const DATABASE_URL = process.env.DATABASE_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
const skip = DATABASE_URL === undefined ? (REQUIRED ? false : 'DATABASE_URL is not set (CI sets it; REQUIRE_SERVICES=1 makes this a failure)') : false;

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const CLI = path.join(REPO_ROOT, 'bin/policylayer.js');

const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'agent', version: '0' } },
});

describe('two gateways sharing one PostgreSQL store', { skip }, () => {
  let tmp: TempDir;
  let admin: pg.Client;
  let store: ControlStore;
  let storeUrl: string;
  const schema = `pl_test_gw_${randomBytes(4).toString('hex')}`;
  const gateways: StartedProcess[] = [];
  const endpoints: string[] = [];
  const adminApis: string[] = [];

  before(async () => {
    assert.ok(DATABASE_URL, 'DATABASE_URL must be set when REQUIRE_SERVICES=1');
    admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    const u = new URL(DATABASE_URL);
    u.searchParams.set('options', `-c search_path=${schema}`);
    storeUrl = u.toString();
    store = await openControlStore(storeUrl);
    tmp = tempDir();
    tmp.write(
      'gateway.yaml',
      `listen: 127.0.0.1:0
auth: { required: true }
store: ${JSON.stringify(storeUrl)}
servers:
  s:
    command: ${JSON.stringify([process.execPath, FIXTURE])}
    policy: { version: "1", default: allow }
`,
    );
    for (let i = 0; i < 2; i++) {
      const p = await startProcess([process.execPath, CLI, 'serve', '-c', path.join(tmp.path, 'gateway.yaml'), '--log-level', 'warn'], {
        ready: /PolicyLayer listening on (http:\/\/\S+)/,
        env: { POLICYLAYER_EXIT_ON_STDIN_CLOSE: '1' },
      });
      gateways.push(p);
      endpoints.push(`${p.ready![1]!}/mcp/s`);
      adminApis.push(`${p.ready![1]!}/admin/api`);
    }
  });

  after(async () => {
    await Promise.all(gateways.map((g) => g.stop()));
    await store?.close();
    await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
    await admin?.end();
    tmp?.remove();
  });

  const status = async (endpoint: string, token: string) =>
    (await raw(endpoint, { headers: { ...MCP_HEADERS, authorization: `Bearer ${token}` }, body: INITIALIZE })).status;

  test('admits a grant created after both started, on both', async () => {
    const token = newToken();
    await store.createGrant({ label: 'late', servers: ['s'] }, hashToken(token), Date.now());
    for (const e of endpoints) assert.equal(await status(e, token), 200);
  });

  test('stops a revoked grant on both gateways within one second', async () => {
    const token = newToken();
    await store.createGrant({ label: 'to-revoke', servers: ['s'] }, hashToken(token), Date.now());
    // Both have the grant cached as valid before the revocation.
    for (const e of endpoints) assert.equal(await status(e, token), 200);
    const revokedAt = Date.now();
    await store.revokeGrant('to-revoke', revokedAt);
    for (const e of endpoints) {
      let refusedAfter: number | undefined;
      while (Date.now() - revokedAt < 3000) {
        if ((await status(e, token)) === 401) {
          refusedAfter = Date.now() - revokedAt;
          break;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(refusedAfter !== undefined && refusedAfter < 1000, `refused after ${refusedAfter ?? 'more than 3000'} ms`);
    }
  });

  /** Polls until `check` holds; how long it took, or undefined after 3 s. */
  async function within(check: () => Promise<boolean>): Promise<number | undefined> {
    const started = Date.now();
    while (Date.now() - started < 3000) {
      if (await check()) return Date.now() - started;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  }

  test("serves a server added through one gateway's admin API on the other within one second, and stops it there when removed", async () => {
    const adminToken = newAdminToken();
    await store.createAdminCredential({ label: 'ops', role: 'admin' }, hashToken(adminToken), Date.now());
    const api = (i: number, method: string, p: string, body?: unknown) =>
      raw(`${adminApis[i]}${p}`, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? null : JSON.stringify(body),
      });
    const added = await api(0, 'POST', '/servers', { name: 'late', definition: { command: [process.execPath, FIXTURE] }, policy: { version: '1', default: 'allow' } });
    assert.equal(added.status, 201, added.text);
    const addedAt = Date.now();
    const grant = await api(0, 'POST', '/grants', { label: 'late-user', servers: ['late'] });
    const token = grant.json.token as string;
    const other = endpoints[1]!.replace(/\/mcp\/s$/, '/mcp/late');
    // Gateways poll the store every second; the slack covers the poll's own queries and this
    // request. A known server answers a bad token with 401, an unknown one with 404: that tells
    // when the other gateway knows the server, apart from the time its process takes to start.
    const known = await within(async () => (await status(other, newToken())) === 401);
    assert.ok(known !== undefined && Date.now() - addedAt < 1000 + 200, `known after ${known ?? 'more than 3000'} ms`);
    assert.ok((await within(async () => (await status(other, token)) === 200)) !== undefined, 'never served');

    const versions = await api(1, 'GET', '/servers/late/policy/versions');
    assert.deepEqual(versions.json.versions.map((v: { version: number; actor: string }) => [v.version, v.actor]), [[1, 'ops']]);

    assert.equal((await api(0, 'DELETE', '/servers/late')).status, 204);
    const removedAt = Date.now();
    const gone = await within(async () => (await status(other, token)) === 404);
    assert.ok(gone !== undefined && Date.now() - removedAt < 1000 + 200, `still served after ${gone ?? 'more than 3000'} ms`);
  });
});
