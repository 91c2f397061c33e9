/** `policylayer servers` and `policylayer admins`, end to end: the real binary on a SQLite store. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hashToken } from '../identity/tokens.js';
import { openSqliteStore } from '../store/sqlite.js';

// This file runs as dist/src/cli/servers.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const BIN = path.join(ROOT, 'bin/policylayer.js');

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-servers-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const CONFIG = path.join(dir, 'gateway.yaml');
writeFileSync(
  CONFIG,
  `store: sqlite:./control.db
servers:
  piloty: { command: [ "true" ], policy: { version: "1", default: deny } }
  poolparty:
    url: "https://example.invalid/mcp"
    headers: { Authorization: "Bearer \${POOLPARTY_KEY}" }
    policy: { version: "1", default: deny }
`,
);
writeFileSync(path.join(dir, 'github.yaml'), 'version: "1"\ndefault: deny\ntools:\n  search_code: {}\n');
writeFileSync(path.join(dir, 'broken.json'), '{"version":"1","default":"maybe"}');
const SECRET = 'pp-secret-value-7777';
const ENV = { ...process.env, POOLPARTY_KEY: SECRET, GITHUB_TOKEN: 'gh-secret-value-8888' };

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: dir, env: ENV });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function withStore<T>(fn: (store: ReturnType<typeof openSqliteStore>) => Promise<T>): Promise<T> {
  const store = openSqliteStore(path.join(dir, 'control.db'));
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

test('adds a remote server with its credential kept as a reference, and lists every server masked', async () => {
  const add = cli('servers', 'add', 'github', '-c', CONFIG, '--url', 'https://api.example.com/mcp', '--header', 'Authorization: Bearer ${GITHUB_TOKEN}', '--policy', 'github.yaml');
  assert.equal(add.code, 0, add.stderr);
  assert.match(add.stdout, /server: +github \(added at run time\)/);
  assert.match(add.stdout, /policy: +stored version 1/);
  const stored = await withStore((s) => s.getServer('github'));
  assert.deepEqual(stored?.definition, { url: 'https://api.example.com/mcp', headers: { Authorization: 'Bearer ${GITHUB_TOKEN}' } });

  const list = cli('servers', 'list', '-c', CONFIG, '--format', 'json');
  assert.equal(list.code, 0, list.stderr);
  const servers = JSON.parse(list.stdout) as Array<{ name: string; source: string; definition: { headers?: Record<string, string> } }>;
  assert.deepEqual(servers.map((s) => [s.name, s.source]), [['github', 'store'], ['piloty', 'config'], ['poolparty', 'config']]);
  assert.deepEqual(servers.find((s) => s.name === 'poolparty')!.definition.headers, { Authorization: '[redacted]' });
  assert.doesNotMatch(list.stdout, /secret-value/);
  assert.doesNotMatch(cli('servers', 'list', '-c', CONFIG).stdout, /secret-value/);
});

test('refuses a server without a policy, with a broken policy, with an unresolvable reference or named like a gateway.yaml server', async () => {
  const noPolicy = cli('servers', 'add', 'a', '-c', CONFIG, '--url', 'https://a.example/mcp');
  assert.equal(noPolicy.code, 1);
  assert.match(noPolicy.stderr, /--policy <policy file> is required/);
  const broken = cli('servers', 'add', 'b', '-c', CONFIG, '--url', 'https://b.example/mcp', '--policy', 'broken.json');
  assert.equal(broken.code, 1);
  assert.match(broken.stderr, /\/default: expected allow\|deny/);
  const unset = cli('servers', 'add', 'c', '-c', CONFIG, '--url', 'https://c.example/mcp', '--header', 'X-Key: ${NOT_SET_99}', '--policy', 'github.yaml');
  assert.equal(unset.code, 1);
  assert.match(unset.stderr, /environment variable NOT_SET_99 is not set/);
  const both = cli('servers', 'add', 'd', '-c', CONFIG, '--url', 'https://d.example/mcp', '--command', 'true', '--policy', 'github.yaml');
  assert.match(both.stderr, /exactly one of --url, --command or --definition/);
  const taken = cli('servers', 'add', 'piloty', '-c', CONFIG, '--command', 'true', '--policy', 'github.yaml');
  assert.equal(taken.code, 1);
  assert.match(taken.stderr, /defined in gateway\.yaml/);
  assert.deepEqual((await withStore((s) => s.listServers())).map((s) => s.name), ['github']);
});

test('removes a server added at run time, but not one of gateway.yaml', () => {
  const removed = cli('servers', 'remove', 'github', '-c', CONFIG);
  assert.equal(removed.code, 0, removed.stderr);
  assert.match(removed.stdout, /removed 'github'/);
  assert.match(cli('servers', 'show', 'github', '-c', CONFIG).stderr, /no server named 'github'/);
  const config = cli('servers', 'remove', 'piloty', '-c', CONFIG);
  assert.equal(config.code, 1);
  assert.match(config.stderr, /remove it there/);
});

test('creates an admin credential shown once, lists it without the token, and revokes it', async () => {
  const created = cli('admins', 'create', 'ops-alice', '--role', 'policy_manager', '-c', CONFIG);
  assert.equal(created.code, 0, created.stderr);
  const token = /^token: +(pla_\S+)$/m.exec(created.stdout)?.[1];
  assert.ok(token, created.stdout);
  assert.equal((await withStore((s) => s.findAdminByTokenHash(hashToken(token))))?.role, 'policy_manager');
  const badRole = cli('admins', 'create', 'ops-bob', '--role', 'root', '-c', CONFIG);
  assert.equal(badRole.code, 1);
  assert.match(badRole.stderr, /role: expected admin\|policy_manager\|viewer/);
  const list = cli('admins', 'list', '-c', CONFIG);
  assert.match(list.stdout, /admin: +ops-alice \(active\)/);
  assert.doesNotMatch(list.stdout, /pla_/);
  assert.equal(cli('admins', 'revoke', 'ops-alice', '-c', CONFIG).code, 0);
  assert.match(cli('admins', 'list', '-c', CONFIG).stdout, /ops-alice \(revoked /);
});

test('records each change made on the command line in the admin audit stream, as the OS user', async () => {
  const events = await withStore((s) => s.listAdminEvents());
  const actions = events.map((e) => e.action).reverse();
  assert.deepEqual(actions, ['server.add', 'server.remove', 'admin.create', 'admin.revoke']);
  assert.ok(events.every((e) => e.actor.startsWith('cli:') && e.role === 'admin'));
  assert.doesNotMatch(JSON.stringify(events), /pla_|secret-value/);
});
