/**
 * `node dist/bench/ecosystem.js [--quick] [--write]`: the gateway beside the npm MCP proxies the
 * issue measures it against ("mcp-proxy, supergateway manage about 250 calls/s at concurrency 1
 * here: the gateway must be an order of magnitude faster"), on the same machine, in the same
 * interleaved rounds, so that the comparison does not depend on how fast the host is that hour.
 *
 * Both proxies put a Streamable HTTP endpoint in front of a stdio server, so every path here is
 * an HTTP client → a proxy → the same minimal stdio server (bench/upstream-stdio.ts), the
 * `gateway-stdio` path of the main benchmark:
 *   policylayer          `policylayer serve` with the benchmark policy, audit log off
 *   mcp-proxy            `mcp-proxy --port P -- <server>`, its defaults
 *   supergateway         `supergateway --stdio <server> --outputTransport streamableHttp --stateful`
 *   supergateway-default the same without --stateful, its default: a new server process for every
 *                        request, so it is measured at concurrency 1 only
 *
 * The proxies are not dependencies of PolicyLayer: the pinned versions below are installed into
 * node_modules/.cache on first use (npm, without their install scripts). supergateway has no
 * option for the address it listens on and listens on every interface while it runs.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, platform, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Pool } from 'undici';
import { drive, HttpCaller, httpPool, type Caller } from './clients.js';
import { BENCH_POLICY } from './policies.js';
import { buildOf, log, positiveOption, runAsCommand, scratchDir, UsageError } from './main.js';
import { cpuMicros, start, stop, stopAll, type Started } from './procs.js';
import { BENCH_DOC, fmt, writeMarkedSection } from './report.js';
import { Samples } from './stats.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const CACHE = join(ROOT, 'node_modules', '.cache', 'policylayer-bench-ecosystem');

/** The versions measured: the newest on npm when this benchmark was written. */
const PROXIES = { 'mcp-proxy': '6.7.19', supergateway: '4.0.0' } as const;
type ProxyPackage = keyof typeof PROXIES;

const USAGE = `Usage: node dist/bench/ecosystem.js [options]     (after npm run build)

An HTTP client → a proxy → the same stdio MCP server, through policylayer serve and through the
npm proxies mcp-proxy ${PROXIES['mcp-proxy']} and supergateway ${PROXIES.supergateway} (installed into node_modules/.cache on first use).

  --rounds N          interleaved rounds (default 4; --quick: 1)
  --duration S        measured seconds per path and concurrency, over all rounds (default 8; --quick: 2)
  --warmup S          warm-up before each round of each path (default 0.5)
  --concurrency LIST  default 1,16 (supergateway's default mode runs at 1 only)
  --write             write the results into docs/benchmarks.md (ecosystem-bench markers)
  -h, --help
`;

interface Options {
  rounds: number;
  measureMs: number;
  warmupMs: number;
  concurrency: number[];
  write: boolean;
}

function options(argv: string[]): Options | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean' },
        rounds: { type: 'string' },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        concurrency: { type: 'string' },
        write: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return undefined;
  }
  const quick = values.quick === true;
  const num = positiveOption;
  return {
    rounds: Math.round(num(values.rounds, quick ? 1 : 4, 'rounds')),
    measureMs: num(values.duration, quick ? 2 : 8, 'duration') * 1000,
    warmupMs: num(values.warmup, 0.5, 'warmup') * 1000,
    concurrency: (values.concurrency ?? '1,16').split(',').map((c) => Math.round(num(c, 1, 'concurrency'))),
    write: values.write === true,
  };
}

