import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, PolicyLayerError } from '../errors.js';
import {
  classify,
  errorResponse,
  ForwardedResult,
  idOf,
  outcomeOf,
  isNotification,
  isRequest,
  isResponse,
  parseMessage,
  resultResponse,
  withId,
  type JsonRpcMessage,
} from './jsonrpc.js';

function refusedAs(code: string, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof PolicyLayerError);
    assert.equal(err.code, code);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

describe('classify', () => {
  it('tells a request, a notification and both kinds of response apart', () => {
    assert.equal(classify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }), 'request');
    assert.equal(classify({ jsonrpc: '2.0', id: 'a-1', method: 'tools/call', params: { name: 'x' } }), 'request');
    assert.equal(classify({ jsonrpc: '2.0', method: 'notifications/initialized' }), 'notification');
    assert.equal(classify({ jsonrpc: '2.0', id: 1, result: {} }), 'response');
    assert.equal(classify({ jsonrpc: '2.0', id: 1, error: { code: -32601, message: 'no' } }), 'response');
    assert.equal(classify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } }), 'response');
  });

  it('refuses a batch, because a batch would be a second path around the policy', () => {
    const batch = [
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'a' } },
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'b' } },
    ];
    assert.throws(() => classify(batch), refusedAs(ErrorCodes.INVALID_REQUEST, /batch/));
    assert.throws(() => classify([]), refusedAs(ErrorCodes.INVALID_REQUEST, /batch/));
  });

  it('refuses values that are not message objects', () => {
    for (const v of [null, 1, 'text', true]) {
      assert.throws(() => classify(v), refusedAs(ErrorCodes.INVALID_REQUEST, /message object/));
    }
  });

  it('refuses a message without "jsonrpc": "2.0"', () => {
    assert.throws(() => classify({ id: 1, method: 'ping' }), refusedAs(ErrorCodes.INVALID_REQUEST, /2\.0/));
    assert.throws(() => classify({ jsonrpc: '1.0', id: 1, method: 'ping' }), refusedAs(ErrorCodes.INVALID_REQUEST, /2\.0/));
    assert.throws(() => classify({ jsonrpc: 2, id: 1, method: 'ping' }), refusedAs(ErrorCodes.INVALID_REQUEST));
  });

  it('refuses an empty or non-string method', () => {
    assert.throws(() => classify({ jsonrpc: '2.0', id: 1, method: '' }), refusedAs(ErrorCodes.INVALID_REQUEST, /method/));
    assert.throws(() => classify({ jsonrpc: '2.0', id: 1, method: 42 }), refusedAs(ErrorCodes.INVALID_REQUEST, /method/));
  });

  it('refuses positional or null params, since MCP uses named parameters', () => {
    assert.throws(() => classify({ jsonrpc: '2.0', id: 1, method: 'x', params: [1, 2] }), refusedAs(ErrorCodes.INVALID_REQUEST, /params/));
    assert.throws(() => classify({ jsonrpc: '2.0', id: 1, method: 'x', params: null }), refusedAs(ErrorCodes.INVALID_REQUEST, /params/));
    assert.throws(() => classify({ jsonrpc: '2.0', method: 'x', params: 'p' }), refusedAs(ErrorCodes.INVALID_REQUEST, /params/));
  });

  it('refuses a request whose id is null, an object or a boolean', () => {
    for (const id of [null, {}, true, [1]]) {
      assert.throws(() => classify({ jsonrpc: '2.0', id, method: 'ping' }), refusedAs(ErrorCodes.INVALID_REQUEST, /"id"/));
    }
  });

  it('refuses a response with both or neither of result and error, or with an invalid id', () => {
    assert.throws(() => classify({ jsonrpc: '2.0', id: 1, result: {}, error: { code: 1, message: 'x' } }), refusedAs(ErrorCodes.INVALID_REQUEST, /exactly one/));
    assert.throws(() => classify({ jsonrpc: '2.0', id: 1 }), refusedAs(ErrorCodes.INVALID_REQUEST, /exactly one/));
    assert.throws(() => classify({ jsonrpc: '2.0', id: { a: 1 }, result: {} }), refusedAs(ErrorCodes.INVALID_REQUEST, /"id"/));
    assert.throws(() => classify({ jsonrpc: '2.0', result: {} }), refusedAs(ErrorCodes.INVALID_REQUEST, /"id"/));
  });
});

describe('parseMessage', () => {
  it('parses one message and says what kind it is', () => {
    const { message, kind } = parseMessage('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}');
    assert.equal(kind, 'request');
    assert.deepEqual(message, { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'echo' } });
  });

  it('answers text that is not JSON with a parse error', () => {
    assert.throws(() => parseMessage('{"jsonrpc": "2.0", '), refusedAs(ErrorCodes.PARSE_ERROR, /not valid JSON/));
    assert.throws(() => parseMessage(''), refusedAs(ErrorCodes.PARSE_ERROR));
  });

  it('answers JSON that is not JSON-RPC with an invalid-request error', () => {
    assert.throws(() => parseMessage('{"hello":"world"}'), refusedAs(ErrorCodes.INVALID_REQUEST));
    assert.throws(() => parseMessage('[{"jsonrpc":"2.0","id":1,"method":"ping"}]'), refusedAs(ErrorCodes.INVALID_REQUEST, /batch/));
  });
});

