/**
 * Human approval, end to end: a real MCP SDK client calls through a real gateway (the composition
 * root `policylayer serve` uses, and the `serve` binary itself where a process must die) to a
 * stdio server, the call is held open, and a person decides through the CLI or the admin API.
 * The approval record in the control store, the agent's answer and the audit log must all tell
 * the same story.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client as V2Client, StreamableHTTPClientTransport as V2HttpTransport } from '@modelcontextprotocol/client';
import pg from 'pg';
import type { AuditRecord } from '../../src/audit/event.js';
import { openSqliteAuditSink } from '../../src/audit/sinks/sqlite.js';
import { bindCall } from '../../src/approvals/service.js';
import { hashToken, newAdminToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import type { ApprovalRecord, ApprovalStatus, ControlStore } from '../../src/store/store.js';
import { connectHttp, connectStdio, textOf, type V1Connection } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { REPO_ROOT, startProcess, type StartedProcess } from '../helpers/processes.js';
import { MCP_HEADERS, PROTOCOL_VERSION, raw } from '../helpers/safety-helpers.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const CLI = path.join(REPO_ROOT, 'bin/policylayer.js');
const SERVER_COMMAND = [process.execPath, FIXTURE, '--tools', 'create_charge,refund,delete_repo,preview'];

const POLICY = {
  version: '1',
  default: 'deny',
  tools: {
    echo: {},
    create_charge: {
      action: 'require_approval',
      reason: 'charges need a person',
      deny_if: [{ path: 'args.amount', op: 'gt', value: 50_000 }],
      limits: [{ counter: 'charges', window: 'minute', max: 100, scope: 'grant' }],
    },
    refund: { action: 'require_approval', reason: 'refunds need a person', approval: { timeout: '1s' } },
    delete_repo: { action: 'require_approval', approval: { timeout: '10m', remember: '10m' } },
    preview: { action: 'require_approval', shadow: true },
  },
};

/** `policylayer <args>` as a child process (asynchronous: the gateway under test runs in this process). */
function cli(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { cwd: opts.cwd, env: { ...process.env, ...opts.env }, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

/** Resolves with `check`'s value once it is defined, polling every 20 ms; fails after `ms`. */
async function eventually<T>(what: string, check: () => Promise<T | undefined>, ms = 5_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Whether `p` settles within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true, () => true), sleep(ms).then(() => false)]);
}

/** The approval of the call `tool(args)` in `status`, once there is one. */
function approvalOf(store: ControlStore, tool: string, args: unknown, status: ApprovalStatus = 'pending', ms?: number): Promise<ApprovalRecord> {
  const digest = bindCall({ grantId: null, grantLabel: null, server: '', tool, arguments: args, policyVersion: '', rule: '', reason: '' }).argumentsDigest;
  return eventually(
    `a ${status} approval of ${tool} ${JSON.stringify(args)}`,
    async () => (await store.listApprovals({ limit: 1000 })).find((a) => a.tool === tool && a.argumentsDigest === digest && a.status === status),
    ms,
  );
}

