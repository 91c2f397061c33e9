/**
 * The admin HTTP API under /admin/api: JSON in, JSON out, every route listed in ROUTES (and in
 * docs/admin-api.md). It authenticates and authorises, turns requests into ControlPlane calls and
 * answers; the ControlPlane validates, writes and records the admin audit events.
 */
import type { KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AUDIT_DECISIONS, type AuditDecision } from '../audit/event.js';
import { Catalog } from '../catalog/catalog.js';
import { shippedCatalog } from '../catalog/shipped.js';
import type { AuditSinkStats } from '../audit/writer.js';
import type { AuditQuery, AuditStore } from '../audit/store.js';
import { ErrorCodes, PolicyLayerError, wireOf } from '../errors.js';
import type { AdminRole } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import { checkHostAndOrigin, type OriginPolicy } from '../transport/downstream/origin.js';
import { ADMIN_API_PREFIX as ADMIN_PREFIX, decodeSegment, header, readBody } from '../transport/downstream/http.js';
import { parseDuration } from '../util/duration.js';
import { roleAllows, type AdminAuthenticator } from './auth.js';
import type { Actor, ControlPlane } from './control.js';

export interface AdminApiOptions {
  readonly control: ControlPlane;
  readonly authenticator: AdminAuthenticator;
  readonly origins: OriginPolicy;
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  /** Called after every successful write, before the answer: the running gateway applies it now. */
  readonly onChange?: () => Promise<void>;
  /** The gateway's audit log, when it has one: `/audit` reads its first queryable sink. */
  readonly audit?: AuditSource;
}

/** What the admin API reads of the running audit log. */
export interface AuditSource {
  /** The sinks that can be queried (SQLite, PostgreSQL), in configured order. */
  stores(): AuditStore[];
  stats(): Promise<AuditSinkStats[]>;
  /** The public half of the gateway's audit signing key (none if it has none): what checkpoints are verified with. */
  publicKeys(): KeyObject[];
}

interface Request {
  readonly actor: Actor;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** The parsed JSON body of a write (an object; `{}` when the route takes none and none was sent). */
  readonly body: Record<string, unknown>;
  readonly audit: AuditSource | undefined;
}

interface Route {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Segments after /admin/api; `:name` captures one (percent-decoded). */
  readonly path: string;
  /** The least role that may call it. */
  readonly role: AdminRole;
  /** 200 unless said; 201 for creations, 204 for deletions. */
  readonly status?: number;
  /** False for writes that change no grant, server or policy (approval decisions): no `onChange`. */
  readonly reconfigures?: false;
  readonly handle: (c: ControlPlane, r: Request) => Promise<unknown>;
}

/**
 * Every route of the admin API. Reads need `viewer`; policy writes and approval decisions
 * `policy_manager` (who may change the policy may let one call through it, or refuse it); everything
 * else `admin`.
 */
