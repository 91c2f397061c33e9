/**
 * The HTTP/1.1 client the gateway speaks to remote MCP servers with: a keep-alive connection pool
 * per origin, requests written as one string, responses parsed as they arrive and handed over as
 * callbacks (head, body pieces, end), with no stream, promise or timer object per request.
 *
 * Why not undici (which the gateway used before) or node:http's client: a forwarded MCP call needs
 * little of what they offer (no redirects, cookies, pipelining or request streaming; one origin
 * per pool), and at concurrency 1 the gateway spent 59 µs less CPU a call with this client than
 * with undici's dispatch API (bench/run.ts with --compare; docs/benchmarks.md). What a call does
 * need is here: keep-alive within the server's own idle limit, chunked, length-delimited and
 * read-to-close bodies, 1xx responses skipped, TLS, timeouts, aborts, one retry of a request that
 * is safe to repeat and met a connection the server had just closed, and strict parsing (a
 * response that could be read two ways is an error, not a guess).
 */
import net from 'node:net';
import tls from 'node:tls';
import { ioArrived } from '../../util/busy-poll.js';

/** Why an exchange failed, for the errors that are not the socket's own (those keep their errno code). */
export type HttpClientErrorCode =
  | 'HEADERS_TIMEOUT'
  | 'BODY_TIMEOUT'
  | 'PROTOCOL'
  | 'CLOSED_EARLY'
  | 'ABORTED'
  | 'POOL_CLOSED'
  | 'INVALID_REQUEST';

export class HttpClientError extends Error {
  readonly code: HttpClientErrorCode;
  constructor(code: HttpClientErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'HttpClientError';
    this.code = code;
  }
}

/** Response header names are lower-cased; a repeated header's values are joined with ", ". */
export type ResponseHeaders = Record<string, string>;

export interface ExchangeHandler {
  /** The final (non-1xx) response head. */
  onHead(status: number, headers: ResponseHeaders): void;
  /** A piece of the body, de-chunked. Called only after onHead. */
  onData(chunk: Buffer): void;
  /** The body is complete. */
  onEnd(): void;
  /** The exchange failed or was aborted; nothing else is called after this. */
  onError(err: Error & { code?: string }): void;
}

export interface ExchangeRequest {
  method: 'GET' | 'POST' | 'DELETE' | 'HEAD';
  /** The request target: an absolute path with its query. */
  path: string;
  /** From `headerBlock()`: one `name: value\r\n` line per header, without Host and Content-Length. */
  headers: string;
  body?: string | undefined;
  /** Longest silence before the response head (connecting included), in ms; 0: none. */
  timeoutMs: number;
  /** Longest silence between pieces of the body once the head is in; default timeoutMs; 0: none. */
  bodyTimeoutMs?: number | undefined;
  /**
   * Whether the request may be sent a second time when a reused connection turns out closed before
   * any byte of the answer came (the server closing an idle connection as the request left). The
   * server may also have taken the request and died before answering, so only a request that
   * is safe to repeat says yes. Default: yes for GET, HEAD and DELETE, no for POST.
   */
  idempotent?: boolean | undefined;
}

export interface Exchange {
  /** Ends the exchange now: its handler gets onError(reason), and the connection is closed. */
  abort(reason?: Error): void;
}

export interface Http1PoolOptions {
  /** How long an idle connection is kept when the server does not say (`Keep-Alive: timeout=`). */
  keepAliveMs?: number | undefined;
  /** The most an idle connection is kept, whatever the server says. */
  keepAliveMaxMs?: number | undefined;
  /** Extra TLS options for https origins (a private CA, say). */
  tls?: tls.ConnectionOptions | undefined;
  /** Largest response head accepted, in bytes. */
  maxHeadBytes?: number | undefined;
}

const DEFAULT_KEEP_ALIVE_MS = 30_000;
const DEFAULT_KEEP_ALIVE_MAX_MS = 300_000;
/** Idle connections are given up this long before the server's own limit, so neither closes under a request. */
const KEEP_ALIVE_MARGIN_MS = 1_000;
const DEFAULT_MAX_HEAD_BYTES = 64 * 1024;
/** Longest chunk-size line (hex digits and extensions). */
const MAX_CHUNK_LINE = 4096;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// A header value may not carry CR, LF or NUL: any of them would let a value write a header of its own.
const UNSAFE_VALUE = /[\r\n\0]/;
const UNSAFE_PATH = /[\s\0]/;

