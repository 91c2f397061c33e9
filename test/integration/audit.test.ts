/**
 * The audit log, end to end: a real SDK client calls through the real gateway to a stdio server,
 * and the SQLite file the gateway wrote says, for every request, who asked what, what was decided
 * under which rule and policy version, and how the forwarded calls ended; its chain verifies.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AuditRecord } from '../../src/audit/event.js';
import { openSqliteAuditSink } from '../../src/audit/sinks/sqlite.js';
import { canonicalJson } from '../../src/util/canonical-json.js';
import { connectHttp, textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/processes.js';
import { raw, type RawResponse } from '../helpers/safety-helpers.js';
import { hashToken, newAdminToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';

const FIXTURE = path.join(REPO_ROOT, 'dist', 'test', 'fixtures', 'stdio-server.js');

const POLICY = {
  version: '1',
  default: 'deny',
  hide: ['pids'],
  tools: {
    echo: {},
    fail: {},
    sleep: { limits: [{ counter: 'sleeps', window: 'minute', max: 1, scope: 'grant' }] },
    stderr: { action: 'deny', reason: 'no writing to the log' },
    crash: { action: 'deny', reason: 'never', shadow: true },
  },
};

let tmp: TempDir;

before(() => {
  tmp = tempDir();
});
after(() => tmp.remove());

/** Every record the gateway wrote to `db`, in stream order, and whether the chain verifies. */
async function readLog(db: string): Promise<{ records: AuditRecord[]; verified: boolean }> {
  const sink = openSqliteAuditSink(db);
  try {
    const records: AuditRecord[] = [];
    for await (const r of sink.iterate()) records.push(r);
    return { records, verified: (await sink.verify()).ok };
  } finally {
    await sink.close();
  }
}

async function gatewayWith(audit: string) {
  const db = path.join(tmp.path, `audit-${Math.random().toString(36).slice(2)}.db`);
  const gw = await startTestGateway(
    `audit:\n  sinks: ${yamlValue([`sqlite:${db}`])}\n${audit}servers:\n  fx:\n    command: ${yamlValue([process.execPath, FIXTURE])}\n    policy: ${yamlValue(POLICY)}\n`,
  );
  return { gw, db };
}

describe('every decision and every forwarded call is in the audit log', () => {
  let records: AuditRecord[];
  let verified: boolean;
  let sessionId: string | undefined;

  before(async () => {
    // A flush interval longer than the test: no call runs long enough to get a separate decision
    // record, however slow the machine, so each forwarded call has exactly its outcome record.
    const { gw, db } = await gatewayWith('  flush_interval: 30s\n');
    const c = await connectHttp(gw.endpoint('fx'));
    try {
      sessionId = c.transport?.sessionId;
      assert.equal(textOf(await c.client.callTool({ name: 'echo', arguments: { text: 'hello' } })), 'hello');
      await c.client.callTool({ name: 'fail', arguments: {} });
      await c.client.callTool({ name: 'stderr', arguments: { text: 'x' } });
      await c.client.callTool({ name: 'pids', arguments: {} }).catch(() => undefined);
      await c.client.callTool({ name: 'sleep', arguments: { ms: 1 } });
      await c.client.callTool({ name: 'sleep', arguments: { ms: 1 } });
      await c.client.callTool({ name: 'echo', arguments: { text: 42 } });
      await c.client.callTool({ name: 'nope', arguments: {} });
      await c.client.listTools();
    } finally {
      await c.close();
      await gw.stop();
    }
    ({ records, verified } = await readLog(db));
  });

  const calls = (tool: string) => records.filter((r) => r.method === 'tools/call' && r.tool === tool);

  test('an allowed call answered within the flush interval has one record: its decision and outcome', () => {
    const echo = calls('echo').filter((r) => r.decision === 'allow');
    assert.deepEqual(
      echo.map((r) => r.upstreamStatus),
      ['ok'],
    );
    const [answered] = echo as [AuditRecord];
    assert.equal(answered.rule, '/tools/echo');
    assert.match(answered.policyVersion ?? '', /\S/);
    assert.equal(answered.session, sessionId);
    assert.equal(answered.server, 'fx');
    assert.equal(answered.grantId, null, 'authentication is off: no grant');
    assert.match(answered.requestId ?? '', /^\d+$/);
    assert.ok(answered.resultBytes! > 0 && answered.latencyMs! >= 0);
  });

  test('arguments are recorded as their keys and the SHA-256 of their canonical form', () => {
    const [first] = calls('echo');
    assert.deepEqual(first!.arguments, { keys: ['text'], sha256: createHash('sha256').update(canonicalJson({ text: 'hello' })).digest('hex') });
  });

  test('a tool error and a refusal each say what happened', () => {
    assert.deepEqual(calls('fail').map((r) => r.upstreamStatus), ['tool_error']);
    const denied = calls('stderr');
    assert.equal(denied.length, 1, 'a refused call has one record');
    assert.equal(denied[0]!.decision, 'deny');
    assert.equal(denied[0]!.rule, '/tools/stderr');
    assert.equal(denied[0]!.reason, 'no writing to the log');
    assert.equal(denied[0]!.upstreamStatus, null);
    assert.deepEqual(calls('pids').map((r) => r.decision), ['hidden']);
    assert.deepEqual(calls('nope').map((r) => [r.decision, r.rule]), [['deny', '(default deny)']]);
  });

  test('a call over its limit is recorded as rate_limited, naming the limit', () => {
    const sleeps = calls('sleep');
    assert.deepEqual(sleeps.map((r) => r.decision), ['allow', 'rate_limited']);
    assert.match(sleeps[1]!.rule ?? '', /^\/tools\/sleep\/limits\/0/);
  });

  test('arguments the tool’s schema refuses are recorded as invalid_arguments', () => {
    const invalid = calls('echo').filter((r) => r.decision === 'invalid_arguments');
    assert.equal(invalid.length, 1);
    assert.equal(invalid[0]!.rule, '(input schema)');
  });

  test('requests other than tools/call are recorded too', () => {
    assert.deepEqual(
      records.filter((r) => r.method === 'tools/list').map((r) => [r.decision, r.upstreamStatus]),
      [['allow', 'ok']],
    );
  });

  test('the records form one chain that verifies', () => {
    assert.equal(verified, true);
    assert.deepEqual(
      records.map((r) => r.seq),
      records.map((_, i) => i + 1),
    );
  });
});

