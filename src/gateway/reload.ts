/**
 * Hot reload of policy files. Each server's policy file is watched; a valid change is swapped in
 * whole for the next call, an invalid one keeps the policy in force and logs every problem with its
 * location. When the set of tools a client may see changes, its clients are sent
 * `notifications/tools/list_changed` so they list again.
 */
import { statSync, watch, type FSWatcher } from 'node:fs';
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

/** How often a policy file that is gone is looked for again. */
const MISSING_RETRY_MS = 1_000;

/** Watches every server's policy file; returns a function that stops watching. */
export function watchPolicies(gateway: Gateway, log: Logger): () => void {
  const byFile = new Map<string, ServerRuntime[]>();
  for (const server of gateway.servers.values()) {
    const source = server.policy.source;
    // Inline policies (`<inline>`) live in gateway.yaml, which is not reloaded.
    if (source.startsWith('<')) continue;
    const file = path.resolve(source);
    byFile.set(file, [...(byFile.get(file) ?? []), server]);
  }
  const stops = [...byFile].map(([file, servers]) =>
    followFile(file, log, () => {
      for (const s of servers) reloadPolicy(gateway, s, file, log);
    }),
  );
  return () => {
    for (const stop of stops) stop();
  };
}

/**
 * Calls `changed` once a change to what the path `file` names has settled; returns a function that
 * stops watching.
 *
 * The file is watched, not its folder: a folder also holds other files (an audit database's WAL
 * beside the policy would wake the gateway on every write), and a Kubernetes ConfigMap changes
 * its files by switching a symlink (`..data`) whose name is none of theirs. A watch is bound to
 * the file the path named when it was set, so when that file is replaced (saved by rename, the
 * symlink switched, deleted) the path is watched again, and read again, since it may have changed
 * while nothing watched it. While the path names nothing, it is looked for every second; the
 * policy in force stays.
 */
function followFile(file: string, log: Logger, changed: () => void): () => void {
  let watcher: FSWatcher | undefined;
  let settle: NodeJS.Timeout | undefined;
  let rearm: NodeJS.Timeout | undefined;
  let stopped = false;
  let missing = false;
  /** The inode the watch is bound to. */
  let watched: number | undefined;

  const schedule = () => {
    clearTimeout(settle);
    settle = setTimeout(() => {
      settle = undefined;
      if (stopped) return;
      // A file replaced while something still holds it open is not deleted yet, and its watch
      // hears only that it lost its name: whether the path names another file says it. Watching
      // that file reads it.
      if (watcher !== undefined && inodeOf(file) !== watched) {
        again(0);
        return;
      }
      log.debug({ file }, 'reading the policy file again');
      changed();
    }, SETTLE_MS).unref();
  };
  const again = (ms: number) => {
    watcher?.close();
    watcher = undefined;
    clearTimeout(rearm);
    rearm = setTimeout(() => arm(true), ms).unref();
  };
  const arm = (replaced: boolean) => {
    rearm = undefined;
    if (stopped) return;
    let w: FSWatcher;
    try {
      w = watch(file, (event) => {
        // Editors write in several steps (truncate, write, rename): act once they are done. After
        // a rename the path may name another file: that one is watched, and read, once they are.
        if (event === 'rename') again(SETTLE_MS);
        else schedule();
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        log.warn({ file, err: (err as Error).message }, 'cannot watch the policy file; changes need a restart');
        return;
      }
      if (!missing) log.warn({ file }, 'the policy file is gone; the policy in force stays until the file is back');
      missing = true;
      again(MISSING_RETRY_MS);
      return;
    }
    // A watch can fail later (the file's folder removed, say): look for the path again.
    w.on('error', () => again(MISSING_RETRY_MS));
    w.unref();
    watcher = w;
    watched = inodeOf(file);
    if (missing) log.info({ file }, 'the policy file is back');
    missing = false;
    if (replaced) schedule();
  };

  arm(false);
  return () => {
    stopped = true;
    watcher?.close();
    clearTimeout(settle);
    clearTimeout(rearm);
  };
}

function inodeOf(file: string): number | undefined {
  try {
    return statSync(file).ino;
  } catch {
    return undefined;
  }
}

/** Says, once per load, what converting a policy from another format carried over with a caveat. */
export function logConversionWarnings(log: Logger, server: string, policy: CompiledPolicy): void {
  for (const warning of policy.warnings ?? []) log.warn({ server, from: policy.convertedFrom, warning }, 'policy converted with a caveat');
}