/**
 * Serialises request headers once, checked: a name that is not a token or a value with CR, LF or
 * NUL throws (naming the header, never the value: values are often credentials).
 * Host and Content-Length are the client's own and are refused here.
 */
export function headerBlock(headers: Record<string, string | undefined>): string {
  let out = '';
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (!TOKEN.test(name)) throw new HttpClientError('INVALID_REQUEST', `invalid header name '${name.replace(/[^\x20-\x7e]/g, '?')}'`);
    const lower = name.toLowerCase();
    if (lower === 'host' || lower === 'content-length' || lower === 'transfer-encoding' || lower === 'connection') {
      throw new HttpClientError('INVALID_REQUEST', `the '${lower}' header is set by the HTTP client itself`);
    }
    if (UNSAFE_VALUE.test(value)) throw new HttpClientError('INVALID_REQUEST', `the value of header '${lower}' contains a line break or NUL`);
    out += `${lower}: ${value}\r\n`;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Response parsing

export interface ResponseParserEvents {
  onHead(status: number, headers: ResponseHeaders): void;
  onData(chunk: Buffer): void;
  /** The response is complete; keepAlive says whether the connection may carry another request. */
  onComplete(keepAlive: boolean, keepAliveHintMs: number | undefined): void;
}

const enum State {
  Idle,
  Head,
  LengthBody,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Done,
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/**
 * An incremental HTTP/1.1 response parser for one connection, one response at a time: `expect()`
 * before each request, then `feed()` whatever the socket reads. It throws HttpClientError('PROTOCOL')
 * on anything malformed or ambiguous, after which the connection must be closed.
 */
export class ResponseParser {
  private state = State.Idle;
  private pending: Buffer | undefined;
  private remaining = 0;
  private noBody = false;
  private keepAlive = true;
  private hintMs: number | undefined;
  private trailerBytes = 0;
  /** Whether any byte arrived since expect(), an interim response's included. */
  private fed = false;
  private readonly maxHead: number;
  private readonly events: ResponseParserEvents;

  constructor(events: ResponseParserEvents, maxHeadBytes = DEFAULT_MAX_HEAD_BYTES) {
    this.events = events;
    this.maxHead = maxHeadBytes;
  }

  /** Whether a response is expected or under way. */
  get busy(): boolean {
    return this.state !== State.Idle && this.state !== State.Done;
  }

  /** Whether any byte of the current response has arrived. */
  get started(): boolean {
    return this.fed;
  }

  /** Whether the current response has its head. */
  get headDone(): boolean {
    return this.state !== State.Idle && this.state !== State.Head;
  }

  /** Arms the parser for the response to a request made with `method`. */
  expect(method: string): void {
    this.state = State.Head;
    this.pending = undefined;
    this.noBody = method === 'HEAD';
    this.keepAlive = true;
    this.hintMs = undefined;
    this.trailerBytes = 0;
    this.fed = false;
  }

  /** Parses bytes from the socket; returns how many bytes follow the end of the response (none expected). */
  feed(chunk: Buffer): number {
    if (chunk.length > 0 && this.state === State.Head) this.fed = true;
    let buf = chunk;
    if (this.pending !== undefined) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    let at = 0;
    while (at < buf.length) {
      switch (this.state) {
        case State.Idle:
        case State.Done:
          return buf.length - at;
        case State.Head: {
          const end = buf.indexOf(CRLFCRLF, at);
          if (end < 0) {
            if (buf.length - at > this.maxHead) throw protocol(`the response head is larger than ${this.maxHead} bytes`);
            this.pending = buf.subarray(at);
            return 0;
          }
          if (end - at > this.maxHead) throw protocol(`the response head is larger than ${this.maxHead} bytes`);
          const head = buf.toString('latin1', at, end);
          at = end + 4;
          this.onHeadText(head);
          break;
        }
        case State.LengthBody: {
          const n = Math.min(this.remaining, buf.length - at);
          const piece = at === 0 && n === buf.length ? buf : buf.subarray(at, at + n);
          at += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = State.Done;
          this.events.onData(piece);
          if (this.state === State.Done) this.complete();
          break;
        }
        case State.ChunkSize: {
          const nl = buf.indexOf(10, at);
          if (nl < 0) {
            if (buf.length - at > MAX_CHUNK_LINE) throw protocol('a chunk-size line is too long');
            this.pending = buf.subarray(at);
            return 0;
          }
          if (nl - at > MAX_CHUNK_LINE) throw protocol('a chunk-size line is too long');
          if (nl === at || buf[nl - 1] !== 13) throw protocol('a chunk-size line does not end with CRLF');
          const line = buf.toString('latin1', at, nl - 1);
          at = nl + 1;
          const semi = line.indexOf(';');
          const hex = (semi < 0 ? line : line.slice(0, semi)).trimEnd();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw protocol(`invalid chunk size '${hex.slice(0, 20)}'`);
          const size = parseInt(hex, 16);
          if (size === 0) {
            this.state = State.Trailers;
          } else {
            this.remaining = size;
            this.state = State.ChunkData;
          }
          break;
        }
        case State.ChunkData: {
          const n = Math.min(this.remaining, buf.length - at);
          const piece = buf.subarray(at, at + n);
          at += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.state = State.ChunkDataEnd;
            this.remaining = 2;
          }
          this.events.onData(piece);
          break;
        }
        case State.ChunkDataEnd: {
          // The CRLF after a chunk's data, which may itself arrive split.
          const expected = this.remaining === 2 ? 13 : 10;
          if (buf[at] !== expected) throw protocol('a chunk is not followed by CRLF');
          at++;
          if (--this.remaining === 0) this.state = State.ChunkSize;
          break;
        }
        case State.Trailers: {
          const nl = buf.indexOf(10, at);
          if (nl < 0) {
            // Not added to trailerBytes: these bytes are kept as pending and counted when their line ends.
            if (this.trailerBytes + (buf.length - at) > this.maxHead) throw protocol('the trailers are too large');
            this.pending = buf.subarray(at);
            return 0;
          }
          this.trailerBytes += nl + 1 - at;
          if (this.trailerBytes > this.maxHead) throw protocol('the trailers are too large');
          if (nl === at || buf[nl - 1] !== 13) throw protocol('a trailer line does not end with CRLF');
          const empty = nl - at === 1;
          at = nl + 1;
          // Trailer fields are read past, not used: nothing the gateway forwards depends on them.
          if (empty) {
            this.state = State.Done;
            this.complete();
          }
          break;
        }
        case State.UntilClose: {
          const piece = at === 0 ? buf : buf.subarray(at);
          at = buf.length;
          this.events.onData(piece);
          break;
        }
      }
    }
    return 0;
  }

  /** The connection ended: completes a read-to-close body, and says whether the response was whole. */
  end(): boolean {
    if (this.state === State.UntilClose) {
      this.state = State.Done;
      this.complete();
      return true;
    }
    return this.state === State.Done || this.state === State.Idle;
  }

  private complete(): void {
    this.state = State.Idle;
    this.events.onComplete(this.keepAlive, this.hintMs);
  }

  private onHeadText(head: string): void {
    // Hand-rolled rather than split and matched by regular expressions: this runs once per proxied
    // call, and the straightforward version cost about three times as much.
    const n = head.length;
    let eol = head.indexOf('\r\n');
    if (eol < 0) eol = n;
    const minor = head.charCodeAt(7) - 48;
    if (
      eol < 12 ||
      !head.startsWith('HTTP/1.') ||
      (minor !== 0 && minor !== 1) ||
      head.charCodeAt(8) !== 32 ||
      !isDigit(head.charCodeAt(9)) ||
      !isDigit(head.charCodeAt(10)) ||
      !isDigit(head.charCodeAt(11)) ||
      (eol > 12 && head.charCodeAt(12) !== 32)
    ) {
      throw protocol(`invalid status line '${head.slice(0, Math.min(eol, 60)).replace(/[^\x20-\x7e]/g, '?')}'`);
    }
    const status = (head.charCodeAt(9) - 48) * 100 + (head.charCodeAt(10) - 48) * 10 + (head.charCodeAt(11) - 48);
    const headers: ResponseHeaders = {};
    let contentLength: string | undefined;
    let pos = eol + 2;
    while (pos < n) {
      let end = head.indexOf('\r\n', pos);
      if (end < 0) end = n;
      const first = head.charCodeAt(pos);
      if (end === pos || first === 32 || first === 9) throw protocol('a folded or empty header line');
      const colon = head.indexOf(':', pos);
      if (colon < 0 || colon > end) throw protocol('a header line without a name');
      const rawName = head.slice(pos, colon);
      if (!TOKEN.test(rawName)) throw protocol(colon === pos ? 'a header line without a name' : 'a header name that is not a token');
      const name = rawName.toLowerCase();
      let vs = colon + 1;
      let ve = end;
      while (vs < ve && isOws(head.charCodeAt(vs))) vs++;
      while (ve > vs && isOws(head.charCodeAt(ve - 1))) ve--;
      const value = head.slice(vs, ve);
      pos = end + 2;
      if (name === 'content-length') {
        if (contentLength !== undefined && contentLength !== value) throw protocol('two different Content-Length headers');
        contentLength = value;
        headers[name] = value;
        continue;
      }
      const prior = headers[name];
      headers[name] = prior === undefined ? value : `${prior}, ${value}`;
    }
    if (status < 200) {
      // An interim response (100 Continue, 103 Early Hints): the real one follows.
      if (status === 101) throw protocol('the server switched protocols, which was not asked for');
      return;
    }
    const connection = headers['connection']?.toLowerCase();
    this.keepAlive = minor === 1 ? !hasToken(connection, 'close') : hasToken(connection, 'keep-alive');
    const hint = headers['keep-alive'];
    if (hint !== undefined) this.hintMs = keepAliveHintMs(hint);
    // The framing is settled (and any error in it thrown) before the head is handed over: a caller
    // that has passed the head on could no longer answer with an error of its own.
    let next: State;
    const te = headers['transfer-encoding'];
    if (this.noBody || status === 204 || status === 304) {
      next = State.Done;
    } else if (te !== undefined) {
      if (contentLength !== undefined) throw protocol('both Transfer-Encoding and Content-Length');
      const codings = te.toLowerCase().split(',');
      if (codings[codings.length - 1]!.trim() === 'chunked') {
        next = State.ChunkSize;
      } else {
        next = State.UntilClose;
        this.keepAlive = false;
      }
    } else if (contentLength !== undefined) {
      if (!/^\d{1,15}$/.test(contentLength)) throw protocol(`invalid Content-Length '${contentLength.slice(0, 20)}'`);
      this.remaining = Number(contentLength);
      next = this.remaining === 0 ? State.Done : State.LengthBody;
    } else {
      next = State.UntilClose;
      this.keepAlive = false;
    }
    this.state = next;
    this.events.onHead(status, headers);
    if (next === State.Done) this.complete();
  }
}

/** The last Keep-Alive value read and its timeout: a server sends the same one on every answer. */
let lastHint = '';
let lastHintMs: number | undefined;

/** The `timeout=` of a Keep-Alive header, in ms, or undefined when it has none. */
function keepAliveHintMs(hint: string): number | undefined {
  if (hint !== lastHint) {
    const t = /(?:^|[,;\s])timeout=(\d+)/i.exec(hint);
    lastHint = hint;
    lastHintMs = t ? Number(t[1]) * 1000 : undefined;
  }
  return lastHintMs;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

function isOws(c: number): boolean {
  return c === 32 || c === 9;
}

function hasToken(list: string | undefined, token: string): boolean {
  if (list === undefined || !list.includes(token)) return false;
  if (list === token) return true;
  for (const part of list.split(',')) if (part.trim() === token) return true;
  return false;
}

function protocol(message: string): HttpClientError {
  return new HttpClientError('PROTOCOL', `invalid HTTP response: ${message}`);
}

// ---------------------------------------------------------------------------------------------
// Connections and the pool

/** One request on its way: which connection carries it, and what may still happen to it. */
class Active implements Exchange {
  readonly req: ExchangeRequest;
  readonly handler: ExchangeHandler;
  readonly pool: Http1Pool;
  conn: Connection | undefined;
  finished = false;
  /** Sent again once already, after a reused connection turned out closed. */
  retried = false;

  constructor(pool: Http1Pool, req: ExchangeRequest, handler: ExchangeHandler) {
    this.pool = pool;
    this.req = req;
    this.handler = handler;
  }

  abort(reason?: Error): void {
    if (this.finished) return;
    const conn = this.conn;
    this.fail(reason ?? new HttpClientError('ABORTED', 'the request was aborted'));
    // The connection's state mid-response is unknown: it is not used again.
    conn?.destroy();
  }

  fail(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    if (this.conn?.active === this) this.conn.active = undefined;
    this.conn = undefined;
    this.pool.settled();
    this.handler.onError(err);
  }
}

class Connection {
  readonly socket: net.Socket;
  readonly parser: ResponseParser;
  readonly pool: Http1Pool;
  active: Active | undefined;
  /** Whether this connection has carried a request before the current one. */
  used = false;
  idleSince = 0;
  idleLimitMs: number;
  dead = false;
  private timeoutMs = 0;

  constructor(pool: Http1Pool, socket: net.Socket) {
    this.pool = pool;
    this.socket = socket;
    this.idleLimitMs = pool.keepAliveMs;
    this.parser = new ResponseParser(
      {
        onHead: (status, headers) => {
          const a = this.active;
          if (a === undefined) return;
          const bodyTimeout = a.req.bodyTimeoutMs ?? a.req.timeoutMs;
          if (bodyTimeout !== this.timeoutMs) this.setTimeout(bodyTimeout);
          a.handler.onHead(status, headers);
        },
        onData: (chunk) => this.active?.handler.onData(chunk),
        onComplete: (keepAlive, hintMs) => this.onComplete(keepAlive, hintMs),
      },
      pool.maxHeadBytes,
    );
    socket.setNoDelay(true);
    socket.on('timeout', () => this.onTimeout());
    socket.on('error', (err) => this.onGone(err));
    socket.on('close', () => this.onGone(undefined));
    // The server ended an idle connection: it leaves the pool now, not when its close completes.
    socket.on('end', () => {
      if (this.active === undefined) this.destroy();
    });
  }

  send(a: Active): void {
    this.active = a;
    a.conn = this;
    const req = a.req;
    // Set only when it changes (a timer per request would cost more than the request's parsing).
    // The timeout stays armed while the connection is idle, so an idle connection is also closed
    // after that long, even if the server would keep it longer.
    if (req.timeoutMs !== this.timeoutMs) this.setTimeout(req.timeoutMs);
    this.parser.expect(req.method);
    let head = `${req.method} ${req.path} HTTP/1.1\r\nhost: ${this.pool.host}\r\n${req.headers}`;
    if (req.body !== undefined) head += `content-length: ${Buffer.byteLength(req.body)}\r\n\r\n${req.body}`;
    else head += req.method === 'POST' ? 'content-length: 0\r\n\r\n' : '\r\n';
    this.socket.write(head);
  }

  private setTimeout(ms: number): void {
    this.timeoutMs = ms;
    this.socket.setTimeout(ms);
  }

  /** @internal */
  onData(chunk: Buffer): void {
    if (this.active === undefined) {
      // Bytes nobody asked for: the connection is out of step with the server.
      this.destroy();
      return;
    }
    let extra: number;
    try {
      extra = this.parser.feed(chunk);
    } catch (err) {
      this.active?.fail(err as Error);
      this.destroy();
      return;
    }
    // The response is finished only now that the whole chunk is read: bytes after its end mean
    // the connection is out of step, and it must not carry the next request.
    if (this.finishing) this.finish(extra === 0);
    else if (extra > 0) this.destroy();
  }

  private finishing = false;
  private finishKeepAlive = false;

  private onComplete(keepAlive: boolean, hintMs: number | undefined): void {
    if (hintMs !== undefined) this.idleLimitMs = Math.max(0, Math.min(hintMs - KEEP_ALIVE_MARGIN_MS, this.pool.keepAliveMaxMs));
    this.finishing = true;
    this.finishKeepAlive = keepAlive;
  }

  private finish(reusable: boolean): void {
    this.finishing = false;
    const a = this.active;
    this.active = undefined;
    if (reusable && this.finishKeepAlive && !this.dead && this.idleLimitMs > 0) this.pool.release(this);
    else this.destroy();
    if (a !== undefined && !a.finished) {
      a.finished = true;
      a.conn = undefined;
      this.pool.settled();
      a.handler.onEnd();
    }
  }

  private onTimeout(): void {
    const a = this.active;
    if (a !== undefined) {
      const ms = this.timeoutMs;
      a.fail(
        this.parser.headDone
          ? new HttpClientError('BODY_TIMEOUT', `no part of the response body arrived within ${ms} ms`)
          : new HttpClientError('HEADERS_TIMEOUT', `no response arrived within ${ms} ms`),
      );
    }
    this.destroy();
  }

  private onGone(err: Error | undefined): void {
    if (!this.dead) {
      this.dead = true;
      this.pool.forget(this);
    }
    const a = this.active;
    if (a === undefined) return;
    if (a.finished) {
      this.active = undefined;
      return;
    }
    if (err === undefined && this.parser.busy && this.parser.end()) {
      this.finish(false); // a body read to the connection's close
      return;
    }
    this.active = undefined;
    a.conn = undefined;
    // A connection that sat idle may have been closed by the server just as the request left:
    // nothing of an answer came, so a request that is safe to repeat goes once more on a new one.
    if (this.used && !this.parser.started && !a.retried && !this.pool.closing && (a.req.idempotent ?? a.req.method !== 'POST')) {
      a.retried = true;
      this.pool.connectFor(a);
      return;
    }
    a.fail(
      err ?? new HttpClientError('CLOSED_EARLY', this.parser.started ? 'the server closed the connection in the middle of its response' : 'the server closed the connection without answering'),
    );
  }

  destroy(): void {
    if (!this.dead) {
      this.dead = true;
      this.pool.forget(this);
    }
    this.socket.destroy();
  }
}

/**
 * What every plain connection reads into (net's `onread`), copied out at once: each read then
 * costs a small allocation from Buffer's pool instead of a fresh 64 KiB backing store, and skips
 * the readable stream (its push, its 'data' event, the read-ahead it schedules on the next tick).
 * At concurrency 1, where each call finds the caches cold, that machinery costs more than its
 * size suggests (docs/benchmarks.md has the measurements). Shared: the callback never returns before
 * its bytes are copied, and reads of two sockets never interleave.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

function copyOf(n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  READ_BUFFER.copy(out, 0, 0, n);
  return out;
}

/** Keep-alive connections to one origin (http or https). */
export class Http1Pool {
  readonly host: string;
  readonly keepAliveMs: number;
  readonly keepAliveMaxMs: number;
  readonly maxHeadBytes: number;
  closing = false;
  private readonly hostname: string;
  private readonly port: number;
  private readonly secure: boolean;
  private readonly tlsOptions: tls.ConnectionOptions | undefined;
  /** Idle connections, the most recently used last: it is the one least likely to have been closed. */
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();
  /**
   * Exchanges not yet settled. A count, not a Set: adding and deleting an entry per request made
   * V8 reallocate the Set's table so often that the young generation promoted ~750 KB per
   * scavenge, tripling the gateway's GC time. Each one in flight is on a connection (`all`).
   */
  private inFlight = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private drained: (() => void) | undefined;

  constructor(origin: string | URL, opts: Http1PoolOptions = {}) {
    const url = typeof origin === 'string' ? new URL(origin) : origin;
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`unsupported protocol '${url.protocol}' (http: or https: only)`);
    this.secure = url.protocol === 'https:';
    this.hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    this.port = url.port === '' ? (this.secure ? 443 : 80) : Number(url.port);
    this.host = url.host;
    this.keepAliveMs = opts.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS;
    this.keepAliveMaxMs = opts.keepAliveMaxMs ?? DEFAULT_KEEP_ALIVE_MAX_MS;
    this.maxHeadBytes = opts.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES;
    this.tlsOptions = opts.tls;
  }

  /** How many connections are open, busy or idle. */
  get connections(): number {
    return this.all.size;
  }

  /**
   * Sends one request. The handler is called later, never from within this call, so the caller
   * can keep the returned Exchange before anything happens to it.
   */
  exchange(req: ExchangeRequest, handler: ExchangeHandler): Exchange {
    const a = new Active(this, req, handler);
    // Counted until it settles, the ones refused below included (they settle on the next tick).
    this.inFlight++;
    if (this.closing) {
      process.nextTick(() => a.fail(new HttpClientError('POOL_CLOSED', 'the HTTP client is closed')));
      return a;
    }
    if (UNSAFE_PATH.test(req.path) || !req.path.startsWith('/')) {
      process.nextTick(() => a.fail(new HttpClientError('INVALID_REQUEST', 'the request path must start with / and hold no whitespace')));
      return a;
    }
    const now = performance.now();
    for (let conn = this.idle.pop(); conn !== undefined; conn = this.idle.pop()) {
      if (conn.dead) continue;
      if (conn.socket.readableEnded || now - conn.idleSince >= conn.idleLimitMs) {
        conn.destroy();
        continue;
      }
      conn.used = true;
      conn.socket.ref();
      conn.send(a);
      return a;
    }
    this.connectFor(a);
    return a;
  }

  /** Sends and buffers the whole response, for the requests off the hot path. */
  request(req: ExchangeRequest, maxBodyBytes = 16 * 1024 * 1024): Promise<{ status: number; headers: ResponseHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      let status = 0;
      let headers: ResponseHeaders = {};
      const chunks: Buffer[] = [];
      let size = 0;
      const ex = this.exchange(req, {
        onHead: (s, h) => {
          status = s;
          headers = h;
        },
        onData: (c) => {
          size += c.length;
          if (size > maxBodyBytes) ex.abort(new HttpClientError('PROTOCOL', `the response body is larger than ${maxBodyBytes} bytes`));
          else chunks.push(c);
        },
        onEnd: () => resolve({ status, headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) }),
        onError: reject,
      });
    });
  }

  /** @internal A new connection for `a` (its first, or a retry). */
  connectFor(a: Active): void {
    let socket: net.Socket;
    try {
      socket = this.secure
        ? tls.connect({
            host: this.hostname,
            port: this.port,
            // SNI takes a host name, never an address.
            ...(net.isIP(this.hostname) === 0 ? { servername: this.hostname } : {}),
            ALPNProtocols: ['http/1.1'],
            ...this.tlsOptions,
          })
        : net.connect({ host: this.hostname, port: this.port, onread: { buffer: READ_BUFFER, callback: (n) => (ioArrived(), conn.onData(copyOf(n)), true) } });
    } catch (err) {
      process.nextTick(() => a.fail(err as Error));
      return;
    }
    const conn: Connection = new Connection(this, socket);
    // A plain socket reads through `onread` (above, READ_BUFFER); a TLS one as a stream.
    if (this.secure) socket.on('data', (chunk: Buffer) => (ioArrived(), conn.onData(chunk)));
    this.all.add(conn);
    this.startSweeper();
    conn.send(a);
  }

  /** @internal A connection finished its exchange and may carry another. */
  release(conn: Connection): void {
    if (this.closing) {
      conn.destroy();
      return;
    }
    conn.idleSince = performance.now();
    // An idle connection does not keep the process alive (a CLI run ends when its work does).
    conn.socket.unref();
    this.idle.push(conn);
  }

  /** @internal */
  forget(conn: Connection): void {
    this.all.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** @internal */
  settled(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.drained) this.drained();
  }

  private startSweeper(): void {
    if (this.sweeper !== undefined) return;
    // Idle connections past their limit are closed here, so an unused pool holds no sockets; the
    // check in exchange() keeps a request from ever taking one that is past it.
    this.sweeper = setInterval(() => {
      const now = performance.now();
      for (const conn of [...this.idle]) if (now - conn.idleSince >= conn.idleLimitMs) conn.destroy();
      if (this.all.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, 1_000);
    this.sweeper.unref();
  }

  /** Stops taking requests, lets those in flight finish, then closes every connection. */
  async close(): Promise<void> {
    this.closing = true;
    for (const conn of [...this.idle]) conn.destroy();
    if (this.inFlight > 0) {
      // Chained, not replaced: a second close() must not leave the first one waiting forever.
      const prior = this.drained;
      await new Promise<void>((resolve) => (this.drained = prior === undefined ? resolve : () => (prior(), resolve())));
    }
    this.destroy();
  }

  /** Closes every connection now; requests in flight fail. */
  destroy(reason?: Error): void {
    this.closing = true;
    for (const conn of [...this.all]) conn.active?.abort(reason ?? new HttpClientError('POOL_CLOSED', 'the HTTP client was closed'));
    for (const conn of [...this.all]) conn.destroy();
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}
