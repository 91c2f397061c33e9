import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, Agent, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { FastLane, parseRequest, type LaneOptions, type LaneRequest, type LaneResponse } from './lane.js';

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const MCP = '/mcp/x';
const accepts = (method: string, path: string) => method === 'POST' && path.startsWith('/mcp/');
const parseOpts = { maxBodyBytes: 1024, accepts };

/** A request made of head lines (joined with CRLF, Latin-1) and a UTF-8 body. */
function raw(lines: string[], body = ''): Buffer {
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), Buffer.from(body, 'utf8')]);
}

/** A well-formed POST the lane takes, with `extra` header lines added. */
function post(body = '', extra: string[] = [], target = MCP): Buffer {
  return raw([`POST ${target} HTTP/1.1`, 'host: a', `content-length: ${Buffer.byteLength(body)}`, ...extra], body);
}

function parse(buf: Buffer | string, opts: Partial<typeof parseOpts> = {}) {
  return parseRequest(typeof buf === 'string' ? Buffer.from(buf, 'latin1') : buf, { ...parseOpts, ...opts });
}

interface RawResponse {
  status: number;
  /** The head's bytes, status line to the last header line. */
  head: Buffer;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
}

/** One test per case: the lane hands the request over to node:http rather than read it. */
function eachIsHandedOver(cases: Array<[string, Buffer]>): void {
  for (const [name, buf] of cases) {
    test(`${name} is handed over`, () => {
      assert.equal(parse(buf).kind, 'hand-over');
    });
  }
}

/** Reads one response at the start of `buf` (Content-Length or chunked), or undefined if not all here. */
function parseResponse(buf: Buffer): { res: RawResponse; end: number } | undefined {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return undefined;
  const head = buf.subarray(0, headEnd);
  const lines = head.toString('latin1').split('\r\n');
  const status = Number(lines[0]!.split(' ')[1]);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  let at = headEnd + 4;
  let body: Buffer;
  if (headers['transfer-encoding'] === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol < 0) return undefined;
      const size = parseInt(buf.toString('latin1', at, eol), 16);
      if (buf.length < eol + 2 + size + 2) return undefined;
      if (size === 0) {
        at = eol + 4;
        break;
      }
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else {
    const length = Number(headers['content-length'] ?? 0);
    if (buf.length < at + length) return undefined;
    body = buf.subarray(at, at + length);
    at += length;
  }
  return { res: { status, head: Buffer.from(head), headers, body: Buffer.from(body), text: body.toString('utf8') }, end: at };
}

/** A raw TCP client that reads responses byte-exactly and knows when the server closed its side. */
class RawClient {
  private buf = Buffer.alloc(0);
  serverEnded = false;
  closed = false;
  private waiting: Array<() => void> = [];

  constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('end', () => {
      this.serverEnded = true;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  private wake(): void {
    for (const fn of this.waiting.splice(0)) fn();
  }

  private until<T>(check: () => T | undefined, what: string, ms: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}; unread bytes: ${JSON.stringify(this.buf.toString('latin1'))}`)), ms);
      const attempt = () => {
        const value = check();
        if (value !== undefined) {
          clearTimeout(timer);
          resolve(value);
        } else this.waiting.push(attempt);
      };
      attempt();
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Writes `data` a few bytes at a time, letting each piece leave before the next. */
  async trickle(data: string | Buffer, size = 4): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    for (let i = 0; i < buf.length; i += size) {
      this.socket.write(buf.subarray(i, i + size));
      await sleep(2);
    }
  }

  /** The next whole response. */
  response(ms = 1000): Promise<RawResponse> {
    return this.until(
      () => {
        const parsed = parseResponse(this.buf);
        if (parsed === undefined) return undefined;
        this.buf = this.buf.subarray(parsed.end);
        return parsed.res;
      },
      'a response',
      ms,
    );
  }

  /** Resolves once the server has closed the connection (FIN or reset). */
  serverClosed(ms = 1000): Promise<true> {
    return this.until(() => (this.serverEnded || this.closed ? true : undefined), 'the server to close the connection', ms);
  }

  /** Whatever bytes are here and not yet read as a response. */
  get unread(): Buffer {
    return this.buf;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with the value `emit` is called with, or rejects after `ms`. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e as Error);
      },
    );
  });
}

interface Fixture {
  server: Server;
  lane: FastLane;
  port: number;
  /** Every request the lane's handler was given, in order. */
  laneRequests: LaneRequest[];
  /** The server's side of every connection, in the order they came. */
  serverSockets: Socket[];
  connect(): Promise<RawClient>;
}

/** The lane's default answer: `x-by: lane` and an echo of what it read. */
function laneEcho(req: LaneRequest, res: LaneResponse): void {
  res.setHeader('x-by', 'lane');
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: req.body }));
}

/**
 * node:http on 127.0.0.1 with the lane in front. node:http's handler answers `x-by: node` with an
 * echo of the request (body read whole) and a header with a Latin-1 character; the lane's defaults to laneEcho.
 */
async function start(t: TestContext, opts: Partial<LaneOptions> = {}): Promise<Fixture> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('x-by', 'node');
      res.setHeader('x-name', 'café');
      res.setHeader('content-type', 'application/json');
      // A Buffer body, so that node:http writes its head on its own, in Latin-1 (with a string
      // body it joins the head to it and writes both as UTF-8).
      res.end(Buffer.from(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })));
    });
  });
  const laneRequests: LaneRequest[] = [];
  const handle = opts.handle ?? laneEcho;
  const lane = new FastLane(server, {
    maxBodyBytes: 1024,
    keepAliveTimeoutMs: 5000,
    accepts,
    ...opts,
    handle: (req, res) => {
      laneRequests.push(req);
      handle(req, res);
    },
  });
  const serverSockets: Socket[] = [];
  server.on('connection', (socket: Socket) => serverSockets.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const clients: RawClient[] = [];
  t.after(async () => {
    for (const c of clients) c.socket.destroy();
    lane.closeAll();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    server,
    lane,
    port,
    laneRequests,
    serverSockets,
    connect: () =>
      new Promise<RawClient>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1');
        const client = new RawClient(socket);
        clients.push(client);
        socket.once('connect', () => resolve(client));
        socket.once('error', reject);
      }),
  };
}

interface Echo {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A lane that holds the first request whose body is 'hold' unanswered (`held` gives its response,
 * `closed` whether it had finished when it emitted 'close') and echoes every other.
 */
async function holding(t: TestContext): Promise<{ f: Fixture; held: Promise<LaneResponse>; closed: Promise<boolean> }> {
  const held = deferred<LaneResponse>();
  const closed = deferred<boolean>();
  const f = await start(t, {
    handle: (req, res) => {
      if (req.body !== 'hold') return laneEcho(req, res);
      res.on('close', () => closed.resolve(res.writableFinished));
      held.resolve(res);
    },
  });
  return { f, held: held.promise, closed: closed.promise };
}

function echo(res: RawResponse | { text: string }): Echo {
  return JSON.parse(res.text) as Echo;
}

/** A POST through node's http client; resolves with the response, body read whole. */
function clientPost(port: number, body: string, agent?: Agent, path = MCP): Promise<{ status: number; headers: IncomingHttpHeaders; text: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path, agent: agent ?? false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'), reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// parseRequest
// ---------------------------------------------------------------------------------------------

describe('parseRequest reads a request the lane takes', () => {
  test('a simple POST is read whole: method, target, lowercase headers, UTF-8 body and where it ends', () => {
    const body = '{"jsonrpc":"2.0","params":{"text":"héllo ☃ 😀"}}';
    const buf = raw(['POST /mcp/x?session=1 HTTP/1.1', 'Host: 127.0.0.1:4100', 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`, 'MCP-Protocol-Version:  2025-06-18\t'], body);
    const parsed = parse(buf);
    assert.equal(parsed.kind, 'request');
    if (parsed.kind !== 'request') return;
    assert.equal(parsed.req.method, 'POST');
    assert.equal(parsed.req.url, '/mcp/x?session=1');
    assert.deepEqual(parsed.req.headers, {
      host: '127.0.0.1:4100',
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'mcp-protocol-version': '2025-06-18',
    });
    assert.equal(parsed.req.body, body);
    assert.equal(parsed.end, buf.length);
    assert.equal(parsed.close, false);
  });

  test('accepts is asked about the method and the path without its query string', () => {
    const asked: Array<[string, string]> = [];
    parse(post('', [], '/mcp/x?a=b'), { accepts: (m, p) => (asked.push([m, p]), true) });
    assert.deepEqual(asked, [['POST', '/mcp/x']]);
  });

  test('connection: close sets the close flag, keep-alive does not, and the options are read case-insensitively', () => {
    const close = parse(post('{}', ['connection: close']));
    assert.ok(close.kind === 'request' && close.close);
    const keepAlive = parse(post('{}', ['connection: keep-alive']));
    assert.ok(keepAlive.kind === 'request' && !keepAlive.close);
    const both = parse(post('{}', ['Connection: Keep-Alive, CLOSE']));
    assert.ok(both.kind === 'request' && both.close);
  });

  test('a request followed by the next one ends where the first one does', () => {
    const first = post('one');
    const buf = Buffer.concat([first, post('two')]);
    const parsed = parse(buf);
    assert.ok(parsed.kind === 'request');
    assert.equal(parsed.end, first.length);
    assert.equal(parsed.req.body, 'one');
    const second = parse(buf.subarray(parsed.end));
    assert.ok(second.kind === 'request' && second.req.body === 'two');
  });

  test('an empty body with content-length 0 is read as the empty string', () => {
    const parsed = parse(post(''));
    assert.ok(parsed.kind === 'request' && parsed.req.body === '');
  });

  test('a Content-Length with leading zeros is read as its number', () => {
    const parsed = parse(raw([`POST ${MCP} HTTP/1.1`, 'host: a', 'content-length: 003'], 'abc'));
    assert.ok(parsed.kind === 'request' && parsed.req.body === 'abc');
  });

  test('a body of exactly maxBodyBytes is taken', () => {
    const parsed = parse(post('x'.repeat(1024)));
    assert.ok(parsed.kind === 'request');
  });

  test('a header value with obs-text bytes is read as Latin-1 characters, as node:http reads it', () => {
    const parsed = parse(post('', ['x-name: caf\xe9']));
    assert.ok(parsed.kind === 'request' && parsed.req.headers['x-name'] === 'café');
  });

  test('every prefix of a valid request is incomplete, and the whole is read as the same request whatever follows it', () => {
    const token = fc.stringMatching(/^[a-z][a-z0-9-]{0,11}$/).filter((n) => !['content-length', 'transfer-encoding', 'expect', 'upgrade', 'connection', 'host'].includes(n) && !(n in {}));
    const value = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/);
    fc.assert(
      fc.property(
        fc.stringMatching(/^\/mcp\/[a-z0-9]{0,8}(\?[a-z0-9=&]{0,8})?$/),
        fc.uniqueArray(fc.tuple(token, value, fc.boolean()), { selector: ([name]) => name, maxLength: 6 }),
        fc.constantFrom(undefined, 'keep-alive', 'close', 'Keep-Alive, close'),
        fc.string({ unit: 'grapheme', maxLength: 40 }),
        fc.uint8Array({ maxLength: 20 }),
        (target, headers, connection, body, trailing) => {
          const lines = [`POST ${target} HTTP/1.1`, 'host: gateway', ...headers.map(([n, v, upper]) => `${upper ? n.toUpperCase() : n}: ${v}`)];
          if (connection !== undefined) lines.push(`connection: ${connection}`);
          lines.push(`content-length: ${Buffer.byteLength(body)}`);
          const whole = raw(lines, body);
          for (let i = 0; i < whole.length; i++) assert.equal(parse(whole.subarray(0, i)).kind, 'incomplete', `prefix of ${i} bytes`);
          const parsed = parse(Buffer.concat([whole, trailing]));
          assert.equal(parsed.kind, 'request');
          if (parsed.kind !== 'request') return;
          assert.equal(parsed.end, whole.length);
          assert.equal(parsed.req.method, 'POST');
          assert.equal(parsed.req.url, target);
          assert.equal(parsed.req.body, body);
          assert.equal(parsed.close, connection !== undefined && connection.toLowerCase().includes('close'));
          for (const [name, v] of headers) assert.equal(parsed.req.headers[name], v);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('parseRequest hands over what the lane does not take', () => {
  const line = `POST ${MCP} HTTP/1.1`;
  const cases: Array<[string, Buffer]> = [
    ['a GET, when only POST is accepted', raw([`GET ${MCP} HTTP/1.1`, 'host: a'])],
    ['a POST to a path the listener does not accept', post('', [], '/admin/api/x')],
    ['an HTTP/1.0 request', raw([`POST ${MCP} HTTP/1.0`, 'host: a', 'content-length: 0'])],
    ['a request line with two spaces before the target', raw([`POST  ${MCP} HTTP/1.1`, 'host: a', 'content-length: 0'])],
    ['a request line with a lowercase protocol', raw([`POST ${MCP} http/1.1`, 'host: a', 'content-length: 0'])],
    ['a method that is not a token', raw([`PO(ST ${MCP} HTTP/1.1`, 'host: a', 'content-length: 0'])],
    ['an absolute-form target', raw(['POST http://a/mcp/x HTTP/1.1', 'host: a', 'content-length: 0'])],
    ['an asterisk target', raw(['POST * HTTP/1.1', 'host: a', 'content-length: 0'])],
    ['a target with a non-ASCII byte', raw([`POST /mcp/caf\xe9 HTTP/1.1`, 'host: a', 'content-length: 0'])],
    ['a Transfer-Encoding header, even with a Content-Length', raw([line, 'host: a', 'content-length: 5', 'transfer-encoding: chunked'], 'hello')],
    ['a Transfer-Encoding header alone', raw([line, 'host: a', 'Transfer-Encoding: chunked'], '0\r\n\r\n')],
    ['an Expect header', post('{}', ['expect: 100-continue'])],
    ['an Upgrade header', post('{}', ['upgrade: h2c'])],
    ['two Content-Length headers, even equal ones', raw([line, 'host: a', 'content-length: 2', 'content-length: 2'], '{}')],
    ['two Host headers', raw([line, 'host: a', 'host: b', 'content-length: 0'])],
    ['the same header twice in different case', raw([line, 'Host: a', 'host: a', 'content-length: 0'])],
    ['a header name with a space before the colon', raw([line, 'host: a', 'content-length : 2'], '{}')],
    ['a header line without a colon', raw([line, 'host: a', 'content-length: 0', 'x-a'])],
    ['a header with an empty name', raw([line, 'host: a', 'content-length: 0', ': x'])],
    ['a folded header line (obs-fold)', raw([line, 'host: a', 'x-a: b', ' c', 'content-length: 0'])],
    ['a folded header line with a tab', raw([line, 'host: a', 'content-length: 0', 'x-a: b', '\tc'])],
    ['a control character inside a value', raw([line, 'host: a', 'x-a: b\x01c', 'content-length: 0'])],
    ['a DEL inside a value', raw([line, 'host: a', 'x-a: b\x7fc', 'content-length: 0'])],
    ['a NUL inside a value', raw([line, 'host: a', 'x-a: b\x00c', 'content-length: 0'])],
    ['a bare LF ending a header line', Buffer.from(`${line}\r\nhost: a\nx-a: b\r\ncontent-length: 0\r\n\r\n`, 'latin1')],
    ['a bare LF ending the request line', Buffer.from(`${line}\nhost: a\r\ncontent-length: 0\r\n\r\n`, 'latin1')],
    ['a request with no Content-Length', raw([line, 'host: a'])],
    ['a Content-Length that is not digits', raw([line, 'host: a', 'content-length: abc'])],
    ['a hexadecimal Content-Length', raw([line, 'host: a', 'content-length: 0x2'], '{}')],
    ['a Content-Length in exponent form', raw([line, 'host: a', 'content-length: 2e0'], '{}')],
    ['a Content-Length with a decimal point', raw([line, 'host: a', 'content-length: 2.0'], '{}')],
    ['a Content-Length listing two values', raw([line, 'host: a', 'content-length: 2, 2'], '{}')],
    ['a Content-Length with a plus sign', raw([line, 'host: a', 'content-length: +2'], '{}')],
    ['a Content-Length with a minus sign', raw([line, 'host: a', 'content-length: -2'], '{}')],
    ['an empty Content-Length', raw([line, 'host: a', 'content-length:'])],
    ['a Content-Length with spaces between digits', raw([line, 'host: a', 'content-length: 1 0'], '{}')],
    ['a Content-Length of sixteen digits', raw([line, 'host: a', 'content-length: 1000000000000000'])],
    ['a Content-Length above maxBodyBytes, before its body has arrived', raw([line, 'host: a', 'content-length: 1025'])],
    ['a Content-Length above maxBodyBytes, with its body', post('x'.repeat(1025))],
    ['a Connection option other than keep-alive or close', post('{}', ['connection: upgrade'])],
    ['keep-alive with another Connection option', post('{}', ['connection: keep-alive, x-hop'])],
    ['an empty Connection header', post('{}', ['connection:'])],
    ['a complete head over 16 KiB', post('{}', [`x-big: ${'a'.repeat(16 * 1024)}`])],
    ['over 16 KiB of head with no end yet', Buffer.from(`${line}\r\nhost: a\r\nx-big: ${'a'.repeat(16 * 1024)}`, 'latin1')],
    ['a blank line before the request line', Buffer.concat([Buffer.from('\r\n'), post('{}')])],
  ];
  eachIsHandedOver(cases);
  test('a head of just under 16 KiB is still read', () => {
    const base = post('{}', ['x-big: ']);
    const buf = post('{}', [`x-big: ${'a'.repeat(16 * 1024 - base.length + 2)}`]);
    assert.equal(buf.length - 2, 16 * 1024);
    assert.equal(parse(buf).kind, 'request');
  });
});

describe('parseRequest hands over a value that only looks well-formed once trimmed', () => {
  // node:http answers 400 to each of these; the lane must not read them as valid requests.
  const line = `POST ${MCP} HTTP/1.1`;
  const cases: Array<[string, Buffer]> = [
    ['a vertical tab after the Content-Length digits', raw([line, 'host: a', 'content-length: 2\x0b'], '{}')],
    ['a form feed before the Content-Length digits', raw([line, 'host: a', 'content-length: \x0c2'], '{}')],
    ['a no-break space (0xA0) before the Content-Length digits', raw([line, 'host: a', 'content-length: \xa02'], '{}')],
    ['a bare CR at the end of a Content-Length value', raw([line, 'host: a', 'content-length: 2\r'], '{}')],
    ['a bare LF at the end of a Content-Length value', raw([line, 'host: a', 'content-length: 2\n'], '{}')],
    ['a vertical tab at the end of any value', raw([line, 'host: a\x0b', 'content-length: 2'], '{}')],
  ];
  eachIsHandedOver(cases);
});

describe('parseRequest does not wait for a blank line that cannot come', () => {
  // node:http answers these with 400 at once; a lane that waits for CRLFCRLF holds them for
  // headersTimeoutMs (60 s by default) and then answers 408.
  test('a request whose lines all end in a bare LF is handed over', () => {
    assert.equal(parse(`POST ${MCP} HTTP/1.1\nhost: a\ncontent-length: 2\n\n{}`).kind, 'hand-over');
  });
  test('bytes that cannot begin an HTTP request (a TLS ClientHello) are handed over', () => {
    assert.equal(parse(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])).kind, 'hand-over');
  });
});

describe('parseRequest leaves to node:http what HTTP/1.1 requires it to refuse', () => {
  test('a request without a Host header is handed over (node:http answers it 400)', () => {
    assert.equal(parse(raw([`POST ${MCP} HTTP/1.1`, 'content-length: 2'], '{}')).kind, 'hand-over');
  });
});

// ---------------------------------------------------------------------------------------------
// FastLane in front of node:http
// ---------------------------------------------------------------------------------------------

describe('FastLane in front of node:http', { timeout: 5000 }, () => {
  test('the lane refuses a server that does not have exactly node:http one connection listener', () => {
    const server = createServer();
    server.on('connection', () => {});
    assert.throws(() => new FastLane(server, { maxBodyBytes: 1, keepAliveTimeoutMs: 1, accepts, handle: () => {} }), /one connection listener/);
  });

  test('two POSTs on one keep-alive connection are both answered by the lane', async (t) => {
    const f = await start(t);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const first = await clientPost(f.port, '{"n":1}', agent);
    const second = await clientPost(f.port, '{"n":2}', agent);
    assert.equal(first.headers['x-by'], 'lane');
    assert.equal(second.headers['x-by'], 'lane');
    assert.equal(first.headers.connection, 'keep-alive');
    assert.equal(echo(first).body, '{"n":1}');
    assert.equal(echo(second).body, '{"n":2}');
    assert.equal(second.reused, true);
    assert.equal(f.lane.size, 1);
  });

  test('a POST through fetch is answered by the lane', async (t) => {
    const f = await start(t);
    const res = await fetch(`http://127.0.0.1:${f.port}${MCP}`, { method: 'POST', body: '{"a":"é"}', headers: { 'content-type': 'application/json', connection: 'close' } });
    assert.equal(res.headers.get('x-by'), 'lane');
    assert.equal(echo({ text: await res.text() }).body, '{"a":"é"}');
  });

  test('pipelined POSTs sent in one write are answered in order, one at a time, even when the first is slowest', async (t) => {
    const events: string[] = [];
    const f = await start(t, {
      handle: (req, res) => {
        events.push(`start ${req.body}`);
        const answer = () => {
          events.push(`end ${req.body}`);
          res.setHeader('x-by', 'lane');
          res.end(req.body);
        };
        if (req.body === 'slow') setTimeout(answer, 30);
        else answer();
      },
    });
    const c = await f.connect();
    c.write(Buffer.concat([post('slow'), post('fast'), post('third')]));
    const bodies = [(await c.response()).text, (await c.response()).text, (await c.response()).text];
    assert.deepEqual(bodies, ['slow', 'fast', 'third']);
    assert.deepEqual(events, ['start slow', 'end slow', 'start fast', 'end fast', 'start third', 'end third']);
  });

  test('a GET after a lane-answered POST goes to node:http with its bytes intact, and the connection stays with node:http', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    c.write(post('{"first":true}'));
    const first = await c.response();
    assert.equal(first.headers['x-by'], 'lane');
    assert.equal(f.lane.size, 1);

    c.write(raw(['GET /mcp/x?stream=1&q=%20 HTTP/1.1', 'Host: a', 'X-Check: value with  spaces', 'Accept: text/event-stream']));
    const get = await c.response();
    assert.equal(get.headers['x-by'], 'node');
    const seen = echo(get);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/mcp/x?stream=1&q=%20');
    assert.equal(seen.headers['x-check'], 'value with  spaces');
    assert.equal(seen.headers.accept, 'text/event-stream');
    assert.equal(f.lane.size, 0);

    c.write(post('{"third":"ü"}'));
    const third = await c.response();
    assert.equal(third.headers['x-by'], 'node');
    assert.equal(echo(third).body, '{"third":"ü"}');
    assert.equal(f.laneRequests.length, 1);
  });

  test('a GET pipelined behind a POST in one write goes to node:http once the POST is answered, its bytes intact', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    c.write(Buffer.concat([post('one'), raw(['GET /other HTTP/1.1', 'host: a', 'x-check: 1']), post('three', ['x-check: 3'])]));
    const one = await c.response();
    const two = await c.response();
    const three = await c.response();
    assert.deepEqual([one.headers['x-by'], two.headers['x-by'], three.headers['x-by']], ['lane', 'node', 'node']);
    assert.equal(echo(two).url, '/other');
    assert.equal(echo(two).headers['x-check'], '1');
    assert.equal(echo(three).body, 'three');
    assert.equal(echo(three).headers['x-check'], '3');
  });

  test('a POST whose head and body arrive a few bytes at a time is still answered by the lane', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    await c.trickle(post('{"slowly":"☃"}'), 3);
    const res = await c.response();
    assert.equal(res.headers['x-by'], 'lane');
    assert.equal(echo(res).body, '{"slowly":"☃"}');
  });

  test('a GET whose head arrives a few bytes at a time is handed to node:http whole', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    await c.trickle(raw(['GET /healthz?x=1 HTTP/1.1', 'host: a', 'x-check: trickled']), 3);
    const res = await c.response();
    assert.equal(res.headers['x-by'], 'node');
    assert.equal(echo(res).url, '/healthz?x=1');
    assert.equal(echo(res).headers['x-check'], 'trickled');
  });

  test('a chunked POST goes to node:http, which reads its body whole, even when it arrives in pieces', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    const head = raw([`POST ${MCP} HTTP/1.1`, 'host: a', 'transfer-encoding: chunked']);
    await c.trickle(Buffer.concat([head, Buffer.from('5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n')]), 5);
    const res = await c.response();
    assert.equal(res.headers['x-by'], 'node');
    assert.equal(echo(res).body, 'hello, world');
    assert.equal(f.laneRequests.length, 0);
  });

  test('a large body arriving in many pieces is read whole', async (t) => {
    const f = await start(t, { maxBodyBytes: 1024 * 1024 });
    const c = await f.connect();
    const body = JSON.stringify({ text: 'é☃'.repeat(40_000) });
    const whole = post(body);
    for (let i = 0; i < whole.length; i += 16 * 1024) {
      c.write(whole.subarray(i, i + 16 * 1024));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const res = await c.response();
    assert.equal(res.headers['x-by'], 'lane');
    assert.equal(echo(res).body, body);
  });

  test('many requests sent ahead of a pending answer, more than the lane buffers, are all answered in order once it is', async (t) => {
    const held = deferred<LaneResponse>();
    const f = await start(t, {
      maxBodyBytes: 64,
      handle: (req, res) => {
        if (req.body === 'hold') held.resolve(res);
        else res.end(req.body);
      },
    });
    const c = await f.connect();
    c.write(post('hold'));
    const first = await within(held.promise, 500, 'the held request');
    const count = 600;
    const ahead = Buffer.concat(Array.from({ length: count }, (_, i) => post(`n${i}`)));
    assert.ok(ahead.length > 64 + 16 * 1024, 'more than a request and a head ahead');
    c.write(ahead);
    await sleep(20);
    assert.equal(f.serverSockets[0]!.isPaused(), true, 'the lane stops reading past a request and a head');
    first.end('held');
    assert.equal((await c.response()).text, 'held');
    for (let i = 0; i < count; i++) assert.equal((await c.response()).text, `n${i}`);
    assert.equal(f.laneRequests.length, count + 1);
  });

  test('whatever way a run of pipelined requests is cut into writes, each is answered in order by the lane or, from the first it does not take, by node:http', async (t) => {
    const f = await start(t);
    const arbRequest = fc.oneof(
      fc.string({ unit: 'grapheme', maxLength: 30 }).map((body) => ({ lane: true, body, bytes: post(body) })),
      fc.string({ unit: 'grapheme-ascii', maxLength: 10 }).map((body) => ({ lane: false, body, bytes: raw([`POST ${MCP} HTTP/1.1`, 'host: a', 'transfer-encoding: chunked'], body === '' ? '0\r\n\r\n' : `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`) })),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(arbRequest, { minLength: 1, maxLength: 5 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }), async (requests, cuts) => {
        const c = await f.connect();
        try {
          const whole = Buffer.concat(requests.map((r) => r.bytes));
          let at = 0;
          for (let i = 0; at < whole.length; i++) {
            const size = i < cuts.length ? cuts[i]! : whole.length;
            c.write(whole.subarray(at, at + size));
            at += size;
            await new Promise((resolve) => setImmediate(resolve));
          }
          let handedOver = false;
          for (const r of requests) {
            handedOver ||= !r.lane;
            const res = await c.response();
            assert.equal(res.headers['x-by'], handedOver ? 'node' : 'lane');
            assert.equal(echo(res).body, r.body);
          }
        } finally {
          c.socket.destroy();
        }
      }),
      { numRuns: 25 },
    );
  });

  test('a POST with a body above maxBodyBytes goes to node:http with its body intact', async (t) => {
    const f = await start(t, { maxBodyBytes: 16 });
    const c = await f.connect();
    const body = 'x'.repeat(100);
    c.write(post(body));
    const res = await c.response();
    assert.equal(res.headers['x-by'], 'node');
    assert.equal(echo(res).body, body);
  });

  test('bytes that are not HTTP get node:http 400', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    c.write('hello, this is not http\r\n\r\n');
    const res = await c.response();
    assert.equal(res.status, 400);
    await c.serverClosed();
  });

  test('a TLS handshake sent to the plain port gets node:http 400 without waiting for the head timeout', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    c.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, ...Array(32).fill(7)]));
    const res = await c.response(500);
    assert.equal(res.status, 400);
  });

  test('what is written before end() arrives chunked and intact through node http client, piece by piece (SSE)', async (t) => {
    const firstSeen = deferred<void>();
    const f = await start(t, {
      handle: (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'x-by': 'lane' });
        res.write('event: message\ndata: {"n":1}\n\n');
        void firstSeen.promise.then(() => {
          res.write('data: {"text":"é ☃ 😀"}\n\n');
          res.end();
        });
      },
    });
    const result = await new Promise<{ headers: IncomingHttpHeaders; pieces: string[] }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: f.port, method: 'POST', path: MCP, agent: false, headers: { 'content-length': 2 } }, (res) => {
        const pieces: string[] = [];
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          pieces.push(d);
          if (pieces.length === 1) firstSeen.resolve();
        });
        res.on('end', () => resolve({ headers: res.headers, pieces }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end('{}');
    });
    assert.equal(result.headers['transfer-encoding'], 'chunked');
    assert.equal(result.headers['content-type'], 'text/event-stream');
    assert.equal(result.headers['content-length'], undefined);
    assert.equal(result.pieces[0], 'event: message\ndata: {"n":1}\n\n');
    assert.equal(result.pieces.join(''), 'event: message\ndata: {"n":1}\n\n' + 'data: {"text":"é ☃ 😀"}\n\n');
  });

  test('a body given whole to end() goes with a Content-Length, and the status set by writeHead', async (t) => {
    const f = await start(t, {
      handle: (_req, res) => {
        res.writeHead(202, { 'x-by': 'lane' });
        res.end('accepted ✓');
      },
    });
    const c = await f.connect();
    c.write(post('{}'));
    const res = await c.response();
    assert.equal(res.status, 202);
    assert.match(res.head.toString('latin1'), /^HTTP\/1\.1 202 Accepted\r\n/);
    assert.equal(res.headers['content-length'], String(Buffer.byteLength('accepted ✓')));
    assert.equal(res.headers['transfer-encoding'], undefined);
    assert.equal(res.text, 'accepted ✓');
  });

  test('a body given whole to end() is framed by its own length even when a handler set another, and the next request is read intact', async (t) => {
    const f = await start(t, {
      handle: (req, res) => {
        res.writeHead(200, { 'content-length': 3, 'x-by': 'lane' });
        res.end(`answer to ${req.body}`);
      },
    });
    const c = await f.connect();
    c.write(Buffer.concat([post('one'), post('two')]));
    const first = await c.response();
    const second = await c.response();
    assert.equal(first.headers['content-length'], String(Buffer.byteLength('answer to one')));
    assert.equal(first.text, 'answer to one');
    assert.equal(second.text, 'answer to two');
  });

  test('connection: close makes the server close the connection after the answer', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    c.write(post('{}', ['connection: close']));
    const res = await c.response();
    assert.equal(res.headers['x-by'], 'lane');
    assert.equal(res.headers.connection, 'close');
    await c.serverClosed();
    assert.equal(c.unread.length, 0);
    assert.equal(f.lane.size, 0);
  });

  test('a request pipelined after connection: close is not answered', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    c.write(Buffer.concat([post('one', ['connection: close']), post('two')]));
    assert.equal((await c.response()).text.includes('one'), true);
    await c.serverClosed();
    assert.equal(c.unread.length, 0);
    assert.equal(f.laneRequests.length, 1);
  });

  test('a normal answer makes the response emit close once, with writableFinished true, after end() has returned', async (t) => {
    const closed = deferred<{ finished: boolean; afterEnd: boolean; count: number }>();
    let count = 0;
    const f = await start(t, {
      handle: (_req, res) => {
        let ended = false;
        res.on('close', () => {
          count++;
          closed.resolve({ finished: res.writableFinished, afterEnd: ended, count });
        });
        res.end('ok');
        ended = true;
      },
    });
    const c = await f.connect();
    c.write(post('{}'));
    await c.response();
    const seen = await within(closed.promise, 500, "the response's close event");
    assert.deepEqual(seen, { finished: true, afterEnd: true, count: 1 });
  });

  test('a client that resets the connection before the answer makes the response emit close with writableFinished false', async (t) => {
    const { f, held, closed } = await holding(t);
    const c = await f.connect();
    c.write(post('hold'));
    const res = await within(held, 500, 'the handler');
    c.socket.resetAndDestroy();
    assert.equal(await within(closed, 500, "the response's close event"), false);
    assert.equal(res.closed, true);
    assert.equal(f.lane.size, 0);
  });

  test('a client that closes the connection (FIN) before the answer makes the response emit close with writableFinished false', async (t) => {
    // node:http (httpAllowHalfOpen false) ends the socket when the client does, so a pending
    // ServerResponse emits 'close' with writableFinished false: the gateway cancels the call.
    const { f, held, closed } = await holding(t);
    const c = await f.connect();
    c.write(post('hold'));
    await within(held, 500, 'the handler');
    c.socket.destroy();
    assert.equal(await within(closed, 500, "the response's close event"), false);
  });

  test('a request whose head stays incomplete gets 408 and the connection closed after headersTimeoutMs', async (t) => {
    const f = await start(t, { headersTimeoutMs: 80, requestTimeoutMs: 400 });
    const c = await f.connect();
    const started = Date.now();
    c.write(`POST ${MCP} HTTP/1.1\r\nhost: a\r\n`);
    const res = await c.response();
    const elapsed = Date.now() - started;
    assert.equal(res.status, 408);
    assert.equal(res.headers.connection, 'close');
    assert.ok(elapsed >= 70 && elapsed < 390, `408 after ${elapsed} ms`);
    await c.serverClosed();
    assert.equal(f.laneRequests.length, 0);
  });

  test('a request whose body stays incomplete gets 408 after requestTimeoutMs, not headersTimeoutMs', async (t) => {
    const f = await start(t, { headersTimeoutMs: 50, requestTimeoutMs: 200 });
    const c = await f.connect();
    const started = Date.now();
    c.write(raw([`POST ${MCP} HTTP/1.1`, 'host: a', 'content-length: 10'], 'abc'));
    const res = await c.response();
    const elapsed = Date.now() - started;
    assert.equal(res.status, 408);
    assert.ok(elapsed >= 190, `408 after ${elapsed} ms`);
    await c.serverClosed();
  });

  test('a request completed in time is answered and no 408 follows', async (t) => {
    const f = await start(t, { headersTimeoutMs: 100, requestTimeoutMs: 150 });
    const c = await f.connect();
    const whole = post('{"x":1}');
    c.write(whole.subarray(0, 10));
    await sleep(30);
    c.write(whole.subarray(10));
    assert.equal((await c.response()).headers['x-by'], 'lane');
    await sleep(170);
    assert.equal(c.unread.length, 0);
    assert.equal(c.serverEnded, false);
  });

  test('an idle connection is closed after keepAliveTimeoutMs', async (t) => {
    const f = await start(t, { keepAliveTimeoutMs: 100 });
    const c = await f.connect();
    c.write(post('{}'));
    await c.response();
    const answered = Date.now();
    await c.serverClosed();
    const idle = Date.now() - answered;
    assert.ok(idle >= 80, `closed after ${idle} ms idle`);
    assert.equal(f.lane.size, 0);
  });

  test('a connection that never sends anything is closed after keepAliveTimeoutMs', async (t) => {
    const f = await start(t, { keepAliveTimeoutMs: 80 });
    const c = await f.connect();
    await c.serverClosed();
    assert.equal(f.lane.size, 0);
  });

  test('an answer that takes longer than keepAliveTimeoutMs is not cut by the idle timer', async (t) => {
    const f = await start(t, {
      keepAliveTimeoutMs: 60,
      handle: (req, res) => setTimeout(() => laneEcho(req, res), 150),
    });
    const c = await f.connect();
    c.write(post('{"slow":true}'));
    const res = await c.response();
    assert.equal(echo(res).body, '{"slow":true}');
  });

  test('closeIdle() closes idle lane connections at once but lets a pending answer finish first', async (t) => {
    const held = deferred<LaneResponse>();
    const f = await start(t, {
      handle: (req, res) => {
        if (req.body === 'hold') held.resolve(res);
        else laneEcho(req, res);
      },
    });
    const idle = await f.connect();
    idle.write(post('{}'));
    await idle.response();
    const busy = await f.connect();
    busy.write(post('hold'));
    const res = await within(held.promise, 500, 'the held request');
    assert.equal(f.lane.size, 2);

    f.lane.closeIdle();
    await idle.serverClosed();
    assert.equal(busy.serverEnded || busy.closed, false);

    res.setHeader('x-by', 'lane');
    res.end('finally');
    assert.equal((await busy.response()).text, 'finally');
    await busy.serverClosed();
    assert.equal(f.lane.size, 0);
  });

  test('closeAll() cuts every lane connection, idle or with an answer pending', async (t) => {
    const { f, held, closed } = await holding(t);
    const idle = await f.connect();
    idle.write(post('{}'));
    await idle.response();
    const busy = await f.connect();
    busy.write(post('hold'));
    const res = await within(held, 500, 'the held request');

    f.lane.closeAll();
    await idle.serverClosed();
    await busy.serverClosed();
    assert.equal(await within(closed, 500, "the response's close event"), false);
    assert.equal(busy.unread.length, 0);
    assert.equal(f.lane.size, 0);
    // Ending the response afterwards writes nothing and throws nothing.
    res.end('too late');
  });

  test('a Latin-1 header value arrives as Latin-1 bytes, as node:http sends it, and the body stays UTF-8', async (t) => {
    const f = await start(t, {
      handle: (_req, res) => {
        res.setHeader('x-by', 'lane');
        res.setHeader('x-name', 'café');
        res.end('café ☃');
      },
    });
    const c = await f.connect();
    c.write(post('{}'));
    const lane = await c.response();
    c.write(raw(['GET /other HTTP/1.1', 'host: a']));
    const node = await c.response();
    assert.equal(lane.headers['x-by'], 'lane');
    assert.equal(node.headers['x-by'], 'node');
    const latin1 = Buffer.from('x-name: caf\xe9\r\n', 'latin1');
    assert.ok(node.head.includes(latin1), 'node:http sends é as the byte 0xE9');
    assert.ok(lane.head.includes(latin1), 'the lane sends é as the byte 0xE9');
    assert.ok(!lane.head.includes(Buffer.from('café', 'utf8')));
    assert.deepEqual(lane.body, Buffer.from('café ☃', 'utf8'));
    assert.equal(lane.headers['content-length'], String(Buffer.byteLength('café ☃')));
  });

  test('a Latin-1 header value on a chunked answer is Latin-1 too, and the chunks stay UTF-8', async (t) => {
    const f = await start(t, {
      handle: (_req, res) => {
        res.setHeader('x-name', 'café');
        res.write('é');
        res.end('☃');
      },
    });
    const c = await f.connect();
    c.write(post('{}'));
    const res = await c.response();
    assert.ok(res.head.includes(Buffer.from('x-name: caf\xe9\r\n', 'latin1')));
    assert.equal(res.headers['transfer-encoding'], 'chunked');
    assert.equal(res.text, 'é☃');
  });

  test('every lane answer carries a Date header for the current time', async (t) => {
    const f = await start(t);
    const c = await f.connect();
    c.write(post('{}'));
    const res = await c.response();
    const date = res.headers.date;
    assert.ok(date !== undefined, 'a Date header');
    assert.match(date, /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
    assert.ok(Math.abs(Date.parse(date) - Date.now()) < 5000);
  });

  test('the lane answers a POST whose target the listener accepts and leaves other POSTs to node:http', async (t) => {
    const f = await start(t);
    const mcp = await clientPost(f.port, '{}', undefined, '/mcp/x');
    const other = await clientPost(f.port, '{}', undefined, '/admin/api/x');
    assert.equal(mcp.headers['x-by'], 'lane');
    assert.equal(other.headers['x-by'], 'node');
    assert.equal(echo(other).body, '{}');
  });
});
