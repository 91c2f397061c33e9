/**
 * The admin HTTP API under /admin/api: JSON in, JSON out, every route listed in ROUTES (and in
 * docs/admin-api.md). It authenticates and authorises, turns requests into ControlPlane calls and
 * answers; the ControlPlane validates, writes and records the admin audit events.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
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
}

interface Request {
  readonly actor: Actor;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** The parsed JSON body of a write (an object; `{}` when the route takes none and none was sent). */
  readonly body: Record<string, unknown>;
}

interface Route {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Segments after /admin/api; `:name` captures one (percent-decoded). */
  readonly path: string;
  /** The least role that may call it. */
  readonly role: AdminRole;
  /** 200 unless said; 201 for creations, 204 for deletions. */
  readonly status?: number;
  readonly handle: (c: ControlPlane, r: Request) => Promise<unknown>;
}

/** Every route of the admin API. Reads need `viewer`, policy writes `policy_manager`, everything else `admin`. */
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
];

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
    const result = await route.handle(this.opts.control, { actor, params, query: new URLSearchParams(query), body });
    if (route.method !== 'GET') {
      this.log.info({ actor: actor.name, role: actor.role, method: route.method, path }, 'admin change');
      await this.opts.onChange?.().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'admin change stored; applying it here failed, the next sync retries'));
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