/** The bin script of `pkg` at its pinned version, installed into the cache first if it is not there. */
function proxyBin(pkg: ProxyPackage): string {
  const dir = join(CACHE, 'node_modules', pkg);
  const installed = (): string | undefined => {
    try {
      return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: string }).version;
    } catch {
      return undefined;
    }
  };
  if (installed() !== PROXIES[pkg]) {
    mkdirSync(CACHE, { recursive: true });
    if (!existsSync(join(CACHE, 'package.json'))) writeFileSync(join(CACHE, 'package.json'), '{"private":true}\n');
    log(`installing ${pkg}@${PROXIES[pkg]} into ${CACHE}`);
    execFileSync('npm', ['install', '--prefix', CACHE, '--no-audit', '--no-fund', '--ignore-scripts', `${pkg}@${PROXIES[pkg]}`], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (installed() !== PROXIES[pkg]) throw new Error(`npm did not install ${pkg}@${PROXIES[pkg]} into ${CACHE}`);
  }
  const bin = (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin[pkg];
  if (bin === undefined) throw new Error(`${pkg} names no '${pkg}' bin`);
  return join(dir, bin);
}

/** A port nothing listens on right now, for a proxy that cannot be told to pick its own. */
function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

/** Opens the first session on `url`, retrying while the proxy is still starting. */
async function firstSession(pool: Pool, url: string, proc: Started, sessionless: boolean): Promise<HttpCaller> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      return await HttpCaller.open(pool, url, { sessionless });
    } catch (err) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`${proc.name} exited: ${proc.stderr().trim()}`);
      if (Date.now() > deadline) throw new Error(`${proc.name} did not answer on ${url}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

interface Path {
  name: string;
  label: string;
  proc: Started;
  url: string;
  /** The concurrencies it runs at. */
  concurrency: number[];
  /** It keeps no sessions: each request is on its own. */
  sessionless?: boolean;
}

interface Result {
  path: Path;
  concurrency: number;
  calls: number;
  elapsedNs: number;
  samples: Samples;
  proxyCpuUs: number;
}

async function main(argv: string[]): Promise<number> {
  const opts = options(argv);
  if (opts === undefined) return 0;
  const node = process.execPath;
  const server = [node, join(HERE, 'upstream-stdio.js')];
  const tmp = scratchDir('policylayer-ecosystem-');
  try {
    const bins = { 'mcp-proxy': proxyBin('mcp-proxy'), supergateway: proxyBin('supergateway') };
    const paths: Path[] = [];

    writeFileSync(join(tmp, 'policy.json'), JSON.stringify(BENCH_POLICY, null, 2));
    writeFileSync(
      join(tmp, 'gateway.yaml'),
      JSON.stringify({ listen: '127.0.0.1:0', servers: { 'bench-stdio': { command: server, policy: 'policy.json' } }, audit: { sinks: [] } }),
    );
    const gateway = await start({
      name: 'policylayer serve',
      command: node,
      args: [join(ROOT, 'bin/policylayer.js'), 'serve', '-c', join(tmp, 'gateway.yaml'), '--log-level', 'warn'],
      env: { ...process.env, POLICYLAYER_EXIT_ON_STDIN_CLOSE: '1' },
      ready: /PolicyLayer listening on (http:\/\/\S+)/,
    });
    paths.push({ name: 'policylayer', label: '`policylayer serve`', proc: gateway, url: `${gateway.match[1]}/mcp/bench-stdio`, concurrency: opts.concurrency });

    const spawnProxy = async (name: string, label: string, args: (port: number) => string[], concurrency: number[], sessionless = false) => {
      const port = await freePort();
      const proc = await start({ name, command: node, args: args(port) });
      proxies.push(proc);
      proc.child.stdout!.resume();
      paths.push({ name, label, proc, url: `http://127.0.0.1:${port}/mcp`, concurrency, sessionless });
    };
    await spawnProxy(
      'mcp-proxy',
      `mcp-proxy ${PROXIES['mcp-proxy']}`,
      (port) => [bins['mcp-proxy'], '--port', String(port), '--host', '127.0.0.1', '--', ...server],
      opts.concurrency,
    );
    const supergateway = (port: number, stateful: boolean) => [
      bins.supergateway,
      '--stdio',
      server.map((a) => JSON.stringify(a)).join(' '),
      '--outputTransport',
      'streamableHttp',
      ...(stateful ? ['--stateful'] : []),
      '--port',
      String(port),
      '--logLevel',
      'none',
    ];
    await spawnProxy('supergateway', `supergateway ${PROXIES.supergateway} --stateful`, (port) => supergateway(port, true), opts.concurrency);
    if (opts.concurrency.includes(1)) {
      await spawnProxy('supergateway-default', `supergateway ${PROXIES.supergateway}, its default (stateless)`, (port) => supergateway(port, false), [1], true);
    }

    const pools: Pool[] = [];
    const runs: Array<{ result: Result; callers: Caller[] }> = [];
    for (const c of opts.concurrency) {
      for (const p of paths) {
        if (!p.concurrency.includes(c)) continue;
        const pool = httpPool(p.url, c);
        pools.push(pool);
        const sessionless = p.sessionless === true;
        const callers: Caller[] = [await firstSession(pool, p.url, p.proc, sessionless)];
        while (callers.length < c) callers.push(await HttpCaller.open(pool, p.url, { sessionless }));
        runs.push({ result: { path: p, concurrency: c, calls: 0, elapsedNs: 0, samples: new Samples(), proxyCpuUs: 0 }, callers });
      }
    }

    const perRound = opts.measureMs / opts.rounds;
    for (let round = 1; round <= opts.rounds; round++) {
      for (const { result: r, callers } of runs) {
        await drive(callers, opts.warmupMs);
        const pid = r.path.proc.child.pid!;
        const cpu0 = cpuMicros(pid) ?? 0;
        const d = await drive(callers, perRound, r.samples);
        r.proxyCpuUs += (cpuMicros(pid) ?? 0) - cpu0;
        r.calls += d.calls;
        r.elapsedNs += d.elapsedNs;
        log(`round ${round}/${opts.rounds}  ${r.path.name.padEnd(21)} c=${String(r.concurrency).padEnd(3)} ${fmt(d.calls / (d.elapsedNs / 1e9)).padStart(7)} calls/s`);
      }
    }
    for (const { callers } of runs) await Promise.all(callers.map((c) => c.close()));
    await Promise.all(pools.map((p) => p.close()));

    const md = report(
      runs.map((r) => r.result),
      opts,
      argv,
    );
    process.stdout.write(`${md}\n`);
    if (opts.write) {
      writeMarkedSection(BENCH_DOC, 'ecosystem-bench', md);
      log(`written to ${BENCH_DOC}`);
    }
    return 0;
  } finally {
    // The proxies do not exit when their stdin closes: they get SIGTERM after a short grace.
    await Promise.all(proxies.map((s) => stop(s, 200)));
    await stopAll();
  }
}

