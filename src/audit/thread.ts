/**
 * The gateway's end of its audit thread (thread-worker.ts): what the trail records through (unless
 * the event loop records, see loop-recorder.ts), and the queryable sinks the admin API and
 * retention use, each a proxy to the sink in the thread.
 *
 * On the call path, recording an event is an array push: the events of POST_EVERY_MS go to the
 * thread together, in one message (at once when POST_AT of them have piled up), sent at the end of
 * the event loop's turn of the first event recorded after POST_EVERY_MS, or, when none comes, by a
 * timer. A strict event
 * is sent at once, after whatever was recorded before it, and its promise settles when the
 * thread says it is durable.
 *
 * What the gateway knows of the thread's state arrives by message, so it lags by a turn or so:
 * `full` turns true after the thread has seen a sink's queue pass `max_queue` (a few more calls
 * are queued meanwhile, which `on_full: block` allows: it bounds memory, not the exact count), or
 * as soon as `max_queue` events handed over are not yet known to be taken: in `async` mode the
 * thread yields the CPU to the calls (thread-worker.ts) and may fall behind while the machine is
 * busy. stats() are the counters as last sent (a quarter of a second old at most; statsNow() asks).
 *
 * The thread does not keep the process alive on its own account: while nothing waits for an
 * answer it is unreferenced, like the writer's timers, so an orderly shutdown must close() the
 * log to lose nothing (the gateway's does).
 */
import { Worker } from 'node:worker_threads';
import type { AuditConfig } from '../config/index.js';
import type { Logger } from '../telemetry/logger.js';
import type { AuditEventInput, AuditRecord } from './event.js';
import type { AuditPage, AuditQuery, AuditStore, PruneResult } from './store.js';
import { pauseBusyPollWhile } from '../util/busy-poll.js';
import { EventEncoder, ThreadWork, fromWireError, type AuditThreadData, type FromAuditThread, type StoreOp, type ToAuditThread } from './thread-wire.js';
import type { AuditCheckpoint, VerifyResult } from './verify.js';
import type { AuditSinkStats } from './writer.js';

/** Events sent in one message at most; more are sent at once rather than wait for POST_EVERY_MS. */
const POST_AT = 256;
/**
 * How long recorded events wait on the event loop before going to the thread together. Each
 * message wakes the thread, which costs both sides some 60 to 100 µs of CPU here, far more than
 * copying a few more events: sending at every turn of the loop cost about 100 µs a call with one
 * client, every 2 ms about 4 µs a call more than every 10 ms at 8,000 calls/s. It adds to what a
 * crash loses in `async` mode (the flush interval, 20 ms by default), so it stays small beside it.
 */
const POST_EVERY_MS = 5;
/**
 * When no event follows to carry them, what is pending goes after this long: twice POST_EVERY_MS,
 * so that under traffic the next event comes first and no timer wakes the loop. A crash in
 * `async` mode loses at most this plus the flush interval.
 */
const FALLBACK_MS = 2 * POST_EVERY_MS;

/**
 * BEHIND: the event loop busy-polls (../util/busy-poll.ts) except while the thread is a flush
 * interval behind: the messages of a flush interval are not finished with, or its flush timer has
 * been due a flush interval. In `async` mode the thread gets a CPU only when no other thread wants
 * one (thread-worker.ts), and a polling event loop wants its CPU all the time. With 16 clients on
 * two cores, polling left the thread only the moments the other core had to spare: the gateway did
 * 11 to 16% fewer calls a second with its audit log on than off (with polling off, as many). Paused
 * whenever the thread had anything to do, 9% fewer at 16 clients, but 7 to 11% fewer than before
 * at one client, where each wake-up of the event loop is on a call's path and a thread a little
 * behind catches up from the other core's spare moments anyway. Paused only a flush interval
 * behind: 1 to 7% more calls a second than before at 16 clients, and at one client within the
 * noise (−4 to +4%) (docs/benchmarks.md).
 */

