/**
 * How replicas tell each other that an approval changed in the control store, so the replica
 * holding the call wakes as soon as a person decides on another one.
 *
 * A notification carries only the approval's id. It is a hint to look, never the decision itself:
 * the receiver reads the record from the store, which is the one source of truth. So a lost,
 * repeated, late or forged message can delay a wake-up (until the service's poll of the store) but
 * never approve, deny or release anything.
 *
 * Implementations: notifier/local.ts (one process: every service sharing it hears every publish)
 * and notifier/redis.ts (Redis pub/sub, across processes and hosts).
 */
export interface ApprovalNotifier {
  /** `local` or `redis`. */
  readonly kind: string;
  /**
   * Tells every subscriber, in this process and others, that approval `id` changed. Delivery is
   * at most once and may fail (Redis unreachable): the store, polled, covers what is lost.
   */
  publish(id: string): Promise<void>;
  /**
   * Calls `listener` with the id of every approval published from now on (this process's own
   * publishes included), never synchronously inside `publish`. Resolves once messages flow, or
   * rejects if they do not yet (the subscription keeps trying in the background); resolves to
   * the function that stops the listener.
   */
  subscribe(listener: (id: string) => void): Promise<() => void>;
  close(): Promise<void>;
}
