/**
 * Keeps a running gateway in step with the control store: servers added or removed and policy
 * versions written by any gateway process or by the CLI are put in force here within a second.
 *
 * Why polling: it works the same on SQLite and PostgreSQL, costs two small queries a second, and
 * a gateway that missed a notification (restarted, lost its connection) still converges on the
 * next tick. The process that makes a change also syncs at once, so its own API answers are
 * already true when they are sent.
 */
import type { Env, ServerConfig } from '../config/index.js';
import { loadServerDefinition } from '../config/index.js';
import { ConfigError } from '../errors.js';
import type { Gateway, ServerRuntime } from '../gateway/gateway.js';
import { swapPolicy } from '../gateway/reload.js';
import { loadPolicyFile } from '../policy/index.js';
import type { CompiledPolicy } from '../policy/types.js';
import type { ControlStore, StoredServer } from '../store/store.js';
import { addLoggerSecrets, type Logger } from '../telemetry/logger.js';
import type { Upstream } from '../transport/upstream/types.js';
import { compileStoredPolicy } from './control.js';

export interface ControlSyncOptions {
  readonly gateway: Gateway;
  readonly store: ControlStore;
  readonly configServers: ReadonlyMap<string, ServerConfig>;
  readonly logger: Logger;
  readonly createUpstream: (server: ServerConfig) => Upstream;
  readonly env?: Env;
  readonly baseDir?: string;
  /** Default 1000 ms: the "within a second" other processes' changes take. */
  readonly intervalMs?: number;
}

export class ControlSync {
  private readonly opts: ControlSyncOptions;
  private readonly log: Logger;
  /** Servers this sync added, with the creation time of the stored row they came from. */
  private readonly added = new Map<string, number>();
  /** Problems already logged (a broken stored server is reported once, not every second). */
  private readonly reported = new Set<string>();
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: ControlSyncOptions) {
    this.opts = opts;
    this.log = opts.logger;
  }

  /** Syncs every interval until stopped. */
  start(): void {
    this.timer = setInterval(() => {
      this.sync().catch((err: unknown) => this.reportOnce('store', 'control store unreachable: servers and policies stay as they are', err));
    }, this.opts.intervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /**
   * Brings the gateway in line with the store now. Calls during a sync run one more sync after
   * it, so a caller that has just written sees its write applied when this resolves.
   */
  sync(): Promise<void> {
    if (this.running !== undefined) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.once();
        } while (this.again);
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async once(): Promise<void> {
    const { gateway, store } = this.opts;
    const [stored, versions] = await Promise.all([store.listServers(), store.latestPolicyVersions()]);
    this.reported.delete('store');
    const wanted = new Map<string, StoredServer>();
    for (const s of stored) if (!this.opts.configServers.has(s.name)) wanted.set(s.name, s);

    for (const [name, createdAt] of this.added) {
      // Gone, or removed and added again under the same name between two ticks.
      if (wanted.get(name)?.createdAt !== createdAt) {
        this.added.delete(name);
        await gateway.removeServer(name);
      }
    }
    for (const s of wanted.values()) {
      if (!this.added.has(s.name)) await this.addServer(s);
    }
    for (const server of gateway.servers.values()) {
      const latest = versions.get(server.name);
      if (latest !== server.storedPolicyVersion) await this.applyPolicy(server, latest);
    }
  }

  private async addServer(s: StoredServer): Promise<void> {
    const key = `server:${s.name}:${s.createdAt}`;
    const version = await this.opts.store.getPolicyVersion(s.name);
    if (version === undefined) return; // its first version is written right after it; next tick
    try {
      const policy = compileStoredPolicy(version);
      const { server, secrets } = loadServerDefinition(s.name, s.definition, policy, this.opts.env ?? process.env, this.opts.baseDir ?? process.cwd());
      addLoggerSecrets(this.log, secrets);
      const upstream = this.opts.createUpstream(server);
      const runtime: ServerRuntime = { name: s.name, upstream, policy, storedPolicyVersion: version.version };
      this.opts.gateway.addServer(runtime);
      this.added.set(s.name, s.createdAt);
      this.reported.delete(key);
      this.log.info({ server: s.name, policyVersion: version.version }, 'server added from the control store');
      upstream.start().catch((err: unknown) => this.log.warn({ server: s.name, err: (err as Error).message }, 'upstream not ready at start; will keep trying'));
    } catch (err) {
      this.reportOnce(key, 'stored server cannot start here; it stays unavailable on this gateway', err, { server: s.name });
    }
  }

  private async applyPolicy(server: ServerRuntime, latest: number | undefined): Promise<void> {
    const key = `policy:${server.name}:${latest}`;
    let next: CompiledPolicy;
    try {
      if (latest === undefined) {
        // The stored versions were dropped: gateway.yaml's policy is in force again.
        const config = this.opts.configServers.get(server.name);
        if (config === undefined) return;
        next = config.policy.source === '<inline>' ? config.policy : loadPolicyFile(config.policy.source);
      } else {
        const v = await this.opts.store.getPolicyVersion(server.name, latest);
        if (v === undefined) return; // deleted between the two reads; the next tick sees why
        next = compileStoredPolicy(v);
      }
    } catch (err) {
      this.reportOnce(key, 'policy version not applied; the policy in force stays', err, { server: server.name, version: latest ?? 'gateway.yaml' });
      return;
    }
    if (this.opts.gateway.servers.get(server.name) !== server) return; // removed meanwhile
    server.storedPolicyVersion = latest;
    swapPolicy(this.opts.gateway, server, next, this.log, { storedVersion: latest ?? null, source: next.source });
  }

  private reportOnce(key: string, message: string, err: unknown, fields: Record<string, unknown> = {}): void {
    if (this.reported.has(key)) return;
    this.reported.add(key);
    const issues = err instanceof ConfigError ? err.issues : [(err as Error)?.message ?? String(err)];
    this.log.error({ ...fields, issues }, message);
  }
}
