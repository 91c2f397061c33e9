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
    const { gw, db } = await gatewayWith('');
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

  test('an allowed call has a decision record when forwarded and an outcome record when answered', () => {
    const echo = calls('echo').filter((r) => r.decision === 'allow');
    assert.deepEqual(
      echo.map((r) => r.upstreamStatus),
      ['forwarded', 'ok'],
    );
    const [forwarded, answered] = echo as [AuditRecord, AuditRecord];
    assert.equal(forwarded.requestId, answered.requestId);
    assert.equal(answered.rule, '/tools/echo');
    assert.equal(answered.policyVersion, forwarded.policyVersion);
    assert.match(answered.policyVersion ?? '', /\S/);
    assert.equal(answered.session, sessionId);
    assert.equal(answered.server, 'fx');
    assert.equal(answered.grantId, null, 'authentication is off: no grant');
    assert.ok(answered.resultBytes! > 0 && answered.latencyMs! >= 0);
    assert.equal(forwarded.resultBytes, null);
  });

  test('arguments are recorded as their keys and the SHA-256 of their canonical form', () => {
    const [first] = calls('echo');
    assert.deepEqual(first!.arguments, { keys: ['text'], sha256: createHash('sha256').update(canonicalJson({ text: 'hello' })).digest('hex') });
  });

  test('a tool error and a refusal each say what happened', () => {
    assert.deepEqual(calls('fail').map((r) => r.upstreamStatus), ['forwarded', 'tool_error']);
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
    assert.deepEqual(sleeps.map((r) => r.decision), ['allow', 'allow', 'rate_limited']);
    assert.match(sleeps[2]!.rule ?? '', /^\/tools\/sleep\/limits\/0/);
  });

  test('arguments the tool’s schema refuses are recorded as invalid_arguments', () => {
    const invalid = calls('echo').filter((r) => r.decision === 'invalid_arguments');
    assert.equal(invalid.length, 1);
    assert.equal(invalid[0]!.rule, '(input schema)');
  });

  test('requests other than tools/call are recorded too', () => {
    assert.deepEqual(
      records.filter((r) => r.method === 'tools/list').map((r) => [r.decision, r.upstreamStatus]),
      [
        ['allow', 'forwarded'],
        ['allow', 'ok'],
      ],
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
    const crash = records.filter((r) => r.tool === 'crash');
    assert.deepEqual(
      crash.map((r) => [r.decision, r.rule, r.upstreamStatus]),
      [
        ['shadow_deny', '/tools/crash', 'forwarded'],
        ['shadow_deny', '/tools/crash', 'error'],
      ],
    );
    assert.match(crash[1]!.error ?? '', /\S/);
  });
});
