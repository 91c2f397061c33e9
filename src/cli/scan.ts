// `policylayer scan`: connect to one MCP server the way the gateway would (stdio or Streamable
// HTTP, falling back to legacy HTTP+SSE), list every tool, classify each (src/risk), print what
// was found, and write the recommended policy with a comment above every rule.
//
// The connection is made with the gateway's own upstream clients, so scan works in a production
// install (no MCP SDK there) and reaches a server exactly as `serve` will.
import { statSync, writeFileSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { interpolate } from '../config/index.js';
import type { Env } from '../config/index.js';
import { ConfigError, JsonRpcErrors } from '../errors.js';
import { LATEST_SESSION_VERSION } from '../gateway/protocol.js';
import { createUpstream } from '../main.js';
import { silentLogger } from '../telemetry/logger.js';
import type { ProcessObserver } from '../transport/upstream/stdio.js';
import { HttpUpstream } from '../transport/upstream/http.js';
import { LegacySseUpstream } from '../transport/upstream/sse-legacy.js';
import { UpstreamHttpError, type Upstream, type UpstreamSession } from '../transport/upstream/types.js';
import { isRequest, type JsonRpcRequest, type JsonRpcResponse } from '../util/jsonrpc.js';
import { parsePolicy } from '../policy/index.js';
import type { PolicyDocument } from '../policy/index.js';
import { CLASSIFIER_VERSION, RiskClassifier, SEVERITIES, categorySummary, recommendedPolicyYaml, topReasons } from '../risk/index.js';
import type { Classification, Recommendation, ServerContext, Severity, ToolDefinition } from '../risk/index.js';
import { tryReadText } from '../policy/load.js';
import { parseDuration } from '../util/duration.js';
import { catalogToolOf } from '../catalog/record.js';
import type { CatalogRecordResult, CatalogScan } from '../store/store.js';
import { parse } from './args.js';
import { StoreOptionError, catalogStoreChoice, recordInCatalogue, recordedLine, type CatalogStoreChoice } from './catalog.js';
import type { Command } from './index.js';

const VERSION = '0.1.0';

export const scanCommand: Command = {
  summary: 'connect to an MCP server, classify its tools by risk, and write a recommended policy',
  usage: `Usage: policylayer scan [options] -- <command> [args...]      a local stdio server
       policylayer scan [options] --url <url> [--header 'Name: value']...   a remote server

Connects as an MCP client, lists every tool (all pages), classifies each one
(Read, Write, Execute, Financial, Destructive or Unknown, with a severity,
a confidence and the reasons; see docs/risk.md) and prints a table. With --out
it writes the recommended policy, with a comment above each rule:
  Read allowed; Write 30 calls a minute per grant; Execute 10 a minute per grant,
  with checks on commands and SQL; Financial held for approval, with amount caps;
  Destructive hidden; Unknown held for approval; anything else denied.
The policy passes 'policylayer validate'. It is a starting point: review it.

Every successful scan is recorded in the catalogue of the control store (the
server, each tool's definition, hash and classification, and what changed since
the last scan of the same server reached the same way); read it back with
'policylayer catalog'.

Options:
  -o, --out <file>        write the policy there (.yaml, or .json without comments);
                          '-' prints the YAML on stdout and the table on stderr.
                          Without --out nothing is written.
  --format table|json     json: server, every classification, recommendation and
                          the policy, for machines (default: table)
  --timeout <duration>    for connecting and listing, all pages (default: 30s)
  --trusted               the server is trusted: its annotations may lower a risk
                          (readOnlyHint), not only raise it
  --name <name>           the server's name for the classifier and the policy header
                          (default: what the server says in initialize)
  --description <text>    what the server does, when its own words say too little
                          ("a persistent, interactive terminal"): a classifier signal
 catalogue:
  -c <gateway.yaml>       record the scan in that config's store
  --store sqlite:<path>|postgres://…   record it in this store
                          (default: the gateway's embedded default store,
                          ./data/policylayer.db in the working directory)
  --no-record             record nothing
 stdio:
  -e, --env NAME=VALUE    set an environment variable for the server (repeatable);
                          it inherits this one's environment otherwise
  --cwd <dir>             the server's working directory
 remote:
  --url <url>             the MCP endpoint (Streamable HTTP, or legacy SSE)
  -H, --header 'Name: value'   sent with every request (repeatable)
  --transport auto|streamable-http|sse   auto (default) tries Streamable HTTP and
                          falls back to legacy SSE when the server refuses it

Header and --env values may hold \${VAR}, \${VAR:-default} and \${file:PATH}
references, expanded here, so a secret need not be typed on the command line
(quote them so the shell leaves them alone). Values are never printed.

Exits 0 when the server was scanned, 1 when it could not be (not found,
exited, refused, timed out, no tools) or its scan could not be recorded (then
nothing is written either), 2 on wrong options.

Examples:
  policylayer scan -- npx -y @modelcontextprotocol/server-memory
  policylayer scan --out filesystem.policy.yaml -- npx -y @modelcontextprotocol/server-filesystem /srv/docs
  policylayer scan --url https://www.poolparty.io/api/mcp \\
      --header 'Authorization: Bearer \${POOLPARTY_API_KEY}' --out poolparty.policy.yaml
  policylayer scan --format json --description 'a persistent, interactive terminal' -- uvx piloty > piloty.json
`,
  run: (argv) => runScan(argv),
};

/** Where the command writes and what it reads from its surroundings; tests pass their own. */
export interface ScanIo {
  readonly stdout: Writable & { isTTY?: boolean; columns?: number };
  readonly stderr: Writable;
  readonly env: Env;
  readonly now: () => Date;
}

/** Wrong options: exit 2. */
class UsageError extends Error {}
/** The server could not be scanned: exit 1 with this message. */
class ScanError extends Error {}

const DEFAULT_TIMEOUT = '30s';
/** A server that hands out cursors forever is stopped here. */
const MAX_PAGES = 1_000;
/** How much of a stdio server's stderr is kept to explain a failure. */
const STDERR_KEEP = 8_192;
const STDERR_LINES = 15;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const ENV_NAME = /^[^=\0]+$/;

type Transport = 'stdio' | 'streamable-http' | 'sse';

type Target =
  | { kind: 'stdio'; argv: string[]; env: Record<string, string>; cwd: string | undefined }
  | { kind: 'http'; url: URL; headers: Record<string, string>; transport: 'auto' | 'streamable-http' | 'sse' };

interface Options {
  target: Target;
  timeoutMs: number;
  timeoutText: string;
  trusted: boolean;
  name: string | undefined;
  description: string | undefined;
  format: 'table' | 'json';
  out: string | undefined;
  /** The scan command as it may be shown in the policy header: secrets left out. */
  shown: string;
  /** Expanded header and env values, removed from every message. */
  secrets: string[];
  /** The store the scan is recorded in; undefined with --no-record. */
  record: CatalogStoreChoice | undefined;
}

/** What the server said about itself in initialize. */
export interface ServerFacts {
  readonly name: string;
  readonly title?: string;
  readonly version?: string;
  readonly description?: string;
  readonly instructions?: string;
  /** The protocol revision the server answered initialize with. */
  readonly protocolVersion?: string;
  readonly transport: Transport;
}

export async function runScan(argv: string[], io: ScanIo = { stdout: process.stdout, stderr: process.stderr, env: process.env, now: () => new Date() }): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseOptions(argv, io.env);
    return await scan(options, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`policylayer scan: ${err.message}\n`);
      return 2;
    }
    if (err instanceof ScanError) {
      io.stderr.write(`policylayer scan: ${redact(err.message, options?.secrets ?? [])}\n`);
      return 1;
    }
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Options

