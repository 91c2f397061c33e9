/**
 * Starts a real gateway in this process for integration tests: the config goes through the same
 * loader the CLI uses (`parseGatewayConfig`) and the same composition root (`startGateway`), only
 * the listener is moved to 127.0.0.1 on a free port unless the test asks otherwise.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseGatewayConfig, type Env, type GatewayConfig } from '../../src/config/index.js';
import type { Gateway } from '../../src/gateway/gateway.js';
import { startGateway, type RunningGateway } from '../../src/main.js';
import { createLogger, silentLogger, type Logger } from '../../src/telemetry/logger.js';

export interface TestGatewayOptions {
  /** Folder relative paths in the config (policy files, cwd) resolve against; default process.cwd(). */
  dir?: string;
  /** Environment for `${VAR}` references; default process.env. */
  env?: Env;
  /** Keep the config's own `listen` instead of 127.0.0.1:0. */
  keepListen?: boolean;
  /** A logger; default silent, or real at POLICYLAYER_TEST_LOG=<level> for debugging. */
  logger?: Logger;
}

export interface TestGateway {
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  /** The MCP endpoint of one configured server: `${url}/mcp/<name>`. */
  endpoint(name: string): string;
  /** Drains and stops the gateway and its upstreams; safe to call more than once. */
  stop(): Promise<void>;
  gateway: Gateway;
  config: GatewayConfig;
  running: RunningGateway;
}

function testLogger(): Logger {
  const level = process.env.POLICYLAYER_TEST_LOG;
  return level ? createLogger({ level, name: 'policylayer-test' }) : silentLogger();
}

export async function startTestGateway(yaml: string, opts: TestGatewayOptions = {}): Promise<TestGateway> {
  const config = parseGatewayConfig(yaml, 'gateway.yaml', opts.env ?? process.env, opts.dir ?? process.cwd());
  if (!opts.keepListen) config.listen = { host: '127.0.0.1', port: 0 };
  // Tests stop gateways that may hold calls the test abandoned; a long default grace would only
  // slow them. A config that sets shutdown_grace itself keeps it.
  if (!/^\s*shutdown_grace\s*:/m.test(yaml)) config.shutdownGraceMs = Math.min(config.shutdownGraceMs, 2000);
  // The default audit log (a SQLite file beside the config) stays on, in a folder of this gateway's
  // own: every test then also runs the audit pipeline, and none leaves files in the checkout.
  let auditDir: string | undefined;
  if (!/^audit\s*:/m.test(yaml)) {
    auditDir = mkdtempSync(join(tmpdir(), 'pl-test-audit-'));
    config.audit = { ...config.audit, sinks: [`sqlite:${join(auditDir, 'audit.db')}`], spillDir: join(auditDir, 'spill') };
  }
  const running = await startGateway(config, opts.logger ?? testLogger()).catch((err: unknown) => {
    if (auditDir !== undefined) rmSync(auditDir, { recursive: true, force: true });
    throw err;
  });
  const url = running.url;
  let stopped: Promise<void> | undefined;
  return {
    url,
    endpoint: (name: string) => `${url}/mcp/${encodeURIComponent(name)}`,
    stop: () =>
      (stopped ??= running.stop().finally(() => {
        if (auditDir !== undefined) rmSync(auditDir, { recursive: true, force: true });
      })),
    gateway: running.gateway,
    config,
    running,
  };
}

/** JSON text of a value, for embedding inline policies and commands in a YAML config string. */
export function yamlValue(v: unknown): string {
  return JSON.stringify(v);
}
