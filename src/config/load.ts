import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { ConfigError, ErrorCodes } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { formatProblems, readSource, zodProblems } from '../policy/diagnostics.js';
import type { PathSegment, Problem, SourceText } from '../policy/diagnostics.js';
import { checkPolicyValue, compileChecked, readText, tryReadText } from '../policy/load.js';
import type { CompiledPolicy } from '../policy/types.js';
import { GatewayConfigSchema } from './schema.js';
import type { ServerDocument } from './schema.js';

/** One upstream MCP server, normalised. */
export interface ServerConfig {
  name: string;
  kind: 'stdio' | 'http';
  /** stdio: program and arguments (`command` followed by `args`). */
  command?: string[];
  /** stdio: variables to add to the child's environment (the loader does not merge process.env). */
  env?: Record<string, string>;
  /** stdio: absolute working directory; undefined means the gateway's own. */
  cwd?: string;
  /** stdio: one process shared by all client sessions (default), or one process per session. */
  isolation?: 'shared' | 'session';
  url?: string;
  transport?: 'streamable-http' | 'sse';
  /** http: extra request headers. Their values are secrets: see GatewayConfig.secretValues. */
  headers?: Record<string, string>;
  policy: CompiledPolicy;
  timeoutMs: number;
}

/** The loaded gateway.yaml with every default applied. */
export interface GatewayConfig {
  source: string;
  listen: { host: string; port: number };
  admin?: { host: string; port: number };
  store: string;
  counters: CountersConfig;
  auth: { required: boolean };
  maxBodyBytes: number;
  /** Host names, lowercase, without port: a Host header naming one of them on any port passes. */
  allowedHosts: string[];
  /** Origins (`https://app.example.com`) or bare host names, which allow any scheme and port. */
  allowedOrigins: string[];
  sessionIdleTimeoutMs: number;
  shutdownGraceMs: number;
  servers: Map<string, ServerConfig>;
  /**
   * Values a logger must redact wherever they appear: header values, env values, credentials in
   * store/counters URLs and every environment variable substituted into those or into a url.
   * Longest first, so redacting in order never leaves part of a longer secret behind.
   */
  secretValues: readonly string[];
}

export interface CountersConfig {
  /** `memory`, or a `redis://` / `rediss://` URL. */
  url: string;
  /** What a call with limits gets while the store cannot answer. */
  onStoreError: 'deny' | 'allow';
  /** Whether a tool result with `isError: true` gives its limits back like a failed call. */
  refundToolErrors: boolean;
}

export type Env = Record<string, string | undefined>;

const TIMEOUT_DEFAULT_MS = 60_000;
// Redaction of error messages is a second line of defence (no message quotes a value); very
// short values would mostly match line numbers and words, not leaked secrets.
const MIN_REDACTED_LENGTH = 4;

/** Reads and validates gateway.yaml; relative paths in it resolve against its folder. */
export function loadGatewayConfig(path: string, env: Env = process.env): GatewayConfig {
  return parseGatewayConfig(readText(path), path, env, dirname(resolve(path)));
}

/**
 * Validates gateway config text (YAML or JSON), resolves `${VAR}` references from `env` and
 * loads every server's policy. Throws one ConfigError listing every problem found.
 */
