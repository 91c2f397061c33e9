import type { PathStep } from './path.js';
import type { PolicyDocument } from './schema.js';

/** One limit of a call, normalised: the limiter reserves every limit of a decision at once. */
export interface LimitSpec {
  readonly counter: string;
  /** `rolling` (sliding window), `calendar` (fixed UTC windows) or `in_flight` (concurrency). */
  readonly kind: 'rolling' | 'calendar' | 'in_flight';
  /** Window length; 0 for `in_flight`. */
  readonly windowMs: number;
  /** Most admitted per window, or most in flight at once. */
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

/**
 * `require_approval`: the call is held until a person approves it (then forwarded, its limits
 * reserved after the approval), denies it, or the approval times out (approvals/service.ts).
 */
export type Effect = 'allow' | 'deny' | 'hidden' | 'require_approval';

export type Action = 'allow' | 'deny' | 'require_approval';

export type ConditionOp =
  | 'eq'
  | 'neq'
  | 'lt'
  | 'lte'
  | 'gt'
  | 'gte'
  | 'in'
  | 'not_in'
  | 'exists'
  | 'regex'
  | 'contains'
  | 'path_prefix'
  | 'url_host';

/** A `require` or `deny_if` entry, compiled: the path split and the operator bound to its value. */
export interface CompiledCondition {
  /** Where it is written, e.g. `/tools/create_charge/deny_if/0` or `/all_tools/require/1`. */
  readonly pointer: string;
  /** `require`: every leaf must pass, else deny. `deny_if`: any leaf passing denies. */
  readonly kind: 'require' | 'deny_if';
  /** The path as written, e.g. `args.items[*].price`. */
  readonly path: string;
  readonly steps: readonly PathStep[];
  readonly op: ConditionOp;
  /** Whether one leaf (a value, or MISSING) passes the operator. Pure and never throws on JSON. */
  readonly test: (v: unknown) => boolean;
  /** The condition's own `reason`, if written. */
  readonly reason: string | undefined;
  /** What the argument must do, for generated reasons: `be at most 50000`. */
  readonly must: string;
}

/** A channel through which a person is asked to decide a held call (`approval.via`). */
export type ApprovalChannel = 'dashboard' | 'elicitation' | 'webhook';

/**
 * `approval` of a tool rule, normalised. A `require_approval` rule without an `approval` block gets
 * the default (a 10-minute timeout, pointer the rule's own).
 */
export interface ApprovalSpec {
  /** How long the call waits for a decision before it expires. */
  readonly timeoutMs: number;
  /** For this long after an approved call was executed, the identical call is admitted without asking. */
  readonly rememberMs?: number;
  /**
   * The channels the person is asked through besides the admin API and CLI, which can decide every
   * approval (see approvals/channels.ts); undefined when the rule does not say.
   */
  readonly via?: readonly ApprovalChannel[];
  /** `/tools/<tool>/approval`, or the rule's pointer for the default spec. */
  readonly pointer: string;
}

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
  /**
   * Limits to reserve before forwarding; empty unless the effect is `allow` or `require_approval`
   * (whose limits are reserved once the call is approved).
   */
  readonly limits: readonly LimitSpec[];
  /**
   * False when the deciding rule (or the whole policy) is in shadow mode: the gateway should let
   * the call through and record `effect` as what would have happened. True otherwise, and
   * always true when the policy could not be evaluated (that denial is never shadowed).
   */
  readonly enforced: boolean;
  /** Present, and true, only when shadowed (then `enforced` is false). */
  readonly shadow?: true;
  /**
   * The deciding tool rule's `approval` block, when it has one; always present on a
   * `require_approval` decision (the default spec when the rule has no block).
   */
  readonly approval?: ApprovalSpec;
  /**
   * On allow and require_approval decisions: whether the call's arguments are checked against the tool's own
   * `inputSchema` (the deciding rule's `validate_arguments`, else the policy's).
   */
  readonly validateArguments?: boolean;
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
  /**
   * Checked in this order for an allowed call: the rule's `require`, its `deny_if`, then those
   * of `all_tools`. Empty for most rules, which then answer with `decision` directly.
   */
  readonly conditions: readonly CompiledCondition[];
  /** The rule's `shadow`, else the policy's. */
  readonly shadow: boolean;
  readonly approval: ApprovalSpec | undefined;
  /**
   * Whether the gateway checks an allowed call's arguments against the tool's own `inputSchema`:
   * the rule's `validate_arguments`, else `all_tools.validate_arguments`, else true.
   */
  readonly validateArguments: boolean;
  /** Pre-built when it does not depend on the called tool's name; undefined otherwise. */
  readonly decision: Decision | undefined;
}

/**
 * Where to look for the globs a name could match: a glob can only match a name that starts with
 * its literal prefix, so a name looks up each prefix length the policy has, once.
 */
export interface GlobIndex {
  /** The lengths of the globs' literal prefixes, ascending, each once (0 for `*_x`). */
  readonly lengths: readonly number[];
  /** Literal prefix → positions in `globs` (so precedence ranks) of the globs with it, ascending. */
  readonly byPrefix: ReadonlyMap<string, readonly number[]>;
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
  /** The globs by their literal prefix, so a name is tested only against globs it could match. */
  readonly globIndex: GlobIndex;
  readonly hiddenNames: ReadonlySet<string>;
  /** All hide globs as one anchored expression, or undefined if there are none. */
  readonly hiddenMatcher: RegExp | undefined;
  readonly allToolsLimits: readonly LimitSpec[];
  /** `all_tools.require` then `all_tools.deny_if`; also checked for unlisted tools under default allow. */
  readonly allToolsConditions: readonly CompiledCondition[];
  /** The policy-level `shadow`: every decision not made by a tool rule that sets its own. */
  readonly shadow: boolean;
  /** `all_tools.validate_arguments` (default true): argument validation for tools no rule matches. */
  readonly validateArguments: boolean;
  /** The shared decision for unlisted tools under `default: allow`; undefined under deny. */
  readonly defaultAllow: Decision | undefined;
  /**
   * Set when the file was written in another proxy's format and converted as it loaded; then
   * `document` (and so `version` and every rule pointer) is the converted policy.
   */
  readonly convertedFrom?: 'intercept';
  /** What the conversion carried over with a caveat, one located line each (absent when none). */
  readonly warnings?: readonly string[];
}
