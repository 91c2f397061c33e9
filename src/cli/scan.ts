// `policylayer scan`: connect to one MCP server the way a client would (stdio or Streamable
// HTTP, falling back to legacy HTTP+SSE), list every tool, classify each (src/risk), print what
// was found, and write the recommended policy with a comment above every rule.
//
// The MCP SDK is imported lazily: it is a devDependency of this package, and the other commands
// must keep working in an install that left it out.
import { statSync, writeFileSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { interpolate } from '../config/index.js';
import type { Env } from '../config/index.js';
import { ConfigError } from '../errors.js';
import { parsePolicy } from '../policy/index.js';
import type { PolicyDocument } from '../policy/index.js';
import { CLASSIFIER_VERSION, RiskClassifier, SEVERITIES, categorySummary, recommendedPolicyYaml, topReasons } from '../risk/index.js';
import type { Classification, Recommendation, ServerContext, Severity, ToolDefinition } from '../risk/index.js';
import { tryReadText } from '../policy/load.js';
import { parseDuration } from '../util/duration.js';
import { parse } from './args.js';
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
exited, refused, timed out, no tools), 2 on wrong options.

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
}

/** What the server said about itself in initialize. */
export interface ServerFacts {
  readonly name: string;
  readonly title?: string;
  readonly version?: string;
  readonly description?: string;
  readonly instructions?: string;
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

interface Sdk {
  Client: typeof import('@modelcontextprotocol/sdk/client/index.js').Client;
  StdioClientTransport: typeof import('@modelcontextprotocol/sdk/client/stdio.js').StdioClientTransport;
  StreamableHTTPClientTransport: typeof import('@modelcontextprotocol/sdk/client/streamableHttp.js').StreamableHTTPClientTransport;
  StreamableHTTPError: typeof import('@modelcontextprotocol/sdk/client/streamableHttp.js').StreamableHTTPError;
  SSEClientTransport: typeof import('@modelcontextprotocol/sdk/client/sse.js').SSEClientTransport;
  SseError: typeof import('@modelcontextprotocol/sdk/client/sse.js').SseError;
  McpError: typeof import('@modelcontextprotocol/sdk/types.js').McpError;
}

async function loadSdk(): Promise<Sdk> {
  try {
    const [client, stdio, http, sse, types] = await Promise.all([
      import('@modelcontextprotocol/sdk/client/index.js'),
      import('@modelcontextprotocol/sdk/client/stdio.js'),
      import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
      import('@modelcontextprotocol/sdk/client/sse.js'),
      import('@modelcontextprotocol/sdk/types.js'),
    ]);
    return {
      Client: client.Client,
      StdioClientTransport: stdio.StdioClientTransport,
      StreamableHTTPClientTransport: http.StreamableHTTPClientTransport,
      StreamableHTTPError: http.StreamableHTTPError,
      SSEClientTransport: sse.SSEClientTransport,
      SseError: sse.SseError,
      McpError: types.McpError,
    };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new ScanError('scan needs the MCP TypeScript SDK, which this installation lacks: npm install @modelcontextprotocol/sdk');
  }
}

interface Listing {
  server: ServerFacts;
  tools: Tool[];
}

/** One attempt's state, for the messages a failure or the deadline produces. */
interface Attempt {
  phase: string;
  stderr: string;
  close(): Promise<void>;
  /** Ends the server now (the deadline passed); the close that follows is then quick. */
  abort(): void;
}

/** Connects, lists every page of tools, disconnects: all within the deadline. */
async function listServer(sdk: Sdk, o: Options): Promise<Listing> {
  const deadline = Date.now() + o.timeoutMs;
  const t = o.target;
  if (t.kind === 'stdio') return withDeadline(o, deadline, (a) => listStdio(sdk, t, deadline, a));
  if (t.transport !== 'auto') return withDeadline(o, deadline, (a) => listHttp(sdk, t, t.transport as 'streamable-http' | 'sse', deadline, a));
  try {
    return await withDeadline(o, deadline, (a) => listHttp(sdk, t, 'streamable-http', deadline, a));
  } catch (err) {
    // MCP spec, backwards compatibility: a server that refuses the initialize POST with a 4xx
    // (404, 405, 400) may be an old HTTP+SSE server; GET the same URL for its event stream.
    // 401 and 403 are answers about credentials, which SSE would get too.
    const status = err instanceof HttpFailure ? err.status : undefined;
    if (status === undefined || status < 400 || status >= 500 || [401, 403, 408, 429].includes(status)) throw err;
    try {
      return await withDeadline(o, deadline, (a) => listHttp(sdk, t, 'sse', deadline, a));
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
  const attempt: Attempt = { phase: 'connecting', stderr: '', close: async () => {}, abort: () => {} };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutSignal()), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([run(attempt), timedOut]);
  } catch (err) {
    if (err instanceof TimeoutSignal) {
      attempt.abort();
      throw new ScanError(`no answer from the server within ${o.timeoutText} while ${attempt.phase}; a slow server may need a longer --timeout${tail(attempt.stderr)}`);
    }
    if (err instanceof ScanError) throw err;
    throw new ScanError(`${attempt.phase} failed: ${(err as Error).message}${tail(attempt.stderr)}`);
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

function newClient(sdk: Sdk): Client {
  return new sdk.Client({ name: 'policylayer-scan', version: VERSION }, { capabilities: {} });
}

async function listStdio(sdk: Sdk, t: Extract<Target, { kind: 'stdio' }>, deadline: number, a: Attempt): Promise<Listing> {
  const [command, ...args] = t.argv as [string, ...string[]];
  // The server inherits this process's environment, as a gateway-run server does (config `env`
  // adds to it); the SDK's default would pass only HOME, PATH and a few others.
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  Object.assign(env, t.env);
  const transport = new sdk.StdioClientTransport({ command, args, env, ...(t.cwd !== undefined ? { cwd: t.cwd } : {}), stderr: 'pipe' });
  transport.stderr?.on('data', (chunk: Buffer) => {
    a.stderr = (a.stderr + chunk.toString('utf8')).slice(-STDERR_KEEP);
  });
  let exited = false;
  const client = newClient(sdk);
  a.close = () => client.close();
  // The deadline passed: SIGTERM now and SIGKILL a second later, rather than the SDK's close
  // (stdin closed, then 2 s for each signal), which a hung server would make us wait out.
  a.abort = () => {
    const pid = transport.pid;
    if (pid === null) return;
    const signal = (s: NodeJS.Signals) => {
      try {
        process.kill(pid, s);
      } catch {
        // gone already
      }
    };
    signal('SIGTERM');
    // Not unref'd: this process must not exit and leave a server that ignores SIGTERM behind.
    kill = setTimeout(() => signal('SIGKILL'), 1_000);
  };
  let kill: NodeJS.Timeout | undefined;
  // The SDK's Protocol keeps a handler set before connect, so an exit is noticed in any phase;
  // the requests in flight then fail with ConnectionClosed.
  transport.onclose = () => {
    exited = true;
    clearTimeout(kill);
  };
  a.phase = `starting ${shellQuote(command)}`;
  try {
    const connecting = client.connect(transport, { timeout: remaining(deadline) });
    a.phase = 'waiting for the answer to initialize';
    await connecting;
    const tools = await listAllTools(client, deadline, a);
    return { server: serverFacts(client, 'stdio'), tools };
  } catch (err) {
    if (err instanceof ScanError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.syscall === 'spawn' || (typeof e.syscall === 'string' && e.syscall.startsWith('spawn'))) {
      const where = t.cwd !== undefined ? ` (in ${t.cwd})` : '';
      if (e.code === 'ENOENT' && t.cwd !== undefined && !isDirectory(t.cwd)) throw new ScanError(`cannot start ${shellQuote(command)}: the --cwd directory ${t.cwd} does not exist`);
      if (e.code === 'ENOENT') throw new ScanError(`cannot start ${shellQuote(command)}: command not found${where}; is it installed and on PATH?`);
      if (e.code === 'EACCES') throw new ScanError(`cannot start ${shellQuote(command)}: permission denied${where}; is it an executable file?`);
      throw new ScanError(`cannot start ${shellQuote(command)}: ${e.message}`);
    }
    if (exited || isConnectionClosed(sdk, err)) {
      // The last of stderr may still be on its way through the pipe.
      await new Promise((r) => setTimeout(r, 50));
      throw new ScanError(`the server exited while ${a.phase}${tail(a.stderr) || ' (it wrote nothing to stderr)'}`);
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

function isConnectionClosed(sdk: Sdk, err: unknown): boolean {
  return err instanceof sdk.McpError && err.code === -32000;
}

function remaining(deadline: number): number {
  // A little past the deadline, so that the deadline's own message (which says what was
  // happening) wins over the SDK's generic request timeout.
  return Math.max(1, deadline - Date.now()) + 1_000;
}

async function listHttp(sdk: Sdk, t: Extract<Target, { kind: 'http' }>, mode: 'streamable-http' | 'sse', deadline: number, a: Attempt): Promise<Listing> {
  const requestInit = { headers: t.headers };
  const client = newClient(sdk);
  const transport =
    mode === 'sse'
      ? new sdk.SSEClientTransport(t.url, { requestInit })
      : new sdk.StreamableHTTPClientTransport(t.url, { requestInit, reconnectionOptions: { maxRetries: 0, initialReconnectionDelay: 1_000, maxReconnectionDelay: 1_000, reconnectionDelayGrowFactor: 1 } });
  a.close = async () => {
    if (transport instanceof sdk.StreamableHTTPClientTransport && transport.sessionId !== undefined) {
      // Polite: end the session on the server; never let that delay the answer.
      await Promise.race([transport.terminateSession().catch(() => {}), new Promise((r) => setTimeout(r, 1_000).unref())]);
    }
    await client.close();
  };
  a.abort = () => void transport.close().catch(() => {});
  a.phase = mode === 'sse' ? `opening the legacy SSE stream at ${t.url.origin}` : `initializing over Streamable HTTP at ${t.url.origin}`;
  try {
    await client.connect(transport, { timeout: remaining(deadline) });
    const tools = await listAllTools(client, deadline, a);
    return { server: serverFacts(client, mode), tools };
  } catch (err) {
    throw httpFailure(sdk, err, t.url, mode, a);
  }
}

function httpFailure(sdk: Sdk, err: unknown, url: URL, mode: 'streamable-http' | 'sse', a: Attempt): Error {
  if (err instanceof ScanError || err instanceof TimeoutSignal) return err;
  const status = err instanceof sdk.StreamableHTTPError || err instanceof sdk.SseError ? err.code : undefined;
  const at = shownUrl(url);
  if (typeof status === 'number' && status >= 400) {
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
        // The SDK's message carries the response body; an HTML error page says nothing useful.
        const detail = firstLine((err as Error).message.replace(/^(Streamable HTTP|SSE) error: (Error POSTing to endpoint: )?/, ''));
        const said = detail === '' || detail.startsWith('<') ? '' : `: ${detail}`;
        return new HttpFailure(status, `${at}: HTTP ${status} ${STATUS_CODES[status] ?? ''} while ${a.phase}${said}`.replace(/ {2,}/g, ' '));
      }
    }
  }
  const cause = (err as { cause?: { code?: string } }).cause;
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
    UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its TLS certificate cannot be verified',
  };
  if (code !== undefined && reach[code] !== undefined) return new ScanError(`cannot reach ${url.origin}: ${reach[code]}`);
  const causeMessage = (err as { cause?: { message?: string } }).cause?.message;
  if (causeMessage) return new ScanError(`cannot reach ${url.origin}: ${firstLine((err as Error).message)}: ${firstLine(causeMessage)}`);
  if (err instanceof sdk.SseError && status === undefined) return new ScanError(`${at}: the legacy SSE stream failed while ${a.phase}: ${firstLine(err.message)}`);
  return new ScanError(`${at}: ${a.phase} failed: ${firstLine((err as Error).message)}`);
}

function firstLine(s: string): string {
  const line = s.split('\n')[0] ?? '';
  return line.length > 300 ? line.slice(0, 299) + '…' : line;
}

/** tools/list, following nextCursor to the last page. */
async function listAllTools(client: Client, deadline: number, a: Attempt): Promise<Tool[]> {
  const caps = client.getServerCapabilities() ?? {};
  if (!caps.tools) {
    const offered = Object.keys(caps).filter((k) => k !== 'experimental');
    throw new ScanError(`the server does not offer tools (it declares ${offered.length > 0 ? offered.join(', ') : 'no capabilities'}): there is nothing to classify`);
  }
  const tools: Tool[] = [];
  const cursors = new Set<string>();
  let cursor: string | undefined;
  for (let page = 1; ; page++) {
    a.phase = page === 1 ? 'listing tools' : `listing tools (page ${page})`;
    const r = await client.listTools(cursor === undefined ? {} : { cursor }, { timeout: remaining(deadline) });
    tools.push(...r.tools);
    cursor = r.nextCursor;
    if (cursor === undefined) break;
    if (cursors.has(cursor)) throw new ScanError(`the server handed out the tools/list cursor ${JSON.stringify(cursor).slice(0, 80)} twice (page ${page}): its pagination loops`);
    if (page >= MAX_PAGES) throw new ScanError(`the server's tools/list goes on past ${MAX_PAGES} pages; stopping`);
    cursors.add(cursor);
  }
  return tools;
}

function serverFacts(client: Client, transport: Transport): ServerFacts {
  const info = client.getServerVersion();
  const instructions = client.getInstructions();
  return {
    name: info?.name ?? '(unnamed)',
    ...(info?.title ? { title: info.title } : {}),
    ...(info?.version ? { version: info.version } : {}),
    ...(info?.description ? { description: info.description } : {}),
    ...(instructions ? { instructions } : {}),
    transport,
  };
}

// ---------------------------------------------------------------------------------------------
// The scan

interface Row {
  definition: Tool;
  classification: Classification;
  recommendation: Recommendation;
}

async function scan(o: Options, io: ScanIo): Promise<number> {
  const sdk = await loadSdk();
  const listing = await listServer(sdk, o);
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
    io.stdout.write(JSON.stringify(jsonReport(o, server, rows, policy.document, written, notes), null, 2) + '\n');
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

function jsonReport(o: Options, server: ServerFacts, rows: readonly Row[], policy: PolicyDocument, written: string | undefined, notes: string[]) {
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
    notes,
  };
}
