/**
 * The fast lane of the HTTP listener: MCP's POSTs answered without node:http's per-request
 * machinery (IncomingMessage and ServerResponse streams, a parser callback per header, timers per
 * request), which cost about 40 µs a call at concurrency 1 on a 2-core machine: over a quarter of
 * the 150 µs the whole gateway may add.
 *
 * It takes only what it can read without judgement: an HTTP/1.1 POST whose target the listener
 * accepts, with well-formed headers, none repeated, one Content-Length within the body limit, and
 * no Transfer-Encoding, Expect or Upgrade. Anything else (another method, a chunked or oversized
 * body, an odd header, bytes that are not HTTP at all) is handed, with every byte the lane has
 * read, to node:http at a request boundary, and the connection stays there: node:http gives the
 * answers it always gives (400, 413, 431 and so on). So the lane never has to decide how to read
 * an ambiguous request, which is where request smuggling lives.
 */
import { STATUS_CODES, validateHeaderName, validateHeaderValue, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { ioArrived } from '../../util/busy-poll.js';

/** The request the lane hands to its handler: the head, and the body already read whole. */
export interface LaneRequest {
  readonly method: string;
  readonly url: string;
  /** `url` up to its `?`, and what follows it ('' when nothing does). */
  readonly path: string;
  readonly query: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export interface LaneOptions {
  /** Bodies larger than this go to node:http, whose handler refuses them with 413. */
  maxBodyBytes: number;
  /** How long a connection may sit idle between requests (node:http's keepAliveTimeout). */
  keepAliveTimeoutMs: number;
  /** How long the head of a request may take to arrive, from its first byte (node:http's headersTimeout). */
  headersTimeoutMs?: number;
  /** How long a whole request may take to arrive (node:http's requestTimeout). */
  requestTimeoutMs?: number;
  /** Whether the lane answers this method and target; every other request goes to node:http. */
  accepts(method: string, path: string): boolean;
  handle(req: LaneRequest, res: LaneResponse): void;
}

/** node:http's defaults: 16 KiB of head (431 beyond), 60 s for a head, 300 s for a request. */
const MAX_HEAD_BYTES = 16 * 1024;
const HEADERS_TIMEOUT_MS = 60_000;
const REQUEST_TIMEOUT_MS = 300_000;
const CRLFCRLF = Buffer.from('\r\n\r\n');
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Field values may hold visible characters, spaces, tabs and obs-text (RFC 9110 section 5.5): no other control character. */
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const TARGET = /^\/[\x21-\x7e]*$/;
const CONTENT_LENGTH = /^[0-9]{1,15}$/;
const NON_ASCII = /[^\x00-\x7f]/;
const CLOSE = 'connection: close\r\n';
const COMMON_NAMES = new Map(
  ['host', 'connection', 'content-type', 'content-length', 'accept', 'accept-encoding', 'user-agent', 'authorization', 'origin',
    'mcp-session-id', 'mcp-protocol-version', 'mcp-method', 'mcp-name', 'last-event-id'].map((n) => [n, n]),
);

type Parsed = { kind: 'incomplete'; need?: number } | { kind: 'hand-over' } | { kind: 'request'; req: LaneRequest; close: boolean; end: number };

/**
 * Reads the request at the start of `buf`: incomplete (wait for more), one the lane does not take
 * (hand-over), or a whole request and where it ends.
 */
export function parseRequest(buf: Buffer, opts: Pick<LaneOptions, 'maxBodyBytes' | 'accepts'>): Parsed {
  const headEnd = buf.indexOf(CRLFCRLF);
  if (headEnd < 0) return buf.length > MAX_HEAD_BYTES || cannotBeHead(buf) ? { kind: 'hand-over' } : { kind: 'incomplete' };
  if (headEnd + 4 > MAX_HEAD_BYTES) return { kind: 'hand-over' };
  const head = buf.toString('latin1', 0, headEnd);
  let eol = head.indexOf('\r\n');
  if (eol < 0) eol = head.length;
  const line = head.slice(0, eol);
  const sp1 = line.indexOf(' ');
  const sp2 = line.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || line.slice(sp2 + 1) !== 'HTTP/1.1') return { kind: 'hand-over' };
  const method = line.slice(0, sp1);
  const url = line.slice(sp1 + 1, sp2);
  if (!TOKEN.test(method) || !TARGET.test(url)) return { kind: 'hand-over' };
  const q = url.indexOf('?');
  const path = q >= 0 ? url.slice(0, q) : url;
  if (!opts.accepts(method, path)) return { kind: 'hand-over' };
  const headers: IncomingHttpHeaders = {};
  let length: number | undefined;
  let close = false;
  let at = eol + 2;
  while (at < head.length) {
    let next = head.indexOf('\r\n', at);
    if (next < 0) next = head.length;
    const colon = head.indexOf(':', at);
    if (colon <= at || colon > next) return { kind: 'hand-over' };
    const raw = head.slice(at, colon).toLowerCase();
    // The usual names are looked up as the constants they are, which are cheaper to store by.
    let name = COMMON_NAMES.get(raw);
    // A name with anything but token characters (a space before the colon, obs-fold) is not ours to read.
    if (name === undefined) {
      if (!TOKEN.test(raw)) return { kind: 'hand-over' };
      name = raw;
    }
    // Repeated, or a name objects already have (constructor, __proto__): node:http's to read.
    if (headers[name] !== undefined) return { kind: 'hand-over' };
    const value = withoutOws(head, colon + 1, next);
    at = next + 2;
    if (BAD_VALUE.test(value)) return { kind: 'hand-over' };
    switch (name) {
      case 'content-length':
        if (!CONTENT_LENGTH.test(value)) return { kind: 'hand-over' };
        length = Number(value);
        break;
      case 'transfer-encoding':
      case 'expect':
      case 'upgrade':
        return { kind: 'hand-over' };
      case 'connection':
        for (const option of value.toLowerCase().split(',')) {
          const o = option.trim();
          if (o === 'close') close = true;
          else if (o !== 'keep-alive') return { kind: 'hand-over' };
        }
        break;
    }
    headers[name] = value;
  }
  // Without a Host, HTTP/1.1 says 400 (RFC 9112 section 3.2): node:http's to say.
  if (length === undefined || length > opts.maxBodyBytes || headers.host === undefined) return { kind: 'hand-over' };
  const end = headEnd + 4 + length;
  if (buf.length < end) return { kind: 'incomplete', need: end };
  const query = q >= 0 ? url.slice(q + 1) : '';
  return { kind: 'request', req: { method, url, path, query, headers, body: buf.toString('utf8', headEnd + 4, end) }, close, end };
}

/**
 * Whether the start of a head still on its way can already be told apart from one the lane reads:
 * a line ending in a bare LF, or a first word that is no method (a TLS handshake sent to the
 * plain port, say). node:http answers those at once; waiting for a blank line that is not coming
 * would hold the client until the head timeout.
 */
function cannotBeHead(buf: Buffer): boolean {
  for (let lf = buf.indexOf(10); lf >= 0; lf = buf.indexOf(10, lf + 1)) {
    if (lf === 0 || buf[lf - 1] !== 13) return true;
  }
  const space = buf.indexOf(32);
  const method = buf.toString('latin1', 0, space >= 0 ? space : Math.min(buf.length, 32));
  return method.length > 0 && !TOKEN.test(method);
}

/**
 * `text` from `start` to `end` less the spaces and tabs around it (RFC 9110 section 5.5); not
 * String.trim, which would also take away other characters that node:http rejects or keeps.
 */
function withoutOws(text: string, start: number, end: number): string {
  while (start < end && (text.charCodeAt(start) === 32 || text.charCodeAt(start) === 9)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--;
  return text.slice(start, end);
}

/**
 * Takes over `server`'s connections: each is read by the lane until a request comes that it does
 * not take, and is then given to node:http's own connection handling, which listens, times out,
 * closes and answers as it always does.
 */
export class FastLane {
  private readonly connections = new Set<LaneConnection>();
  private readonly opts: LaneOptions;
  private readonly handOver: (socket: Socket) => void;

  constructor(server: Server, opts: LaneOptions) {
    const own = server.listeners('connection');
    if (own.length !== 1) throw new Error(`the fast lane expects node:http's one connection listener, found ${own.length}`);
    const nodeHttp = own[0] as (this: Server, socket: Socket) => void;
    this.opts = opts;
    this.handOver = (socket) => nodeHttp.call(server, socket);
    server.removeListener('connection', nodeHttp);
    server.on('connection', (socket: Socket) => {
      const c = new LaneConnection(socket, this.opts, this.handOver, () => this.connections.delete(c));
      this.connections.add(c);
    });
  }

  /** Connections the lane holds (node:http's are counted by node:http). */
  get size(): number {
    return this.connections.size;
  }

  /** Closes the connections with no request under way; the others close once answered. */
  closeIdle(): void {
    for (const c of this.connections) c.closeWhenIdle();
  }

  /** Cuts every connection the lane holds. */
  closeAll(): void {
    for (const c of [...this.connections]) c.destroy();
  }
}

class LaneConnection {
  private readonly socket: Socket;
  private readonly opts: LaneOptions;
  private readonly handOver: (socket: Socket) => void;
  private readonly forget: () => void;
  /** Bytes read and not yet taken by a request. */
  private pending: Buffer | undefined;
  /** Chunks read after `pending` while a body is still arriving, joined once it is whole. */
  private more: Buffer[] = [];
  private moreBytes = 0;
  /** The bytes `pending` must reach before it is worth reading again (a body under way). */
  private need = 0;
  private paused = false;
  /** The response under way: the next request waits for it (HTTP/1.1 answers in order). */
  private busy: LaneResponse | undefined;
  private pumping = false;
  private closing = false;
  private gone = false;
  /** Set while part of a request has arrived: when it must be whole (the slow-client guard). */
  private partial: NodeJS.Timeout | undefined;
  private requestStarted = 0;
  /** What answers on a connection that stays open say of it: clients learn when it would close. */
  private readonly keepAlive: string;
  private readonly onData = (chunk: Buffer) => {
    ioArrived();
    if (this.pending === undefined) this.pending = chunk;
    else {
      // A large body comes in many chunks: they are joined once, when it is whole.
      this.more.push(chunk);
      this.moreBytes += chunk.length;
      const size = this.pending.length + this.moreBytes;
      if (size < this.need) return;
      this.pending = Buffer.concat([this.pending, ...this.more], size);
      this.more = [];
      this.moreBytes = 0;
    }
    if (this.busy !== undefined) {
      // Requests sent ahead wait for the answer before them; past a request's worth, reading stops.
      if (!this.paused && this.pending.length > this.opts.maxBodyBytes + MAX_HEAD_BYTES) {
        this.paused = true;
        this.socket.pause();
      }
      return;
    }
    this.pump();
  };
  private readonly onEnd = () => {
    // The client has gone, as node:http takes a half-close: a call under way is cancelled.
    this.destroy();
  };
  private readonly onClose = () => this.closed();
  private readonly onError = () => this.destroy();
  private readonly onTimeout = () => {
    // Idle between requests for keepAliveTimeout: close, as node:http does. A request under way
    // or arriving is another matter (the gateway's own timeouts, and `partial`).
    if (this.busy === undefined && this.partial === undefined) this.destroy();
  };

  constructor(socket: Socket, opts: LaneOptions, handOver: (socket: Socket) => void, forget: () => void) {
    this.socket = socket;
    this.opts = opts;
    this.handOver = handOver;
    this.forget = forget;
    this.keepAlive = `connection: keep-alive\r\nkeep-alive: timeout=${Math.floor(opts.keepAliveTimeoutMs / 1000)}\r\n`;
    socket.setNoDelay(true);
    socket.setTimeout(opts.keepAliveTimeoutMs);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
    socket.on('timeout', this.onTimeout);
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.busy === undefined && this.pending !== undefined && !this.gone) {
        const parsed = parseRequest(this.pending, this.opts);
        if (parsed.kind === 'incomplete') {
          this.need = parsed.need ?? 0;
          this.awaitRest();
          return;
        }
        if (parsed.kind === 'hand-over') {
          this.giveToNodeHttp();
          return;
        }
        this.requestDone();
        this.need = 0;
        this.pending = parsed.end === this.pending.length ? undefined : this.pending.subarray(parsed.end);
        if (parsed.close) this.closing = true;
        const res = new LaneResponse(this.socket, parsed.close ? CLOSE : this.keepAlive, () => this.answered(res));
        this.busy = res;
        this.opts.handle(parsed.req, res);
      }
    } finally {
      this.pumping = false;
    }
  }

  private answered(res: LaneResponse): void {
    if (this.busy !== res) return;
    this.busy = undefined;
    if (this.closing) {
      this.endSoon();
      return;
    }
    if (this.paused) {
      this.paused = false;
      this.socket.resume();
    }
    if (this.pending !== undefined) this.pump();
  }

  /** Part of a request is here: it must be whole within node:http's limits, or the client gets 408. */
  private awaitRest(): void {
    if (this.partial !== undefined) return;
    this.requestStarted = Date.now();
    const headers = this.opts.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
    const whole = this.opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    const check = () => {
      const pending = this.pending;
      if (pending === undefined || this.gone) return;
      const elapsed = Date.now() - this.requestStarted;
      const limit = pending.indexOf(CRLFCRLF) < 0 ? headers : whole;
      if (elapsed < limit) {
        this.partial = setTimeout(check, limit - elapsed);
        this.partial.unref();
        return;
      }
      this.partial = undefined;
      this.endSoon('HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    };
    this.partial = setTimeout(check, Math.min(headers, whole));
    this.partial.unref();
  }

  private requestDone(): void {
    if (this.partial === undefined) return;
    clearTimeout(this.partial);
    this.partial = undefined;
  }

  private giveToNodeHttp(): void {
    const socket = this.socket;
    const rest = this.pending;
    this.pending = undefined;
    // (Nothing waits in `more`: it fills only once a head has been read as the lane's.)
    this.requestDone();
    this.detach();
    socket.setTimeout(0);
    if (rest !== undefined) socket.unshift(rest);
    this.handOver(socket);
  }

  /** Sends `last`, if any, and closes once it has left, whether or not the client closes its side. */
  private endSoon(last?: string): void {
    this.release();
    const destroy = () => this.socket.destroy();
    if (last === undefined) this.socket.end(destroy);
    else this.socket.end(last, destroy);
  }

  closeWhenIdle(): void {
    this.closing = true;
    if (this.busy === undefined) this.destroy();
  }

  destroy(): void {
    this.socket.destroy();
    this.closed();
  }

  /** The socket is gone: a response under way learns it (its call is cancelled). */
  private closed(): void {
    if (this.gone) return;
    this.release();
    this.socket.destroy();
    // Taken off first, so that its end does not lead the connection to write or read again.
    const busy = this.busy;
    this.busy = undefined;
    busy?.connectionClosed();
  }

  private release(): void {
    if (this.gone) return;
    this.gone = true;
    this.requestDone();
    this.forget();
  }

  private detach(): void {
    this.gone = true;
    this.forget();
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
    this.socket.off('timeout', this.onTimeout);
  }
}

/** Cached for the second it names: every answer carries a Date (RFC 9110 section 6.6.1). */
let dateSecond = -1;
let dateText = '';
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/**
 * The subset of ServerResponse the MCP endpoints use, written straight to the socket: a body
 * given whole to end() goes with a Content-Length in one write, anything written before end() is
 * sent chunked (SSE). 'close' is emitted once, after the answer is complete or when the connection
 * is lost before that (writableFinished tells which).
 */
export class LaneResponse {
  statusCode = 200;
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  closed = false;
  private readonly socket: Socket;
  /** The Connection header (and Keep-Alive hint) the answer carries. */
  private readonly connection: string;
  private readonly done: () => void;
  private fields: Map<string, string> | undefined;
  private chunked = false;
  private started = false;
  private listeners: Array<() => void> | undefined;

  constructor(socket: Socket, connection: string, done: () => void) {
    this.socket = socket;
    this.connection = connection;
    this.done = done;
  }

  setHeader(name: string, value: string | number): this {
    if (this.headersSent) throw Object.assign(new Error('Cannot set headers after they are sent to the client'), { code: 'ERR_HTTP_HEADERS_SENT' });
    validateHeaderName(name);
    const text = String(value);
    validateHeaderValue(name, text);
    (this.fields ??= new Map()).set(name.toLowerCase(), text);
    return this;
  }

  writeHead(status: number, headers?: Record<string, string | number>): this {
    if (this.headersSent) throw Object.assign(new Error('Cannot write headers after they are sent to the client'), { code: 'ERR_HTTP_HEADERS_SENT' });
    if (headers !== undefined) for (const name in headers) this.setHeader(name, headers[name]!);
    this.statusCode = status;
    this.headersSent = true;
    return this;
  }

  flushHeaders(): void {
    if (this.started || this.closed) return;
    const head = this.startWith(undefined);
    if (head !== '') this.socket.write(head);
  }

  write(chunk: string): boolean {
    if (this.writableEnded || this.closed) return false;
    const head = this.started ? '' : this.startWith(undefined);
    const body = this.chunked ? chunkOf(chunk) : chunk;
    return head === '' && body === '' ? true : this.socket.write(head + body);
  }

  end(chunk?: string): this {
    if (this.writableEnded) return this;
    this.writableEnded = true;
    if (!this.closed) {
      const body = chunk ?? '';
      const head = this.started ? '' : this.startWith(body);
      this.socket.write(this.chunked ? `${head}${chunkOf(body)}0\r\n\r\n` : head + body);
      this.writableFinished = true;
    }
    this.finish();
    return this;
  }

  on(event: 'close', fn: () => void): this {
    if (event === 'close') (this.listeners ??= []).push(fn);
    return this;
  }

  off(event: 'close', fn: () => void): this {
    const i = this.listeners?.indexOf(fn) ?? -1;
    if (i >= 0) this.listeners!.splice(i, 1);
    return this;
  }

  /** The connection closed under the response. */
  connectionClosed(): void {
    if (this.closed) return;
    this.writableEnded = true;
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    const listeners = this.listeners;
    this.listeners = undefined;
    // As ServerResponse does: 'close' comes after the code that ended the response has run.
    if (listeners !== undefined) process.nextTick(() => listeners.forEach((fn) => fn()));
    this.done();
  }

  /**
   * The status line and headers. With `body` known (given whole to end()), its Content-Length,
   * counted here whatever a handler set, so that no miscount can break the connection's framing;
   * otherwise the handler's Content-Length if it set one, or chunked.
   */
  private head(body: string | undefined): string {
    this.started = true;
    this.headersSent = true;
    const status = this.statusCode;
    let text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    let length: string | undefined;
    if (this.fields !== undefined) {
      for (const [name, value] of this.fields) {
        if (name === 'content-length') length = value;
        else if (name !== 'connection' && name !== 'transfer-encoding' && name !== 'keep-alive') text += `${name}: ${value}\r\n`;
      }
    }
    text += `date: ${httpDate()}\r\n`;
    text += this.connection;
    if (body !== undefined) text += `content-length: ${Buffer.byteLength(body)}\r\n`;
    else if (length !== undefined) text += `content-length: ${length}\r\n`;
    else {
      this.chunked = true;
      text += 'transfer-encoding: chunked\r\n';
    }
    return `${text}\r\n`;
  }

  /**
   * The head, to be written before what follows it. Headers are Latin-1 on the wire and the rest
   * UTF-8; they agree on ASCII, which header values almost always are, and then one write carries
   * both. Otherwise the head is written here, on its own, and '' returned.
   */
  private startWith(body: string | undefined): string {
    const head = this.head(body);
    if (!NON_ASCII.test(head)) return head;
    this.socket.write(Buffer.from(head, 'latin1'));
    return '';
  }
}

function chunkOf(body: string): string {
  return body.length === 0 ? '' : `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n`;
}
