import { after, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { Http1Pool, HttpClientError, ResponseParser, headerBlock } from './http1.js';
import type { ExchangeHandler, ExchangeRequest, HttpClientErrorCode, ResponseHeaders } from './http1.js';

// ---------------------------------------------------------------------------------------------
// Helpers for the parser

interface ParsedResponse {
  status: number;
  headers: ResponseHeaders;
  body: Buffer;
  keepAlive: boolean;
  hintMs: number | undefined;
}

interface ParseRun {
  parser: ResponseParser;
  /** Heads seen, complete or not. */
  heads: Array<{ status: number; headers: ResponseHeaders }>;
  /** The body pieces of the response under way, as onData gave them. */
  pieces: Buffer[];
  /** Every response that completed. */
  responses: ParsedResponse[];
  /** The sum of what feed() returned: bytes past the end of a response. */
  extra: number;
}

/** Feeds `pieces` to one parser armed once for `method`, as a connection does for one request. */
function parse(pieces: Array<string | Buffer>, opts: { method?: string; maxHeadBytes?: number } = {}): ParseRun {
  const run: ParseRun = { parser: undefined as unknown as ResponseParser, heads: [], pieces: [], responses: [], extra: 0 };
  run.parser = new ResponseParser(
    {
      onHead: (status, headers) => run.heads.push({ status, headers }),
      onData: (chunk) => run.pieces.push(Buffer.from(chunk)),
      onComplete: (keepAlive, hintMs) => {
        const head = run.heads[run.heads.length - 1]!;
        run.responses.push({ ...head, body: Buffer.concat(run.pieces), keepAlive, hintMs });
        run.pieces = [];
      },
    },
    opts.maxHeadBytes,
  );
  run.parser.expect(opts.method ?? 'GET');
  for (const p of pieces) run.extra += run.parser.feed(typeof p === 'string' ? Buffer.from(p, 'latin1') : p);
  return run;
}

/** The one response `raw` holds, which must be complete. */
function parseOne(raw: string | Array<string | Buffer>, opts: { method?: string; maxHeadBytes?: number } = {}): ParsedResponse {
  const run = parse(typeof raw === 'string' ? [raw] : raw, opts);
  assert.equal(run.responses.length, 1, 'exactly one response completes');
  return run.responses[0]!;
}

/** An assert.throws matcher for a PROTOCOL error whose message matches `re`. */
function protocolError(re: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof HttpClientError, `expected an HttpClientError, got ${String(err)}`);
    assert.equal(err.code, 'PROTOCOL');
    assert.match(err.message, re);
    return true;
  };
}

/** Splits `buf` at the given offsets (taken modulo its length, sorted, deduplicated). */
function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    if (p > from) out.push(buf.subarray(from, p));
    from = Math.max(from, p);
  }
  if (from < buf.length) out.push(buf.subarray(from));
  return out;
}

// ---------------------------------------------------------------------------------------------
// ResponseParser

