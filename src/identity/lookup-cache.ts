/**
 * Store lookups reused for a short time, so a request does not wait for the database while a
 * change made anywhere (a revocation) still applies within the time to live. The promise is what
 * is kept, so concurrent requests for one key share one lookup; a lookup that fails is forgotten
 * at once, so the next request asks the store again.
 */
export class LookupCache<T> {
  private readonly entries = new Map<string, { at: number; lookup: Promise<T> }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly now: () => number,
  ) {}

  get(key: string, load: () => Promise<T>): Promise<T> {
    const now = this.now();
    const hit = this.entries.get(key);
    if (hit !== undefined && now - hit.at < this.ttlMs) return hit.lookup;
    const lookup = load();
    lookup.catch(() => this.entries.delete(key));
    // Maps iterate in insertion order: the first key is the oldest entry. The bound keeps a
    // stream of made-up tokens from growing the cache.
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.delete(key);
    this.entries.set(key, { at: now, lookup });
    return lookup;
  }

  clear(): void {
    this.entries.clear();
  }
}