describe('a call still running after the flush interval', () => {
  test('is recorded as forwarded then, and its outcome when it ends', async () => {
    const { gw, db } = await gatewayWith('  flush_interval: 20ms\n');
    const c = await connectHttp(gw.endpoint('fx'));
    try {
      await c.client.callTool({ name: 'sleep', arguments: { ms: 300 } });
    } finally {
      await c.close();
      await gw.stop();
    }
    const { records } = await readLog(db);
    const sleep = records.filter((r) => r.tool === 'sleep');
    assert.deepEqual(
      sleep.map((r) => r.upstreamStatus),
      ['forwarded', 'ok'],
    );
    assert.equal(sleep[0]!.requestId, sleep[1]!.requestId);
    // The call sleeps 300 ms upstream: its decision record was made while it slept, long before its outcome.
    assert.ok(sleep[1]!.latencyMs! - sleep[0]!.latencyMs! >= 200, `the decision record was written while the call ran: ${sleep[0]!.latencyMs} ms, then ${sleep[1]!.latencyMs} ms`);
  });

  test('in strict mode, every forwarded call has its decision record before it is forwarded', async () => {
    const { gw, db } = await gatewayWith('  durability: strict\n');
    const c = await connectHttp(gw.endpoint('fx'));
    try {
      await c.client.callTool({ name: 'echo', arguments: { text: 'x' } });
    } finally {
      await c.close();
      await gw.stop();
    }
    const { records } = await readLog(db);
    assert.deepEqual(
      records.filter((r) => r.tool === 'echo').map((r) => r.upstreamStatus),
      ['forwarded', 'ok'],
    );
  });
});

describe('arguments are recorded as configured', () => {
  const SECRET_ARGS = { text: 'token sk_live_abcdefghijklmnop', password: 'hunter22' };

  async function echoedArguments(mode: string): Promise<unknown> {
    const { gw, db } = await gatewayWith(`  arguments: ${mode}\n`);
    const c = await connectHttp(gw.endpoint('fx'));
    try {
      await c.client.callTool({ name: 'echo', arguments: SECRET_ARGS });
    } finally {
      await c.close();
      await gw.stop();
    }
    const { records } = await readLog(db);
    return records.find((r) => r.tool === 'echo')?.arguments;
  }

  test('full keeps them as sent', async () => {
    assert.deepEqual(await echoedArguments('full'), SECRET_ARGS);
  });

  test('redacted masks secret-named values and credential-shaped strings', async () => {
    assert.deepEqual(await echoedArguments('redacted'), { text: 'token [REDACTED]', password: '[REDACTED]' });
  });
});

describe('shadow mode', () => {
  test('a call the policy would have refused is recorded as shadow_deny, forwarded and answered', async () => {
    const { gw, db } = await gatewayWith('');
    const c = await connectHttp(gw.endpoint('fx'));
    try {
      // `crash` is shadowed: it goes through (and the fixture exits, which fails the call).
      await c.client.callTool({ name: 'crash', arguments: {} }).catch(() => undefined);
    } finally {
      await c.close();
      await gw.stop();
    }
    const { records } = await readLog(db);
    // Noticing the crash may take longer than the flush interval: then a forwarded record comes first.
    const crash = records.filter((r) => r.tool === 'crash' && r.upstreamStatus !== 'forwarded');
    assert.deepEqual(
      crash.map((r) => [r.decision, r.rule, r.upstreamStatus]),
      [['shadow_deny', '/tools/crash', 'error']],
    );
    assert.match(crash[0]!.error ?? '', /\S/);
  });
});

