/**
 * The longest step some work took in one piece on the event loop, since it was last taken: what
 * the audit log's benchmarks hold to the "about a millisecond".
 */
import { performance } from 'node:perf_hooks';

export class LongestStep {
  private longest = 0;

  /** A step that began at `start` (performance.now()) ends now. */
  ended(start: number): void {
    const took = performance.now() - start;
    if (took > this.longest) this.longest = took;
  }

  /** The longest step since the last call, ms; 0 if there was none. */
  take(): number {
    const longest = this.longest;
    this.longest = 0;
    return longest;
  }
}
