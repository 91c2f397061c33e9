// Policies written for Intercept, an earlier open-source MCP proxy with a YAML policy format of
// its own. Such a file loads here unchanged: it is validated against Intercept's own rules, then
// converted into a PolicyLayer document that decides every call the same way, and that document
// is what the gateway compiles, hashes and enforces. What cannot be carried over exactly is
// refused with a located error; what converts with a caveat comes back as a warning. The mapping
// and its known differences are written down in docs/policy.md ("Policies written for Intercept").
import * as z from 'zod';
import { isScalar } from 'yaml';
import { ConfigError } from '../errors.js';
import { checkRegex, jsonEqual } from './conditions.js';
import { formatProblems, strictObject, zodProblems } from './diagnostics.js';
import type { PathSegment, Problem, SourceText } from './diagnostics.js';
import { ARG_PATH_PATTERN, PolicySchema } from './schema.js';
import type { PolicyDocument } from './schema.js';

const WINDOWS = ['minute', 'hour', 'day'] as const;
const OPS = ['eq', 'neq', 'in', 'not_in', 'lt', 'lte', 'gt', 'gte', 'regex', 'contains', 'exists'] as const;
const NUMERIC_OPS: ReadonlySet<string> = new Set(['lt', 'lte', 'gt', 'gte']);

/** The key of Intercept's wildcard rules, and the scope its counters are kept under. */
const WILDCARD = '*';
const GLOBAL_SCOPE = '_global';

// ---- Intercept's own schema -----------------------------------------------------------------

const ConditionSchema = strictObject(
  {
    path: z
      .string({ error: 'expected a path starting with "args." or "state."' })
      .refine((p) => p.startsWith('args.') || p.startsWith('state.'), { error: 'path must start with "args." or "state.", e.g. "args.amount"' }),
    op: z.enum(OPS, { error: `unknown operator; expected ${OPS.join('|')}` }),
    // Optional here so that a missing value is reported with the operator that needs it.
    value: z.unknown().optional(),
  },
  'a condition with path, op and value',
).superRefine((c, ctx) => {
  const problem = conditionValueProblem(c.op, c.value, c);
  if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, path: ['value'] });
});

function conditionValueProblem(op: (typeof OPS)[number], value: unknown, condition: object): string | undefined {
  if (value === undefined) return `expected a value for operator ${op}`;
  if (op === 'in' || op === 'not_in') return Array.isArray(value) ? undefined : `operator ${op} needs a list value, e.g. [usd, eur]`;
  if (NUMERIC_OPS.has(op)) return typeof value === 'number' && Number.isFinite(value) ? undefined : `operator ${op} needs a number`;
  if (op === 'exists') return typeof value === 'boolean' ? undefined : 'operator exists needs true or false';
  if (op === 'regex') return typeof value === 'string' ? checkRegex(condition, value) : 'operator regex needs a string (an RE2 pattern)';
  return undefined;
}

const StateSchema = strictObject(
  {
    counter: z.string({ error: 'expected a counter name (a non-empty string)' }).min(1, { error: 'expected a counter name (a non-empty string)' }),
    window: z.enum(WINDOWS, { error: 'expected minute|hour|day' }),
    // Intercept reads 0 (or no value) as its default of 1.
    increment: z
      .number({ error: 'expected a positive integer' })
      .int({ error: 'expected a positive integer' })
      .min(0, { error: 'expected a positive integer' })
      .nullish(),
    increment_from: z
      .string({ error: 'expected args.<path>, e.g. "args.amount"' })
      .refine((p) => p.startsWith('args.'), { error: 'increment_from must start with "args.", e.g. "args.amount"' })
      .nullish(),
  },
  'a state object with counter and window',
);

const RATE_LIMIT_MSG = 'expected <count>/<window>, e.g. "5/hour"';

