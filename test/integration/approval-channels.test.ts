/**
 * The channels that ask a person, end to end: a real MCP SDK client calls through a real gateway
 * to a stdio server, the call is held, and the person decides through a signed webhook's
 * approve/deny link (a local HTTP server receives the webhook) or, where the policy lets the
 * calling user approve their own agent's call, in their own client (MCP elicitation).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ElicitRequestSchema, type ElicitResult } from '@modelcontextprotocol/sdk/types.js';
import { bindCall } from '../../src/approvals/service.js';
import { ApprovalLinks, LINK_KEY_NAME, linkKeyFromStored } from '../../src/approvals/links.js';
import { verifyWebhookSignature } from '../../src/approvals/webhook.js';
import { hashToken, newAdminToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import type { ApprovalRecord, ApprovalStatus, ControlStore } from '../../src/store/store.js';
import { connectHttp, textOf, type V1Connection, type V1Options } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/net.js';
import { REPO_ROOT } from '../helpers/processes.js';
import { captureLogger, raw } from '../helpers/safety-helpers.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const SERVER_COMMAND = [process.execPath, FIXTURE, '--tools', 'create_charge,refund,delete_repo,preview'];
const HOOK_SECRET = 'whsec-test-0123456789abcdef0123456789';
const DOWN_SECRET = 'whsec-down-0123456789abcdef0123456789';

const POLICY = {
  version: '1',
  default: 'deny',
  tools: {
    echo: {},
    // No `via`: every configured webhook is asked.
    create_charge: { action: 'require_approval', reason: 'charges need a person' },
    // Only the admin API and the CLI: webhooks stay quiet.
    preview: { action: 'require_approval', reason: 'previews are checked', approval: { timeout: '10m', via: 'dashboard' } },
    // The calling user may approve their own agent's call, in their client.
    delete_repo: { action: 'require_approval', reason: 'deleting a repository cannot be undone', approval: { timeout: '10m', via: ['elicitation'] } },
  },
};

interface Hook {
  headers: IncomingHttpHeaders;
  body: string;
  json: { event: string; approval: Record<string, unknown> & { id: string; status: string }; links?: { approve: string; deny: string; expiresAt: string }; text: string };
}

/** Resolves with `check`'s value once it is defined, polling every 20 ms; fails after `ms`. */
async function eventually<T>(what: string, check: () => T | undefined | Promise<T | undefined>, ms = 5_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([p.then(() => true, () => true), sleep(ms).then(() => false)]);
}

function approvalOf(store: ControlStore, tool: string, args: unknown, status: ApprovalStatus = 'pending'): Promise<ApprovalRecord> {
  const digest = bindCall({ grantId: null, grantLabel: null, server: '', tool, arguments: args, policyVersion: '', rule: '', reason: '' }).argumentsDigest;
  return eventually(`a ${status} approval of ${tool} ${JSON.stringify(args)}`, async () =>
    (await store.listApprovals({ limit: 1000 })).find((a) => a.tool === tool && a.argumentsDigest === digest && a.status === status),
  );
}

/** A link page fetched the way a browser does: GET, or the form's POST (urlencoded). */
async function page(url: string, form?: Record<string, string>): Promise<{ status: number; html: string; headers: Headers }> {
  const res = await fetch(url, form === undefined ? { redirect: 'manual' } : { method: 'POST', body: new URLSearchParams(form), redirect: 'manual' });
  return { status: res.status, html: await res.text(), headers: res.headers };
}

const tokenOf = (link: string) => new URL(link).searchParams.get('t')!;

