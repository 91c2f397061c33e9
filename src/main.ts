/**
 * Composition root: turns a loaded config into running parts. Only this file (and the CLI)
 * chooses concrete transports and backends.
 */
import type { GatewayConfig, ServerConfig } from './config/index.js';
import { ConfigError } from './errors.js';
import { Gateway } from './gateway/gateway.js';
import { watchPolicies } from './gateway/reload.js';
import type { Logger } from './telemetry/logger.js';
import { HttpListener } from './transport/downstream/http.js';
import { originPolicy } from './transport/downstream/origin.js';
import { HttpUpstream } from './transport/upstream/http.js';
import { LegacySseUpstream } from './transport/upstream/sse-legacy.js';
import { StdioUpstream } from './transport/upstream/stdio.js';
import type { Upstream } from './transport/upstream/types.js';

export function createUpstream(server: ServerConfig, logger: Logger): Upstream {
  if (server.kind === 'stdio') {
    return new StdioUpstream({
      name: server.name,
      command: server.command!,
      env: server.env,
      cwd: server.cwd,
      timeoutMs: server.timeoutMs,
      isolation: server.isolation,
      logger,
    });
  }
  const opts = { name: server.name, url: server.url!, headers: server.headers, timeoutMs: server.timeoutMs, logger };
  return server.transport === 'sse' ? new LegacySseUpstream(opts) : new HttpUpstream(opts);
}

export function createGateway(config: GatewayConfig, logger: Logger): Gateway {
  const gateway = new Gateway({ logger, sessionIdleTimeoutMs: config.sessionIdleTimeoutMs });
  for (const server of config.servers.values()) {
    gateway.addServer({ name: server.name, upstream: createUpstream(server, logger), policy: server.policy });
  }
  return gateway;
}

export interface RunningGateway {
  gateway: Gateway;
  listener: HttpListener;
  url: string;
  /** Drains calls in flight (up to the configured grace), then stops everything. */
  stop(): Promise<void>;
}

export async function startGateway(config: GatewayConfig, logger: Logger): Promise<RunningGateway> {
  if (config.auth.required) {
    // Serving without the authentication the operator asked for would be worse than not serving.
    throw new ConfigError([
      `${config.source}: /auth/required: grants are not implemented in this version; set it to false (local use only) or remove it`,
    ]);
  }
  const gateway = createGateway(config, logger);
  const listener = new HttpListener(gateway, {
    host: config.listen.host,
    port: config.listen.port,
    maxBodyBytes: config.maxBodyBytes,
    origins: originPolicy(config.allowedHosts, config.allowedOrigins),
    logger,
  });
  await listener.listen();
  logger.warn('authentication is off: any local client may call these servers (grants come in a later version)');
  // Upstreams start after the port is bound so a port clash fails fast, before any child is spawned.
  void gateway.start();
  const stopWatching = watchPolicies(gateway, logger);
  let stopping: Promise<void> | undefined;
  return {
    gateway,
    listener,
    url: listener.url,
    stop: () =>
      (stopping ??= (async () => {
        stopWatching();
        listener.stopAccepting();
        await gateway.shutdown(config.shutdownGraceMs);
        await listener.close();
      })()),
  };
}
