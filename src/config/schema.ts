// gateway.yaml's schema. Unlike the policy schema it normalises as it validates (durations to
// milliseconds, host:port to parts), because nothing generates JSON Schema from it yet.
import * as z from 'zod';
import { strictObject } from '../policy/diagnostics.js';
import { DEFAULT_OIDC_ALGORITHMS, OIDC_ALGORITHMS } from '../identity/jwt.js';
import type { OidcAlgorithm } from '../identity/jwt.js';
import { ADMIN_ROLES } from '../store/store.js';
import type { AdminRole } from '../store/store.js';
import { parseDuration } from '../util/duration.js';

export const DEFAULT_LISTEN = '127.0.0.1:4100';
export const DEFAULT_STORE = 'sqlite:./data/policylayer.db';
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
/** The audit log of a gateway that names no sinks: a SQLite file beside its config. */
export const DEFAULT_AUDIT_SINK = 'sqlite:./data/audit.db';
/** Where an audit sink that is down spills its records until it returns. */
export const DEFAULT_AUDIT_SPILL_DIR = './data/audit-spill';
/** The audit signing key's file name when `audit.signing_key` names none: it goes in the folder that holds spill_dir. */
export const DEFAULT_AUDIT_SIGNING_KEY = 'audit-signing.key';
// Bare host names: the origin check allows any port on them, which local clients need because
// they pick ports freely, while a page on any other site is still refused.
export const DEFAULT_ALLOWED_HOSTS: readonly string[] = ['localhost', '127.0.0.1', '[::1]'];
export const DEFAULT_ALLOWED_ORIGINS: readonly string[] = ['localhost', '127.0.0.1', '[::1]'];

export const SERVER_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_-]*$/;
// RFC 9110 section 5.6.2 `token`.
const HEADER_NAME_PATTERN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HOST_NAME_PATTERN = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)$/;

export interface HostPort {
  host: string;
  port: number;
}

/** `host:port`, `[v6]:port`, or a bare port (on 127.0.0.1); brackets are removed from the host. */
export function parseHostPort(v: string | number): HostPort | undefined {
  const text = typeof v === 'number' ? String(v) : v.trim();
  let host = '127.0.0.1';
  let portText = text;
  const v6 = /^\[([0-9A-Fa-f:.]+)\]:(\d+)$/.exec(text);
  if (v6 !== null) {
    host = v6[1] as string;
    portText = v6[2] as string;
  } else if (text.includes(':')) {
    const at = text.lastIndexOf(':');
    host = text.slice(0, at);
    portText = text.slice(at + 1);
    if (!/^[^\s:/[\]@]+$/.test(host)) return undefined;
  }
  if (!/^\d{1,5}$/.test(portText)) return undefined;
  const port = Number(portText);
  return port <= 65535 ? { host, port } : undefined;
}

const HOST_PORT_MSG = 'expected host:port, e.g. "127.0.0.1:4100" (port 0 picks a free port)';
const hostPort = z.union([z.string({ error: HOST_PORT_MSG }), z.number({ error: HOST_PORT_MSG })], { error: HOST_PORT_MSG }).transform(
  (v, ctx) => {
    const hp = parseHostPort(v);
    if (hp === undefined) {
      ctx.issues.push({ code: 'custom', message: HOST_PORT_MSG, input: v });
      return z.NEVER;
    }
    return hp;
  },
);

const DURATION_MSG = 'expected a duration like "30s", "5m", "1h" or a number of seconds';
const duration = z.union([z.string({ error: DURATION_MSG }), z.number({ error: DURATION_MSG })], { error: DURATION_MSG }).transform(
  (v, ctx) => {
    try {
      return parseDuration(v);
    } catch {
      ctx.issues.push({ code: 'custom', message: DURATION_MSG, input: v });
      return z.NEVER;
    }
  },
);

const scalarString = (msg: string) =>
  z.union([z.string({ error: msg }), z.number({ error: msg }), z.boolean({ error: msg })], { error: msg }).transform(String);

