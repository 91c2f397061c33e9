import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicy, validatesArguments } from '../policy/index.js';
import { silentLogger } from '../telemetry/logger.js';
import type { CallHandlers, Upstream, UpstreamSession } from '../transport/upstream/types.js';
import type { JsonRpcRequest, JsonRpcResponse } from '../util/jsonrpc.js';
import { Gateway, Session, type ServerRuntime } from './gateway.js';
import { ArgumentValidator } from './validate.js';
import { Limiter } from '../limits/limiter.js';
import { createMemoryStore } from '../limits/store/memory.js';

const FILE_TOOL = {
  name: 'write_file',
  inputSchema: {
    type: 'object',
    properties: {
      path: { type: 'string' },
      amount: { type: 'number' },
      mode: { type: 'string', enum: ['read', 'write'] },
      items: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } },
      options: { type: 'object', properties: { depth: { type: 'integer', minimum: 0 } }, additionalProperties: false },
    },
    required: ['path'],
    additionalProperties: false,
  },
};

function validator(now?: () => number) {
  return new ArgumentValidator({ logger: silentLogger(), server: 's', ...(now ? { now } : {}) });
}

test('argument validation: a missing required argument is named', () => {
  const v = validator();
  v.learn([FILE_TOOL]);
  assert.equal(v.check('write_file', {}), "argument 'path' is required");
  assert.equal(v.check('write_file', { path: '/tmp/x' }), undefined);
});

test('argument validation: a wrong type names the field, the type expected and what was sent', () => {
  const v = validator();
  v.learn([FILE_TOOL]);
  assert.equal(v.check('write_file', { path: '/x', amount: '12' }), `argument 'amount' must be number, got string "12"`);
  assert.equal(v.check('write_file', { path: 7 }), "argument 'path' must be string, got integer 7");
});

test('argument validation: an enum lists the allowed values', () => {
  const v = validator();
  v.learn([FILE_TOOL]);
  assert.equal(v.check('write_file', { path: '/x', mode: 'delete' }), `argument 'mode' must be one of: read, write, got "delete"`);
});

test('argument validation: an argument the schema does not allow is called unexpected', () => {
  const v = validator();
  v.learn([FILE_TOOL]);
  assert.equal(v.check('write_file', { path: '/x', force: true }), "unexpected argument 'force'");
  assert.equal(v.check('write_file', { path: '/x', options: { depth: 1, recursive: true } }), "unexpected argument 'options.recursive'");
});

test('argument validation: nested paths read as items[0].name', () => {
  const v = validator();
  v.learn([FILE_TOOL]);
  assert.equal(v.check('write_file', { path: '/x', items: [{ name: 'a' }, { name: 3 }] }), "argument 'items[1].name' must be string, got integer 3");
  assert.equal(v.check('write_file', { path: '/x', items: [{}] }), "argument 'items[0].name' is required");
  assert.equal(v.check('write_file', { path: '/x', options: { depth: -1 } }), "argument 'options.depth' must be >= 0, got -1");
});

test('argument validation: long values are cut in the reason', () => {
  const v = validator();
  v.learn([FILE_TOOL]);
  const reason = v.check('write_file', { path: '/x', mode: 'x'.repeat(5000) })!;
  assert.ok(reason.length < 150, reason);
  assert.match(reason, /…/);
});

test('argument validation: arguments that are not an object are refused as a whole', () => {
  const v = validator();
  v.learn([FILE_TOOL]);
  assert.equal(v.check('write_file', ['/x']), 'the arguments must be object, got array');
});

test('argument validation: a definition is compiled once and again only when it changes', () => {
  const v = validator();
  const other = { name: 'echo', inputSchema: { type: 'object', properties: { message: { type: 'string' } } } };
  v.learn([FILE_TOOL, other]);
  assert.equal(v.compiles, 2);
  // The same definitions again, as fresh objects with keys in another order: nothing compiles.
  v.learn(JSON.parse(JSON.stringify([other, FILE_TOOL])));
  v.learn([{ name: 'echo', inputSchema: { properties: { message: { type: 'string' } }, type: 'object' } }]);
  for (let i = 0; i < 100; i++) v.check('echo', { message: 'hi' });
  assert.equal(v.compiles, 2);
  // echo changes: only echo is compiled again, and the new definition is the one enforced.
  v.learn([FILE_TOOL, { name: 'echo', inputSchema: { type: 'object', properties: { message: { type: 'number' } } } }]);
  assert.equal(v.compiles, 3);
  assert.equal(v.check('echo', { message: 'hi' }), `argument 'message' must be number, got string "hi"`);
  assert.equal(v.check('echo', { message: 1 }), undefined);
});

