import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LongestStep, longestOf } from './longest-step.js';

/** Keeps the thread busy for `ms` on the clock. */
function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

describe('the longest step', () => {
  it('keeps the longest step on the clock until it is taken, then starts again from nothing', () => {
    const steps = new LongestStep();
    for (const ms of [1, 4, 2]) {
      const start = steps.start();
      spin(ms);
      steps.ended(start);
    }
    const { clock, own } = steps.take();
    assert.ok(clock >= 4, `longest ${clock} ms`);
    assert.equal(own, clock, 'with no word of waits, a step is all its own');
    assert.deepEqual(steps.take(), { clock: 0, own: 0 });
  });

  it('leaves out of a step’s own time what the thread waited for a CPU during it, as it is told', (t) => {
    let waited = 100;
    t.after(() => (LongestStep.waited = () => 0));
    LongestStep.waited = () => waited;
    const steps = new LongestStep();
    const start = steps.start();
    spin(5);
    // Of those 5 ms, the thread waited 3 for a core.
    waited += 3;
    steps.ended(start);
    const { clock, own } = steps.take();
    assert.ok(clock >= 5);
    assert.ok(Math.abs(clock - 3 - own) < 1e-9, `${own} ms of its own of ${clock} on the clock`);
  });

  it('takes the longest of several timers each way, from whichever step it was', () => {
    assert.deepEqual(
      longestOf([
        { clock: 3, own: 0.5 },
        { clock: 1, own: 0.9 },
      ]),
      { clock: 3, own: 0.9 },
    );
    assert.deepEqual(longestOf([]), { clock: 0, own: 0 });
  });
});