const COMMAND_MSG = 'expected a non-empty array of strings';
const command = z
  .union([z.string({ error: COMMAND_MSG }), z.array(z.string({ error: COMMAND_MSG }).min(1, { error: COMMAND_MSG }), { error: COMMAND_MSG })], {
    error: COMMAND_MSG,
  })
  .transform((v, ctx) => {
    // A string is split on whitespace, without shell quoting: anything needing quotes belongs in an array.
    const parts = typeof v === 'string' ? v.split(/\s+/).filter((s) => s !== '') : v;
    if (parts.length === 0) {
      ctx.issues.push({ code: 'custom', message: COMMAND_MSG, input: v });
      return z.NEVER;
    }
    return parts;
  });

const URL_MSG = 'expected an http:// or https:// URL';
const httpUrl = z.string({ error: URL_MSG }).refine(
  (s) => {
    try {
      const u = new URL(s);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  },
  { error: URL_MSG },
);

const TOKEN_URL_MSG = 'expected an https:// URL (http:// only on a loopback host), without credentials or fragment';
// The client secret travels in this request, so only TLS or this machine may carry it.
const tokenUrl = z.string({ error: TOKEN_URL_MSG }).refine(
  (s) => {
    try {
      const u = new URL(s);
      if (u.username !== '' || u.password !== '' || u.hash !== '') return false;
      return u.protocol === 'https:' || (u.protocol === 'http:' && isLoopbackHost(u.hostname));
    } catch {
      return false;
    }
  },
  { error: TOKEN_URL_MSG },
);

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || /^127(?:\.\d{1,3}){3}$/.test(host);
}

// A YAML number or boolean is still a valid id or secret (an all-digit secret parses as a number).
const nonEmptyScalar = (msg: string) => scalarString(msg).refine((s) => s !== '', { error: msg });

// OAuth 2.0 client credentials grant (RFC 6749 section 4.4).
const OAuthSchema = strictObject(
  {
    token_url: tokenUrl,
    client_id: nonEmptyScalar('expected a non-empty client id'),
    client_secret: nonEmptyScalar('expected a non-empty client secret'),
    scope: scalarString('expected a string of space-separated scopes').optional(),
    audience: scalarString('expected a string value').optional(),
    auth_method: z.enum(['client_secret_basic', 'client_secret_post'], { error: 'expected client_secret_basic|client_secret_post' }).optional(),
  },
  'an object with token_url, client_id and client_secret',
);

const ServerSchema = strictObject(
  {
    command: command.optional(),
    args: z.array(z.string({ error: 'expected an array of strings' }), { error: 'expected an array of strings' }).optional(),
    env: z
      .record(
        z.string().regex(/^[^=\0]+$/, { error: 'expected an environment variable name' }),
        scalarString('expected a string value'),
        { error: 'expected a map of environment variables to strings' },
      )
      .optional(),
    cwd: z.string({ error: 'expected a directory path' }).min(1, { error: 'expected a directory path' }).optional(),
    isolation: z.enum(['shared', 'session'], { error: 'expected shared|session' }).optional(),
    url: httpUrl.optional(),
    transport: z.enum(['streamable-http', 'sse'], { error: 'expected streamable-http|sse' }).optional(),
    headers: z
      .record(
        z.string().regex(HEADER_NAME_PATTERN, { error: 'expected an HTTP header name' }),
        scalarString('expected a string value'),
        { error: 'expected a map of HTTP header names to values' },
      )
      .optional(),
    oauth: OAuthSchema.optional(),
    // Validated by the policy loader, so its errors carry the policy's own locations.
    policy: z.union([z.string().min(1), z.record(z.string(), z.unknown())], {
      error: 'expected a policy file path or an inline policy object',
    }),
    timeout: duration.optional(),
  },
  'a server object with command (a local stdio server) or url (a remote server)',
).superRefine((s, ctx) => {
  if (s.command === undefined && s.url === undefined) {
    ctx.addIssue({ code: 'custom', message: 'expected command (a local stdio server) or url (a remote server)', path: [] });
  }
  if (s.command !== undefined && s.url !== undefined) {
    ctx.addIssue({ code: 'custom', message: 'use command or url, not both', path: ['url'] });
  }
  if (s.command !== undefined) {
    for (const key of ['transport', 'headers', 'oauth'] as const) {
      if (s[key] !== undefined) ctx.addIssue({ code: 'custom', message: 'applies only to url servers', path: [key] });
    }
  }
  if (s.oauth !== undefined) {
    // Two sources for one header: whichever won, the other credential would be silently ignored.
    for (const key of Object.keys(s.headers ?? {})) {
      if (key.toLowerCase() === 'authorization') {
        ctx.addIssue({ code: 'custom', message: 'oauth sets the Authorization header: remove this header or the oauth block', path: ['headers', key] });
      }
    }
  }
  if (s.url !== undefined) {
    for (const key of ['args', 'env', 'cwd', 'isolation'] as const) {
      if (s[key] !== undefined) ctx.addIssue({ code: 'custom', message: 'applies only to command servers', path: [key] });
    }
  }
});