export function parseGatewayConfig(text: string, source: string, env: Env = process.env, baseDir: string = process.cwd()): GatewayConfig {
  const read = readSource(text, source);
  if (read.errors.length > 0) throw new ConfigError([...read.errors]);

  const interpolated = interpolateAll(read.value, env);
  const secrets = interpolated.secrets;
  const failure = (issues: string[], code: ErrorCode = ErrorCodes.CONFIG_INVALID) => new ConfigError(redact(issues, secrets), code);
  // A missing variable would surface again as a confusing schema error (an empty URL), so
  // missing variables are reported alone.
  if (interpolated.missing.length > 0) {
    throw failure(formatProblems(source, read.text, [...interpolated.missing, ...interpolated.invalid]), ErrorCodes.CONFIG_ENV_MISSING);
  }

  const parsed = GatewayConfigSchema.safeParse(interpolated.value);
  if (!parsed.success || interpolated.invalid.length > 0) {
    const problems = parsed.success ? [] : zodProblems(parsed.error, interpolated.value);
    const issues = formatProblems(source, read.text, [...interpolated.invalid, ...problems]);
    // Policies are still checked so one run reports the problems of every file involved.
    for (const [name, policy] of rawPolicies(interpolated.value)) {
      const r = loadServerPolicy(name, policy, read.text, baseDir);
      if (!r.ok) issues.push(...r.issues);
    }
    throw failure(issues);
  }
  const doc = parsed.data;

  const issues: string[] = [];
  let unreadableOnly = true;
  const servers = new Map<string, ServerConfig>();
  for (const [name, server] of Object.entries(doc.servers)) {
    const policy = loadServerPolicy(name, server.policy, read.text, baseDir);
    if (!policy.ok) {
      issues.push(...policy.issues);
      unreadableOnly &&= policy.unreadable;
      continue;
    }
    servers.set(name, toServerConfig(name, server, policy.policy, baseDir));
  }
  if (issues.length > 0) throw failure(issues, unreadableOnly ? ErrorCodes.CONFIG_UNREADABLE : ErrorCodes.CONFIG_INVALID);

  for (const s of [doc.store, doc.counters.url]) addUrlCredentials(s, secrets);
  for (const server of servers.values()) {
    for (const v of Object.values(server.headers ?? {})) secrets.add(v);
    for (const v of Object.values(server.env ?? {})) secrets.add(v);
  }
  secrets.delete('');

  const config: GatewayConfig = {
    source,
    listen: doc.listen,
    // A SQLite file is relative to this config's folder, like every other path in it.
    store: doc.store.startsWith('sqlite:') && doc.store !== 'sqlite::memory:' ? `sqlite:${resolve(baseDir, doc.store.slice('sqlite:'.length))}` : doc.store,
    counters: {
      url: doc.counters.url,
      onStoreError: doc.counters.on_store_error,
      refundToolErrors: doc.counters.refund_tool_errors,
    },
    auth: { required: doc.auth.required },
    maxBodyBytes: doc.limits.max_body_bytes,
    allowedHosts: doc.allowed_hosts.map((h) => h.toLowerCase()),
    allowedOrigins: doc.allowed_origins,
    sessionIdleTimeoutMs: doc.session_idle_timeout,
    shutdownGraceMs: doc.shutdown_grace,
    servers,
    secretValues: Object.freeze([...secrets].sort((a, b) => b.length - a.length || (a < b ? -1 : 1))),
  };
  if (doc.admin !== undefined) config.admin = doc.admin;
  return config;
}

function toServerConfig(name: string, s: ServerDocument, policy: CompiledPolicy, baseDir: string): ServerConfig {
  const timeoutMs = s.timeout ?? TIMEOUT_DEFAULT_MS;
  if (s.command !== undefined) {
    const out: ServerConfig = { name, kind: 'stdio', command: [...s.command, ...(s.args ?? [])], policy, timeoutMs };
    if (s.env !== undefined) out.env = { ...s.env };
    if (s.cwd !== undefined) out.cwd = resolve(baseDir, s.cwd);
    if (s.isolation !== undefined) out.isolation = s.isolation;
    return out;
  }
  const out: ServerConfig = { name, kind: 'http', url: s.url as string, transport: s.transport ?? 'streamable-http', policy, timeoutMs };
  if (s.headers !== undefined) out.headers = { ...s.headers };
  return out;
}