describe('a call that needs human approval, through one gateway', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let store: ControlStore;
  let auditDb: string;
  let agentToken: string;
  let approver: string;
  let viewer: string;
  const connections: V1Connection[] = [];

  const api = (method: string, p: string, token: string, body?: unknown) =>
    raw(`${gw.running.adminUrl}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? null : JSON.stringify(body),
    });

  async function agent(): Promise<V1Connection> {
    const c = await connectHttp(gw.endpoint('payments'), { headers: { authorization: `Bearer ${agentToken}` } });
    connections.push(c);
    return c;
  }

  /**
   * The audit records of the call `tool(args)`, in the order written, once `n` of them are there.
   * A forwarded call's separate decision record (`upstreamStatus: forwarded`, written only when the
   * call outlives the flush interval, which a loaded machine decides) is left out.
   */
  async function auditOf(tool: string, args: unknown, n: number): Promise<AuditRecord[]> {
    const digest = bindCall({ grantId: null, grantLabel: null, server: '', tool, arguments: args, policyVersion: '', rule: '', reason: '' }).argumentsDigest;
    return eventually(`${n} audit records of ${tool} ${JSON.stringify(args)}`, async () => {
      const sink = openSqliteAuditSink(auditDb);
      try {
        const found: AuditRecord[] = [];
        for await (const r of sink.iterate()) {
          if (r.tool === tool && r.upstreamStatus !== 'forwarded' && (r.arguments as { sha256?: string } | null)?.sha256 === digest) found.push(r);
        }
        return found.length >= n ? found : undefined;
      } finally {
        await sink.close();
      }
    });
  }

  before(async () => {
    tmp = tempDir();
    auditDb = path.join(tmp.path, 'audit.db');
    // The same file the CLI reads with -c.
    const config = tmp.write(
      'gateway.yaml',
      `store: sqlite:./control.db
auth: { required: true }
approvals: { poll_interval: 200ms, progress_interval: 100ms }
audit: { sinks: [ ${yamlValue(`sqlite:${auditDb}`)} ], flush_interval: 20ms }
servers:
  payments:
    command: ${yamlValue(SERVER_COMMAND)}
    policy: ${yamlValue(POLICY)}
`,
    );
    gw = await startTestGateway(readFileSync(config, 'utf8'), { dir: tmp.path });
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    agentToken = newToken();
    await store.createGrant({ label: 'alice-laptop', servers: ['payments'] }, hashToken(agentToken), Date.now());
    approver = newAdminToken();
    await store.createAdminCredential({ label: 'ops-alice', role: 'policy_manager' }, hashToken(approver), Date.now());
    viewer = newAdminToken();
    await store.createAdminCredential({ label: 'auditor', role: 'viewer' }, hashToken(viewer), Date.now());
  });

  after(async () => {
    await Promise.all(connections.map((c) => c.close().catch(() => {})));
    await gw?.stop();
    await store?.close();
    tmp?.remove();
  });

  test('holds the call until a person approves it from the CLI, then forwards exactly that call, once, and the agent reads the server’s answer', async () => {
    const { client } = await agent();
    const args = { amount: 500, channel: 'cli-approve' };
    const answer = client.callTool({ name: 'create_charge', arguments: args });
    const held = await approvalOf(store, 'create_charge', args);
    assert.equal(held.grantLabel, 'alice-laptop');
    assert.equal(held.server, 'payments');
    assert.equal(held.rule, '/tools/create_charge');
    assert.equal(held.reason, 'charges need a person');
    assert.equal(held.arguments, '{"amount":500,"channel":"cli-approve"}');
    assert.equal(held.expiresAt - held.requestedAt, 10 * 60_000, 'the default timeout is 10 minutes');
    assert.equal(await settlesWithin(answer, 300), false, 'the call stays open while nobody has decided');

    const approved = await cli(['approvals', 'approve', held.id, '-c', 'gateway.yaml', '--comment', 'expected invoice'], { cwd: tmp.path });
    assert.equal(approved.code, 0, approved.stderr);
    assert.match(approved.stdout, /Approved: the held call is forwarded once/);
    assert.equal(textOf(await answer), 'called create_charge');

    const executed = await approvalOf(store, 'create_charge', args, 'executed');
    assert.match(executed.decidedBy ?? '', /^cli:/);
    assert.equal(executed.comment, 'expected invoice');
    assert.ok(executed.executedAt !== null && executed.executedAt >= executed.decidedAt!);

    const records = await auditOf('create_charge', args, 3);
    assert.deepEqual(
      records.map((r) => [r.decision, r.upstreamStatus]),
      [
        ['approval_requested', null],
        ['approved', null],
        ['approved', 'ok'],
      ],
    );
    assert.match(records[0]!.reason!, new RegExp(`^waiting for approval ${held.id} \\(timeout 10m\\): charges need a person$`));
    assert.match(records[1]!.reason!, new RegExp(`^approved by cli:\\S+ \\(approval ${held.id}\\): expected invoice$`));
    assert.ok(records.every((r) => r.rule === '/tools/create_charge' && r.grantLabel === 'alice-laptop'));
  });

  test('refuses the call with the approver’s name and reason when a person denies it through the admin API', async () => {
    const { client } = await agent();
    const args = { amount: 700, channel: 'deny' };
    const answer = client.callTool({ name: 'create_charge', arguments: args });
    const held = await approvalOf(store, 'create_charge', args);
    const denied = await api('POST', `/approvals/${held.id}/deny`, approver, { reason: 'this customer was refunded already' });
    assert.equal(denied.status, 200, denied.text);
    assert.equal(denied.json.status, 'denied');
    assert.equal(denied.json.decidedBy, 'ops-alice');

    const result = (await answer) as { isError?: boolean; _meta?: Record<string, unknown> };
    assert.equal(result.isError, true);
    assert.match(
      textOf(result),
      new RegExp(`^Blocked by PolicyLayer: ops-alice denied the call to 'create_charge' when asked to approve it\\. Reason: this customer was refunded already \\(approval ${held.id}, rule /tools/create_charge, policy sha256:[0-9a-f]{16}\\)\\.$`),
    );
    assert.deepEqual((result._meta?.['policylayer/approval'] as { status: string; decidedBy: string }).status, 'denied');
    const [, refusal] = await auditOf('create_charge', args, 2);
    assert.equal(refusal!.decision, 'denied_by_approver');
    assert.equal(refusal!.reason, `denied by ops-alice (approval ${held.id}): this customer was refunded already`);
    assert.equal(refusal!.upstreamStatus, null, 'the call never reached the server');
  });

  test('refuses the call when no one decides within the rule’s timeout, and says so', async () => {
    const { client } = await agent();
    const args = { amount: 5, channel: 'expire' };
    const started = Date.now();
    const result = (await client.callTool({ name: 'refund', arguments: args })) as { isError?: boolean };
    const waited = Date.now() - started;
    assert.equal(result.isError, true);
    assert.match(textOf(result), /^Blocked by PolicyLayer: the call to 'refund' needs a person's approval \(refunds need a person\), and no one decided within 1s, so it was not made \(approval [0-9a-f-]{36}, rule \/tools\/refund, policy sha256:[0-9a-f]{16}\)\.$/);
    assert.ok(waited >= 900 && waited < 4_000, `answered after ${waited} ms`);
    const expired = await approvalOf(store, 'refund', args, 'expired');
    assert.equal(expired.decidedBy, null, 'nobody is named for an expiry');
    assert.equal(expired.decidedAt, expired.expiresAt);
    const [, record] = await auditOf('refund', args, 2);
    assert.deepEqual([record!.decision, record!.reason], ['expired', `no one decided within 1s (approval ${expired.id})`]);
  });

  test('withdraws the approval when the client cancels its call, so nobody approves a call no one waits for', async () => {
    const { client } = await agent();
    const args = { amount: 800, channel: 'cancel' };
    const abort = new AbortController();
    const answer = client.callTool({ name: 'create_charge', arguments: args }, undefined, { signal: abort.signal });
    const held = await approvalOf(store, 'create_charge', args);
    abort.abort('the user pressed Esc');
    await assert.rejects(answer);
    const cancelled = await approvalOf(store, 'create_charge', args, 'cancelled');
    assert.equal(cancelled.id, held.id);
    assert.match(cancelled.comment ?? '', /^the client cancelled the call: .*the user pressed Esc/);
    const late = await api('POST', `/approvals/${held.id}/approve`, approver, {});
    assert.equal(late.status, 409, 'an approval after the withdrawal changes nothing');
    assert.equal(late.json.error.approval.status, 'cancelled');
    const [, record] = await auditOf('create_charge', args, 2);
    assert.deepEqual([record!.decision, record!.upstreamStatus], ['approval_requested', 'cancelled']);
    assert.match(record!.error!, /^withdrawn before anyone decided/);
  });

  test('withdraws the approval when the client’s connection dies while its call is held', async () => {
    const headers = { ...MCP_HEADERS, authorization: `Bearer ${agentToken}` };
    const init = await raw(gw.endpoint('payments'), {
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'dies', version: '0' } } }),
    });
    const session = { ...headers, 'mcp-session-id': String(init.headers['mcp-session-id']), 'mcp-protocol-version': PROTOCOL_VERSION };
    await raw(gw.endpoint('payments'), { headers: session, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
    const args = { amount: 900, channel: 'connection' };
    const connection = new AbortController();
    const call = fetch(gw.endpoint('payments'), {
      method: 'POST',
      headers: session,
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'create_charge', arguments: args } }),
      signal: connection.signal,
    }).catch(() => 'aborted');
    await approvalOf(store, 'create_charge', args);
    connection.abort();
    assert.equal(await call, 'aborted');
    const cancelled = await approvalOf(store, 'create_charge', args, 'cancelled');
    assert.equal(cancelled.comment, "the client's connection closed");
  });

  test('holds a stateless (2026-07-28) client’s call the same way, and withdraws its approval when the client closes the call’s stream', async () => {
    const c = new V2Client({ name: 'stateless-agent', version: '2.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
    await c.connect(new V2HttpTransport(new URL(gw.endpoint('payments')), { requestInit: { headers: { authorization: `Bearer ${agentToken}` } } }));
    try {
      const args = { amount: 4, channel: 'stateless' };
      const answer = c.callTool({ name: 'create_charge', arguments: args });
      const held = await approvalOf(store, 'create_charge', args);
      assert.equal(held.grantLabel, 'alice-laptop', 'the stateless caller is named by its own grant');
      assert.equal((await api('POST', `/approvals/${held.id}/approve`, approver, {})).status, 200);
      assert.equal(textOf(await answer), 'called create_charge');

      const gone = { amount: 4, channel: 'stateless-gone' };
      const abort = new AbortController();
      const abandoned = c.callTool({ name: 'create_charge', arguments: gone }, { signal: abort.signal });
      await approvalOf(store, 'create_charge', gone);
      abort.abort();
      await assert.rejects(abandoned);
      const cancelled = await approvalOf(store, 'create_charge', gone, 'cancelled');
      assert.equal(cancelled.comment, "the client's connection closed");
    } finally {
      await c.close();
    }
  });

  test('releases only the call whose approval was approved: approving call A does not release call B', async () => {
    const { client } = await agent();
    const a = { amount: 1, channel: 'A' };
    const b = { amount: 1, channel: 'B' };
    const answerA = client.callTool({ name: 'create_charge', arguments: a });
    const answerB = client.callTool({ name: 'create_charge', arguments: b });
    const heldA = await approvalOf(store, 'create_charge', a);
    const heldB = await approvalOf(store, 'create_charge', b);
    assert.notEqual(heldA.id, heldB.id);
    assert.equal((await api('POST', `/approvals/${heldA.id}/approve`, approver, {})).status, 200);
    assert.equal(textOf(await answerA), 'called create_charge');
    assert.equal(await settlesWithin(answerB, 500), false, 'B is still held');
    assert.equal((await store.getApproval(heldB.id))?.status, 'pending');
    // An approval is single use: approving A again changes nothing and releases nothing.
    const again = await api('POST', `/approvals/${heldA.id}/approve`, approver, {});
    assert.equal(again.status, 409);
    assert.equal(again.json.error.approval.status, 'executed');
    assert.equal(await settlesWithin(answerB, 300), false, 'B is still held');
    assert.equal((await api('POST', `/approvals/${heldB.id}/deny`, approver, { reason: 'one charge is enough' })).status, 200);
    assert.equal(((await answerB) as { isError?: boolean }).isError, true);
  });

  test('keeps a client that sent a progressToken informed while its call waits, so its request timeout does not fire', async () => {
    const { client } = await agent();
    const args = { amount: 2, channel: 'progress' };
    const progress: Array<{ progress: number; message?: string }> = [];
    // A 400 ms timeout, reset by each notification: without them the call would fail long before anyone decides.
    const answer = client.callTool({ name: 'create_charge', arguments: args }, undefined, {
      timeout: 400,
      resetTimeoutOnProgress: true,
      onprogress: (p) => progress.push(p),
    });
    const held = await approvalOf(store, 'create_charge', args);
    await sleep(1_200);
    assert.equal((await api('POST', `/approvals/${held.id}/approve`, approver, { comment: 'fine' })).status, 200);
    assert.equal(textOf(await answer), 'called create_charge');
    assert.ok(progress.length >= 5, `${progress.length} progress notifications in 1.2 s at one per 100 ms`);
    assert.ok(progress.every((p, i) => p.progress === i + 1), 'progress only increases');
    assert.match(progress[0]!.message ?? '', new RegExp(`^waiting for a person to approve the call to 'create_charge' \\(approval ${held.id}; expires `));
  });

  test('re-admits the identical call within approval.remember without asking, and asks again for any other call', async () => {
    const { client } = await agent();
    const args = { channel: 'repo-1' };
    const first = client.callTool({ name: 'delete_repo', arguments: args });
    const held = await approvalOf(store, 'delete_repo', args);
    assert.equal((await api('POST', `/approvals/${held.id}/approve`, approver, {})).status, 200);
    assert.equal(textOf(await first), 'called delete_repo');
    await approvalOf(store, 'delete_repo', args, 'executed');

    // Key order does not make a call different: the arguments are compared as canonical JSON.
    const again = await client.callTool({ name: 'delete_repo', arguments: { channel: 'repo-1' } }, undefined, { timeout: 2_000 });
    assert.equal(textOf(again), 'called delete_repo');
    assert.equal((await store.listApprovals({ limit: 1000 })).filter((a) => a.tool === 'delete_repo').length, 1, 'nobody was asked again');
    const records = await auditOf('delete_repo', args, 4);
    assert.deepEqual([records[3]!.decision, records[3]!.upstreamStatus], ['approved', 'ok']);
    assert.match(records[3]!.reason!, new RegExp(`^approved by ops-alice \\(approval ${held.id}\\), remembered: the identical call was approved within 10m$`));

    const other = { channel: 'repo-2' };
    const different = client.callTool({ name: 'delete_repo', arguments: other });
    const asked = await approvalOf(store, 'delete_repo', other);
    assert.notEqual(asked.id, held.id);
    assert.equal((await api('POST', `/approvals/${asked.id}/deny`, approver, { reason: 'not this one' })).status, 200);
    assert.equal(((await different) as { isError?: boolean }).isError, true);
  });

  test('refuses outright, without asking anyone, a call the rule’s conditions refuse', async () => {
    const { client } = await agent();
    const result = (await client.callTool({ name: 'create_charge', arguments: { amount: 60_000, channel: 'too-big' } })) as { isError?: boolean };
    assert.equal(result.isError, true);
    assert.match(textOf(result), /rule \/tools\/create_charge\/deny_if\/0/);
    assert.equal((await store.listApprovals({ limit: 1000 })).some((a) => (JSON.parse(a.arguments) as { channel?: string }).channel === 'too-big'), false);
  });

  test('forwards a shadowed require_approval call at once and records what would have happened', async () => {
    const { client } = await agent();
    const args = { channel: 'shadow' };
    assert.equal(textOf(await client.callTool({ name: 'preview', arguments: args })), 'called preview');
    const [record] = await auditOf('preview', args, 1);
    assert.deepEqual([record!.decision, record!.upstreamStatus], ['shadow_deny', 'ok']);
    assert.match(record!.reason!, /^would have been held for human approval: a person must approve this call \(rule \/tools\/preview\)$/);
  });

  test('lists and shows approvals in the admin API and the CLI, records who decided in the admin events, and refuses what it must', async () => {
    const { client } = await agent();
    const args = { amount: 3, channel: 'admin-api' };
    const answer = client.callTool({ name: 'create_charge', arguments: args });
    const held = await approvalOf(store, 'create_charge', args);

    const listed = await api('GET', '/approvals?status=pending', viewer);
    assert.equal(listed.status, 200, listed.text);
    assert.ok(listed.json.approvals.some((a: { id: string; arguments: unknown }) => a.id === held.id && JSON.stringify(a.arguments) === JSON.stringify(args)));
    const shown = await api('GET', `/approvals/${held.id}`, viewer);
    assert.equal(shown.json.status, 'pending');
    assert.equal(shown.json.grantLabel, 'alice-laptop');
    assert.equal((await api('GET', '/approvals/no-such-id', viewer)).status, 404);
    assert.equal((await api('GET', '/approvals?status=maybe', viewer)).status, 400);

    const forbidden = await api('POST', `/approvals/${held.id}/approve`, viewer, {});
    assert.equal(forbidden.status, 403, 'a viewer may look but not decide');
    const noReason = await api('POST', `/approvals/${held.id}/deny`, approver, {});
    assert.equal(noReason.status, 400);
    assert.match(noReason.json.error.message, /reason/);
    assert.equal((await api('POST', '/approvals/no-such-id/approve', approver, {})).status, 404);
    assert.equal((await store.getApproval(held.id))?.status, 'pending', 'nothing refused changed anything');

    const list = await cli(['approvals', 'list', '-c', 'gateway.yaml', '--status', 'pending'], { cwd: tmp.path });
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^${held.id} +pending +payments/create_charge +alice-laptop +requested \\S+ +expires in \\d+m`, 'm'));
    const show = await cli(['approvals', 'show', held.id, '--url', gw.url], { cwd: tmp.path, env: { POLICYLAYER_ADMIN_TOKEN: viewer } });
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^call: +payments \/ create_charge \{"amount":3,"channel":"admin-api"\}$/m);
    assert.match(show.stdout, /^why: +charges need a person$/m);

    const denied = await cli(['approvals', 'deny', held.id, '--url', gw.url, '--reason', 'duplicate'], { env: { POLICYLAYER_ADMIN_TOKEN: approver } });
    assert.equal(denied.code, 0, denied.stderr);
    assert.equal(((await answer) as { isError?: boolean }).isError, true);
    const late = await cli(['approvals', 'approve', held.id, '-c', 'gateway.yaml'], { cwd: tmp.path });
    assert.equal(late.code, 1);
    assert.match(late.stderr, /was already denied by ops-alice at \S+; nothing was changed/);
    const noReasonCli = await cli(['approvals', 'deny', held.id, '-c', 'gateway.yaml'], { cwd: tmp.path });
    assert.equal(noReasonCli.code, 1);
    assert.match(noReasonCli.stderr, /deny needs --reason/);

    const events = await store.listAdminEvents({ target: `approval:${held.id}` });
    assert.deepEqual(events.map((e) => [e.action, e.actor]), [['approval.deny', 'ops-alice']]);
    assert.equal((events[0]!.after as { comment: string }).comment, 'duplicate');
  });
});