const STORE_MSG = 'expected sqlite:<path> or postgres://…';
const COUNTERS_MSG = 'expected memory or redis://host:port';
const AUDIT_SINK_MSG = 'expected sqlite:<path>, postgres://…, jsonl:<path> or stdout';
/** One audit sink: its kind, then where (a relative path is relative to the config's folder). */
export const AUDIT_SINK_PATTERN = /^(?:sqlite:.+|jsonl:.+|stdout|postgres(?:ql)?:\/\/.+)$/;
const positiveInt = z
  .number({ error: 'expected a positive integer' })
  .int({ error: 'expected a positive integer' })
  .positive({ error: 'expected a positive integer' });
const countersUrl = z.string({ error: COUNTERS_MSG }).regex(/^(?:memory|rediss?:\/\/.+)$/, { error: COUNTERS_MSG });
const ORIGIN_MSG = 'expected an origin like "https://app.example.com" or a host name (any scheme and port)';


// Browsers send an origin without path and without a default port, so entries are normalised to
// that form and a bare host name is kept as is (it allows every scheme and port of that host).
const origin = z.string({ error: ORIGIN_MSG }).transform((s, ctx) => {
  const text = s.trim().toLowerCase();
  if (HOST_NAME_PATTERN.test(text)) return text;
  try {
    const u = new URL(text);
    if ((u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === '' && u.pathname === '/' && u.search === '' && u.hash === '') {
      return u.origin;
    }
  } catch {
    // fall through to the issue below
  }
  ctx.issues.push({ code: 'custom', message: ORIGIN_MSG, input: s });
  return z.NEVER;
});

const ALGORITHM_MSG = `expected an asymmetric JWS algorithm: ${OIDC_ALGORITHMS.join(', ')}`;
const oidcAlgorithm = z.string({ error: ALGORITHM_MSG }).transform((s, ctx) => {
  if ((OIDC_ALGORITHMS as readonly string[]).includes(s)) return s as OidcAlgorithm;
  let message = ALGORITHM_MSG;
  if (s.toLowerCase() === 'none') message = `none means an unsigned token and is never accepted; ${ALGORITHM_MSG}`;
  // With HS* the issuer's public key would be the HMAC secret: anyone holding it could sign.
  else if (/^HS\d+$/i.test(s)) message = `HS* algorithms use a shared secret, never accepted with a public key; ${ALGORITHM_MSG}`;
  ctx.issues.push({ code: 'custom', message, input: s });
  return z.NEVER;
});
// Plain http would let anyone on the path swap the keys that decide who gets in.
const JWKS_URL_MSG = 'expected an https:// URL (http:// only on a loopback address)';
const jwksUrl = z.string({ error: JWKS_URL_MSG }).refine(
  (s) => {
    try {
      const u = new URL(s);
      return u.protocol === 'https:' || (u.protocol === 'http:' && /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])$/.test(u.hostname));
    } catch {
      return false;
    }
  },
  { error: JWKS_URL_MSG },
);
const nonEmpty = (msg: string) => z.string({ error: msg }).min(1, { error: msg });
// The grant label rule of `policylayer grants create`.
const GRANT_LABEL_MSG = 'expected a grant label: letters, digits, ., _ and -, starting with a letter or digit';
const MAX_CLOCK_TOLERANCE_MS = 5 * 60_000;