function rawPolicies(value: unknown): [string, string | Record<string, unknown>][] {
  const servers = isRecord(value) ? value['servers'] : undefined;
  if (!isRecord(servers)) return [];
  const out: [string, string | Record<string, unknown>][] = [];
  for (const [name, server] of Object.entries(servers)) {
    const policy = isRecord(server) ? server['policy'] : undefined;
    if ((typeof policy === 'string' && policy !== '') || isRecord(policy)) out.push([name, policy]);
  }
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

type PolicyResult = { ok: true; policy: CompiledPolicy } | { ok: false; issues: string[]; unreadable: boolean };

function loadServerPolicy(name: string, policy: string | Record<string, unknown>, config: SourceText, baseDir: string): PolicyResult {
  const at: PathSegment[] = ['servers', name, 'policy'];
  if (typeof policy !== 'string') {
    const checked = checkPolicyValue(policy, config, at);
    return checked.ok ? { ok: true, policy: compileChecked(checked, '<inline>') } : { ok: false, issues: checked.issues, unreadable: false };
  }
  const file = resolve(baseDir, policy);
  const shown = displayPath(file);
  const r = tryReadText(file);
  if (!r.ok) {
    const message = `cannot read the policy file ${shown}: ${r.why}`;
    return { ok: false, issues: formatProblems(config.source, config, [{ path: at, message }]), unreadable: true };
  }
  const read = readSource(r.text, shown);
  if (read.errors.length > 0) return { ok: false, issues: [...read.errors], unreadable: false };
  const checked = checkPolicyValue(read.value, read.text);
  if (!checked.ok) return { ok: false, issues: checked.issues, unreadable: false };
  return { ok: true, policy: compileChecked(checked, file) };
}

// Paths under the working directory read best relative to it, as the operator would type them.
function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

interface Interpolated {
  value: unknown;
  missing: Problem[];
  invalid: Problem[];
  secrets: Set<string>;
}

/**
 * `${VAR}` and `${VAR:-default}` (default also when VAR is empty) in every string value, and
 * `$${` for a literal `${`. Inline policies are left alone, as policy files are never
 * interpolated. Variables substituted into headers, env and url are recorded as secrets.
 */
function interpolateAll(root: unknown, env: Env): Interpolated {
  const missing: Problem[] = [];
  const invalid: Problem[] = [];
  const secrets = new Set<string>();
  const walk = (v: unknown, path: PathSegment[]): unknown => {
    if (typeof v === 'string') {
      const secret = isSecretPath(path) || isUrlPath(path);
      const r = interpolate(v, env);
      for (const name of r.missing) missing.push({ path, message: `environment variable ${name} is not set` });
      for (const bad of r.invalid) invalid.push({ path, message: bad });
      if (secret) for (const s of r.substituted) secrets.add(s);
      if (isSecretPath(path)) secrets.add(r.value);
      return r.value;
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, [...path, i]));
    if (typeof v === 'object' && v !== null) {
      if (path.length === 3 && path[0] === 'servers' && path[2] === 'policy') return v;
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, [...path, k]);
      return out;
    }
    if (isSecretPath(path) && (typeof v === 'number' || typeof v === 'boolean')) secrets.add(String(v));
    return v;
  };
  return { value: walk(root, []), missing, invalid, secrets };
}

function isSecretPath(path: readonly PathSegment[]): boolean {
  return path.length === 4 && path[0] === 'servers' && (path[2] === 'headers' || path[2] === 'env');
}

function isUrlPath(path: readonly PathSegment[]): boolean {
  return path.length === 3 && path[0] === 'servers' && path[2] === 'url';
}

const REFERENCE = /\$\$\{|\$\{([^}]*)\}/g;
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Expands `${VAR}` / `${VAR:-default}` in one string; exported for tests and the CLI. */
export function interpolate(
  text: string,
  env: Env,
): { value: string; missing: string[]; invalid: string[]; substituted: string[] } {
  const missing: string[] = [];
  const invalid: string[] = [];
  const substituted: string[] = [];
  if (!text.includes('$')) return { value: text, missing, invalid, substituted };
  const value = text.replace(REFERENCE, (match, inner: string | undefined) => {
    if (inner === undefined) return '${';
    const sep = inner.indexOf(':-');
    const name = sep === -1 ? inner : inner.slice(0, sep);
    if (!VAR_NAME.test(name)) {
      // The reference is not echoed: it may sit inside a secret such as a header value.
      invalid.push('invalid ${…} reference; expected ${NAME} or ${NAME:-default}');
      return match;
    }
    const v = env[name];
    if (v !== undefined && (v !== '' || sep === -1)) {
      substituted.push(v);
      return v;
    }
    if (sep !== -1) return inner.slice(sep + 2);
    missing.push(name);
    return '';
  });
  return { value, missing, invalid, substituted };
}

function addUrlCredentials(s: string, secrets: Set<string>): void {
  try {
    const u = new URL(s);
    if (u.password !== '') {
      secrets.add(u.password);
      secrets.add(decodeURIComponent(u.password));
    }
  } catch {
    // sqlite:path and memory are not URLs with credentials
  }
}

function redact(lines: string[], secrets: ReadonlySet<string>): string[] {
  const list = [...secrets].filter((s) => s.length >= MIN_REDACTED_LENGTH).sort((a, b) => b.length - a.length);
  if (list.length === 0) return lines;
  return lines.map((line) => list.reduce((acc, s) => acc.split(s).join('[redacted]'), line));
}
