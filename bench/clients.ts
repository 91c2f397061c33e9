/**
 * The load generator's clients. Each `Caller` is one MCP client in a session it opened the way
 * a real client does (initialize, then notifications/initialized), and `call()` makes one
 * `tools/call` of `echo` and checks the answer, so a benchmark that measures errors fails loudly.
 */
import { Pool } from 'undici';
import type { ChildProcess } from 'node:child_process';
import type { Samples } from './stats.js';
import { BENCH_PROTOCOL_VERSION } from './upstream-core.js';

export interface Caller {
  call(): Promise<void>;
  close(): Promise<void>;
}

/** The text every benchmark call sends and expects back (`--payload` makes it longer). */
let echoText = 'hello';
let echoJson = JSON.stringify(echoText);

export function setEchoText(text: string): void {
  echoText = text;
  echoJson = JSON.stringify(text);
}

export function initializeBody(id: number | string): string {
  return JSON.stringify({
    jsonrpc: '2.0',
    id,
    method: 'initialize',
    params: { protocolVersion: BENCH_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'policylayer-bench', version: '1.0.0' } },
  });
}

const INITIALIZED = '{"jsonrpc":"2.0","method":"notifications/initialized"}';

/** The exact bytes of call `id`: built by concatenation so the client spends as little as it can. */
function callBody(id: number): string {
  return `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"text":${echoJson}}}}`;
}

interface Answer {
  id?: unknown;
  result?: { content?: Array<{ text?: unknown }>; isError?: unknown };
  error?: { message?: unknown };
}

/**
 * The JSON-RPC message of an HTTP answer: the body itself when it is JSON, or the last non-empty
 * `data:` of an event stream (proxies built on the MCP SDK answer a POST that way, some after an
 * empty priming event).
 */
function messageText(body: string): string {
  if (body.charCodeAt(0) === 0x7b /* { */) return body;
  let last = body;
  for (const line of body.split('\n')) {
    if (!line.startsWith('data:')) continue;
    const data = line.slice(5).trim();
    if (data !== '') last = data;
  }
  return last;
}

function checkEcho(body: string, id: number, where: string): void {
  let m: Answer;
  const text = messageText(body);
  try {
    m = JSON.parse(text) as Answer;
  } catch {
    throw new Error(`${where}: the answer to call ${id} is not JSON: ${text.slice(0, 200)}`);
  }
  if (m.id !== id || m.result?.isError === true || m.result?.content?.[0]?.text !== echoText) {
    throw new Error(`${where}: unexpected answer to call ${id}: ${text.slice(0, 300)}`);
  }
}