const OidcSchema = strictObject(
  {
    issuer: nonEmpty('expected the issuer identifier, exactly as in its tokens\' iss (e.g. "https://id.example.com/")'),
    audience: nonEmpty("expected the gateway's own identifier, as the issuer puts it in aud"),
    jwks_url: jwksUrl.optional(),
    public_key_file: nonEmpty('expected a file path').optional(),
    algorithms: z
      .array(oidcAlgorithm, { error: 'expected an array of algorithms' })
      .min(1, { error: 'expected at least one algorithm' })
      .transform((a) => [...new Set(a)])
      .prefault([...DEFAULT_OIDC_ALGORITHMS]),
    clock_tolerance: duration
      .refine((ms) => ms <= MAX_CLOCK_TOLERANCE_MS, { error: 'expected at most 5m: more would keep expired tokens working' })
      .prefault('30s'),
    grant_claim: nonEmpty('expected a claim name').prefault('sub'),
    groups_claim: nonEmpty('expected a claim name').prefault('groups'),
    grants_by_group: z
      .record(nonEmpty('expected a group name'), z.string({ error: GRANT_LABEL_MSG }).regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, { error: GRANT_LABEL_MSG }), {
        error: 'expected a map of group names to grant labels',
      })
      .prefault({}),
    roles_by_group: z
      .record(nonEmpty('expected a group name'), z.enum(ADMIN_ROLES as readonly [AdminRole, ...AdminRole[]], { error: `expected ${ADMIN_ROLES.join('|')}` }), {
        error: 'expected a map of group names to roles',
      })
      .prefault({}),
  },
  'an object with issuer, audience and jwks_url or public_key_file',
).superRefine((o, ctx) => {
  if (o.jwks_url === undefined && o.public_key_file === undefined) {
    ctx.addIssue({ code: 'custom', message: "expected jwks_url or public_key_file: where the issuer's public keys are", path: [] });
  }
  if (o.jwks_url !== undefined && o.public_key_file !== undefined) {
    ctx.addIssue({ code: 'custom', message: 'use jwks_url or public_key_file, not both', path: ['public_key_file'] });
  }
});

/** `audit:` in gateway.yaml; `policylayer run --audit` builds one too. */
export const AuditSchema = strictObject(
  {
    sinks: z
      .array(z.string({ error: AUDIT_SINK_MSG }).regex(AUDIT_SINK_PATTERN, { error: AUDIT_SINK_MSG }), {
        error: 'expected an array of sinks, e.g. ["sqlite:./data/audit.db"] ([] turns the audit log off)',
      })
      .refine((a) => new Set(a).size === a.length, { error: 'a sink is listed twice' })
      .prefault([DEFAULT_AUDIT_SINK]),
    arguments: z.enum(['keys', 'redacted', 'full'], { error: 'expected keys|redacted|full' }).prefault('keys'),
    durability: z.enum(['async', 'strict'], { error: 'expected async|strict' }).prefault('async'),
    retention: duration.refine((ms) => ms > 0, { error: 'expected a duration above zero, e.g. "30d"' }).optional(),
    flush_interval: duration.prefault('20ms'),
    batch_size: positiveInt.max(10_000, { error: 'expected at most 10000' }).prefault(500),
    max_queue: positiveInt.prefault(100_000),
    on_full: z.enum(['block', 'drop'], { error: 'expected block|drop' }).prefault('block'),
    spill_dir: z.string({ error: 'expected a folder path' }).min(1, { error: 'expected a folder path' }).prefault(DEFAULT_AUDIT_SPILL_DIR),
    // Optional, not defaulted here: a key the operator named must exist, while the default one
    // (beside spill_dir, see toAuditConfig) is created when retention first needs it.
    signing_key: z
      .string({ error: 'expected the path of an Ed25519 private key file (PKCS#8 PEM)' })
      .min(1, { error: 'expected the path of an Ed25519 private key file (PKCS#8 PEM)' })
      .optional(),
  },
  'an object with sinks, arguments, durability, retention, flush_interval, batch_size, max_queue, on_full, spill_dir or signing_key',
);

