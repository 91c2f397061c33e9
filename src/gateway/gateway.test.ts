import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicy } from '../policy/index.js';
import { silentLogger } from '../telemetry/logger.js';
import type { CallHandlers, Upstream, UpstreamSession } from '../transport/upstream/types.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../util/jsonrpc.js';
import { APPROVALS_UNAVAILABLE, Gateway, Session, type GatewayOptions } from './gateway.js';
import { ApprovalService } from '../approvals/service.js';
import { openSqliteStore } from '../store/sqlite.js';
import { Limiter } from '../limits/limiter.js';
import { createMemoryStore } from '../limits/store/memory.js';

/** An upstream session that records what it is sent and answers every call with an empty result. */
function recordingSession() {
  const sent: Array<{ req: JsonRpcRequest; raw: string | undefined }> = [];
  const session: UpstreamSession = {
    initializeResult: {},
    call(req, raw, handlers) {
      sent.push({ req, raw });
      handlers.onResponse({ jsonrpc: '2.0', id: req.id, result: { content: [] } }, undefined);
    },
    send() {},
    listen: async () => undefined,
    close: async () => {},
  };
  return { session, sent };
}

function setup(policyText: string, opts: Partial<GatewayOptions> = {}) {
  const gateway = new Gateway({ logger: silentLogger(), sessionIdleTimeoutMs: 60_000, limiter: new Limiter(createMemoryStore(), { onStoreError: 'deny' }), ...opts });
  const { session: upstreamSession, sent } = recordingSession();
  const server = { name: 's', upstream: {} as Upstream, policy: parsePolicy(policyText, '<test>') };
  gateway.addServer(server);
  const session = new Session('sid', server, upstreamSession, '2025-11-25', 0);
  const call = (raw: string) =>
    new Promise<JsonRpcResponse>((resolve) => {
      const handlers: CallHandlers = { onRelated() {}, onResponse: (m) => resolve(m) };
      gateway.call(session, JSON.parse(raw) as JsonRpcRequest, raw, handlers);
    });
  // The gateway lists the tools itself before the first call of a tool it has no schema for
  // (argument validation); only the tools/call requests matter here.
  const calls = () => sent.filter((s) => s.req.method === 'tools/call');
  return { call, sent, calls, session };
}

test('forwards the client\'s own bytes when nothing in them is ambiguous', async () => {
  const { call, calls } = setup('{"version":"1","default":"deny","tools":{"echo":{}}}');
  const raw = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":1}}}';
  await call(raw);
  assert.equal(calls()[0]?.raw, raw);
});

test('re-serialises a request that repeats a key, so the server reads the call the policy allowed', async () => {
  const { call, calls } = setup('{"version":"1","default":"deny","tools":{"echo":{}}}');
  // A first-key-wins parser upstream would run delete_all; the policy (like JSON.parse) saw echo.
  const raw = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all","name":"echo"}}';
  const answer = await call(raw);
  assert.equal((answer.result as { isError?: boolean }).isError, undefined);
  assert.equal(calls()[0]?.raw, undefined);
  assert.equal(calls()[0]?.req.params?.name, 'echo');
});

test('denies by the name the policy read and never forwards the call', async () => {
  const { call, sent } = setup('{"version":"1","default":"deny","tools":{"echo":{}}}');
  const answer = await call('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_all"}}');
  assert.equal((answer.result as { isError?: boolean }).isError, true);
  assert.equal(sent.length, 0);
});

const CHARGES = JSON.stringify({
  version: '1',
  default: 'deny',
  tools: { create_charge: { action: 'require_approval', limits: [{ counter: 'charges', window: 'minute', max: 1, scope: 'grant' }] } },
});
const callCharge = (id: number, amount: number) =>
  JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'create_charge', arguments: { amount } } });
const textOf = (m: JsonRpcResponse) => ((m.result as { content?: Array<{ text?: string }> }).content ?? []).map((c) => c.text).join('');

test('refuses a call that needs approval when the gateway has no approval service, and never forwards it', async () => {
  const { call, calls } = setup(CHARGES);
  const answer = await call(callCharge(1, 5));
  assert.equal((answer.result as { isError?: boolean }).isError, true);
  assert.match(textOf(answer), new RegExp(APPROVALS_UNAVAILABLE.replace(/[()`]/g, '.')));
  assert.equal(calls().length, 0);
});

test('reserves limits only once a person approves: an approved call over its limit is refused, and its approval stays approved and unused', async () => {
  const store = openSqliteStore(':memory:');
  await store.migrate();
  const approvals = new ApprovalService({ store, pollIntervalMs: 0 });
  const { call, calls } = setup(CHARGES, { approvals });
  try {
    const first = call(callCharge(1, 5));
    const second = call(callCharge(2, 6));
    // Two calls held at once: neither has used the limit of one charge a minute yet.
    let held = await store.listApprovals({ status: 'pending' });
    while (held.length < 2) {
      await new Promise((r) => setTimeout(r, 5));
      held = await store.listApprovals({ status: 'pending' });
    }
    for (const a of held) await approvals.approve(a.id, 'ops');
    const answers = await Promise.all([first, second]);
    const refused = answers.find((m) => (m.result as { isError?: boolean }).isError === true)!;
    assert.match(textOf(refused), /rate limit 'charges' allows at most 1 call/);
    assert.equal(calls().length, 1, 'only the call within the limit reached the server');
    const statuses = (await store.listApprovals()).map((r) => r.status).sort();
    assert.deepEqual(statuses, ['approved', 'executed']);
  } finally {
    await approvals.close();
    await store.close();
  }
});
