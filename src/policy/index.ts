export type {
  Action,
  ApprovalChannel,
  ApprovalSpec,
  CompiledCondition,
  CompiledGlobRule,
  CompiledPolicy,
  CompiledRule,
  ConditionOp,
  Decision,
  Effect,
  LimitSpec,
} from './types.js';
export type { ApprovalDocument, ConditionDocument, LimitDocument, PolicyDocument, ToolRuleDocument } from './schema.js';
export { CONDITION_OPS, PolicySchema } from './schema.js';
export { DEFAULT_APPROVAL_TIMEOUT_MS, compilePolicy, policyVersion } from './compile.js';
export { evaluate, isHidden, usesApproval, validatesArguments, visibleTools } from './evaluate.js';
export { checkPolicyValue, compileChecked, loadPolicyFile, parsePolicy } from './load.js';
export type { PolicyCheck } from './load.js';
export { CONDITION_PATH_PATTERN, parseConditionPath } from './path.js';
export type { PathStep } from './path.js';