test('the stdio wrapper refuses a call that needs approval, saying approvals need `policylayer serve`', async () => {
  const tmp = tempDir();
  try {
    const policy = tmp.write('policy.json', POLICY);
    const c = await connectStdio([process.execPath, CLI, 'run', '--policy', policy, '--', ...SERVER_COMMAND]);
    try {
      const result = (await c.client.callTool({ name: 'create_charge', arguments: { amount: 1 } })) as { isError?: boolean };
      assert.equal(result.isError, true);
      assert.match(textOf(result), /needs human approval, which `policylayer run` \(stdio\) cannot ask for: approvals live in the control store of `policylayer serve`/);
      assert.equal(textOf(await c.client.callTool({ name: 'echo', arguments: { text: 'still here' } })), 'still here');
    } finally {
      await c.close();
    }
  } finally {
    tmp.remove();
  }
});

describe('a gateway that stops while it holds a call', () => {
  let tmp: TempDir;
  let store: ControlStore;

  before(async () => {
    tmp = tempDir();
    tmp.write(
      'gateway.yaml',
      `listen: 127.0.0.1:0
store: sqlite:./control.db
approvals: { poll_interval: 200ms }
audit: { sinks: [] }
servers:
  payments:
    command: ${yamlValue(SERVER_COMMAND)}
    policy: ${yamlValue({ ...POLICY, tools: { ...POLICY.tools, refund: { action: 'require_approval', approval: { timeout: '3s' } } } })}
`,
    );
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
  });
  after(async () => {
    await store?.close();
    tmp?.remove();
  });

  const serve = () =>
    startProcess([process.execPath, CLI, 'serve', '-c', path.join(tmp.path, 'gateway.yaml'), '--log-level', 'warn'], {
      ready: /PolicyLayer listening on (http:\/\/\S+)/,
      cwd: tmp.path,
    });

  test('stopping cleanly withdraws the approvals it holds and tells the agent why', async () => {
    const gateway = await serve();
    try {
      const c = await connectHttp(`${gateway.ready![1]}/mcp/payments`);
      const args = { amount: 10, channel: 'sigterm' };
      const answer = c.client.callTool({ name: 'create_charge', arguments: args });
      await approvalOf(store, 'create_charge', args);
      await gateway.stop(5_000);
      const result = (await answer) as { isError?: boolean };
      assert.equal(result.isError, true);
      assert.match(textOf(result), /withdrawn before anyone approved it \(the gateway holding the call shut down/);
      const withdrawn = await approvalOf(store, 'create_charge', args, 'cancelled');
      assert.equal(withdrawn.comment, 'the gateway holding the call shut down');
      await c.client.close().catch(() => {});
    } finally {
      await gateway.stop();
    }
  });

  test('killed, it leaves the approval pending (true: nobody decided), and after a restart the sweep marks it expired at its time', async () => {
    let gateway: StartedProcess = await serve();
    try {
      const c = await connectHttp(`${gateway.ready![1]}/mcp/payments`);
      const args = { amount: 11, channel: 'sigkill' };
      const answer = c.client.callTool({ name: 'refund', arguments: args });
      const held = await approvalOf(store, 'refund', args);
      process.kill(-gateway.pid, 'SIGKILL');
      await assert.rejects(answer, 'the held call fails: its connection died with the gateway');
      await c.client.close().catch(() => {});
      assert.equal((await store.getApproval(held.id))?.status, 'pending');

      gateway = await serve();
      const expired = await approvalOf(store, 'refund', args, 'expired', 6_000);
      assert.equal(expired.id, held.id);
      assert.equal(expired.decidedAt, held.expiresAt);
      assert.equal(expired.decidedBy, null);
      assert.equal(expired.executedAt, null, 'it was never forwarded');
    } finally {
      await gateway.stop();
    }
  });
});

const DATABASE_URL = process.env.DATABASE_URL;
const REDIS_URL = process.env.REDIS_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
const missing = [DATABASE_URL === undefined ? 'DATABASE_URL' : undefined, REDIS_URL === undefined ? 'REDIS_URL' : undefined].filter((x) => x !== undefined);
const skipReplicas = missing.length > 0 && !REQUIRED ? `${missing.join(' and ')} not set (CI sets them; REQUIRE_SERVICES=1 makes this a failure)` : false;

describe('two gateway replicas sharing PostgreSQL and Redis', { skip: skipReplicas }, () => {
  let tmp: TempDir;
  let admin: pg.Client;
  let store: ControlStore;
  let approver: string;
  const schema = `pl_test_approvals_${randomBytes(4).toString('hex')}`;
  const replicas: StartedProcess[] = [];
  const urls: string[] = [];

  before(async () => {
    assert.ok(DATABASE_URL && REDIS_URL, 'DATABASE_URL and REDIS_URL must be set when REQUIRE_SERVICES=1');
    admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE SCHEMA ${schema}`);
    const u = new URL(DATABASE_URL);
    u.searchParams.set('options', `-c search_path=${schema}`);
    store = await openControlStore(u.toString());
    approver = newAdminToken();
    await store.createAdminCredential({ label: 'ops-bob', role: 'admin' }, hashToken(approver), Date.now());
    tmp = tempDir();
    // A poll far longer than the test: a decision made on the other replica can only arrive in
    // time through Redis.
    tmp.write(
      'gateway.yaml',
      `listen: 127.0.0.1:0
store: ${JSON.stringify(u.toString())}
counters: ${JSON.stringify(REDIS_URL)}
approvals: { poll_interval: 10m }
audit: { sinks: [] }
servers:
  payments:
    command: ${yamlValue(SERVER_COMMAND)}
    policy: ${yamlValue(POLICY)}
`,
    );
    for (let i = 0; i < 2; i++) {
      const p = await startProcess([process.execPath, CLI, 'serve', '-c', path.join(tmp.path, 'gateway.yaml'), '--log-level', 'warn'], {
        ready: /PolicyLayer listening on (http:\/\/\S+)/,
        env: { POLICYLAYER_EXIT_ON_STDIN_CLOSE: '1' },
      });
      replicas.push(p);
      urls.push(p.ready![1]!);
    }
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await store?.close();
    await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
    await admin?.end();
    tmp?.remove();
  });

  test('releases a call held on replica A when a person approves it through replica B’s admin API', async () => {
    const c = await connectHttp(`${urls[0]}/mcp/payments`);
    try {
      const args = { amount: 42, channel: 'replicas' };
      const answer = c.client.callTool({ name: 'create_charge', arguments: args });
      const held = await approvalOf(store, 'create_charge', args);
      const approvedAt = Date.now();
      const res = await raw(`${urls[1]}/admin/api/approvals/${held.id}/approve`, {
        headers: { authorization: `Bearer ${approver}`, 'content-type': 'application/json' },
        body: JSON.stringify({ comment: 'from the other replica' }),
      });
      assert.equal(res.status, 200, res.text);
      assert.equal(textOf(await answer), 'called create_charge');
      assert.ok(Date.now() - approvedAt < 2_000, `released ${Date.now() - approvedAt} ms after the approval`);
      const executed = await approvalOf(store, 'create_charge', args, 'executed');
      assert.equal(executed.decidedBy, 'ops-bob');
      assert.notEqual(executed.heldBy, null);
    } finally {
      await c.close();
    }
  });

  test('denies a call held on replica B through the CLI on the shared store, announced over Redis', async () => {
    const c = await connectHttp(`${urls[1]}/mcp/payments`);
    try {
      const args = { amount: 43, channel: 'replicas-cli' };
      const answer = c.client.callTool({ name: 'create_charge', arguments: args });
      const held = await approvalOf(store, 'create_charge', args);
      const denied = await cli(['approvals', 'deny', held.id, '-c', path.join(tmp.path, 'gateway.yaml'), '--reason', 'not today']);
      assert.equal(denied.code, 0, denied.stderr);
      const deniedAt = Date.now();
      const result = (await answer) as { isError?: boolean };
      assert.ok(Date.now() - deniedAt < 2_000, 'woken through Redis, not by the 10-minute poll');
      assert.equal(result.isError, true);
      assert.match(textOf(result), /^Blocked by PolicyLayer: cli:\S+ denied the call to 'create_charge' when asked to approve it\. Reason: not today/);
    } finally {
      await c.close();
    }
  });
});
