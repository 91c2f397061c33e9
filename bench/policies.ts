/** The policies the proxy benchmarks load into the gateway. */

/** The policy of every gateway scenario: the "policy loaded" condition. */
export const BENCH_POLICY = {
  version: '1',
  default: 'deny',
  hide: ['admin_*'],
  tools: { echo: {}, 'delete_*': { action: 'deny', reason: 'no' } },
};

/**
 * BENCH_POLICY with three limits on the allowed tool, none of which a benchmark run can reach: what
 * reserving and settling counters costs on every call, not what refusing does.
 */
export const BENCH_LIMITS_POLICY = {
  ...BENCH_POLICY,
  tools: {
    ...BENCH_POLICY.tools,
    echo: {
      limits: [
        { counter: 'echo_rate', window: 'minute', max: 1_000_000_000, scope: 'grant' },
        { counter: 'echo_session', window: 'hour', max: 1_000_000_000, scope: 'session' },
        { counter: 'echo_daily', window: 'day', align: 'calendar', max: 1_000_000_000, scope: 'server' },
      ],
    },
  },
};