test('argument validation: draft-07 and 2020-12 schemas are both understood', () => {
  const v = validator();
  v.learn([
    {
      name: 'old',
      inputSchema: { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { a: { type: 'number' } }, required: ['a'] },
    },
    {
      name: 'new',
      inputSchema: {
        $schema: 'https://json-schema.org/draft/2020-12/schema',
        type: 'object',
        properties: { list: { type: 'array', prefixItems: [{ type: 'string' }] } },
        unevaluatedProperties: false,
      },
    },
  ]);
  assert.equal(v.check('old', {}), "argument 'a' is required");
  assert.equal(v.check('old', { a: 1 }), undefined);
  assert.equal(v.check('new', { list: [1] }), "argument 'list[0]' must be string, got integer 1");
  assert.equal(v.check('new', { list: ['a'], extra: 1 }), "unexpected argument 'extra'");
});

test('argument validation: a schema that does not compile, or an unknown dialect, is not enforced', () => {
  const v = validator();
  v.learn([
    { name: 'broken', inputSchema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } } },
    { name: 'ancient', inputSchema: { $schema: 'http://json-schema.org/draft-04/schema#', type: 'object', required: ['a'] } },
    { name: 'none' },
  ]);
  assert.equal(v.check('broken', { a: 1 }), undefined);
  assert.equal(v.check('ancient', {}), undefined);
  assert.equal(v.check('none', { anything: 1 }), undefined);
  assert.ok(v.knows('broken') && v.knows('ancient') && v.knows('none'));
  // Listed again unchanged: the broken schema is not tried (or logged) again.
  const before = v.compiles;
  v.learn([{ name: 'broken', inputSchema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } } }]);
  assert.equal(v.compiles, before);
});

test('argument validation: an unknown tool is checked by nobody and asks for a listing at most once per interval', () => {
  let now = 0;
  const v = validator(() => now);
  assert.equal(v.check('nope', { x: 1 }), undefined);
  assert.equal(v.needsListing('nope'), true);
  v.learn([FILE_TOOL], true);
  assert.equal(v.needsListing('write_file'), false);
  assert.equal(v.needsListing('nope'), false);
  now += 60_000;
  assert.equal(v.needsListing('nope'), true);
});

test('validate_arguments: a rule, else all_tools, else on', () => {
  const p = parsePolicy(
    JSON.stringify({
      version: '1',
      default: 'allow',
      all_tools: { validate_arguments: false },
      tools: { strict: { validate_arguments: true }, loose_1: {}, 'check_*': { validate_arguments: true } },
    }),
    '<test>',
  );
  assert.equal(validatesArguments(p, 'strict'), true);
  assert.equal(validatesArguments(p, 'loose_1'), false);
  assert.equal(validatesArguments(p, 'check_x'), true);
  assert.equal(validatesArguments(p, 'unlisted'), false);
  const d = parsePolicy('{"version":"1","default":"deny","tools":{"a":{},"b":{"validate_arguments":false}}}', '<test>');
  assert.equal(validatesArguments(d, 'a'), true);
  assert.equal(validatesArguments(d, 'b'), false);
  assert.equal(validatesArguments(d, 'unlisted'), true);
  assert.throws(() => parsePolicy('{"version":"1","default":"deny","tools":{"a":{"validate_arguments":"no"}}}', '<test>'), /expected true or false/);
});

// ---- through the gateway, with a fake upstream ----

const SUM_TOOL = {
  name: 'sum',
  inputSchema: { type: 'object', properties: { a: { type: 'number' }, b: { type: 'number' } }, required: ['a', 'b'] },
};

