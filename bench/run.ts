/**
 * `npm run bench`: the cost of the gateway on one `tools/call` round trip.
 *
 * Processes: the minimal upstream servers and the gateway each run in their own process, and
 * the load generator in this one, so none of them shares an event loop with another. The
 * gateway is started exactly as a user starts it, with a policy loaded that has a `hide` list, an
 * allowed tool and a denying glob: `policylayer serve -c gateway.yaml` for HTTP clients, and
 * `policylayer run --policy policy.json -- <stdio server>` spawned by a stdio client.
 *
 * Scenarios, each at concurrency 1 and 16:
 *   direct-http    an HTTP client straight to the HTTP server
 *   gateway-http   an HTTP client through `policylayer serve` to the HTTP server
 *   floor-http     an HTTP client through the null proxy (bench/null-proxy.ts) to the HTTP server,
 *                  so the table shows how much of the added latency is the gateway's own work and
 *                  how much an extra process costs
 *   direct-stdio   a client writing to the stdio server it spawned itself, over pipes
 *   wrap-stdio     the same client spawning `policylayer run -- <stdio server>` instead: pipes on
 *                  both hops, so against direct-stdio it measures the gateway and nothing else
 *   gateway-stdio  an HTTP client through `policylayer serve` to a stdio server it spawned: kept
 *                  for reference (against direct-stdio it also measures HTTP against a pipe)
 *   limits-http    gateway-http's gateway process, on a server whose allowed tool has three limits
 *   audit-http     an HTTP client through a second `policylayer serve` of the same build, servers
 *                  and policy as gateway-http, with the audit log on at its defaults (a SQLite file
 *                  in the run's temp folder): against gateway-http, what recording calls costs
 * The gateway process of gateway-http, gateway-stdio and limits-http runs with its audit log off
 * (`audit: { sinks: [] }`): the log is on by default, and earlier runs had none, so without it
 * those numbers would change meaning from one run to the next.
 * Scenarios run in interleaved rounds so that a slow moment of a shared machine spreads over all
 * of them instead of falling on one. Each gateway (and the null proxy) runs in --processes copies,
 * one measured per round in turn, so that no scenario's result is one process's luck. Each caller
 * is closed-loop (sends its next call when the previous one is answered); latency is from just
 * before the request is sent to just after the whole answer is read and checked.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, platform, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import type { Pool } from 'undici';
import { drive, HttpCaller, httpPool, setEchoText, StdioConnection, type Caller, type Requester } from './clients.js';
import { buildOf, log, positiveOption, runAsCommand, scratchDir, UsageError } from './main.js';
import { childPids, cpuMicros, machineCpu, start, stop, stopAll, wakeups, type Started } from './procs.js';
import {
  auditMarkdown,
  BENCH_DOC,
  checks,
  fmt,
  markdown,
  TARGETS,
  writeMarkedSection,
  writeSection,
  type AuditCount,
  type Path,
  type RoundResult,
  type RunInfo,
  type ScenarioResult,
  type UpstreamKind,
} from './report.js';
import { BENCH_LIMITS_POLICY, BENCH_POLICY } from './policies.js';
import { Samples } from './stats.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');

const USAGE = `Usage: node dist/bench/run.js [options]     (npm run bench builds first)

Measures a tools/call round trip direct to a minimal MCP server and through the gateway,
over HTTP and stdio upstreams, at each concurrency; prints the table and writes it to
docs/benchmarks.md between <!-- bench:start --> and <!-- bench:end -->. For stdio the gateway
is measured both as a stdio client meets it (\`policylayer run -- <server>\`, wrap-stdio) and
as an HTTP client does (\`policylayer serve\`, gateway-stdio).

Options:
  --quick                   about 20 s instead of about 3 min; does not write the docs unless --write
  --rounds N                interleaved rounds per scenario (default 6, quick 1)
  --duration S              measured seconds per scenario, over all rounds (default 9, quick 1.2)
  --warmup S                warm-up seconds before each round (default 0.5)
  --processes N             processes of each gateway (and of the null proxy), measured in turn, one
                            per round (default 3, quick 1): two processes of one build differ by a few
                            percent on a shared machine, and a scenario measured on one of them carries
                            that difference whole
  --concurrency LIST        default 1,16
  --payload BYTES           length of the text each call sends and gets back (default: 'hello')
  --only LIST               scenarios to run, of: direct-http,gateway-http,floor-http,limits-http,
                            audit-http,direct-stdio,wrap-stdio,gateway-stdio (default: all). A run of
                            only some leaves the full results in docs/benchmarks.md as they are and
                            skips the in-process benchmarks (policy, limits, audit sinks); with gateway-http and
                            audit-http it writes their comparison between the proxy-audit-bench markers
  --gateway PATH            the gateway's bin/policylayer.js to measure (default: this checkout's)
  --compare PATH            also measure another build's bin/policylayer.js (a worktree of main, say) in
                            the same interleaved rounds, and report how this build differs from it
                            (its \`serve\` for gateway-* and, with its audit log on, for audit-http; its
                            \`run\` for wrap-stdio)
  --gateway-node-arg ARG    extra node option for every gateway process, serve and run (repeatable)
  --compare-node-arg ARG    extra node option for the compared build's processes only (repeatable): with
                            --compare naming this same build, it measures what a node option changes
  --profile DIR             run each gateway process with --cpu-prof, writing one profile per process
                            into DIR (use --only to get just the one you want)
  --proxy-only              run every proxy scenario (and write their results) but not the in-process
                            benchmarks of the policy engine, the counter stores and the audit sinks,
                            whose sections in docs/benchmarks.md stay as they are
  --warm-cpus               keep every CPU out of its idle state with lowest-priority spinners, so that
                            concurrency-1 latency does not include waking idle CPUs (see docs/benchmarks.md)
  --write / --no-write      write docs/benchmarks.md or not
  --enforce                 exit 1 when a target is missed (by default targets are only reported)
  --format text|json        json prints the results as JSON on stdout
  -h, --help

Example:
  npm run bench -- --quick --only direct-http,gateway-http
`;

interface Options {
  rounds: number;
  /** Processes of each gateway, each measured in its turn of the rounds. */
  processes: number;
  measureMs: number;
  warmupMs: number;
  concurrency: number[];
  only: Set<string>;
  /** Some scenarios were left out with --only. */
  partial: boolean;
  /** Run the in-process benchmarks (policy, limits, audit sinks) after the proxy scenarios. */
  inProcess: boolean;
  gatewayBin: string;
  compareBin: string | undefined;
  gatewayNodeArgs: string[];
  /** The node options of the compared build's processes: gatewayNodeArgs and --compare-node-arg's. */
  compareNodeArgs: string[];
  write: boolean;
  enforce: boolean;
  json: boolean;
  quick: boolean;
  payload: number | undefined;
  warmCpus: boolean;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean' },
      rounds: { type: 'string' },
      processes: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string' },
      payload: { type: 'string' },
      only: { type: 'string' },
      gateway: { type: 'string' },
      compare: { type: 'string' },
      'gateway-node-arg': { type: 'string', multiple: true },
      'compare-node-arg': { type: 'string', multiple: true },
      profile: { type: 'string' },
      'warm-cpus': { type: 'boolean' },
      'proxy-only': { type: 'boolean' },
      write: { type: 'boolean' },
      'no-write': { type: 'boolean' },
      enforce: { type: 'boolean' },
      format: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

