// The policy rule recommended for a classified tool, in the policy file's own format
// (docs/policy.md), so `scan` can print a policy an operator loads unchanged:
//   Read        allowed
//   Write       allowed, 30 calls a minute per grant
//   Execute     allowed, 10 calls a minute per grant, with argument checks where the tool takes
//               a command, a script or SQL
//   Financial   held for human approval, with a cap on the amount of one call and a daily quota
//   Destructive hidden from tools/list
//   Unknown     held for human approval until a person reviews the tool
import type { ConditionDocument, LimitDocument, PolicyDocument, ToolRuleDocument } from '../policy/index.js';
import { collectParams } from './signals.js';
import type { Param } from './signals.js';
import type { Category, Classification, ToolDefinition } from './types.js';

export interface RecommendOptions {
  readonly writePerMinute?: number;
  readonly executePerMinute?: number;
  /** Largest amount one Financial call may carry, in the tool's own unit (often cents). */
  readonly amountCap?: number;
  /** Most amount a grant may move per day through one Financial tool. */
  readonly dailyAmountCap?: number;
  /** How long a call held for approval waits for a person. */
  readonly approvalTimeout?: string;
}

export const DEFAULT_RECOMMEND: Required<RecommendOptions> = Object.freeze({
  writePerMinute: 30,
  executePerMinute: 10,
  amountCap: 10_000,
  dailyAmountCap: 100_000,
  approvalTimeout: '10m',
});

export interface Recommendation {
  readonly tool: string;
  readonly category: Category;
  /** Destructive tools are hidden: listed under `hide`, with no rule. */
  readonly hide: boolean;
  /** The rule for `tools.<tool>`, unless hidden. */
  readonly rule?: ToolRuleDocument;
  /** Why, in a sentence, for `scan` and the catalogue. */
  readonly why: string;
}

// Shell commands that wreck a machine or fetch and run code; RE2 syntax (linear-time).
const SHELL_DENY = '(?i)(\\brm\\s+-[a-z]*[rf][a-z]*\\s+(/|~|\\*|\\$home)|\\bmkfs\\b|\\bdd\\s+if=|:\\(\\)\\s*\\{|\\b(shutdown|reboot|halt|poweroff)\\b|\\b(curl|wget)\\b[^|]*\\|\\s*(sudo\\s+)?(ba|z)?sh\\b|\\bchmod\\s+-r\\s+777\\s+/)';
const SQL_DENY = '(?i)\\b(drop|truncate)\\s+(table|database|schema)\\b|\\bdelete\\s+from\\s+[a-z0-9_."]+\\s*;?\\s*$';
const CODE_PARAM = /^(?:command|commands|cmd|script|bash|shell|commandline)$/;
const SQL_PARAM = /^(?:sql|query|statement)$/;
const AMOUNT_PARAM = /^(?:amount|amountusd|amountcents|unitamount|amountoff)$/;

/** `args.a.b` for a parameter path the policy format can name; undefined when it cannot. */
function argPath(p: Param): string | undefined {
  const parts = p.path.replace(/\[\*\]/g, '.[*]').split('.');
  let out = 'args';
  for (const part of parts) {
    if (part === '[*]') out += '[*]';
    else if (/^[^.\s[\]*]+$/.test(part)) out += `.${part}`;
    else return undefined;
  }
  return out;
}

function argumentChecks(tool: ToolDefinition | undefined): ConditionDocument[] {
  if (!tool) return [];
  const params = collectParams(tool.inputSchema).filter((p) => p.path.split('.').length <= 2);
  const out: ConditionDocument[] = [];
  for (const p of params) {
    const key = p.key;
    const isStrings = p.type.includes('string') || p.type === 'array';
    if (!isStrings) continue;
    const path = argPath(p);
    if (!path) continue;
    const target = p.type === 'array' ? `${path}[*]` : path;
    if (CODE_PARAM.test(key)) {
      out.push({ path: target, op: 'regex', value: SHELL_DENY, reason: `the command in "${p.name}" matches a destructive or download-and-run pattern` });
    } else if (SQL_PARAM.test(key) && /\bsql\b|\bstatement\b|\bquery\b/i.test(`${tool.description ?? ''} ${p.description}`)) {
      out.push({ path: target, op: 'regex', value: SQL_DENY, reason: `the SQL in "${p.name}" drops or truncates a table, or deletes every row` });
    }
  }
  return out;
}

