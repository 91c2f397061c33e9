/**
 * Composition root: turns a loaded config into running parts. Only this file (and the CLI)
 * chooses concrete transports and backends.
 */
import path from 'node:path';
import type { AuditConfig, CountersConfig, GatewayConfig, ServerConfig } from './config/index.js';
import { AuditLog } from './audit/log.js';
import type { ApprovalNotifier } from './approvals/notifier.js';
import { createLocalNotifier } from './approvals/notifier/local.js';
import { ApprovalService } from './approvals/service.js';
import { ApprovalLinkPages } from './approvals/link-pages.js';
import { ApprovalLinks, LINK_KEY_NAME, linkKeyFromSecret, linkKeyFromStored, newStoredLinkKey } from './approvals/links.js';
import { ApprovalWebhooks, type WebhookArgumentsMode } from './approvals/webhook.js';
import { Gateway, type ApprovalRequester } from './gateway/gateway.js';
import { usesApproval } from './policy/index.js';
import { logConversionWarnings, watchPolicies } from './gateway/reload.js';
import { Limiter } from './limits/limiter.js';
import type { CounterStore } from './limits/limiter.js';
import { createMemoryStore } from './limits/store/memory.js';
import { GrantAuthenticator } from './identity/authenticator.js';
import { oidcVerifier } from './identity/jwt.js';
import type { ControlStore } from './store/store.js';
import type { Logger } from './telemetry/logger.js';
import { Metrics } from './telemetry/metrics.js';
import { AdminApi } from './admin/api.js';
import { AdminAuthenticator } from './admin/auth.js';
import { ControlPlane } from './admin/control.js';
import { AdminListener } from './admin/listener.js';
import { ControlSync } from './admin/sync.js';
import { ADMIN_API_PREFIX, HttpListener } from './transport/downstream/http.js';
import { originPolicy } from './transport/downstream/origin.js';
import { HttpUpstream } from './transport/upstream/http.js';
import { LegacySseUpstream } from './transport/upstream/sse-legacy.js';
import { OAuthTokenSource } from './transport/upstream/oauth.js';
import { StdioUpstream, type StdioUpstreamOptions } from './transport/upstream/stdio.js';
import type { Upstream } from './transport/upstream/types.js';
import { configureBusyPoll } from './util/busy-poll.js';

/** What an upstream is made from: a server of the config, or one `scan` reaches without a policy. */
export type UpstreamConfig = Omit<ServerConfig, 'policy'>;

/**
 * The upstream for one server. `stdio` tunes how a process is stopped: the gateway keeps the
 * defaults, `scan` (which stops its server as soon as it has the tools) waits less.
 */
export function createUpstream(server: UpstreamConfig, logger: Logger, stdio: Pick<StdioUpstreamOptions, 'killGraceMs' | 'observer'> = {}): Upstream {
  if (server.kind === 'stdio') {
    return new StdioUpstream({
      name: server.name,
      command: server.command!,
      env: server.env,
      cwd: server.cwd,
      timeoutMs: server.timeoutMs,
      isolation: server.isolation,
      logger,
      ...stdio,
    });
  }
  // One token source per server: its token is never sent to another server.
  const tokens = server.oauth && new OAuthTokenSource({ ...server.oauth, server: server.name, timeoutMs: server.timeoutMs, logger });
  const opts = { name: server.name, url: server.url!, headers: server.headers, tokens, timeoutMs: server.timeoutMs, logger };
  return server.transport === 'sse' ? new LegacySseUpstream(opts) : new HttpUpstream(opts);
}

/**
 * The control-plane store a `store` setting names: `sqlite:<path>` (a relative path is relative to
 * the working directory; the config loader has already made its own absolute) or `postgres://…`.
 * Its driver is loaded only then; migrations are applied.
 */
export async function openControlStore(store: string): Promise<ControlStore> {
  let opened: ControlStore;
  if (store.startsWith('sqlite:')) {
    const { openSqliteStore } = await import('./store/sqlite.js');
    const file = store.slice('sqlite:'.length);
    opened = openSqliteStore(file === ':memory:' ? file : path.resolve(file));
  } else {
    const { openPostgresStore } = await import('./store/postgres.js');
    opened = openPostgresStore(store);
  }
  try {
    await opened.migrate();
  } catch (err) {
    await opened.close().catch(() => {});
    throw err;
  }
  return opened;
}

/** The counter store the config names: in-process memory, or Redis (its client loaded only then). */
export async function createCounterStore(counters: Pick<CountersConfig, 'url'>, logger: Logger): Promise<CounterStore> {
  if (counters.url === 'memory') return createMemoryStore();
  const { createRedisStore } = await import('./limits/store/redis.js');
  let down = false;
  return createRedisStore({
    url: counters.url,
    onError: (err) => {
      // One line when it goes away, not one per call while it stays away.
      if (down) return;
      down = true;
      logger.error({ err: (err as Error).message }, 'counter store unreachable');
      setTimeout(() => (down = false), 10_000).unref();
    },
  });
}

