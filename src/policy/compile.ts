import { createHash } from 'node:crypto';
import { ConfigError } from '../errors.js';
import { parseDuration } from '../util/duration.js';
import { compileCondition } from './conditions.js';
import { formatProblems, jsonPointer, zodProblems } from './diagnostics.js';
import { PolicySchema } from './schema.js';
import type { ApprovalDocument, ConditionDocument, LimitDocument, PolicyDocument, ToolRuleDocument } from './schema.js';
import type { Action, ApprovalSpec, CompiledCondition, CompiledGlobRule, CompiledPolicy, CompiledRule, Decision, GlobIndex, LimitSpec } from './types.js';
import { canonicalJson } from '../util/canonical-json.js';

/** How long a `require_approval` call waits for a person when its rule has no `approval.timeout`. */
export const DEFAULT_APPROVAL_TIMEOUT_MS = 10 * 60_000;

const WINDOW_MS: Readonly<Record<string, number>> = { second: 1_000, minute: 60_000, hour: 3_600_000, day: 86_400_000 };

const EMPTY: readonly LimitSpec[] = Object.freeze([]);
const NO_CONDITIONS: readonly CompiledCondition[] = Object.freeze([]);

/** What a decision says beyond effect, rule and reason: shadow mode and the rule's approval. */
export interface DecisionContext {
  readonly shadow: boolean;
  readonly approval?: ApprovalSpec | undefined;
  /** The deciding rule's (or the policy's) `validate_arguments`, carried so the gateway need not look the rule up again. */
  readonly validateArguments?: boolean;
}

const ENFORCED: DecisionContext = Object.freeze({ shadow: false });

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
  const allToolsConditions = compileConditions(frozenDoc.all_tools, ['all_tools']);
  const shadow = frozenDoc.shadow === true;
  const validateArguments = frozenDoc.all_tools?.validate_arguments ?? true;
  const policyCtx: DecisionContext = Object.freeze({ shadow, validateArguments });
  const shared = { allToolsLimits, allToolsConditions, shadow, version, validateArguments };

  const exact = new Map<string, CompiledRule>();
  const globs: CompiledGlobRule[] = [];
  for (const [pattern, rule] of Object.entries(frozenDoc.tools ?? {})) {
    if (isGlob(pattern)) {
      const g = analyseGlob(pattern);
      const r = compileRule(pattern, rule, shared, undefined);
      const prefix = pattern.slice(0, pattern.search(/[*?]/));
      // Spelled out rather than spread, for the reason given in compileRule.
      globs.push(
        Object.freeze({
          pattern: r.pattern,
          pointer: r.pointer,
          action: r.action,
          reason: r.reason,
          limits: r.limits,
          conditions: r.conditions,
          shadow: r.shadow,
          approval: r.approval,
          validateArguments: r.validateArguments,
          decision: r.decision,
          prefix,
          matcher: g.matcher,
          literals: g.literals,
          wildcards: g.wildcards,
          order: globs.length,
        }),
      );
    } else {
      exact.set(pattern, Object.freeze(compileRule(pattern, rule, shared, pattern)));
    }
  }
  globs.sort(byPrecedence);
  const globIndex = indexGlobs(globs);

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
    globIndex,
    hiddenNames,
    hiddenMatcher,
    allToolsLimits,
    allToolsConditions,
    shadow,
    validateArguments,
    defaultAllow:
      frozenDoc.default === 'allow'
        ? decision('allow', '(default allow)', 'allowed by the policy (default: allow)', version, allToolsLimits, policyCtx)
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
/**
 * Scanning every glob for a name nothing lists made an unlisted tool cost 2 µs at 10,000 tools
 * (100 globs) against 0.15 at 10 (bench/policy.ts, case (d)); a name now tests only the globs
 * whose prefix it starts with.
 */
function indexGlobs(globs: readonly CompiledGlobRule[]): GlobIndex {
  const byPrefix = new Map<string, number[]>();
  globs.forEach((g, rank) => {
    const list = byPrefix.get(g.prefix);
    if (list === undefined) byPrefix.set(g.prefix, [rank]);
    else list.push(rank);
  });
  const lengths = [...new Set([...byPrefix.keys()].map((p) => p.length))].sort((a, b) => a - b);
  return Object.freeze({ lengths: Object.freeze(lengths), byPrefix });
}

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

interface Shared {
  readonly allToolsLimits: readonly LimitSpec[];
  readonly allToolsConditions: readonly CompiledCondition[];
  readonly shadow: boolean;
  readonly version: string;
  readonly validateArguments: boolean;
}

function compileRule(pattern: string, rule: ToolRuleDocument, shared: Shared, exactName: string | undefined): CompiledRule {
  const pointer = jsonPointer(['tools', pattern]);
  const action: Action = rule.action ?? 'allow';
  const reason = rule.reason ?? rule.on_deny;
  const own = compileLimits(rule.limits, ['tools', pattern]);
  const limits = own.length === 0 ? shared.allToolsLimits : Object.freeze([...own, ...shared.allToolsLimits]);
  const ownConditions = compileConditions(rule, ['tools', pattern]);
  const conditions =
    ownConditions.length === 0 ? shared.allToolsConditions : Object.freeze([...ownConditions, ...shared.allToolsConditions]);
  const shadow = rule.shadow ?? shared.shadow;
  const approval =
    rule.approval !== undefined
      ? compileApproval(rule.approval, jsonPointer(['tools', pattern, 'approval']))
      : action === 'require_approval'
        ? Object.freeze({ timeoutMs: DEFAULT_APPROVAL_TIMEOUT_MS, pointer })
        : undefined;
  const validateArguments = rule.validate_arguments ?? shared.validateArguments;
  const base = { pattern, pointer, action, reason, limits, conditions, shadow, approval, validateArguments };
  // One object literal with every field, not `{ ...base, decision }`: past a few dozen rules, V8
  // gave each spread copy a hidden class of its own, which made every read of a rule in evaluate()
  // a megamorphic lookup. With 10,000 rules called by 1,024 names a decision took 337 ns instead
  // of about 60 (bench/policy.ts, case (a) spread).
  return {
    pattern,
    pointer,
    action,
    reason,
    limits,
    conditions,
    shadow,
    approval,
    validateArguments,
    decision: prebuiltDecision(base, shared.version, exactName),
  };
}