interface Waiting {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

const PINO_LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

export class AuditThread {
  readonly stream: string;
  readonly sinkNames: readonly string[];
  private readonly worker: Worker;
  private readonly log: Logger;
  private pending: AuditEventInput[] = [];
  private readonly encoder = new EventEncoder();
  /** The timer that sends what is pending when no later event does, and the immediate that sends it with the traffic. */
  private fallback: NodeJS.Timeout | undefined;
  private immediate = false;
  /** performance.now() of the last message of events. */
  private lastPost = 0;
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 0;
  private lastStats: AuditSinkStats[];
  private isFull = false;
  /** Events handed to the thread, and how many of them it says it has taken. */
  private handedOver = 0;
  private taken = 0;
  /** How many handed-over events may wait for the thread to take them (the config's max_queue). */
  private readonly maxWaiting: number;
  /** `on_full: drop`: past maxWaiting, events are dropped here (and counted) rather than wait. */
  private readonly dropWhenFull: boolean;
  /** Events dropped here, counted in every sink's `dropped`: none of them reached any sink. */
  private droppedHere = 0;
  private roomWaiters: Array<() => void> = [];
  private readonly proxies: AuditStore[];
  /** Why the thread is gone, once it is (a crash, or close()). */
  private gone: Error | undefined;
  private lostEvents = 0;
  private closed: Promise<void> | undefined;
  /** How far behind the thread is (see ThreadWork), and what undoes the pause of polling on it. */
  private readonly work: ThreadWork;
  private readonly unpause: () => void;

  private constructor(worker: Worker, ready: Extract<FromAuditThread, { t: 'ready' }>, log: Logger, config: AuditConfig, work: ThreadWork) {
    this.worker = worker;
    this.work = work;
    // While the thread is a flush interval behind, the event loop does not busy-poll: see BEHIND.
    const messages = Math.max(2, Math.ceil(config.flushIntervalMs / POST_EVERY_MS));
    this.unpause = pauseBusyPollWhile(() => work.behind(messages, config.flushIntervalMs));
    this.maxWaiting = config.maxQueue;
    this.dropWhenFull = config.onFull === 'drop';
    this.log = log;
    this.stream = ready.stream;
    this.sinkNames = ready.sinks.map((s) => s.name);
    this.lastStats = ready.stats;
    this.proxies = [];
    ready.sinks.forEach((s, i) => {
      if (s.store) this.proxies.push(new ThreadStore(this, s.name, i));
    });
    worker.on('message', (m: FromAuditThread) => this.onMessage(m));
    worker.on('error', (err) => this.lost(err));
    worker.on('exit', (code) => this.lost(new Error(`the audit thread exited (code ${code})`)));
    worker.unref();
  }

  /** Starts the thread and opens the sinks there; rejects with the reason a sink could not be opened. */
  static start(config: AuditConfig, logger: Logger, opts: { stream?: string; loopRecords?: boolean } = {}): Promise<AuditThread> {
    const work = new ThreadWork();
    const data: AuditThreadData = {
      config,
      level: logger.level,
      work: work.buffer,
      ...(opts.stream !== undefined ? { stream: opts.stream } : {}),
      ...(opts.loopRecords === true ? { loopRecords: true } : {}),
    };
    // No execArgv: the thread needs none of the process's flags, and some would stop it starting.
    const worker = new Worker(new URL('./thread-worker.js', import.meta.url), { workerData: { auditThread: data }, execArgv: [] });
    const log = logger.child({ component: 'audit' });
    return new Promise<AuditThread>((resolve, reject) => {
      const early = (m: FromAuditThread) => {
        if (m.t === 'log') {
          forwardLog(log, m.line);
        } else if (m.t === 'ready') {
          off();
          resolve(new AuditThread(worker, m, log, config, work));
        } else if (m.t === 'failed') {
          off();
          void worker.terminate();
          reject(fromWireError(m.error));
        }
      };
      const failed = (err: Error) => {
        off();
        reject(err);
      };
      const exited = (code: number) => failed(new Error(`the audit thread exited before it started (code ${code})`));
      const off = () => {
        worker.off('message', early);
        worker.off('error', failed);
        worker.off('exit', exited);
      };
      worker.on('message', early);
      worker.on('error', failed);
      worker.on('exit', exited);
    });
  }

  // ---- what the trail records through ----

  /** Queues `event`; it goes to the thread within POST_EVERY_MS, with the others recorded meanwhile. */
  record(event: AuditEventInput): void {
    if (this.gone !== undefined) {
      this.dropped();
      return;
    }
    if (this.dropWhenFull && this.handedOver + this.pending.length - this.taken >= this.maxWaiting) {
      this.droppedHere++;
      return;
    }
    const n = this.pending.push(event);
    if (n >= POST_AT) this.post();
    else if (this.immediate) return;
    else if (performance.now() - this.lastPost >= POST_EVERY_MS) {
      // While calls keep coming, they carry the messages: sent at the end of this turn of the
      // event loop, which is awake anyway, not at a timer that would wake it between calls
      // (a wake-up costs about as much as the message itself on a virtual machine).
      this.immediate = true;
      setImmediate(this.postScheduled);
    } else {
      this.fallback ??= setTimeout(this.postScheduled, FALLBACK_MS).unref();
    }
  }

