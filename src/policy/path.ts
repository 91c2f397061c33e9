// Argument paths of conditions: where in a call's arguments a condition looks.
//
//   args.amount            a property
//   args.a.b.c             nested properties
//   args.items.0.name      an array element by index (also a property named "0" of an object)
//   args.items[0].name     the same, in bracket form
//   args.items[*].name     every element of an array (see `quantify` for what "every" means)
//
// A path resolves to one or more leaves, each a value or MISSING. Resolution never looks up the
// prototype chain (own properties only), so `args.constructor` or `args.__proto__` are simply
// missing unless the agent sent such a key.

/** Source of the regular expression a condition path must match (also used by the JSON Schema). */
export const CONDITION_PATH_PATTERN = '^args(?:\\.[^.\\s\\[\\]*]+|\\[(?:0|[1-9][0-9]*|\\*)\\])+$';

const CONDITION_PATH = new RegExp(CONDITION_PATH_PATTERN);
const STEP = /\.([^.\s[\]*]+)|\[(0|[1-9][0-9]*|\*)\]/y;
const CANONICAL_INDEX = /^(?:0|[1-9][0-9]*)$/;

/** Stands for "no value here": an absent property, an index past the end, or `undefined`. */
export const MISSING: unique symbol = Symbol('missing');
export type Missing = typeof MISSING;

export interface PathStep {
  /** The property name (for `[n]` and `.n`, the digits). */
  readonly key: string;
  /** The array index when `key` is a canonical non-negative integer, else -1. */
  readonly index: number;
  /** `[*]`: every element of an array. */
  readonly any: boolean;
  /** The step as written (`.amount`, `[0]`, `[*]`), to name a leaf in messages. */
  readonly text: string;
}

/** Splits `args.<path>` into steps, or returns undefined when it is not a valid condition path. */
export function parseConditionPath(path: string): readonly PathStep[] | undefined {
  if (!CONDITION_PATH.test(path)) return undefined;
  const steps: PathStep[] = [];
  let at = 'args'.length;
  while (at < path.length) {
    STEP.lastIndex = at;
    const m = STEP.exec(path);
    if (m === null) return undefined;
    const key = m[1] ?? m[2] ?? '';
    const any = m[2] === '*';
    const index = !any && CANONICAL_INDEX.test(key) ? Number(key) : -1;
    steps.push(Object.freeze({ key, index: Number.isSafeInteger(index) ? index : -1, any, text: m[0] }));
    at = STEP.lastIndex;
  }
  return Object.freeze(steps);
}

function child(v: unknown, s: PathStep): unknown {
  let x: unknown;
  if (Array.isArray(v)) {
    if (s.index < 0 || s.index >= v.length) return MISSING;
    x = v[s.index];
  } else if (typeof v === 'object' && v !== null && Object.hasOwn(v, s.key)) {
    x = (v as Record<string, unknown>)[s.key];
  } else {
    return MISSING;
  }
  return x === undefined ? MISSING : x;
}

/**
 * Applies `test` to every leaf of `steps` under `root` and combines the answers:
 * with `every` true, whether all leaves pass (a `require`); with `every` false, whether any leaf
 * passes (a `deny_if`). `[*]` over an empty array yields no leaf, so `every` holds and `any`
 * does not; `[*]` over anything that is not an array (missing included) yields one MISSING leaf.
 * Recursion depth is bounded by the number of steps in the policy, never by the arguments.
 */
export function quantify(root: unknown, steps: readonly PathStep[], every: boolean, test: (v: unknown) => boolean): boolean {
  return walk(root, steps, 0, every, test);
}

function walk(v: unknown, steps: readonly PathStep[], from: number, every: boolean, test: (v: unknown) => boolean): boolean {
  for (let i = from; i < steps.length && v !== MISSING; i++) {
    const s = steps[i] as PathStep;
    if (!s.any) {
      v = child(v, s);
      continue;
    }
    if (!Array.isArray(v)) return test(MISSING);
    for (let j = 0; j < v.length; j++) {
      const el: unknown = v[j];
      const r = walk(el === undefined ? MISSING : el, steps, i + 1, every, test);
      if (r !== every) return r;
    }
    return every;
  }
  return test(v);
}

/**
 * The first leaf whose test answer differs from `every` (the element that made a `require`
 * fail or a `deny_if` fire), named with concrete indices: `args.items[2].price`.
 */
export function offendingLeaf(
  root: unknown,
  steps: readonly PathStep[],
  every: boolean,
  test: (v: unknown) => boolean,
): { path: string; value: unknown } | undefined {
  return find(root, steps, 0, 'args', every, test);
}

function find(
  v: unknown,
  steps: readonly PathStep[],
  from: number,
  prefix: string,
  every: boolean,
  test: (v: unknown) => boolean,
): { path: string; value: unknown } | undefined {
  let path = prefix;
  for (let i = from; i < steps.length; i++) {
    const s = steps[i] as PathStep;
    if (s.any && Array.isArray(v)) {
      for (let j = 0; j < v.length; j++) {
        const el: unknown = v[j];
        const hit = find(el === undefined ? MISSING : el, steps, i + 1, `${path}[${j}]`, every, test);
        if (hit !== undefined) return hit;
      }
      return undefined;
    }
    path += s.text;
    v = v === MISSING || s.any ? MISSING : child(v, s);
  }
  return test(v) !== every ? { path, value: v } : undefined;
}