describe('the admin API reads the audit log', () => {
  let gw: Awaited<ReturnType<typeof startTestGateway>>;
  let admin: string;
  let viewer: string;
  let grantId: string;
  const api = (p: string, token: string, method = 'GET') =>
    raw(`${gw.running.adminUrl}${p}`, { method, headers: { authorization: `Bearer ${token}` } });

  let dir: TempDir;
  after(async () => {
    await gw?.stop();
    dir?.remove();
  });

  before(async () => {
    dir = tempDir();
    gw = await startTestGateway(
      `store: sqlite:./control.db
auth: { required: true }
audit:
  sinks: ["sqlite:./audit.db"]
servers:
  fx:
    command: ${yamlValue([process.execPath, FIXTURE])}
    policy: ${yamlValue(POLICY)}
`,
      { dir: dir.path },
    );
    const store = await openControlStore(`sqlite:${path.join(dir.path, 'control.db')}`);
    admin = newAdminToken();
    viewer = newAdminToken();
    await store.createAdminCredential({ label: 'ops', role: 'admin' }, hashToken(admin), Date.now());
    await store.createAdminCredential({ label: 'auditor', role: 'viewer' }, hashToken(viewer), Date.now());
    await store.close();
    const created = await raw(`${gw.running.adminUrl}/grants`, {
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ label: 'ci-agent', servers: ['fx'] }),
    });
    assert.equal(created.status, 201, created.text);
    grantId = created.json.grant.id;
    const c = await connectHttp(gw.endpoint('fx'), { headers: { authorization: `Bearer ${created.json.token}` } });
    try {
      await c.client.callTool({ name: 'echo', arguments: { text: 'a' } });
      await c.client.callTool({ name: 'echo', arguments: { text: 'c' } });
      await c.client.callTool({ name: 'stderr', arguments: { text: 'b' } });
    } finally {
      await c.close();
    }
  });

  test('records are found by grant label, tool and decision, newest first, with the grant named', async () => {
    // Records reach the sink within a flush interval of the call; a call slower than that also has
    // a `forwarded` record, which this test passes over.
    // The three calls' records may reach the sink in different batches: wait for all of them.
    const outcomes = (p: RawResponse | undefined) => ((p?.json?.records ?? []) as AuditRecord[]).filter((r) => r.upstreamStatus !== 'forwarded');
    let page: RawResponse | undefined;
    let denied: RawResponse | undefined;
    for (let i = 0; i < 100 && (outcomes(page).length !== 2 || outcomes(denied).length === 0); i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 20));
      page = await api('/audit?grant=ci-agent&tool=echo', viewer);
      denied = await api('/audit?decision=deny', viewer);
    }
    const records = outcomes(page);
    assert.deepEqual(
      records.map((r) => [r.upstreamStatus, r.grantId, r.grantLabel]),
      [
        ['ok', grantId, 'ci-agent'],
        ['ok', grantId, 'ci-agent'],
      ],
    );
    assert.deepEqual(
      outcomes(denied).map((r) => r.tool),
      ['stderr'],
    );
  });

  test('pages follow one another by cursor without repeats', async () => {
    const first = await api('/audit?order=oldest&limit=2', viewer);
    assert.equal(first.json.records.length, 2);
    const second = await api(`/audit?order=oldest&limit=2&cursor=${encodeURIComponent(first.json.next)}`, viewer);
    const seqs = [...first.json.records, ...second.json.records].map((r: AuditRecord) => r.seq);
    assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => a - b));
  });

  test('a filter it does not know, a decision that does not exist or a foreign cursor is a 400 naming it', async () => {
    for (const [q, word] of [
      ['/audit?colour=red', 'colour'],
      ['/audit?decision=maybe', 'decision'],
      ['/audit?cursor=nonsense', 'cursor'],
      ['/audit?limit=0', 'limit'],
      ['/audit?since=yesterday', 'since'],
    ] as const) {
      const r = await api(q, viewer);
      assert.equal(r.status, 400, q);
      assert.match(r.json.error.message, new RegExp(word), q);
    }
  });

  test('stats say what each sink has written; verification is for admins and finds the chain intact', async () => {
    const stats = await api('/audit/stats', viewer);
    assert.equal(stats.status, 200);
    assert.equal(stats.json.sinks[0].state, 'up');
    assert.ok(stats.json.sinks[0].written >= 3);
    const metrics = await raw(`${gw.url}/metrics`, { method: 'GET' });
    assert.match(metrics.text, /policylayer_audit_records_written\{sink="sqlite:[^"]+audit\.db"\} [1-9]/);
    assert.match(metrics.text, /policylayer_audit_records_dropped\{sink="[^"]+"\} 0/);
    assert.equal((await api('/audit/verify', viewer, 'POST')).status, 403);
    const verified = await api('/audit/verify', admin, 'POST');
    assert.equal(verified.status, 200, verified.text);
    assert.equal(verified.json.ok, true);
  });
});