const RuleSchema = strictObject(
  {
    name: z
      .string({ error: 'every rule needs a name (a non-empty string)' })
      .refine((s) => s !== '', { error: 'every rule needs a name (a non-empty string)' }),
    action: z.enum(['evaluate', 'deny'], { error: 'expected evaluate|deny' }).nullish(),
    rate_limit: z.string({ error: RATE_LIMIT_MSG }).nullish(),
    conditions: z.array(ConditionSchema, { error: 'expected a list of conditions' }).nullish(),
    on_deny: z.string({ error: 'expected a string' }).nullish(),
    state: StateSchema.nullish(),
  },
  'a rule object with a name',
).superRefine((r, ctx) => {
  const issue = (message: string, path: PathSegment) => ctx.addIssue({ code: 'custom', message, path: [path] });
  const conditions = r.conditions ?? [];
  if (r.rate_limit !== undefined && r.rate_limit !== null) {
    const parsed = parseRateLimit(r.rate_limit);
    if (typeof parsed === 'string') issue(parsed, 'rate_limit');
    if (conditions.length > 0 || r.state != null) {
      issue('rate_limit cannot be combined with conditions or state; write the rule out in full instead', 'rate_limit');
    }
    if (r.action === 'deny') issue('rate_limit cannot be used with action: deny', 'action');
    return;
  }
  if (r.action === 'deny') {
    if (conditions.length > 0) issue('a deny rule must not have conditions: it denies every call', 'conditions');
  } else if (conditions.length === 0) {
    issue('an evaluate rule needs at least one condition (or write rate_limit, or action: deny)', 'conditions');
  }
});

/** `5/hour` → count and window, or the reason it is not a rate limit. */
function parseRateLimit(text: string): { count: number; window: (typeof WINDOWS)[number] } | string {
  const slash = text.indexOf('/');
  if (slash < 0) return `${RATE_LIMIT_MSG}, got ${JSON.stringify(text)}`;
  const countText = text.slice(0, slash);
  const window = text.slice(slash + 1);
  const count = /^[+-]?[0-9]+$/.test(countText) ? Number(countText) : NaN;
  if (!Number.isSafeInteger(count) || count <= 0) return `rate_limit count must be a positive integer, got ${JSON.stringify(countText)}`;
  if (!(WINDOWS as readonly string[]).includes(window)) return `rate_limit window must be minute|hour|day, got ${JSON.stringify(window)}`;
  return { count, window: window as (typeof WINDOWS)[number] };
}

const ToolSchema = strictObject(
  { rules: z.array(RuleSchema, { error: 'expected a list of rules' }).nullish() },
  'an object with rules (a tool with no rules is written { rules: [] })',
).nullable();

const InterceptSchema = strictObject(
  {
    version: z.union([z.literal('1'), z.literal(1)], { error: 'expected "1"' }),
    description: z.string({ error: 'expected a string' }).nullish(),
    default: z.enum(['allow', 'deny'], { error: 'expected allow|deny' }).nullish(),
    hide: z
      .array(
        z.string({ error: 'expected a tool name' }).refine((s) => s.trim() !== '', { error: 'hide entries must not be empty' }),
        { error: 'expected a list of tool names' },
      )
      .nullish(),
    tools: z.record(z.string().min(1, { error: 'expected a tool name' }), ToolSchema, {
      error: 'expected an object mapping tool names (or "*") to { rules: [...] }',
    }),
  },
  'an Intercept policy object with version and tools',
);

type InterceptDocument = z.output<typeof InterceptSchema>;
type InterceptRule = z.output<typeof RuleSchema>;

// ---- detection ------------------------------------------------------------------------------

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Whether a parsed policy file is written for Intercept: some entry under `tools` has `rules`.
 * A PolicyLayer tool rule never has that key (its schema is strict), so the test cannot
 * misread a valid PolicyLayer policy.
 */
export function isInterceptPolicy(value: unknown): boolean {
  if (!isObject(value) || !isObject(value.tools)) return false;
  return Object.values(value.tools).some((t) => isObject(t) && Object.hasOwn(t, 'rules'));
}

// ---- conversion -----------------------------------------------------------------------------

