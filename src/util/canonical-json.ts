/**
 * JSON with object keys sorted at every depth and `undefined` members left out: one text per
 * value, whatever order its keys were built in. Content hashes (policy versions, audit records)
 * are taken over this form, so equal values always hash the same.
 */
export function canonicalJson(v: unknown): string {
  if (typeof v === 'object' && v !== null) {
    const known = KNOWN.get(v);
    if (known !== undefined) return known;
  }
  return serialise(v);
}

/**
 * Frozen values whose canonical text was worked out where they were made, more cheaply than
 * serialise() would (the audit log's `keys` arguments, made and hashed into every record).
 */
const KNOWN = new WeakMap<object, string>();

/**
 * Freezes `v` and remembers `text` as its canonical JSON, which the caller vouches for; the
 * freezing keeps it true. Returns `v`.
 */
export function withCanonicalJson<T extends object>(v: T, text: string): Readonly<T> {
  KNOWN.set(Object.freeze(v), text);
  return v;
}

/**
 * The canonical text of `v` when it was given with withCanonicalJson, else undefined: JSON for
 * writing `v` down, without serialising it again.
 */
export function knownJson(v: object): string | undefined {
  return KNOWN.get(v);
}

function serialise(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : serialise(x))).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const keys = Object.keys(v).sort();
    const parts: string[] = [];
    for (const k of keys) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) parts.push(`${JSON.stringify(k)}:${serialise(x)}`);
    }
    return `{${parts.join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