function setup(policyText: string, listAnswer: (req: JsonRpcRequest) => JsonRpcResponse) {
  const gateway = new Gateway({ logger: silentLogger(), sessionIdleTimeoutMs: 60_000, limiter: new Limiter(createMemoryStore(), { onStoreError: 'deny' }) });
  const sent: JsonRpcRequest[] = [];
  const upstream: UpstreamSession = {
    initializeResult: {},
    call(req, _raw, handlers) {
      sent.push(req);
      // Answered asynchronously, as a real upstream does, so concurrent calls overlap.
      setImmediate(() =>
        handlers.onResponse(req.method === 'tools/list' ? listAnswer(req) : { jsonrpc: '2.0', id: req.id, result: { content: [] } }, undefined),
      );
    },
    send() {},
    listen: async () => undefined,
    close: async () => {},
  };
  const server: ServerRuntime = { name: 's', upstream: {} as Upstream, policy: parsePolicy(policyText, '<test>') };
  gateway.addServer(server);
  const session = new Session('sid', server, upstream, '2025-11-25', 0);
  let id = 0;
  const call = (name: string, args: unknown) =>
    new Promise<JsonRpcResponse>((resolve) => {
      const handlers: CallHandlers = { onRelated() {}, onResponse: (m) => resolve(m) };
      gateway.call(session, { jsonrpc: '2.0', id: ++id, method: 'tools/call', params: { name, arguments: args } }, undefined, handlers);
    });
  const text = (r: JsonRpcResponse) => (r.result as { content: Array<{ text?: string }> }).content[0]?.text ?? '';
  return { call, sent, server, text };
}

test('gateway: a call before any tools/list makes the gateway list once, following pages, then decide', async () => {
  const { call, sent, server, text } = setup('{"version":"1","default":"allow"}', (req) =>
    req.params?.cursor === undefined
      ? { jsonrpc: '2.0', id: req.id, result: { tools: [{ name: 'echo', inputSchema: { type: 'object' } }], nextCursor: 'p2' } }
      : { jsonrpc: '2.0', id: req.id, result: { tools: [SUM_TOOL] } },
  );
  const [bad, good] = await Promise.all([call('sum', { a: 1, b: 'two' }), call('sum', { a: 1, b: 2 })]);
  assert.equal((bad.result as { isError?: boolean }).isError, true);
  assert.match(text(bad), /Reason: argument 'b' must be number, got string "two" \(rule \(input schema\), policy sha256:/);
  assert.equal((good.result as { isError?: boolean }).isError, undefined);
  assert.deepEqual(
    sent.map((r) => [r.method, r.params?.cursor ?? r.params?.name]),
    [
      ['tools/list', undefined],
      ['tools/list', 'p2'],
      ['tools/call', 'sum'],
    ],
  );
  assert.match(String(sent[0]!.id), /^policylayer-tools-list-\d+$/);
  assert.equal(server.validator!.compiles, 2);
  // Known now: later calls are decided at once, with no listing and no compile.
  await call('sum', { a: 'x', b: 1 });
  assert.equal(sent.filter((r) => r.method === 'tools/list').length, 2);
  assert.equal(server.validator!.compiles, 2);
});

test('gateway: when the upstream cannot list its tools, the call goes through unchecked', async () => {
  const { call, sent } = setup('{"version":"1","default":"allow"}', (req) => ({
    jsonrpc: '2.0',
    id: req.id,
    error: { code: -32601, message: 'Method not found' },
  }));
  const answer = await call('sum', { a: 'x' });
  assert.equal((answer.result as { isError?: boolean }).isError, undefined);
  await call('sum', { a: 'y' });
  assert.deepEqual(
    sent.map((r) => r.method),
    ['tools/list', 'tools/call', 'tools/call'],
  );
});

test('gateway: validate_arguments false, or a shadowed policy, lets bad arguments through', async () => {
  const list = (req: JsonRpcRequest): JsonRpcResponse => ({ jsonrpc: '2.0', id: req.id, result: { tools: [SUM_TOOL] } });
  const off = setup('{"version":"1","default":"deny","tools":{"sum":{"validate_arguments":false}}}', list);
  assert.equal(((await off.call('sum', { a: 'x' })).result as { isError?: boolean }).isError, undefined);
  assert.deepEqual(off.sent.map((r) => r.method), ['tools/call']);
  const shadow = setup('{"version":"1","default":"allow","shadow":true}', list);
  shadow.server.validator = new ArgumentValidator({ logger: silentLogger(), server: 's' });
  shadow.server.validator.learn([SUM_TOOL], true);
  assert.equal(((await shadow.call('sum', { a: 'x' })).result as { isError?: boolean }).isError, undefined);
  assert.deepEqual(shadow.sent.map((r) => r.method), ['tools/call']);
});
