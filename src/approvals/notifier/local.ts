/**
 * The in-process notifier: for a single gateway process, where the approver (admin API, CLI
 * through the API, elicitation) and the held call meet in one process. Services sharing one local
 * notifier in a process behave as replicas do across Redis, which tests rely on.
 */
import type { ApprovalNotifier } from '../notifier.js';

export function createLocalNotifier(): ApprovalNotifier {
  const listeners = new Set<(id: string) => void>();
  let closed = false;
  return {
    kind: 'local',
    async publish(id: string): Promise<void> {
      if (closed) return;
      // Delivered on a later turn, as a network bus would: a listener never runs inside the
      // publisher's own state change.
      for (const listener of listeners) queueMicrotask(() => listener(id));
    },
    async subscribe(listener: (id: string) => void): Promise<() => void> {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close(): Promise<void> {
      closed = true;
      listeners.clear();
    },
  };
}
