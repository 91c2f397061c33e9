/**
 * What the audit record keeps of a call's arguments (`audit.arguments`):
 *
 * - `keys` (default): the top-level argument names and a SHA-256 of the canonical arguments. The
 *   log then says what shape of call was made and can prove, given the arguments from elsewhere,
 *   that these were the ones, without itself holding file contents, queries or credentials.
 * - `redacted`: the arguments with secrets masked: values under names that say secret
 *   (`password`, `token`, `api_key`, `authorization`, …) and values that look like credentials
 *   wherever they are (provider key formats, JWTs, private keys, `Bearer …`, URL passwords).
 * - `full`: the arguments as the client sent them.
 *
 * Masking is best effort: a secret with no tell-tale name or shape passes through `redacted`.
 * Operators who must never store one use `keys`.
 */
import { hash } from 'node:crypto';
import { canonicalJson } from '../util/canonical-json.js';
import type { ArgumentsMode, AuditEventInput } from './event.js';

/** What a masked value is replaced with. */
export const REDACTED = '[REDACTED]';

/** Argument names whose values are secrets whatever they look like. */
const SECRET_NAME = /pass(?:word|phrase|wd)?$|secret|token|api[-_]?key|apikey|access[-_]?key|private[-_]?key|authori[sz]ation|credential|cookie|^auth$|session[-_]?key|signature$/i;

/**
 * Shapes of credentials worth masking wherever they appear in a string (vendor key prefixes, JWTs,
 * PEM private keys, HTTP auth schemes, passwords inside URLs), each with its replacement. The auth
 * scheme and the URL around a password are kept, so the record still says what was there.
 */
const SECRET_SHAPES: ReadonlyArray<readonly [RegExp, string]> = [
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)/g, REDACTED],
  [/\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/g, REDACTED],
  [/\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}/g, REDACTED],
  [/\bgh[pousr]_[A-Za-z0-9]{20,}/g, REDACTED],
  [/\bgithub_pat_[A-Za-z0-9_]{20,}/g, REDACTED],
  [/\bxox[abposr]-[A-Za-z0-9-]{10,}/g, REDACTED],
  [/\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g, REDACTED],
  [/\bAIza[0-9A-Za-z_-]{35}\b/g, REDACTED],
  [/\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}/g, REDACTED],
  [/\b(?:plg|pla)_[A-Za-z0-9_-]{16,}/g, REDACTED],
  [/\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}/gi, `$1 ${REDACTED}`],
  [/(\b[a-z][a-z0-9+.-]*:\/\/[^/\s:@]+:)[^/\s@]+@/gi, `$1${REDACTED}@`],
];

/** Deepest nesting `redacted` walks; anything deeper is replaced whole (arguments are rarely deeper than a handful). */
const MAX_DEPTH = 32;

/**
 * `event` with its arguments, which the trail hands over as the client sent them, replaced by
 * what `mode` keeps of them (in place: the event is the recorder's own by then).
 */
export function withAuditArguments(event: AuditEventInput, mode: ArgumentsMode): AuditEventInput {
  (event as { arguments: unknown }).arguments = auditArguments(event.arguments, mode);
  return event;
}

/** The arguments as `mode` keeps them; undefined when the request carried none. */
export function auditArguments(args: unknown, mode: ArgumentsMode): unknown {
  if (args === undefined) return undefined;
  switch (mode) {
    case 'full':
      return args;
    case 'redacted':
      return redact(args, 0);
    case 'keys':
      return keysArguments(args);
  }
}

/**
 * The names of an argument object's own keys, in the order it has them, and what its canonical
 * form needs of them: the names sorted (shared by every record of this shape, frozen) and each
 * name's `"name":` once escaped.
 */
interface Shape {
  readonly own: readonly string[];
  readonly keys: readonly string[];
  readonly members: readonly string[];
}

/**
 * The JSON of each shape's sorted names, by the shared list itself: keysArgumentsJson writes it
 * into every record twice (chained, then stored), whichever shape came last. The lists live as
 * long as their shape, so the map holds only a few long-lived keys.
 */
const NAMES_JSON = new WeakMap<readonly string[], string>();