const PUBLIC_URL_MSG = 'expected the http:// or https:// base URL this gateway is reached at from outside, e.g. "https://gateway.example.com", without query or fragment';
const publicUrl = z
  .string({ error: PUBLIC_URL_MSG })
  .refine(
    (s) => {
      try {
        const u = new URL(s);
        return (u.protocol === 'http:' || u.protocol === 'https:') && u.search === '' && u.hash === '' && u.username === '' && u.password === '';
      } catch {
        return false;
      }
    },
    { error: PUBLIC_URL_MSG },
  )
  .transform((s) => s.replace(/\/+$/, ''));

/** How logs and link approvers name a webhook (`link:<name>`): the grant-label alphabet. */
export const WEBHOOK_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// Whoever knows the secret can sign a body the receiver trusts: long enough not to be guessed.
const MIN_WEBHOOK_SECRET = 16;
const WebhookSchema = strictObject(
  {
    url: httpUrl,
    secret: scalarString('expected a string secret').refine((v) => v.length >= MIN_WEBHOOK_SECRET, {
      error: `expected a secret of at least ${MIN_WEBHOOK_SECRET} characters (e.g. \${APPROVAL_WEBHOOK_SECRET}; openssl rand -hex 32 makes one)`,
    }),
    name: z
      .string({ error: 'expected a name of letters, digits, ".", "_" and "-"' })
      .regex(WEBHOOK_NAME_PATTERN, { error: 'expected a name of letters, digits, ".", "_" and "-", starting with a letter or digit, at most 64' })
      .optional(),
    headers: z
      .record(
        z.string().regex(HEADER_NAME_PATTERN, { error: 'expected an HTTP header name' }),
        scalarString('expected a string value'),
        { error: 'expected a map of HTTP header names to values' },
      )
      .optional(),
  },
  'an object with url and secret (and name, headers)',
);

/** `approvals:`: how held calls are watched, and how people are asked (webhooks, links). */
const ApprovalsSchema = strictObject(
  {
    poll_interval: duration.refine((ms) => ms > 0, { error: 'expected a duration above zero, e.g. "5s"' }).prefault('5s'),
    progress_interval: duration.refine((ms) => ms > 0, { error: 'expected a duration above zero, e.g. "10s"' }).prefault('10s'),
    webhooks: z.array(WebhookSchema, { error: 'expected an array of webhooks, each { url, secret }' }).prefault([]),
    public_url: publicUrl.optional(),
    link_secret: scalarString('expected a string secret')
      .refine((v) => v.length >= 32, { error: 'expected a secret of at least 32 characters (e.g. ${APPROVAL_LINK_SECRET}; openssl rand -hex 32 makes one)' })
      .optional(),
    link_ttl: duration.refine((ms) => ms > 0, { error: 'expected a duration above zero, e.g. "10m"' }).optional(),
    arguments: z.enum(['keys', 'redacted'], { error: 'expected keys|redacted (webhooks never carry full arguments)' }).optional(),
  },
  'an object with poll_interval, progress_interval, webhooks, public_url, link_secret, link_ttl or arguments',
).superRefine((a, ctx) => {
  if (a.webhooks.length > 0 && a.public_url === undefined) {
    ctx.addIssue({
      code: 'custom',
      message:
        "public_url is required when webhooks are set: each webhook carries approve and deny links to <public_url>/approvals/…, so it must be the gateway's externally reachable base URL, e.g. https://gateway.example.com",
      path: ['webhooks'],
    });
  }
  const seen = new Set<string>();
  a.webhooks.forEach((w, i) => {
    let name = w.name;
    if (name === undefined) {
      try {
        name = new URL(w.url).host;
      } catch {
        return;
      }
    }
    if (seen.has(name)) {
      ctx.addIssue({ code: 'custom', message: `another webhook is named '${name}' (a name defaults to the URL's host): give each its own name`, path: ['webhooks', i] });
    }
    seen.add(name);
  });
});

