/** `policylayer approvals`, end to end: the real binary on a SQLite store, no gateway running. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSqliteStore } from '../store/sqlite.js';
import type { ApprovalRecord } from '../store/store.js';

// This file runs as dist/src/cli/approvals.test.js.
const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const BIN = path.join(ROOT, 'bin/policylayer.js');

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-approvals-cli-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
const CONFIG = path.join(dir, 'gateway.yaml');
writeFileSync(CONFIG, 'store: sqlite:./control.db\nservers:\n  payments: { command: [ "true" ], policy: { version: "1", default: deny } }\n');

function cli(...args: string[]) {
  const env = { ...process.env };
  delete env.POLICYLAYER_ADMIN_URL;
  const r = spawnSync(process.execPath, [BIN, 'approvals', ...args], { encoding: 'utf8', cwd: dir, env });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A pending approval in the config's store, as a gateway holding a call would have left it. */
async function held(tool: string, amount: number, expiresInMs = 600_000): Promise<ApprovalRecord> {
  const store = openSqliteStore(path.join(dir, 'control.db'));
  try {
    await store.migrate();
    const now = Date.now();
    return await store.createApproval(
      {
        grantId: 'g-1',
        grantLabel: 'alice-laptop',
        server: 'payments',
        tool,
        arguments: JSON.stringify({ amount }),
        argumentsDigest: String(amount).padStart(64, '0'),
        policyVersion: 'sha256:0123456789abcdef',
        rule: `/tools/${tool}`,
        reason: 'charges need a person',
        via: ['dashboard'],
        expiresAt: now + expiresInMs,
        heldBy: null,
      },
      now,
    );
  } finally {
    await store.close();
  }
}

test('explains itself with --help, and refuses an unknown subcommand or a missing store with exit 1', () => {
  const help = spawnSync(process.execPath, [BIN, 'approvals', '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Usage: policylayer approvals <list\|show\|approve\|deny>/);
  assert.match(help.stdout, /Example:\n {2}policylayer approvals list -c gateway\.yaml --status pending/);
  assert.match(cli('grant', '-c', CONFIG).stderr, /unknown subcommand 'grant': expected list, show, approve or deny/);
  const nowhere = cli('list');
  assert.equal(nowhere.code, 1);
  assert.match(nowhere.stderr, /missing -c <gateway\.yaml> \(or --store\), or --url <admin API>/);
  assert.match(cli('list', '-c', CONFIG, '--url', 'http://127.0.0.1:1').stderr, /not both/);
  assert.match(cli('list', '--url', 'http://127.0.0.1:1').stderr, /POLICYLAYER_ADMIN_TOKEN/);
  assert.match(cli('list', '-c', CONFIG, '--limit', '0').stderr, /--limit expects a whole number from 1 to 1000/);
});

test('lists pending approvals, shows one, and approves it as the OS user; a second decision exits 1 and shows the winner', async () => {
  const a = await held('create_charge', 500);
  const list = cli('list', '-c', CONFIG, '--status', 'pending');
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`^${a.id} +pending +payments/create_charge +alice-laptop +requested \\S+ +expires in (9m5\\ds|10m)`, 'm'));
  const show = cli('show', a.id, '-c', CONFIG);
  assert.match(show.stdout, /^call: +payments \/ create_charge \{"amount":500\}$/m);
  assert.match(show.stdout, /^grant: +alice-laptop$/m);
  assert.match(show.stdout, /^rule: +\/tools\/create_charge \(policy sha256:0123456789abcdef\)$/m);

  const approved = cli('approve', a.id, '-c', CONFIG, '--comment', 'looks right', '--format', 'json');
  assert.equal(approved.code, 0, approved.stderr);
  const view = JSON.parse(approved.stdout) as { status: string; decidedBy: string; comment: string };
  assert.equal(view.status, 'approved');
  assert.match(view.decidedBy, /^cli:/);
  assert.equal(view.comment, 'looks right');

  const late = cli('deny', a.id, '-c', CONFIG, '--reason', 'no');
  assert.equal(late.code, 1);
  assert.match(late.stderr, /was already approved by cli:\S+ at \S+; nothing was changed/);
  assert.match(late.stderr, /status: +approved by cli:/);
  assert.match(cli('show', 'no-such-id', '-c', CONFIG).stderr, /no approval 'no-such-id'/);
});

test('shows an approval whose time passed as expired, and refuses to approve it', async () => {
  const a = await held('refund', 7, 1);
  await new Promise((r) => setTimeout(r, 20));
  assert.match(cli('show', a.id, '-c', CONFIG).stdout, /^approval: .* \(expired\)$/m);
  const late = cli('approve', a.id, '-c', CONFIG);
  assert.equal(late.code, 1);
  assert.match(late.stderr, /approval \S+ expired at \S+, before this decision; nothing was changed/);
});
