import type { PolicyDocument } from './schema.js';

/** One limit of a call, normalised: the limiter reserves every limit of a decision at once. */
export interface LimitSpec {
  readonly counter: string;
  readonly windowMs: number;
  readonly max: number;
  /** `grant`, `session`, `server` or `args.<path>`. */
  readonly scope: string;
  /** Fixed amount per call; absent means 1 unless `incrementFrom` is set. */
  readonly increment?: number;
  /** `args.<path>` whose numeric value is added per call. */
  readonly incrementFrom?: string;
  /** Where the limit is written, e.g. `/tools/create_session/limits/0` or `/all_tools/limits/0`. */
  readonly pointer: string;
}

export type Effect = 'allow' | 'deny' | 'hidden';

export type Action = 'allow' | 'deny' | 'require_approval';

/**
 * The outcome of evaluating one call. Most decisions are built at compile time and shared
 * between calls (those are frozen); treat every decision as read-only.
 */
export interface Decision {
  readonly effect: Effect;
  /** JSON pointer of the rule that fired, or `(default deny)`, `(default allow)`, `(hidden)`. */
  readonly rule: string;
  /** Always set; text the agent may see (for `hidden`, it reads as an unknown tool). */
  readonly reason: string;
  readonly policyVersion: string;
  /** Limits to reserve before forwarding; empty unless the effect is `allow`. */
  readonly limits: readonly LimitSpec[];
}

/** A rule under `tools`, compiled. */
export interface CompiledRule {
  /** The key as written: an exact tool name or a glob. */
  readonly pattern: string;
  readonly pointer: string;
  readonly action: Action;
  /** `reason` (or `on_deny`) from the file, if any. */
  readonly reason: string | undefined;
  /** The rule's own limits followed by those of `all_tools`. */
  readonly limits: readonly LimitSpec[];
  /** Pre-built when it does not depend on the called tool's name; undefined otherwise. */
  readonly decision: Decision | undefined;
}

export interface CompiledGlobRule extends CompiledRule {
  /** The literal text before the first wildcard: a cheap test that rules most globs out. */
  readonly prefix: string;
  readonly matcher: RegExp;
  readonly literals: number;
  readonly wildcards: number;
  /** Position among the globs in the file, the last tie-breaker. */
  readonly order: number;
}

/**
 * A policy compiled at load: every lookup structure is built here so evaluation does no
 * parsing, sorting or regex construction. The object and its arrays are frozen.
 */
export interface CompiledPolicy {
  /** Content hash of the canonical document: `sha256:` + 16 hex characters. */
  readonly version: string;
  /** File path, or `<inline>`. */
  readonly source: string;
  readonly defaultAction: 'allow' | 'deny';
  /** The validated document, deep-frozen (for explain, admin and audit). */
  readonly document: PolicyDocument;
  readonly exact: ReadonlyMap<string, CompiledRule>;
  /** Glob rules in precedence order: the first that matches wins. */
  readonly globs: readonly CompiledGlobRule[];
  readonly hiddenNames: ReadonlySet<string>;
  /** All hide globs as one anchored expression, or undefined if there are none. */
  readonly hiddenMatcher: RegExp | undefined;
  readonly allToolsLimits: readonly LimitSpec[];
  /** The shared decision for unlisted tools under `default: allow`; undefined under deny. */
  readonly defaultAllow: Decision | undefined;
}