export const ROUTES: readonly Route[] = [
  { method: 'GET', path: '/whoami', role: 'viewer', handle: async (_c, r) => ({ actor: r.actor.name, role: r.actor.role }) },
  { method: 'GET', path: '/servers', role: 'viewer', handle: async (c) => ({ servers: await c.listServers() }) },
  {
    method: 'POST',
    path: '/servers',
    role: 'admin',
    status: 201,
    handle: async (c, r) => {
      const { name, definition, policy } = r.body;
      return c.addServer(r.actor, name as string, definition, policyText(policy));
    },
  },
  { method: 'GET', path: '/servers/:server', role: 'viewer', handle: (c, r) => c.getServer(r.params.server!) },
  { method: 'DELETE', path: '/servers/:server', role: 'admin', status: 204, handle: (c, r) => c.removeServer(r.actor, r.params.server!) },
  { method: 'GET', path: '/servers/:server/policy', role: 'viewer', handle: (c, r) => c.getPolicy(r.params.server!) },
  {
    method: 'PUT',
    path: '/servers/:server/policy',
    role: 'policy_manager',
    handle: (c, r) => c.putPolicy(r.actor, r.params.server!, policyText(r.body.policy), optionalString(r.body.note, 'note')),
  },
  { method: 'DELETE', path: '/servers/:server/policy', role: 'policy_manager', handle: (c, r) => c.resetPolicy(r.actor, r.params.server!) },
  {
    method: 'GET',
    path: '/servers/:server/policy/versions',
    role: 'viewer',
    handle: async (c, r) => ({ versions: await c.listPolicyVersions(r.params.server!) }),
  },
  {
    method: 'GET',
    path: '/servers/:server/policy/versions/:version',
    role: 'viewer',
    handle: (c, r) => c.getPolicyVersion(r.params.server!, versionNumber(r.params.version!)),
  },
  {
    method: 'POST',
    path: '/servers/:server/policy/rollback',
    role: 'policy_manager',
    handle: (c, r) => c.rollbackPolicy(r.actor, r.params.server!, versionNumber(r.body.version)),
  },
  { method: 'GET', path: '/grants', role: 'viewer', handle: async (c) => ({ grants: await c.listGrants() }) },
  {
    method: 'POST',
    path: '/grants',
    role: 'admin',
    status: 201,
    handle: (c, r) => {
      const b = r.body;
      const policies: Record<string, string> = {};
      if (b.policies !== undefined) {
        if (!isRecord(b.policies)) invalid('policies: expected an object of policies by server name');
        for (const [server, p] of Object.entries(b.policies)) policies[server] = policyText(p);
      }
      return c.createGrant(r.actor, {
        label: b.label as string,
        servers: b.servers as string[],
        expiresInMs: b.expiresIn === undefined ? undefined : duration(b.expiresIn, 'expiresIn'),
        expiresAt: b.expiresAt === undefined ? undefined : time(b.expiresAt, 'expiresAt'),
        policies,
      });
    },
  },
  { method: 'GET', path: '/grants/:grant', role: 'viewer', handle: (c, r) => c.getGrant(r.params.grant!) },
  { method: 'POST', path: '/grants/:grant/revoke', role: 'admin', handle: (c, r) => c.revokeGrant(r.actor, r.params.grant!) },
  {
    method: 'POST',
    path: '/grants/:grant/rotate',
    role: 'admin',
    handle: (c, r) => c.rotateGrant(r.actor, r.params.grant!, r.body.grace === undefined ? 0 : duration(r.body.grace, 'grace')),
  },
  {
    method: 'GET',
    path: '/approvals',
    role: 'viewer',
    handle: (c, r) => {
      const q = r.query;
      for (const k of q.keys()) if (!['status', 'limit', 'cursor'].includes(k)) invalid(`unknown filter '${k}': expected status, limit or cursor`);
      const limit = q.get('limit');
      if (limit !== null && !/^\d{1,4}$/.test(limit)) invalid('limit: expected a whole number from 1 to 1000');
      return c.listApprovals({ status: q.get('status') ?? undefined, limit: limit === null ? undefined : Number(limit), cursor: q.get('cursor') ?? undefined });
    },
  },
  { method: 'GET', path: '/approvals/:id', role: 'viewer', handle: (c, r) => c.getApproval(r.params.id!) },
  {
    method: 'POST',
    path: '/approvals/:id/approve',
    role: 'policy_manager',
    reconfigures: false,
    handle: (c, r) => c.approve(r.actor, r.params.id!, optionalString(r.body.comment, 'comment')),
  },
  {
    method: 'POST',
    path: '/approvals/:id/deny',
    role: 'policy_manager',
    reconfigures: false,
    handle: (c, r) => c.deny(r.actor, r.params.id!, r.body.reason),
  },
  { method: 'GET', path: '/catalog', role: 'viewer', handle: async (c) => ({ servers: await catalogOf(c).list() }) },
  { method: 'GET', path: '/catalog/:server', role: 'viewer', handle: (c, r) => catalogOf(c).server(r.params.server!) },
  { method: 'GET', path: '/catalog/:server/tools/:tool', role: 'viewer', handle: (c, r) => catalogOf(c).tool(r.params.server!, r.params.tool!) },
  {
    method: 'GET',
    path: '/catalog/:server/history',
    role: 'viewer',
    handle: (c, r) => {
      const q = r.query;
      for (const k of q.keys()) if (!['limit', 'before'].includes(k)) invalid(`unknown filter '${k}': expected limit or before`);
      const limit = q.get('limit');
      if (limit !== null && !/^(?:[1-9]\d{0,2}|1000)$/.test(limit)) invalid('limit: expected a whole number from 1 to 1000');
      const before = q.get('before');
      if (before !== null && !/^[1-9]\d{0,14}$/.test(before)) invalid('before: expected a change id (a whole number)');
      return catalogOf(c).history(r.params.server!, { limit: limit === null ? undefined : Number(limit), before: before === null ? undefined : Number(before) });
    },
  },
  { method: 'GET', path: '/admins', role: 'admin', handle: async (c) => ({ admins: await c.listAdmins() }) },
  {
    method: 'GET',
    path: '/events',
    role: 'viewer',
    handle: async (c, r) => {
      const q = r.query;
      const num = (k: string) => {
        const v = q.get(k);
        if (v === null) return undefined;
        if (!/^\d{1,15}$/.test(v)) invalid(`${k}: expected a whole number`);
        return Number(v);
      };
      const query = { limit: num('limit'), beforeId: num('before'), action: q.get('action') ?? undefined, target: q.get('target') ?? undefined };
      const events = await c.adminEvents(Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined)));
      return { events: events.map((e) => ({ ...e, at: new Date(e.at).toISOString() })) };
    },
  },
  {
    method: 'GET',
    path: '/audit',
    role: 'viewer',
    handle: async (c, r) => {
      const store = auditStore(r.audit);
      const filter = await auditQuery(c, r.query);
      const page = await store.query(filter).catch((err: unknown) => {
        // A store refuses a filter it cannot use (a cursor not its own) with a RangeError.
        if (err instanceof RangeError) invalid(err.message);
        throw err;
      });
      // Records exactly as stored (`at` in ms since the epoch), so a client can check their hashes.
      return { sink: store.name, records: page.records, next: page.next ?? null };
    },
  },
  {
    method: 'GET',
    path: '/audit/stats',
    role: 'viewer',
    handle: async (_c, r) => {
      if (r.audit === undefined) throw new PolicyLayerError(ErrorCodes.NOT_FOUND, 'the audit log is off (audit.sinks: [])');
      return { sinks: await r.audit.stats() };
    },
  },
  {
    method: 'POST',
    path: '/audit/verify',
    role: 'admin',
    handle: async (_c, r) => {
      const store = auditStore(r.audit);
      // Checkpoints count only if signed by the gateway's own audit signing key.
      return { sink: store.name, ...(await store.verify({ publicKeys: r.audit?.publicKeys() ?? [] })) };
    },
  },
];

