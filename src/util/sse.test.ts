import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatSse, sseParser, type SseEvent } from './sse.js';

function parseAll(text: string, chunkSize = text.length): { events: SseEvent[]; retries: number[] } {
  const events: SseEvent[] = [];
  const retries: number[] = [];
  const p = sseParser((e) => events.push(e), (ms) => retries.push(ms));
  for (let i = 0; i < text.length; i += Math.max(1, chunkSize)) p.feed(text.slice(i, i + chunkSize));
  return { events, retries };
}

describe('formatSse', () => {
  it('writes one data line and a blank line for single-line data', () => {
    assert.equal(formatSse({ data: '{"jsonrpc":"2.0","id":1,"result":{}}' }), 'data: {"jsonrpc":"2.0","id":1,"result":{}}\n\n');
  });

  it('writes id, event and retry before the data', () => {
    assert.equal(formatSse({ id: '42', event: 'message', retry: 1000, data: 'x' }), 'id: 42\nevent: message\nretry: 1000\ndata: x\n\n');
  });

  it('splits multi-line data into one data line per line', () => {
    assert.equal(formatSse({ data: 'a\nb\n' }), 'data: a\ndata: b\ndata: \n\n');
  });

  it('writes empty data as an empty data line', () => {
    assert.equal(formatSse({ data: '' }), 'data: \n\n');
  });
});

describe('sseParser', () => {
  const events: SseEvent[] = [
    { id: '1', data: '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}' },
    { event: 'endpoint', data: '/messages?sessionId=abc' },
    { id: 'stream-1:7', data: '{\n  "jsonrpc": "2.0",\n  "id": 3,\n  "result": {}\n}' },
    { data: 'line with: a colon and  spaces ' },
  ];
  const text = events.map(formatSse).join('');

  it('reads back what formatSse wrote, whatever the chunk boundaries', () => {
    for (const size of [text.length, 1, 2, 3, 7, 64]) {
      const { events: got } = parseAll(text, size);
      assert.deepEqual(
        got.map((e) => ({ id: e.id, event: e.event, data: e.data })),
        events.map((e) => ({ id: e.id, event: e.event, data: e.data })),
        `chunks of ${size}`,
      );
    }
  });

  it('accepts CRLF line endings and ignores comment lines', () => {
    const { events: got } = parseAll(': keep-alive\r\n\r\nid: 9\r\ndata: {"a":1}\r\n\r\n');
    assert.equal(got.length, 1);
    assert.equal(got[0]!.id, '9');
    assert.equal(got[0]!.data, '{"a":1}');
  });

  it('reports a retry hint to onRetry and not as an event', () => {
    const { events: got, retries } = parseAll('retry: 1500\n\n');
    assert.deepEqual(retries, [1500]);
    assert.equal(got.length, 0);
  });

  it('keeps the lines of data that contained carriage returns, as line feeds', () => {
    // JSON allows CR as whitespace between tokens; an upstream that writes it must not lose a token.
    const json = '{\r"jsonrpc":\r\n"2.0","id":1,\r"result":{}}';
    const { events: got } = parseAll(formatSse({ data: json }));
    assert.equal(got.length, 1);
    assert.equal(got[0]!.data, '{\n"jsonrpc":\n"2.0","id":1,\n"result":{}}');
    assert.deepEqual(JSON.parse(got[0]!.data), JSON.parse(json));
  });

  it('drops a partial event on reset', () => {
    const got: SseEvent[] = [];
    const p = sseParser((e) => got.push(e));
    p.feed('data: half of an ev');
    p.reset();
    p.feed('data: whole\n\n');
    assert.deepEqual(got.map((e) => e.data), ['whole']);
  });
});
