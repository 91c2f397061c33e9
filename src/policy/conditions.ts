// Argument conditions (`require` and `deny_if`): the operators, the checks the schema runs on
// their values, and the words a generated denial uses.
//
// Type rules, one for every operator: a leaf that is MISSING, or of a type the operator does not
// apply to, does not pass. So a `require` on it denies and a `deny_if` on it does not fire.
//   - lt lte gt gte: the argument must be a JSON number; "50001" (a string) passes none of them.
//   - eq neq in not_in: deep equality of JSON values (object key order is ignored; 1 and 1.0
//     are equal). Any present value passes `neq` / `not_in` when it differs; MISSING passes none.
//   - contains: a string argument contains the value as a substring (the value must be a string
//     then); an array argument contains an element deep-equal to the value.
//   - exists true|false: the only operator MISSING passes (with false). JSON null is present.
//   - regex: RE2 syntax (linear time), unanchored, strings only.
//   - path_prefix, url_host: strings only; see underPrefix and urlHost.
import { RE2JS } from 're2js';
import { MISSING, offendingLeaf, parseConditionPath } from './path.js';
import type { CompiledCondition, ConditionOp } from './types.js';

/** A condition as the schema validated it. */
export interface ConditionDocument {
  readonly path: string;
  readonly op: ConditionOp;
  readonly value: unknown;
  readonly reason?: string | undefined;
}

// The schema compiles each regex while validating (that is how a bad pattern becomes a load error
// with its line); keeping the result against the validated condition object means compile.ts
// does not compile it a second time.
const compiledRegex = new WeakMap<object, RE2JS>();

/** Compiles a condition's regex, or returns why it cannot be (for the schema's message). */
export function checkRegex(condition: object, pattern: string): string | undefined {
  try {
    compiledRegex.set(condition, RE2JS.compile(pattern));
    return undefined;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return `invalid or unsupported regular expression (RE2 syntax: no backreferences or lookaround): ${message}`;
  }
}

function regexOf(condition: ConditionDocument): RE2JS {
  return compiledRegex.get(condition) ?? RE2JS.compile(condition.value as string);
}

/** Deep equality of JSON values. Recursion is bounded by the depth of `expected` (the policy's). */
export function jsonEqual(actual: unknown, expected: unknown): boolean {
  if (actual === expected) return true;
  if (typeof actual !== 'object' || typeof expected !== 'object' || actual === null || expected === null) return false;
  const isArray = Array.isArray(expected);
  if (Array.isArray(actual) !== isArray) return false;
  if (isArray) {
    const a = actual as unknown[];
    const e = expected as unknown[];
    if (a.length !== e.length) return false;
    for (let i = 0; i < e.length; i++) if (!jsonEqual(a[i], e[i])) return false;
    return true;
  }
  const eKeys = Object.keys(expected);
  if (Object.keys(actual).length !== eKeys.length) return false;
  for (const k of eKeys) {
    if (!Object.hasOwn(actual, k)) return false;
    if (!jsonEqual((actual as Record<string, unknown>)[k], (expected as Record<string, unknown>)[k])) return false;
  }
  return true;
}

// ---- path_prefix ----------------------------------------------------------------------------

/** A `path_prefix` entry, normalised: absolute or relative, and its segments. */
export interface PathPrefix {
  readonly absolute: boolean;
  readonly segments: readonly string[];
}

/**
 * Normalises an allowed prefix: `//` collapses, `.` segments and a trailing `/` drop. A prefix
 * may not contain `..` or a NUL byte (returns undefined).
 */
export function normalisePrefix(prefix: string): PathPrefix | undefined {
  if (prefix === '' || prefix.includes('\0')) return undefined;
  const segments: string[] = [];
  for (const part of prefix.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') return undefined;
    segments.push(part);
  }
  return { absolute: prefix.startsWith('/'), segments };
}

/**
 * Whether the path string stays under one of the prefixes, read lexically and POSIX-style:
 * empty and `.` segments are ignored, `..` removes the previous segment. The path must spell out
 * the prefix first, and a `..` may never climb back to or above the prefix (even if a later
 * segment returns into it: `/srv/data/../data/x` does not match `/srv/data`, because with
 * symlinks `data/..` need not be `/srv`). A NUL byte never matches; an absolute path only
 * matches absolute prefixes and a relative path only relative ones. Symlinks, percent-encoding,
 * `~` and backslashes are not interpreted: the check sees only the string.
 */
export function underPrefix(path: string, prefixes: readonly PathPrefix[]): boolean {
  if (path.includes('\0')) return false;
  const absolute = path.startsWith('/');
  const parts = path.split('/');
  for (const p of prefixes) if (p.absolute === absolute && within(parts, p.segments)) return true;
  return false;
}