  /** Records `event` and resolves once every sink has it durably (see AuditWriter.recordDurable). */
  recordDurable(event: AuditEventInput): Promise<void> {
    if (this.gone !== undefined) return Promise.reject(this.gone);
    // What was recorded before it is chained before it.
    this.post();
    return this.ask((id) => ({ t: 'durable', id, event })).then(() => undefined);
  }

  /** Resolves once everything recorded so far is written or spilled, by every sink. */
  flush(): Promise<void> {
    this.post();
    return this.ask((id) => ({ t: 'flush', id })).then((stats) => {
      this.lastStats = stats as AuditSinkStats[];
    });
  }

  /**
   * True while some sink's queue in the thread holds `max_queue` records or more, or while that
   * many events handed over wait for the thread to take them (a thread that yields the CPU to the
   * calls, as it does in `async` mode, may take them later than they come).
   */
  get full(): boolean {
    return this.isFull || this.handedOver - this.taken >= this.maxWaiting;
  }

  /** Resolves at once while there is room, else once the thread says there is again. */
  whenRoom(): Promise<void> {
    if (!this.full) return Promise.resolve();
    // Referenced while a caller waits, like ask(): the answer comes from the thread.
    if (this.roomWaiters.length === 0 && this.waiting.size === 0) this.worker.ref();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  // ---- what the gateway reads ----

  /** The sinks' counters as the thread last sent them. */
  stats(): AuditSinkStats[] {
    return this.withDroppedHere(this.lastStats);
  }

  private withDroppedHere(stats: AuditSinkStats[]): AuditSinkStats[] {
    const extra = this.droppedHere;
    return extra === 0 ? stats : stats.map((s) => ({ ...s, dropped: s.dropped + extra }));
  }

  /** The sinks' counters as they are now. */
  async statsNow(): Promise<AuditSinkStats[]> {
    this.lastStats = (await this.ask((id) => ({ t: 'stats', id }))) as AuditSinkStats[];
    return this.withDroppedHere(this.lastStats);
  }

  /** The queryable sinks (SQLite, PostgreSQL), in the config's order; their work runs in the thread. */
  stores(): AuditStore[] {
    return this.proxies;
  }

  /** Sends what is queued, lets the writer write it (or spill it), closes the sinks and ends the thread. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      if (this.gone !== undefined) return;
      this.post();
      try {
        this.lastStats = (await this.ask((id) => ({ t: 'close', id }))) as AuditSinkStats[];
      } finally {
        this.gone = new Error('the audit log is closed');
        this.unpause();
        await this.worker.terminate();
      }
    })();
    return this.closed;
  }

  /** @internal For ThreadStore: sends a request and resolves with the thread's answer. */
  ask(message: (id: number) => ToAuditThread): Promise<unknown> {
    if (this.gone !== undefined) return Promise.reject(this.gone);
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      // Referenced while an answer is awaited: a caller waiting on the log keeps the process up.
      if (this.waiting.size === 0 && this.roomWaiters.length === 0) this.worker.ref();
      this.waiting.set(id, { resolve, reject });
      this.postToThread(message(id));
    });
  }

  /** @internal */
  send(message: ToAuditThread): void {
    if (this.gone === undefined) this.postToThread(message);
  }

  /** Every message to the thread goes here: counted once posted (one that cannot be copied throws, uncounted). */
  private postToThread(message: ToAuditThread): void {
    this.worker.postMessage(message);
    this.work.posted();
  }

  private roomMade(): void {
    if (this.full || this.roomWaiters.length === 0) return;
    for (const resolve of this.roomWaiters.splice(0)) resolve();
    if (this.waiting.size === 0) this.worker.unref();
  }

  private readonly postScheduled = (): void => {
    this.post();
  };

