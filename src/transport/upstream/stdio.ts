/**
 * A local MCP server run as a child process and spoken to over stdio (newline-delimited JSON).
 *
 * One supervised process serves every client session of the server: request ids and progress
 * tokens are rewritten so clients cannot collide, and each answer goes back to the client that
 * asked. The process runs in its own process group so shutdown can reach everything it spawned.
 */
import type { ChildProcess } from 'node:child_process';
import type { Logger } from '../../telemetry/logger.js';
import { JsonRpcErrors } from '../../errors.js';
import { GATEWAY_CLIENT_CAPABILITIES, GATEWAY_INFO, LATEST_SESSION_VERSION } from '../../gateway/protocol.js';
import {
  classify,
  ForwardedResult,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../../util/jsonrpc.js';
import { lineSplitter } from '../../util/lines.js';
import { trackGroup, untrackGroup } from './reaper.js';
import { spawnServer } from './spawn-group.js';
import { resultAnswerId, swapId } from '../../util/raw-id.js';
import { upstreamError, type CallHandlers, type ServerMessage, type Upstream, type UpstreamSession } from './types.js';
import { ioArrived } from '../../util/busy-poll.js';

export interface StdioUpstreamOptions {
  name: string;
  command: readonly string[];
  env?: Record<string, string> | undefined;
  cwd?: string | undefined;
  /** Per-call limit; also the limit for the process to come up and answer initialize. */
  timeoutMs: number;
  logger: Logger;
  /** First restart delay; doubles per consecutive crash up to `maxBackoffMs`. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** How long shutdown waits after closing stdin, and again after SIGTERM, before escalating. */
  killGraceMs?: number;
  /**
   * `shared` (default): one process serves every client session. `session`: each client session
   * gets its own process, initialized with that client's own initialize (its capabilities, roots
   * included), so sessions share no server state at all.
   */
  isolation?: 'shared' | 'session' | undefined;
  /** The initialize params to start the process with; the gateway's own when absent. */
  initParams?: Record<string, unknown> | undefined;
  /** Told what the process does, for a caller that explains its failures itself (scan). */
  observer?: ProcessObserver | undefined;
}

/** What a supervised process did, as it happens (besides the log lines about it). */
export interface ProcessObserver {
  /** A line the process wrote on stderr. */
  stderr?(line: string): void;
  /** It ended while the upstream was not shutting it down. */
  exited?(code: number | null, signal: NodeJS.Signals | null): void;
  /** It answered initialize with an error (`error`), or with something that is not a result. */
  refusedInitialize?(error: unknown): void;
}

interface Pending {
  downstreamId: JsonRpcId;
  handlers: CallHandlers;
  session: SharedSession | undefined;
  progressToken?: string | number | undefined;
  gatewayToken?: string | undefined;
  /** performance.now() after which the call has timed out; progress moves it on. */
  deadline: number;
  /** What happens at the deadline. */
  onTimeout: (id: UpstreamId, p: Pending) => void;
}

const DIGITS = /^(0|[1-9][0-9]{0,15})$/;
/** Ids of given-up calls remembered at most (see StdioUpstream.abandoned). */
const MAX_ABANDONED = 10_000;

/** The id a request carries to the process: the client's own when no other call in flight has it. */
type UpstreamId = string | number;

type State = 'stopped' | 'starting' | 'ready' | 'backoff' | 'closing' | 'closed';

/** A process that stayed up this long is considered healthy again: the backoff starts over. */
const HEALTHY_UPTIME_MS = 30_000;

export class StdioUpstream implements Upstream {
  readonly name: string;
  private readonly opts: StdioUpstreamOptions;
  private readonly log: Logger;
  private child: ChildProcess | undefined;
  private state: State = 'stopped';
  private nextId = 1;
  /** Progress tokens the gateway gives calls, numbered apart from ids (1 and "1" are two ids, one token text). */
  private nextToken = 1;
  private readonly inflight = new Map<UpstreamId, Pending>();
  /**
   * Ids of calls given up before their answer came (timed out, cancelled, their session closed),
   * oldest first: the process may still answer one, so no new call takes it until it has, and that
   * late answer is dropped rather than taken for the new call's. A new process starts with none.
   */
  private readonly abandoned = new Set<UpstreamId>();
  /**
   * One timer checks every deadline, rather than a timer per call: arming and clearing a timer for
   * each call was a measurable share of a forwarded call's cost (bench: wrap-stdio at c=16).
   */
  private sweeper: NodeJS.Timeout | undefined;
  private readonly byToken = new Map<string, Pending>();
  /** Server-to-client requests waiting for an answer, and the only session allowed to give it. */
  private readonly serverRequests = new Map<JsonRpcId, SharedSession>();
  readonly sessions = new Set<SharedSession>();
  private readyWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private initResult: Record<string, unknown> | undefined;
  private crashes = 0;
  private startedAt = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(opts: StdioUpstreamOptions) {
    this.name = opts.name;
    this.opts = opts;
    this.log = opts.logger.child({ server: opts.name });
  }

  /** The pid of the running process, for tests and `servers` listings. */
  get pid(): number | undefined {
    return this.state === 'ready' || this.state === 'starting' ? this.child?.pid : undefined;
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** Per-session processes (isolation: session). */
  private readonly dedicated = new Set<StdioUpstream>();

  async start(): Promise<void> {
    if (this.opts.isolation === 'session') return; // processes start with their sessions
    if (this.state === 'stopped') this.spawnProcess();
    await this.whenReady();
  }

  async open(init: JsonRpcRequest, protocolVersion: string): Promise<UpstreamSession> {
    if (this.opts.isolation === 'session') return this.openDedicated(init);
    if (this.state === 'stopped') this.spawnProcess();
    await this.whenReady();
    // Without the client's own initialize the answer is the one the process gave the gateway.
    const result = this.opts.initParams ? { ...this.initResult } : { ...this.initResult, protocolVersion };
    const session = new SharedSession(this, result);
    this.sessions.add(session);
    return session;
  }

  private async openDedicated(init: JsonRpcRequest): Promise<UpstreamSession> {
    if (this.state === 'closing' || this.state === 'closed') throw new Error(`upstream server '${this.name}' is shutting down`);
    const child = new StdioUpstream({ ...this.opts, isolation: 'shared', initParams: init.params ?? {} });
    this.dedicated.add(child);
    try {
      const session = (await child.open(init, '')) as SharedSession;
      session.onClose = () => {
        this.dedicated.delete(child);
        return child.close();
      };
      return session;
    } catch (err) {
      this.dedicated.delete(child);
      await child.close();
      throw err;
    }
  }

  private whenReady(): Promise<void> {
    if (this.state === 'ready') return Promise.resolve();
    if (this.state === 'closing' || this.state === 'closed') {
      return Promise.reject(new Error(`upstream server '${this.name}' is shutting down`));
    }
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      this.readyWaiters.push(waiter);
      const t = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== waiter);
        reject(new Error(`upstream server '${this.name}' did not become ready within ${this.opts.timeoutMs} ms`));
      }, this.opts.timeoutMs);
      t.unref();
      const done = waiter.resolve;
      waiter.resolve = () => {
        clearTimeout(t);
        done();
      };
    });
  }

  private spawnProcess(): void {
    const [cmd, ...args] = this.opts.command;
    if (cmd === undefined) throw new Error(`server '${this.name}' has an empty command`);
    this.state = 'starting';
    this.startedAt = Date.now();
    this.log.info({ command: this.opts.command }, 'starting upstream process');
    // Its own process group, so SIGTERM/SIGKILL at shutdown reach grandchildren too (npx, uvx, shells).
    const { child, started } = spawnServer(cmd, args, { cwd: this.opts.cwd, env: { ...process.env, ...this.opts.env } });
    this.child = child;
    if (child.pid !== undefined) trackGroup(child.pid);
    let resolveExit!: () => void;
    this.exited = new Promise((r) => (resolveExit = r));

    child.stdout!.setEncoding('utf8');
    const splitLines = lineSplitter((line) => this.onLine(line));
    child.stdout!.on('data', (chunk: string) => {
      ioArrived();
      splitLines(chunk);
    });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on(
      'data',
      lineSplitter((line) => {
        this.log.info({ stream: 'stderr' }, line);
        this.opts.observer?.stderr?.(line);
      }),
    );
    // A write to a process that just died raises EPIPE here; the exit handler deals with the calls.
    child.stdin!.on('error', () => {});
    const couldNotStart = (err: Error) => {
      this.log.error({ err: err.message }, 'upstream process could not be started');
      this.onExit(child, null, null, err);
      resolveExit();
    };
    child.on('error', couldNotStart);
    child.on('exit', (code, signal) => {
      // Until the command runs, an exit is the launcher's: a command that could not be run is
      // reported as the error spawn() would have given.
      void started.then((failure) => {
        if (failure !== undefined) return couldNotStart(failure);
        this.onExit(child, code, signal);
        resolveExit();
      });
    });
    this.initialize(child);
  }

  private initialize(child: ChildProcess): void {
    const id = this.freeId();
    this.track(id, {
      downstreamId: id,
      session: undefined,
      deadline: performance.now() + this.opts.timeoutMs,
      onTimeout: () => {
        this.log.error('upstream did not answer initialize in time; restarting it');
        this.kill(child, 'SIGKILL');
      },
      handlers: {
        onRelated: () => {},
        onResponse: (msg) => {
          if (msg.error || typeof msg.result !== 'object' || msg.result === null) {
            this.log.error({ error: msg.error }, 'upstream refused initialize; restarting it');
            this.opts.observer?.refusedInitialize?.(msg.error);
            this.kill(child, 'SIGKILL');
            return;
          }
          this.initResult = msg.result as Record<string, unknown>;
          this.write({ jsonrpc: '2.0', method: 'notifications/initialized' });
          this.state = 'ready';
          this.log.info({ pid: child.pid }, 'upstream ready');
          const waiters = this.readyWaiters;
          this.readyWaiters = [];
          for (const w of waiters) w.resolve();
        },
      },
    });
    this.write({
      jsonrpc: '2.0',
      id,
      method: 'initialize',
      params: this.opts.initParams ?? { protocolVersion: LATEST_SESSION_VERSION, capabilities: GATEWAY_CLIENT_CAPABILITIES, clientInfo: GATEWAY_INFO },
    });
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    if (this.child !== child) return;
    // What a crashed server leaves in its group (a shell, a grandchild) would be orphaned: it goes
    // now. At shutdown close() does this after its own escalation.
    if (child.pid !== undefined && this.state !== 'closing' && this.state !== 'closed') {
      killGroup(child.pid, 'SIGKILL');
      untrackGroup(child.pid);
    }
    this.child = undefined;
    const why = error?.message ?? (signal ? `was killed by ${signal}` : `exited with code ${code}`);
    const closing = this.state === 'closing' || this.state === 'closed';
    if (!closing) {
      this.log.warn({ code, signal }, `upstream process ${why}`);
      this.opts.observer?.exited?.(code, signal);
    }
    // Calls in flight can never be answered now: fail them at once rather than at their timeout.
    const message = closing
      ? `the gateway is shutting down; upstream server '${this.name}' was stopped`
      : `upstream server '${this.name}' ${why} while the call was in flight`;
    for (const [id, p] of this.inflight) {
      this.inflight.delete(id);
      p.handlers.onResponse(upstreamError(p.downstreamId, JsonRpcErrors.UPSTREAM_ERROR, message), undefined);
    }
    this.abandoned.clear();
    this.byToken.clear();
    this.serverRequests.clear();
    // Clients waiting for the process to come up (initialize, calls during backoff) learn why now,
    // not at their timeout: a command that does not exist will not start on the next try either.
    if (!closing && this.readyWaiters.length > 0) {
      const reason = error !== undefined ? `could not be started: ${error.message}` : `${why} before it was ready`;
      const waiters = this.readyWaiters;
      this.readyWaiters = [];
      // The spawn error rides along as the cause: its code tells a missing command from one that
      // may not be executed, for whoever explains the failure to a person.
      for (const w of waiters) w.reject(new Error(`upstream server '${this.name}' ${reason}`, error !== undefined ? { cause: error } : undefined));
    }
    if (closing) {
      this.state = 'closed';
      return;
    }
    if (Date.now() - this.startedAt > HEALTHY_UPTIME_MS) this.crashes = 0;
    const initial = this.opts.initialBackoffMs ?? 250;
    const delay = Math.min(this.opts.maxBackoffMs ?? 30_000, initial * 2 ** this.crashes);
    this.crashes++;
    this.state = 'backoff';
    this.log.info({ delayMs: delay }, 'restarting upstream process after backoff');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.state === 'backoff') this.spawnProcess();
    }, delay);
    this.restartTimer.unref();
  }

  private write(msg: JsonRpcMessage): boolean {
    return this.writeLine(JSON.stringify(msg));
  }

  /** Writes one message's JSON text, which must hold no raw newline (newline-delimited framing). */
  private writeLine(text: string): boolean {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed) return false;
    if (this.batching > 0) this.batched += `${text}\n`;
    else stdin.write(`${text}\n`);
    return true;
  }

  /** Nesting depth of batch(), and the lines it holds back. */
  private batching = 0;
  private batched = '';

  batch(fn: () => void): void {
    this.batching++;
    try {
      fn();
    } finally {
      if (--this.batching === 0 && this.batched !== '') {
        const text = this.batched;
        this.batched = '';
        const stdin = this.child?.stdin;
        // Lines held for a process that has since gone: its exit handler fails their calls.
        if (stdin && !stdin.destroyed) stdin.write(text);
      }
    }
  }

  private onLine(line: string): void {
    // Most lines answer a call: the id is read from the text and the result forwarded unparsed.
    const answerId = resultAnswerId(line);
    if (answerId !== undefined) {
      this.onResponse(new ForwardedResult(answerId, line), line);
      return;
    }
    let msg: JsonRpcMessage;
    let kind;
    try {
      msg = JSON.parse(line) as JsonRpcMessage;
      kind = classify(msg);
    } catch {
      // Servers sometimes print banners on stdout; they are not MCP and must not break the session.
      this.log.warn({ line: line.slice(0, 200) }, 'upstream wrote a line that is not JSON-RPC; ignored');
      return;
    }
    if (kind === 'response') this.onResponse(msg as JsonRpcResponse, line);
    else if (kind === 'notification') this.onNotification(msg as JsonRpcNotification, line);
    else this.onServerRequest(msg as JsonRpcRequest, line);
  }

  private onResponse(msg: JsonRpcResponse, raw: string): void {
    if (msg.id === null) return;
    let id: UpstreamId = msg.id;
    let p = this.inflight.get(id);
    // A server that answers 7 as "7" is still understood.
    if (p === undefined && typeof id === 'string' && DIGITS.test(id)) p = this.inflight.get((id = Number(id)));
    if (!p) {
      // The late answer of a call given up: its id is free again.
      this.abandoned.delete(msg.id);
      this.abandoned.delete(id);
      return;
    }
    this.settle(id, p);
    // The parsed answer carries the client's id for those that read or rebuild it (tools/list
    // filtering); the text keeps the process's own serialisation, its id swapped back when it was
    // not the client's, so the downstream need not serialise the answer again (about 100 µs for a
    // 64 KB answer).
    const same = msg.id === p.downstreamId;
    msg.id = p.downstreamId;
    p.handlers.onResponse(msg, same ? raw : swapId(raw, p.downstreamId));
  }

  /** A number of the gateway's that no call in flight uses as its id (a client's may be any). */
  private freeId(): number {
    let id = this.nextId++;
    while (this.inflight.has(id) || this.abandoned.has(id)) id = this.nextId++;
    return id;
  }

  /** Settles a call that ends without its answer; see `abandoned`. */
  private abandon(id: UpstreamId, p: Pending): void {
    this.settle(id, p);
    this.abandoned.add(id);
    // Bounded: a process that never answers what it was told to forget cannot grow it for ever.
    if (this.abandoned.size > MAX_ABANDONED) this.abandoned.delete(this.abandoned.values().next().value as UpstreamId);
  }

  /** Tracks a request sent to the process until it is answered, fails or times out. */
  private track(id: UpstreamId, p: Pending): void {
    this.inflight.set(id, p);
    if (this.sweeper === undefined) {
      // Checked at a tenth of the timeout (10 ms to 1 s): a request times out no earlier than its
      // deadline, and at most that much later.
      this.sweeper = setInterval(() => this.sweep(), Math.min(1000, Math.max(10, this.opts.timeoutMs / 10)));
      this.sweeper.unref();
    }
  }

  private sweep(): void {
    if (this.inflight.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
      return;
    }
    const now = performance.now();
    for (const [id, p] of this.inflight) {
      if (p.deadline > now) continue;
      this.abandon(id, p);
      p.onTimeout(id, p);
    }
  }

  private readonly callTimedOut = (id: UpstreamId, p: Pending): void => {
    this.write({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'timeout' } });
    p.handlers.onResponse(
      upstreamError(p.downstreamId, JsonRpcErrors.UPSTREAM_ERROR, `upstream server '${this.name}' did not answer within ${this.opts.timeoutMs} ms`),
      undefined,
    );
  };

  private settle(id: UpstreamId, p: Pending): void {
    this.inflight.delete(id);
    if (p.gatewayToken !== undefined) this.byToken.delete(p.gatewayToken);
  }

  private onNotification(msg: JsonRpcNotification, raw: string): void {
    if (msg.method === 'notifications/progress') {
      const token = msg.params?.progressToken;
      const p = typeof token === 'string' ? this.byToken.get(token) : undefined;
      if (!p) return;
      p.deadline = performance.now() + this.opts.timeoutMs;
      p.handlers.onRelated({ message: { ...msg, params: { ...msg.params, progressToken: p.progressToken } } });
      return;
    }
    if (msg.method === 'notifications/cancelled') {
      // The server withdrew one of its own requests: only the session that received it needs to know.
      const target = this.serverRequests.get(msg.params?.requestId as JsonRpcId);
      if (target) {
        this.serverRequests.delete(msg.params?.requestId as JsonRpcId);
        target.deliver({ message: msg, raw });
      }
      return;
    }
    const owner = this.soleCall();
    if (owner) {
      owner.handlers.onRelated({ message: msg, raw });
      return;
    }
    for (const s of this.sessions) s.deliver({ message: msg, raw });
  }

  /** The one call in flight, if exactly one is: then a message from the server can only be about it. */
  private soleCall(): Pending | undefined {
    if (this.inflight.size !== 1) return undefined;
    const p = this.inflight.values().next().value as Pending;
    return p.session ? p : undefined;
  }

  private onServerRequest(msg: JsonRpcRequest, raw: string): void {
    const owner = this.soleCall();
    let target: SharedSession | undefined = owner?.session;
    if (!target) {
      const withCalls = new Set<SharedSession>();
      for (const p of this.inflight.values()) if (p.session) withCalls.add(p.session);
      if (withCalls.size === 1) target = withCalls.values().next().value;
      else if (withCalls.size === 0 && this.sessions.size === 1) target = this.sessions.values().next().value;
    }
    if (!target) {
      // Asking the wrong client (and so possibly the wrong person) is worse than not asking.
      const why =
        this.sessions.size === 0
          ? 'no client is connected to this server through PolicyLayer'
          : 'PolicyLayer could not tell which client this request belongs to (several clients share this stdio server)';
      this.write(upstreamError(msg.id, JsonRpcErrors.INTERNAL_ERROR, why));
      return;
    }
    this.serverRequests.set(msg.id, target);
    if (owner) owner.handlers.onRelated({ message: msg, raw });
    else target.deliverRequest({ message: msg, raw });
  }

  /** Sends a call for a session; see UpstreamSession.call. */
  dispatch(session: SharedSession, req: JsonRpcRequest, raw: string | undefined, handlers: CallHandlers): void {
    if (this.state !== 'ready') {
      this.whenReady().then(
        () => this.dispatch(session, req, raw, handlers),
        (err: Error) =>
          handlers.onResponse(upstreamError(req.id, JsonRpcErrors.UPSTREAM_ERROR, err.message), undefined),
      );
      return;
    }
    // The client's id goes as it is unless another call in flight (another client's, the gateway's
    // own) has it; then a number of the gateway's. The process answers each id once, so an id in
    // flight names one call whichever way it was chosen.
    const own = req.id;
    const passes = (typeof own === 'string' || (typeof own === 'number' && Number.isSafeInteger(own))) && !this.inflight.has(own) && !this.abandoned.has(own);
    const id: UpstreamId = passes ? own : this.freeId();
    const pending: Pending = { downstreamId: req.id, handlers, session, deadline: performance.now() + this.opts.timeoutMs, onTimeout: this.callTimedOut };
    let params = req.params;
    const meta = params?._meta as Record<string, unknown> | undefined;
    const token = meta?.progressToken;
    if (typeof token === 'string' || typeof token === 'number') {
      pending.progressToken = token;
      pending.gatewayToken = `pl-${this.nextToken++}`;
      this.byToken.set(pending.gatewayToken, pending);
      params = { ...params, _meta: { ...meta, progressToken: pending.gatewayToken } };
    }
    this.track(id, pending);
    // The client's own text with only the id swapped, when it can go as it is: not when the
    // progress token must change too (rare enough to re-serialise), and not when it holds raw line
    // breaks (pretty-printed: newline-delimited framing forbids them). The gateway passes text on
    // only when no key in it repeats (Gateway.call).
    let text: string | undefined;
    if (raw !== undefined && pending.gatewayToken === undefined && !raw.includes('\n') && !raw.includes('\r')) {
      text = passes ? raw : swapId(raw, id);
    }
    if (text === undefined) {
      const out: JsonRpcRequest = { jsonrpc: '2.0', id, method: req.method };
      if (params !== undefined) out.params = params;
      text = JSON.stringify(out);
    }
    this.writeLine(text);
  }

  /** Forwards a client's notification or answer; see UpstreamSession.send. */
  forward(session: SharedSession, msg: JsonRpcNotification | JsonRpcResponse): void {
    if (!('method' in msg)) {
      if (msg.id === null || this.serverRequests.get(msg.id) !== session) {
        this.log.warn({ id: msg.id }, 'a client answered a request it was not sent; dropped');
        return;
      }
      this.serverRequests.delete(msg.id);
      this.write(msg);
      return;
    }
    switch (msg.method) {
      case 'notifications/initialized':
        return; // the gateway completed the handshake with this process itself
      case 'notifications/cancelled': {
        const upstreamId = this.upstreamIdOf(session, msg.params?.requestId as JsonRpcId);
        if (upstreamId === undefined) return;
        this.write({ ...msg, params: { ...msg.params, requestId: upstreamId } });
        // The server will not answer a cancelled request (spec: utilities/cancellation), so the call
        // ends here; left pending it would be counted in flight until its timeout and would make
        // other sessions' server requests look ambiguous.
        const p = this.inflight.get(upstreamId);
        if (p) {
          this.abandon(upstreamId, p);
          p.handlers.onResponse(upstreamError(p.downstreamId, JsonRpcErrors.UPSTREAM_ERROR, 'Request was cancelled by the client'), undefined);
        }
        return;
      }
      default:
        this.write(msg);
    }
  }

  /**
   * The id used upstream for `session`'s call `downstreamId`. Found by a scan rather than kept in a
   * map per session: only a cancellation asks, and a map written and emptied on every call cost
   * more in garbage collection than the scan does.
   */
  private upstreamIdOf(session: SharedSession, downstreamId: JsonRpcId): UpstreamId | undefined {
    for (const [id, p] of this.inflight) if (p.session === session && p.downstreamId === downstreamId) return id;
    return undefined;
  }

  detach(session: SharedSession): void {
    this.sessions.delete(session);
    for (const [upstreamId, p] of this.inflight) {
      if (p.session !== session) continue;
      this.abandon(upstreamId, p);
      this.write({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: upstreamId, reason: 'session closed' } });
      p.handlers.onResponse(upstreamError(p.downstreamId, JsonRpcErrors.UPSTREAM_ERROR, 'the session was closed'), undefined);
    }
    for (const [id, s] of this.serverRequests) if (s === session) this.serverRequests.delete(id);
  }

  /** Signals the process group of a server that is still running. */
  private kill(child: ChildProcess, signal: NodeJS.Signals): void {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    killGroup(child.pid, signal);
  }

  /** Closes stdin, then SIGTERM, then SIGKILL to the whole process group. */
  async close(): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    await Promise.allSettled([...this.dedicated].map((d) => d.close()));
    this.dedicated.clear();
    const child = this.child;
    this.state = 'closing';
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(new Error(`upstream server '${this.name}' is shutting down`));
    if (!child) {
      this.state = 'closed';
      return;
    }
    const grace = this.opts.killGraceMs ?? 2000;
    const exited = this.exited;
    const waitExit = (ms: number) =>
      Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    child.stdin?.end();
    if (!(await waitExit(grace))) {
      this.kill(child, 'SIGTERM');
      if (!(await waitExit(grace))) {
        this.kill(child, 'SIGKILL');
        await waitExit(grace);
      }
    }
    // Whatever the server left behind in its group goes too.
    if (child.pid !== undefined) {
      killGroup(child.pid, 'SIGKILL');
      untrackGroup(child.pid);
    }
    this.state = 'closed';
  }
}