function within(parts: readonly string[], prefix: readonly string[]): boolean {
  let depth = 0;
  for (const part of parts) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (depth <= prefix.length) return false;
      depth--;
      continue;
    }
    if (depth < prefix.length && part !== prefix[depth]) return false;
    depth++;
  }
  return depth >= prefix.length;
}

// ---- url_host -------------------------------------------------------------------------------

/** A `url_host` entry, normalised: `host` exactly, or (wildcard) any subdomain of it. */
export interface HostPattern {
  readonly host: string;
  readonly wildcard: boolean;
}

const IP_LITERAL = /^(?:\d+\.\d+\.\d+\.\d+|\[.*\])$/;

/**
 * Normalises an allowed host the way the WHATWG URL parser normalises a URL's host (lowercase,
 * IDNA to punycode, trailing dot removed). `*.example.com` matches subdomains of example.com at
 * any depth, not example.com itself. A port, path, userinfo or other `*` is invalid (undefined).
 */
export function normaliseHostPattern(entry: string): HostPattern | undefined {
  const wildcard = entry.startsWith('*.');
  const name = wildcard ? entry.slice(2) : entry;
  if (name === '' || /[\s*/\\@?#%]/u.test(name) || (name.includes(':') && !name.startsWith('['))) return undefined;
  let url: URL;
  try {
    url = new URL(`http://${name}/`);
  } catch {
    return undefined;
  }
  if (url.port !== '' || url.username !== '' || url.password !== '' || url.pathname !== '/') return undefined;
  const host = stripDot(url.hostname);
  if (host === '' || (wildcard && IP_LITERAL.test(host))) return undefined;
  return { host, wildcard };
}

function stripDot(host: string): string {
  return host.endsWith('.') ? host.slice(0, -1) : host;
}

// Characters other URL parsers read differently from WHATWG (which drops tabs and newlines and
// treats `\` as `/`): a URL containing one never matches rather than risk a parser differential.
const AMBIGUOUS = /[\u0000-\u0020\u007f\\]/u;
const SCHEME = /^https?:\/\//iu;

/**
 * The host of an http(s) URL as the WHATWG parser sees it, lowercased and without a trailing dot;
 * undefined when the string is not an http(s) URL written `http(s)://host...`, has userinfo (an
 * `@` before the host: `https://good.com@evil.com` is refused outright), or contains whitespace,
 * control characters or backslashes.
 */
export function urlHost(s: string): string | undefined {
  if (!SCHEME.test(s) || AMBIGUOUS.test(s)) return undefined;
  const rest = s.slice(s.indexOf('//') + 2);
  const end = rest.search(/[/?#]/u);
  const authority = end < 0 ? rest : rest.slice(0, end);
  if (authority === '' || authority.includes('@')) return undefined;
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  const host = stripDot(url.hostname);
  return host === '' ? undefined : host;
}

function hostAllowed(host: string, patterns: readonly HostPattern[]): boolean {
  for (const p of patterns) {
    if (p.wildcard ? host.length > p.host.length + 1 && host.endsWith(`.${p.host}`) : host === p.host) return true;
  }
  return false;
}

// ---- compiling ------------------------------------------------------------------------------

/** Compiles one validated condition. `pointer` is where it is written. */
export function compileCondition(c: ConditionDocument, kind: 'require' | 'deny_if', pointer: string): CompiledCondition {
  const steps = parseConditionPath(c.path);
  if (steps === undefined) throw new Error(`${pointer}: invalid path ${c.path}`);
  return Object.freeze({
    pointer,
    kind,
    path: c.path,
    steps,
    op: c.op,
    test: operatorTest(c),
    reason: c.reason,
    must: describe(c, kind === 'require'),
  });
}

function operatorTest(c: ConditionDocument): (v: unknown) => boolean {
  const x = c.value;
  switch (c.op) {
    case 'eq':
      return (v) => v !== MISSING && jsonEqual(v, x);
    case 'neq':
      return (v) => v !== MISSING && !jsonEqual(v, x);
    case 'lt':
      return (v) => typeof v === 'number' && v < (x as number);
    case 'lte':
      return (v) => typeof v === 'number' && v <= (x as number);
    case 'gt':
      return (v) => typeof v === 'number' && v > (x as number);
    case 'gte':
      return (v) => typeof v === 'number' && v >= (x as number);
    case 'in': {
      const list = x as readonly unknown[];
      return (v) => v !== MISSING && list.some((e) => jsonEqual(v, e));
    }
    case 'not_in': {
      const list = x as readonly unknown[];
      return (v) => v !== MISSING && !list.some((e) => jsonEqual(v, e));
    }
    case 'exists':
      return x === true ? (v) => v !== MISSING : (v) => v === MISSING;
    case 'regex': {
      const re = regexOf(c);
      return (v) => typeof v === 'string' && re.test(v);
    }
    case 'contains':
      return (v) => {
        if (typeof v === 'string') return typeof x === 'string' && v.includes(x);
        if (Array.isArray(v)) return v.some((e) => jsonEqual(e, x));
        return false;
      };
    case 'path_prefix': {
      const prefixes = (x as readonly string[]).map((p) => normalisePrefix(p) as PathPrefix);
      return (v) => typeof v === 'string' && underPrefix(v, prefixes);
    }
    case 'url_host': {
      const hosts = (x as readonly string[]).map((h) => normaliseHostPattern(h) as HostPattern);
      return (v) => {
        if (typeof v !== 'string') return false;
        const host = urlHost(v);
        return host !== undefined && hostAllowed(host, hosts);
      };
    }
  }
}

// ---- words ----------------------------------------------------------------------------------

const MAX_ECHO = 100;

/** A JSON rendering of a policy value, cut to a readable length. */
function shown(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length <= 200 ? s : `${s.slice(0, 199)}…`;
}

function list(values: unknown, join: string, render: (v: unknown) => string = shown): string {
  const items = (values as readonly unknown[]).map(render);
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} ${join} ${items[items.length - 1]}`;
}

function hostWords(h: unknown): string {
  const s = String(h);
  return s.startsWith('*.') ? `any subdomain of ${s.slice(2)}` : s;
}

/**
 * What the argument must do for the call to pass, phrased for the agent: for a `require` the
 * condition itself, for a `deny_if` its negation (deny_if gt 50000 → "be at most 50000").
 */
export function describe(c: ConditionDocument, positive: boolean): string {
  const x = c.value;
  const pick = (yes: string, no: string): string => (positive ? yes : no);
  switch (c.op) {
    case 'eq':
      return pick(`be ${shown(x)}`, `not be ${shown(x)}`);
    case 'neq':
      return pick(`not be ${shown(x)}`, `be ${shown(x)}`);
    case 'lt':
      return pick(`be a number less than ${shown(x)}`, `be at least ${shown(x)}`);
    case 'lte':
      return pick(`be a number at most ${shown(x)}`, `be greater than ${shown(x)}`);
    case 'gt':
      return pick(`be a number greater than ${shown(x)}`, `be at most ${shown(x)}`);
    case 'gte':
      return pick(`be a number at least ${shown(x)}`, `be less than ${shown(x)}`);
    case 'in':
      return pick(`be one of ${list(x, 'or')}`, `not be any of ${list(x, 'or')}`);
    case 'not_in':
      return pick(`not be any of ${list(x, 'or')}`, `be one of ${list(x, 'or')}`);
    case 'exists':
      return (x === true) === positive ? 'be present' : 'be absent';
    case 'regex':
      return pick(`match the pattern ${shown(x)}`, `not match the pattern ${shown(x)}`);
    case 'contains':
      return pick(`contain ${shown(x)}`, `not contain ${shown(x)}`);
    case 'path_prefix':
      return pick(`be a path inside ${list(x, 'or')}`, `not be a path inside ${list(x, 'or')}`);
    case 'url_host':
      return pick(`be an http(s) URL whose host is ${list(x, 'or', hostWords)}`, `not be a URL whose host is ${list(x, 'or', hostWords)}`);
  }
}

/** A short rendering of the agent's own argument: at most ~100 characters of it. */
export function preview(v: unknown): string {
  if (typeof v === 'string') {
    if (v.length <= MAX_ECHO) return JSON.stringify(v);
    let cut = v.slice(0, MAX_ECHO);
    if (/[\uD800-\uDBFF]$/u.test(cut)) cut = cut.slice(0, -1);
    return `${JSON.stringify(cut).slice(0, -1)}…" (${v.length} characters)`;
  }
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (Array.isArray(v)) return `an array of ${v.length} item${v.length === 1 ? '' : 's'}`;
  if (typeof v === 'object') return 'an object';
  return `a value of type ${typeof v}`;
}

/** The reason of a denial by `c`: its own `reason`, or one naming the path, the rule and the value. */
export function conditionReason(c: CompiledCondition, args: unknown): string {
  if (c.reason !== undefined) return c.reason;
  const every = c.kind === 'require';
  const leaf = offendingLeaf(args, c.steps, every, c.test) ?? { path: c.path, value: MISSING };
  const got = leaf.value === MISSING ? ', but it is missing' : c.op === 'exists' ? ', but it is present' : `, got ${preview(leaf.value)}`;
  return `${leaf.path} must ${c.must}${got} (rule ${c.pointer})`;
}