/** How long the event loop polls after each message, µs: long enough for a hop and back on one machine. */
export const DEFAULT_BUSY_POLL_US = 300;
/** The longest window `busy_poll_us` takes: a tenth of a second. */
export const MAX_BUSY_POLL_US = 100_000;
const NOT_BUSY_POLL_US = 'expected a whole number of microseconds, 0 to turn polling off';

export const GatewayConfigSchema = strictObject(
  {
    listen: hostPort.prefault(DEFAULT_LISTEN),
    admin: hostPort.optional(),
    store: z
      .string({ error: STORE_MSG })
      .regex(/^(?:sqlite:.+|postgres(?:ql)?:\/\/.+)$/, { error: STORE_MSG })
      .prefault(DEFAULT_STORE),
    counters: z
      .union(
        [
          countersUrl.transform((url) => ({ url, on_store_error: 'deny' as const, refund_tool_errors: true })),
          strictObject(
            {
              url: countersUrl.prefault('memory'),
              on_store_error: z.enum(['deny', 'allow'], { error: 'expected deny|allow' }).prefault('deny'),
              refund_tool_errors: z.boolean({ error: 'expected true or false' }).prefault(true),
            },
            'an object with url, on_store_error or refund_tool_errors',
          ),
        ],
        { error: `${COUNTERS_MSG}, or an object with url, on_store_error and refund_tool_errors` },
      )
      .prefault('memory'),
    auth: strictObject(
      { required: z.boolean({ error: 'expected true or false' }).prefault(false), oidc: OidcSchema.optional() },
      'an object with required and oidc',
    )
      .superRefine((a, ctx) => {
        // Without required: true no token is checked at all, so an issuer here would only mislead.
        if (a.oidc !== undefined && !a.required) ctx.addIssue({ code: 'custom', message: 'applies only with required: true', path: ['oidc'] });
      })
      .prefault({}),
    limits: strictObject(
      {
        max_body_bytes: z
          .number({ error: 'expected a positive integer' })
          .int({ error: 'expected a positive integer' })
          .positive({ error: 'expected a positive integer' })
          .prefault(DEFAULT_MAX_BODY_BYTES),
      },
      'an object with max_body_bytes',
    ).prefault({}),
    audit: AuditSchema.prefault({}),
    allowed_hosts: z
      .array(
        z
          .string({ error: 'expected a host name without a port' })
          .regex(HOST_NAME_PATTERN, { error: 'expected a host name without a port (every port of it is allowed)' }),
        { error: 'expected an array of host names' },
      )
      .prefault([...DEFAULT_ALLOWED_HOSTS]),
    allowed_origins: z.array(origin, { error: 'expected an array of origins' }).prefault([...DEFAULT_ALLOWED_ORIGINS]),
    approvals: ApprovalsSchema.prefault({}),
    session_idle_timeout: duration.prefault('30m'),
    shutdown_grace: duration.prefault('10s'),
    // µs the event loop keeps polling after each message before it sleeps (src/util/busy-poll.ts); 0: never.
    busy_poll_us: z
      .number({ error: NOT_BUSY_POLL_US })
      .int({ error: NOT_BUSY_POLL_US })
      .min(0, { error: NOT_BUSY_POLL_US })
      .max(MAX_BUSY_POLL_US, { error: `expected at most ${MAX_BUSY_POLL_US} µs (0.1 s)` })
      .prefault(DEFAULT_BUSY_POLL_US),
    servers: z
      .record(
        z.string().regex(SERVER_NAME_PATTERN, {
          error: 'expected a server name of letters, digits, _ and -, starting with a letter or digit',
        }),
        ServerSchema,
        { error: 'expected a map of server names to servers' },
      )
      .refine((r) => Object.keys(r).length > 0, { error: 'expected at least one server' }),
  },
  'a gateway config object with servers',
);

export type GatewayConfigDocument = z.output<typeof GatewayConfigSchema>;
export type ServerDocument = z.output<typeof ServerSchema>;
