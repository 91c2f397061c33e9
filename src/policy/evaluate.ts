import { decision, ruleDenial } from './compile.js';
import type { DecisionContext } from './compile.js';
import { conditionReason } from './conditions.js';
import { quantify } from './path.js';
import type { CompiledCondition, CompiledPolicy, CompiledRule, Decision } from './types.js';

const NO_LIMITS = Object.freeze([]);

/**
 * Decides one `tools/call`. Pure: no I/O, no clock, no mutation of the policy or the arguments.
 * Never throws; anything unexpected yields an enforced denial, because a gateway that fails open
 * is no gateway (that denial is enforced even under `shadow`).
 *
 * Order: `hide` → the matching rule's action (`deny` denies at once, without looking at the
 * arguments) → its `require` (first failing) → its `deny_if` (first matching) →
 * `all_tools.require` → `all_tools.deny_if` → the rule's decision: allow, or `require_approval`
 * (the conditions of a `require_approval` rule refuse outright what no person should be asked
 * about; what passes them waits for a person). With no matching rule, `default` decides; under
 * `default: allow` the `all_tools` conditions still apply.
 */
export function evaluate(call: { tool: string; args: unknown }, policy: CompiledPolicy): Decision {
  try {
    // The policy itself is the context of decisions no rule made: its `shadow` and `validateArguments`.
    const ctx: DecisionContext = policy;
    const tool: unknown = call?.tool;
    if (typeof tool !== 'string') {
      return decision('deny', '(default deny)', 'the call does not name a tool', policy.version, NO_LIMITS, ctx);
    }
    if (isHidden(policy, tool)) return decision('hidden', '(hidden)', `Unknown tool: ${tool}`, policy.version, NO_LIMITS, ctx);
    const rule = ruleFor(policy, tool);
    if (rule !== undefined) {
      if (rule.action === 'deny' || rule.decision === undefined) return rule.decision ?? ruleDenial(rule, tool, policy.version);
      if (rule.conditions.length === 0) return rule.decision;
      return firstViolation(rule.conditions, call.args, policy.version, rule) ?? rule.decision;
    }
    if (policy.defaultAllow !== undefined) {
      if (policy.allToolsConditions.length === 0) return policy.defaultAllow;
      return firstViolation(policy.allToolsConditions, call.args, policy.version, ctx) ?? policy.defaultAllow;
    }
    return decision('deny', '(default deny)', `'${tool}' is not allowed by the policy (default: deny)`, policy.version, NO_LIMITS, ctx);
  } catch {
    return decision('deny', '(default deny)', 'the policy could not be evaluated', safeVersion(policy), NO_LIMITS);
  }
}

function ruleFor(policy: CompiledPolicy, tool: string): CompiledRule | undefined {
  const exact = policy.exact.get(tool);
  if (exact !== undefined) return exact;
  // The first glob in precedence order that matches: only globs whose literal prefix the name
  // starts with can, so each prefix length is looked up once and the lowest matching rank wins.
  const { lengths, byPrefix } = policy.globIndex;
  let best = Infinity;
  for (const length of lengths) {
    if (length > tool.length) break;
    const ranks = byPrefix.get(length === 0 ? '' : tool.slice(0, length));
    if (ranks === undefined) continue;
    for (const rank of ranks) {
      if (rank >= best) break;
      if (policy.globs[rank]!.matcher.test(tool)) {
        best = rank;
        break;
      }
    }
  }
  return best === Infinity ? undefined : policy.globs[best];
}

/**
 * The denial by the first condition that fails (a `require`) or fires (a `deny_if`), or
 * undefined when the call passes them all. A `require` holds when every leaf of its path passes
 * the operator (so `args.items[*].price lte 100` needs every item's price to be a number ≤ 100,
 * and holds for an empty list); a `deny_if` fires when any leaf passes.
 */
function firstViolation(
  conditions: readonly CompiledCondition[],
  args: unknown,
  version: string,
  ctx: DecisionContext,
): Decision | undefined {
  for (const c of conditions) {
    const every = c.kind === 'require';
    if (quantify(args, c.steps, every, c.test) !== every) {
      return decision('deny', c.pointer, conditionReason(c, args), version, NO_LIMITS, ctx);
    }
  }
  return undefined;
}

function safeVersion(policy: CompiledPolicy): string {
  try {
    return typeof policy?.version === 'string' ? policy.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Whether an allowed call of `tool` has its arguments checked against the tool's own
 * `inputSchema`: the matching rule's `validate_arguments`, else `all_tools.validate_arguments`
 * (both default true).
 */
export function validatesArguments(policy: CompiledPolicy, tool: string): boolean {
  return (ruleFor(policy, tool) ?? policy).validateArguments;
}

/** True when `tool` is listed (by name or glob) under `hide`. */
export function isHidden(policy: CompiledPolicy, tool: string): boolean {
  return policy.hiddenNames.has(tool) || (policy.hiddenMatcher !== undefined && policy.hiddenMatcher.test(tool));
}

/** The tools a `tools/list` answer may show: every tool the policy does not hide, in order. */
export function visibleTools<T extends { name: string }>(policy: CompiledPolicy, tools: readonly T[]): T[] {
  return tools.filter((t) => !isHidden(policy, t.name));
}

/**
 * True when some rule of the policy may hold a call for human approval (`action: require_approval`):
 * the composition root then opens what approvals need (the control store) before the first call.
 */
export function usesApproval(policy: CompiledPolicy): boolean {
  for (const rule of policy.exact.values()) if (rule.action === 'require_approval') return true;
  return policy.globs.some((rule) => rule.action === 'require_approval');
}