function options(argv: string[]): Options | undefined {
  let parsed;
  try {
    parsed = parse(argv);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return undefined;
  }
  const quick = values.quick === true;
  const num = positiveOption;
  const scenarios = ['direct-http', 'gateway-http', 'floor-http', 'limits-http', 'audit-http', 'direct-stdio', 'wrap-stdio', 'gateway-stdio'];
  const only = new Set(values.only ? values.only.split(',').map((s) => s.trim()) : scenarios);
  for (const s of only) if (!scenarios.includes(s)) throw new UsageError(`--only: unknown scenario '${s}' (${scenarios.join(', ')})`);
  const partial = scenarios.some((s) => !only.has(s));
  const gatewayNodeArgs = [...(values['gateway-node-arg'] ?? [])];
  if (values.profile) gatewayNodeArgs.push('--cpu-prof', `--cpu-prof-dir=${resolve(values.profile)}`);
  const format = values.format ?? 'text';
  if (format !== 'text' && format !== 'json') throw new UsageError(`--format expects text or json, got '${format}'`);
  return {
    rounds: Math.round(num(values.rounds, quick ? 1 : 6, 'rounds')),
    processes: Math.round(num(values.processes, quick ? 1 : 3, 'processes')),
    measureMs: num(values.duration, quick ? 1.2 : 9, 'duration') * 1000,
    warmupMs: num(values.warmup, 0.5, 'warmup') * 1000,
    concurrency: (values.concurrency ?? '1,16').split(',').map((c) => Math.round(num(c, 1, 'concurrency'))),
    only,
    partial,
    inProcess: !partial && values['proxy-only'] !== true,
    gatewayBin: resolve(values.gateway ?? join(ROOT, 'bin/policylayer.js')),
    compareBin: values.compare === undefined ? undefined : resolve(values.compare),
    gatewayNodeArgs,
    compareNodeArgs: [...gatewayNodeArgs, ...(values['compare-node-arg'] ?? [])],
    write: values['no-write'] ? false : (values.write ?? !quick),
    enforce: values.enforce === true,
    json: format === 'json',
    warmCpus: values['warm-cpus'] === true,
    payload: values.payload === undefined ? undefined : Math.round(num(values.payload, 5, 'payload')),
    quick,
  };
}

