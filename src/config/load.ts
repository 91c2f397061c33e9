import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { ConfigError, ErrorCodes } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { formatProblems, readSource, zodProblems } from '../policy/diagnostics.js';
import type { PathSegment, Problem, SourceText } from '../policy/diagnostics.js';
import { checkPolicyValue, compileChecked, readText, tryReadText } from '../policy/load.js';
import type { CompiledPolicy } from '../policy/types.js';
import type * as z from 'zod';
import { DEFAULT_AUDIT_SIGNING_KEY, GatewayConfigSchema } from './schema.js';
import type { AuditSchema, GatewayConfigDocument, ServerDocument } from './schema.js';
import { parseIssuerKey } from '../identity/jwt.js';
import type { OidcConfig } from '../identity/jwt.js';

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
  /** http: OAuth client credentials; the gateway fetches an access token and sends it as a bearer. */
  oauth?: OAuthConfig;
  policy: CompiledPolicy;
  timeoutMs: number;
}

/** OAuth 2.0 client credentials (RFC 6749 section 4.4) for one remote server. */
export interface OAuthConfig {
  tokenUrl: string;
  clientId: string;
  /** A secret: see GatewayConfig.secretValues. */
  clientSecret: string;
  scope?: string;
  /** Sent as the `audience` form parameter, which several providers require. */
  audience?: string;
  authMethod: 'client_secret_basic' | 'client_secret_post';
}

/** The loaded gateway.yaml with every default applied. */
export interface GatewayConfig {
  source: string;
  listen: { host: string; port: number };
  admin?: { host: string; port: number };
  store: string;
  counters: CountersConfig;
  audit: AuditConfig;
  /** `oidc`: JWTs from this issuer are accepted besides grant tokens (only with `required`). */
  auth: { required: boolean; oidc?: OidcConfig };
  maxBodyBytes: number;
  /** Host names, lowercase, without port: a Host header naming one of them on any port passes. */
  allowedHosts: string[];
  /** Origins (`https://app.example.com`) or bare host names, which allow any scheme and port. */
  allowedOrigins: string[];
  sessionIdleTimeoutMs: number;
  shutdownGraceMs: number;
  /** `busy_poll_us`: how long the event loop polls after each message, µs (0: never). */
  busyPollUs: number;
  /**
   * Human approval: how often a replica reads back the approvals of the calls it holds and sweeps
   * expired ones (`poll_interval`), and how often a held call with a progressToken is sent a
   * progress notification (`progress_interval`).
   */
  approvals: ApprovalsConfig;
  servers: Map<string, ServerConfig>;
  /**
   * Values a logger must redact wherever they appear: header values, env values, credentials in
   * store/counters URLs and every environment variable substituted into those or into a url.
   * Longest first, so redacting in order never leaves part of a longer secret behind.
   */
  secretValues: readonly string[];
}

/** `approvals:` with its defaults applied. */
export interface ApprovalsConfig {
  pollIntervalMs: number;
  progressIntervalMs: number;
  /** Where approvals are POSTed; each has a name (`name`, else its URL's host), unique. Secrets: see secretValues. */
  webhooks: WebhookConfig[];
  /** The gateway's externally reachable base URL, without a trailing slash; set whenever webhooks are. */
  publicUrl?: string;
  /** The secret the approve/deny links' key derives from; undefined: a key kept in the control store. */
  linkSecret?: string;
  /** How long a link works after the request; undefined: until the approval expires. */
  linkTtlMs?: number;
  /** How much of the arguments webhooks and link pages show; undefined: audit.arguments, with full shown as redacted. */
  arguments?: 'keys' | 'redacted';
}

export interface WebhookConfig {
  name: string;
  url: string;
  secret: string;
  headers?: Record<string, string>;
}

/** `audit:` with defaults applied and paths made absolute. */
export interface AuditConfig {
  /** `sqlite:<absolute path>`, `jsonl:<absolute path>`, `stdout`, `postgres://…`; empty: no audit log. */
  sinks: string[];
  arguments: 'keys' | 'redacted' | 'full';
  durability: 'async' | 'strict';
  /** Records older than this are pruned (leaving a checkpoint); undefined keeps them forever. */
  retentionMs?: number;
  flushIntervalMs: number;
  batchSize: number;
  maxQueue: number;
  onFull: 'block' | 'drop';
  /** Absolute. */
  spillDir: string;
  /**
   * The audit signing key file (Ed25519, PKCS#8 PEM) that signs retention's checkpoints; absolute.
   * `audit.signing_key`, or `audit-signing.key` in the folder that holds spill_dir (the data
   * folder). The loader always sets it; a config built by hand without it has no key, and then
   * cannot have retention (the audit log refuses to start).
   */
  signingKey?: string;
  /** Whether `audit.signing_key` named the file: then it must exist; the default one is created when retention needs it. */
  signingKeyNamed?: boolean;
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