export interface InterceptConversion {
  /** The equivalent PolicyLayer policy, validated by PolicySchema. */
  readonly document: PolicyDocument;
  /** Located lines (`file: /pointer: message (line L:C)`) for what converted with a caveat. */
  readonly warnings: string[];
}

/** A rule after Intercept's own defaults: `rate_limit` spelled out, `action` filled in. */
interface Rule {
  readonly at: readonly PathSegment[];
  readonly name: string;
  readonly deny: boolean;
  readonly onDeny: string | undefined;
  readonly conditions: ReadonlyArray<{ readonly path: string; readonly op: (typeof OPS)[number]; readonly value: unknown; readonly at: readonly PathSegment[] }>;
  readonly state: { readonly counter: string; readonly window: string; readonly increment: number; readonly incrementFrom: string | undefined; readonly at: readonly PathSegment[] } | undefined;
  /** Set for a state block written with `increment` beside `increment_from` (Intercept ignores it). */
  readonly ignoredIncrement: boolean;
}

type Condition = { path: string; op: string; value: unknown; reason?: string };
type Limit = Record<string, unknown>;

interface Converted {
  require: Condition[];
  denyIf: Condition[];
  limits: Limit[];
}

/**
 * Validates an Intercept policy (already parsed from JSON or YAML) and converts it. `text`, when
 * given, locates every problem by line; `prefix` places the policy inside a larger file (an
 * inline policy). Throws ConfigError listing every problem.
 */
export function convertIntercept(value: unknown, source: string, text?: SourceText, prefix: readonly PathSegment[] = []): InterceptConversion {
  const parsed = InterceptSchema.safeParse(value);
  if (!parsed.success) throw new ConfigError(formatProblems(source, text, zodProblems(parsed.error, value), prefix));
  const doc = parsed.data;
  const rules = normaliseRules(doc);
  const invalid = crossCheck(doc, rules);
  if (invalid.length > 0) throw new ConfigError(formatProblems(source, text, invalid, prefix));

  const c = new Converter(rules, text, prefix);
  const out = c.convert(doc);
  if (c.problems.length > 0) throw new ConfigError(formatProblems(source, text, c.problems, prefix));
  const checked = PolicySchema.safeParse(out);
  if (!checked.success) {
    // A document this module built that PolicySchema refuses is a bug here, not in the file.
    const lines = formatProblems('(converted policy)', undefined, zodProblems(checked.error, out));
    throw new ConfigError([`${source}: the Intercept policy could not be converted (please report this):`, ...lines.map((l) => `  ${l}`)]);
  }
  return { document: checked.data, warnings: formatProblems(source, text, c.warnings, prefix) };
}

function normaliseRules(doc: InterceptDocument): Map<string, Rule[]> {
  const out = new Map<string, Rule[]>();
  for (const [tool, def] of Object.entries(doc.tools)) {
    const scope = tool === WILDCARD ? GLOBAL_SCOPE : tool;
    out.set(tool, (def?.rules ?? []).map((r, i) => normaliseRule(r, ['tools', tool, 'rules', i], scope)));
  }
  return out;
}

function normaliseRule(r: InterceptRule, at: readonly PathSegment[], scope: string): Rule {
  const base = { at, name: r.name, deny: r.action === 'deny', onDeny: r.on_deny === null || r.on_deny === '' ? undefined : r.on_deny };
  if (r.rate_limit !== undefined && r.rate_limit !== null) {
    // The schema has checked the shorthand; it stands for a counter of calls and a limit on it.
    const { count, window } = parseRateLimit(r.rate_limit) as { count: number; window: string };
    const counter = `_rate_${window}`;
    const where = [...at, 'rate_limit'];
    return {
      ...base,
      deny: false,
      conditions: [{ path: `state.${scope}.${counter}`, op: 'lte', value: count, at: where }],
      state: { counter, window, increment: 1, incrementFrom: undefined, at: where },
      ignoredIncrement: false,
    };
  }
  const s = r.state ?? undefined;
  return {
    ...base,
    conditions: (r.conditions ?? []).map((c, j) => ({ path: c.path, op: c.op, value: c.value, at: [...at, 'conditions', j] })),
    state:
      s === undefined
        ? undefined
        : {
            counter: s.counter,
            window: s.window,
            increment: s.increment === undefined || s.increment === null || s.increment === 0 ? 1 : s.increment,
            incrementFrom: s.increment_from ?? undefined,
            at: [...at, 'state'],
          },
    ignoredIncrement: s != null && s.increment_from != null && s.increment != null && s.increment !== 0,
  };
}