function parseOptions(argv: string[], env: Env): Options {
  const dash = argv.indexOf('--');
  const own = dash >= 0 ? argv.slice(0, dash) : argv;
  const command = dash >= 0 ? argv.slice(dash + 1) : [];
  let parsed;
  try {
    parsed = parse(
      'scan',
      own,
      {
        url: { type: 'string' },
        header: { type: 'string', short: 'H', multiple: true },
        transport: { type: 'string' },
        env: { type: 'string', short: 'e', multiple: true },
        cwd: { type: 'string' },
        timeout: { type: 'string' },
        trusted: { type: 'boolean' },
        name: { type: 'string' },
        description: { type: 'string' },
        format: { type: 'string' },
        out: { type: 'string', short: 'o' },
        config: { type: 'string', short: 'c' },
        store: { type: 'string' },
        'no-record': { type: 'boolean' },
      },
      true,
    );
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  const see = "\nSee 'policylayer scan --help'.";
  if (positionals.length > 0) {
    throw new UsageError(`unexpected '${positionals[0]}': put the server's command after --, as in 'policylayer scan -- npx -y <package>'${see}`);
  }
  const format = values.format ?? 'table';
  if (format !== 'table' && format !== 'json') throw new UsageError(`--format expects table or json; got '${format}'${see}`);
  if (format === 'json' && values.out === '-') throw new UsageError(`--out - prints the policy on stdout, where --format json prints its document: write the policy to a file${see}`);

  const timeoutText = values.timeout ?? DEFAULT_TIMEOUT;
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(timeoutText);
  } catch (err) {
    throw new UsageError(`--timeout: ${(err as Error).message}${see}`);
  }
  if (timeoutMs <= 0) throw new UsageError(`--timeout must be longer than 0; got '${timeoutText}'${see}`);

  let record: CatalogStoreChoice | undefined;
  if (values['no-record']) {
    if (values.config !== undefined || values.store !== undefined) throw new UsageError(`--no-record records nothing: leave out ${values.config !== undefined ? '-c' : '--store'}${see}`);
  } else {
    try {
      record = catalogStoreChoice(values, true);
    } catch (err) {
      if (err instanceof StoreOptionError) throw new UsageError(`${err.message}${see}`);
      if (err instanceof ConfigError) throw new ScanError(`-c ${values.config}: the config does not load, so its store is not known:\n${err.issues.join('\n')}`);
      throw err;
    }
  }

  const secrets: string[] = [];
  const expand = (flag: string, raw: string): string => {
    const r = interpolate(raw, env, (p) => {
      const read = tryReadText(path.resolve(p));
      return read.ok ? { text: read.text } : { error: `cannot read the secret file ${p}: ${read.why}` };
    });
    const problems = [...r.invalid, ...r.unreadable, ...r.missing.map((n) => `environment variable ${n} is not set`)];
    if (problems.length > 0) throw new UsageError(`${flag}: ${problems.join('; ')}`);
    secrets.push(...r.substituted);
    return r.value;
  };
  const shownArgs: string[] = [];
  let target: Target;
  if (values.url !== undefined) {
    if (command.length > 0) throw new UsageError(`give --url or a command after --, not both${see}`);
    for (const flag of ['env', 'cwd'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} applies to a stdio server (a command after --), not to --url${see}`);
    }
    let url: URL;
    try {
      url = new URL(values.url);
    } catch {
      throw new UsageError(`--url: not a URL: '${values.url}'${see}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--url must be http:// or https://; got '${url.protocol}'${see}`);
    const transport = values.transport ?? 'auto';
    if (transport !== 'auto' && transport !== 'streamable-http' && transport !== 'sse') {
      throw new UsageError(`--transport expects auto, streamable-http or sse; got '${transport}'${see}`);
    }
    const headers: Record<string, string> = {};
    for (const h of values.header ?? []) {
      const colon = h.indexOf(':');
      const name = colon > 0 ? h.slice(0, colon).trim() : '';
      // The value is not echoed: a header typed without its name may be a bare credential.
      if (colon <= 0) throw new UsageError(`--header expects 'Name: value'; got one without a name and a colon${see}`);
      if (!HEADER_NAME.test(name)) throw new UsageError(`--header expects 'Name: value'; '${name.slice(0, 40)}' is not a header name${see}`);
      const raw = h.slice(colon + 1).trim();
      const value = expand(`--header ${name}`, raw);
      headers[name] = value;
      // A literal value may be a credential; it is kept out of messages, and so are the secrets
      // references expand to.
      if (!raw.includes('${')) secrets.push(value);
      shownArgs.push('--header', shellQuote(`${name}: ${raw.includes('${') ? raw : '…'}`));
    }
    if (url.password !== '') secrets.push(url.password, decodeURIComponent(url.password));
    for (const v of url.searchParams.values()) secrets.push(v);
    target = { kind: 'http', url, headers, transport };
    shownArgs.push('--url', shellQuote(shownUrl(url)));
    if (transport !== 'auto') shownArgs.push('--transport', transport);
  } else {
    if (command.length === 0 || command[0] === '') {
      throw new UsageError(`no server to scan: give its command after --, or --url <url>${see}`);
    }
    for (const flag of ['header', 'transport'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} applies to --url, not to a stdio server${see}`);
    }
    const childEnv: Record<string, string> = {};
    for (const e of values.env ?? []) {
      const eq = e.indexOf('=');
      const name = eq > 0 ? e.slice(0, eq) : '';
      if (!ENV_NAME.test(name)) throw new UsageError(`--env expects NAME=VALUE; got one without a name and an =${see}`);
      const raw = e.slice(eq + 1);
      const value = expand(`--env ${name}`, raw);
      childEnv[name] = value;
      if (!raw.includes('${')) secrets.push(value);
      shownArgs.push('--env', shellQuote(`${name}=${raw.includes('${') ? raw : '…'}`));
    }
    if (values.cwd !== undefined) shownArgs.push('--cwd', shellQuote(values.cwd));
    target = { kind: 'stdio', argv: command, env: childEnv, cwd: values.cwd };
  }
  if (values.trusted) shownArgs.push('--trusted');
  if (values.name !== undefined) shownArgs.push('--name', shellQuote(values.name));
  if (values.description !== undefined) shownArgs.push('--description', shellQuote(values.description));
  if (values.timeout !== undefined) shownArgs.push('--timeout', shellQuote(values.timeout));
  if (values.out !== undefined && values.out !== '-') shownArgs.push('--out', shellQuote(values.out));
  const shownCommand = target.kind === 'stdio' ? ['--', ...redactArgv(target.argv).map(shellQuote)] : [];
  return {
    target,
    timeoutMs,
    timeoutText,
    trusted: values.trusted === true,
    name: values.name,
    description: values.description,
    format,
    out: values.out,
    shown: ['policylayer', 'scan', ...shownArgs, ...shownCommand].join(' '),
    secrets,
    record,
  };
}

/** The URL without its password and with query values hidden (API keys travel there too). */
function shownUrl(url: URL): string {
  const u = new URL(url.href);
  if (u.password !== '') u.password = '…';
  for (const key of [...new Set(u.searchParams.keys())]) u.searchParams.set(key, '…');
  return u.href.replace(/%E2%80%A6/g, '…');
}

const SECRET_FLAG = /^--?[\w.-]*(?:key|token|secret|password|passwd|pwd|auth|credential)s?[\w.-]*$/i;

/** A server argv for the policy header: the value after (or in) a flag named like a secret is hidden. */
function redactArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    if (a.startsWith('-') && eq > 0 && SECRET_FLAG.test(a.slice(0, eq))) out.push(`${a.slice(0, eq)}=…`);
    else if (SECRET_FLAG.test(a) && i + 1 < argv.length && !argv[i + 1]!.startsWith('-')) {
      out.push(a, '…');
      i++;
    } else out.push(a);
  }
  return out;
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./…-]+$/u.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Every secret replaced, longest first, so that an error quoting a header does not leak it. */
function redact(text: string, secrets: readonly string[]): string {
  return [...secrets]
    .filter((s) => s.length >= 4)
    .sort((a, b) => b.length - a.length)
    .reduce((acc, s) => acc.split(s).join('[redacted]'), text);
}

// ---------------------------------------------------------------------------------------------
// Connecting and listing

// The server is reached through the gateway's own upstream clients (src/transport/upstream), made
// by the same factory `serve` uses: a stdio server is spawned, supervised and stopped as the
// gateway would (its own process group, stderr read line by line, the group killed at the end);
// a remote one is spoken to over the same pooled Streamable HTTP or legacy SSE client.

/** A tool as the server listed it: what the classifier reads, and everything else kept as it came. */
type ListedTool = ToolDefinition & { readonly [key: string]: unknown };

interface Listing {
  server: ServerFacts;
  tools: ListedTool[];
}

/** One attempt's state, for the messages a failure or the deadline produces. */
interface Attempt {
  phase: string;
  /** What a stdio server wrote on stderr so far (secrets not yet removed). */
  stderr(): string;
  close(): Promise<void>;
  /** Ends the connection now (the deadline passed); the close that follows is then quick. */
  abort(): void;
}

/** Connects, lists every page of tools, disconnects: all within the deadline. */
async function listServer(o: Options): Promise<Listing> {
  const deadline = Date.now() + o.timeoutMs;
  const t = o.target;
  if (t.kind === 'stdio') return withDeadline(o, deadline, (a) => listStdio(o, t, a));
  if (t.transport !== 'auto') return withDeadline(o, deadline, (a) => listHttp(o, t, t.transport as HttpMode, a));
  try {
    return await withDeadline(o, deadline, (a) => listHttp(o, t, 'streamable-http', a));
  } catch (err) {
    // MCP spec, backwards compatibility: a server that refuses the initialize POST with a 4xx
    // (404, 405, 400) may be an old HTTP+SSE server; GET the same URL for its event stream.
    // 401 and 403 are answers about credentials, which SSE would get too.
    const status = err instanceof HttpFailure ? err.status : undefined;
    if (status === undefined || status < 400 || status >= 500 || [401, 403, 408, 429].includes(status)) throw err;
    try {
      return await withDeadline(o, deadline, (a) => listHttp(o, t, 'sse', a));
    } catch (sseErr) {
      if (sseErr instanceof HttpFailure && sseErr.status === status) {
        throw new ScanError(`${sseErr.message} (the Streamable HTTP POST and the legacy SSE GET both answered ${status})`);
      }
      if (sseErr instanceof ScanError) throw new ScanError(`${sseErr.message}\n(Streamable HTTP was refused first: HTTP ${status})`);
      throw sseErr;
    }
  }
}

/** A refusal by HTTP status, kept apart so auto can fall back to SSE on the right ones. */
class HttpFailure extends ScanError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function withDeadline(o: Options, deadline: number, run: (a: Attempt) => Promise<Listing>): Promise<Listing> {
  const attempt: Attempt = { phase: 'connecting', stderr: () => '', close: async () => {}, abort: () => {} };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutSignal()), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([run(attempt), timedOut]);
  } catch (err) {
    if (err instanceof TimeoutSignal) {
      attempt.abort();
      throw new ScanError(`no answer from the server within ${o.timeoutText} while ${attempt.phase}; a slow server may need a longer --timeout${tail(attempt.stderr())}`);
    }
    if (err instanceof ScanError) throw err;
    throw new ScanError(`${attempt.phase} failed: ${inOwnWords((err as Error).message)}${tail(attempt.stderr())}`);
  } finally {
    clearTimeout(timer);
    await attempt.close().catch(() => {});
  }
}

class TimeoutSignal extends Error {}

function tail(stderr: string): string {
  const lines = stderr.replace(/\s+$/, '').split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) return '';
  const shown = lines.slice(-STDERR_LINES);
  return `\nThe server's stderr${lines.length > shown.length ? ` (last ${shown.length} lines)` : ''}:\n${shown.map((l) => `  | ${l}`).join('\n')}`;
}

/**
 * The upstream's limits (a call, the process coming up) sit a second past the deadline, so that
 * the deadline's own message, which says what was happening, is the one a person reads.
 */
function upstreamTimeout(o: Options): number {
  return o.timeoutMs + 1_000;
}

/** Scan's initialize: it asks for nothing but tools, so it declares no client capabilities. */
function initializeRequest(): JsonRpcRequest {
  return {
    jsonrpc: '2.0',
    id: 'policylayer-scan-init',
    method: 'initialize',
    params: { protocolVersion: LATEST_SESSION_VERSION, capabilities: {}, clientInfo: { name: 'policylayer-scan', version: VERSION } },
  };
}

/** Opens the session and completes the handshake as the gateway does for a session of its own. */
async function openSession(upstream: Upstream): Promise<UpstreamSession> {
  await upstream.start();
  const session = await upstream.open(initializeRequest(), LATEST_SESSION_VERSION);
  session.send({ jsonrpc: '2.0', method: 'notifications/initialized' }, undefined);
  return session;
}

/** What the supervised process did, as the stdio upstream tells its observer. */
interface ProcessWatch {
  stderr: string;
  exited: boolean;
  /** The server answered initialize with an error (its message), or with no result. */
  refused: string | undefined;
}

function watching(watch: ProcessWatch): ProcessObserver {
  return {
    stderr: (line) => {
      watch.stderr = (watch.stderr + line + '\n').slice(-STDERR_KEEP);
    },
    exited: () => {
      watch.exited = true;
    },
    refusedInitialize: (error) => {
      // A process that ends fails the initialize in flight, which is reported as a refusal too;
      // only a refusal while it still runs is the server's own answer.
      if (watch.exited) return;
      const e = error as { message?: unknown; code?: unknown } | undefined;
      watch.refused = typeof e?.message === 'string' ? `${e.message}${typeof e.code === 'number' ? ` (error ${e.code})` : ''}` : 'its answer is not an initialize result';
    },
  };
}

async function listStdio(o: Options, t: Extract<Target, { kind: 'stdio' }>, a: Attempt): Promise<Listing> {
  const command = t.argv[0]!;
  const watch: ProcessWatch = { stderr: '', exited: false, refused: undefined };
  // `isolation: session` starts the process for this one session, initialized with scan's own
  // initialize (its client info and capabilities) rather than the gateway's. The process inherits
  // this one's environment with --env added, as a server in gateway.yaml does.
  const upstream = createUpstream(
    { name: path.basename(command), kind: 'stdio', command: t.argv, env: t.env, ...(t.cwd !== undefined ? { cwd: t.cwd } : {}), isolation: 'session', timeoutMs: upstreamTimeout(o) },
    // Nothing is logged: a failure is explained once, in scan's own words.
    silentLogger(),
    // The deadline passed or the tools are in: stdin closed, then SIGTERM a second later and
    // SIGKILL a second after that, to the whole process group.
    { killGraceMs: 1_000, observer: watching(watch) },
  );
  a.stderr = () => watch.stderr;
  a.close = () => upstream.close();
  // The process is spawned as open() begins; a spawn that fails is told apart below.
  a.phase = 'waiting for the answer to initialize';
  try {
    const session = await openSession(upstream);
    const server = serverFacts(session, 'stdio');
    const tools = await listAllTools(session, a);
    return { server, tools };
  } catch (err) {
    if (err instanceof ScanError) throw err;
    const e = ((err as Error).cause ?? {}) as NodeJS.ErrnoException;
    if (typeof e.syscall === 'string' && e.syscall.startsWith('spawn')) {
      const where = t.cwd !== undefined ? ` (in ${t.cwd})` : '';
      if (e.code === 'ENOENT' && t.cwd !== undefined && !isDirectory(t.cwd)) throw new ScanError(`cannot start ${shellQuote(command)}: the --cwd directory ${t.cwd} does not exist`);
      if (e.code === 'ENOENT') throw new ScanError(`cannot start ${shellQuote(command)}: command not found${where}; is it installed and on PATH?`);
      if (e.code === 'EACCES') throw new ScanError(`cannot start ${shellQuote(command)}: permission denied${where}; is it an executable file?`);
      throw new ScanError(`cannot start ${shellQuote(command)}: ${e.message}`);
    }
    if (watch.refused !== undefined) throw new ScanError(`the server refused initialize: ${watch.refused}${tail(watch.stderr)}`);
    if (watch.exited) {
      // The last of stderr may still be on its way through the pipe.
      await new Promise((r) => setTimeout(r, 50));
      throw new ScanError(`the server exited while ${a.phase}${tail(watch.stderr) || ' (it wrote nothing to stderr)'}`);
    }
    throw err;
  }
}

function isDirectory(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

type HttpMode = 'streamable-http' | 'sse';

async function listHttp(o: Options, t: Extract<Target, { kind: 'http' }>, mode: HttpMode, a: Attempt): Promise<Listing> {
  const upstream = createUpstream({ name: t.url.host, kind: 'http', url: t.url.href, transport: mode, headers: t.headers, timeoutMs: upstreamTimeout(o) }, silentLogger());
  // Requests still waiting for an answer end with the pool, rather than at their own timeout.
  const destroy = async (): Promise<void> => {
    if (upstream instanceof HttpUpstream) upstream.pool.destroy();
    else if (upstream instanceof LegacySseUpstream) await upstream.pool.destroy().catch(() => {});
  };
  a.close = async () => {
    // Polite: end the session on the server (DELETE); never let that delay the answer long.
    const closed = upstream.close();
    const late = await Promise.race([closed.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 1_000).unref())]);
    if (late) await destroy();
  };
  a.abort = () => void destroy();
  a.phase = mode === 'sse' ? `opening the legacy SSE stream at ${t.url.origin}` : `initializing over Streamable HTTP at ${t.url.origin}`;
  try {
    const session = await openSession(upstream);
    const server = serverFacts(session, mode);
    const tools = await listAllTools(session, a);
    return { server, tools };
  } catch (err) {
    throw httpFailure(err, t.url, mode, a);
  }
}

function httpFailure(err: unknown, url: URL, mode: HttpMode, a: Attempt): Error {
  if (err instanceof ScanError || err instanceof TimeoutSignal) return err;
  const at = shownUrl(url);
  if (err instanceof UpstreamHttpError && err.status >= 400) {
    const status = err.status;
    switch (status) {
      case 401:
        return new HttpFailure(401, `${at}: HTTP 401 Unauthorized: the server wants credentials. Pass them with --header, e.g. --header 'Authorization: Bearer \${API_KEY}' (an OAuth sign-in is not something scan does)`);
      case 403:
        return new HttpFailure(403, `${at}: HTTP 403 Forbidden: the server refused these credentials, or they lack a permission it needs`);
      case 404:
        return new HttpFailure(404, `${at}: HTTP 404 Not Found: no MCP endpoint at this URL; check the path (often /mcp, or /sse for older servers)`);
      case 405:
        return new HttpFailure(405, `${at}: HTTP 405 Method Not Allowed: this URL does not take MCP ${mode === 'sse' ? 'event streams' : 'POST requests'}`);
      default: {
        // What the server said with the status, unless it is an HTML error page, which says nothing useful.
        const detail = firstLine(err.detail.trim());
        const said = detail === '' || detail.startsWith('<') ? '' : `: ${detail}`;
        return new HttpFailure(status, `${at}: HTTP ${status} ${STATUS_CODES[status] ?? ''} while ${a.phase}${said}`.replace(/ {2,}/g, ' '));
      }
    }
  }
  const rpc = (err as { rpc?: JsonRpcResponse }).rpc;
  if (rpc?.error !== undefined) return new ScanError(`${at}: the server refused initialize: ${firstLine(rpc.error.message)} (error ${rpc.error.code})`);
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code ?? (err as NodeJS.ErrnoException).code;
  const reach: Record<string, string> = {
    ECONNREFUSED: 'connection refused (is the server running, and on this port?)',
    ENOTFOUND: 'host not found',
    EAI_AGAIN: 'host name lookup failed (temporary)',
    ECONNRESET: 'the connection was reset',
    ETIMEDOUT: 'the connection timed out',
    EHOSTUNREACH: 'host unreachable',
    CERT_HAS_EXPIRED: 'its TLS certificate has expired',
    DEPTH_ZERO_SELF_SIGNED_CERT: 'its TLS certificate is self-signed',
    SELF_SIGNED_CERT_IN_CHAIN: 'its TLS certificate chain is self-signed',
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its TLS certificate cannot be verified',
  };
  if (code !== undefined && reach[code] !== undefined) return new ScanError(`cannot reach ${url.origin}: ${reach[code]}`);
  // A network error (it has a code: errno or undici's UND_ERR_*), not an answer that made no sense.
  if (code !== undefined && cause?.message) return new ScanError(`cannot reach ${url.origin}: ${firstLine(cause.message)}`);
  return new ScanError(`${at}: ${a.phase} failed: ${firstLine(inOwnWords((err as Error).message))}`);
}

/** An upstream's message as scan says it: the server is "the server", not the name scan gave it. */
function inOwnWords(message: string): string {
  return message.replace(/upstream server '[^']*': /g, '').replace(/upstream server '[^']*'/g, 'the server');
}

function firstLine(s: string): string {
  const line = s.split('\n')[0] ?? '';
  return line.length > 300 ? line.slice(0, 299) + '…' : line;
}

/** One request on the session, answered once: by the server, or by the upstream when it lost the server. */
function request(session: UpstreamSession, req: JsonRpcRequest): Promise<JsonRpcResponse> {
  return new Promise((resolve) => {
    session.call(req, undefined, {
      onRelated: ({ message }) => {
        // A server that asks something while listing (ping, or what scan did not declare it
        // could do) gets an answer, so it does not wait for one until the deadline.
        if (!isRequest(message)) return;
        session.send(
          message.method === 'ping'
            ? { jsonrpc: '2.0', id: message.id, result: {} }
            : { jsonrpc: '2.0', id: message.id, error: { code: JsonRpcErrors.METHOD_NOT_FOUND, message: `policylayer scan does not handle ${message.method}` } },
          undefined,
        );
      },
      onResponse: (msg) => resolve(msg),
    });
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Why one listed tool cannot be classified, or undefined when it can. */
function toolProblem(tool: unknown, i: number): string | undefined {
  const at = `tools[${i}]`;
  if (!isObject(tool)) return `${at} is ${describe(tool)}, not a tool object`;
  if (typeof tool.name !== 'string' || tool.name === '') return `${at} has no name${tool.name === undefined ? '' : ` (its "name" is ${describe(tool.name)})`}`;
  const name = `${at} (${JSON.stringify(tool.name).slice(0, 60)})`;
  for (const key of ['title', 'description'] as const) {
    if (tool[key] !== undefined && typeof tool[key] !== 'string') return `${name}: "${key}" is ${describe(tool[key])}, not a string`;
  }
  for (const key of ['inputSchema', 'annotations'] as const) {
    if (tool[key] !== undefined && !isObject(tool[key])) return `${name}: "${key}" is ${describe(tool[key])}, not an object`;
  }
  return undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

/** tools/list, following nextCursor to the last page. */
async function listAllTools(session: UpstreamSession, a: Attempt): Promise<ListedTool[]> {
  const caps = isObject(session.initializeResult.capabilities) ? session.initializeResult.capabilities : {};
  if (!caps.tools) {
    const offered = Object.keys(caps).filter((k) => k !== 'experimental');
    throw new ScanError(`the server does not offer tools (it declares ${offered.length > 0 ? offered.join(', ') : 'no capabilities'}): there is nothing to classify`);
  }
  const tools: ListedTool[] = [];
  const cursors = new Set<string>();
  let cursor: string | undefined;
  for (let page = 1; ; page++) {
    a.phase = page === 1 ? 'listing tools' : `listing tools (page ${page})`;
    const answer = await request(session, { jsonrpc: '2.0', id: page, method: 'tools/list', ...(cursor === undefined ? {} : { params: { cursor } }) });
    if (answer.error !== undefined) throw new Error(`${firstLine(inOwnWords(String(answer.error.message)))} (error ${answer.error.code})`);
    const invalid = (why: string) => new ScanError(`the server's answer to tools/list${page > 1 ? ` (page ${page})` : ''} is not valid: ${why}`);
    const r = answer.result;
    if (!isObject(r)) throw invalid(`the result is ${describe(r)}, not an object`);
    if (!Array.isArray(r.tools)) throw invalid(r.tools === undefined ? 'it has no "tools"' : `"tools" is ${describe(r.tools)}, not an array`);
    for (const [i, tool] of r.tools.entries()) {
      const problem = toolProblem(tool, i);
      if (problem !== undefined) throw invalid(problem);
    }
    tools.push(...(r.tools as ListedTool[]));
    if (r.nextCursor !== undefined && r.nextCursor !== null && typeof r.nextCursor !== 'string') throw invalid(`"nextCursor" is ${describe(r.nextCursor)}, not a string`);
    cursor = typeof r.nextCursor === 'string' ? r.nextCursor : undefined;
    if (cursor === undefined) break;
    if (cursors.has(cursor)) throw new ScanError(`the server handed out the tools/list cursor ${JSON.stringify(cursor).slice(0, 80)} twice (page ${page}): its pagination loops`);
    if (page >= MAX_PAGES) throw new ScanError(`the server's tools/list goes on past ${MAX_PAGES} pages; stopping`);
    cursors.add(cursor);
  }
  return tools;
}

/** What the server said about itself in its initialize result. */
function serverFacts(session: UpstreamSession, transport: Transport): ServerFacts {
  const result = session.initializeResult;
  const info = isObject(result.serverInfo) ? result.serverInfo : {};
  const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  const [name, title, version, description, instructions, protocolVersion] = [info.name, info.title, info.version, info.description, result.instructions, result.protocolVersion].map(text);
  return {
    name: name ?? '(unnamed)',
    ...(title !== undefined ? { title } : {}),
    ...(version !== undefined ? { version } : {}),
    ...(description !== undefined ? { description } : {}),
    ...(instructions !== undefined ? { instructions } : {}),
    ...(protocolVersion !== undefined ? { protocolVersion } : {}),
    transport,
  };
}

// ---------------------------------------------------------------------------------------------
// The scan

interface Row {
  definition: ListedTool;
  classification: Classification;
  recommendation: Recommendation;
}

async function scan(o: Options, io: ScanIo): Promise<number> {
  const listing = await listServer(o);
  const server = listing.server;
  if (listing.tools.length === 0) throw new ScanError(`${displayName(server, o)} lists no tools: there is nothing to classify, and no policy was written`);

  // A name listed twice is classified once; the second definition would only confuse a policy.
  const seen = new Set<string>();
  const duplicates: string[] = [];
  const tools = listing.tools.filter((t) => (seen.has(t.name) ? (duplicates.push(t.name), false) : (seen.add(t.name), true)));

  const context: ServerContext & { tools: readonly ToolDefinition[] } = {
    name: o.name ?? server.title ?? server.name,
    ...(o.description ?? server.description ? { description: (o.description ?? server.description)! } : {}),
    ...(server.instructions !== undefined ? { instructions: server.instructions } : {}),
    trusted: o.trusted,
    tools: tools as readonly ToolDefinition[],
  };
  const classifications = new RiskClassifier().classifyServer(context);
  const items = classifications.map((classification, i) => ({ classification, tool: tools[i] as ToolDefinition }));
  const { yaml, policy } = recommendedPolicyYaml(items, policyHeader(o, server, classifications, io.now()));
  const rows: Row[] = classifications.map((c, i) => ({ definition: tools[i]!, classification: c, recommendation: policy.recommendations[i]! }));

  // The policy is checked with the loader validate and the gateway use before anyone sees it.
  const written = o.out === undefined || o.out === '-' ? undefined : o.out;
  const text = written !== undefined && path.extname(written).toLowerCase() === '.json' ? JSON.stringify(policy.document, null, 2) + '\n' : yaml;
  try {
    parsePolicy(text, written ?? 'recommended policy');
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new Error(`the recommended policy does not validate (a bug in scan; please report it):\n${err.issues.join('\n')}`);
  }
  // Recorded before anything is written: a scan that cannot be kept fails whole, and says so.
  let recorded: CatalogRecordResult | undefined;
  if (o.record !== undefined) {
    try {
      recorded = await recordInCatalogue(o.record, catalogScan(o, server, rows), io.now().getTime());
    } catch (err) {
      throw new ScanError(`the scan cannot be recorded in the catalogue (${o.record.shown}): ${(err as Error).message}; nothing was written. Add --no-record to scan without recording`);
    }
  }
  if (written !== undefined) {
    try {
      writeFileSync(written, text);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'ENOENT' ? 'its folder does not exist' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'it is a directory' : e.message;
      throw new ScanError(`cannot write the policy to ${written}: ${why}`);
    }
  }

  const notes: string[] = [];
  if (duplicates.length > 0) notes.push(`the server lists ${[...new Set(duplicates)].map((d) => JSON.stringify(d)).join(', ')} more than once; the first definition was used`);
  if (policy.skipped.length > 0) notes.push(`not in the policy (a name with * or ? reads as a glob), so denied by default: ${policy.skipped.join(', ')}`);
  if (server.transport === 'sse' && o.target.kind === 'http' && o.target.transport === 'auto') {
    notes.push('the server speaks the legacy HTTP+SSE transport: give it `transport: sse` in gateway.yaml');
  }

  if (o.format === 'json') {
    io.stdout.write(JSON.stringify(jsonReport(o, server, rows, policy.document, written, notes, recorded), null, 2) + '\n');
    if (written !== undefined) io.stderr.write(`wrote ${written}\n`);
    return 0;
  }

  // With --out -, stdout carries the policy, so the report goes to stderr.
  const report = o.out === '-' ? io.stderr : io.stdout;
  const tty = o.out === '-' ? (io.stderr as { isTTY?: boolean }).isTTY === true : io.stdout.isTTY === true;
  const columns = o.out === '-' ? (io.stderr as { columns?: number }).columns : io.stdout.columns;
  const width = tty && columns !== undefined && columns > 0 ? Math.max(80, columns) : 120;
  const color = tty && io.env.NO_COLOR === undefined && io.env.TERM !== 'dumb';
  report.write(`${displayName(server, o)} over ${server.transport}: ${categorySummary(classifications)}${o.trusted ? ' (trusted: annotations may lower risk)' : ''}\n\n`);
  report.write(renderTable(rows, width, color));
  report.write('\n' + policySummary(policy.recommendations) + '\n');
  for (const n of notes) report.write(`note: ${n}\n`);
  if (recorded !== undefined) report.write(`${recordedLine(o.record!, recorded)}\n`);
  if (o.out === '-') io.stdout.write(yaml);
  else if (written !== undefined) report.write(`Wrote ${written}. Check it with: policylayer validate ${shellQuote(written)}\n`);
  else report.write(`Nothing written: add --out ${slug(server, o)}.policy.yaml to write the policy (or --out - to print it).\n`);
  return 0;
}

function displayName(server: ServerFacts, o: Options): string {
  const name = o.name ?? server.title ?? server.name;
  const id = server.title !== undefined && o.name === undefined ? ` (${server.name}${server.version ? ` ${server.version}` : ''})` : server.version ? ` ${server.version}` : '';
  return `${name}${id}`;
}

/** A file name from the server's name: `mcp-servers/everything` → `everything`. */
export function slug(server: Pick<ServerFacts, 'name'>, o: Pick<Options, 'name'> = { name: undefined }): string {
  const base = (o.name ?? server.name).split('/').pop() ?? '';
  const s = base.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '');
  return s === '' ? 'server' : s;
}

function policyHeader(o: Options, server: ServerFacts, classifications: readonly Classification[], now: Date): string[] {
  return [
    `PolicyLayer policy recommended by \`policylayer scan\` for ${displayName(server, o)}.`,
    `Generated ${now.toISOString().replace(/\.\d{3}Z$/, 'Z')} by: ${o.shown}`,
    `Scanned over ${server.transport}: ${categorySummary(classifications)}. Risk classifier v${CLASSIFIER_VERSION}; the server was ${o.trusted ? 'marked trusted (its annotations may lower risk)' : 'not marked trusted (its annotations may only raise risk)'}.`,
    'Read allowed; Write 30 calls a minute per grant; Execute 10 a minute per grant, with checks on commands and SQL;',
    'Financial held for a person\'s approval, with amount caps; Destructive hidden; Unknown held for approval.',
    'A tool the server did not list is denied (default: deny). This is a starting point: review every rule.',
    'Categories and severities: docs/risk.md. The policy format: docs/policy.md.',
  ];
}

function policySummary(recs: readonly Recommendation[]): string {
  let allowed = 0;
  let limited = 0;
  let approval = 0;
  let hidden = 0;
  for (const r of recs) {
    if (r.hide) hidden++;
    else if (r.rule?.action === 'require_approval') approval++;
    else if (r.rule?.limits !== undefined) limited++;
    else allowed++;
  }
  return `Recommended policy (default: deny): ${allowed} allowed, ${limited} rate-limited, ${approval} held for approval, ${hidden} hidden.`;
}

/** The short form of a rule for the table. */
export function ruleLabel(r: Recommendation): string {
  if (r.hide) return 'hidden';
  const rule = r.rule ?? {};
  if (rule.action === 'require_approval') return rule.require || rule.deny_if ? 'approval, capped' : 'approval';
  const limit = rule.limits?.find((l) => 'max' in l && l.window === 'minute') as { max?: number } | undefined;
  const checks = rule.deny_if?.length ?? 0;
  if (limit?.max !== undefined) return `${limit.max}/min${checks > 0 ? ` +${checks} check${checks > 1 ? 's' : ''}` : ''}`;
  return 'allow';
}

// ---------------------------------------------------------------------------------------------
// The table

const SEVERITY_COLOR: Record<Severity, string> = { Low: '32', Medium: '33', High: '31', Critical: '1;31' };

/**
 * One row per tool, the riskiest first: tool, category, severity, confidence, the rule, and the
 * top two reasons each on its own line, cut to `width` columns.
 */
export function renderTable(rows: readonly Row[], width: number, color: boolean): string {
  const rank = (s: Severity) => SEVERITIES.indexOf(s);
  const sorted = rows.map((r, i) => ({ r, i })).sort((a, b) => rank(b.r.classification.severity) - rank(a.r.classification.severity) || a.i - b.i);
  const toolW = Math.min(40, Math.max(4, ...rows.map((r) => r.classification.tool.length)));
  const ruleW = Math.max(4, ...rows.map((r) => ruleLabel(r.recommendation).length));
  const fixed = [toolW, 11, 8, 4, ruleW];
  const reasonsAt = fixed.reduce((a, b) => a + b + 2, 0);
  // A narrow terminal gets the reasons on their own lines, indented, rather than a sliver of a column.
  const beside = width - reasonsAt >= 30;
  const indent = beside ? reasonsAt : 4;
  const reasonsW = Math.max(10, width - indent);
  const line = (cells: string[], sev?: Severity): string => {
    const padded = cells.slice(0, 5).map((c, i) => {
      const p = c.padEnd(fixed[i]!);
      return i === 2 && sev !== undefined && color ? `\x1b[${SEVERITY_COLOR[sev]}m${p}\x1b[0m` : p;
    });
    return `${padded.join('  ')}  ${cells[5] ?? ''}`.trimEnd() + '\n';
  };
  let out = line(['TOOL', 'CATEGORY', 'SEVERITY', 'CONF', 'RULE', beside ? 'TOP REASONS' : '']);
  for (const { r } of sorted) {
    const c = r.classification;
    const reasons = topReasons(c).slice(0, 2).map((x) => cut(x.text, reasonsW));
    const first = beside ? (reasons.shift() ?? '') : '';
    out += line([cut(c.tool, toolW), c.category, c.severity, c.confidence.toFixed(2), ruleLabel(r.recommendation), first], c.severity);
    for (const more of reasons) out += ' '.repeat(indent) + more + '\n';
  }
  return out;
}

function cut(s: string, w: number): string {
  const flat = s.replace(/\s+/g, ' ');
  return flat.length <= w ? flat : flat.slice(0, w - 1) + '…';
}

// ---------------------------------------------------------------------------------------------
// JSON

/** What the catalogue keeps of this scan: the server as it was reached (secrets left out), each tool as listed and classified. */
function catalogScan(o: Options, server: ServerFacts, rows: readonly Row[]): CatalogScan {
  return {
    key: slug(server, o),
    name: server.name,
    target: o.target.kind === 'stdio' ? { command: redactArgv(o.target.argv) } : { url: shownUrl(o.target.url) },
    title: server.title ?? null,
    version: server.version ?? null,
    displayName: o.name ?? null,
    description: o.description ?? server.description ?? null,
    instructions: server.instructions ?? null,
    trusted: o.trusted,
    transport: server.transport,
    classifierVersion: CLASSIFIER_VERSION,
    tools: rows.map((r) => catalogToolOf(r.definition as unknown as Record<string, unknown>, r.classification)),
  };
}

function jsonReport(o: Options, server: ServerFacts, rows: readonly Row[], policy: PolicyDocument, written: string | undefined, notes: string[], recorded: CatalogRecordResult | undefined) {
  const counts = (key: 'category' | 'severity') => {
    const m: Record<string, number> = {};
    for (const r of rows) m[r.classification[key]] = (m[r.classification[key]] ?? 0) + 1;
    return m;
  };
  return {
    server: { ...server, ...(o.name !== undefined ? { displayName: o.name } : {}), trusted: o.trusted, target: o.target.kind === 'stdio' ? { command: redactArgv(o.target.argv) } : { url: shownUrl(o.target.url) } },
    classifierVersion: CLASSIFIER_VERSION,
    summary: { tools: rows.length, categories: counts('category'), severities: counts('severity') },
    tools: rows.map((r) => ({
      ...r.classification,
      recommendation: { rule: ruleLabel(r.recommendation), hide: r.recommendation.hide, ...(r.recommendation.rule !== undefined ? { policy: r.recommendation.rule } : {}), why: r.recommendation.why },
      definition: r.definition,
    })),
    policy,
    policyFile: written ?? null,
    catalog:
      recorded === undefined
        ? null
        : {
            store: o.record!.shown,
            key: recorded.server.key,
            created: recorded.created,
            changes: recorded.changes.map((c) => ({ tool: c.tool, kind: c.kind, oldHash: c.oldHash, newHash: c.newHash })),
          },
    notes,
  };
}