/** The proxies started, for stopping them. */
const proxies: Started[] = [];

function report(results: Result[], opts: Options, argv: string[]): string {
  const rate = (r: Result) => r.calls / (r.elapsedNs / 1e9);
  const ours = new Map(results.filter((r) => r.path.name === 'policylayer').map((r) => [r.concurrency, rate(r)]));
  const rows = results.map((r) => {
    const s = r.samples.summarize(r.calls, r.elapsedNs);
    const mine = ours.get(r.concurrency);
    const times = r.path.name === 'policylayer' || mine === undefined ? '–' : `${fmt(mine / rate(r), 1)}×`;
    return `| ${r.path.label} | ${r.concurrency} | ${fmt(r.calls)} | ${fmt(rate(r))} | ${fmt(s.p50)} | ${fmt(s.p99)} | ${fmt(r.proxyCpuUs / r.calls)} | ${times} |`;
  });
  const command = ['node dist/bench/ecosystem.js', ...argv].join(' ');
  const build = buildOf(join(ROOT, 'bin/policylayer.js'));
  return [
    `Measured with \`${command}\`${build === undefined ? '' : ` (gateway at ${build})`} on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${cpus()[0]?.model.trim() ?? 'unknown CPU'} × ${cpus().length} cores, ${platform()} ${release()}.`,
    `${opts.rounds} interleaved round(s) of ${(opts.warmupMs / 1000).toFixed(1)} s warm-up and ${(opts.measureMs / opts.rounds / 1000).toFixed(1)} s measured per path and concurrency; an HTTP client with one keep-alive connection and one MCP session per concurrent caller, closed-loop; every path ends at the same stdio server.`,
    '',
    '| HTTP client → … → stdio server | concurrency | calls | calls/s | p50 µs | p99 µs | proxy CPU µs per call | `policylayer serve`, calls/s, against it |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
  ].join('\n');
}

runAsCommand('ecosystem', 'dist/bench/ecosystem.js', main);