  private post(): void {
    this.immediate = false;
    if (this.fallback !== undefined) {
      clearTimeout(this.fallback);
      this.fallback = undefined;
    }
    if (this.pending.length === 0 || this.gone !== undefined) return;
    this.lastPost = performance.now();
    const events = this.pending;
    this.pending = [];
    try {
      this.postToThread({ t: 'events', events: this.encoder.encode(events) });
      this.handedOver += events.length;
    } catch (err) {
      // An event that cannot be copied to the thread (never one the gateway makes): the message
      // is lost whole, and with it strings the thread now will not know, so the encoder starts
      // again and each event goes alone; only the culprit is left out.
      this.encoder.restart();
      for (const e of events) {
        try {
          this.postToThread({ t: 'events', events: this.encoder.encode([e]) });
          this.handedOver++;
        } catch {
          this.encoder.restart();
          this.log.error({ err: (err as Error).message, method: e.method, tool: e.tool }, 'audit event cannot be recorded: it does not copy to the audit thread');
        }
      }
    }
  }

  private onMessage(m: FromAuditThread): void {
    switch (m.t) {
      case 'reply': {
        const w = this.waiting.get(m.id);
        if (w === undefined) return;
        this.waiting.delete(m.id);
        if (this.waiting.size === 0 && this.roomWaiters.length === 0) this.worker.unref();
        if (m.error !== undefined) w.reject(fromWireError(m.error));
        else w.resolve(m.value);
        return;
      }
      case 'full':
        this.isFull = m.full;
        this.roomMade();
        return;
      case 'taken':
        this.taken = m.count;
        this.roomMade();
        return;
      case 'stats':
        this.lastStats = m.stats;
        return;
      case 'log':
        forwardLog(this.log, m.line);
        return;
      default:
        return;
    }
  }

  /** The thread died (a bug, or out of memory): every waiter is told, and later events are counted as lost. */
  private lost(err: Error): void {
    if (this.gone !== undefined) return;
    this.gone = new Error(`the audit log stopped: ${err.message}`);
    // Its counters stop where it stopped; the event loop polls as if it had no thread.
    this.unpause();
    this.log.error({ err: err.message, queued: this.pending.length }, 'the audit thread stopped; records still queued there are lost');
    this.lostEvents += this.pending.length;
    this.pending = [];
    for (const w of this.waiting.values()) w.reject(this.gone);
    this.waiting.clear();
    this.isFull = false;
    for (const resolve of this.roomWaiters.splice(0)) resolve();
  }

  private dropped(): void {
    if (this.lostEvents++ % 10_000 === 0) this.log.error({ lost: this.lostEvents }, 'audit event not recorded: the audit thread has stopped');
  }
}

/** A queryable sink of the thread, seen from the gateway: each method runs there. */
class ThreadStore implements AuditStore {
  private nextIter = 0;

  constructor(
    private readonly thread: AuditThread,
    readonly name: string,
    private readonly sink: number,
  ) {}

  write(_records: readonly AuditRecord[]): Promise<void> {
    return Promise.reject(new Error(`${this.name}: the audit thread writes this sink; record events through the audit log`));
  }

  /** The sink itself is closed with the log. */
  async close(): Promise<void> {}

  query(filter?: AuditQuery): Promise<AuditPage> {
    return this.call('query', [filter]) as Promise<AuditPage>;
  }

  checkpoints(): Promise<AuditCheckpoint[]> {
    return this.call('checkpoints', []) as Promise<AuditCheckpoint[]>;
  }

  verify(...args: Parameters<AuditStore['verify']>): Promise<VerifyResult> {
    return this.call('verify', args) as Promise<VerifyResult>;
  }

  prune(...args: Parameters<AuditStore['prune']>): Promise<PruneResult> {
    return this.call('prune', args) as Promise<PruneResult>;
  }

  async *iterate(): AsyncGenerator<AuditRecord> {
    const iter = ++this.nextIter;
    await this.thread.ask((id) => ({ t: 'iterate', id, sink: this.sink, iter }));
    let done = false;
    try {
      while (!done) {
        const page = (await this.thread.ask((id) => ({ t: 'next', id, iter }))) as { records: AuditRecord[]; done: boolean };
        done = page.done;
        yield* page.records;
      }
    } finally {
      if (!done) this.thread.send({ t: 'return', iter });
    }
  }

  private call(op: StoreOp, args: unknown[]): Promise<unknown> {
    return this.thread.ask((id) => ({ t: 'store', id, sink: this.sink, op, args }));
  }
}

/** A line the thread's logger wrote, logged by the gateway's logger at the same level. */
function forwardLog(log: Logger, line: string): void {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    log.warn({ line }, 'unreadable log line from the audit thread');
    return;
  }
  // The gateway's logger adds its own `component`.
  const { level, msg, component: _component, ...fields } = entry;
  const name = PINO_LEVELS[level as number] ?? 'info';
  log[name](fields, typeof msg === 'string' ? msg : '');
}