/** The rule recommended for one classified tool. `tool` (its definition) enables argument checks. */
export function recommendRule(c: Classification, tool?: ToolDefinition, options: RecommendOptions = {}): Recommendation {
  const o = { ...DEFAULT_RECOMMEND, ...options };
  const name = c.tool;
  switch (c.category) {
    case 'Read':
      return { tool: name, category: c.category, hide: false, rule: {}, why: 'reads only: allowed' };
    case 'Write': {
      const limits: LimitDocument[] = [{ counter: `${name}_rate`, window: 'minute', max: o.writePerMinute, scope: 'grant' }];
      return { tool: name, category: c.category, hide: false, rule: { limits }, why: `changes data: at most ${o.writePerMinute} calls a minute per grant, so a runaway agent cannot make bulk changes` };
    }
    case 'Execute': {
      const limits: LimitDocument[] = [{ counter: `${name}_rate`, window: 'minute', max: o.executePerMinute, scope: 'grant' }];
      const denyIf = argumentChecks(tool);
      const rule: ToolRuleDocument = denyIf.length > 0 ? { limits, deny_if: denyIf } : { limits };
      return {
        tool: name,
        category: c.category,
        hide: false,
        rule,
        why: `runs or drives something: at most ${o.executePerMinute} calls a minute per grant${denyIf.length ? `, and ${denyIf.length} argument check${denyIf.length > 1 ? 's' : ''} on what it runs` : ''}; arguments are validated against the tool's schema`,
      };
    }
    case 'Financial': {
      const amount = tool ? collectParams(tool.inputSchema).find((p) => AMOUNT_PARAM.test(p.key) && /number|integer/.test(p.type) && p.path.split('.').length <= 2) : undefined;
      const path = amount ? argPath(amount) : undefined;
      const cap = `one call may move at most ${o.amountCap} (in the tool's unit)`;
      // A required amount is capped with `require` and counted into a daily quota. An optional
      // one (a refund without an amount refunds in full) is capped with `deny_if`, so a call
      // without it still reaches the approver; a quota would refuse it for lack of an amount.
      // The tool's schema types the amount as a number, and arguments are validated against it.
      let extra: Partial<ToolRuleDocument> = {};
      if (path && amount!.required) {
        extra = {
          require: [{ path, op: 'lte', value: o.amountCap, reason: cap }],
          limits: [{ counter: `${name}_daily_amount`, window: 'day', align: 'calendar', max: o.dailyAmountCap, scope: 'grant', increment_from: path }],
        };
      } else if (path) {
        extra = { deny_if: [{ path, op: 'gt', value: o.amountCap, reason: cap }] };
      }
      const rule: ToolRuleDocument = {
        action: 'require_approval',
        reason: 'moves money or value: a person approves each call',
        approval: { timeout: o.approvalTimeout },
        ...extra,
      };
      const why = !path
        ? 'moves money: held for a person\'s approval (it takes no numeric amount the policy could cap)'
        : amount!.required
          ? `moves money: held for a person's approval, at most ${o.amountCap} per call and ${o.dailyAmountCap} a day per grant (set both in your currency's unit)`
          : `moves money: held for a person's approval, at most ${o.amountCap} per call when an amount is given (set it in your currency's unit)`;
      return { tool: name, category: c.category, hide: false, rule, why };
    }
    case 'Destructive':
      return { tool: name, category: c.category, hide: true, why: 'deletes for good: hidden from agents; list it under tools (and remove it from hide) to allow it deliberately' };
    default:
      return {
        tool: name,
        category: c.category,
        hide: false,
        rule: { action: 'require_approval', reason: 'not classified yet: a person decides each call until the tool is reviewed', approval: { timeout: o.approvalTimeout } },
        why: 'unknown: treated as High risk and held for approval until reviewed',
      };
  }
}

/** A whole policy for one server: `default: deny`, every tool listed or hidden as recommended. */
export function recommendPolicy(items: readonly { classification: Classification; tool?: ToolDefinition }[], options: RecommendOptions = {}): PolicyDocument {
  const hide: string[] = [];
  const tools: Record<string, ToolRuleDocument> = {};
  for (const { classification, tool } of items) {
    const r = recommendRule(classification, tool, options);
    if (r.hide) hide.push(r.tool);
    else if (r.rule) tools[r.tool] = r.rule;
  }
  return { version: '1', default: 'deny', ...(hide.length > 0 ? { hide } : {}), tools } as PolicyDocument;
}
