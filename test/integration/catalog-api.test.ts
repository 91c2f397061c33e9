/**
 * The catalogue through the admin API: a real gateway on a SQLite store, a real `policylayer scan`
 * recording server-memory into that store while the gateway runs, and real HTTP requests with
 * admin credentials. Scanned servers come first, the shipped catalogue after them.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { REPO_ROOT, npmServerCommand } from '../helpers/processes.js';
import { raw, type RawResponse } from '../helpers/safety-helpers.js';
import { hashToken, newAdminToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import { parsePolicy } from '../../src/policy/index.js';
import type { ControlStore } from '../../src/store/store.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');

describe('the catalogue in the admin API', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let store: ControlStore;
  let viewer: string;

  /** `token` null: no Authorization header. */
  const get = (p: string, token: string | null = viewer, method = 'GET'): Promise<RawResponse> =>
    raw(`${gw.running.adminUrl}${p}`, { method, headers: token === null ? {} : { authorization: `Bearer ${token}` } });

  before(async () => {
    tmp = tempDir();
    gw = await startTestGateway(
      `
store: sqlite:./control.db
auth: { required: true }
servers:
  fixture:
    command: ${yamlValue([process.execPath, FIXTURE])}
    policy: ${yamlValue({ version: '1', default: 'allow' })}
`,
      { dir: tmp.path },
    );
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    viewer = newAdminToken();
    await store.createAdminCredential({ label: 'auditor', role: 'viewer' }, hashToken(viewer), Date.now());
    // A real scan, recorded by another process into the running gateway's store.
    const scan = spawn(process.execPath, [path.join(REPO_ROOT, 'bin/policylayer.js'), 'scan', '--store', `sqlite:${path.join(tmp.path, 'control.db')}`, '--', ...npmServerCommand('memory')], { stdio: 'ignore' });
    const [code] = (await once(scan, 'close')) as [number];
    assert.equal(code, 0, 'the scan recorded');
  });

  after(async () => {
    await gw.stop();
    await store.close();
    tmp.remove();
  });

  test('lists the servers scanned into the store, then the shipped catalogue, for a viewer', async () => {
    const res = await get('/catalog');
    assert.equal(res.status, 200, res.text);
    const servers = res.json.servers as Array<{ key: string; source: string; toolCount: number; categories: Record<string, number> }>;
    assert.deepEqual([servers[0]!.key, servers[0]!.source, servers[0]!.toolCount, servers[0]!.categories], ['memory-server', 'store', 9, { Destructive: 3, Read: 3, Write: 3 }]);
    assert.ok(servers.slice(1).every((s) => s.source === 'shipped'));
    assert.ok(servers.some((s) => s.key === 'everything' && s.source === 'shipped'));
  });

  test('shows one server with its tools in the order it lists them', async () => {
    const res = await get('/catalog/memory-server');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.version, '0.6.3');
    assert.deepEqual(
      (res.json.tools as Array<{ name: string }>).map((t) => t.name),
      ['create_entities', 'create_relations', 'add_observations', 'delete_entities', 'delete_observations', 'delete_relations', 'read_graph', 'search_nodes', 'open_nodes'],
    );
    const del = res.json.tools.find((t: { name: string }) => t.name === 'delete_entities');
    assert.deepEqual([del.category, del.severity, del.recommendation.hide], ['Destructive', 'High', true]);
    assert.match(del.definitionHash, /^sha256:[0-9a-f]{64}$/);
  });

  test("answers a tool's page as JSON: verdict, what it does, reasons, the recommended policy, attack patterns and controls", async () => {
    const res = await get('/catalog/memory-server/tools/create_entities');
    assert.equal(res.status, 200, res.text);
    const p = res.json;
    assert.deepEqual([p.tool, p.verdict, p.category, p.whatItDoesFrom], ['create_entities', 'Medium Risk', 'Write', 'description']);
    assert.match(p.whatItDoes, /knowledge graph/);
    assert.deepEqual(p.recommendation.policy, {
      version: '1',
      default: 'deny',
      tools: { create_entities: { limits: [{ counter: 'create_entities_rate', window: 'minute', max: 30, scope: 'grant' }] } },
    });
    assert.ok(p.attackPatterns.some((a: { id: string }) => a.id === 'runaway-loop'));
    for (const c of ['deny', 'rateLimit', 'requireApproval']) assert.doesNotThrow(() => parsePolicy(JSON.stringify(p.controls[c].policy), c));
    assert.ok(p.reasons.length > 0);

    const shipped = await get('/catalog/everything/tools/get-env');
    assert.equal(shipped.status, 200, shipped.text);
    assert.deepEqual([shipped.json.server.source, shipped.json.verdict], ['shipped', 'High Risk']);
  });

  test('gives the history of a server: every tool added by its first scan', async () => {
    const res = await get('/catalog/memory-server/history?limit=2');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.changes.length, 2);
    assert.ok(res.json.changes.every((c: { kind: string }) => c.kind === 'added'));
    assert.equal(typeof res.json.next, 'number');
    const rest = await get(`/catalog/memory-server/history?before=${res.json.next}&limit=1000`);
    assert.equal(rest.json.changes.length, 7);
    assert.equal(rest.json.next, null);
  });

  test('answers unknown servers and tools with 404 and a clear JSON error, and bad filters with 400', async () => {
    const server = await get('/catalog/nope');
    assert.equal(server.status, 404);
    assert.equal(server.json.error.code, 'PL_NOT_FOUND');
    assert.match(server.json.error.message, /^no server 'nope' in the catalogue: it holds memory-server, everything, /);
    const tool = await get('/catalog/memory-server/tools/drop_all');
    assert.equal(tool.status, 404);
    assert.match(tool.json.error.message, /^memory-server \(catalogue key memory-server\) has no tool 'drop_all': its tools are create_entities, /);
    assert.equal((await get('/catalog/nope/history')).status, 404);
    const filter = await get('/catalog/memory-server/history?limit=0');
    assert.equal(filter.status, 400);
    assert.match(filter.json.error.message, /limit: expected a whole number from 1 to 1000/);
    assert.equal((await get('/catalog/memory-server/history?since=1')).status, 400);
  });

  test('needs an admin credential, as every admin route does, and only reads', async () => {
    const anonymous = await get('/catalog', null);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.json.error.code, 'PL_ADMIN_UNAUTHORIZED');
    const post = await get('/catalog', viewer, 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET');
  });
});
