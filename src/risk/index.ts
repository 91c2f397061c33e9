export type { Category, Classification, Flag, Reason, ServerContext, Severity, SignalSource, ToolAnnotations, ToolDefinition } from './types.js';
export { CATEGORIES, FLAGS, SEVERITIES } from './types.js';
export { CLASSIFIER_VERSION, RiskClassifier, classifyTool, definitionHash } from './classify.js';
export type { RiskClassifierOptions } from './classify.js';
export { serverProfile } from './profile.js';
export type { ServerProfile, Trait } from './profile.js';
export { DEFAULT_RECOMMEND, recommendPolicy, recommendRule } from './recommend.js';
export type { RecommendOptions, Recommendation } from './recommend.js';
