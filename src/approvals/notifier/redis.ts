/**
 * The Redis notifier: approval changes announced on one pub/sub channel to every replica that
 * points at the same Redis (the one the counters already use, in a multi-replica deployment).
 *
 * Why two connections: a connection that has subscribed can do nothing but (un)subscribe, so
 * publishing needs its own. The publisher fails fast while Redis is down (no offline queue, no
 * retries: a lost notification costs at most one poll interval, a queued one could arrive long
 * after it meant anything). The subscriber waits for Redis as long as it takes and, through
 * ioredis's autoResubscribe, subscribes again after every reconnect; messages published while it
 * was away are lost, which is why the approval service also polls the store.
 */
import { Redis } from 'ioredis';
import type { ApprovalNotifier } from '../notifier.js';
import { quitRedis } from '../../util/redis-quit.js';

export interface RedisNotifierOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS. */
  url: string;
  /** The pub/sub channel; default `pl:approvals`. Replicas that should hear each other use the same one. */
  channel?: string;
  /** Told about connection errors and failed background subscriptions (never fatal). */
  onError?: (err: unknown) => void;
  /** How long publish and subscribe wait for a first connection; default 2,000 ms. */
  connectTimeoutMs?: number;
}

export function createRedisNotifier(opts: RedisNotifierOptions): ApprovalNotifier {
  return new RedisApprovalNotifier(opts);
}

const retryStrategy = (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000);

class RedisApprovalNotifier implements ApprovalNotifier {
  readonly kind = 'redis';
  private readonly channel: string;
  private readonly url: string;
  private readonly onError: ((err: unknown) => void) | undefined;
  private readonly connectTimeout: number;
  private readonly pub: Redis;
  private sub: Redis | undefined;
  private subscribed: Promise<void> | undefined;
  private readonly listeners = new Set<(id: string) => void>();
  // pending until the publisher's first connection is ready or the connect timeout passes
  private startup: Promise<void> | undefined;

  constructor(opts: RedisNotifierOptions) {
    this.url = opts.url;
    this.channel = opts.channel ?? 'pl:approvals';
    this.onError = opts.onError;
    this.connectTimeout = opts.connectTimeoutMs ?? 2_000;
    this.pub = new Redis(opts.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: this.connectTimeout,
      commandTimeout: 1_000,
      retryStrategy,
    });
    this.pub.on('error', (err: unknown) => this.onError?.(err));
    this.startup = new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.pub.off('ready', done);
        this.pub.off('end', done);
        this.startup = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.connectTimeout);
      timer.unref();
      this.pub.once('ready', done);
      this.pub.once('end', done);
    });
  }

  async publish(id: string): Promise<void> {
    if (this.startup !== undefined) await this.startup;
    await this.pub.publish(this.channel, id);
  }

  async subscribe(listener: (id: string) => void): Promise<() => void> {
    this.listeners.add(listener);
    const stop = () => {
      this.listeners.delete(listener);
    };
    if (this.subscribed === undefined) {
      const sub = new Redis(this.url, {
        // Wait for Redis however long it takes: the subscription is a standing order.
        maxRetriesPerRequest: null,
        connectTimeout: this.connectTimeout,
        retryStrategy,
        autoResubscribe: true,
      });
      sub.on('error', (err: unknown) => this.onError?.(err));
      sub.on('message', (channel: string, message: string) => {
        if (channel !== this.channel) return;
        for (const l of this.listeners) {
          try {
            l(message);
          } catch (err) {
            this.onError?.(err);
          }
        }
      });
      this.sub = sub;
      this.subscribed = sub.subscribe(this.channel).then(() => undefined);
      // Whoever awaits it below may have given up; a late failure is reported, not left unhandled.
      this.subscribed.catch((err: unknown) => this.onError?.(err));
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`approval notifications: not subscribed to Redis within ${this.connectTimeout} ms; still trying`)), this.connectTimeout);
    });
    try {
      await Promise.race([this.subscribed, timeout]);
    } finally {
      clearTimeout(timer);
    }
    return stop;
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await Promise.all([quitRedis(this.pub), this.sub === undefined ? undefined : quitRedis(this.sub)]);
  }
}