describe('message guards', () => {
  it('isRequest, isNotification and isResponse agree with classify', () => {
    const cases: Array<[JsonRpcMessage, string]> = [
      [{ jsonrpc: '2.0', id: 1, method: 'ping' }, 'request'],
      [{ jsonrpc: '2.0', id: 0, method: 'ping' }, 'request'],
      [{ jsonrpc: '2.0', method: 'notifications/progress' }, 'notification'],
      [{ jsonrpc: '2.0', id: 1, result: {} }, 'response'],
    ];
    for (const [m, kind] of cases) {
      assert.equal(classify(m), kind);
      assert.equal(isRequest(m), kind === 'request');
      assert.equal(isNotification(m), kind === 'notification');
      assert.equal(isResponse(m), kind === 'response');
    }
  });
});

describe('building answers', () => {
  it('errorResponse carries data only when given', () => {
    assert.deepEqual(errorResponse(1, -32600, 'bad'), { jsonrpc: '2.0', id: 1, error: { code: -32600, message: 'bad' } });
    assert.deepEqual(errorResponse(null, -32700, 'parse', { code: 'PL_PARSE_ERROR' }), {
      jsonrpc: '2.0',
      id: null,
      error: { code: -32700, message: 'parse', data: { code: 'PL_PARSE_ERROR' } },
    });
  });

  it('resultResponse wraps a result under the request id', () => {
    assert.deepEqual(resultResponse('abc', { tools: [] }), { jsonrpc: '2.0', id: 'abc', result: { tools: [] } });
  });

  it('idOf recovers a valid id from a body that failed validation and null otherwise', () => {
    assert.equal(idOf({ id: 5, hello: 'world' }), 5);
    assert.equal(idOf({ id: 'x' }), 'x');
    assert.equal(idOf({ id: null }), null);
    assert.equal(idOf({ id: { nested: 1 } }), null);
    assert.equal(idOf([{ id: 1 }]), null);
    assert.equal(idOf('text'), null);
    assert.equal(idOf(undefined), null);
  });
});

describe('a forwarded success answer', () => {
  const text = '{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"hi"}],"isError":true}}';

  it('reads like the parsed answer, and serialises to it', () => {
    const msg = new ForwardedResult(4, text);
    assert.equal(msg.jsonrpc, '2.0');
    assert.equal(msg.id, 4);
    assert.equal(msg.error, undefined);
    assert.deepEqual(msg.result, { content: [{ type: 'text', text: 'hi' }], isError: true });
    assert.deepEqual(JSON.parse(JSON.stringify(msg)), JSON.parse(text));
    assert.ok(isResponse(msg));
  });

  it('parses its text once, on the first read, and serialises under the id it was given since', () => {
    const msg = new ForwardedResult(4, text);
    assert.equal(msg.result, msg.result);
    msg.id = 'client-9';
    assert.deepEqual(JSON.parse(JSON.stringify(msg)), { ...(JSON.parse(text) as object), id: 'client-9' });
  });

  it('reads as an upstream error when its result turns out not to be JSON', () => {
    const msg = new ForwardedResult(4, '{"jsonrpc":"2.0","id":4,"result":{"a":tru}}');
    assert.equal(msg.result, undefined);
    assert.equal(msg.error?.code, -32000);
    assert.match(msg.error?.message ?? '', /answered with text that is not JSON/);
    assert.deepEqual(JSON.parse(JSON.stringify(msg)), { jsonrpc: '2.0', id: 4, error: msg.error });
  });

  it('withId copies it whole under another id, where a spread would lose its result', () => {
    const msg = new ForwardedResult(4, text);
    assert.equal(({ ...msg } as { result?: unknown }).result, undefined);
    assert.deepEqual(withId(msg, 'x'), { jsonrpc: '2.0', id: 'x', result: JSON.parse(text).result });
    assert.deepEqual(withId(errorResponse(1, -32601, 'no'), 2), errorResponse(2, -32601, 'no'));
  });

  it('tells its outcome from the text when no key there can be isError, and from the parsed result otherwise', () => {
    const ok = new ForwardedResult(1, '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a\\nb"}]}}');
    assert.equal(outcomeOf(ok), 'ok');
    assert.equal(outcomeOf(new ForwardedResult(1, text)), 'tool_error');
    // Named only inside a string, or spelled with escapes: the result is read to be sure.
    assert.equal(outcomeOf(new ForwardedResult(1, '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"isError"}]}}')), 'ok');
    assert.equal(outcomeOf(new ForwardedResult(1, '{"jsonrpc":"2.0","id":1,"result":{"content":[],"\\u0069sError":true}}')), 'tool_error');
    assert.equal(outcomeOf(new ForwardedResult(1, '{"jsonrpc":"2.0","id":1,"result":{"isError":false}}')), 'ok');
    // A result that is not JSON is a failure once something has read it.
    const broken = new ForwardedResult(1, '{"jsonrpc":"2.0","id":1,"result":{"isError":tru}}');
    assert.equal(outcomeOf(broken), 'error');
  });
});

describe('outcomeOf a parsed answer', () => {
  it('is an error, a tool error or a success', () => {
    assert.equal(outcomeOf(errorResponse(1, -32601, 'no')), 'error');
    assert.equal(outcomeOf(resultResponse(1, { content: [], isError: true })), 'tool_error');
    assert.equal(outcomeOf(resultResponse(1, { content: [], isError: 'yes' })), 'ok');
    assert.equal(outcomeOf(resultResponse(1, {})), 'ok');
  });
});