/** Intercept's checks that span rules: duplicate hide entries and counters, state conditions without a state block. */
function crossCheck(doc: InterceptDocument, rules: ReadonlyMap<string, readonly Rule[]>): Problem[] {
  const problems: Problem[] = [];
  const seenHide = new Map<string, number>();
  (doc.hide ?? []).forEach((name, i) => {
    const prev = seenHide.get(name);
    if (prev !== undefined) problems.push({ path: ['hide', i], message: `duplicate entry ${JSON.stringify(name)} (also hide/${prev})` });
    else seenHide.set(name, i);
  });
  for (const [tool, list] of rules) {
    const scope = tool === WILDCARD ? GLOBAL_SCOPE : tool;
    const counters = new Map<string, number>();
    list.forEach((r, i) => {
      if (r.state === undefined) return;
      const prev = counters.get(r.state.counter);
      const where = r.state.at[r.state.at.length - 1] === 'rate_limit' ? r.state.at : [...r.state.at, 'counter'];
      if (prev !== undefined) {
        problems.push({ path: where, message: `duplicate state counter ${JSON.stringify(r.state.counter)} (also used by tools/${tool}/rules/${prev})` });
      } else counters.set(r.state.counter, i);
    });
    for (const r of list) {
      for (const c of r.conditions) {
        if (!c.path.startsWith('state.')) continue;
        // A rule's condition on its own counter always has its state block, whatever dots the tool name holds.
        if (r.state !== undefined && c.path === `state.${scope}.${r.state.counter}`) continue;
        // Read as Intercept reads it: state.<tool>.<counter>, the counter being everything after the second dot.
        const parts = c.path.split('.');
        if (parts.length < 3) continue;
        const owner = parts[1] as string;
        const counter = parts.slice(2).join('.');
        if (!definesCounter(rules, owner, counter)) {
          problems.push({
            path: c.at[c.at.length - 1] === 'rate_limit' ? c.at : [...c.at, 'path'],
            message: `no state block defines the counter ${JSON.stringify(counter)} of ${owner === GLOBAL_SCOPE ? 'the "*" rules' : JSON.stringify(owner)} (add state: { counter: ${counter}, window: ... } to the rule)`,
          });
        }
      }
    }
  }
  return problems;
}

function definesCounter(rules: ReadonlyMap<string, readonly Rule[]>, owner: string, counter: string): boolean {
  const list = rules.get(owner) ?? (owner === GLOBAL_SCOPE ? rules.get(WILDCARD) : undefined);
  return list !== undefined && list.some((r) => r.state?.counter === counter);
}

class Converter {
  readonly problems: Problem[] = [];
  readonly warnings: Problem[] = [];

  constructor(
    private readonly rules: ReadonlyMap<string, readonly Rule[]>,
    private readonly text: SourceText | undefined,
    private readonly prefix: readonly PathSegment[],
  ) {}

