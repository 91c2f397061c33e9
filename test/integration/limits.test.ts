/**
 * Limits end to end: a real SDK client, the real gateway, a real stdio server standing in for the
 * seed servers' tools. The seed rules hold, a refused call never reaches the server and says when
 * to retry, failed calls give their counts back, and quotas count the amount.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectHttp, textOf, type V1Connection, callTool as call, assertRateLimited, type CallResult } from '../helpers/clients.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/processes.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const fixture = (...tools: string[]) => [process.execPath, FIXTURE, '--tools', tools.join(',')];
const example = (name: string) => JSON.parse(readFileSync(path.join(REPO_ROOT, 'examples', name, 'policy.json'), 'utf8')) as unknown;


async function callMany(c: V1Connection, n: number, name: string, args: Record<string, unknown> = {}): Promise<CallResult[]> {
  const out: CallResult[] = [];
  for (let i = 0; i < n; i++) out.push(await call(c, name, args));
  return out;
}

const admitted = (rs: CallResult[]) => rs.filter((r) => !r.isError).length;

describe('the seed rules, through the gateway', () => {
  let gw: TestGateway;
  const open: V1Connection[] = [];
  before(async () => {
    gw = await startTestGateway(`
servers:
  piloty:
    command: ${yamlValue(fixture('create_session'))}
    policy: ${yamlValue(example('piloty'))}
  poolparty:
    command: ${yamlValue(fixture('create_join_session', 'submit_media_block', 'get_balance'))}
    policy: ${yamlValue(example('poolparty'))}
`);
  });
  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await gw.stop();
  });
  const connect = async (server: string) => {
    const c = await connectHttp(gw.endpoint(server));
    open.push(c);
    return c;
  };

  test('admits 10 create_session calls in a minute and refuses the 11th, saying which limit and when to retry', async () => {
    const c = await connect('piloty');
    const results = await callMany(c, 10, 'create_session');
    assert.deepEqual(results.map((r) => r.text), Array(10).fill('called create_session'));
    assertRateLimited(await call(c, 'create_session'), 'create_session_rate', 10, '/tools/create_session/limits/0');
  });

  test('counts create_session per grant, so a second session of the same grant is refused too', async () => {
    const c = await connect('piloty');
    const r = await call(c, 'create_session');
    assert.equal(r.isError, true);
    assert.match(r.text, /create_session_rate/);
  });

  test('counts allowed and limited calls in the Prometheus metrics at /metrics', async () => {
    const res = await fetch(`${gw.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await res.text();
    assert.match(text, /^policylayer_tool_calls_total\{server="piloty",outcome="allowed"\} 10$/m);
    assert.match(text, /^policylayer_tool_calls_total\{server="piloty",outcome="limited"\} 2$/m);
    // A page on another site cannot read them through the user's browser.
    const foreign = await fetch(`${gw.url}/metrics`, { headers: { origin: 'https://evil.example' } });
    assert.equal(foreign.status, 403);
  });

  test('admits 30 create_join_session and 30 submit_media_block calls in a minute, each on its own counter', async () => {
    const c = await connect('poolparty');
    assert.equal(admitted(await callMany(c, 31, 'create_join_session')), 30);
    assert.equal(admitted(await callMany(c, 31, 'submit_media_block')), 30);
    // Not listed under default deny: refused by the policy, not by a limit.
    const other = await call(c, 'get_balance');
    assert.equal(other.isError, true);
    assert.match(other.text, /default: deny/);
  });
});

describe('limits of every kind, through the gateway', () => {
  let gw: TestGateway;
  const open: V1Connection[] = [];
  const policy = {
    version: '1',
    default: 'allow',
    tools: {
      charge: {
        limits: [{ counter: 'spend', window: 'day', max: 100, scope: 'grant', increment_from: 'args.amount' }],
        validate_arguments: false,
      },
      fail: { limits: [{ counter: 'fails', window: 'minute', max: 2, scope: 'session' }] },
      crash: { limits: [{ counter: 'crashes', window: 'minute', max: 1, scope: 'session' }] },
      sleep: { limits: [{ counter: 'sleeps', window: 'minute', max: 1, scope: 'session' }] },
      slow: { limits: [{ counter: 'slow', max_in_flight: 2, scope: 'server' }] },
      post: { limits: [{ counter: 'per_channel', window: 'minute', max: 2, scope: 'args.channel' }] },
      echo: { shadow: true, limits: [{ counter: 'echoes', window: 'minute', max: 1, scope: 'session' }] },
    },
    all_tools: { limits: [{ counter: 'calls', window: 'minute', max: 1000, scope: 'grant' }] },
  };
  before(async () => {
    gw = await startTestGateway(`
servers:
  s:
    command: ${yamlValue(fixture('charge', 'slow', 'post'))}
    policy: ${yamlValue(policy)}
`);
  });
  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await gw.stop();
  });
  const connect = async () => {
    const c = await connectHttp(gw.endpoint('s'));
    open.push(c);
    return c;
  };

  test('counts a quota by the amount and refuses the call that would take it over', async () => {
    const c = await connect();
    assert.equal((await call(c, 'charge', { amount: 60 })).isError, false);
    assert.equal((await call(c, 'charge', { amount: 40 })).isError, false);
    const over = await call(c, 'charge', { amount: 1 });
    assert.equal(over.isError, true);
    assert.match(over.text, /quota 'spend' allows at most 100 of args\.amount per day per agent grant/);
    assert.match(over.text, /this call's 1 does not fit/);
  });

  test('refuses a quota call whose amount is missing or not a number, and counts nothing for it', async () => {
    const c = await connect();
    const missing = await call(c, 'charge', {});
    assert.equal(missing.isError, true);
    assert.match(missing.text, /args\.amount is missing; the quota 'spend' counts it/);
    const text = await call(c, 'charge', { amount: 'lots' });
    assert.equal(text.isError, true);
    assert.match(text.text, /args\.amount is the string "lots", not a number/);
    const negative = await call(c, 'charge', { amount: -5 });
    assert.equal(negative.isError, true);
    assert.match(negative.text, /not a number of at least 0/);
  });

  test('gives the count back when the tool answers with isError, so failures never use up a limit', async () => {
    const c = await connect();
    const results = await callMany(c, 4, 'fail');
    assert.deepEqual(results.map((r) => r.text), Array(4).fill('failed on purpose'));
  });

  test('gives the count back when the server crashes during the call', async () => {
    const c = await connect();
    await assert.rejects(c.client.callTool({ name: 'crash', arguments: {} }));
    // The server restarts; the crashed call did not use the session's one crash, so the next one
    // reaches the server (and crashes it again) instead of being refused by the limit.
    let outcome = '';
    for (let i = 0; i < 50; i++) {
      outcome = await c.client.callTool({ name: 'crash', arguments: {} }).then(textOf, (err: unknown) => String(err));
      if (!/unavailable|not running/i.test(outcome)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.doesNotMatch(outcome, /rate limit 'crashes'/);
    assert.match(outcome, /crash|exit/i);
  });

  test('keeps the count of a call the client cancelled: the server may have acted, and an agent must not undo its usage', async () => {
    const c = await connect();
    const ac = new AbortController();
    const cancelled = c.client.callTool({ name: 'sleep', arguments: { ms: 2000 } }, undefined, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 300));
    ac.abort();
    await assert.rejects(cancelled);
    const next = await call(c, 'sleep', { ms: 1 });
    assert.equal(next.isError, true);
    assert.match(next.text, /rate limit 'sleeps' allows at most 1 call per minute per session/);
  });

  test('admits at most max_in_flight concurrent calls and frees the slot when a call ends', async () => {
    const a = await connect();
    const b = await connect();
    const slowCalls = [call(a, 'slow', { ms: 600 }), call(b, 'slow', { ms: 600 })];
    await new Promise((r) => setTimeout(r, 200));
    const third = await call(a, 'slow', { ms: 1 });
    assert.equal(third.isError, true);
    assert.match(third.text, /concurrency limit reached: at most 2 of these calls in flight at once for all callers of this server/);
    const done = await Promise.all(slowCalls);
    assert.deepEqual(done.map((r) => r.isError), [false, false]);
    assert.equal((await call(a, 'slow', { ms: 1 })).isError, false);
  });

  test('counts per argument value: each channel has its own two calls a minute', async () => {
    const c = await connect();
    assert.equal(admitted(await callMany(c, 3, 'post', { channel: 'alpha' })), 2);
    assert.equal(admitted(await callMany(c, 3, 'post', { channel: 'beta' })), 2);
  });

  test('lets a call over a shadowed limit through, uncounted', async () => {
    const c = await connect();
    const results = await callMany(c, 3, 'echo', { text: 'hi' });
    assert.deepEqual(results.map((r) => r.text), ['hi', 'hi', 'hi']);
  });
});

describe('a counter store that cannot be reached', () => {
  const policy = { version: '1', default: 'allow', tools: { limited: { limits: [{ counter: 'c', window: 'minute', max: 5, scope: 'grant' }] } } };
  // Port 1 on loopback: nothing listens there, so every connection is refused at once.
  const DEAD = 'redis://127.0.0.1:1';

  for (const onStoreError of ['deny', 'allow'] as const) {
    test(`${onStoreError === 'deny' ? 'refuses' : 'admits'} calls with limits under on_store_error: ${onStoreError}, and leaves calls without limits alone`, async () => {
      const gw = await startTestGateway(`
counters: { url: ${DEAD}, on_store_error: ${onStoreError} }
servers:
  s:
    command: ${yamlValue(fixture('limited', 'free'))}
    policy: ${yamlValue(policy)}
`);
      const c = await connectHttp(gw.endpoint('s'));
      try {
        const limited = await call(c, 'limited');
        if (onStoreError === 'deny') {
          assert.equal(limited.isError, true);
          assert.match(limited.text, /the rate-limit store is unavailable, and this call has limits \(on_store_error: deny\)/);
        } else {
          assert.equal(limited.text, 'called limited');
        }
        assert.equal((await call(c, 'free')).text, 'called free');
        // The failure is a metric too, so an operator's alert does not depend on reading logs.
        const metrics = await (await fetch(`${gw.url}/metrics`)).text();
        assert.match(metrics, /^policylayer_counter_store_errors_total\{store="redis",during="reserve"\} [1-9]/m);
      } finally {
        await c.close();
        await gw.stop();
      }
    });
  }
});
