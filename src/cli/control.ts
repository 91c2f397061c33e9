/**
 * What the control-plane commands (grants, servers, admins) share: opening the store the config
 * names, acting as the operator on the host, and errors that read well in a terminal.
 */
import { userInfo } from 'node:os';
import path from 'node:path';
import type { GatewayConfig } from '../config/index.js';
import { loadGatewayConfig } from '../config/index.js';
import { ControlPlane, type Actor } from '../admin/control.js';
import { PolicyLayerError } from '../errors.js';
import { openControlStore } from '../main.js';

/**
 * Whoever runs the CLI on the host can open the store, which is all an admin can do anyway: the
 * CLI acts with the admin role, recorded in the admin audit stream under the OS user's name.
 */
export function cliActor(): Actor {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry (some containers): the audit stream still says it came from the CLI.
  }
  return { name: `cli:${user}`, role: 'admin' };
}

/**
 * Opens the control plane of `-c gateway.yaml` (or of `--store` alone, when no config is at
 * hand), runs `fn`, and closes the store whatever happens. Errors with a list of problems (an
 * invalid policy or server) print every problem.
 */
export async function withControlPlane<T>(
  command: string,
  values: { config?: string | undefined; store?: string | undefined },
  fn: (control: ControlPlane, config: GatewayConfig | undefined) => Promise<T>,
): Promise<T> {
  if (!values.config && !values.store) throw new Error(`missing -c <gateway.yaml> (or --store)\nSee 'policylayer ${command} --help'.`);
  const config = values.config ? loadGatewayConfig(values.config) : undefined;
  const store = await openControlStore(values.store ?? config!.store);
  const control = new ControlPlane({
    store,
    configServers: config?.servers ?? new Map(),
    configSecrets: config?.secretValues ?? [],
    baseDir: values.config ? path.dirname(path.resolve(values.config)) : process.cwd(),
    checkServers: config !== undefined,
  });
  try {
    return await fn(control, config);
  } catch (err) {
    const problems = err instanceof PolicyLayerError ? (err.details?.['problems'] as string[] | undefined) : undefined;
    if (problems !== undefined && problems.length > 0) throw new Error(`${err instanceof Error ? err.message : String(err)}\n  ${problems.join('\n  ')}`);
    throw err;
  } finally {
    await store.close();
  }
}

/** Prints `text`, or `json` as indented JSON under --format json. */
export function printer(format: string): (text: string, json: unknown) => void {
  if (format !== 'text' && format !== 'json') throw new Error(`--format expects text or json, got '${format}'`);
  return (text, json) => void process.stdout.write(format === 'json' ? `${JSON.stringify(json, null, 2)}\n` : text);
}