/** A limiter over `store` that logs (and counts, given metrics) every store failure it is told about. */
export function createLimiter(store: CounterStore, counters: Pick<CountersConfig, 'onStoreError'>, logger: Logger, metrics?: Metrics): Limiter {
  return new Limiter(store, {
    onStoreError: counters.onStoreError,
    onStoreFailure: (err, during) => {
      metrics?.storeError(store.name, during);
      logger.warn(
        { store: store.name, during, onStoreError: counters.onStoreError, err: err instanceof Error ? err.message : String(err) },
        during === 'reserve' ? `counter store failed: calls with limits are ${counters.onStoreError === 'deny' ? 'refused' : 'admitted uncounted'}` : 'counter store failed to settle a reservation',
      );
    },
  });
}

/** Why a require_approval call is refused by a `serve` gateway that opened no control store at start. */
const NO_CONTROL_STORE =
  'this call needs human approval, which needs the control store (`store`): this gateway opened none at start, since then no policy asked for approval; restart it to open one';

export function createGateway(
  config: GatewayConfig,
  logger: Logger,
  limiter: Limiter,
  metrics?: Metrics,
  audit?: AuditLog,
  approvals?: ApprovalRequester,
  approvalWebhooks = false,
): Gateway {
  const gateway = new Gateway({
    logger,
    metrics,
    audit: audit?.trail,
    sessionIdleTimeoutMs: config.sessionIdleTimeoutMs,
    limiter,
    refundToolErrors: config.counters.refundToolErrors,
    approvals,
    approvalsUnavailable: NO_CONTROL_STORE,
    approvalProgressMs: config.approvals.progressIntervalMs,
    approvalWebhooks,
  });
  for (const server of config.servers.values()) {
    gateway.addServer({ name: server.name, upstream: createUpstream(server, logger), policy: server.policy });
  }
  return gateway;
}

/** The audit log `audit` describes, open and writing; undefined when it names no sinks. */
export async function openAuditLog(audit: AuditConfig, logger: Logger, opts: { quietWhenOff?: boolean } = {}): Promise<AuditLog | undefined> {
  if (audit.sinks.length === 0) {
    if (opts.quietWhenOff !== true) logger.warn('the audit log is off (audit.sinks: []): decisions are not recorded');
    return undefined;
  }
  const log = await AuditLog.open(audit, logger);
  logger.info({ sinks: log.sinkNames, arguments: audit.arguments, durability: audit.durability, recordedBy: log.recordsOnLoop ? 'event loop' : 'audit thread' }, 'audit log on');
  return log;
}

/**
 * How approval decisions reach the replica holding the call: Redis pub/sub when the counters use
 * Redis (what a multi-replica deployment shares), else in-process (one gateway; a decision made
 * by another process, such as the CLI on the store, is found by the holder's poll).
 */
export async function createApprovalNotifier(counters: Pick<CountersConfig, 'url'>, logger: Logger): Promise<ApprovalNotifier> {
  if (counters.url === 'memory') return createLocalNotifier();
  const { createRedisNotifier } = await import('./approvals/notifier/redis.js');
  let down = false;
  return createRedisNotifier({
    url: counters.url,
    onError: (err) => {
      // One line when it goes away, not one per retry while it stays away: the poll covers meanwhile.
      if (down) return;
      down = true;
      logger.warn({ err: (err as Error).message }, 'approval notifications: Redis unreachable; held calls learn of decisions by polling the store meanwhile');
      setTimeout(() => (down = false), 10_000).unref();
    },
  });
}

/**
 * The approval service of a gateway process over its control store, reporting each change it
 * makes to the log and, given webhooks, posting each approval whose channels include `webhook`
 * (`approval.requested` when this replica holds a new one, `approval.decided` when the wait of a
 * call it holds ends, whoever decided).
 */
export function createApprovalService(
  store: ControlStore,
  notifier: ApprovalNotifier,
  config: Pick<GatewayConfig, 'approvals'>,
  logger: Logger,
  webhooks?: ApprovalWebhooks,
): ApprovalService {
  return new ApprovalService({
    store,
    notifier,
    pollIntervalMs: config.approvals.pollIntervalMs,
    onEvent: ({ type, approval: a }) => {
      logger.info(
        { approval: a.id, server: a.server, tool: a.tool, grant: a.grantLabel, status: a.status, by: a.decidedBy, comment: a.comment },
        `approval ${type}`,
      );
      if (type === 'requested' && a.via.includes('webhook')) webhooks?.requested(a);
    },
    onSettled: (outcome) => {
      if (outcome.approval.via.includes('webhook')) webhooks?.decided(outcome.approval);
    },
    onError: (err) => logger.warn({ err: (err as Error).message }, 'approval service: a poll or notification failed; it keeps trying'),
  });
}

