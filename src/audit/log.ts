/**
 * The running audit log of a gateway: its audit thread (which owns the sinks for reading and
 * retention and, unless the event loop records, the writer that feeds them: see thread-worker.ts),
 * the event loop's recorder when it records (loop-recorder.ts: `async` with SQLite sinks alone,
 * the default), the trail the pipeline records through, and retention. Built from `audit:` by the
 * composition root.
 */
import type { KeyObject } from 'node:crypto';
import type { AuditConfig } from '../config/index.js';
import { silentLogger, type Logger } from '../telemetry/logger.js';
import { LoopRecorder, recordsOnLoop } from './loop-recorder.js';
import { openSigningKey, type AuditSigningKey } from './signing.js';
import type { AuditStore } from './store.js';
import { AuditThread } from './thread.js';
import { AuditTrail } from './trail.js';
import type { AuditSinkStats } from './writer.js';
import type { StepTimes } from '../util/longest-step.js';

/** How often retention prunes (the first run is shortly after the start). */
const RETENTION_EVERY_MS = 60 * 60_000;
const RETENTION_FIRST_MS = 60_000;

export class AuditLog {
  readonly trail: AuditTrail;
  /** The key retention signs its checkpoints with, and the admin API verifies them with; undefined when there is none yet and retention is off. */
  readonly signingKey: AuditSigningKey | undefined;
  private readonly thread: AuditThread;
  /** When the event loop records (see the top of the file). */
  private readonly loop: LoopRecorder | undefined;
  private readonly log: Logger;
  private retentionTimer: NodeJS.Timeout | undefined;
  private pruning: Promise<void> | undefined;
  private closed: Promise<void> | undefined;

  private constructor(config: AuditConfig, thread: AuditThread, loop: LoopRecorder | undefined, logger: Logger, signingKey: AuditSigningKey | undefined) {
    this.thread = thread;
    this.loop = loop;
    this.signingKey = signingKey;
    this.log = logger.child({ component: 'audit' });
    this.trail = new AuditTrail({
      writer: loop ?? thread,
      // Derived by the recorder after the call's turn of the event loop, or in the audit thread.
      arguments: undefined,
      durability: config.durability,
      onFull: config.onFull,
      holdMs: config.flushIntervalMs,
    });
    if (config.retentionMs !== undefined) this.scheduleRetention(config.retentionMs);
  }

  /**
   * Starts the audit thread, which opens every sink `config.sinks` names. A SQLite or JSON Lines
   * sink that cannot be opened (a folder without write permission, a file of a newer schema) fails
   * the start: that is a mistake to fix, not an outage to wait out. A PostgreSQL sink is opened by
   * its first write, so a database that is down at start only delays its records (they spill).
   * So does a signing key file that cannot be read or is not an Ed25519 private key (see
   * openSigningKey), before any sink is opened.
   *
   * `recordOn` says who records: `loop` where recordsOnLoop(config) allows it (the default), else
   * `thread`; tests choose.
   */
  static async open(config: AuditConfig, logger: Logger = silentLogger(), opts: { stream?: string; recordOn?: 'loop' | 'thread' } = {}): Promise<AuditLog> {
    const signingKey = openSigningKey(config, logger.child({ component: 'audit' }));
    const onLoop = (opts.recordOn ?? (recordsOnLoop(config) ? 'loop' : 'thread')) === 'loop';
    const thread = await AuditThread.start(config, logger, { ...(opts.stream !== undefined ? { stream: opts.stream } : {}), loopRecords: onLoop });
    let loop: LoopRecorder | undefined;
    if (onLoop) {
      try {
        // After the thread, which has created the files and their schema. Refuses a config it cannot record.
        loop = LoopRecorder.open(config, logger, thread.stream);
      } catch (err) {
        await thread.close();
        throw err;
      }
    }
    return new AuditLog(config, thread, loop, logger, signingKey);
  }

  /** The public keys checkpoints are verified with: the signing key's, when there is one. */
  publicKeys(): KeyObject[] {
    return this.signingKey === undefined ? [] : [this.signingKey.publicKey];
  }

  /** This process's stream id: every record it writes carries it. */
  get stream(): string {
    return this.thread.stream;
  }

  /** Whether the event loop records (see the top of the file), rather than the audit thread. */
  get recordsOnLoop(): boolean {
    return this.loop !== undefined;
  }

  /**
   * The longest the audit log held the event loop in one piece since the last call, ms each way,
   * when the loop records (LoopRecorder.takeLongestStep); zeros otherwise (the thread's hand-overs
   * are timed by the benchmark).
   */
  takeLongestLoopStep(): StepTimes {
    return this.loop?.takeLongestStep() ?? { clock: 0, own: 0 };
  }

  /** Resolves once everything recorded so far is written (or spilled) by every sink. */
  async flush(): Promise<void> {
    await this.loop?.flush();
    await this.thread.flush();
  }

  get sinkNames(): string[] {
    return [...this.thread.sinkNames];
  }

  /** Each sink's counters: state, queued, written, spilled, dropped, errors, as they are now (asked of the audit thread when it records). */
  stats(): Promise<AuditSinkStats[]> {
    if (this.loop !== undefined) return Promise.resolve(this.loop.stats());
    // The thread gone (it crashed), the last counters it sent are still the best answer.
    return this.thread.statsNow().catch(() => this.thread.stats());
  }

  /** The sinks that can be queried (SQLite, PostgreSQL), for retention and the admin API; they run in the audit thread. */
  stores(): AuditStore[] {
    return this.thread.stores();
  }

  /**
   * Prunes every store of records older than `retentionMs` (each keeps a signed checkpoint per
   * stream). A stream the store would not prune as far (its checkpoint is not this key's, or its
   * records were removed by hand) is logged as an error each time: it is what verify reports.
   */
  async prune(retentionMs: number, now = Date.now()): Promise<void> {
    const key = this.signingKey;
    if (key === undefined) {
      this.log.error('audit retention: no signing key to sign checkpoints with; nothing pruned');
      return;
    }
    for (const store of this.stores()) {
      try {
        const r = await store.prune(now - retentionMs, key);
        if (r.records > 0) this.log.info({ sink: store.name, records: r.records, streams: r.streams }, 'audit retention: old records pruned');
        for (const h of r.held ?? []) {
          this.log.error(
            { sink: store.name, stream: h.stream, reason: h.reason },
            `audit retention: stream ${h.stream} not pruned: ${h.reason}; run \`policylayer audit verify\``,
          );
        }
      } catch (err) {
        this.log.error({ sink: store.name, err: (err as Error).message }, 'audit retention: pruning failed; will try again');
      }
    }
  }

  /** Writes out what is queued, then closes every sink. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      if (this.retentionTimer !== undefined) clearTimeout(this.retentionTimer);
      await this.pruning;
      // Calls still running (the drain timed out) are in the log as forwarded, at least.
      this.trail.releaseHeld(true);
      // The loop's connections first: the thread's, closed last, checkpoints the WAL.
      try {
        await this.loop?.close();
      } finally {
        await this.thread.close();
      }
    })();
    return this.closed;
  }

  private scheduleRetention(retentionMs: number): void {
    const run = (delay: number) => {
      this.retentionTimer = setTimeout(() => {
        this.pruning = this.prune(retentionMs).finally(() => {
          this.pruning = undefined;
          if (this.closed === undefined) run(RETENTION_EVERY_MS);
        });
      }, delay);
      this.retentionTimer.unref();
    };
    run(RETENTION_FIRST_MS);
  }
}
