import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { ApprovalRecord } from '../store/store.js';
import { ApprovalLinks, linkKeyFromSecret } from './links.js';
import { ApprovalWebhooks, decidedBody, requestedBody, signWebhook, verifyWebhookSignature, type WebhookLog, type WebhookTarget } from './webhook.js';

const T0 = Date.UTC(2026, 10, 22, 10, 4, 5);
const SECRET = 'whsec-0123456789abcdef0123456789abcdef';

function approval(fields: Partial<ApprovalRecord> = {}): ApprovalRecord {
  return {
    id: '5f0c9e2a-1111-4222-8333-444455556666',
    status: 'pending',
    grantId: 'grant-1',
    grantLabel: 'alice-laptop',
    server: 'payments',
    tool: 'create_charge',
    arguments: '{"amount":500,"api_key":"sk_live_abcdefghijklmnop","note":"<b>&</b>"}',
    argumentsDigest: 'a'.repeat(64),
    policyVersion: 'sha256:0123456789abcdef',
    rule: '/tools/create_charge',
    reason: 'charges need a person',
    via: ['dashboard', 'webhook'],
    requestedAt: T0,
    expiresAt: T0 + 600_000,
    decidedAt: null,
    decidedBy: null,
    comment: null,
    executedAt: null,
    heldBy: 'replica-a',
    ...fields,
  };
}

const links = new ApprovalLinks({ key: linkKeyFromSecret('link secret, long enough to be a key of its own'), publicUrl: 'https://gw.example.com', clock: () => T0 });

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

