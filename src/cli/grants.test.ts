/** `policylayer grants`, end to end: the real binary on a SQLite store in a temporary folder. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hashToken } from '../identity/tokens.js';
import { openSqliteStore } from '../store/sqlite.js';

// This file runs as dist/src/cli/grants.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const BIN = path.join(ROOT, 'bin/policylayer.js');

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-grants-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const CONFIG = path.join(dir, 'gateway.yaml');
writeFileSync(
  CONFIG,
  `store: sqlite:./data/control.db
servers:
  piloty: { command: [ "true" ], policy: { version: "1", default: deny } }
  poolparty: { url: "https://example.invalid/mcp", policy: { version: "1", default: deny } }
`,
);
writeFileSync(path.join(dir, 'read-only.json'), JSON.stringify({ version: '1', default: 'deny', tools: { list_sessions: {} } }));
writeFileSync(path.join(dir, 'broken.json'), '{"version":"1","default":"maybe"}');

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'grants', ...args], { encoding: 'utf8', cwd: dir });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function stored(label: string) {
  const store = openSqliteStore(path.join(dir, 'data/control.db'));
  try {
    return await store.getGrant(label);
  } finally {
    await store.close();
  }
}

test('creates a grant, prints its token once, and keeps only the hash in the store next to the config', async () => {
  const r = cli('create', '-c', CONFIG, '--label', 'alice-laptop', '--server', 'piloty', '--server', 'poolparty', '--expires', '30d');
  assert.equal(r.code, 0, r.stderr);
  const token = /^token: +(plg_\S+)$/m.exec(r.stdout)?.[1];
  assert.ok(token, r.stdout);
  assert.match(r.stdout, /grant: +alice-laptop \(active\)/);
  assert.match(r.stdout, /servers: +piloty, poolparty/);
  assert.match(r.stdout, /shown once/);
  assert.ok(existsSync(path.join(dir, 'data/control.db')));
  assert.equal(readFileSync(path.join(dir, 'data/control.db')).includes(Buffer.from(token)), false);
  const store = openSqliteStore(path.join(dir, 'data/control.db'));
  try {
    const found = await store.findByTokenHash(hashToken(token));
    assert.equal(found?.grant.label, 'alice-laptop');
    assert.ok(found.grant.expiresAt !== null && found.grant.expiresAt > Date.now() + 29 * 86_400_000);
  } finally {
    await store.close();
  }
});

test('refuses a duplicate label, an unknown server, a bad label and a broken policy, storing nothing', async () => {
  const dup = cli('create', '-c', CONFIG, '--label', 'alice-laptop', '--server', 'piloty');
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /a grant labelled 'alice-laptop' exists already/);
  const unknown = cli('create', '-c', CONFIG, '--label', 'x', '--server', 'nope');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no server named 'nope'/);
  const bad = cli('create', '-c', CONFIG, '--label', 'has space', '--server', 'piloty');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--label <name> is required/);
  const broken = cli('create', '-c', CONFIG, '--label', 'y', '--server', 'piloty', '--policy', 'piloty=broken.json');
  assert.equal(broken.code, 1);
  assert.match(broken.stderr, /broken\.json: \/default: expected allow\|deny/);
  assert.equal(await stored('x'), undefined);
  assert.equal(await stored('y'), undefined);
});

test("stores a grant's own policy for a server, validated", async () => {
  const r = cli('create', '-c', CONFIG, '--label', 'ci-runner', '--server', 'piloty', '--policy', 'piloty=read-only.json', '--format', 'json');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { grant: { ownPolicies: string[] }; token: string };
  assert.deepEqual(out.grant.ownPolicies, ['piloty']);
  assert.match(out.token, /^plg_/);
  assert.equal(JSON.parse((await stored('ci-runner'))!.policies.piloty!).default, 'deny');
});

test('lists and shows grants, as text and as JSON, never with a token', () => {
  const list = cli('list', '-c', CONFIG);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /grant: +alice-laptop/);
  assert.match(list.stdout, /grant: +ci-runner/);
  assert.doesNotMatch(list.stdout, /plg_/);
  const show = cli('show', 'alice-laptop', '-c', CONFIG, '--format', 'json');
  assert.equal(show.code, 0, show.stderr);
  assert.equal((JSON.parse(show.stdout) as { label: string }).label, 'alice-laptop');
  const missing = cli('show', 'nobody', '-c', CONFIG);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no grant 'nobody'/);
});

test('rotates a token with a grace period, and revokes a grant', async () => {
  const r = cli('rotate', 'alice-laptop', '-c', CONFIG, '--grace', '1h');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /the old token keeps working until \d{4}-/);
  const token = /^token: +(plg_\S+)$/m.exec(r.stdout)?.[1];
  assert.ok(token);
  const revoke = cli('revoke', 'alice-laptop', '-c', CONFIG);
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.match(revoke.stdout, /revoked 'alice-laptop'/);
  assert.ok((await stored('alice-laptop'))!.revokedAt !== null);
  const again = cli('rotate', 'alice-laptop', '-c', CONFIG);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /is revoked/);
});

test('explains a missing config, an unknown subcommand and --help', () => {
  assert.match(cli('list').stderr, /missing -c <gateway.yaml>/);
  const unknown = cli('frobnicate', '-c', CONFIG);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /unknown subcommand 'frobnicate'/);
  const help = cli('--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Example:\n {2}policylayer grants create/);
});

function explain(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'explain', '-c', CONFIG, ...args], { encoding: 'utf8', cwd: dir });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("explain --grant decides with the grant's own policy on the server, or the server's when it has none", () => {
  const own = explain('--server', 'piloty', '--grant', 'ci-runner', '--tool', 'create_session');
  assert.equal(own.code, 0, own.stderr);
  assert.match(own.stdout, /^grant: +ci-runner \(its own policy on piloty\)$/m);
  assert.match(own.stdout, /^effect: +deny$/m);
  assert.match(own.stdout, /^policy: +grant ci-runner, server piloty \(sha256:/m);
  assert.match(explain('--server', 'piloty', '--grant', 'ci-runner', '--tool', 'list_sessions').stdout, /^effect: +allow$/m);

  assert.equal(cli('create', '-c', CONFIG, '--label', 'dana', '--server', 'piloty').code, 0);
  const server = explain('--server', 'piloty', '--grant', 'dana', '--tool', 'list_sessions', '--format', 'json');
  assert.equal(server.code, 0, server.stderr);
  const out = JSON.parse(server.stdout) as { grant: { label: string; policy: string }; decision: { effect: string; rule: string } };
  assert.deepEqual([out.grant.label, out.grant.policy], ['dana', 'server']);
  assert.deepEqual([out.decision.effect, out.decision.rule], ['deny', '(default deny)']);
});

test('explain --grant says when the gateway would refuse the grant before any policy is asked', () => {
  const revoked = explain('--server', 'piloty', '--grant', 'alice-laptop', '--tool', 'x');
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stdout, /refused: +the grant is revoked: every request answers 401 invalid_token/);
  const unbound = explain('--server', 'poolparty', '--grant', 'ci-runner', '--tool', 'x');
  assert.match(unbound.stdout, /refused: +the grant is not bound to 'poolparty': every request answers 403 insufficient_scope/);
  const unknown = explain('--server', 'piloty', '--grant', 'nobody', '--tool', 'x');
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no grant 'nobody'/);
  const noServer = explain('--grant', 'dana', '--tool', 'x');
  assert.equal(noServer.code, 1);
  assert.match(noServer.stderr, /-c needs --server <name>/);
});