/** Shapes seen lately, by the JSON of their own keys; calls to one tool nearly always have the same. */
let shapes = new Map<string, Shape>();
/** Shapes remembered at most; then the map starts again. */
const MAX_SHAPES = 1024;
let lastShape: Shape | undefined;
const NO_KEYS: readonly string[] = Object.freeze([]);

function shapeOf(own: readonly string[]): Shape {
  const last = lastShape;
  if (last !== undefined && sameKeys(last.own, own)) return last;
  const id = JSON.stringify(own);
  let shape = shapes.get(id);
  if (shape === undefined) {
    const keys = Object.freeze([...own].sort());
    shape = { own, keys, members: keys.map((k) => `${JSON.stringify(k)}:`) };
    NAMES_JSON.set(keys, JSON.stringify(keys));
    if (shapes.size >= MAX_SHAPES) shapes = new Map();
    shapes.set(id, shape);
  }
  lastShape = shape;
  return shape;
}

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * `keys` arguments: the sorted names and the SHA-256 of canonicalJson(args), whose text is written
 * here from the object's shape (the names sorted and escaped once per shape, the values one by
 * one) rather than by sorting and escaping the names of every call's arguments again. This runs
 * for every call the audit log records; the text is canonicalJson's, which a test holds it to.
 */
function keysArguments(args: unknown): { keys: readonly string[]; sha256: string } {
  if (typeof args !== 'object' || args === null || Array.isArray(args)) return { keys: NO_KEYS, sha256: hash('sha256', canonicalJson(args), 'hex') };
  const shape = shapeOf(Object.keys(args));
  const { keys, members } = shape;
  let text = '{';
  for (let i = 0; i < keys.length; i++) {
    const v = (args as Record<string, unknown>)[keys[i]!];
    // canonicalJson leaves undefined members out (JSON arguments have none).
    if (v === undefined) continue;
    text += `${text.length === 1 ? '' : ','}${members[i]}${typeof v === 'string' ? JSON.stringify(v) : canonicalJson(v)}`;
  }
  return { keys, sha256: hash('sha256', `${text}}`, 'hex') };
}

/**
 * The canonical JSON of arguments of the shape `keys` mode gives (exactly `keys`, an array of
 * strings, and `sha256`, a string), or undefined for any other value. The same text canonicalJson
 * gives, written directly: it is hashed into every record and stored with it, and the generic
 * walk (listing and sorting the keys, then serialising each value) cost more than the rest of a
 * record's canonical form.
 */
export function keysArgumentsJson(a: unknown): string | undefined {
  if (typeof a !== 'object' || a === null) return undefined;
  // Exactly these two own keys, in this order (auditArguments makes them so): canonicalJson writes
  // an object's own enumerable keys, sorted, and this text must be the one it gives.
  const own = Object.keys(a);
  if (own.length !== 2 || own[0] !== 'keys' || own[1] !== 'sha256') return undefined;
  const { keys, sha256 } = a as { keys: unknown; sha256: unknown };
  if (typeof sha256 !== 'string' || !Array.isArray(keys)) return undefined;
  // A shape's names are written already (its list is shared and frozen).
  const names = NAMES_JSON.get(keys);
  if (names !== undefined) return `{"keys":${names},"sha256":${JSON.stringify(sha256)}}`;
  let text = '[';
  for (let i = 0; i < keys.length; i++) {
    const k: unknown = keys[i];
    // A hole or a non-string: the generic way (which writes a hole differently from JSON.stringify).
    if (typeof k !== 'string') return undefined;
    text += i === 0 ? JSON.stringify(k) : `,${JSON.stringify(k)}`;
  }
  return `{"keys":${text}],"sha256":${JSON.stringify(sha256)}}`;
}

/** A copy of `v` with secret values masked (never modifies `v`: the call goes upstream as sent). */
export function redact(v: unknown, depth = 0): unknown {
  if (typeof v === 'string') return maskShapes(v);
  if (typeof v !== 'object' || v === null) return v;
  if (depth >= MAX_DEPTH) return REDACTED;
  if (Array.isArray(v)) return v.map((x) => redact(x, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    out[k] = SECRET_NAME.test(k) && x !== null && x !== undefined && x !== '' ? REDACTED : redact(x, depth + 1);
  }
  return out;
}

function maskShapes(s: string): string {
  let out = s;
  for (const [shape, replacement] of SECRET_SHAPES) out = out.replace(shape, replacement);
  return out;
}
