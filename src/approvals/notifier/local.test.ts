import { it } from 'node:test';
import assert from 'node:assert/strict';
import { createLocalNotifier } from './local.js';

it('delivers a published id to every subscriber of the process, on a later turn rather than inside publish', async () => {
  const bus = createLocalNotifier();
  const heard: string[] = [];
  await bus.subscribe((id) => heard.push(`a:${id}`));
  await bus.subscribe((id) => heard.push(`b:${id}`));
  const published = bus.publish('x');
  assert.deepEqual(heard, [], 'nothing runs inside publish');
  await published;
  await Promise.resolve();
  assert.deepEqual(heard.sort(), ['a:x', 'b:x']);
});

it('stops delivering to a listener that unsubscribed, and to every listener once closed', async () => {
  const bus = createLocalNotifier();
  const heard: string[] = [];
  const stop = await bus.subscribe((id) => heard.push(`a:${id}`));
  await bus.subscribe((id) => heard.push(`b:${id}`));
  stop();
  await bus.publish('1');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(heard, ['b:1']);
  await bus.close();
  await bus.publish('2');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(heard, ['b:1']);
});
