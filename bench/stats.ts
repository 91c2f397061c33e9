/** Latency statistics over every sample (no histogram buckets, no sampling): exact percentiles. */

export interface Summary {
  calls: number;
  /** Calls per second over the measured time. */
  rate: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/**
 * Nearest-rank percentile of ascending `sorted` values: the smallest value with at least `p`% of
 * the samples at or below it.
 */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** A growable array of latencies in nanoseconds. */
export class Samples {
  private data = new Float64Array(1 << 16);
  length = 0;

  push(ns: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = ns;
  }

  /** The `p` percentile, µs, of the samples pushed from index `from` on (one round's, say). */
  percentileSince(from: number, p: number): number {
    return percentile(this.data.slice(from, this.length).sort(), p) / 1000;
  }

  /** Latencies in microseconds, with calls per second from `calls` over `elapsedNs`. */
  summarize(calls: number, elapsedNs: number): Summary {
    const sorted = this.data.slice(0, this.length).sort();
    let sum = 0;
    for (let i = 0; i < sorted.length; i++) sum += sorted[i]!;
    const us = (ns: number) => ns / 1000;
    return {
      calls,
      rate: elapsedNs > 0 ? calls / (elapsedNs / 1e9) : 0,
      p50: us(percentile(sorted, 50)),
      p90: us(percentile(sorted, 90)),
      p99: us(percentile(sorted, 99)),
      max: us(sorted.length > 0 ? sorted[sorted.length - 1]! : NaN),
      mean: us(sorted.length > 0 ? sum / sorted.length : NaN),
    };
  }
}