/** One process (or set of processes) a scenario is measured through, and its callers. */
interface Instance {
  callers: Caller[];
  /** The processes whose CPU time is charged to the gateway and to the upstream. */
  gatewayPid?: number | undefined;
  upstreamPid?: number | undefined;
  /** An audit gateway: its address, and the calls that went through it, warm-up included: what its log should hold. */
  audited?: { url: string; calls: number };
}

interface Scenario {
  path: Path;
  upstream: UpstreamKind;
  concurrency: number;
  /** Round r measures instances[(r - 1) % length]: each gateway process in turn. */
  instances: Instance[];
  samples: Samples;
  calls: number;
  elapsedNs: number;
  cpu: { client: number; gateway: number; upstream: number; known: { gateway: boolean; upstream: boolean } };
  /** CPU time, µs, that processes other than the benchmark's used meanwhile, and that the hypervisor stole. */
  others: number;
  steal: number;
  /** Voluntary context switches of the gateway's event loop over the measured calls. */
  gatewayWakeups: number | undefined;
  /** For audit-http: the most records its log was behind at the end of a round, and the longest it took to catch up. */
  auditLag?: { behind: number; catchUpMs: number } | undefined;
  rounds: RoundResult[];
}

/** Records the audit log of the gateway at `url` has written (its /metrics), summed over its sinks. */
async function auditWritten(url: string): Promise<number> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}/metrics answered ${res.status}: ${text.slice(0, 200)}`);
  const counts = [...text.matchAll(/^policylayer_audit_records_written(?:\{[^}]*\})? (\d+)$/gm)].map((m) => Number(m[1]));
  if (counts.length === 0) throw new Error(`${url}/metrics has no policylayer_audit_records_written`);
  return counts.reduce((a, n) => a + n, 0);
}

/**
 * How many of the calls made through an audit gateway its log had not written when asked, and how
 * long it took from then until it had written one record per call. Every call is recorded, so a
 * log that falls behind the traffic and never catches up fails the run rather than flatter it.
 */
async function auditLag(g: { url: string; calls: number }): Promise<{ behind: number; catchUpMs: number }> {
  const t0 = performance.now();
  let written = await auditWritten(g.url);
  const behind = Math.max(0, g.calls - written);
  while (written < g.calls) {
    if (performance.now() - t0 > 10_000) throw new Error(`the audit log of ${g.url} was still ${g.calls - written} records behind 10 s after its round`);
    await new Promise((r) => setTimeout(r, 5));
    written = await auditWritten(g.url);
  }
  return { behind, catchUpMs: performance.now() - t0 };
}

/**
 * Rows in an audit file, read once its gateway has stopped. Read-only and by table name only: the
 * point is that a run measuring the audit log cannot pass with a log that recorded nothing, not to
 * check its contents, so a schema this does not know is reported rather than fatal.
 */
function countAudit(file: string, calls: number): AuditCount {
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      const row = db.prepare('SELECT COUNT(*) AS n FROM audit_records').get() as { n: number } | undefined;
      return { records: row?.n, calls };
    } finally {
      db.close();
    }
  } catch (err) {
    return { records: undefined, calls, error: (err as Error).message };
  }
}

/** Checks through a gateway that its policy is in force: admin_* hidden, delete_* denied. */
async function policyChecks(caller: Requester, via: string): Promise<void> {
  const list = await caller.request('tools/list', {});
  const names = ((list.result?.tools as Array<{ name: string }> | undefined) ?? []).map((t) => t.name);
  if (!names.includes('echo') || names.includes('admin_reset')) {
    throw new Error(`${via}: tools/list should show echo and hide admin_reset, it shows ${JSON.stringify(names)}`);
  }
  const denied = await caller.request('tools/call', { name: 'delete_everything', arguments: {} });
  if (denied.result?.isError !== true) throw new Error(`${via}: delete_everything should be denied, got ${JSON.stringify(denied)}`);
  const hidden = await caller.request('tools/call', { name: 'admin_reset', arguments: {} });
  if (!hidden.error) throw new Error(`${via}: admin_reset should answer as an unknown tool, got ${JSON.stringify(hidden)}`);
}

async function main(argv: string[]): Promise<number> {
  const opts = options(argv);
  if (!opts) return 0;
  if (opts.payload !== undefined) setEchoText('x'.repeat(opts.payload));
  const node = process.execPath;
  const pools: Pool[] = [];
  const tmp = scratchDir('policylayer-bench-');
  // /proc reports times in USER_HZ, which Linux fixes at 100 whatever the kernel's own tick rate.
  const ticks = 100;
  try {
    const wants = (s: string) => opts.only.has(s);
    const needHttp = wants('direct-http') || wants('gateway-http') || wants('floor-http') || wants('limits-http') || wants('audit-http');
    const needGateway = wants('gateway-http') || wants('gateway-stdio') || wants('limits-http');
    const builds: Array<['gateway' | 'compared', string]> = [['gateway', opts.gatewayBin]];
    if (opts.compareBin) builds.push(['compared', opts.compareBin]);
    if (needGateway || wants('wrap-stdio') || wants('audit-http')) writeFileSync(join(tmp, 'policy.json'), JSON.stringify(BENCH_POLICY, null, 2));
    if (wants('limits-http')) writeFileSync(join(tmp, 'policy-limits.json'), JSON.stringify(BENCH_LIMITS_POLICY, null, 2));

    let upstreamHttp: Started | undefined;
    let upstreamUrl = '';
    if (needHttp) {
      upstreamHttp = await start({
        name: 'the HTTP upstream',
        command: node,
        args: [join(HERE, 'upstream-http.js')],
        ready: /listening (\S+)/,
      });
      upstreamUrl = upstreamHttp.match[1]!;
    }

    const profiling = opts.gatewayNodeArgs.includes('--cpu-prof');
    /** `policylayer serve` of `bin` with `config`, written to `file` in the temp folder. */
    const serve = async (name: string, which: 'gateway' | 'compared', tag: string, bin: string, file: string, config: Record<string, unknown>): Promise<Started> => {
      // JSON is YAML: the file is read by the same loader as any gateway.yaml.
      writeFileSync(join(tmp, file), JSON.stringify(config, null, 2));
      const p = await start({
        name,
        command: node,
        args: [...(which === 'compared' ? opts.compareNodeArgs : opts.gatewayNodeArgs), bin, 'serve', '-c', join(tmp, file), '--log-level', 'warn'],
        env: { ...process.env, POLICYLAYER_EXIT_ON_STDIN_CLOSE: '1' },
        ready: /PolicyLayer listening on (http:\/\/\S+)/,
        // Turning the audit log off is this benchmark's choice, not news.
        onStderrLine: (line) => {
          if (!line.includes('the audit log is off')) log(`[${tag}] ${line}`);
        },
      });
      // Profile files are named by pid: this says which is which.
      if (profiling) log(`${name}: pid ${p.child.pid}`);
      return p;
    };

    // Each gateway build runs in opts.processes processes with the same config; each spawns its own stdio server.
    const copies = Array.from({ length: opts.processes }, (_, i) => i);
    /** `name`, and which of its processes this is when there are several. */
    const nth = (name: string, i: number) => (opts.processes > 1 ? `${name} (${i + 1} of ${opts.processes})` : name);
    const gateways = new Map<'gateway' | 'compared', Array<{ process: Started; url: string }>>();
    if (needGateway) {
      const servers: Record<string, unknown> = {};
      if (wants('gateway-http')) servers['bench-http'] = { url: upstreamUrl, policy: 'policy.json' };
      if (wants('gateway-stdio')) servers['bench-stdio'] = { command: [node, join(HERE, 'upstream-stdio.js')], policy: 'policy.json' };
      if (wants('limits-http')) servers['bench-limits'] = { url: upstreamUrl, policy: 'policy-limits.json' };
      const config = { listen: '127.0.0.1:0', servers, audit: { sinks: [] } };
      for (const [which, bin] of builds) {
        const list: Array<{ process: Started; url: string }> = [];
        for (const i of copies) {
          const name = nth(which === 'gateway' ? 'the gateway' : 'the compared gateway', i);
          let p: Started;
          try {
            p = await serve(name, which, which, bin, 'gateway.yaml', config);
          } catch (err) {
            // A build from before the audit log rejects the key, and records nothing without it.
            if (which !== 'compared' || !/\/audit: unknown field/.test((err as Error).message)) throw err;
            p = await serve(name, which, which, bin, 'gateway-compared.yaml', { listen: config.listen, servers });
          }
          list.push({ process: p, url: p.match[1]! });
        }
        gateways.set(which, list);
      }
    }

    // Processes of their own rather than a server of the above: the audit log is the gateway's, not a server's.
    // Each writes where the default sink puts it (./data/audit.db beside the config), in a file of
    // its own, named so the records can be counted afterwards; not beside the policy, whose folder
    // the gateway watches. With --compare, the compared build's audit log too.
    const auditGateways: Array<{ process: Started; url: string; file: string; calls: number }> = [];
    const comparedAuditGateways: Array<{ process: Started; url: string }> = [];
    if (wants('audit-http')) {
      for (const [which, bin] of builds) {
        for (const i of copies) {
          const suffix = `${which === 'compared' ? '-compared' : ''}${opts.processes > 1 ? `-${i + 1}` : ''}`;
          const file = join(tmp, 'data', `audit${suffix}.db`);
          const name = nth(which === 'gateway' ? 'the audit gateway' : 'the compared audit gateway', i);
          const p = await serve(name, which, `${which === 'compared' ? 'compared ' : ''}audit gateway`, bin, `gateway-audit${suffix}.yaml`, {
            listen: '127.0.0.1:0',
            servers: { 'bench-http': { url: upstreamUrl, policy: 'policy.json' } },
            audit: { sinks: [`sqlite:${file}`] },
          });
          if (which === 'gateway') auditGateways.push({ process: p, url: p.match[1]!, file, calls: 0 });
          else comparedAuditGateways.push({ process: p, url: p.match[1]! });
        }
      }
    }

    const floors: Array<{ process: Started; url: string }> = [];
    if (wants('floor-http')) {
      for (const i of copies) {
        const p = await start({
          name: nth('the null proxy', i),
          command: node,
          args: [join(HERE, 'null-proxy.js'), upstreamUrl],
          ready: /listening (\S+)/,
        });
        floors.push({ process: p, url: p.match[1]! });
      }
    }

    let stdioDirect: StdioConnection | undefined;
    let stdioDirectPid: number | undefined;
    if (wants('direct-stdio')) {
      const p = await start({ name: 'the stdio upstream', command: node, args: [join(HERE, 'upstream-stdio.js')] });
      stdioDirect = new StdioConnection(p.child);
      stdioDirectPid = p.child.pid;
      await stdioDirect.initialize();
    }

    // Each gateway build wrapping its own stdio server, spawned by the client as an MCP client
    // spawns a local server: `policylayer run`, which spawns the server in turn. One connection per
    // process, shared by its concurrency levels as the direct stdio one is.
    type Wrapped = { connection: StdioConnection; pid: number | undefined; upstreamPid: number | undefined };
    const wrapped = new Map<'gateway' | 'compared', Wrapped[]>();
    if (wants('wrap-stdio')) {
      for (const [which, bin] of builds) {
        const list: Wrapped[] = [];
        for (const i of copies) {
          const name = nth(which === 'gateway' ? 'policylayer run' : 'the compared policylayer run', i);
          const p = await start({
            name,
            command: node,
            args: [
              ...(which === 'compared' ? opts.compareNodeArgs : opts.gatewayNodeArgs),
              bin,
              'run',
              '--policy',
              join(tmp, 'policy.json'),
              '--name',
              'bench-stdio',
              '--log-level',
              'warn',
              '--',
              node,
              join(HERE, 'upstream-stdio.js'),
            ],
            // Its one expected warning (stdio mode has no authentication) is not news; anything else is shown.
            onStderrLine: (line) => {
              if (!line.includes('stdio mode: no authentication')) log(`[${which} run] ${line}`);
            },
          });
          const connection = new StdioConnection(p.child, name);
          await connection.initialize();
          await policyChecks(connection, name);
          // The server is up once initialize has been answered through it.
          const pid = p.child.pid;
          list.push({ connection, pid, upstreamPid: pid !== undefined ? childPids(pid)[0] : undefined });
        }
        wrapped.set(which, list);
      }
    }

    const spinners: number[] = [];
    if (opts.warmCpus) {
      for (let i = 0; i < cpus().length; i++) {
        const p = await start({ name: 'a CPU spinner', command: node, args: [join(HERE, 'spinner.js')] });
        if (p.child.pid !== undefined) spinners.push(p.child.pid);
      }
    }
    const spinnerCpu = () => spinners.reduce((a, pid) => a + (cpuMicros(pid, ticks) ?? 0), 0);

    // Scenarios, each with its own clients (and its own sessions) opened before any is measured.
    const scenarios: Scenario[] = [];
    for (const concurrency of opts.concurrency) {
      // [path, upstream, the --only name that selects it]
      for (const [path, upstream, selectedBy] of [
        ['direct', 'http', 'direct-http'],
        ['gateway', 'http', 'gateway-http'],
        ['compared', 'http', 'gateway-http'],
        ['floor', 'http', 'floor-http'],
        ['limits', 'http', 'limits-http'],
        ['audit', 'http', 'audit-http'],
        ['compared-audit', 'http', 'audit-http'],
        ['direct', 'stdio', 'direct-stdio'],
        ['wrap', 'stdio', 'wrap-stdio'],
        ['compared-wrap', 'stdio', 'wrap-stdio'],
        ['gateway', 'stdio', 'gateway-stdio'],
        ['compared', 'stdio', 'gateway-stdio'],
      ] as const) {
        if (!wants(selectedBy)) continue;
        if (path === 'compared' && !gateways.has('compared')) continue;
        if (path === 'compared-wrap' && !wrapped.has('compared')) continue;
        if (path === 'compared-audit' && comparedAuditGateways.length === 0) continue;
        const instances: Instance[] = [];
        if (path === 'direct' && upstream === 'stdio') {
          instances.push({ callers: Array.from({ length: concurrency }, () => stdioDirect!.caller()), upstreamPid: stdioDirectPid });
        } else if (path === 'wrap' || path === 'compared-wrap') {
          for (const w of wrapped.get(path === 'wrap' ? 'gateway' : 'compared')!) {
            instances.push({ callers: Array.from({ length: concurrency }, () => w.connection.caller()), gatewayPid: w.pid, upstreamPid: w.upstreamPid });
          }
        } else {
          const through: Array<{ process: Started; url: string }> | undefined =
            path === 'gateway' || path === 'compared' || path === 'limits'
              ? gateways.get(path === 'limits' ? 'gateway' : path)!
              : path === 'audit'
                ? auditGateways
                : path === 'compared-audit'
                  ? comparedAuditGateways
                  : undefined;
          const server = path === 'limits' ? 'bench-limits' : `bench-${upstream}`;
          // The direct path has no process of its own in between; the floor's is the null proxy.
          const hops = through ?? (path === 'floor' ? floors : [undefined]);
          for (const [n, hop] of hops.entries()) {
            const url = hop === undefined ? upstreamUrl : through !== undefined ? `${hop.url}/mcp/${server}` : hop.url;
            const pool = httpPool(url, concurrency);
            pools.push(pool);
            const opened: HttpCaller[] = [];
            for (let i = 0; i < concurrency; i++) opened.push(await HttpCaller.open(pool, url));
            if (through !== undefined && concurrency === opts.concurrency[0]) await policyChecks(opened[0]!, url);
            const gatewayPid = hop?.process.child.pid;
            const upstreamPid = upstream === 'http' ? upstreamHttp!.child.pid : gatewayPid !== undefined ? childPids(gatewayPid)[0] : undefined;
            instances.push({ callers: opened, gatewayPid, upstreamPid, ...(path === 'audit' ? { audited: auditGateways[n]! } : {}) });
          }
        }
        const gatewayKnown = instances.every((i) => i.gatewayPid !== undefined);
        scenarios.push({
          path,
          upstream,
          concurrency,
          instances,
          samples: new Samples(),
          calls: 0,
          elapsedNs: 0,
          cpu: { client: 0, gateway: 0, upstream: 0, known: { gateway: gatewayKnown, upstream: instances.every((i) => i.upstreamPid !== undefined) } },
          others: 0,
          steal: 0,
          gatewayWakeups: gatewayKnown ? 0 : undefined,
          rounds: [],
        });
      }
    }

    const perRound = opts.measureMs / opts.rounds;
    const total = (scenarios.length * (opts.rounds * (perRound + opts.warmupMs) + (opts.processes > 1 ? opts.processes * opts.warmupMs : 0))) / 1000;
    log(`${scenarios.length} scenarios × ${opts.rounds} round(s) of ${(opts.warmupMs / 1000).toFixed(1)} s warm-up + ${(perRound / 1000).toFixed(1)} s measured: about ${Math.ceil(total)} s`);
    if (opts.processes > 1) {
      // Each process is measured first in a later round than the first: without this, each of them
      // would go into its first measured round as cold as only the first round's used to be.
      log(`warming every process up first: ${(opts.warmupMs / 1000).toFixed(1)} s each`);
      for (const s of scenarios) {
        for (const inst of s.instances) {
          const warm = await drive(inst.callers, opts.warmupMs);
          if (inst.audited) inst.audited.calls += warm.calls;
        }
      }
    }
    for (let round = 1; round <= opts.rounds; round++) {
      for (const s of scenarios) {
        const inst = s.instances[(round - 1) % s.instances.length]!;
        const warm = await drive(inst.callers, opts.warmupMs);
        const w0 = inst.gatewayPid !== undefined ? wakeups(inst.gatewayPid) : undefined;
        const m0 = machineCpu(ticks);
        const sp0 = spinnerCpu();
        const c0 = process.cpuUsage();
        const g0 = inst.gatewayPid !== undefined ? cpuMicros(inst.gatewayPid, ticks) : undefined;
        const u0 = inst.upstreamPid !== undefined ? cpuMicros(inst.upstreamPid, ticks) : undefined;
        const before = s.samples.length;
        const r = await drive(inst.callers, perRound, s.samples);
        const c1 = process.cpuUsage(c0);
        const g1 = inst.gatewayPid !== undefined ? cpuMicros(inst.gatewayPid, ticks) : undefined;
        const u1 = inst.upstreamPid !== undefined ? cpuMicros(inst.upstreamPid, ticks) : undefined;
        const m1 = machineCpu(ticks);
        const sp1 = spinnerCpu();
        const w1 = inst.gatewayPid !== undefined ? wakeups(inst.gatewayPid) : undefined;
        if (s.gatewayWakeups !== undefined) s.gatewayWakeups = w0 !== undefined && w1 !== undefined ? s.gatewayWakeups + w1 - w0 : undefined;
        const ours = c1.user + c1.system + (g1 ?? 0) - (g0 ?? 0) + (u1 ?? 0) - (u0 ?? 0) + sp1 - sp0;
        if (m0 && m1) {
          s.others += Math.max(0, m1.busy - m0.busy - ours);
          s.steal += m1.steal - m0.steal;
        }
        s.calls += r.calls;
        s.elapsedNs += r.elapsedNs;
        s.rounds.push({ rate: r.calls / (r.elapsedNs / 1e9), p50: s.samples.percentileSince(before, 50) });
        if (inst.audited) {
          inst.audited.calls += warm.calls + r.calls;
          // Outside the measured time: a log that kept up only by falling behind would show here.
          const lag = await auditLag(inst.audited);
          s.auditLag = { behind: Math.max(s.auditLag?.behind ?? 0, lag.behind), catchUpMs: Math.max(s.auditLag?.catchUpMs ?? 0, lag.catchUpMs) };
        }
        s.cpu.client += c1.user + c1.system;
        if (g0 !== undefined && g1 !== undefined) s.cpu.gateway += g1 - g0;
        else s.cpu.known.gateway = false;
        if (u0 !== undefined && u1 !== undefined) s.cpu.upstream += u1 - u0;
        else s.cpu.known.upstream = false;
        log(
          `round ${round}/${opts.rounds}  ${`${s.path}-${s.upstream}`.padEnd(19)} c=${String(s.concurrency).padEnd(3)} ${fmt(r.calls / (r.elapsedNs / 1e9)).padStart(7)} calls/s`,
        );
      }
    }

    const results: ScenarioResult[] = scenarios.map((s) => ({
      path: s.path,
      upstream: s.upstream,
      concurrency: s.concurrency,
      summary: s.samples.summarize(s.calls, s.elapsedNs),
      cpu: {
        client: s.cpu.client / s.calls,
        gateway: s.cpu.known.gateway ? s.cpu.gateway / s.calls : undefined,
        upstream: s.cpu.known.upstream ? s.cpu.upstream / s.calls : undefined,
      },
      gatewayWakeups: s.gatewayWakeups === undefined ? undefined : s.gatewayWakeups / s.calls,
      ...(s.auditLag !== undefined ? { auditLag: s.auditLag } : {}),
      otherLoad: s.others / ((s.elapsedNs / 1000) * cpus().length),
      steal: s.steal / ((s.elapsedNs / 1000) * cpus().length),
      rounds: s.rounds,
    }));
    const measuredUs = scenarios.reduce((a, s) => a + s.elapsedNs / 1000, 0) * cpus().length;
    const otherLoad = scenarios.reduce((a, s) => a + s.others, 0) / measuredUs;
    const steal = scenarios.reduce((a, s) => a + s.steal, 0) / measuredUs;
    const worst = results.reduce((a, r) => Math.max(a, r.otherLoad ?? 0), 0);

    for (const c of scenarios.flatMap((s) => s.instances.flatMap((i) => i.callers))) await c.close();

    let auditCount: AuditCount | undefined;
    if (auditGateways.length > 0) {
      const counts: AuditCount[] = [];
      for (const g of auditGateways) {
        // Stopped first, so that its writer has flushed whatever it still held and the count is final.
        await stop(g.process);
        const c = countAudit(g.file, g.calls);
        if (c.records === undefined) log(`audit log: could not count the records of ${g.file} (${c.error}); ${fmt(g.calls)} calls went through its gateway`);
        // Every process measured must have recorded: an audit gateway with an empty log measured nothing.
        else if (c.records === 0 && g.calls > 0) throw new Error(`the audit gateway writing ${g.file} recorded nothing: audit-http did not measure an audit log`);
        counts.push(c);
      }
      const failed = counts.find((c) => c.records === undefined);
      auditCount = {
        records: failed ? undefined : counts.reduce((a, c) => a + c.records!, 0),
        calls: counts.reduce((a, c) => a + c.calls, 0),
        ...(failed ? { error: failed.error } : {}),
      };
      if (auditCount.records !== undefined) {
        const { records, calls } = auditCount;
        log(`audit log: ${fmt(records)} records for ${fmt(calls)} calls through the audit gateway${counts.length > 1 ? 's' : ''} (${(records / Math.max(1, calls)).toFixed(2)} per call)`);
        // Every forwarded call ends in at least one record, however many the gateway writes per call.
        if (counts.some((c) => c.records! < c.calls)) log('audit log: fewer records than calls; the numbers may not include the whole cost of recording');
      }
    }

    const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
    const info: RunInfo = {
      command: argv.length === 0 ? 'npm run bench' : `npm run bench -- ${argv.join(' ')}`,
      build: buildOf(opts.gatewayBin),
      date: new Date().toISOString().slice(0, 10),
      node: process.version,
      cpu: `${model} × ${cpus().length} cores`,
      os: `${platform()} ${release()}`,
      method:
        `Each scenario: ${opts.rounds} interleaved round(s) of ${(opts.warmupMs / 1000).toFixed(1)} s warm-up and ` +
        `${(perRound / 1000).toFixed(1)} s measured; ` +
        (opts.processes > 1 ? `${opts.processes} processes of each gateway and of the null proxy, one measured per round in turn; ` : '') +
        `closed-loop callers, over HTTP one session and one keep-alive connection each, ` +
        `over stdio all on one connection told apart by id; ` +
        `latency is the client's full round trip (percentiles exact over all samples)` +
        (opts.payload !== undefined ? `; each call sends and gets back ${fmt(opts.payload)} bytes of text` : '') +
        (opts.warmCpus ? '; CPUs kept out of idle by lowest-priority spinners (--warm-cpus).' : '.'),
      load:
        `While measuring, processes outside the benchmark kept ${(otherLoad * 100).toFixed(0)}% of the CPUs busy on average ` +
        `(${(worst * 100).toFixed(0)}% in the worst scenario)` +
        (steal >= 0.005 ? `, and the hypervisor stole ${(steal * 100).toFixed(0)}%` : '') +
        '; numbers from a busy machine are noisier and slower.',
    };
    const md = markdown(results, info);
    const cs = checks(results);
    if (opts.json) {
      process.stdout.write(JSON.stringify({ info, targets: TARGETS, results, checks: cs, audit: auditCount }, null, 2) + '\n');
    } else {
      process.stdout.write(`\n${md}\n`);
    }
    if (opts.write) {
      if (opts.partial) {
        // Some of its rows would be missing or come from another run than the rest.
        log(`\n--only: the full results in ${BENCH_DOC} are left as they were`);
      } else {
        writeSection(BENCH_DOC, md, '# Benchmarks\n\nRun `npm run bench`; the section below is rewritten by each full run.');
        log(`\nwrote ${BENCH_DOC}`);
      }
      if (results.some((r) => r.path === 'gateway' && r.upstream === 'http') && results.some((r) => r.path === 'audit')) {
        writeMarkedSection(BENCH_DOC, 'proxy-audit-bench', auditMarkdown(results, info, auditCount));
        log(`wrote the audit comparison into ${BENCH_DOC} (proxy-audit-bench)`);
      }
    }
    if (!opts.inProcess) {
      log(`${opts.partial ? '--only' : '--proxy-only'}: the policy, limits and audit sink benchmarks are not run`);
    } else {
      // The policy-decision benchmark (bench/policy.ts) runs with the same --quick and --write.
      // So do the counter-store benchmarks (memory always, Redis when one answers at REDIS_URL)
      // and the audit sinks' (SQLite always, PostgreSQL when one answers at DATABASE_URL).
      const sub = [...(opts.quick ? ['--quick'] : []), ...(opts.write ? ['--write'] : [])];
      const scripts = ['policy.js', 'limits.js', 'limits-redis.js', 'audit-sqlite.js', 'audit-thread.js'];
      if (process.env.DATABASE_URL) scripts.push('audit-postgres.js');
      else log('audit-postgres bench skipped: set DATABASE_URL to a PostgreSQL it may create schemas in');
      for (const script of scripts) {
        try {
          execFileSync(process.execPath, [join(HERE, script), ...sub], { stdio: ['ignore', opts.json ? 2 : 'inherit', 'inherit'] });
        } catch (err) {
          if (script !== 'limits-redis.js') throw err;
          log('limits-redis bench skipped: no Redis answered (set REDIS_URL)');
        }
      }
    }
    const missed = cs.filter((c) => c.met === false);
    if (opts.enforce && missed.length > 0) {
      log(`--enforce: ${missed.length} target(s) missed`);
      return 1;
    }
    return 0;
  } finally {
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
    await stopAll();
  }
}

runAsCommand('bench', 'dist/bench/run.js', main);
