import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BusyPoller, otherWorkWaits, pauseBusyPollWhile } from './busy-poll.js';

/** A poller on a hand-moved clock, whose event-loop turns run only when the test says. */
function harness(windowUs: number) {
  let now = 0;
  let turn: (() => void) | undefined;
  let turns = 0;
  let paused = false;
  const poller = new BusyPoller({
    windowUs,
    now: () => now,
    paused: () => paused,
    schedule: (fn) => {
      assert.equal(turn, undefined, 'one turn is scheduled at a time');
      turn = fn;
    },
  });
  return {
    poller,
    /** Moves the clock by `us` microseconds. */
    advance(us: number) {
      now += us / 1000;
    },
    /** Runs one turn of the event loop. */
    turnOnce() {
      const fn = turn;
      assert.ok(fn, 'a turn is scheduled');
      turn = undefined;
      turns++;
      fn();
    },
    get scheduled() {
      return turn !== undefined;
    },
    get turns() {
      return turns;
    },
    /** Says whether other work of the process waits for a CPU. */
    pause(on: boolean) {
      paused = on;
    },
  };
}

test('an idle poller keeps nothing scheduled: the event loop sleeps as usual', () => {
  const h = harness(300);
  h.advance(1_000_000);
  assert.equal(h.scheduled, false);
  assert.equal(h.poller.isPolling, false);
});

test('after a message the event loop keeps turning until the window has passed, then stops', () => {
  const h = harness(300);
  h.poller.touch();
  assert.equal(h.poller.isPolling, true);
  for (let i = 0; i < 5; i++) {
    h.advance(50);
    h.turnOnce();
    assert.equal(h.scheduled, true, `still within the window after ${(i + 1) * 50} µs`);
  }
  h.advance(60);
  h.turnOnce();
  assert.equal(h.scheduled, false);
  assert.equal(h.poller.isPolling, false);
});

test('a message within the window extends it from its own arrival, without a second polling loop', () => {
  const h = harness(300);
  h.poller.touch();
  h.advance(250);
  h.poller.touch();
  h.advance(250);
  h.turnOnce();
  assert.equal(h.poller.isPolling, true, '500 µs after the first message, 250 after the second');
  h.advance(60);
  h.turnOnce();
  assert.equal(h.poller.isPolling, false);
  assert.equal(h.turns, 2);
});

test('a message after the window passed starts a new one', () => {
  const h = harness(100);
  h.poller.touch();
  h.advance(150);
  h.turnOnce();
  assert.equal(h.poller.isPolling, false);
  h.advance(10_000);
  h.poller.touch();
  assert.equal(h.poller.isPolling, true);
  assert.equal(h.scheduled, true);
});

test('turned off (0 µs), it never polls', () => {
  const h = harness(0);
  for (let i = 0; i < 10; i++) {
    h.advance(10);
    h.poller.touch();
  }
  assert.equal(h.scheduled, false);
  assert.equal(h.poller.isPolling, false);
});

test('stopped, it ends the window at the next turn and polls no more', () => {
  const h = harness(300);
  h.poller.touch();
  h.poller.stop();
  h.turnOnce();
  assert.equal(h.poller.isPolling, false);
  assert.equal(h.scheduled, false);
  h.poller.touch();
  assert.equal(h.scheduled, false);
});

test('with the real event loop, a window of polling ends by itself and lets the process go idle', async () => {
  const poller = new BusyPoller({ windowUs: 2000 });
  poller.touch();
  assert.equal(poller.isPolling, true);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(poller.isPolling, false);
});

test('while other work of the process waits for a CPU, the event loop stops polling at its next turn and sleeps between messages', () => {
  const h = harness(300);
  h.poller.touch();
  h.advance(50);
  h.turnOnce();
  assert.equal(h.scheduled, true, 'polling, within the window');
  h.pause(true);
  h.advance(50);
  h.turnOnce();
  assert.equal(h.poller.isPolling, false, 'stopped although the window has not passed');
  assert.equal(h.scheduled, false);
  h.poller.touch();
  assert.equal(h.scheduled, false, 'a message meanwhile does not start polling again');
  h.pause(false);
  h.poller.touch();
  assert.equal(h.poller.isPolling, true, 'the first message after the work is done does');
  assert.equal(h.scheduled, true);
});

test('polling is paused while some registered work says it waits, and no longer once its registration is undone', () => {
  let waits = false;
  const undo = pauseBusyPollWhile(() => waits);
  try {
    assert.equal(otherWorkWaits(), false);
    waits = true;
    assert.equal(otherWorkWaits(), true);
    const poller = new BusyPoller({ windowUs: 300, schedule: () => assert.fail('no turn is scheduled while paused') });
    poller.touch();
    assert.equal(poller.isPolling, false);
  } finally {
    undo();
  }
  assert.equal(otherWorkWaits(), false, 'undone, although the work still says it waits');
});
