import { decision, ruleDenial } from './compile.js';
import type { CompiledPolicy, Decision } from './types.js';

const NO_LIMITS = Object.freeze([]);

/**
 * Decides one `tools/call`. Pure: no I/O, no clock, no mutation of the policy. Never throws;
 * anything unexpected yields a denial, because a gateway that fails open is no gateway.
 * `call.args` is accepted for the argument rules still to come and is not read yet.
 */
export function evaluate(call: { tool: string; args: unknown }, policy: CompiledPolicy): Decision {
  try {
    const tool: unknown = call?.tool;
    if (typeof tool !== 'string') {
      return decision('deny', '(default deny)', 'the call does not name a tool', policy.version, NO_LIMITS);
    }
    if (isHidden(policy, tool)) {
      return { effect: 'hidden', rule: '(hidden)', reason: `Unknown tool: ${tool}`, policyVersion: policy.version, limits: NO_LIMITS };
    }
    const exact = policy.exact.get(tool);
    if (exact !== undefined) return exact.decision ?? ruleDenial(exact, tool, policy.version);
    for (const rule of policy.globs) {
      if (tool.startsWith(rule.prefix) && rule.matcher.test(tool)) return rule.decision ?? ruleDenial(rule, tool, policy.version);
    }
    if (policy.defaultAllow !== undefined) return policy.defaultAllow;
    return {
      effect: 'deny',
      rule: '(default deny)',
      reason: `'${tool}' is not allowed by the policy (default: deny)`,
      policyVersion: policy.version,
      limits: NO_LIMITS,
    };
  } catch {
    return decision('deny', '(default deny)', 'the policy could not be evaluated', safeVersion(policy), NO_LIMITS);
  }
}

function safeVersion(policy: CompiledPolicy): string {
  try {
    return typeof policy?.version === 'string' ? policy.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** True when `tool` is listed (by name or glob) under `hide`. */
export function isHidden(policy: CompiledPolicy, tool: string): boolean {
  return policy.hiddenNames.has(tool) || (policy.hiddenMatcher !== undefined && policy.hiddenMatcher.test(tool));
}

/** The tools a `tools/list` answer may show: every tool the policy does not hide, in order. */
export function visibleTools<T extends { name: string }>(policy: CompiledPolicy, tools: readonly T[]): T[] {
  return tools.filter((t) => !isHidden(policy, t.name));
}
