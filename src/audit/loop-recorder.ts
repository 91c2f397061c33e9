/**
 * Recording on the gateway's event loop: the audit log's work done by the thread every call goes
 * through, in the moments it has to spare, rather than by the audit thread (thread.ts). Used when
 * durability is `async` and every sink is a SQLite file, as by default (recordsOnLoop); otherwise
 * the audit thread records, and in every case it still serves reads, verify and retention, and
 * checkpoints the WAL of the files recorded here (thread-worker.ts).
 *
 * Why: with one client calling back to back, the gateway's event loop spins between the messages
 * of a call (../util/busy-poll.ts) while the client and the upstream take turns on the other
 * core. Work on the audit thread lands on that other core, where it delays them: it cost a call
 * about 10 µs of p50 on a fast host, over the 10%, and no scheduling of the thread undid
 * that. The same work done here, after the answer has left, in the loop's spare moments, cost
 * p50 3 to 7% in the same runs (docs/benchmarks.md). With both cores busy (16 clients) the work
 * costs the calls about the same wherever it runs.
 *
 * How, so that the loop is held only briefly: an event is queued as it is recorded (an array
 * push on the call's path); at the end of that turn of the loop, the events queued are derived
 * (arguments), chained and handed to the writer (../writer.ts), some microseconds each; the writer
 * writes each sink's batch every flush interval through a connection of this thread that writes
 * a slice of records per turn and never waits for the lock (./sinks/sqlite-loop.ts).
 */
import type { AuditConfig } from '../config/index.js';
import type { Logger } from '../telemetry/logger.js';
import { withAuditArguments } from './arguments.js';
import type { AuditEventInput } from './event.js';
import { LongestStep, longestOf, type StepTimes } from '../util/longest-step.js';
import { isInMemoryFile } from './sinks/sqlite-schema.js';
import { openLoopSqliteSink, type LoopSqliteSink } from './sinks/sqlite-loop.js';
import type { EventRecorder } from './trail.js';
import { AuditWriter, type AuditSinkStats } from './writer.js';

/** Whether the event loop records for `config` (see the top of the file): `async`, and SQLite files alone. */
export function recordsOnLoop(config: Pick<AuditConfig, 'sinks' | 'durability'>): boolean {
  // An in-memory database is private to its connection: only the thread's sink can have it.
  return config.durability === 'async' && config.sinks.length > 0 && config.sinks.every((s) => s.startsWith('sqlite:') && !isInMemoryFile(s.slice('sqlite:'.length)));
}

export class LoopRecorder implements EventRecorder {
  readonly stream: string;
  private readonly writer: AuditWriter;
  private readonly sinks: readonly LoopSqliteSink[];
  private readonly mode: AuditConfig['arguments'];
  private readonly log: Logger;
  /** Events recorded this turn of the event loop, chained at its end. */
  private queue: AuditEventInput[] = [];
  private scheduled = false;
  /** The turns spent chaining what was queued. */
  private readonly chaining = new LongestStep();
  private closed: Promise<void> | undefined;
  private lost = 0;

  private constructor(config: AuditConfig, sinks: LoopSqliteSink[], logger: Logger, stream: string) {
    this.sinks = sinks;
    this.mode = config.arguments;
    this.log = logger.child({ component: 'audit' });
    this.writer = new AuditWriter({
      sinks,
      stream,
      spillDir: config.spillDir,
      flushIntervalMs: config.flushIntervalMs,
      batchSize: config.batchSize,
      maxQueue: config.maxQueue,
      onFull: config.onFull,
      logger,
    });
    this.stream = this.writer.stream;
  }

  /**
   * Opens a connection of the event loop to every sink's file (the audit thread has made the
   * files and their schema) and a writer that chains into `stream`. Throws if `config` is not one
   * the loop records for, or a file cannot be opened.
   */
  static open(config: AuditConfig, logger: Logger, stream: string): LoopRecorder {
    if (!recordsOnLoop(config)) throw new Error('the event loop records only with durability async and SQLite file sinks alone');
    const sinks: LoopSqliteSink[] = [];
    try {
      for (const spec of config.sinks) sinks.push(openLoopSqliteSink(spec.slice('sqlite:'.length)));
      return new LoopRecorder(config, sinks, logger, stream);
    } catch (err) {
      for (const s of sinks) void s.close();
      throw err;
    }
  }

  /** Queues `event`; it is chained at the end of this turn of the event loop, and written within the flush interval. */
  record(event: AuditEventInput): void {
    if (this.closed !== undefined) {
      if (this.lost++ % 10_000 === 0) this.log.error({ lost: this.lost }, 'audit event not recorded: the audit log is closed');
      return;
    }
    this.queue.push(event);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.chainQueued);
    }
  }

  /** Records `event` after those queued before it and resolves once every sink has it durably. */
  recordDurable(event: AuditEventInput): Promise<void> {
    this.chainQueued();
    return this.writer.recordDurable(withAuditArguments(event, this.mode));
  }

  get full(): boolean {
    return this.writer.full;
  }

  whenRoom(): Promise<void> {
    return this.writer.whenRoom();
  }

  /** Each sink's counters, as they are now. */
  stats(): AuditSinkStats[] {
    return this.writer.stats();
  }

  /**
   * The longest the recorder held the event loop in one piece since the last call, ms: a turn's
   * chaining, or a sink's slice, commit or try for the lock. What the benchmark holds to the
   * issue's millisecond.
   */
  takeLongestStep(): StepTimes {
    return longestOf([this.chaining.take(), ...this.sinks.map((s) => s.takeLongestStep())]);
  }

  /** Resolves once everything recorded so far is written (or spilled) by every sink. */
  flush(): Promise<void> {
    this.chainQueued();
    return this.writer.flush();
  }

  /** Writes out what is recorded (or spills it) and closes the connections; later events are counted as lost. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.chainQueued();
      await this.writer.close();
    })();
    return this.closed;
  }

  private readonly chainQueued = (): void => {
    this.scheduled = false;
    if (this.queue.length === 0) return;
    const start = this.chaining.start();
    const events = this.queue;
    this.queue = [];
    for (const e of events) {
      try {
        this.writer.record(withAuditArguments(e, this.mode));
      } catch (err) {
        this.log.error({ err: (err as Error).message, method: e.method, tool: e.tool }, 'audit event not recorded');
      }
    }
    this.chaining.ended(start);
  };
}