  convert(doc: InterceptDocument): Record<string, unknown> {
    const out: Record<string, unknown> = { version: '1' };
    if (doc.description != null && doc.description !== '') out.description = doc.description;
    const defaultAction = doc.default ?? 'allow';
    out.default = defaultAction;

    const hide = doc.hide ?? [];
    hide.forEach((name, i) => {
      if (name !== WILDCARD && /[*?]/.test(name)) {
        this.problems.push({
          path: ['hide', i],
          message: `${JSON.stringify(name)} contains * or ?: Intercept hides the tool of exactly this name, but PolicyLayer would read it as a glob`,
        });
      }
    });
    if (hide.length > 0) out.hide = [...hide];

    // A deny rule under "*" denies every call that reaches the wildcard rules: every call.
    const wildcardRules = this.rules.get(WILDCARD) ?? [];
    const wildcardDeny = wildcardRules.find((r) => r.deny);
    if (wildcardDeny !== undefined) {
      this.warnings.push({ path: wildcardDeny.at, message: `the "*" rule ${JSON.stringify(wildcardDeny.name)} denies every call, of every tool` });
    }

    const tools: Record<string, unknown> = {};
    for (const [tool, list] of this.rules) {
      if (tool === WILDCARD) continue;
      if (/[*?]/.test(tool)) {
        this.problems.push({
          path: ['tools', tool],
          message: `tool name ${JSON.stringify(tool)} contains * or ?: Intercept matches it literally, but PolicyLayer would read it as a glob`,
          atKey: true,
        });
        continue;
      }
      const deny = list.find((r) => r.deny) ?? wildcardDeny;
      if (deny !== undefined) {
        tools[tool] = { action: 'deny', reason: denyReason(deny) };
        continue;
      }
      tools[tool] = ruleDocument(this.convertRules(list, tool));
    }
    if (wildcardDeny !== undefined) {
      // Under default deny an unlisted tool is refused before any rule, as in Intercept; under
      // default allow a "*" entry refuses it with the rule's own reason.
      if (defaultAction === 'allow') tools[WILDCARD] = { action: 'deny', reason: denyReason(wildcardDeny) };
    } else {
      const all = ruleDocument(this.convertRules(wildcardRules, GLOBAL_SCOPE));
      if (Object.keys(all).length > 0) out.all_tools = all;
    }
    if (Object.keys(tools).length > 0) out.tools = tools;
    return out;
  }

  /** The conditions and limits of one tool's evaluate rules (`scope`: the tool, or `_global`). */
  private convertRules(list: readonly Rule[], scope: string): Converted {
    const out: Converted = { require: [], denyIf: [], limits: [] };
    for (const r of list) {
      const ownCounter = r.state === undefined ? undefined : `state.${scope}.${r.state.counter}`;
      let limit: Limit | undefined;
      for (const c of r.conditions) {
        if (c.path.startsWith('args.')) {
          this.convertArgCondition(c, r, out);
          continue;
        }
        const pathAt = c.at[c.at.length - 1] === 'rate_limit' ? c.at : [...c.at, 'path'];
        if (c.path !== ownCounter || r.state === undefined) {
          this.problems.push({
            path: pathAt,
            message: `a condition on ${c.path} outside the rule whose state block counts it has no PolicyLayer equivalent (Intercept reads that counter without adding to it); put the condition in the rule with the state block`,
          });
          continue;
        }
        if (c.op !== 'lt' && c.op !== 'lte') {
          this.problems.push({
            path: [...c.at, 'op'],
            message: `${c.op} on a counter has no PolicyLayer equivalent: a counter can only be capped, with lte (at most) or lt (below)`,
          });
          continue;
        }
        if (limit !== undefined) {
          this.problems.push({ path: pathAt, message: `a second limit on ${c.path} in the same rule has no PolicyLayer equivalent; keep one` });
          continue;
        }
        limit = this.convertLimit(c, r, r.state, scope);
      }
      if (r.state !== undefined && limit === undefined && ownCounter !== undefined && !r.conditions.some((c) => c.path === ownCounter)) {
        this.warnings.push({
          path: r.state.at,
          message: `the counter ${JSON.stringify(r.state.counter)} has no lte or lt condition on ${ownCounter} in this rule, so it limits nothing (Intercept does not even count it); dropped`,
        });
      }
      if (limit !== undefined) out.limits.push(limit);
    }
    return out;
  }

