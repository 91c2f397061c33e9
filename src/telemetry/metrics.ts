/**
 * Prometheus metrics of one gateway, served at GET /metrics. Each gateway has its own registry
 * (not prom-client's global one), so several gateways in one process (tests) never mix counts.
 */
import { Counter, Gauge, Registry } from 'prom-client';

/** What became of a tools/call. */
/**
 * How a tools/call ended, counted once per call. A call held for approval counts as `allowed` once
 * approved and forwarded, else as `denied_by_approver`, `approval_expired` or `approval_cancelled`.
 */
export type CallOutcome =
  | 'allowed'
  | 'denied'
  | 'hidden'
  | 'invalid_arguments'
  | 'limited'
  | 'shadow_refused'
  | 'denied_by_approver'
  | 'approval_expired'
  | 'approval_cancelled';

/** What the audit metrics read of each sink (AuditSinkStats, in audit/writer.ts). */
interface AuditSinkCounters {
  readonly name: string;
  readonly state: string;
  readonly queued: number;
  readonly written: number;
  readonly spilled: number;
  readonly dropped: number;
  readonly sinkErrors: number;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly calls: Counter<'server' | 'outcome'>;
  private readonly storeErrors: Counter<'store' | 'during'>;
  /**
   * The call counts, as plain numbers per server and outcome, handed to the counter when it is
   * scraped: prom-client's inc() hashes and checks its labels on every call, which the hot path
   * should not do.
   */
  private readonly callCounts = new Map<string, Map<CallOutcome, number>>();

  constructor() {
    this.calls = new Counter({
      name: 'policylayer_tool_calls_total',
      help: 'tools/call requests decided, by server and outcome (allowed, denied, hidden, invalid_arguments, limited, shadow_refused, denied_by_approver, approval_expired, approval_cancelled).',
      labelNames: ['server', 'outcome'],
      registers: [this.registry],
      collect: () => {
        // The totals are ours: the counter is filled with them anew at every scrape.
        this.calls.reset();
        for (const [server, byOutcome] of this.callCounts) {
          for (const [outcome, n] of byOutcome) this.calls.inc({ server, outcome }, n);
        }
      },
    });
    this.storeErrors = new Counter({
      name: 'policylayer_counter_store_errors_total',
      help: 'Times the counter store (memory or Redis) failed to answer, by store and operation (reserve, settle).',
      labelNames: ['store', 'during'],
      registers: [this.registry],
    });
  }

  call(server: string, outcome: CallOutcome): void {
    let byOutcome = this.callCounts.get(server);
    if (byOutcome === undefined) this.callCounts.set(server, (byOutcome = new Map()));
    byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
  }

  storeError(store: string, during: 'reserve' | 'settle'): void {
    this.storeErrors.labels(store, during).inc();
  }

  /**
   * Exposes the audit log's per-sink counters, read from `stats` at each scrape: records queued,
   * written, spilled to the local file while the sink was down, dropped (only with
   * `on_full: drop`), failed writes, and whether the sink is up.
   */
  auditSinks(stats: () => Promise<readonly AuditSinkCounters[]>): void {
    // The counters live in the audit thread: one request per scrape, shared by the six gauges.
    let scrape: Promise<readonly AuditSinkCounters[]> | undefined;
    const current = () => {
      if (scrape === undefined) {
        scrape = stats();
        setImmediate(() => (scrape = undefined));
      }
      return scrape;
    };
    const gauge = (name: string, help: string, pick: (s: AuditSinkCounters) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['sink'],
        registers: [this.registry],
        async collect() {
          const all = await current();
          this.reset();
          for (const s of all) this.labels(s.name).set(pick(s));
        },
      });
    // Totals since the start are exposed as gauges read from the writer, which owns the counts.
    gauge('policylayer_audit_records_queued', 'Audit records in memory, not yet written or spilled, by sink.', (s) => s.queued);
    gauge('policylayer_audit_records_written', 'Audit records the sink has taken since the start, by sink.', (s) => s.written);
    gauge('policylayer_audit_records_spilled', 'Audit records spilled to the local file while the sink was down, since the start, by sink.', (s) => s.spilled);
    gauge('policylayer_audit_records_dropped', 'Audit records left out because the queue was full and on_full is drop, since the start, by sink.', (s) => s.dropped);
    gauge('policylayer_audit_sink_errors', 'Failed audit writes since the start, by sink.', (s) => s.sinkErrors);
    gauge('policylayer_audit_sink_up', '1 while the audit sink takes writes, 0 while it is down or replaying its spill file.', (s) => (s.state === 'up' ? 1 : 0));
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