/** One keep-alive connection per caller, as `concurrency` independent clients would hold. */
export function httpPool(url: string, connections: number): Pool {
  return new Pool(new URL(url).origin, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 120_000,
    keepAliveMaxTimeout: 600_000,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
}

export interface RpcResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** One POST of a JSON-RPC message to a Streamable HTTP endpoint. */
export async function post(pool: Pool, url: string, body: string, headers: Record<string, string>): Promise<RpcResult> {
  const res = await pool.request({
    path: new URL(url).pathname,
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body,
  });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

export class HttpCaller implements Caller, Requester {
  private readonly pool: Pool;
  private readonly path: string;
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private seq = 0;

  private constructor(pool: Pool, url: string, sessionId: string | undefined) {
    this.pool = pool;
    this.url = url;
    this.path = new URL(url).pathname;
    this.headers = {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...(sessionId !== undefined ? { 'mcp-session-id': sessionId } : {}),
      'mcp-protocol-version': BENCH_PROTOCOL_VERSION,
    };
  }

  /**
   * Opens a session on `url` (initialize + notifications/initialized). A server that keeps no
   * sessions (it answers initialize without an id) is refused unless `sessionless` allows it.
   */
  static async open(pool: Pool, url: string, opts: { sessionless?: boolean } = {}): Promise<HttpCaller> {
    const init = await post(pool, url, initializeBody(0), {});
    const sid = init.headers['mcp-session-id'];
    if (init.status !== 200 || (typeof sid !== 'string' && opts.sessionless !== true)) {
      throw new Error(`${url}: initialize answered HTTP ${init.status} without a session id: ${init.text.slice(0, 300)}`);
    }
    const caller = new HttpCaller(pool, url, typeof sid === 'string' ? sid : undefined);
    const ack = await post(pool, url, INITIALIZED, caller.sessionHeaders());
    if (ack.status !== 202) throw new Error(`${url}: notifications/initialized answered HTTP ${ack.status}: ${ack.text.slice(0, 300)}`);
    return caller;
  }

  sessionHeaders(): Record<string, string> {
    const sid = this.headers['mcp-session-id'];
    return { ...(sid !== undefined ? { 'mcp-session-id': sid } : {}), 'mcp-protocol-version': BENCH_PROTOCOL_VERSION };
  }

  async call(): Promise<void> {
    const id = ++this.seq;
    const res = await this.pool.request({ path: this.path, method: 'POST', headers: this.headers, body: callBody(id) });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`${this.url}: call ${id} answered HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
    checkEcho(text, id, this.url);
  }

  /** Sends any request in this session and returns the parsed answer (for the policy checks). */
  async request(method: string, params: unknown): Promise<Answer & { result?: Record<string, unknown> }> {
    const id = ++this.seq;
    const res = await post(this.pool, this.url, JSON.stringify({ jsonrpc: '2.0', id, method, params }), this.sessionHeaders());
    if (res.status !== 200) throw new Error(`${this.url}: ${method} answered HTTP ${res.status}: ${res.text.slice(0, 300)}`);
    return JSON.parse(messageText(res.text)) as Answer & { result?: Record<string, unknown> };
  }

  async close(): Promise<void> {
    try {
      const res = await this.pool.request({ path: this.path, method: 'DELETE', headers: this.sessionHeaders() });
      await res.body.dump();
    } catch {
      // the server expires it
    }
  }
}

/** Any MCP session the policy checks can send a request in and read the parsed answer of. */
export interface Requester {
  request(method: string, params: unknown): Promise<Answer & { result?: Record<string, unknown> }>;
}

/**
 * A client speaking newline-delimited JSON-RPC to a stdio process it started itself, as an MCP
 * client does with a local server: either the server itself (the direct baseline) or
 * `policylayer run -- <server>`, which speaks the same protocol on its stdin/stdout. Calls in
 * flight at once are told apart by id, as an MCP client does.
 */
export class StdioConnection implements Requester {
  private readonly child: ChildProcess;
  private readonly name: string;
  private readonly pending = new Map<number, { resolve: (text: string) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private buf = '';
  private failure: Error | undefined;

  /** `name` says who answers, in error messages: 'the stdio server', 'policylayer run'. */
  constructor(child: ChildProcess, name = 'the stdio server') {
    this.child = child;
    this.name = name;
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => this.onData(chunk));
    child.once('exit', (code, signal) => this.failAll(new Error(`${name} exited (${signal ?? `code ${code}`})`)));
  }

  private failAll(err: Error): void {
    this.failure = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let start = 0;
    let nl: number;
    while ((nl = this.buf.indexOf('\n', start)) >= 0) {
      const line = this.buf.slice(start, nl);
      start = nl + 1;
      // The id is read with a scan, not a parse: the caller parses the whole answer once.
      const m = /"id":(\d+)/.exec(line);
      const p = m ? this.pending.get(Number(m[1])) : undefined;
      if (!p) continue;
      this.pending.delete(Number(m![1]));
      p.resolve(line);
    }
    this.buf = start === 0 ? this.buf : this.buf.slice(start);
  }

  /** Sends `body(id)` and resolves with the answer's text. */
  send(body: (id: number) => string): Promise<{ id: number; text: string }> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: (text) => resolve({ id, text }), reject });
      this.child.stdin!.write(body(id) + '\n');
    });
  }

  async initialize(): Promise<void> {
    const { text } = await this.send((id) => initializeBody(id));
    if (!text.includes('"result"')) throw new Error(`${this.name} refused initialize: ${text.slice(0, 300)}`);
    this.child.stdin!.write(INITIALIZED + '\n');
  }

  /** Sends any request and returns the parsed answer (for the policy checks). */
  async request(method: string, params: unknown): Promise<Answer & { result?: Record<string, unknown> }> {
    const { text } = await this.send((id) => JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    try {
      return JSON.parse(text) as Answer & { result?: Record<string, unknown> };
    } catch {
      throw new Error(`${this.name}: the answer to ${method} is not JSON: ${text.slice(0, 300)}`);
    }
  }

  caller(): Caller {
    return {
      call: async () => {
        const { id, text } = await this.send(callBody);
        checkEcho(text, id, this.name);
      },
      close: async () => {},
    };
  }
}

/** Drives every caller closed-loop for `ms`; records each latency when `samples` is given. */
export async function drive(callers: Caller[], ms: number, samples?: Samples): Promise<{ calls: number; elapsedNs: number }> {
  const begin = process.hrtime.bigint();
  const end = begin + BigInt(Math.round(ms * 1e6));
  let calls = 0;
  await Promise.all(
    callers.map(async (c) => {
      for (;;) {
        const t0 = process.hrtime.bigint();
        if (t0 >= end) return;
        await c.call();
        const t1 = process.hrtime.bigint();
        samples?.push(Number(t1 - t0));
        calls++;
      }
    }),
  );
  return { calls, elapsedNs: Number(process.hrtime.bigint() - begin) };
}
