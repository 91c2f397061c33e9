/**
 * The running audit log of a gateway: its sinks, the writer that feeds them, the trail the
 * pipeline records through, and retention. Built from `audit:` by the composition root.
 */
import type { AuditConfig } from '../config/index.js';
import { silentLogger, type Logger } from '../telemetry/logger.js';
import { DeferredSink, isPostgresSpec, openAuditSink, sinkDisplayName } from './open.js';
import type { AuditSink } from './sink.js';
import type { AuditStore } from './store.js';
import { AuditTrail } from './trail.js';
import { AuditWriter, type AuditSinkStats } from './writer.js';

/** How often retention prunes (the first run is shortly after the start). */
const RETENTION_EVERY_MS = 60 * 60_000;
const RETENTION_FIRST_MS = 60_000;

export class AuditLog {
  readonly writer: AuditWriter;
  readonly trail: AuditTrail;
  private readonly sinks: readonly AuditSink[];
  private readonly log: Logger;
  private retentionTimer: NodeJS.Timeout | undefined;
  private pruning: Promise<void> | undefined;
  private closed: Promise<void> | undefined;

  private constructor(config: AuditConfig, sinks: readonly AuditSink[], logger: Logger) {
    this.sinks = sinks;
    this.log = logger.child({ component: 'audit' });
    this.writer = new AuditWriter({
      sinks,
      spillDir: config.spillDir,
      flushIntervalMs: config.flushIntervalMs,
      batchSize: config.batchSize,
      maxQueue: config.maxQueue,
      onFull: config.onFull,
      logger,
    });
    this.trail = new AuditTrail({
      writer: this.writer,
      arguments: config.arguments,
      durability: config.durability,
      onFull: config.onFull,
      holdMs: config.flushIntervalMs,
    });
    if (config.retentionMs !== undefined) this.scheduleRetention(config.retentionMs);
  }

  /**
   * Opens every sink `config.sinks` names and starts writing. A SQLite or JSON Lines sink that
   * cannot be opened (a folder without write permission, a file of a newer schema) fails the
   * start: that is a mistake to fix, not an outage to wait out. A PostgreSQL sink is opened by its
   * first write, so a database that is down at start only delays its records (they spill).
   */
  static async open(config: AuditConfig, logger: Logger = silentLogger()): Promise<AuditLog> {
    const sinks: AuditSink[] = [];
    try {
      for (const spec of config.sinks) {
        if (isPostgresSpec(spec)) {
          sinks.push(new DeferredSink(sinkDisplayName(spec), async () => (await openAuditSink(spec, config)).sink));
        } else {
          sinks.push((await openAuditSink(spec, config)).sink);
        }
      }
    } catch (err) {
      await Promise.allSettled(sinks.map((s) => s.close()));
      throw err;
    }
    return new AuditLog(config, sinks, logger);
  }

  get sinkNames(): string[] {
    return this.sinks.map((s) => s.name);
  }

  /** Each sink's counters: state, queued, written, spilled, dropped, errors. */
  stats(): AuditSinkStats[] {
    return this.writer.stats();
  }

  /** The sinks that can be queried (SQLite, PostgreSQL once opened), for retention and the admin API. */
  stores(): AuditStore[] {
    const out: AuditStore[] = [];
    for (const s of this.sinks) {
      const inner = s instanceof DeferredSink ? s.current : s;
      if (inner !== undefined && isStore(inner)) out.push(inner);
    }
    return out;
  }

  /** Prunes every store of records older than `retentionMs` (each keeps a checkpoint per stream). */
  async prune(retentionMs: number, now = Date.now()): Promise<void> {
    for (const store of this.stores()) {
      try {
        const r = await store.prune(now - retentionMs);
        if (r.records > 0) this.log.info({ sink: store.name, records: r.records, streams: r.streams }, 'audit retention: old records pruned');
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
      await this.writer.close();
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

function isStore(s: AuditSink): s is AuditStore {
  return typeof (s as Partial<AuditStore>).prune === 'function' && typeof (s as Partial<AuditStore>).query === 'function';
}