/** A webhook receiver on 127.0.0.1:0 answering with the statuses in `script` (then 200), recording what it got. */
class Receiver {
  server: Server;
  got: Received[] = [];
  script: Array<number | 'hang'> = [];
  url = '';

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.got.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() });
        const next = this.script.shift() ?? 200;
        if (next === 'hang') return;
        res.writeHead(next).end('ok');
      });
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hooks/T000/B000/XXXXSECRETPATH`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

function recordingLog(): WebhookLog & { lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  return {
    lines,
    info: (obj, msg) => lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
  };
}

describe('approval webhooks', () => {
  const receiver = new Receiver();
  let target: WebhookTarget;
  before(() => receiver.start());
  after(() => receiver.close());
  beforeEach(() => {
    receiver.got = [];
    receiver.script = [];
    target = { name: 'slack-ops', url: receiver.url, secret: SECRET, headers: { 'x-receiver-key': 'k-123' } };
  });

  function hooks(log: WebhookLog, opts: { mode?: 'keys' | 'redacted'; targets?: WebhookTarget[]; timeoutMs?: number } = {}) {
    return new ApprovalWebhooks({
      targets: opts.targets ?? [target],
      links,
      argumentsMode: opts.mode ?? 'redacted',
      log,
      retryDelaysMs: [20, 40],
      timeoutMs: opts.timeoutMs ?? 2_000,
    });
  }

  it('POSTs approval.requested, signed over "<timestamp>.<body>" with the webhook secret, with the call, its links and a Slack text', async () => {
    const w = hooks(recordingLog());
    w.requested(approval());
    await w.idle();
    assert.equal(receiver.got.length, 1);
    const { headers, body } = receiver.got[0]!;
    assert.equal(headers['content-type'], 'application/json');
    assert.equal(headers['x-receiver-key'], 'k-123', 'the configured headers are sent');
    assert.equal(headers['x-policylayer-event'], 'approval.requested');
    assert.match(String(headers['x-policylayer-delivery']), /^[0-9a-f-]{36}$/);
    assert.equal(
      verifyWebhookSignature({ secret: SECRET, body, timestamp: headers['x-policylayer-timestamp'] as string, signature: headers['x-policylayer-signature'] as string }),
      true,
    );
    assert.equal(headers['x-policylayer-signature'], signWebhook(SECRET, Number(headers['x-policylayer-timestamp']), body));

    const sent = JSON.parse(body) as { event: string; approval: Record<string, unknown>; links: Record<string, string>; text: string };
    assert.equal(sent.event, 'approval.requested');
    assert.deepEqual(sent.approval, {
      id: '5f0c9e2a-1111-4222-8333-444455556666',
      status: 'pending',
      grant: 'alice-laptop',
      server: 'payments',
      tool: 'create_charge',
      arguments: { amount: 500, api_key: '[REDACTED]', note: '<b>&</b>' },
      argumentsMode: 'redacted',
      argumentsDigest: 'a'.repeat(64),
      reason: 'charges need a person',
      rule: '/tools/create_charge',
      policyVersion: 'sha256:0123456789abcdef',
      via: ['dashboard', 'webhook'],
      requestedAt: '2026-11-22T10:04:05.000Z',
      expiresAt: '2026-11-22T10:14:05.000Z',
      decidedAt: null,
      decidedBy: null,
      comment: null,
    });
    assert.deepEqual(sent.links, { ...links.linksFor(approval(), 'slack-ops'), expiresAt: '2026-11-22T10:14:05.000Z' });
    assert.doesNotMatch(body, /sk_live_/, 'never a secret');
    // Slack mrkdwn: bold, code, a quote, <url|label> links, and & < > escaped.
    assert.match(sent.text, /^\*PolicyLayer: approval needed\* — \*alice-laptop\* wants to call `create_charge` on `payments`\n/);
    assert.match(sent.text, /\n>Reason: charges need a person\n/);
    assert.match(sent.text, /"note":"&lt;b&gt;&amp;&lt;\/b&gt;"/);
    assert.ok(sent.text.includes(`<${sent.links.approve}|Approve> · <${sent.links.deny}|Deny>`));
  });

  it('shows only the argument names and their SHA-256 in keys mode', async () => {
    const w = hooks(recordingLog(), { mode: 'keys' });
    w.requested(approval());
    await w.idle();
    const sent = JSON.parse(receiver.got[0]!.body) as { approval: { arguments: unknown }; text: string };
    assert.deepEqual((sent.approval.arguments as { keys: string[] }).keys, ['amount', 'api_key', 'note']);
    assert.match((sent.approval.arguments as { sha256: string }).sha256, /^[0-9a-f]{64}$/);
    assert.doesNotMatch(receiver.got[0]!.body, /500/);
    assert.match(sent.text, /Arguments \(names and SHA-256 only\)/);
  });

  it('POSTs approval.decided, saying who decided and why, for every way a wait ends', () => {
    const base = { decidedAt: T0 + 5_000 };
    const text = (a: ApprovalRecord) => (decidedBody(a, 'redacted') as { text: string }).text;
    assert.match(text(approval({ ...base, status: 'approved', decidedBy: 'link:slack-ops', comment: 'ok' })), /was approved by link:slack-ops: ok \(approval /);
    assert.match(text(approval({ ...base, status: 'denied', decidedBy: 'ops-alice', comment: 'no' })), /was denied by ops-alice: no/);
    assert.match(text(approval({ ...base, status: 'expired' })), /was expired: no one decided in time/);
    assert.match(text(approval({ ...base, status: 'cancelled', comment: 'the client cancelled the call' })), /withdrawn before anyone decided \(the client cancelled the call\)/);
    const body = decidedBody(approval({ ...base, status: 'denied', decidedBy: 'ops-alice', comment: 'no' }), 'redacted');
    assert.equal(body.event, 'approval.decided');
    assert.equal((body.approval as { decidedBy: string }).decidedBy, 'ops-alice');
    assert.equal('links' in body, false, 'a decided approval has no links');
  });

  it('retries a receiver that answers 503, with the same delivery id and a fresh signature, and logs the recovery', async () => {
    receiver.script = [503, 503];
    const log = recordingLog();
    const w = hooks(log);
    w.requested(approval());
    await w.idle();
    assert.equal(receiver.got.length, 3);
    assert.equal(new Set(receiver.got.map((g) => g.headers['x-policylayer-delivery'])).size, 1);
    for (const g of receiver.got) {
      assert.ok(verifyWebhookSignature({ secret: SECRET, body: g.body, timestamp: g.headers['x-policylayer-timestamp'] as string, signature: g.headers['x-policylayer-signature'] as string }));
    }
    assert.deepEqual(log.lines.map((l) => [l.level, l.msg]), [
      ['warn', 'approval webhook failed; retrying'],
      ['warn', 'approval webhook failed; retrying'],
      ['info', 'approval webhook delivered after retrying'],
    ]);
    assert.equal(log.lines[0]!.obj.problem, 'the receiver answered HTTP 503');
  });

  it('does not retry a 4xx other than 429: asking again would not change the answer', async () => {
    receiver.script = [400];
    const log = recordingLog();
    const w = hooks(log);
    w.requested(approval());
    await w.idle();
    assert.equal(receiver.got.length, 1);
    assert.deepEqual(log.lines.map((l) => l.msg), ['approval webhook failed: the approval waits for its other channels']);
  });

  it('gives up on a receiver that is down after its retries, logging each failure by name and host, never the URL or the secret', async () => {
    const down = new Receiver();
    await down.start();
    const url = down.url;
    await down.close();
    const log = recordingLog();
    const w = hooks(log, { targets: [{ name: 'pager', url, secret: SECRET }] });
    const started = Date.now();
    w.requested(approval());
    assert.ok(Date.now() - started < 50, 'requested() returns at once: delivery is off the call path');
    await w.idle();
    assert.equal(log.lines.length, 3, 'one try and two retries');
    assert.equal(log.lines[2]!.msg, 'approval webhook failed: the approval waits for its other channels');
    assert.equal(log.lines[2]!.obj.webhook, 'pager');
    assert.equal(log.lines[2]!.obj.host, new URL(url).host);
    assert.match(String(log.lines[2]!.obj.problem), /ECONNREFUSED|fetch failed/);
    const all = JSON.stringify(log.lines);
    assert.ok(!all.includes(SECRET) && !all.includes('XXXXSECRETPATH'), all);
  });

  it('times out a receiver that does not answer, and retries it', async () => {
    receiver.script = ['hang'];
    const log = recordingLog();
    const w = hooks(log, { timeoutMs: 150 });
    w.requested(approval());
    await w.idle();
    assert.equal(receiver.got.length, 2);
    assert.equal(log.lines[0]!.obj.problem, 'no answer within 150 ms');
  });

  it('posts to every webhook, each with links naming it', async () => {
    const w = hooks(recordingLog(), { targets: [target, { ...target, name: 'teams' }] });
    w.requested(approval());
    await w.idle();
    const channels = receiver.got.map((g) => (JSON.parse(g.body) as { links: { approve: string } }).links.approve).map((u) => links.verify(approval().id, 'approve', new URL(u).searchParams.get('t')!));
    assert.deepEqual(channels.map((c) => (c.ok ? c.channel : c.why)).sort(), ['slack-ops', 'teams']);
  });

  it('stops retrying once closed', async () => {
    receiver.script = [503, 503, 503];
    const w = new ApprovalWebhooks({ targets: [target], links, argumentsMode: 'redacted', log: recordingLog(), retryDelaysMs: [5_000, 5_000] });
    w.requested(approval());
    while (receiver.got.length === 0) await new Promise((r) => setTimeout(r, 5));
    const started = Date.now();
    await w.close(50);
    await w.idle();
    assert.ok(Date.now() - started < 1_000);
    assert.equal(receiver.got.length, 1);
  });
});

describe('the webhook signature check a receiver runs', () => {
  const body = JSON.stringify(requestedBody(approval(), 'redacted', links.linksFor(approval(), 'x')));
  const ts = Math.floor(T0 / 1000);
  const sig = signWebhook(SECRET, ts, body);
  const check = (over: Partial<Parameters<typeof verifyWebhookSignature>[0]>) =>
    verifyWebhookSignature({ secret: SECRET, body, timestamp: String(ts), signature: sig, nowMs: T0 + 1_000, ...over });

  it('passes the body as sent, within the replay window', () => {
    assert.match(sig, /^sha256=[0-9a-f]{64}$/);
    assert.equal(check({}), true);
    assert.equal(check({ nowMs: T0 + 299_000 }), true);
  });

  it('fails a changed body, another secret, a changed timestamp, a missing header, or a timestamp outside the window', () => {
    assert.equal(check({ body: body.replace('500', '5000') }), false);
    assert.equal(check({ secret: 'another secret of some length' }), false);
    assert.equal(check({ timestamp: String(ts + 1) }), false);
    assert.equal(check({ signature: undefined }), false);
    assert.equal(check({ timestamp: undefined }), false);
    assert.equal(check({ nowMs: T0 + 301_000 }), false);
    assert.equal(check({ nowMs: T0 + 301_000, windowSeconds: 600 }), true);
  });
});