  const interpolated = interpolateAll(read.value, env, baseDir);
  const secrets = interpolated.secrets;
  const failure = (issues: string[], code: ErrorCode = ErrorCodes.CONFIG_INVALID) => new ConfigError(redact(issues, secrets), code);
  // A missing variable or secret file would surface again as a confusing schema error (an empty
  // URL), so they are reported alone.
  if (interpolated.missing.length > 0 || interpolated.unreadable.length > 0) {
    const problems = [...interpolated.missing, ...interpolated.unreadable, ...interpolated.invalid];
    throw failure(formatProblems(source, read.text, problems), interpolated.missing.length > 0 ? ErrorCodes.CONFIG_ENV_MISSING : ErrorCodes.CONFIG_UNREADABLE);
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
  const oidc = doc.auth.oidc === undefined ? undefined : toOidcConfig(doc.auth.oidc, read.text, baseDir);
  if (oidc !== undefined && !oidc.ok) {
    issues.push(...oidc.issues);
    unreadableOnly &&= oidc.unreadable;
  }
  if (issues.length > 0) throw failure(issues, unreadableOnly ? ErrorCodes.CONFIG_UNREADABLE : ErrorCodes.CONFIG_INVALID);

  for (const s of [doc.store, doc.counters.url, ...doc.audit.sinks]) addUrlCredentials(s, secrets);
  for (const server of servers.values()) {
    for (const v of Object.values(server.headers ?? {})) secrets.add(v);
    for (const v of Object.values(server.env ?? {})) secrets.add(v);
    if (server.oauth !== undefined) secrets.add(server.oauth.clientSecret);
  }
  for (const w of doc.approvals.webhooks) {
    // A webhook URL may be the credential itself (a Slack incoming webhook's path is).
    secrets.add(w.url);
    secrets.add(w.secret);
    for (const v of Object.values(w.headers ?? {})) secrets.add(v);
  }
  if (doc.approvals.link_secret !== undefined) secrets.add(doc.approvals.link_secret);
  secrets.delete('');

  const config: GatewayConfig = {
    source,
    listen: doc.listen,
    store: resolveFileSink(doc.store, baseDir),
    counters: {
      url: doc.counters.url,
      onStoreError: doc.counters.on_store_error,
      refundToolErrors: doc.counters.refund_tool_errors,
    },
    audit: toAuditConfig(doc.audit, baseDir),
    auth: { required: doc.auth.required },
    maxBodyBytes: doc.limits.max_body_bytes,
    allowedHosts: doc.allowed_hosts.map((h) => h.toLowerCase()),
    allowedOrigins: doc.allowed_origins,
    sessionIdleTimeoutMs: doc.session_idle_timeout,
    shutdownGraceMs: doc.shutdown_grace,
    busyPollUs: doc.busy_poll_us,
    approvals: toApprovalsConfig(doc.approvals),
    servers,
    secretValues: Object.freeze([...secrets].sort((a, b) => b.length - a.length || (a < b ? -1 : 1))),
  };
  if (doc.admin !== undefined) config.admin = doc.admin;
  if (oidc?.ok === true) config.auth.oidc = oidc.config;
  return config;
}

function toApprovalsConfig(a: GatewayConfigDocument['approvals']): ApprovalsConfig {
  const out: ApprovalsConfig = {
    pollIntervalMs: a.poll_interval,
    progressIntervalMs: a.progress_interval,
    webhooks: a.webhooks.map((w) => {
      const hook: WebhookConfig = { name: w.name ?? new URL(w.url).host, url: w.url, secret: w.secret };
      if (w.headers !== undefined) hook.headers = { ...w.headers };
      return hook;
    }),
  };
  if (a.public_url !== undefined) out.publicUrl = a.public_url;
  if (a.link_secret !== undefined) out.linkSecret = a.link_secret;
  if (a.link_ttl !== undefined) out.linkTtlMs = a.link_ttl;
  if (a.arguments !== undefined) out.arguments = a.arguments;
  return out;
}

/** `audit:` with its defaults applied and its paths made absolute against `baseDir`. */
export function toAuditConfig(doc: z.output<typeof AuditSchema>, baseDir: string): AuditConfig {
  const audit: AuditConfig = {
    sinks: doc.sinks.map((sink) => resolveFileSink(sink, baseDir)),
    arguments: doc.arguments,
    durability: doc.durability,
    flushIntervalMs: doc.flush_interval,
    batchSize: doc.batch_size,
    maxQueue: doc.max_queue,
    onFull: doc.on_full,
    spillDir: resolve(baseDir, doc.spill_dir),
    // The default sits where the audit log's other local state does: beside the spill folder.
    signingKey: doc.signing_key !== undefined ? resolve(baseDir, doc.signing_key) : join(dirname(resolve(baseDir, doc.spill_dir)), DEFAULT_AUDIT_SIGNING_KEY),
    signingKeyNamed: doc.signing_key !== undefined,
  };
  if (doc.retention !== undefined) audit.retentionMs = doc.retention;
  return audit;
}

/** `sqlite:` and `jsonl:` paths are relative to the config's folder, like every other path in it. */
function resolveFileSink(spec: string, baseDir: string): string {
  const m = /^(sqlite|jsonl):(.+)$/.exec(spec);
  if (m === null || spec === 'sqlite::memory:') return spec;
  return `${m[1]}:${resolve(baseDir, m[2] as string)}`;
}

/**
 * A server registered while the gateway runs (admin API, `policylayer servers add`), checked by
 * the very schema gateway.yaml's servers are, with its `${…}` references resolved from `env` now:
 * the stored definition keeps the references, never their values. The server runs with `policy`
 * (policies of stored servers are versioned apart from their definition). Throws ConfigError.
 */
export function loadServerDefinition(
  name: string,
  definition: Readonly<Record<string, unknown>>,
  policy: CompiledPolicy,
  env: Env = process.env,
  baseDir: string = process.cwd(),
): { server: ServerConfig; secrets: readonly string[] } {
  if ('policy' in definition) throw new ConfigError([`server '${name}': policy is stored as its own versions, not in the definition`]);
  // The smallest policy the schema accepts stands in for the real one, which is compiled apart.
  const doc = { servers: { [name]: { ...definition, policy: { version: '1', default: 'deny' } } } };
  const config = parseGatewayConfig(JSON.stringify(doc, null, 2), `server '${name}'`, env, baseDir);
  const server = config.servers.get(name)!;
  server.policy = policy;
  return { server, secrets: config.secretValues };
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
  if (s.oauth !== undefined) {
    const o = s.oauth;
    out.oauth = { tokenUrl: o.token_url, clientId: o.client_id, clientSecret: o.client_secret, authMethod: o.auth_method ?? 'client_secret_basic' };
    if (o.scope !== undefined) out.oauth.scope = o.scope;
    if (o.audience !== undefined) out.oauth.audience = o.audience;
  }
  return out;
}

type OidcDocument = NonNullable<GatewayConfigDocument['auth']['oidc']>;
type OidcResult = { ok: true; config: OidcConfig } | { ok: false; issues: string[]; unreadable: boolean };

// The key file is read now, not on the first request: a missing or wrong key fails the start
// with its path instead of refusing every agent later.
function toOidcConfig(o: OidcDocument, config: SourceText, baseDir: string): OidcResult {
  const base = {
    issuer: o.issuer,
    audience: o.audience,
    algorithms: o.algorithms,
    clockToleranceMs: o.clock_tolerance,
    grantClaim: o.grant_claim,
    groupsClaim: o.groups_claim,
    grantsByGroup: { ...o.grants_by_group },
    rolesByGroup: { ...o.roles_by_group },
  };
  if (o.public_key_file === undefined) return { ok: true, config: { ...base, jwksUrl: o.jwks_url as string } };
  const at: PathSegment[] = ['auth', 'oidc', 'public_key_file'];
  const file = resolve(baseDir, o.public_key_file);
  const problem = (message: string) => formatProblems(config.source, config, [{ path: at, message }]);
  const r = tryReadText(file);
  if (!r.ok) return { ok: false, issues: problem(`cannot read the key file ${displayPath(file)}: ${r.why}`), unreadable: true };
  const key = parseIssuerKey(r.text, file, o.algorithms);
  if (!key.ok) return { ok: false, issues: problem(`the key file ${displayPath(file)}: ${key.why}`), unreadable: false };
  return { ok: true, config: { ...base, publicKey: key.key } };
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
  unreadable: Problem[];
  secrets: Set<string>;
}

/**
 * `${VAR}` and `${VAR:-default}` (default also when VAR is empty) in every string value, and
 * `$${` for a literal `${`. Inline policies are left alone, as policy files are never
 * interpolated. `${file:PATH}` (relative to `baseDir`) is allowed where credentials live: a
 * server's url, headers, env and oauth, whose substituted values are all recorded as secrets.
 */
function interpolateAll(root: unknown, env: Env, baseDir: string): Interpolated {
  const missing: Problem[] = [];
  const invalid: Problem[] = [];
  const unreadable: Problem[] = [];
  const secrets = new Set<string>();
  const readSecretFile: SecretFileReader = (p) => {
    const file = resolve(baseDir, p);
    const r = tryReadText(file);
    return r.ok ? { text: r.text } : { error: `cannot read the secret file ${displayPath(file)}: ${r.why}` };
  };
  const walk = (v: unknown, path: PathSegment[]): unknown => {
    if (typeof v === 'string') {
      const secret = isCredentialPath(path);
      const r = interpolate(v, env, secret ? readSecretFile : undefined);
      for (const name of r.missing) missing.push({ path, message: `environment variable ${name} is not set` });
      for (const bad of r.invalid) invalid.push({ path, message: bad });
      for (const message of r.unreadable) unreadable.push({ path, message });
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
  return { value: walk(root, []), missing, invalid, unreadable, secrets };
}

/**
 * Values that are secrets whole: header and env values, the OAuth client secret; an approval
 * webhook's url, secret and header values, and the approval link secret.
 */
function isSecretPath(path: readonly PathSegment[]): boolean {
  if (path[0] === 'approvals') {
    if (path.length === 2) return path[1] === 'link_secret';
    if (path[1] !== 'webhooks') return false;
    return (path.length === 4 && (path[3] === 'url' || path[3] === 'secret')) || (path.length === 5 && path[3] === 'headers');
  }
  if (path.length !== 4 || path[0] !== 'servers') return false;
  return path[2] === 'headers' || path[2] === 'env' || (path[2] === 'oauth' && path[3] === 'client_secret');
}

/** Values whose substitutions are secrets, and where `${file:…}` may be used. */
function isCredentialPath(path: readonly PathSegment[]): boolean {
  return isSecretPath(path) || isUrlPath(path) || (path.length === 4 && path[0] === 'servers' && path[2] === 'oauth');
}

function isUrlPath(path: readonly PathSegment[]): boolean {
  return path.length === 3 && path[0] === 'servers' && path[2] === 'url';
}

const REFERENCE = /\$\$\{|\$\{([^}]*)\}/g;
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const FILE_PREFIX = 'file:';

/** Reads the file of a `${file:PATH}` reference; an error names the file, never its content. */
export type SecretFileReader = (path: string) => { text: string } | { error: string };

/**
 * Expands `${VAR}` / `${VAR:-default}` in one string, and `${file:PATH}` when `readFile` is given
 * (without it such a reference is invalid); exported for tests and the CLI.
 */
export function interpolate(
  text: string,
  env: Env,
  readFile?: SecretFileReader,
): { value: string; missing: string[]; invalid: string[]; unreadable: string[]; substituted: string[] } {
  const missing: string[] = [];
  const invalid: string[] = [];
  const unreadable: string[] = [];
  const substituted: string[] = [];
  if (!text.includes('$')) return { value: text, missing, invalid, unreadable, substituted };
  const value = text.replace(REFERENCE, (match, inner: string | undefined) => {
    if (inner === undefined) return '${';
    if (inner.startsWith(FILE_PREFIX)) {
      const path = inner.slice(FILE_PREFIX.length);
      if (path === '' || readFile === undefined) {
        invalid.push(path === '' ? 'invalid ${file:…} reference; expected ${file:PATH}' : "${file:…} references are allowed only in a server's url, headers, env and oauth, and in approvals' webhooks and link_secret");
        return match;
      }
      const r = readFile(path);
      if ('error' in r) {
        unreadable.push(r.error);
        return '';
      }
      // Editors end files with a newline that is no part of the secret; only one is removed, so
      // a value that really ends in a newline can still be written with two.
      const content = r.text.replace(/\r?\n$/, '');
      substituted.push(content);
      return content;
    }
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
  return { value, missing, invalid, unreadable, substituted };
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