describe('approval webhooks and their signed links', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let store: ControlStore;
  let agentToken: string;
  let approver: string;
  let receiver: Server;
  let hooks: Hook[] = [];
  const log = captureLogger('info');
  const connections: V1Connection[] = [];

  async function agent(opts: V1Options = {}): Promise<V1Connection> {
    const c = await connectHttp(gw.endpoint('payments'), { ...opts, headers: { authorization: `Bearer ${agentToken}` } });
    connections.push(c);
    return c;
  }

  const hookOf = (id: string, event = 'approval.requested') => eventually(`${event} of ${id}`, () => hooks.find((h) => h.json.event === event && h.json.approval.id === id));

  before(async () => {
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        hooks.push({ headers: req.headers, body, json: JSON.parse(body) as Hook['json'] });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const hookUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/approvals`;
    // A receiver that is down: nothing listens on this port.
    const downUrl = `http://127.0.0.1:${await freePort()}/down`;
    const port = await freePort();
    tmp = tempDir();
    const yaml = `listen: 127.0.0.1:${port}
store: sqlite:./control.db
auth: { required: true }
audit: { sinks: [], arguments: redacted }
approvals:
  poll_interval: 200ms
  public_url: http://127.0.0.1:${port}
  webhooks:
    - { url: ${yamlValue(hookUrl)}, secret: "\${HOOK_SECRET}", name: ops-hook }
    - { url: ${yamlValue(downUrl)}, secret: "\${DOWN_SECRET}", name: down-hook }
servers:
  payments:
    command: ${yamlValue(SERVER_COMMAND)}
    policy: ${yamlValue(POLICY)}
`;
    gw = await startTestGateway(yaml, { dir: tmp.path, keepListen: true, env: { ...process.env, HOOK_SECRET, DOWN_SECRET }, logger: log.logger });
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    agentToken = newToken();
    await store.createGrant({ label: 'alice-laptop', servers: ['payments'] }, hashToken(agentToken), Date.now());
    approver = newAdminToken();
    await store.createAdminCredential({ label: 'ops-alice', role: 'policy_manager' }, hashToken(approver), Date.now());
  });

  /** A decision through the admin API, as a person at the dashboard or `policylayer approvals --url` makes it. */
  async function decide(id: string, action: 'approve' | 'deny', body: Record<string, string> = {}): Promise<void> {
    const res = await raw(`${gw.running.adminUrl}/approvals/${id}/${action}`, {
      headers: { authorization: `Bearer ${approver}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, res.text);
  }

  after(async () => {
    await Promise.all(connections.map((c) => c.close().catch(() => {})));
    await gw?.stop();
    await store?.close();
    receiver?.closeAllConnections();
    await new Promise((r) => receiver?.close(r));
    tmp?.remove();
  });

  beforeEach(() => {
    hooks = [];
  });

  test('posts a signed approval.requested, and its approve link, opened and then submitted, releases the held call exactly once', async () => {
    const { client } = await agent();
    const args = { amount: 500, channel: 'link-approve' };
    const answer = client.callTool({ name: 'create_charge', arguments: args });
    const held = await approvalOf(store, 'create_charge', args);
    assert.deepEqual(held.via, ['dashboard', 'webhook']);

    const hook = await hookOf(held.id);
    const ts = hook.headers['x-policylayer-timestamp'] as string;
    assert.equal(verifyWebhookSignature({ secret: HOOK_SECRET, body: hook.body, timestamp: ts, signature: hook.headers['x-policylayer-signature'] as string }), true);
    assert.equal(verifyWebhookSignature({ secret: DOWN_SECRET, body: hook.body, timestamp: ts, signature: hook.headers['x-policylayer-signature'] as string }), false);
    assert.equal(hook.headers['x-policylayer-event'], 'approval.requested');
    const a = hook.json.approval;
    assert.deepEqual(
      [a.status, a.grant, a.server, a.tool, a.arguments, a.argumentsMode, a.reason, a.rule, a.policyVersion],
      ['pending', 'alice-laptop', 'payments', 'create_charge', args, 'redacted', 'charges need a person', '/tools/create_charge', held.policyVersion],
    );
    assert.equal(a.expiresAt, new Date(held.expiresAt).toISOString());
    const links = hook.json.links!;
    assert.match(links.approve, new RegExp(`^${gw.url}/approvals/${held.id}/approve\\?t=`));
    assert.match(hook.json.text, /^\*PolicyLayer: approval needed\* — \*alice-laptop\* wants to call `create_charge` on `payments`/);
    assert.ok(hook.json.text.includes(`<${links.approve}|Approve>`));

    // What an unfurler or a prefetcher does: GET (twice). It decides nothing.
    for (let i = 0; i < 2; i++) {
      const shown = await page(links.approve);
      assert.equal(shown.status, 200);
      assert.match(shown.html, /<h1>Approve this call\?<\/h1>/);
      assert.match(shown.html, /alice-laptop[\s\S]*create_charge[\s\S]*&quot;amount&quot;: 500[\s\S]*charges need a person/);
      assert.match(shown.html, /<form method="post" action="">/);
      assert.equal(shown.headers.get('cache-control'), 'no-store');
      assert.equal(shown.headers.get('referrer-policy'), 'no-referrer');
      assert.match(shown.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    }
    assert.equal((await store.getApproval(held.id))?.status, 'pending');
    assert.equal(await settlesWithin(answer, 200), false, 'the call is still held');

    const approved = await page(links.approve, { t: tokenOf(links.approve), comment: 'expected invoice' });
    assert.equal(approved.status, 200, approved.html);
    assert.match(approved.html, /Approved\. The call to <b>create_charge<\/b> is forwarded to <b>payments<\/b>, once\./);
    assert.equal(textOf(await answer), 'called create_charge');

    const executed = await approvalOf(store, 'create_charge', args, 'executed');
    assert.equal(executed.decidedBy, 'link:ops-hook');
    assert.equal(executed.comment, 'expected invoice');
    const decided = await hookOf(held.id, 'approval.decided');
    assert.equal(decided.json.approval.decidedBy, 'link:ops-hook');
    assert.match(decided.json.text, /was approved by link:ops-hook: expected invoice/);

    // The link used again, and the deny link after it: the decision stands, and says who made it.
    const again = await page(links.approve, { t: tokenOf(links.approve) });
    assert.equal(again.status, 409);
    assert.match(again.html, /already decided: approved by <b>link:ops-hook<\/b>/);
    const late = await page(links.deny, { t: tokenOf(links.deny), reason: 'too late' });
    assert.equal(late.status, 409);
    assert.match(late.html, /already decided: approved by <b>link:ops-hook<\/b>/);
    assert.match((await page(links.deny)).html, /<h1>Already decided<\/h1>/);
    assert.equal((await store.getApproval(held.id))?.status, 'executed');
  });

  test('asks for a reason on the deny link, and the agent reads it in its isError result', async () => {
    const { client } = await agent();
    const args = { amount: 700, channel: 'link-deny' };
    const answer = client.callTool({ name: 'create_charge', arguments: args });
    const held = await approvalOf(store, 'create_charge', args);
    const { links } = (await hookOf(held.id)).json;
    const form = await page(links!.deny);
    assert.equal(form.status, 200);
    assert.match(form.html, /<textarea id="reason" name="reason"[^>]* required>/);

    const noReason = await page(links!.deny, { t: tokenOf(links!.deny), reason: '  ' });
    assert.equal(noReason.status, 400);
    assert.match(noReason.html, /A denial says why/);
    assert.equal((await store.getApproval(held.id))?.status, 'pending');

    const denied = await page(links!.deny, { t: tokenOf(links!.deny), reason: 'this customer was refunded already' });
    assert.equal(denied.status, 200);
    const result = (await answer) as { isError?: boolean };
    assert.equal(result.isError, true);
    assert.match(
      textOf(result),
      new RegExp(`^Blocked by PolicyLayer: link:ops-hook denied the call to 'create_charge' when asked to approve it\\. Reason: this customer was refunded already \\(approval ${held.id}, `),
    );
    const decided = await hookOf(held.id, 'approval.decided');
    assert.equal(decided.json.approval.status, 'denied');
  });

  test('refuses tampered, misused and expired links with 403, deciding nothing', async () => {
    const { client } = await agent();
    const args = { amount: 900, channel: 'link-tamper' };
    const answer = client.callTool({ name: 'create_charge', arguments: args });
    const held = await approvalOf(store, 'create_charge', args);
    const { links } = (await hookOf(held.id)).json;
    const token = tokenOf(links!.approve);
    const flipped = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    const base = `${gw.url}/approvals/${held.id}`;
    const other = '00000000-0000-4000-8000-000000000000';
    for (const [url, form] of [
      [`${base}/approve?t=${flipped}`, undefined],
      [`${base}/approve`, { t: flipped }],
      [`${base}/approve`, {}],
      [`${base}/deny`, { t: token, reason: 'the approve token on the deny link' }],
      [`${gw.url}/approvals/${other}/approve`, { t: token }],
    ] as const) {
      const refused = await page(url, form);
      assert.equal(refused.status, 403, url);
      assert.match(refused.html, /<h1>Invalid link<\/h1>/);
    }
    // A genuine link past its expiry (made with the gateway's own key, as it would have made it).
    const key = linkKeyFromStored(await store.sharedKey(LINK_KEY_NAME, 'unused-candidate-unused-candidate-0000', Date.now()));
    const expiredToken = new ApprovalLinks({ key, publicUrl: gw.url }).token(held.id, 'approve', 'ops-hook', Date.now() - 1_000);
    const expired = await page(`${base}/approve?t=${expiredToken}`, { t: expiredToken });
    assert.equal(expired.status, 403);
    assert.match(expired.html, /<h1>Link expired<\/h1>/);
    // The same key, not expired: the test made a link the gateway accepts, so the refusals above were the token's.
    const fresh = new ApprovalLinks({ key, publicUrl: gw.url }).token(held.id, 'approve', 'ops-hook', Date.now() + 60_000);
    assert.equal((await page(`${base}/approve?t=${fresh}`)).status, 200);

    assert.equal((await store.getApproval(held.id))?.status, 'pending');
    assert.equal(await settlesWithin(answer, 100), false);
    assert.equal((await page(links!.approve, { t: token })).status, 200);
    assert.equal(textOf(await answer), 'called create_charge');
  });

  test('keeps the call waiting for its other channels when a webhook receiver is down, logging it by name, never its secret', async () => {
    const { client } = await agent();
    const args = { amount: 1, channel: 'receiver-down' };
    const answer = client.callTool({ name: 'create_charge', arguments: args });
    const held = await approvalOf(store, 'create_charge', args);
    const failed = await eventually('a logged failure of down-hook', () =>
      log.lines.find((l) => l.webhook === 'down-hook' && l.approval === held.id && typeof l.msg === 'string' && l.msg.startsWith('approval webhook failed')),
    );
    assert.equal(failed.level, 40);
    assert.match(String(failed.problem), /ECONNREFUSED|fetch failed/);
    assert.ok(!log.text().includes(DOWN_SECRET) && !log.text().includes(HOOK_SECRET), 'no webhook secret is ever logged');
    assert.equal(await settlesWithin(answer, 200), false, 'the call still waits');
    // Another channel decides it: the admin API.
    await decide(held.id, 'approve');
    assert.equal(textOf(await answer), 'called create_charge');
  });

  test('posts nothing for a rule whose via leaves webhooks out', async () => {
    const { client } = await agent();
    const args = { page: 1 };
    const answer = client.callTool({ name: 'preview', arguments: args });
    const held = await approvalOf(store, 'preview', args);
    assert.deepEqual(held.via, ['dashboard']);
    await sleep(300);
    assert.equal(hooks.some((h) => h.json.approval.id === held.id), false);
    await store.decideApproval(held.id, { decision: 'denied', by: 'cli:ops', comment: 'not now', now: Date.now() });
    assert.equal(((await answer) as { isError?: boolean }).isError, true);
  });

  describe('MCP elicitation (approval.via: elicitation)', () => {
    /** A client that declares elicitation and answers the gateway's question with `answer`, recording what it was asked. */
    async function elicitingAgent(answer: (signal: AbortSignal) => ElicitResult | Promise<ElicitResult>) {
      const asked: Array<{ message: string; requestedSchema: unknown; mode?: unknown }> = [];
      const c = await agent({
        capabilities: { elicitation: {} },
        setup: (client) =>
          client.setRequestHandler(ElicitRequestSchema, async (req, extra) => {
            asked.push(req.params as never);
            return answer(extra.signal);
          }),
      });
      return { client: c.client, asked };
    }

    test('asks the calling user in their client, and their approval releases the call, recorded as elicitation:<grant>', async () => {
      const { client, asked } = await elicitingAgent(() => ({ action: 'accept', content: { approve: true, comment: 'yes, that repo' } }));
      const args = { repo: 'old-sandbox', channel: 'elicit-accept' };
      const result = await client.callTool({ name: 'delete_repo', arguments: args });
      assert.equal(textOf(result), 'called delete_repo');
      assert.equal(asked.length, 1);
      assert.match(
        asked[0]!.message,
        /^Allow 'alice-laptop' to call 'delete_repo' on 'payments' with \{"repo":"old-sandbox","channel":"elicit-accept"\}\? Reason: deleting a repository cannot be undone \(PolicyLayer approval [0-9a-f-]{36}; expires /,
      );
      assert.deepEqual((asked[0]!.requestedSchema as { required: string[] }).required, ['approve']);
      const executed = await approvalOf(store, 'delete_repo', args, 'executed');
      assert.equal(executed.decidedBy, 'elicitation:alice-laptop');
      assert.equal(executed.comment, 'yes, that repo');
      assert.deepEqual(executed.via, ['dashboard', 'elicitation']);
      assert.equal(hooks.some((h) => h.json.approval.id === executed.id), false, 'via: elicitation alone posts no webhook');
    });

    test('refuses the call when the user declines, with the reason in the agent’s isError result', async () => {
      const { client } = await elicitingAgent(() => ({ action: 'decline' }));
      const args = { repo: 'prod', channel: 'elicit-decline' };
      const result = (await client.callTool({ name: 'delete_repo', arguments: args })) as { isError?: boolean };
      assert.equal(result.isError, true);
      assert.match(textOf(result), /^Blocked by PolicyLayer: elicitation:alice-laptop denied the call to 'delete_repo' when asked to approve it\. Reason: declined by the user in their client \(approval /);
      const denied = await approvalOf(store, 'delete_repo', args, 'denied');
      assert.equal(denied.comment, 'declined by the user in their client');
    });

    test('refuses the call when the user accepts the form without approving, keeping their comment', async () => {
      const { client } = await elicitingAgent(() => ({ action: 'accept', content: { approve: false, comment: 'wrong repo' } }));
      const args = { repo: 'prod', channel: 'elicit-unticked' };
      const result = (await client.callTool({ name: 'delete_repo', arguments: args })) as { isError?: boolean };
      assert.equal(result.isError, true);
      assert.match(textOf(result), /Reason: declined by the user in their client: wrong repo/);
    });

    test('withdraws the question from the client when another channel decides first', async () => {
      let aborted: Promise<void> | undefined;
      const { client, asked } = await elicitingAgent(
        (signal) =>
          new Promise<ElicitResult>((resolve) => {
            aborted = new Promise((r) => signal.addEventListener('abort', () => r(), { once: true }));
            // The user never answers; the SDK ends the handler when the request is cancelled.
            signal.addEventListener('abort', () => resolve({ action: 'cancel' }), { once: true });
          }),
      );
      const args = { repo: 'scratch', channel: 'elicit-elsewhere' };
      const answer = client.callTool({ name: 'delete_repo', arguments: args });
      const held = await approvalOf(store, 'delete_repo', args);
      await eventually('the question in the client', () => (asked.length === 1 ? true : undefined));
      await store.decideApproval(held.id, { decision: 'approved', by: 'cli:ops', now: Date.now() });
      assert.equal(textOf(await answer), 'called delete_repo');
      await eventually('the client told the question is cancelled', async () => ((await settlesWithin(aborted!, 0)) ? true : undefined));
      assert.equal((await store.getApproval(held.id))?.decidedBy, 'cli:ops', 'the late cancel answer changed nothing');
    });

    test('lets a client without elicitation wait for the other channels', async () => {
      const { client } = await agent();
      const args = { repo: 'legacy', channel: 'elicit-none' };
      const answer = client.callTool({ name: 'delete_repo', arguments: args });
      const held = await approvalOf(store, 'delete_repo', args);
      assert.deepEqual(held.via, ['dashboard'], 'the record says the client could not be asked');
      assert.equal(await settlesWithin(answer, 300), false);
      await decide(held.id, 'approve', { comment: 'checked' });
      assert.equal(textOf(await answer), 'called delete_repo');
      assert.equal((await approvalOf(store, 'delete_repo', args, 'executed')).decidedBy, 'ops-alice');
    });
  });
});