describe('ResponseParser', () => {
  describe('bodies', () => {
    test('a Content-Length body is read to exactly that many bytes', () => {
      const r = parseOne('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello');
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], 'text/plain');
      assert.equal(r.headers['content-length'], '5');
      assert.equal(r.body.toString(), 'hello');
      assert.equal(r.keepAlive, true);
    });

    test('a Content-Length of 0 completes with the head, without waiting for a body', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n']);
      assert.equal(run.responses.length, 1);
      assert.equal(run.responses[0]!.body.length, 0);
      assert.equal(run.parser.busy, false);
    });

    test('header names are lower-cased and values trimmed of surrounding whitespace', () => {
      const r = parseOne('HTTP/1.1 200 OK\r\nX-MiXeD-CaSe:   spaced value  \r\nContent-Length: 0\r\n\r\n');
      assert.equal(r.headers['x-mixed-case'], 'spaced value');
    });

    test('a status line without a reason phrase is accepted', () => {
      assert.equal(parseOne('HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n').status, 404);
    });

    test('a chunked body is de-chunked, with chunk extensions ignored and trailers read past', () => {
      const raw =
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' +
        '5;name=value\r\nhello\r\n' +
        '1 ; another\r\n,\r\n' +
        'A\r\n and more!\r\n' + // upper-case hex: 10 bytes
        '0;last\r\n' +
        'X-Checksum: abc\r\nX-Other: def\r\n' +
        '\r\n';
      const run = parse([raw]);
      assert.equal(run.responses.length, 1);
      const r = run.responses[0]!;
      assert.equal(r.body.toString(), 'hello, and more!');
      assert.equal(r.keepAlive, true);
      // Trailers are not folded into the head: the head was handed over long before them.
      assert.equal(r.headers['x-checksum'], undefined);
      assert.equal(run.extra, 0);
    });

    test('a chunked body with no data chunks is an empty body', () => {
      const r = parseOne('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
      assert.equal(r.body.length, 0);
    });

    test('Transfer-Encoding whose last coding is chunked is read as chunked', () => {
      const r = parseOne('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
      assert.equal(r.body.toString(), 'abc');
      assert.equal(r.keepAlive, true);
    });

    test('Transfer-Encoding without chunked last is read to the close, and the connection is not kept', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nsome bytes']);
      assert.equal(run.responses.length, 0, 'the body only ends with the connection');
      assert.equal(run.parser.end(), true);
      assert.equal(run.responses[0]!.body.toString(), 'some bytes');
      assert.equal(run.responses[0]!.keepAlive, false);
    });

    test('a body with neither length nor chunking is read until end(), and the connection is not kept', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ', 'second']);
      assert.equal(run.responses.length, 0);
      assert.equal(Buffer.concat(run.pieces).toString(), 'first second', 'pieces are handed over as they come');
      assert.equal(run.parser.end(), true);
      assert.equal(run.responses.length, 1);
      assert.equal(run.responses[0]!.body.toString(), 'first second');
      assert.equal(run.responses[0]!.keepAlive, false);
    });

    test('end() in the middle of a length-delimited body says the response is not whole', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc']);
      assert.equal(run.parser.end(), false);
      assert.equal(run.responses.length, 0);
    });

    test('end() before any byte of the head says the response is not whole', () => {
      const run = parse([]);
      assert.equal(run.parser.started, false);
      assert.equal(run.parser.end(), false);
    });

    test('end() after a complete response says it was whole', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']);
      assert.equal(run.parser.end(), true);
      assert.equal(run.responses.length, 1, 'and completes nothing a second time');
    });

    test('bytes after the end of a response are reported, not parsed', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA']);
      assert.equal(run.responses[0]!.body.toString(), 'ok');
      assert.equal(run.extra, 5);
    });

    test('busy, started and headDone follow the response as it arrives', () => {
      const run = parse([]);
      const p = run.parser;
      assert.deepEqual([p.busy, p.started, p.headDone], [true, false, false]);
      p.feed(Buffer.from('HTTP/1.1 200 OK\r\n'));
      assert.deepEqual([p.busy, p.started, p.headDone], [true, true, false]);
      p.feed(Buffer.from('Content-Length: 2\r\n\r\no'));
      assert.deepEqual([p.busy, p.started, p.headDone], [true, true, true]);
      p.feed(Buffer.from('k'));
      assert.equal(p.busy, false);
    });
  });

  describe('responses without a body', () => {
    test('a 204 has no body even when it announces a length', () => {
      const run = parse(['HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n']);
      assert.equal(run.responses.length, 1);
      assert.equal(run.responses[0]!.status, 204);
      assert.equal(run.responses[0]!.body.length, 0);
    });

    test('a 304 has no body even when it announces chunking', () => {
      const run = parse(['HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n']);
      assert.equal(run.responses.length, 1);
      assert.equal(run.responses[0]!.body.length, 0);
    });

    test('the answer to a HEAD request has no body, whatever its Content-Length says', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n'], { method: 'HEAD' });
      assert.equal(run.responses.length, 1);
      assert.equal(run.responses[0]!.headers['content-length'], '1234');
      assert.equal(run.responses[0]!.body.length, 0);
      assert.equal(run.responses[0]!.keepAlive, true);
    });

    test('expect() re-arms the parser: a HEAD answer is followed by a GET answer with its body', () => {
      const run = parse(['HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n'], { method: 'HEAD' });
      run.parser.expect('GET');
      run.parser.feed(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc'));
      assert.deepEqual(
        run.responses.map((r) => r.body.toString()),
        ['', 'abc'],
      );
    });
  });

  describe('interim responses', () => {
    test('100 Continue is skipped and the final response follows', () => {
      const run = parse(['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']);
      assert.deepEqual(
        run.heads.map((h) => h.status),
        [200],
        'only the final head is handed over',
      );
      assert.equal(run.responses[0]!.body.toString(), 'ok');
    });

    test('103 Early Hints (with headers, split across reads) is skipped as well', () => {
      const run = parse([
        'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n',
        '\r\nHTTP/1.1 103 Early Hints\r\nLink: </x.js>\r\n\r\nHTTP/1.1 201 Created\r\n',
        'Content-Length: 0\r\n\r\n',
      ]);
      assert.deepEqual(
        run.heads.map((h) => h.status),
        [201],
      );
      assert.equal(run.heads[0]!.headers['link'], undefined, "the interim response's headers do not leak into the final one");
    });

    test('101 Switching Protocols is refused: it was never asked for', () => {
      assert.throws(() => parse(['HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n']), protocolError(/switched protocols/));
    });
  });

  describe('keep-alive', () => {
    const body = 'Content-Length: 0\r\n\r\n';

    test('HTTP/1.1 keeps the connection by default', () => {
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\n${body}`).keepAlive, true);
    });

    test('HTTP/1.1 with Connection: close does not keep it (whatever the case and list position)', () => {
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\nConnection: close\r\n${body}`).keepAlive, false);
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\n${body}`).keepAlive, false);
    });

    test('HTTP/1.0 closes the connection by default', () => {
      assert.equal(parseOne(`HTTP/1.0 200 OK\r\n${body}`).keepAlive, false);
    });

    test('HTTP/1.0 with Connection: keep-alive keeps it', () => {
      assert.equal(parseOne(`HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n${body}`).keepAlive, true);
    });

    test('HTTP/1.0 with keep-alive but a body read to the close cannot keep the connection', () => {
      const run = parse(['HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody']);
      run.parser.end();
      assert.equal(run.responses[0]!.keepAlive, false);
    });

    test('the Keep-Alive timeout hint is passed on in milliseconds', () => {
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=1000\r\n${body}`).hintMs, 5000);
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\nKeep-Alive: max=10, TIMEOUT=7\r\n${body}`).hintMs, 7000);
    });

    test('no Keep-Alive header, or one without a timeout, gives no hint', () => {
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\n${body}`).hintMs, undefined);
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\nKeep-Alive: max=5\r\n${body}`).hintMs, undefined);
      // Not a whole parameter name: "xtimeout" must not be read as "timeout".
      assert.equal(parseOne(`HTTP/1.1 200 OK\r\nKeep-Alive: xtimeout=9\r\n${body}`).hintMs, undefined);
    });

    test('the hint of one response does not carry over to the next', () => {
      const run = parse([`HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\n${body}`]);
      run.parser.expect('GET');
      run.parser.feed(Buffer.from(`HTTP/1.1 200 OK\r\n${body}`));
      assert.deepEqual(
        run.responses.map((r) => r.hintMs),
        [5000, undefined],
      );
    });
  });

  test('a repeated header has its values joined with ", "', () => {
    const r = parseOne('HTTP/1.1 200 OK\r\nVary: accept\r\nvary: origin\r\nVARY: cookie\r\nContent-Length: 0\r\n\r\n');
    assert.equal(r.headers['vary'], 'accept, origin, cookie');
  });

  test('a Content-Length repeated with the same value is accepted', () => {
    const r = parseOne('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok');
    assert.equal(r.headers['content-length'], '2');
    assert.equal(r.body.toString(), 'ok');
  });

  describe('protocol errors', () => {
    const cases: Array<[string, string | string[], RegExp, { method?: string; maxHeadBytes?: number }?]> = [
      ['an invalid status line', 'HTTP/2 200 OK\r\n\r\n', /invalid status line/],
      ['a status line with a two-digit code', 'HTTP/1.1 20 OK\r\n\r\n', /invalid status line/],
      ['something that is not HTTP at all', 'SSH-2.0-OpenSSH_9.0\r\n\r\n', /invalid status line/],
      ['a folded header line', 'HTTP/1.1 200 OK\r\nX-A: one\r\n  two\r\nContent-Length: 0\r\n\r\n', /folded/],
      ['a header line folded with a tab', 'HTTP/1.1 200 OK\r\nX-A: one\r\n\ttwo\r\n\r\n', /folded/],
      ['a header line without a colon', 'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n', /without a name/],
      ['a header line starting with a colon', 'HTTP/1.1 200 OK\r\n: value\r\n\r\n', /without a name/],
      ['a header name that is not a token', 'HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n', /not a token/],
      ['a header name with a space before the colon', 'HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n', /not a token/],
      ['two different Content-Length headers', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok', /two different Content-Length/],
      ['both Transfer-Encoding and Content-Length', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n', /both Transfer-Encoding and Content-Length/],
      ['a negative Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', /invalid Content-Length/],
      ['a non-numeric Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n', /invalid Content-Length/],
      ['a list as Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok', /invalid Content-Length/],
      ['a Content-Length too large to be exact', 'HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456\r\n\r\n', /invalid Content-Length/],
      ['a chunk size that is not hex', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /invalid chunk size/],
      ['an empty chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;ext\r\n', /invalid chunk size/],
      ['a signed chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n', /invalid chunk size/],
      ['a chunk size too large', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000\r\n', /invalid chunk size/],
      ['a chunk-size line ending with a bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n', /does not end with CRLF/],
      ['chunk data not followed by CRLF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n', /not followed by CRLF/],
      ['chunk data followed by CR and no LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\rX', /not followed by CRLF/],
      ['a trailer line ending with a bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\n\r\n', /trailer line does not end with CRLF/],
    ];
    for (const [what, raw, re, opts] of cases) {
      test(`${what} is a protocol error`, () => {
        assert.throws(() => parse(typeof raw === 'string' ? [raw] : raw, opts), protocolError(re));
      });
    }

    test('chunk data whose CRLF arrives split is still checked byte by byte', () => {
      // The CR is right, the LF (in the next read) is not.
      assert.throws(
        () => parse(['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r', 'X0\r\n\r\n']),
        protocolError(/not followed by CRLF/),
      );
    });

    test('a head larger than the limit is refused once it is known to be too large, even before it ends', () => {
      const big = `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(200)}`;
      // Without its end: the parser must not keep buffering a head without bound.
      assert.throws(() => parse([big], { maxHeadBytes: 100 }), protocolError(/head is larger than 100 bytes/));
      // Whole, in one read.
      assert.throws(() => parse([`${big}\r\n\r\n`], { maxHeadBytes: 100 }), protocolError(/head is larger than 100 bytes/));
      // Growing over several reads.
      assert.throws(() => parse([big.slice(0, 60), big.slice(60, 120), big.slice(120)], { maxHeadBytes: 100 }), protocolError(/larger than 100/));
    });

    test('a head just within the limit is accepted', () => {
      const head = 'HTTP/1.1 200 OK\r\nContent-Length: 0';
      const r = parseOne(`${head}\r\n\r\n`, { maxHeadBytes: head.length });
      assert.equal(r.status, 200);
    });

    test('a chunk-size line longer than 4096 bytes is refused, complete or not', () => {
      const start = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
      const longExt = `5;${'x'.repeat(5000)}`;
      assert.throws(() => parse([start + longExt]), protocolError(/chunk-size line is too long/));
      assert.throws(() => parse([`${start}${longExt}\r\nhello\r\n0\r\n\r\n`]), protocolError(/chunk-size line is too long/));
    });

    test('trailers larger than the head limit are refused', () => {
      const start = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n';
      assert.throws(() => parse([`${start}X-T: ${'t'.repeat(300)}\r\n\r\n`], { maxHeadBytes: 200 }), protocolError(/trailers are too large/));
      assert.throws(() => parse([`${start}X-T: ${'t'.repeat(300)}`], { maxHeadBytes: 200 }), protocolError(/trailers are too large/));
    });

    test('trailers within the limit are accepted however finely they are split', () => {
      // The bytes of a trailer line that arrives in pieces are counted once, not once per read.
      const raw = `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: ${'t'.repeat(100)}\r\n\r\n`;
      const bytes = [...Buffer.from(raw)].map((b) => Buffer.from([b]));
      const r = parseOne(bytes, { maxHeadBytes: 200 });
      assert.equal(r.body.toString(), 'ok');
    });

    test('a malformed framing header is refused before the head is handed over', () => {
      // A caller that has already passed the status on could no longer answer with an error of its own.
      const run: number[] = [];
      const parser = new ResponseParser({ onHead: (s) => run.push(s), onData: () => {}, onComplete: () => {} });
      for (const raw of [
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n',
        'HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n',
      ]) {
        parser.expect('GET');
        assert.throws(() => parser.feed(Buffer.from(raw)), protocolError(/./));
      }
      assert.deepEqual(run, []);
    });
  });

  describe('splitting', () => {
    interface Generated {
      bytes: Buffer;
      expected: Array<{ status: number; body: Buffer; marker: string }>;
    }

    const bodyBytes = fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a));
    const chunkData = fc.uint8Array({ minLength: 1, maxLength: 32 }).map((a) => Buffer.from(a));
    const headerValue = fc.string({ unit: fc.constantFrom('a', 'b', ' ', '=', ';', ',', '1'), maxLength: 12 }).map((s) => s.trim());
    const response = fc.record({
      status: fc.constantFrom(200, 201, 202, 404, 500),
      interim: fc.constantFrom<string | undefined>(undefined, 'HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n'),
      extraHeaders: fc.array(fc.tuple(fc.constantFrom('X-A', 'x-b', 'Vary', 'Keep-Alive'), headerValue), { maxLength: 3 }),
      framing: fc.oneof(
        fc.record({ kind: fc.constant('length' as const), body: bodyBytes }),
        fc.record({
          kind: fc.constant('chunked' as const),
          chunks: fc.array(fc.tuple(chunkData, fc.constantFrom('', ';ext', ';a=b;c="d"', ' ;x')), { maxLength: 4 }),
          upper: fc.boolean(),
          trailers: fc.array(fc.tuple(fc.constantFrom('X-Sum', 'X-Other'), headerValue), { maxLength: 3 }),
        }),
      ),
    });

    /** Responses on one connection, one after the other, each with a marker header to tell them apart. */
    const stream: fc.Arbitrary<Generated> = fc.array(response, { minLength: 1, maxLength: 4 }).map((responses) => {
      const parts: Buffer[] = [];
      const expected: Generated['expected'] = [];
      responses.forEach((r, i) => {
        const marker = `r${i}`;
        let head = `${r.interim ?? ''}HTTP/1.1 ${r.status} Whatever\r\nX-Marker: ${marker}\r\n`;
        for (const [n, v] of r.extraHeaders) head += `${n}: ${v}\r\n`;
        if (r.framing.kind === 'length') {
          parts.push(Buffer.from(`${head}Content-Length: ${r.framing.body.length}\r\n\r\n`, 'latin1'), r.framing.body);
          expected.push({ status: r.status, body: r.framing.body, marker });
        } else {
          parts.push(Buffer.from(`${head}Transfer-Encoding: chunked\r\n\r\n`, 'latin1'));
          for (const [data, ext] of r.framing.chunks) {
            const size = data.length.toString(16);
            parts.push(Buffer.from(`${r.framing.upper ? size.toUpperCase() : size}${ext}\r\n`), data, Buffer.from('\r\n'));
          }
          let end = '0\r\n';
          for (const [n, v] of r.framing.trailers) end += `${n}: ${v}\r\n`;
          parts.push(Buffer.from(`${end}\r\n`));
          expected.push({ status: r.status, body: Buffer.concat(r.framing.chunks.map(([d]) => d)), marker });
        }
      });
      return { bytes: Buffer.concat(parts), expected };
    });

    /**
     * Parses a connection's stream of responses, re-arming the parser after each one as the pool
     * does, and feeding the bytes past a response's end to the next.
     */
    function parseStream(pieces: Buffer[]): Array<{ status: number; marker: string | undefined; body: string }> {
      const out: Array<{ status: number; marker: string | undefined; body: string }> = [];
      let body: Buffer[] = [];
      let head: { status: number; headers: ResponseHeaders } | undefined;
      const parser = new ResponseParser(
        {
          onHead: (status, headers) => (head = { status, headers }),
          onData: (c) => body.push(Buffer.from(c)),
          onComplete: () => {
            out.push({ status: head!.status, marker: head!.headers['x-marker'], body: Buffer.concat(body).toString('hex') });
            body = [];
          },
        },
        // Small enough that counting any byte of a head or trailers twice would show.
        512,
      );
      for (let piece of pieces) {
        for (let guard = 0; piece.length > 0; guard++) {
          assert.ok(guard < 100, 'the parser makes progress');
          if (!parser.busy) parser.expect('GET');
          const extra = parser.feed(piece);
          piece = piece.subarray(piece.length - extra);
        }
      }
      assert.equal(parser.busy, false, 'the last response is complete');
      return out;
    }

    test('a stream of responses split at arbitrary points parses as it does whole', () => {
      fc.assert(
        fc.property(stream, fc.oneof(fc.array(fc.nat(), { maxLength: 30 }), fc.constant('bytes' as const)), (gen, cuts) => {
          const whole = parseStream([gen.bytes]);
          assert.deepEqual(
            whole,
            gen.expected.map((e) => ({ status: e.status, marker: e.marker, body: e.body.toString('hex') })),
          );
          const pieces = cuts === 'bytes' ? [...gen.bytes].map((b) => Buffer.from([b])) : splitAt(gen.bytes, cuts);
          assert.deepEqual(parseStream(pieces), whole);
        }),
        { numRuns: 300 },
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------
// headerBlock

describe('headerBlock', () => {
  test('serialises headers as lower-cased "name: value" lines, in order', () => {
    assert.equal(
      headerBlock({ 'Content-Type': 'application/json', Accept: 'text/event-stream, application/json', 'MCP-Session-Id': 'abc' }),
      'content-type: application/json\r\naccept: text/event-stream, application/json\r\nmcp-session-id: abc\r\n',
    );
  });

  test('skips headers whose value is undefined, and an empty record gives an empty block', () => {
    assert.equal(headerBlock({ a: undefined, b: '1', c: undefined }), 'b: 1\r\n');
    assert.equal(headerBlock({}), '');
  });

  test('keeps an empty value as an empty header', () => {
    assert.equal(headerBlock({ 'x-empty': '' }), 'x-empty: \r\n');
  });

  for (const [what, bad] of [
    ['CR', 'Bearer secret\rX-Injected: 1'],
    ['LF', 'Bearer secret\nX-Injected: 1'],
    ['CRLF', 'Bearer secret\r\nX-Injected: 1'],
    ['NUL', 'Bearer secret\0'],
  ] as const) {
    test(`refuses a value holding ${what}, naming the header but never quoting the value`, () => {
      assert.throws(
        () => headerBlock({ Authorization: bad }),
        (err: unknown) => {
          assert.ok(err instanceof HttpClientError);
          assert.equal(err.code, 'INVALID_REQUEST');
          assert.match(err.message, /authorization/);
          // Values are often credentials: not a piece of one may appear in a message that gets logged.
          assert.doesNotMatch(err.message, /secret|Injected|Bearer/);
          return true;
        },
      );
    });
  }

  for (const name of ['bad name', 'bad:name', 'ümlaut', '', 'a\r\nb', '(paren)']) {
    test(`refuses the non-token header name ${JSON.stringify(name)}`, () => {
      assert.throws(
        () => headerBlock({ [name]: 'v' }),
        (err: unknown) => {
          assert.ok(err instanceof HttpClientError);
          assert.equal(err.code, 'INVALID_REQUEST');
          assert.match(err.message, /invalid header name/);
          // The name is quoted, but with anything unprintable masked so it cannot break a log line.
          assert.doesNotMatch(err.message, /[\r\n]/);
          return true;
        },
      );
    });
  }

  for (const name of ['Host', 'content-length', 'Transfer-Encoding', 'CONNECTION']) {
    test(`refuses the ${name} header, which is the client's own`, () => {
      assert.throws(
        () => headerBlock({ [name]: 'x' }),
        (err: unknown) => err instanceof HttpClientError && err.code === 'INVALID_REQUEST' && err.message.includes(name.toLowerCase()),
      );
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Helpers for the pool