  private convertLimit(c: Rule['conditions'][number], r: Rule, state: NonNullable<Rule['state']>, scope: string): Limit | undefined {
    const n = c.value as number;
    const valueAt = c.at[c.at.length - 1] === 'rate_limit' ? c.at : [...c.at, 'value'];
    if (!Number.isInteger(n)) {
      this.problems.push({ path: valueAt, message: `a counter limit must be a whole number (counters add whole amounts), got ${n}` });
      return undefined;
    }
    const max = c.op === 'lt' ? n - 1 : n;
    if (max < 1) {
      this.problems.push({
        path: valueAt,
        message: `${c.op} ${n} admits no call once anything is counted; PolicyLayer limits need a maximum of at least 1 (to refuse every call, write a rule with action: deny)`,
      });
      return undefined;
    }
    if (!Number.isSafeInteger(max)) {
      this.problems.push({ path: valueAt, message: `a counter limit must be at most ${Number.MAX_SAFE_INTEGER}, got ${n}` });
      return undefined;
    }
    const limit: Limit = { counter: `${scope}.${state.counter}`, window: state.window, align: 'calendar', max, scope: 'server' };
    if (state.incrementFrom !== undefined) {
      if (!new RegExp(ARG_PATH_PATTERN).test(state.incrementFrom)) {
        this.problems.push({
          path: [...state.at, 'increment_from'],
          message: `PolicyLayer cannot name the argument ${JSON.stringify(state.incrementFrom)}: a path segment is empty or contains whitespace`,
        });
        return undefined;
      }
      this.noteIndexSegments(state.incrementFrom, [...state.at, 'increment_from']);
      limit.increment_from = state.incrementFrom;
      if (r.ignoredIncrement) {
        this.warnings.push({ path: [...state.at, 'increment'], message: 'increment is ignored when increment_from is set (as Intercept ignores it); dropped' });
      }
    } else if (state.increment !== 1) {
      limit.increment = state.increment;
    }
    return limit;
  }

  private convertArgCondition(c: Rule['conditions'][number], r: Rule, out: Converted): void {
    if (!expressiblePath(c.path)) {
      this.problems.push({
        path: [...c.at, 'path'],
        message: `PolicyLayer cannot name the argument ${JSON.stringify(c.path)}: a path segment is empty or contains whitespace, "[", "]" or "*"`,
      });
      return;
    }
    this.noteIndexSegments(c.path, [...c.at, 'path']);
    const reason = r.onDeny === undefined ? {} : { reason: r.onDeny };
    const valueAt = [...c.at, 'value'];
    switch (c.op) {
      case 'eq':
      case 'neq': {
        this.noteStructured(c.value, valueAt, c.op);
        const set = this.looseSet(c.value, valueAt);
        const op = set.length === 1 ? c.op : c.op === 'eq' ? 'in' : 'not_in';
        out.require.push({ path: c.path, op, value: set.length === 1 ? set[0] : set, ...reason });
        return;
      }
      case 'in':
      case 'not_in': {
        const list = c.value as readonly unknown[];
        if (list.length === 0) {
          if (c.op === 'not_in') {
            // Nothing to differ from: any present value passes, null included.
            out.require.push({ path: c.path, op: 'exists', value: true, ...reason });
          } else {
            this.problems.push({
              path: valueAt,
              message: 'in with an empty list never holds, so Intercept denies every call here; write a rule with action: deny instead',
            });
          }
          return;
        }
        const set: unknown[] = [];
        list.forEach((v, k) => {
          this.noteStructured(v, [...valueAt, k], c.op);
          for (const x of this.looseSet(v, [...valueAt, k])) if (!set.some((y) => jsonEqual(y, x))) set.push(x);
        });
        out.require.push({ path: c.path, op: c.op, value: set, ...reason });
        return;
      }
      case 'exists':
        // Intercept counts a null argument as absent; PolicyLayer's exists counts it as present,
        // but `neq null` holds exactly for a present, non-null value.
        if (c.value === true) out.require.push({ path: c.path, op: 'neq', value: null, ...reason });
        else out.denyIf.push({ path: c.path, op: 'neq', value: null, ...reason });
        return;
      case 'contains':
        this.noteStructured(c.value, valueAt, c.op);
        out.require.push({ path: c.path, op: c.op, value: c.value, ...reason });
        return;
      default:
        // lt lte gt gte regex: the same test on both sides.
        out.require.push({ path: c.path, op: c.op, value: c.value, ...reason });
    }
  }