/** The catalogue: servers scanned into this gateway's control store, then the shipped ones. */
function catalogOf(c: ControlPlane): Catalog {
  return new Catalog({ store: c.store, shipped: shippedCatalog() });
}

function auditStore(audit: AuditSource | undefined): AuditStore {
  if (audit === undefined) throw new PolicyLayerError(ErrorCodes.NOT_FOUND, 'the audit log is off (audit.sinks: [])');
  const store = audit.stores()[0];
  if (store === undefined) {
    throw new PolicyLayerError(ErrorCodes.NOT_FOUND, 'no audit sink of this gateway can be queried yet: add a sqlite: or postgres:// sink to audit.sinks');
  }
  return store;
}

/**
 * The filters of GET /audit: grant (an id, or a label of a grant in the store), tool, decision,
 * server, since and until (ISO 8601, or ms since the epoch), limit, order, cursor.
 */
async function auditQuery(c: ControlPlane, q: URLSearchParams): Promise<AuditQuery> {
  for (const k of q.keys()) {
    if (!AUDIT_QUERY_KEYS.has(k)) invalid(`unknown filter '${k}': expected one of ${[...AUDIT_QUERY_KEYS].join(', ')}`);
  }
  const text = (k: string) => q.get(k) ?? undefined;
  const decision = text('decision');
  if (decision !== undefined && !AUDIT_DECISIONS.includes(decision as AuditDecision)) invalid(`decision: expected one of ${AUDIT_DECISIONS.join(', ')}`);
  const order = text('order');
  if (order !== undefined && order !== 'newest' && order !== 'oldest') invalid('order: expected newest or oldest');
  const limit = text('limit');
  if (limit !== undefined && !/^(?:[1-9]\d{0,2}|1000)$/.test(limit)) invalid('limit: expected a whole number from 1 to 1000');
  let grant = text('grant');
  if (grant !== undefined) {
    // Operators know grants by label; records name them by id, which outlives a label's reuse.
    grant = await c.getGrant(grant).then(
      (g) => g.id,
      () => grant,
    );
  }
  const query: Record<string, unknown> = {
    grant,
    tool: text('tool'),
    decision,
    server: text('server'),
    since: instant(text('since'), 'since'),
    until: instant(text('until'), 'until'),
    limit: limit === undefined ? undefined : Number(limit),
    order,
    after: text('cursor'),
  };
  return Object.fromEntries(Object.entries(query).filter(([, v]) => v !== undefined)) as AuditQuery;
}