interface RawRequest {
  head: string;
  body: string;
  /** 1-based index of this connection among the server's connections. */
  conn: number;
  /** 1-based index of this request on its connection. */
  onConn: number;
}

interface RawServer {
  port: number;
  origin: string;
  /** Connections accepted so far. */
  connections: () => number;
  /** Requests received so far. */
  requests: RawRequest[];
}

/**
 * A TCP server that reads whole requests (head and Content-Length body) and lets the test answer
 * them with exact bytes. Closed, with its sockets, when the test ends.
 */
async function rawServer(t: TestContext, onRequest: (socket: net.Socket, req: RawRequest) => void, onConnection?: (socket: net.Socket) => void): Promise<RawServer> {
  const sockets = new Set<net.Socket>();
  const requests: RawRequest[] = [];
  let connections = 0;
  const server = net.createServer((socket) => {
    const conn = ++connections;
    let onConn = 0;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    onConnection?.(socket);
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end);
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        const body = buf.toString('utf8', end + 4, end + 4 + length);
        buf = buf.subarray(end + 4 + length);
        const req = { head, body, conn, onConn: ++onConn };
        requests.push(req);
        onRequest(socket, req);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const port = (server.address() as net.AddressInfo).port;
  return { port, origin: `http://127.0.0.1:${port}`, connections: () => connections, requests };
}

interface HttpServer {
  port: number;
  origin: string;
  connections: () => number;
}

/** A node:http server, closed with its connections when the test ends. */
async function httpServer(t: TestContext, handler: http.RequestListener): Promise<HttpServer> {
  const server = http.createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const port = (server.address() as net.AddressInfo).port;
  return { port, origin: `http://127.0.0.1:${port}`, connections: () => connections };
}

/** A pool destroyed when the test ends, whatever state it is in. */
function poolFor(t: TestContext, origin: string, opts?: ConstructorParameters<typeof Http1Pool>[1]): Http1Pool {
  const pool = new Http1Pool(origin, opts);
  t.after(() => pool.destroy());
  return pool;
}

function get(path = '/', extra: Partial<ExchangeRequest> = {}): ExchangeRequest {
  return { method: 'GET', path, headers: '', timeoutMs: 5000, ...extra };
}

type Event = ['head', number, ResponseHeaders] | ['data', string] | ['end'] | ['error', Error & { code?: string }];

interface Recorded {
  events: Event[];
  /** Resolves with the events once onEnd or onError has been called. */
  done: Promise<Event[]>;
  handler: ExchangeHandler;
}

/** A handler that records what happens to an exchange, and checks that nothing follows its end. */
function recorder(hooks: Partial<ExchangeHandler> = {}): Recorded {
  const events: Event[] = [];
  let settle!: (e: Event[]) => void;
  const done = new Promise<Event[]>((resolve) => (settle = resolve));
  let over = false;
  const check = (what: string): void => {
    if (over) assert.fail(`${what} after the exchange had ended: ${JSON.stringify(events)}`);
  };
  return {
    events,
    done,
    handler: {
      onHead: (status, headers) => {
        check('onHead');
        events.push(['head', status, headers]);
        hooks.onHead?.(status, headers);
      },
      onData: (chunk) => {
        check('onData');
        events.push(['data', chunk.toString()]);
        hooks.onData?.(chunk);
      },
      onEnd: () => {
        check('onEnd');
        over = true;
        events.push(['end']);
        hooks.onEnd?.();
        settle(events);
      },
      onError: (err) => {
        check('onError');
        over = true;
        events.push(['error', err]);
        hooks.onError?.(err);
        settle(events);
      },
    },
  };
}

/** The error an exchange ended with, failing the test if it ended well. */
async function failure(rec: Recorded): Promise<Error & { code?: string }> {
  const events = await rec.done;
  const last = events[events.length - 1]!;
  assert.equal(last[0], 'error', `expected the exchange to fail, got ${JSON.stringify(events)}`);
  return last[1] as Error & { code?: string };
}

function assertCode(err: Error & { code?: string }, code: HttpClientErrorCode): void {
  assert.ok(err instanceof HttpClientError, `expected an HttpClientError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
}

const OK = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await delay(5);
  }
  assert.fail(`timed out waiting until ${what}`);
}

/** A port nothing listens on: one the system just gave out and took back. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// ---------------------------------------------------------------------------------------------
// Http1Pool

describe('Http1Pool', () => {
  test('refuses an origin that is not http or https', () => {
    assert.throws(() => new Http1Pool('ftp://127.0.0.1/'), TypeError);
  });

  test('a POST arrives with its method, path, host, length, headers and body, and the answer reaches the handler', async (t) => {
    let seen: { method?: string; url?: string; headers: http.IncomingHttpHeaders; body: string } | undefined;
    const server = await httpServer(t, (req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        seen = { method: req.method, url: req.url, headers: req.headers, body };
        res.writeHead(201, { 'content-type': 'application/json', 'x-answer': 'yes' });
        res.end('{"ok":true}');
      });
    });
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    const body = '{"jsonrpc":"2.0","method":"héllo"}'; // non-ASCII: the length is in bytes, not characters
    pool.exchange(
      {
        method: 'POST',
        path: '/mcp/v1?x=1&y=%20',
        headers: headerBlock({ 'Content-Type': 'application/json', Authorization: 'Bearer t0k' }),
        body,
        timeoutMs: 5000,
      },
      rec.handler,
    );
    const events = await rec.done;
    assert.ok(seen);
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/mcp/v1?x=1&y=%20');
    assert.equal(seen.headers.host, `127.0.0.1:${server.port}`);
    assert.equal(seen.headers['content-length'], String(Buffer.byteLength(body)));
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.headers.authorization, 'Bearer t0k');
    assert.equal(seen.body, body);

    const [head, ...rest] = events;
    assert.equal(head![0], 'head');
    assert.equal(head![1], 201);
    assert.equal((head![2] as ResponseHeaders)['x-answer'], 'yes');
    assert.equal(rest.filter((e) => e[0] === 'data').map((e) => e[1]).join(''), '{"ok":true}');
    assert.deepEqual(rest[rest.length - 1], ['end']);
  });

  test('a POST without a body is sent with Content-Length 0; GET, HEAD and DELETE without one', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 204 No Content\r\n\r\n'));
    const pool = poolFor(t, server.origin);
    for (const method of ['POST', 'GET', 'HEAD', 'DELETE'] as const) {
      const res = await pool.request({ method, path: '/', headers: '', timeoutMs: 5000 });
      assert.equal(res.status, 204);
    }
    const heads = server.requests.map((r) => r.head);
    assert.match(heads[0]!, /^POST \/ HTTP\/1\.1\r\n/);
    assert.match(heads[0]!, /\r\ncontent-length: 0$/);
    for (const h of heads.slice(1)) assert.doesNotMatch(h, /content-length/i);
    assert.equal(server.connections(), 1, 'every request went on the one connection');
  });

  test('bodies larger than a read, answered on several connections at once, each arrive whole and unmixed', async (t) => {
    // Every plain connection reads into one shared buffer; what a read brings must be copied out
    // before the next read, of this connection or another, overwrites it.
    const bodyFor = (url: string) => Buffer.alloc(300_000, url.slice(1));
    const server = await httpServer(t, (req, res) => {
      const body = bodyFor(req.url!);
      // Written in pieces, so that the reads of the connections interleave.
      res.writeHead(200, { 'content-length': body.length });
      let at = 0;
      const more = () => {
        if (at >= body.length) return res.end();
        res.write(body.subarray(at, (at += 7_001)));
        setImmediate(more);
      };
      more();
    });
    const pool = poolFor(t, server.origin);
    const answers = await Promise.all(['/a', '/b', '/c'].map((path) => pool.request(get(path))));
    for (const [i, path] of ['/a', '/b', '/c'].entries()) assert.ok(answers[i]!.body.equals(bodyFor(path)), `the body of ${path} is its own, whole`);
  });

  test('consecutive requests reuse one keep-alive connection', async (t) => {
    const server = await httpServer(t, (req, res) => res.end(`you asked for ${req.url}`));
    const pool = poolFor(t, server.origin);
    for (let i = 0; i < 5; i++) {
      const res = await pool.request(get(`/${i}`));
      assert.equal(res.body.toString(), `you asked for /${i}`);
      assert.equal(pool.connections, 1);
    }
    assert.equal(server.connections(), 1);
  });

  test('an idle keep-alive connection does not keep the process alive, so a command ends when its work does', async (t) => {
    // A server that never closes an idle connection itself.
    const server = await rawServer(t, (socket) => socket.write(OK));
    const script = `
      import { Http1Pool } from ${JSON.stringify(new URL('./http1.js', import.meta.url).href)};
      const pool = new Http1Pool(${JSON.stringify(server.origin)}, { keepAliveMs: 60000 });
      const res = await pool.request({ method: 'GET', path: '/', headers: '', timeoutMs: 60000 });
      console.log(res.status, pool.connections);`;
    const started = Date.now();
    // Asynchronously: the server answering it lives in this process.
    const run = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.stdout.trim(), '200 1', 'the connection was kept, idle');
    assert.ok(Date.now() - started < 10_000, 'the process did not wait for the keep-alive limit');
  });

  test('a request made from within onEnd can reuse the connection that just finished', async (t) => {
    const server = await httpServer(t, (req, res) => res.end(req.url));
    const pool = poolFor(t, server.origin);
    const second = recorder();
    const first = recorder({ onEnd: () => pool.exchange(get('/second'), second.handler) });
    pool.exchange(get('/first'), first.handler);
    await first.done;
    const events = await second.done;
    assert.deepEqual(events.slice(1), [['data', '/second'], ['end']]);
    assert.equal(server.connections(), 1);
  });

  test('concurrent requests open separate connections, which then both stay idle in the pool', async (t) => {
    let waiting: Array<() => void> = [];
    const server = await httpServer(t, (req, res) => {
      // Both requests are held until both have arrived, so they are in flight together.
      waiting.push(() => res.end(req.url));
      if (waiting.length === 2) {
        for (const w of waiting) w();
        waiting = [];
      }
    });
    const pool = poolFor(t, server.origin);
    const a = pool.request(get('/a'));
    const b = pool.request(get('/b'));
    assert.equal(pool.connections, 2);
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.body.toString(), '/a');
    assert.equal(rb.body.toString(), '/b');
    assert.equal(server.connections(), 2);
    assert.equal(pool.connections, 2);
  });

  test('a response with Connection: close is not kept: the next request opens a new connection', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok'));
    const pool = poolFor(t, server.origin);
    assert.equal((await pool.request(get())).body.toString(), 'ok');
    assert.equal(pool.connections, 0);
    assert.equal((await pool.request(get())).body.toString(), 'ok');
    assert.equal(server.connections(), 2);
  });

  test('a body read to the close of the connection is delivered whole', async (t) => {
    const server = await rawServer(t, (socket) => {
      socket.write('HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ');
      setTimeout(() => socket.end('part two'), 10);
    });
    const pool = poolFor(t, server.origin);
    const res = await pool.request(get());
    assert.equal(res.body.toString(), 'part one, part two');
    assert.equal(pool.connections, 0);
  });

  test('a server that closed an idle keep-alive connection costs nothing: the next request goes on a new one', async (t) => {
    const server = await rawServer(t, (socket) => {
      socket.write(OK);
      // The server's idle limit, shorter than anything it announced.
      setTimeout(() => socket.end(), 20);
    });
    const pool = poolFor(t, server.origin);
    await pool.request(get());
    await until(() => pool.connections === 0, 'the pool notices the close');
    assert.equal((await pool.request(get())).body.toString(), 'ok');
    assert.equal(server.connections(), 2);
  });

  /**
   * A server that answers the first request on each connection and does `second` with the next,
   * and a pool whose one connection has already carried a request (GET /one).
   */
  async function reusedConnection(t: TestContext, second: (socket: net.Socket) => void = (socket) => socket.end()) {
    const server = await rawServer(t, (socket, req) => (req.onConn === 1 ? socket.write(OK) : second(socket)));
    const pool = poolFor(t, server.origin);
    await pool.request(get('/one'));
    return { server, pool, seen: () => server.requests.map((r) => r.head.split(' ').slice(0, 2).join(' ')) };
  }

  /** The error of `req` sent on a connection that has carried a request before, whose server does `second`. */
  async function failureOnReused(t: TestContext, second: (socket: net.Socket) => void, req = get()) {
    const reused = await reusedConnection(t, second);
    const rec = recorder();
    reused.pool.exchange(req, rec.handler);
    return { ...reused, err: await failure(rec) };
  }

  test('a reused connection that closes without answering is retried once, transparently, on a new one', async (t) => {
    // The race the retry is for: the server closes an idle connection just as a request leaves on it.
    const { server, pool } = await reusedConnection(t);
    const res = await pool.request(get('/two'));
    assert.equal(res.body.toString(), 'ok');
    assert.deepEqual(
      server.requests.map((r) => [r.conn, r.onConn, r.head.split(' ')[1]]),
      [
        [1, 1, '/one'],
        [1, 2, '/two'],
        [2, 1, '/two'],
      ],
    );
  });

  test('a POST on a reused connection that closes without answering is not sent again: the server may have acted on it', async (t) => {
    const { err, seen } = await failureOnReused(t, (socket) => socket.end(), get('/pay', { method: 'POST', body: '{}' }));
    assertCode(err, 'CLOSED_EARLY');
    assert.deepEqual(seen(), ['GET /one', 'POST /pay']);
  });

  test('a POST marked idempotent is sent again after such a close, and a GET marked otherwise is not', async (t) => {
    const { pool, seen } = await reusedConnection(t);
    const res = await pool.request(get('/list', { method: 'POST', body: '{}', idempotent: true }));
    assert.equal(res.body.toString(), 'ok');
    const rec = recorder();
    pool.exchange(get('/two', { idempotent: false }), rec.handler);
    assertCode(await failure(rec), 'CLOSED_EARLY');
    assert.deepEqual(seen(), ['GET /one', 'POST /list', 'POST /list', 'GET /two']);
  });

  test('a retried request that meets a second silent close fails with CLOSED_EARLY, without a third try', async (t) => {
    const server = await rawServer(t, (socket, req) => {
      if (req.conn === 1 && req.onConn === 1) socket.write(OK);
      else socket.end();
    });
    const pool = poolFor(t, server.origin);
    await pool.request(get());
    const rec = recorder();
    pool.exchange(get(), rec.handler);
    assertCode(await failure(rec), 'CLOSED_EARLY');
    assert.equal(server.connections(), 2);
  });

  test('a request on a fresh connection that the server closes without answering fails with CLOSED_EARLY, not retried', async (t) => {
    const server = await rawServer(t, (socket) => socket.end());
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    pool.exchange(get(), rec.handler);
    const err = await failure(rec);
    assertCode(err, 'CLOSED_EARLY');
    assert.match(err.message, /without answering/);
    assert.equal(rec.events.length, 1, 'no head, no data: only the error');
    // Had it been retried, the error would have waited for a second connection to close.
    assert.equal(server.connections(), 1);
    assert.equal(pool.connections, 0);
  });

  test('a server that closes in the middle of a body fails the exchange with CLOSED_EARLY', async (t) => {
    const server = await rawServer(t, (socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'));
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    pool.exchange(get(), rec.handler);
    const err = await failure(rec);
    assertCode(err, 'CLOSED_EARLY');
    assert.match(err.message, /middle of its response/);
    assert.deepEqual(
      rec.events.slice(0, -1).map((e) => e[0]),
      ['head', 'data'],
    );
  });

  // Part of an answer came, so the server had the request: sending it again could run it twice.
  const partAnswers: Array<[what: string, bytes: string]> = [
    ['the middle of a chunked body', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n'],
    ['only a 100 Continue', 'HTTP/1.1 100 Continue\r\n\r\n'],
  ];
  for (const [what, bytes] of partAnswers) {
    test(`a reused connection that closes after ${what} is not retried, even for a GET`, async (t) => {
      const { err, server } = await failureOnReused(t, (socket) => socket.end(bytes));
      assertCode(err, 'CLOSED_EARLY');
      assert.equal(server.connections(), 1);
    });
  }

  test('a server that never answers fails the exchange with HEADERS_TIMEOUT after timeoutMs', async (t) => {
    const server = await rawServer(t, () => {});
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    pool.exchange(get('/', { timeoutMs: 100 }), rec.handler);
    const err = await failure(rec);
    assertCode(err, 'HEADERS_TIMEOUT');
    assert.match(err.message, /100 ms/);
    assert.equal(pool.connections, 0, 'the silent connection is closed');
  });

  test('an interim 100 Continue does not count as the response head for the timeout', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 100 Continue\r\n\r\n'));
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    pool.exchange(get('/', { timeoutMs: 100 }), rec.handler);
    assertCode(await failure(rec), 'HEADERS_TIMEOUT');
  });

  test('a server that sends the head and then stalls fails the exchange with BODY_TIMEOUT', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc'));
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    // The body's own limit, shorter than the head's.
    pool.exchange(get('/', { timeoutMs: 5000, bodyTimeoutMs: 100 }), rec.handler);
    const err = await failure(rec);
    assertCode(err, 'BODY_TIMEOUT');
    assert.match(err.message, /100 ms/);
    assert.deepEqual(
      rec.events.slice(0, -1).map((e) => e[0]),
      ['head', 'data'],
    );
    assert.equal(pool.connections, 0);
  });

  test('the body timeout defaults to timeoutMs', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'));
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    pool.exchange(get('/', { timeoutMs: 100 }), rec.handler);
    assertCode(await failure(rec), 'BODY_TIMEOUT');
  });

  test('a refused connection surfaces with its errno code', async (t) => {
    const pool = poolFor(t, `http://127.0.0.1:${await closedPort()}`);
    const rec = recorder();
    pool.exchange(get(), rec.handler);
    const err = await failure(rec);
    assert.equal(err.code, 'ECONNREFUSED');
    assert.equal(pool.connections, 0);
  });

  test('a malformed response fails the exchange with PROTOCOL and the connection is dropped', async (t) => {
    const server = await rawServer(t, (socket, req) => socket.write(req.conn === 1 ? 'HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n' : OK));
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    pool.exchange(get(), rec.handler);
    assertCode(await failure(rec), 'PROTOCOL');
    assert.equal(pool.connections, 0);
    assert.equal((await pool.request(get())).body.toString(), 'ok');
    assert.equal(server.connections(), 2);
  });

  test('abort() before the response gives onError the reason, and the connection is not reused', async (t) => {
    const server = await httpServer(t, (_req, res) => setTimeout(() => res.end('late'), 50));
    const pool = poolFor(t, server.origin);
    // Made idle first, so the aborted request goes on a connection the server already knows.
    await pool.request(get());
    assert.equal(server.connections(), 1);
    const rec = recorder();
    const ex = pool.exchange(get(), rec.handler);
    const reason = new Error('the client went away');
    ex.abort(reason);
    assert.deepEqual(await rec.done, [['error', reason]]);
    assert.equal(pool.connections, 0);
    ex.abort(new Error('again')); // a second abort changes nothing
    assert.equal((await pool.request(get())).body.toString(), 'late');
    assert.equal(server.connections(), 2);
  });

  test('abort() without a reason fails the exchange with ABORTED', async (t) => {
    const server = await httpServer(t, () => {});
    const pool = poolFor(t, server.origin);
    const rec = recorder();
    pool.exchange(get(), rec.handler).abort();
    assertCode(await failure(rec), 'ABORTED');
  });

  test('abort() in the middle of the body stops the exchange: no more data, no end, connection closed', async (t) => {
    let more!: () => void;
    const server = await httpServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first');
      more = () => res.end('second');
    });
    const pool = poolFor(t, server.origin);
    const reason = new Error('enough');
    const rec = recorder({ onData: () => ex.abort(reason) });
    const ex = pool.exchange(get(), rec.handler);
    const events = await rec.done;
    assert.deepEqual(
      events.map((e) => e[0]),
      ['head', 'data', 'error'],
    );
    assert.equal(events[2]![1], reason);
    assert.equal(pool.connections, 0);
    more(); // the rest of the body, to a closed connection: it must reach no handler
    await delay(20);
    assert.equal(rec.events.length, 3);
  });

  test('handlers are never called from within exchange(), on any path', async (t) => {
    const server = await rawServer(t, (socket) => socket.write(OK));
    const pool = poolFor(t, server.origin);
    const refused = poolFor(t, `http://127.0.0.1:${await closedPort()}`);
    const closed = new Http1Pool(server.origin);
    await closed.close();
    let inside = false;
    const outcomes: Array<Promise<Event[]>> = [];
    const send = (p: Http1Pool, req: ExchangeRequest): void => {
      const guard = (): void => assert.equal(inside, false, 'a handler was called from within exchange()');
      const rec = recorder({ onHead: guard, onData: guard, onEnd: guard, onError: guard });
      inside = true;
      try {
        p.exchange(req, rec.handler);
      } finally {
        inside = false;
      }
      outcomes.push(rec.done);
    };
    send(pool, get()); // a new connection
    await outcomes[0];
    send(pool, get()); // an idle connection
    send(pool, get('no-slash')); // an invalid request
    send(closed, get()); // a closed pool
    send(refused, get()); // a connection that fails
    const results = await Promise.all(outcomes);
    assert.deepEqual(
      results.map((events) => events[events.length - 1]![0]),
      ['end', 'end', 'error', 'error', 'error'],
    );
  });

  for (const bad of ['relative', '', '/with space', '/with\ttab', '/line\r\nX-Injected: 1', '/nul\0']) {
    test(`the path ${JSON.stringify(bad)} fails with INVALID_REQUEST and sends nothing`, async (t) => {
      const server = await rawServer(t, (socket) => socket.write(OK));
      const pool = poolFor(t, server.origin);
      const rec = recorder();
      pool.exchange(get(bad), rec.handler);
      assertCode(await failure(rec), 'INVALID_REQUEST');
      assert.equal(pool.connections, 0);
      assert.equal(server.connections(), 0);
    });
  }

  test('stray bytes after a response make the pool drop that connection, and the next request still succeeds', async (t) => {
    const server = await rawServer(t, (socket, req) => socket.write(req.conn === 1 ? `${OK}HTTP/1.1 200 OK\r\n` : OK));
    const pool = poolFor(t, server.origin);
    assert.equal((await pool.request(get())).body.toString(), 'ok', 'the response itself was whole');
    assert.equal(pool.connections, 0);
    assert.equal((await pool.request(get())).body.toString(), 'ok');
    assert.equal(server.connections(), 2);
  });

  test('stray bytes arriving on an idle connection make the pool drop it', async (t) => {
    const server = await rawServer(t, (socket, req) => {
      socket.write(OK);
      if (req.conn === 1) setTimeout(() => socket.write('garbage'), 10);
    });
    const pool = poolFor(t, server.origin);
    await pool.request(get());
    await until(() => pool.connections === 0, 'the out-of-step connection is dropped');
    assert.equal((await pool.request(get())).body.toString(), 'ok');
    assert.equal(server.connections(), 2);
  });

  test("an idle connection is kept for the server's Keep-Alive timeout less a margin, then dropped rather than reused", async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok'));
    // timeoutMs well past the wait, so it is the keep-alive limit, not a request timeout, that acts.
    const pool = poolFor(t, server.origin);
    await pool.request(get('/', { timeoutMs: 10_000 }));
    await pool.request(get('/', { timeoutMs: 10_000 }));
    assert.equal(server.connections(), 1, 'reused within the limit (2 s less the 1 s margin)');
    await delay(1_100);
    assert.equal((await pool.request(get('/', { timeoutMs: 10_000 }))).body.toString(), 'ok');
    assert.equal(server.connections(), 2, 'a new connection past the limit');
  });

  test('a Keep-Alive timeout of 1 s, no longer than the margin, means the connection is not kept at all', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok'));
    const pool = poolFor(t, server.origin);
    await pool.request(get());
    assert.equal(pool.connections, 0);
    await pool.request(get());
    assert.equal(server.connections(), 2);
  });

  test('keepAliveMaxMs caps what the server allows', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=600\r\nContent-Length: 2\r\n\r\nok'));
    const pool = poolFor(t, server.origin, { keepAliveMaxMs: 50 });
    await pool.request(get());
    await delay(80);
    await pool.request(get());
    assert.equal(server.connections(), 2);
  });

  test('the keepAliveMs option sets the idle limit when the server gives none', async (t) => {
    const server = await rawServer(t, (socket) => socket.write(OK));
    const pool = poolFor(t, server.origin, { keepAliveMs: 50 });
    await pool.request(get());
    await pool.request(get());
    assert.equal(server.connections(), 1);
    await delay(80);
    await pool.request(get());
    assert.equal(server.connections(), 2);
  });

  test('the maxHeadBytes option limits the response head', async (t) => {
    const server = await rawServer(t, (socket) => socket.write(`HTTP/1.1 200 OK\r\nX-Big: ${'b'.repeat(500)}\r\nContent-Length: 0\r\n\r\n`));
    const pool = poolFor(t, server.origin, { maxHeadBytes: 256 });
    await assert.rejects(pool.request(get()), (err: unknown) => err instanceof HttpClientError && err.code === 'PROTOCOL' && /larger than 256/.test(err.message));
  });

  test('request() buffers a body that arrives in pieces', async (t) => {
    const server = await httpServer(t, (_req, res) => {
      res.writeHead(200, { 'x-kind': 'pieces' });
      res.write('one,');
      setTimeout(() => {
        res.write('two,');
        setTimeout(() => res.end('three'), 5);
      }, 5);
    });
    const pool = poolFor(t, server.origin);
    const res = await pool.request(get());
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-kind'], 'pieces');
    assert.equal(res.headers['transfer-encoding'], 'chunked');
    assert.ok(Buffer.isBuffer(res.body));
    assert.equal(res.body.toString(), 'one,two,three');
  });

  test('request() gives an empty buffer for a response without a body', async (t) => {
    const server = await rawServer(t, (socket) => socket.write('HTTP/1.1 204 No Content\r\n\r\n'));
    const pool = poolFor(t, server.origin);
    const res = await pool.request(get());
    assert.equal(res.status, 204);
    assert.equal(res.body.length, 0);
  });

  test('request() refuses a body larger than maxBodyBytes and drops the connection', async (t) => {
    const server = await httpServer(t, (req, res) => res.end(req.url === '/big' ? 'x'.repeat(100) : 'small'));
    const pool = poolFor(t, server.origin);
    assert.equal((await pool.request(get('/exact'), 5)).body.toString(), 'small', 'a body of exactly the limit is fine');
    await assert.rejects(pool.request(get('/big'), 10), (err: unknown) => err instanceof HttpClientError && err.code === 'PROTOCOL' && /larger than 10 bytes/.test(err.message));
    assert.equal(pool.connections, 0);
  });

  test('request() rejects with the error an exchange fails with', async (t) => {
    const pool = poolFor(t, `http://127.0.0.1:${await closedPort()}`);
    await assert.rejects(pool.request(get()), { code: 'ECONNREFUSED' });
  });

  test('close() lets an exchange in flight finish, refuses new ones with POOL_CLOSED, then closes every connection', async (t) => {
    let answer!: () => void;
    const server = await httpServer(t, (req, res) => {
      if (req.url === '/slow') answer = () => res.end('finished');
      else res.end('quick');
    });
    const pool = poolFor(t, server.origin);
    // One connection busy and one idle: close() ends the idle one at once.
    const slow = pool.request(get('/slow'));
    await pool.request(get('/quick'));
    await until(() => answer !== undefined, 'the slow request arrives');
    assert.equal(pool.connections, 2);
    let closed = false;
    const closing = pool.close().then(() => (closed = true));
    assert.equal(pool.connections, 1, 'the idle connection is closed at once');

    const refused = recorder();
    pool.exchange(get(), refused.handler);
    assertCode(await failure(refused), 'POOL_CLOSED');
    assert.equal(closed, false, 'close() waits for the exchange in flight');

    answer();
    assert.equal((await slow).body.toString(), 'finished');
    await closing;
    assert.equal(pool.connections, 0);
  });

  test('close() called twice while an exchange is in flight resolves both calls once it finishes', async (t) => {
    let answer!: () => void;
    const server = await httpServer(t, (_req, res) => (answer = () => res.end('done')));
    const pool = poolFor(t, server.origin);
    const inFlight = pool.request(get());
    await until(() => answer !== undefined, 'the request arrives');
    const first = pool.close();
    const second = pool.close();
    answer();
    await inFlight;
    // Neither caller may be left waiting forever (the test would be cancelled).
    await Promise.all([first, second]);
    assert.equal(pool.connections, 0);
  });

  test('close() with nothing in flight resolves at once', async (t) => {
    const server = await httpServer(t, (_req, res) => res.end('x'));
    const pool = poolFor(t, server.origin);
    await pool.request(get());
    await pool.close();
    assert.equal(pool.connections, 0);
  });

  test('destroy() fails the exchanges in flight with POOL_CLOSED, or with the reason given', async (t) => {
    const server = await rawServer(t, () => {});
    const pool = poolFor(t, server.origin);
    const a = recorder();
    const b = recorder();
    pool.exchange(get('/a'), a.handler);
    pool.exchange(get('/b'), b.handler);
    await until(() => server.requests.length === 2, 'both requests arrive');
    pool.destroy();
    assertCode(await failure(a), 'POOL_CLOSED');
    assertCode(await failure(b), 'POOL_CLOSED');
    assert.equal(pool.connections, 0);

    const other = poolFor(t, server.origin);
    const c = recorder();
    other.exchange(get('/c'), c.handler);
    const reason = new Error('shutting down');
    other.destroy(reason);
    assert.equal(await failure(c), reason);
  });

  test('an SSE-style chunked response streamed in several writes is delivered piece by piece, before its end', async (t) => {
    // The server writes each event only once the client has the one before: were the pieces held
    // back until the end, this test would never finish.
    const received: Array<() => void> = [];
    const next = (): Promise<void> => new Promise((resolve) => received.push(resolve));
    const server = await httpServer(t, async (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.flushHeaders();
      for (const id of [1, 2, 3]) {
        const got = next();
        res.write(`id: ${id}\ndata: {"n":${id}}\n\n`);
        await got;
      }
      res.end();
    });
    const pool = poolFor(t, server.origin);
    const data: string[] = [];
    const rec = recorder({
      onData: (c) => {
        data.push(c.toString());
        // The whole event is in: let the server send the next one.
        if (data.join('').endsWith('\n\n')) received.shift()?.();
      },
    });
    pool.exchange(get('/events', { headers: headerBlock({ Accept: 'text/event-stream' }), timeoutMs: 5000 }), rec.handler);
    const events = await rec.done;
    assert.equal(events[0]![0], 'head');
    assert.equal((events[0]![2] as ResponseHeaders)['content-type'], 'text/event-stream');
    assert.equal(data.join(''), 'id: 1\ndata: {"n":1}\n\nid: 2\ndata: {"n":2}\n\nid: 3\ndata: {"n":3}\n\n');
    assert.ok(data.length >= 3, 'one onData call (at least) per write');
    assert.deepEqual(events[events.length - 1], ['end']);
    assert.equal(pool.connections, 1, 'a chunked stream leaves the connection reusable');
  });

  describe('https', () => {
    // A self-signed certificate for 127.0.0.1, made at test time so that no key is committed.
    let cert: { key: string; cert: string } | undefined;
    let skip: string | false = false;
    const dir = mkdtempSync(path.join(tmpdir(), 'http1-tls-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    const made = spawnSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
        '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'pipe', timeout: 10_000 },
    );
    if (made.error !== undefined) skip = `openssl is not available (${made.error.message})`;
    else if (made.status !== 0) skip = `openssl could not make a certificate: ${made.stderr.toString().trim().split('\n')[0]}`;
    else cert = { key: readFileSync(path.join(dir, 'key.pem'), 'utf8'), cert: readFileSync(path.join(dir, 'cert.pem'), 'utf8') };

    async function httpsServer(t: TestContext): Promise<{ origin: string; connections: () => number }> {
      const server = https.createServer({ key: cert!.key, cert: cert!.cert }, (req, res) => res.end(`secure ${req.url} ${req.headers.host}`));
      let connections = 0;
      server.on('secureConnection', () => connections++);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      t.after(async () => {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      });
      const port = (server.address() as net.AddressInfo).port;
      return { origin: `https://127.0.0.1:${port}`, connections: () => connections };
    }

    test('requests over TLS to a server whose certificate is trusted through tls.ca, on one connection', { skip }, async (t) => {
      const server = await httpsServer(t);
      const pool = poolFor(t, server.origin, { tls: { ca: cert!.cert } });
      const host = new URL(server.origin).host;
      assert.equal((await pool.request(get('/a'))).body.toString(), `secure /a ${host}`);
      assert.equal((await pool.request(get('/b'))).body.toString(), `secure /b ${host}`);
      assert.equal(server.connections(), 1);
    });

    test('a certificate that is not trusted fails the exchange with the TLS error', { skip }, async (t) => {
      const server = await httpsServer(t);
      const pool = poolFor(t, server.origin);
      const rec = recorder();
      pool.exchange(get(), rec.handler);
      const err = await failure(rec);
      assert.equal(err.code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
    });
  });
});