  /**
   * The JSON values an argument may be for Intercept's `eq` to hold against `v`. Intercept
   * compares two numbers as numbers and anything else by Go's default text rendering (`%v`) of
   * both sides, so `eq: 5` also holds for the string "5", and `eq: "true"` for the boolean true.
   */
  private looseSet(v: unknown, at: readonly PathSegment[]): unknown[] {
    if (typeof v === 'number') return [v, this.writtenAsFloat(v, at) ? goFloatText(v) : String(v)];
    if (typeof v === 'boolean') return [v, String(v)];
    if (typeof v === 'string') {
      const out: unknown[] = [v];
      // Arguments arrive as JSON, whose numbers Go holds as float64 and renders with %g.
      const n = Number(v);
      if (v.trim() !== '' && Number.isFinite(n) && goFloatText(n) === v) out.push(n);
      if (v === 'true') out.push(true);
      if (v === 'false') out.push(false);
      return out;
    }
    return [v];
  }

  /**
   * Whether Intercept's YAML decoder reads this number as a float rather than an int: the two
   * render differently from a million up (`1e+06` against `1000000`).
   */
  private writtenAsFloat(n: number, at: readonly PathSegment[]): boolean {
    const node = this.text?.doc.getIn([...this.prefix, ...at], true);
    if (isScalar(node) && typeof node.source === 'string') return /[.eE]/.test(node.source) && !/^[-+]?0[xX]/.test(node.source);
    return !Number.isSafeInteger(n);
  }

  private noteStructured(v: unknown, at: readonly PathSegment[], op: string): void {
    if (typeof v === 'object' && v !== null) {
      this.warnings.push({
        path: at,
        message: `${op} with a list or object value compares JSON values here; Intercept compares their Go text renderings, so e.g. ["5"] and [5] are equal there and not here`,
      });
    }
  }

  private noteIndexSegments(path: string, at: readonly PathSegment[]): void {
    if (path.split('.').slice(1).some((s) => /^(?:0|[1-9][0-9]*)$/.test(s))) {
      this.warnings.push({
        path: at,
        message: `a numeric segment of ${path} also selects an array element here; Intercept only reads object keys, so on an array it found nothing`,
      });
    }
  }
}

function denyReason(r: Rule): string {
  return r.onDeny ?? `denied by the rule ${JSON.stringify(r.name)}`;
}

function ruleDocument(c: Converted): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (c.limits.length > 0) out.limits = c.limits;
  if (c.require.length > 0) out.require = c.require;
  if (c.denyIf.length > 0) out.deny_if = c.denyIf;
  return out;
}

// A PolicyLayer condition path segment: no whitespace, brackets or `*` (those spell indexes and `[*]`).
const SEGMENT = /^[^.\s[\]*]+$/;

function expressiblePath(path: string): boolean {
  const segments = path.split('.').slice(1);
  return segments.length > 0 && segments.every((s) => SEGMENT.test(s));
}

/**
 * Go's default rendering of a float64 (`%v`, which is `%g` with the shortest digits): plain
 * decimals from 1e-4 up to 1e6, exponent form with at least two exponent digits outside that.
 */
export function goFloatText(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (!Number.isFinite(n)) return n > 0 ? '+Inf' : '-Inf';
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  const [mantissa, expText] = n.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 6) {
    const digits = String(Math.abs(exp)).padStart(2, '0');
    return `${mantissa}e${exp < 0 ? '-' : '+'}${digits}`;
  }
  // In this range JavaScript writes the same shortest digits without an exponent.
  return String(n);
}
