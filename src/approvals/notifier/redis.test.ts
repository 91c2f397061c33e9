import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ApprovalNotifier } from '../notifier.js';
import { createRedisNotifier } from './redis.js';

const REDIS_URL = process.env.REDIS_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
// Every channel this run uses starts with this, so parallel runs never hear each other.
const RUN = `pl-test-${randomBytes(5).toString('hex')}`;

/** Resolves once `heard` holds `n` entries, or fails after two seconds. */
async function until(heard: string[], n: number): Promise<void> {
  const deadline = Date.now() + 2_000;
  while (heard.length < n) {
    if (Date.now() > deadline) assert.fail(`heard ${heard.length} of ${n} messages: ${JSON.stringify(heard)}`);
    await sleep(5);
  }
}

/** A port on this host that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('Redis approval notifier', () => {
  it('rejects a publish promptly when Redis cannot be reached, and a subscribe once its connect timeout passes', async () => {
    const errors: unknown[] = [];
    const notifier = createRedisNotifier({ url: `redis://127.0.0.1:${await closedPort()}`, connectTimeoutMs: 200, onError: (err) => errors.push(err) });
    try {
      const started = Date.now();
      await assert.rejects(notifier.publish('x'));
      await assert.rejects(notifier.subscribe(() => {}), /not subscribed to Redis within 200 ms; still trying/);
      assert.ok(Date.now() - started < 2_000, 'neither waits for Redis longer than its timeout');
      assert.ok(errors.length > 0, 'connection errors are reported, not thrown');
    } finally {
      await notifier.close();
    }
  });

  if (REDIS_URL === undefined) {
    if (REQUIRED) {
      it('is tested against REDIS_URL, which REQUIRE_SERVICES=1 makes mandatory', () => assert.fail('REQUIRE_SERVICES=1 but REDIS_URL is not set'));
    } else {
      it('is tested against REDIS_URL', { skip: 'REDIS_URL is not set (REQUIRE_SERVICES=1 makes this a failure)' }, () => {});
    }
    return;
  }
  const url = REDIS_URL;
  let channels = 0;
  const open = (channel: string): ApprovalNotifier => createRedisNotifier({ url, channel, onError: (err) => assert.fail(String(err)) });

  it('delivers a published id to every subscriber of its channel, over other connections and its own, and to none of another channel', async () => {
    const channel = `${RUN}:${++channels}`;
    const [a, b, other] = [open(channel), open(channel), open(`${channel}-other`)];
    try {
      const heard: string[] = [];
      await a.subscribe((id) => heard.push(`a:${id}`));
      await b.subscribe((id) => heard.push(`b:${id}`));
      await other.subscribe((id) => heard.push(`other:${id}`));
      await a.publish('approval-1');
      await until(heard, 2);
      await sleep(50);
      assert.deepEqual(heard.sort(), ['a:approval-1', 'b:approval-1']);
    } finally {
      await Promise.all([a.close(), b.close(), other.close()]);
    }
  });

  it('stops delivering to a listener once it unsubscribes, while the others still hear', async () => {
    const channel = `${RUN}:${++channels}`;
    const [sender, receiver] = [open(channel), open(channel)];
    try {
      const heard: string[] = [];
      const stop = await receiver.subscribe((id) => heard.push(`first:${id}`));
      await receiver.subscribe((id) => heard.push(`second:${id}`));
      await sender.publish('1');
      await until(heard, 2);
      stop();
      await sender.publish('2');
      await until(heard, 3);
      await sleep(50);
      assert.deepEqual(heard.sort(), ['first:1', 'second:1', 'second:2']);
    } finally {
      await Promise.all([sender.close(), receiver.close()]);
    }
  });
});