/** How much of a held call's arguments webhooks and link pages show: `approvals.arguments`, else the audit log's mode, never `full`. */
export function webhookArgumentsMode(config: Pick<GatewayConfig, 'approvals' | 'audit'>): WebhookArgumentsMode {
  return config.approvals.arguments ?? (config.audit.arguments === 'keys' ? 'keys' : 'redacted');
}

/**
 * The signed approve/deny links of approval webhooks, when webhooks are configured: their key
 * derives from `approvals.link_secret`, or is the one kept in the control store (made by the
 * first gateway to need it, shared by every replica).
 */
export async function createApprovalLinks(config: Pick<GatewayConfig, 'approvals'>, store: ControlStore): Promise<ApprovalLinks | undefined> {
  const a = config.approvals;
  if (a.webhooks.length === 0 || a.publicUrl === undefined) return undefined;
  const key = a.linkSecret !== undefined ? linkKeyFromSecret(a.linkSecret) : linkKeyFromStored(await store.sharedKey(LINK_KEY_NAME, newStoredLinkKey(), Date.now()));
  return new ApprovalLinks({ key, publicUrl: a.publicUrl, ttlMs: a.linkTtlMs });
}

/**
 * The service as the gateway uses it: started (subscribed, polling) on the first held call, or at
 * once with `start()` when a policy in force asks for approval, so its sweep also expires the
 * approvals a dead replica left pending.
 */
function lazilyStarted(service: ApprovalService): ApprovalRequester & { start(): Promise<void> } {
  let started: Promise<void> | undefined;
  const start = () => (started ??= service.start());
  return {
    start,
    request: async (call, spec) => {
      await start();
      return service.request(call, spec);
    },
    approve: (id, by, comment) => service.approve(id, by, comment),
    deny: (id, by, reason) => service.deny(id, by, reason),
  };
}

export interface RunningGateway {
  gateway: Gateway;
  listener: HttpListener;
  /** The audit log, when `audit.sinks` names any. */
  audit: AuditLog | undefined;
  url: string;
  /** The admin API's base URL (`…/admin/api`), when the control store is open. */
  adminUrl: string | undefined;
  /** Drains calls in flight (up to the configured grace), then stops everything. */
  stop(): Promise<void>;
}