const AUDIT_QUERY_KEYS = new Set(['grant', 'tool', 'decision', 'server', 'since', 'until', 'limit', 'order', 'cursor']);

function instant(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const ms = /^\d{1,15}$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(ms)) invalid(`${name}: expected an ISO 8601 time or ms since the epoch`);
  return ms;
}

const COMPILED = ROUTES.map((route) => ({ route, segments: route.path.split('/').slice(1) }));

export class AdminApi {
  private readonly opts: AdminApiOptions;
  private readonly log: Logger;

  constructor(opts: AdminApiOptions) {
    this.opts = opts;
    this.log = opts.logger;
  }

  /** Answers one request whose path starts with /admin/api; never throws. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, query: string): Promise<void> {
    try {
      await this.route(req, res, path, query);
    } catch (err) {
      this.fail(res, err);
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, path: string, query: string): Promise<void> {
    checkHostAndOrigin(req, this.opts.origins);
    // Credentials in a URL end up in logs and histories: refused before anything else is looked at.
    if (/(?:^|&)access_token=|pl[ag]_[A-Za-z0-9_-]{20,}/.test(decodeSegment(query))) {
      this.challenge(res, 'invalid_request', 'credentials are not accepted in the URL: send Authorization: Bearer <token>');
      return;
    }
    const auth = await this.opts.authenticator.authenticate(header(req, 'authorization'));
    if (!auth.ok) {
      this.log.info({ path, reason: auth.description }, 'admin request refused: authentication');
      this.challenge(res, 'invalid_token', auth.description);
      return;
    }
    const actor = auth.actor;
    const match = findRoute(req.method ?? 'GET', path.slice(ADMIN_PREFIX.length));
    if (match.route === undefined) {
      if (match.allowed.length > 0) {
        res.setHeader('allow', match.allowed.join(', '));
        throw new PolicyLayerError(ErrorCodes.METHOD_NOT_ALLOWED, `method ${req.method} is not allowed on ${path}`);
      }
      throw new PolicyLayerError(ErrorCodes.NOT_FOUND, `no admin API route ${path}: see docs/admin-api.md`);
    }
    const { route, params } = match;
    if (!roleAllows(actor.role, route.role)) {
      this.log.info({ actor: actor.name, role: actor.role, method: route.method, path }, 'admin request refused: role');
      throw new PolicyLayerError(ErrorCodes.ADMIN_FORBIDDEN, `the role '${actor.role}' may not ${route.method} ${ADMIN_PREFIX}${route.path}: it needs '${route.role}'`);
    }
    const body = route.method === 'GET' ? {} : await this.readJson(req);
    const result = await route.handle(this.opts.control, { actor, params, query: new URLSearchParams(query), body, audit: this.opts.audit });
    if (route.method !== 'GET') {
      this.log.info({ actor: actor.name, role: actor.role, method: route.method, path }, 'admin change');
      if (route.reconfigures !== false) await this.opts.onChange?.().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'admin change stored; applying it here failed, the next sync retries'));
    }
    const status = route.status ?? 200;
    if (status === 204) {
      res.writeHead(204, { 'cache-control': 'no-store' });
      res.end();
      return;
    }
    sendJson(res, status, result);
  }

  /** Writes must say they send JSON: a form a browser posts cross-site cannot, which closes off CSRF. */
  private async readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    const type = header(req, 'content-type');
    const text = await readBody(req, this.opts.maxBodyBytes);
    if (text.trim() === '' && type === undefined) return {};
    if (type === undefined || !/^application\/json\s*(?:;|$)/i.test(type)) {
      throw new PolicyLayerError(ErrorCodes.UNSUPPORTED_MEDIA_TYPE, 'the admin API takes Content-Type: application/json');
    }
    let value: unknown;
    try {
      value = JSON.parse(text === '' ? '{}' : text);
    } catch (err) {
      throw new PolicyLayerError(ErrorCodes.PARSE_ERROR, `the body is not valid JSON: ${(err as Error).message}`);
    }
    if (!isRecord(value)) invalid('the body must be a JSON object');
    return value;
  }

  private challenge(res: ServerResponse, error: string, description: string): void {
    res.setHeader('www-authenticate', `Bearer realm="policylayer-admin", error="${error}", error_description="${description.replace(/["\\]/g, '')}"`);
    sendJson(res, 401, { error: { code: ErrorCodes.ADMIN_UNAUTHORIZED, message: description } });
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof PolicyLayerError) {
      const status = wireOf(err.code).status;
      if (status >= 500) this.log.warn({ code: err.code, err: err.message }, 'admin request failed');
      sendJson(res, status, { error: { code: err.code, message: err.message, ...(err.details ?? {}) } });
      return;
    }
    this.log.error({ err: (err as Error).stack ?? String(err) }, 'unexpected error in the admin API');
    sendJson(res, 500, { error: { code: 'PL_INTERNAL', message: 'internal gateway error' } });
  }
}