/** Signals every process in the group `pgid` leads, whether or not the leader is still alive. */
function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // no process left in the group
  }
}

/** One client's view of the shared process. */
export class SharedSession implements UpstreamSession {
  readonly initializeResult: Record<string, unknown>;
  private listener: ((msg: ServerMessage) => void) | undefined;
  private readonly upstream: StdioUpstream;

  constructor(upstream: StdioUpstream, initializeResult: Record<string, unknown>) {
    this.upstream = upstream;
    this.initializeResult = initializeResult;
  }

  /** `raw`, the client's text of `req`, is forwarded with only the id changed when it can be. */
  call(req: JsonRpcRequest, raw: string | undefined, handlers: CallHandlers): void {
    this.upstream.dispatch(this, req, raw, handlers);
  }

  send(msg: JsonRpcNotification | JsonRpcResponse): void {
    this.upstream.forward(this, msg);
  }

  async listen(onMessage: (msg: ServerMessage) => void): Promise<{ close(): void }> {
    this.listener = onMessage;
    return {
      close: () => {
        if (this.listener === onMessage) this.listener = undefined;
      },
    };
  }

  /** A server notification for this session outside any call; dropped when no stream is open. */
  deliver(msg: ServerMessage): void {
    this.listener?.(msg);
  }

  /** A server request for this session outside any call: it needs an open stream to be answered. */
  deliverRequest(msg: ServerMessage): void {
    if (this.listener) this.listener(msg);
    else
      this.upstream.forward(this, upstreamError((msg.message as JsonRpcRequest).id, JsonRpcErrors.INTERNAL_ERROR, 'the client has no open stream for server requests'));
  }

  /** Set for a session that owns its process (isolation: session): closing the session stops it. */
  onClose: (() => Promise<void>) | undefined;

  async close(): Promise<void> {
    this.listener = undefined;
    this.upstream.detach(this);
    await this.onClose?.();
  }
}