export async function startGateway(config: GatewayConfig, logger: Logger): Promise<RunningGateway> {
  // The control-plane store is opened only when grants are checked, an admin address is set or a
  // policy holds calls for human approval (pending approvals live there): a local gateway without
  // authentication or approvals writes no database file.
  const asksForApproval = [...config.servers.values()].some((s) => usesApproval(s.policy)) || config.approvals.webhooks.length > 0;
  const control = config.auth.required || config.admin !== undefined || asksForApproval ? await openControlStore(config.store) : undefined;
  for (const server of config.servers.values()) logConversionWarnings(logger, server.name, server.policy);
  configureBusyPoll(config.busyPollUs);
  const store = await createCounterStore(config.counters, logger);
  const metrics = new Metrics();
  let audit: AuditLog | undefined;
  try {
    audit = await openAuditLog(config.audit, logger);
  } catch (err) {
    await Promise.allSettled([store.close(), control?.close()]);
    throw err;
  }
  if (audit !== undefined) metrics.auditSinks(() => audit.stats());
  let links: ApprovalLinks | undefined;
  try {
    links = control === undefined ? undefined : await createApprovalLinks(config, control);
  } catch (err) {
    await Promise.allSettled([store.close(), control?.close(), audit?.close()]);
    throw err;
  }
  const webhooks =
    links === undefined
      ? undefined
      : new ApprovalWebhooks({ targets: config.approvals.webhooks, links, argumentsMode: webhookArgumentsMode(config), log: logger });
  const notifier = control === undefined ? undefined : await createApprovalNotifier(config.counters, logger);
  const approvals = control === undefined || notifier === undefined ? undefined : createApprovalService(control, notifier, config, logger, webhooks);
  const linkPages =
    links === undefined || approvals === undefined
      ? undefined
      : new ApprovalLinkPages({ links, approvals, argumentsMode: webhookArgumentsMode(config), log: logger });
  const requester = approvals === undefined ? undefined : lazilyStarted(approvals);
  const gateway = createGateway(config, logger, createLimiter(store, config.counters, logger, metrics), metrics, audit, requester, webhooks !== undefined);
  const origins = originPolicy(config.allowedHosts, config.allowedOrigins);
  // One verifier for MCP and admin requests alike: one cache of the issuer's keys.
  const verifier = oidcVerifier(config.auth.oidc);
  const grants = config.auth.required && control !== undefined ? new GrantAuthenticator(control, { verifier }) : undefined;
  let sync: ControlSync | undefined;
  let admin: AdminApi | undefined;
  if (control !== undefined) {
    const baseDir = path.dirname(path.resolve(config.source));
    sync = new ControlSync({ gateway, store: control, configServers: config.servers, logger, createUpstream: (s) => createUpstream(s, logger), baseDir });
    // Stored servers and policy versions are in force before the first request is served.
    await sync.sync().catch(async (err: unknown) => {
      await Promise.allSettled([control.close(), audit?.close(), notifier?.close()]);
      throw err;
    });
    const liveSync = sync;
    admin = new AdminApi({
      control: new ControlPlane({ store: control, configServers: config.servers, configSecrets: config.secretValues, baseDir, approvals }),
      authenticator: new AdminAuthenticator(control, { jwt: verifier === undefined ? undefined : (token) => verifier.verify(token) }),
      origins,
      maxBodyBytes: config.maxBodyBytes,
      logger,
      audit,
      onChange: async () => {
        grants?.forget();
        await liveSync.sync();
      },
    });
  }
  const listener = new HttpListener(gateway, {
    host: config.listen.host,
    port: config.listen.port,
    maxBodyBytes: config.maxBodyBytes,
    origins,
    logger,
    authenticator: grants,
    authorizationServers: config.auth.oidc === undefined ? [] : [config.auth.oidc.issuer],
    admin: config.admin === undefined ? admin : undefined,
    serveMetrics: config.admin === undefined,
    approvalLinks: linkPages,
  });
  const adminListener =
    config.admin === undefined || admin === undefined
      ? undefined
      : new AdminListener({ ...config.admin, api: admin, origins, logger, metrics, isDraining: () => gateway.isDraining });
  try {
    await listener.listen();
    await adminListener?.listen();
  } catch (err) {
    await listener.close().catch(() => {});
    await Promise.allSettled([control?.close(), audit?.close(), notifier?.close()]);
    throw err;
  }
  sync?.start();
  // With the stored policies in force: a policy that asks for approval starts the service now.
  if (requester !== undefined && [...gateway.servers.values()].some((s) => usesApproval(s.policy))) await requester.start();
  if (grants === undefined) {
    logger.warn('authentication is off (auth.required: false): any client that reaches this address may call these servers; use it for local, single-user setups only');
  } else {
    logger.info({ store: control!.kind }, 'authentication on: every MCP request needs a grant token');
  }
  if (webhooks !== undefined) {
    const base = config.approvals.publicUrl!;
    logger.info(
      { webhooks: config.approvals.webhooks.map((w) => w.name), links: `${base}/approvals/…`, linkKey: config.approvals.linkSecret !== undefined ? 'approvals.link_secret' : 'control store' },
      'approval webhooks on',
    );
    const u = new URL(base);
    if (u.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(u.hostname)) {
      logger.warn({ publicUrl: base }, 'approvals.public_url is plain http: the approve/deny links carry a credential; serve them over https');
    }
  }
  if (admin !== undefined) logger.info({ url: `${adminListener?.url ?? listener.url}${ADMIN_API_PREFIX}` }, 'admin API on: requests need an admin credential (policylayer admins create)');
  // Upstreams start after the port is bound so a port clash fails fast, before any child is spawned.
  void gateway.start();
  const stopWatching = watchPolicies(gateway, logger);
  let stopping: Promise<void> | undefined;
  return {
    gateway,
    listener,
    audit,
    url: listener.url,
    adminUrl: admin === undefined ? undefined : `${adminListener?.url ?? listener.url}${ADMIN_API_PREFIX}`,
    stop: () =>
      (stopping ??= (async () => {
        stopWatching();
        sync?.stop();
        listener.stopAccepting();
        configureBusyPoll(0);
        await gateway.shutdown(config.shutdownGraceMs);
        await listener.close();
        await adminListener?.close();
        // After the gateway has drained: the outcome of every call it finished is in the queue.
        await audit?.close().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'audit log did not close cleanly'));
        // The gateway ended its held calls while draining; anything still held is withdrawn here.
        await approvals?.close().catch(() => {});
        // After the approvals are withdrawn: their approval.decided posts get a moment to leave.
        await webhooks?.close().catch(() => {});
        await notifier?.close().catch(() => {});
        await control?.close();
      })()),
  };
}
