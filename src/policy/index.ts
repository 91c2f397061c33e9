export type { Action, CompiledGlobRule, CompiledPolicy, CompiledRule, Decision, Effect, LimitSpec } from './types.js';
export type { LimitDocument, PolicyDocument, ToolRuleDocument } from './schema.js';
export { PolicySchema } from './schema.js';
export { APPROVAL_UNSUPPORTED_REASON, compilePolicy, policyVersion } from './compile.js';
export { evaluate, isHidden, visibleTools } from './evaluate.js';
export { checkPolicyValue, loadPolicyFile, parsePolicy } from './load.js';
export type { PolicyCheck } from './load.js';
