import { createHash } from 'node:crypto';
import { ConfigError } from '../errors.js';
import { parseDuration } from '../util/duration.js';
import { formatProblems, jsonPointer, zodProblems } from './diagnostics.js';
import { PolicySchema } from './schema.js';
import type { LimitDocument, PolicyDocument, ToolRuleDocument } from './schema.js';
import type { Action, CompiledGlobRule, CompiledPolicy, CompiledRule, Decision, LimitSpec } from './types.js';

export const APPROVAL_UNSUPPORTED_REASON = 'requires human approval, which this gateway does not support yet';

const WINDOW_MS: Readonly<Record<string, number>> = { second: 1_000, minute: 60_000, hour: 3_600_000, day: 86_400_000 };

const EMPTY: readonly LimitSpec[] = Object.freeze([]);

/**
 * Validates `doc` and compiles it. Documents read from text should go through parsePolicy,
 * whose errors carry line numbers; this entry point is for policies built in code.
 */
export function compilePolicy(doc: PolicyDocument, source: string): CompiledPolicy {
  const parsed = PolicySchema.safeParse(doc);
  if (!parsed.success) throw new ConfigError(formatProblems(source, undefined, zodProblems(parsed.error, doc)));
  return compileValidated(parsed.data, source);
}

/** Compiles a document that has already passed PolicySchema. */
export function compileValidated(doc: PolicyDocument, source: string): CompiledPolicy {
  const frozenDoc = deepFreeze(doc);
  // `$schema` only helps editors; pointing it elsewhere does not change what the policy does.
  const { $schema: _editorHint, ...content } = frozenDoc;
  const version = policyVersion(content);
  const allToolsLimits = compileLimits(frozenDoc.all_tools?.limits, ['all_tools']);

  const exact = new Map<string, CompiledRule>();
  const globs: CompiledGlobRule[] = [];
  for (const [pattern, rule] of Object.entries(frozenDoc.tools ?? {})) {
    if (isGlob(pattern)) {
      const g = analyseGlob(pattern);
      const base = compileRule(pattern, rule, allToolsLimits, version, undefined);
      const prefix = pattern.slice(0, pattern.search(/[*?]/));
      globs.push(Object.freeze({ ...base, prefix, matcher: g.matcher, literals: g.literals, wildcards: g.wildcards, order: globs.length }));
    } else {
      exact.set(pattern, Object.freeze(compileRule(pattern, rule, allToolsLimits, version, pattern)));
    }
  }
  globs.sort(byPrecedence);

  const hiddenNames = new Set<string>();
  const hiddenGlobs: string[] = [];
  for (const entry of frozenDoc.hide ?? []) {
    if (isGlob(entry)) hiddenGlobs.push(globSource(entry));
    else hiddenNames.add(entry);
  }
  const hiddenMatcher = hiddenGlobs.length === 0 ? undefined : new RegExp(`^(?:${hiddenGlobs.join('|')})$`, 'su');

  return Object.freeze({
    version,
    source,
    defaultAction: frozenDoc.default,
    document: frozenDoc,
    exact,
    globs: Object.freeze(globs),
    hiddenNames,
    hiddenMatcher,
    allToolsLimits,
    defaultAllow:
      frozenDoc.default === 'allow'
        ? decision('allow', '(default allow)', 'allowed by the policy (default: allow)', version, allToolsLimits)
        : undefined,
  });
}

/*
 * Rule precedence, for a called tool name:
 *   1. An exact entry under `tools` wins over every glob, wherever it is written.
 *   2. Among globs that match, the most specific wins: the one with the most literal
 *      (non-wildcard) characters, so `delete_user_*` beats `delete_*` beats `*`.
 *   3. On equal literal characters, fewer wildcards win (`ab*` beats `a*b*`).
 *   4. On a full tie, the glob written first in the file wins.
 * `hide` is checked before all of this: a hidden tool is hidden even if a rule allows it.
 */
function byPrecedence(a: CompiledGlobRule, b: CompiledGlobRule): number {
  return b.literals - a.literals || a.wildcards - b.wildcards || a.order - b.order;
}

function isGlob(pattern: string): boolean {
  return pattern.includes('*') || pattern.includes('?');
}

