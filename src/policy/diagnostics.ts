// Shared by the policy and gateway-config loaders: both read JSON or YAML, validate with zod and
// must report every problem as `file: /json/pointer: message (line L:C)`. The gateway config
// imports this from policy/ because it already depends on policy/ (it loads policies).
import * as z from 'zod';
import { LineCounter, isAlias, isMap, isPair, isScalar, isSeq, parseDocument } from 'yaml';
import type { Document, Node } from 'yaml';

export type PathSegment = string | number;

/** A parsed JSON or YAML text that can map a JSON path back to a line and column. */
export interface SourceText {
  readonly source: string;
  readonly doc: Document.Parsed;
  readonly lines: LineCounter;
}

export interface Position {
  readonly line: number;
  readonly col: number;
  readonly offset: number;
}

/** One located problem, before it is formatted into a line of a ConfigError. */
export interface Problem {
  readonly path: readonly PathSegment[];
  readonly message: string;
  /** Point at the key rather than its value (unknown keys, bad record keys). */
  readonly atKey?: boolean;
}

export interface ReadResult {
  readonly text: SourceText;
  readonly value: unknown;
  /** Formatted syntax errors; when non-empty `value` is undefined. */
  readonly errors: readonly string[];
}

// Aliases are legitimate YAML, but a small document that expands to millions of nodes is a
// denial of service on the loader; 100 is the yaml package's own default.
const MAX_ALIAS_COUNT = 100;

/**
 * Parses JSON or YAML (JSON is YAML 1.2 flow syntax, so one parser serves both and gives line
 * and column for both). Duplicate keys are errors, where JSON.parse would silently keep the last.
 */
export function readSource(text: string, source: string): ReadResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const st: SourceText = { source, doc, lines };
  if (doc.errors.length > 0) {
    const errors = doc.errors.map((e) => {
      const p = lines.linePos(e.pos[0]);
      return `${source}: syntax error: ${e.message} (line ${p.line}:${p.col})`;
    });
    return { text: st, value: undefined, errors };
  }
  try {
    return { text: st, value: doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }), errors: [] };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { text: st, value: undefined, errors: [`${source}: syntax error: ${message}`] };
  }
}

export function jsonPointer(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) out += '/' + String(seg).replaceAll('~', '~0').replaceAll('/', '~1');
  return out;
}

/**
 * Finds where `path` is written. When the exact node does not exist (a missing required field)
 * the deepest existing ancestor is reported, which is where the field belongs.
 */
export function positionOf(st: SourceText, path: readonly PathSegment[], atKey = false): Position | undefined {
  let node: unknown = st.doc.contents;
  let found: unknown = node;
  for (let i = 0; i < path.length; i++) {
    if (isAlias(node)) node = node.resolve(st.doc);
    const seg = path[i];
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && keyText(p.key) === String(seg));
      if (pair === undefined) break;
      if (last && atKey) {
        found = pair.key;
        break;
      }
      node = pair.value;
      // `key:` with nothing after it has an empty value node; the key is the better place to point.
      found = hasRange(pair.value) && pair.value.range[0] < pair.value.range[1] ? pair.value : pair.key;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (item === undefined) break;
      node = item;
      found = item;
    } else {
      break;
    }
  }
  if (!hasRange(found)) return undefined;
  const offset = found.range[0];
  const p = st.lines.linePos(offset);
  return { line: p.line, col: p.col, offset };
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return undefined;
}

function hasRange(n: unknown): n is Node & { range: [number, number, number] } {
  return typeof n === 'object' && n !== null && Array.isArray((n as { range?: unknown }).range);
}

export function formatProblem(source: string, path: readonly PathSegment[], message: string, pos?: Position): string {
  const where = path.length === 0 ? '' : `${jsonPointer(path)}: `;
  const at = pos === undefined ? '' : ` (line ${pos.line}:${pos.col})`;
  return `${source}: ${where}${message}${at}`;
}

/**
 * Formats problems against a source, in the order they appear in the file so a reader can
 * fix them top to bottom. `prefix` places a sub-document (an inline policy) inside its file.
 */
export function formatProblems(
  source: string,
  st: SourceText | undefined,
  problems: readonly Problem[],
  prefix: readonly PathSegment[] = [],
): string[] {
  const located = problems.map((p, i) => {
    const full = [...prefix, ...p.path];
    const pos = st === undefined ? undefined : positionOf(st, full, p.atKey === true);
    return { i, pos, line: formatProblem(source, full, p.message, pos) };
  });
  located.sort((a, b) => (a.pos?.offset ?? -1) - (b.pos?.offset ?? -1) || a.i - b.i);
  return located.map((l) => l.line);
}

/**
 * Turns zod issues into problems. Messages come from the schemas (every schema here states
 * what it expected); this only splits unknown keys into one line each and notes missing fields.
 */
export function zodProblems(error: z.ZodError, input: unknown): Problem[] {
  return problemsOf(error.issues, [], input);
}

function problemsOf(issues: readonly z.core.$ZodIssue[], at: readonly PathSegment[], input: unknown): Problem[] {
  const out: Problem[] = [];
  for (const issue of issues) {
    const path = [...at, ...issue.path.filter((s): s is PathSegment => typeof s !== 'symbol')];
    const branch = issue.code === 'invalid_union' ? matchedBranch(issue.errors) : undefined;
    if (branch !== undefined) {
      // The value had the shape of exactly one alternative (an object where a string or an
      // object is allowed): that alternative's own problems say far more than "expected A or B".
      out.push(...problemsOf(branch, path, input));
    } else if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: [...path, key], message: issue.message, atKey: true });
    } else if (issue.code === 'invalid_key') {
      out.push({ path, message: issue.issues[0]?.message ?? issue.message, atKey: true });
    } else if (isMissing(input, path)) {
      out.push({ path, message: `required field is missing; ${issue.message}` });
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}

/** The one alternative of a union whose problems are not just "wrong type here", if exactly one. */
function matchedBranch(branches: readonly (readonly z.core.$ZodIssue[])[]): readonly z.core.$ZodIssue[] | undefined {
  const typed = branches.filter((b) => !b.every((i) => i.code === 'invalid_type' && i.path.length === 0));
  return typed.length === 1 ? typed[0] : undefined;
}

function isMissing(input: unknown, path: readonly PathSegment[]): boolean {
  if (path.length === 0) return false;
  let v: unknown = input;
  for (let i = 0; i < path.length - 1; i++) {
    if (typeof v !== 'object' || v === null) return false;
    v = (v as Record<PathSegment, unknown>)[path[i] as PathSegment];
  }
  const last = path[path.length - 1] as PathSegment;
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Object.hasOwn(v, last);
}

/**
 * A strict object whose errors say what was expected: unknown keys list the allowed ones, so
 * a typo (`limit` for `limits`) is obvious from the message alone.
 */
export function strictObject<T extends z.core.$ZodLooseShape>(shape: T, what: string) {
  const fields = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (iss) => (iss.code === 'unrecognized_keys' ? `unknown field; expected one of: ${fields}` : `expected ${what}`),
  });
}
