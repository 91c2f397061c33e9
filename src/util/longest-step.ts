/**
 * The longest step some work took in one piece on the event loop, since it was last taken: what
 * the audit log's benchmarks hold to the "about a millisecond".
 */
import { performance } from 'node:perf_hooks';

/** A step's length, ms: on the clock, and without the time its thread waited for a CPU. */
export interface StepTimes {
  readonly clock: number;
  /**
   * The clock less the time the thread spent waiting for a CPU while it was runnable (taken by
   * another thread, another process, the kernel): the step's own time. The same as `clock` unless
   * LongestStep.waited says how long the thread has waited.
   */
  readonly own: number;
}

export class LongestStep {
  /**
   * How long this thread has waited for a CPU so far, ms; by default not known, 0. A benchmark
   * sets it (on Linux from /proc/thread-self/schedstat) to tell a step's own time from the time
   * the machine kept the thread off the CPU, which a step on the clock counts whole.
   */
  static waited: () => number = () => 0;

  private longestClock = 0;
  private longestOwn = 0;
  /** waited() when the step under way began: steps of one timer do not overlap. */
  private waitedAtStart = 0;

  /** A step begins: returns its start, for ended(). */
  start(): number {
    this.waitedAtStart = LongestStep.waited();
    return performance.now();
  }

  /** The step that began at `start` (start()) ends now. */
  ended(start: number): void {
    const clock = performance.now() - start;
    const own = clock - (LongestStep.waited() - this.waitedAtStart);
    if (clock > this.longestClock) this.longestClock = clock;
    if (own > this.longestOwn) this.longestOwn = own;
  }

  /** The longest step since the last call, each way; 0 if there was none. */
  take(): StepTimes {
    const times = { clock: this.longestClock, own: this.longestOwn };
    this.longestClock = 0;
    this.longestOwn = 0;
    return times;
  }
}

/** The longer of each of `times`' measures (each may come from another step). */
export function longestOf(times: readonly StepTimes[]): StepTimes {
  let clock = 0;
  let own = 0;
  for (const t of times) {
    if (t.clock > clock) clock = t.clock;
    if (t.own > own) own = t.own;
  }
  return { clock, own };
}
