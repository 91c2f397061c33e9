// The recommended policy for one server as a YAML file a person reviews before loading it: the
// document recommendPolicy would build, with a comment above every rule saying what the
// classifier saw (category, severity, confidence, the deciding reason) and what the rule does.
// Pure: the caller supplies the header (how and when it was generated) and writes the file.
import { Document, Pair, Scalar, YAMLMap, YAMLSeq } from 'yaml';
import type { PolicyDocument, ToolRuleDocument } from '../policy/index.js';
import { recommendRule } from './recommend.js';
import type { RecommendOptions, Recommendation } from './recommend.js';
import type { Category, Classification, Reason, ToolDefinition } from './types.js';

export interface ScannedTool {
  readonly classification: Classification;
  readonly tool?: ToolDefinition;
}

export interface RecommendedPolicy {
  /** The policy, tools in the order the server listed them. */
  readonly document: PolicyDocument;
  /** One per scanned tool, in the same order. */
  readonly recommendations: readonly Recommendation[];
  /**
   * Tools left out of the policy because their names contain `*` or `?`, which a policy reads
   * as a glob (MCP tool names never should); `default: deny` refuses them.
   */
  readonly skipped: readonly string[];
}

/** `*` and `?` make a policy key a glob; such a tool cannot be named exactly. */
const GLOB_CHARS = /[*?]/;

/** Like recommendPolicy, but keeping each tool's recommendation and the server's order. */
export function buildRecommendedPolicy(items: readonly ScannedTool[], options: RecommendOptions = {}): RecommendedPolicy {
  const recommendations: Recommendation[] = [];
  const hide: string[] = [];
  const tools = new Map<string, ToolRuleDocument>();
  const skipped: string[] = [];
  for (const { classification, tool } of items) {
    const r = recommendRule(classification, tool, options);
    recommendations.push(r);
    if (GLOB_CHARS.test(r.tool)) skipped.push(r.tool);
    else if (r.hide) hide.push(r.tool);
    else if (r.rule) tools.set(r.tool, r.rule);
  }
  // Object.fromEntries would move integer-like names ("123") first; the YAML below keeps the
  // server's order from the Map, and the document's key order does not change a decision.
  const document = { version: '1', default: 'deny', ...(hide.length > 0 ? { hide } : {}), tools: Object.fromEntries(tools) } as PolicyDocument;
  return { document, recommendations, skipped };
}

/** Collapses whitespace (a comment must stay on its line) and caps the length. */
function commentText(s: string, max = 160): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length <= max ? flat : flat.slice(0, max - 1) + '…';
}

/**
 * The reasons worth showing first: the one that decided the category, then the one that set
 * the severity (when another did: `get-env` is Read from its verb, High because it "returns all
 * environment variables"), then the rest in the classifier's order.
 */
export function topReasons(c: Classification): Reason[] {
  const first = c.reasons[0];
  if (!first) return [];
  const raiser = c.reasons.find((r) => r !== first && r.severity === c.severity);
  return [first, ...(raiser ? [raiser] : []), ...c.reasons.filter((r) => r !== first && r !== raiser)];
}

/** `Read, High (confidence 0.99): name verb "get"; High: returns secrets in bulk; flags: credential` */
export function verdictLine(c: Classification): string {
  const [top, raiser] = topReasons(c);
  const why = top?.text ?? 'no signal';
  const severity = raiser?.severity === c.severity && raiser !== top ? `; ${c.severity}: ${raiser.text}` : '';
  const flags = c.flags.length > 0 ? `; flags: ${c.flags.join(', ')}` : '';
  return commentText(`${c.category}, ${c.severity} (confidence ${c.confidence.toFixed(2)}): ${why}${severity}${flags}`, 240);
}

/** The YAML comment block for one rule: the verdict, then what the rule does. */
function ruleComment(c: Classification, r: Recommendation): string {
  return [verdictLine(c), commentText(r.why.charAt(0).toUpperCase() + r.why.slice(1) + '.')].map((l) => ` ${l}`).join('\n');
}

const CATEGORY_ORDER: readonly Category[] = ['Read', 'Write', 'Execute', 'Financial', 'Destructive', 'Unknown'];

/** `14 tools: 9 Read, 4 Write, 1 Destructive` (categories in a fixed order). */
export function categorySummary(classifications: readonly Classification[]): string {
  const counts = new Map<Category, number>();
  for (const c of classifications) counts.set(c.category, (counts.get(c.category) ?? 0) + 1);
  const parts = CATEGORY_ORDER.filter((k) => counts.has(k)).map((k) => `${counts.get(k)} ${k}`);
  const n = classifications.length;
  return `${n} tool${n === 1 ? '' : 's'}${parts.length > 0 ? `: ${parts.join(', ')}` : ''}`;
}

/**
 * The policy as YAML: `header` lines become the opening comment, then a comment above each
 * rule and each hidden tool. The result parses to `policy.document`.
 */
export function recommendedPolicyYaml(items: readonly ScannedTool[], header: readonly string[], options: RecommendOptions = {}): { yaml: string; policy: RecommendedPolicy } {
  const policy = buildRecommendedPolicy(items, options);
  const byTool = new Map(items.map((it, i) => [it.classification.tool, { c: it.classification, r: policy.recommendations[i]! }]));
  const doc = new Document();
  const root = new YAMLMap();
  root.items.push(new Pair(new Scalar('version'), new Scalar('1')));
  root.items.push(new Pair(new Scalar('default'), new Scalar('deny')));

  const hidden = policy.document.hide ?? [];
  if (hidden.length > 0) {
    const seq = new YAMLSeq();
    for (const name of hidden) {
      const item = new Scalar(name);
      const v = byTool.get(name);
      if (v) item.commentBefore = ` ${verdictLine(v.c)}`;
      seq.items.push(item);
    }
    const key = new Scalar('hide');
    key.commentBefore = ' Deletes for good: hidden from tools/list, and a call answers as an unknown tool. To allow one\n deliberately, remove it from this list and give it a rule under tools.';
    key.spaceBefore = true;
    root.items.push(new Pair(key, seq));
  }

  const tools = new YAMLMap();
  let first = true;
  for (const r of policy.recommendations) {
    if (r.hide || !r.rule || GLOB_CHARS.test(r.tool)) continue;
    const key = new Scalar(r.tool);
    const v = byTool.get(r.tool)!;
    key.commentBefore = ruleComment(v.c, r);
    if (!first) key.spaceBefore = true;
    first = false;
    tools.items.push(new Pair(key, doc.createNode(r.rule)));
  }
  const toolsKey = new Scalar('tools');
  toolsKey.spaceBefore = true;
  if (policy.skipped.length > 0) {
    toolsKey.commentBefore = ` Not listed, so denied by default: ${policy.skipped.map((s) => JSON.stringify(s)).join(', ')} (a name with * or ? would be read as a glob).`;
  }
  // An empty map prints as `{}`; with no Read tools it is still there, so every tool is visibly accounted for.
  root.items.push(new Pair(toolsKey, tools));

  doc.contents = root;
  doc.commentBefore = header.map((l) => ` ${commentText(l, 2000)}`).join('\n');
  // lineWidth 0: long regexes and reasons stay on one line instead of being folded.
  return { yaml: doc.toString({ lineWidth: 0 }), policy };
}
