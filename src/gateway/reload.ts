/**
 * Hot reload of policy files. Each server's policy file is watched; a valid change is swapped in
 * whole for the next call, an invalid one keeps the policy in force and logs every problem with its
 * location. When the set of tools a client may see changes, its clients are sent
 * `notifications/tools/list_changed` so they list again.
 */
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import { loadPolicyFile, visibleTools, type CompiledPolicy } from '../policy/index.js';
import type { Logger } from '../telemetry/logger.js';
import type { Gateway, ServerRuntime } from './gateway.js';

/** Editors write a file in several steps (truncate, write, rename): act once they are done. */
const SETTLE_MS = 100;

function visibleSet(policy: CompiledPolicy, known: Set<string> | undefined): string {
  if (!known) return '';
  return visibleTools(policy, [...known].map((name) => ({ name })))
    .map((t) => t.name)
    .sort()
    .join('\n');
}

/** Loads `file` again for `server`; returns what happened, for the log and for tests. */
export function reloadPolicy(gateway: Gateway, server: ServerRuntime, file: string, log: Logger): 'unchanged' | 'reloaded' | 'invalid' {
  let next: CompiledPolicy;
  try {
    next = loadPolicyFile(file);
  } catch (err) {
    const issues = err instanceof ConfigError ? err.issues : [(err as Error).message];
    log.error({ server: server.name, file, issues }, 'policy change rejected; the policy in force stays');
    return 'invalid';
  }
  if (server.storedPolicyVersion !== undefined) {
    log.warn({ server: server.name, file, storedVersion: server.storedPolicyVersion }, 'policy file changed but not applied: this server\'s policy is managed in the control store (admin API)');
    return 'unchanged';
  }
  return swapPolicy(gateway, server, next, log, { file }) ? 'reloaded' : 'unchanged';
}

/**
 * Puts `next` in force for `server` (whole, for the next call) and tells its clients when the
 * tools they may see changed. False when it is the policy already in force.
 */
export function swapPolicy(gateway: Gateway, server: ServerRuntime, next: CompiledPolicy, log: Logger, context: Record<string, unknown>): boolean {
  const before = server.policy;
  if (next.version === before.version) return false;
  server.policy = next;
  const changed = visibleSet(before, server.knownTools) !== visibleSet(next, server.knownTools);
  const told = changed ? gateway.notifyToolsChanged(server) : 0;
  log.info({ server: server.name, ...context, from: before.version, to: next.version, clientsNotified: told }, 'policy reloaded');
  logConversionWarnings(log, server.name, next);
  return true;
}

/** Watches every server's policy file; returns a function that stops watching. */
export function watchPolicies(gateway: Gateway, log: Logger): () => void {
  const watchers: FSWatcher[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const byDir = new Map<string, Map<string, ServerRuntime[]>>();
  for (const server of gateway.servers.values()) {
    const source = server.policy.source;
    // Inline policies (`<inline>`) live in gateway.yaml, which is not reloaded.
    if (source.startsWith('<')) continue;
    const file = path.resolve(source);
    const dir = path.dirname(file);
    const files = byDir.get(dir) ?? new Map<string, ServerRuntime[]>();
    byDir.set(dir, files);
    files.set(file, [...(files.get(file) ?? []), server]);
  }
  for (const [dir, files] of byDir) {
    const pending = new Map<string, NodeJS.Timeout>();
    try {
      // The folder, not the file: saving by rename replaces the file a watch would be bound to.
      const w = watch(dir, (_event, name) => {
        if (name === null) return;
        const file = path.join(dir, name.toString());
        const servers = files.get(file);
        if (!servers) return;
        clearTimeout(pending.get(file));
        const t = setTimeout(() => {
          pending.delete(file);
          timers.delete(t);
          for (const s of servers) reloadPolicy(gateway, s, file, log);
        }, SETTLE_MS);
        pending.set(file, t);
        timers.add(t);
      });
      w.unref();
      watchers.push(w);
    } catch (err) {
      log.warn({ dir, err: (err as Error).message }, 'cannot watch policy files; changes need a restart');
    }
  }
  return () => {
    for (const w of watchers) w.close();
    for (const t of timers) clearTimeout(t);
  };
}

/** Says, once per load, what converting a policy from another format carried over with a caveat. */
export function logConversionWarnings(log: Logger, server: string, policy: CompiledPolicy): void {
  for (const warning of policy.warnings ?? []) log.warn({ server, from: policy.convertedFrom, warning }, 'policy converted with a caveat');
}