function findRoute(method: string, rest: string): { route?: Route; params: Record<string, string>; allowed: string[] } {
  const parts = rest.replace(/\/+$/, '').split('/').slice(1);
  const allowed: string[] = [];
  for (const { route, segments } of COMPILED) {
    if (segments.length !== parts.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < segments.length && ok; i++) {
      const seg = segments[i]!;
      const part = parts[i]!;
      if (seg.startsWith(':')) {
        const value = decodeSegment(part);
        if (value === '') ok = false;
        else params[seg.slice(1)] = value;
      } else ok = seg === part;
    }
    if (!ok) continue;
    if (route.method === method) return { route, params, allowed };
    allowed.push(route.method);
  }
  return { params: {}, allowed };
}

/** A policy in a body: an object (stored as pretty JSON) or its text (JSON or YAML, stored as sent). */
function policyText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (isRecord(v)) return `${JSON.stringify(v, null, 2)}\n`;
  invalid('policy: expected a policy object, or its text as a string');
}

function optionalString(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') invalid(`${field}: expected a string`);
  return v;
}

function versionNumber(v: unknown): number {
  const n = typeof v === 'string' && /^\d{1,9}$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) invalid('version: expected a version number (1, 2, …)');
  return n;
}

function duration(v: unknown, field: string): number {
  if (typeof v !== 'string' && typeof v !== 'number') invalid(`${field}: expected a duration like "30d" or "10m"`);
  try {
    return parseDuration(v);
  } catch {
    invalid(`${field}: expected a duration like "30d" or "10m"`);
  }
}

function time(v: unknown, field: string): number {
  const ms = typeof v === 'string' ? Date.parse(v) : NaN;
  if (!Number.isFinite(ms)) invalid(`${field}: expected an ISO 8601 time, e.g. "2027-01-31T00:00:00Z"`);
  return ms;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(message: string): never {
  throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, message);
}