// `u` makes `?` match one code point rather than half a surrogate pair; `s` lets wildcards
// match line breaks, which tool names should not contain but an attacker's name might.
function analyseGlob(pattern: string): { matcher: RegExp; literals: number; wildcards: number } {
  let literals = 0;
  let wildcards = 0;
  for (const ch of pattern) {
    if (ch === '*' || ch === '?') wildcards++;
    else literals++;
  }
  return { matcher: new RegExp(`^${globSource(pattern)}$`, 'su'), literals, wildcards };
}

function globSource(pattern: string): string {
  let out = '';
  for (const ch of pattern) {
    if (ch === '*') out += '.*';
    else if (ch === '?') out += '.';
    else out += ch.replace(/[\^$.*+?()[\]{}|\\/]/g, '\\$&');
  }
  return out;
}

function compileRule(
  pattern: string,
  rule: ToolRuleDocument,
  allToolsLimits: readonly LimitSpec[],
  version: string,
  exactName: string | undefined,
): CompiledRule {
  const pointer = jsonPointer(['tools', pattern]);
  const action: Action = rule.action ?? 'allow';
  const reason = rule.reason ?? rule.on_deny;
  const own = compileLimits(rule.limits, ['tools', pattern]);
  const limits = own.length === 0 ? allToolsLimits : Object.freeze([...own, ...allToolsLimits]);
  const base = { pattern, pointer, action, reason, limits };
  return { ...base, decision: prebuiltDecision(base, version, exactName) };
}

function prebuiltDecision(
  rule: Omit<CompiledRule, 'decision'>,
  version: string,
  exactName: string | undefined,
): Decision | undefined {
  switch (rule.action) {
    case 'allow':
      return decision('allow', rule.pointer, `allowed by the policy (rule ${rule.pointer})`, version, rule.limits);
    case 'require_approval':
      return decision('deny', rule.pointer, APPROVAL_UNSUPPORTED_REASON, version, EMPTY);
    case 'deny':
      if (rule.reason !== undefined) return decision('deny', rule.pointer, rule.reason, version, EMPTY);
      return exactName === undefined ? undefined : Object.freeze(ruleDenial(rule, exactName, version));
  }
}

/** The denial of a `deny` rule without a reason, which names the tool. */
export function ruleDenial(rule: Pick<CompiledRule, 'pointer'>, tool: string, version: string): Decision {
  return { effect: 'deny', rule: rule.pointer, reason: `'${tool}' is denied by the policy (rule ${rule.pointer})`, policyVersion: version, limits: EMPTY };
}

/** A decision shared between calls, hence frozen; per-call decisions skip the freeze. */
export function decision(
  effect: Decision['effect'],
  rule: string,
  reason: string,
  policyVersion: string,
  limits: readonly LimitSpec[],
): Decision {
  return Object.freeze({ effect, rule, reason, policyVersion, limits });
}

function compileLimits(limits: readonly LimitDocument[] | undefined, at: readonly string[]): readonly LimitSpec[] {
  if (limits === undefined || limits.length === 0) return EMPTY;
  return Object.freeze(limits.map((l, i) => compileLimit(l, jsonPointer([...at, 'limits', i]))));
}

function compileLimit(l: LimitDocument, pointer: string): LimitSpec {
  const windowMs = typeof l.window === 'string' ? (WINDOW_MS[l.window] ?? parseDuration(l.window)) : parseDuration(l.window);
  const spec: { -readonly [K in keyof LimitSpec]: LimitSpec[K] } = { counter: l.counter, windowMs, max: l.max, scope: l.scope, pointer };
  if (l.increment !== undefined) spec.increment = l.increment;
  if (l.increment_from !== undefined) spec.incrementFrom = l.increment_from;
  return Object.freeze(spec);
}

/** `sha256:` + 16 hex characters of the document serialised with sorted keys. */
export function policyVersion(doc: unknown): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(doc)).digest('hex').slice(0, 16);
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : canonicalJson(x))).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const keys = Object.keys(v).sort();
    const parts: string[] = [];
    for (const k of keys) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) parts.push(`${JSON.stringify(k)}:${canonicalJson(x)}`);
    }
    return `{${parts.join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
