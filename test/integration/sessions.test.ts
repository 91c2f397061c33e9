/** Session lifetime: idle sessions expire, busy ones do not, and an expired id answers 404. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/processes.js';
import { answerOf, openSession, raw, sessionHeaders } from '../helpers/safety-helpers.js';

const FIXTURE = [process.execPath, path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js')];

function call(endpoint: string, sid: string, id: number, name: string, args: Record<string, unknown>) {
  return raw(endpoint, {
    headers: sessionHeaders(sid),
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } }),
  });
}

describe('sessions with session_idle_timeout: 1s', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway(`
session_idle_timeout: 1s
servers:
  fixture:
    command: ${yamlValue(FIXTURE)}
    policy: { version: "1", default: allow }
`);
  });
  after(() => gw.stop());

  test('closes a session left idle past the timeout, and its id then answers 404', async () => {
    const sid = await openSession(gw.endpoint('fixture'));
    assert.equal(gw.gateway.sessions.has(sid), true);
    await new Promise((r) => setTimeout(r, 2600));
    assert.equal(gw.gateway.sessions.has(sid), false);
    const res = await call(gw.endpoint('fixture'), sid, 2, 'echo', { text: 'late' });
    assert.equal(res.status, 404);
    assert.equal(res.json.error.data.code, 'PL_UNKNOWN_SESSION');
  });

  test('keeps a session whose call is still in flight past the timeout, and answers that call', async () => {
    const sid = await openSession(gw.endpoint('fixture'));
    const res = await call(gw.endpoint('fixture'), sid, 2, 'sleep', { ms: 2600 });
    assert.equal(res.status, 200);
    assert.equal(answerOf(res).result.isError ?? false, false);
    assert.equal(gw.gateway.sessions.has(sid), true);
  });

  test('keeps a session that is used more often than the timeout', async () => {
    const sid = await openSession(gw.endpoint('fixture'));
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const res = await call(gw.endpoint('fixture'), sid, 10 + i, 'echo', { text: String(i) });
      assert.equal(res.status, 200);
    }
    assert.equal(gw.gateway.sessions.has(sid), true);
  });
});
