/**
 * The stdio side for local clients: the client spawns `policylayer run ... -- <server>` and speaks
 * newline-delimited JSON-RPC on our stdin/stdout, exactly as it would to the server itself.
 */
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../../telemetry/logger.js';
import { PolicyLayerError, wireOf } from '../../errors.js';
import type { Gateway, ServerRuntime, Session } from '../../gateway/gateway.js';
import {
  errorResponse,
  idOf,
  parseMessage,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../../util/jsonrpc.js';
import { lineSplitter } from '../../util/lines.js';
import type { CallHandlers, ServerMessage } from '../upstream/types.js';

export class StdioListener {
  private readonly gateway: Gateway;
  private readonly server: ServerRuntime;
  private readonly out: Writable;
  private readonly log: Logger;
  private session: Session | undefined;
  /** Messages that arrive while initialize is still being answered wait for it, in order. */
  private initializing: Promise<unknown> | undefined;

  constructor(gateway: Gateway, server: ServerRuntime, out: Writable, logger: Logger) {
    this.gateway = gateway;
    this.server = server;
    this.out = out;
    this.log = logger;
  }

  /** Reads `input` until it ends; resolves then. */
  attach(input: Readable): Promise<void> {
    return new Promise((resolve) => {
      input.setEncoding('utf8');
      const split = lineSplitter((line) => this.onLine(line));
      const upstream = this.server.upstream;
      // The requests of one chunk (a client with several calls in flight) reach the server in one write.
      input.on('data', upstream.batch === undefined ? split : (chunk: string) => upstream.batch!(() => split(chunk)));
      input.on('end', () => resolve());
      input.on('error', () => resolve());
    });
  }

  /** Where every call's answer and related messages go: one client, one stream, so one object for all calls. */
  private readonly reply: CallHandlers = {
    onRelated: (m) => this.write(m.message, m.raw),
    onResponse: (m, raw) => this.write(m, raw),
  };

  /** Messages written in one turn of the event loop, sent to the client in one write. */
  private pending = '';

  private write(msg: JsonRpcMessage | ServerMessage['message'], raw?: string): void {
    // Newline-delimited framing: a message must not contain a raw newline, so re-serialise if it does.
    const text = raw !== undefined && !raw.includes('\n') && !raw.includes('\r') ? raw : JSON.stringify(msg);
    // stdout to a pipe is written synchronously, a system call per write: answers that arrive
    // together (one chunk from the server holds several) leave together.
    if (this.pending === '') queueMicrotask(() => this.flush());
    this.pending += text + '\n';
  }

  private flush(): void {
    const out = this.pending;
    this.pending = '';
    if (out !== '') this.out.write(out);
  }

  private onLine(line: string): void {
    if (this.initializing) {
      void this.initializing.then(() => this.onLine(line));
      return;
    }
    let parsed;
    try {
      parsed = parseMessage(line);
    } catch (err) {
      const e = err as PolicyLayerError;
      let id = null;
      try {
        id = idOf(JSON.parse(line));
      } catch {
        // unparseable: no id
      }
      this.write(errorResponse(id, wireOf(e.code).rpcCode, e.message));
      return;
    }
    const { message, kind } = parsed;
    if (kind === 'request' && (message as JsonRpcRequest).method === 'initialize') {
      this.initializing = this.initialize(message as JsonRpcRequest).finally(() => (this.initializing = undefined));
      return;
    }
    const session = this.session;
    if (!session) {
      if (kind === 'request') this.write(errorResponse((message as JsonRpcRequest).id, -32600, 'send initialize first'));
      return;
    }
    if (kind === 'request') {
      this.gateway.call(session, message as JsonRpcRequest, line, this.reply);
    } else {
      this.gateway.send(session, message as JsonRpcNotification | JsonRpcResponse, line);
    }
  }

  private async initialize(req: JsonRpcRequest): Promise<void> {
    try {
      if (this.session) await this.gateway.closeSession(this.session);
      const { session, response } = await this.gateway.initialize(this.server, req);
      this.session = session;
      await this.gateway.listen(session, (m) => this.write(m.message, m.raw));
      this.write(response);
    } catch (err) {
      const rpc = (err as { rpc?: JsonRpcResponse }).rpc;
      if (rpc) this.write({ ...rpc, id: req.id });
      else this.write(errorResponse(req.id, -32603, (err as Error).message));
      this.log.error({ err: (err as Error).message }, 'initialize failed');
    }
  }
}