function prebuiltDecision(
  rule: Omit<CompiledRule, 'decision'>,
  version: string,
  exactName: string | undefined,
): Decision | undefined {
  switch (rule.action) {
    case 'allow':
      return decision('allow', rule.pointer, `allowed by the policy (rule ${rule.pointer})`, version, rule.limits, rule);
    case 'require_approval':
      // The limits come along: they are reserved once a person has approved the call.
      return decision('require_approval', rule.pointer, rule.reason ?? `a person must approve this call (rule ${rule.pointer})`, version, rule.limits, rule);
    case 'deny':
      if (rule.reason !== undefined) return decision('deny', rule.pointer, rule.reason, version, EMPTY, rule);
      return exactName === undefined ? undefined : ruleDenial(rule, exactName, version);
  }
}

/** The denial of a `deny` rule without a reason, which names the tool. */
export function ruleDenial(rule: Pick<CompiledRule, 'pointer'> & DecisionContext, tool: string, version: string): Decision {
  return decision('deny', rule.pointer, `'${tool}' is denied by the policy (rule ${rule.pointer})`, version, EMPTY, rule);
}

/**
 * Builds a frozen decision (decisions are shared between calls, so every one is read-only).
 * `shadow` and `approval` are only set when they apply, so an ordinary decision has exactly
 * effect, rule, reason, policyVersion, limits and enforced.
 */
export function decision(
  effect: Decision['effect'],
  rule: string,
  reason: string,
  policyVersion: string,
  limits: readonly LimitSpec[],
  ctx: DecisionContext = ENFORCED,
): Decision {
  const d: { -readonly [K in keyof Decision]: Decision[K] } = { effect, rule, reason, policyVersion, limits, enforced: !ctx.shadow };
  if (ctx.shadow) d.shadow = true;
  if (ctx.approval !== undefined) d.approval = ctx.approval;
  // Only a call that may go upstream goes on to argument validation (before a person is asked).
  if ((effect === 'allow' || effect === 'require_approval') && ctx.validateArguments !== undefined) d.validateArguments = ctx.validateArguments;
  return Object.freeze(d);
}

function compileConditions(
  owner: { readonly require?: readonly ConditionDocument[] | undefined; readonly deny_if?: readonly ConditionDocument[] | undefined } | undefined,
  at: readonly string[],
): readonly CompiledCondition[] {
  const req = owner?.require ?? [];
  const deny = owner?.deny_if ?? [];
  if (req.length === 0 && deny.length === 0) return NO_CONDITIONS;
  return Object.freeze([
    ...req.map((c, i) => compileCondition(c, 'require', jsonPointer([...at, 'require', i]))),
    ...deny.map((c, i) => compileCondition(c, 'deny_if', jsonPointer([...at, 'deny_if', i]))),
  ]);
}

function compileApproval(a: ApprovalDocument, pointer: string): ApprovalSpec {
  const spec: { -readonly [K in keyof ApprovalSpec]: ApprovalSpec[K] } = { timeoutMs: parseDuration(a.timeout), pointer };
  if (a.remember !== undefined) spec.rememberMs = parseDuration(a.remember);
  if (a.via !== undefined) spec.via = Object.freeze(typeof a.via === 'string' ? [a.via] : [...a.via]);
  return Object.freeze(spec);
}

function compileLimits(limits: readonly LimitDocument[] | undefined, at: readonly string[]): readonly LimitSpec[] {
  if (limits === undefined || limits.length === 0) return EMPTY;
  return Object.freeze(limits.map((l, i) => compileLimit(l, jsonPointer([...at, 'limits', i]))));
}

function compileLimit(l: LimitDocument, pointer: string): LimitSpec {
  // The schema guarantees either max_in_flight, or window and max.
  if (l.max_in_flight !== undefined) {
    return Object.freeze({ counter: l.counter, kind: 'in_flight', windowMs: 0, max: l.max_in_flight, scope: l.scope, pointer });
  }
  const window = l.window ?? 'minute';
  const windowMs = typeof window === 'string' ? (WINDOW_MS[window] ?? parseDuration(window)) : parseDuration(window);
  const kind = l.align === 'calendar' ? 'calendar' : 'rolling';
  const spec: { -readonly [K in keyof LimitSpec]: LimitSpec[K] } = { counter: l.counter, kind, windowMs, max: l.max ?? 1, scope: l.scope, pointer };
  if (l.increment !== undefined) spec.increment = l.increment;
  if (l.increment_from !== undefined) spec.incrementFrom = l.increment_from;
  return Object.freeze(spec);
}

/** `sha256:` + 16 hex characters of the document serialised with sorted keys. */
export function policyVersion(doc: unknown): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(doc)).digest('hex').slice(0, 16);
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
