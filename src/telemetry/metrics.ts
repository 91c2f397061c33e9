/**
 * Prometheus metrics of one gateway, served at GET /metrics. Each gateway has its own registry
 * (not prom-client's global one), so several gateways in one process (tests) never mix counts.
 */
import { Counter, Registry } from 'prom-client';

/** What became of a tools/call. */
export type CallOutcome = 'allowed' | 'denied' | 'hidden' | 'invalid_arguments' | 'limited' | 'shadow_refused';

export class Metrics {
  readonly registry = new Registry();
  private readonly calls: Counter<'server' | 'outcome'>;
  private readonly storeErrors: Counter<'store' | 'during'>;
  // Children cached per server and outcome: labels() hashes its arguments on every call, the hot
  // path should not.
  private readonly callChildren = new Map<string, Partial<Record<CallOutcome, { inc(): void }>>>();

  constructor() {
    this.calls = new Counter({
      name: 'policylayer_tool_calls_total',
      help: 'tools/call requests decided, by server and outcome (allowed, denied, hidden, invalid_arguments, limited, shadow_refused).',
      labelNames: ['server', 'outcome'],
      registers: [this.registry],
    });
    this.storeErrors = new Counter({
      name: 'policylayer_counter_store_errors_total',
      help: 'Times the counter store (memory or Redis) failed to answer, by store and operation (reserve, settle).',
      labelNames: ['store', 'during'],
      registers: [this.registry],
    });
  }

  call(server: string, outcome: CallOutcome): void {
    let byOutcome = this.callChildren.get(server);
    if (byOutcome === undefined) this.callChildren.set(server, (byOutcome = {}));
    (byOutcome[outcome] ??= this.calls.labels(server, outcome)).inc();
  }

  storeError(store: string, during: 'reserve' | 'settle'): void {
    this.storeErrors.labels(store, during).inc();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
