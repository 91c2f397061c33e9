// The policy file's schema. It validates only; normalisation (windows to milliseconds, rule
// precedence) happens in compile.ts, which keeps this schema representable as JSON Schema for
// editors (schema/policy.schema.json is generated from it).
import * as z from 'zod';
import { DURATION_PATTERN, parseDuration } from '../util/duration.js';
import { checkRegex, normaliseHostPattern, normalisePrefix } from './conditions.js';
import { strictObject } from './diagnostics.js';
import { CONDITION_PATH_PATTERN } from './path.js';

export const WINDOW_NAMES = ['second', 'minute', 'hour', 'day'] as const;
export const ACTIONS = ['allow', 'deny', 'require_approval'] as const;
export const BUILTIN_SCOPES = ['grant', 'session', 'server'] as const;
export const APPROVAL_VIA = ['dashboard', 'elicitation', 'webhook'] as const;
export const CONDITION_OPS = [
  'eq',
  'neq',
  'lt',
  'lte',
  'gt',
  'gte',
  'in',
  'not_in',
  'exists',
  'regex',
  'contains',
  'path_prefix',
  'url_host',
] as const;

/**
 * `args.<path>`: a value inside the call's arguments, one dot-separated segment per property or
 * array index (`args.amount`, `args.items.0.sku`).
 */
export const ARG_PATH_PATTERN = '^args(?:\\.[^.\\s]+)+$';

const WINDOW_MSG = 'expected second|minute|hour|day or a duration like "90s"';
const SCOPE_MSG = 'expected grant|session|server or args.<path>';
const ARG_PATH_MSG = 'expected args.<path>, e.g. "args.amount"';
const POS_INT_MSG = 'expected a positive integer';

// No real quota spans a century; the bound keeps window arithmetic far from float imprecision.
const MAX_WINDOW_SECONDS = 100 * 366 * 86_400;

function durationMs(s: string): number | undefined {
  try {
    const ms = parseDuration(s);
    return ms <= MAX_WINDOW_SECONDS * 1000 ? ms : undefined;
  } catch {
    return undefined;
  }
}

const positiveInt = (msg: string) => z.number({ error: msg }).int({ error: msg }).positive({ error: msg });
const nonEmpty = (msg: string) => z.string({ error: msg }).min(1, { error: msg });
const argPath = () => z.string({ error: ARG_PATH_MSG }).regex(new RegExp(ARG_PATH_PATTERN), { error: ARG_PATH_MSG });

// Each branch carries the same message because zod reports the branch whose type matched
// (e.g. a string that fails the duration pattern) rather than the union's own message.
const windowSchema = z
  .union(
    [
      z.enum(WINDOW_NAMES, { error: WINDOW_MSG }),
      z
        .string({ error: WINDOW_MSG })
        .regex(new RegExp(DURATION_PATTERN), { error: WINDOW_MSG, abort: true })
        .refine((s) => (durationMs(s) ?? 0) > 0, { error: 'expected a duration longer than zero and shorter than 100 years' }),
      positiveInt(WINDOW_MSG)
        .max(MAX_WINDOW_SECONDS, { error: 'expected at most 100 years of seconds' })
        .meta({ description: 'Window length in seconds.' }),
    ],
    { error: WINDOW_MSG },
  )
  .meta({ description: 'Counting window: second, minute, hour, day, a duration ("90s", "5m", "1h", "1d") or seconds.' });

const scopeSchema = z
  .union(
    [
      z.enum(BUILTIN_SCOPES, { error: SCOPE_MSG }),
      z.string({ error: SCOPE_MSG }).regex(new RegExp(ARG_PATH_PATTERN), { error: SCOPE_MSG }),
    ],
    { error: SCOPE_MSG },
  )
  .meta({
    description:
      'Who shares the counter: grant (one agent identity), session, server (all callers) or args.<path> (per argument value).',
  });

export const LIMIT_ALIGNS = ['rolling', 'calendar'] as const;

export const LimitSchema = strictObject(
  {
    counter: nonEmpty('expected a counter name (a non-empty string)').meta({
      description: 'Counter name; limits with the same counter, window and scope share one count.',
    }),
    window: windowSchema.optional(),
    max: positiveInt(POS_INT_MSG).optional().meta({ description: 'Most calls (or increments) admitted per window.' }),
    align: z
      .enum(LIMIT_ALIGNS, { error: 'expected rolling|calendar' })
      .optional()
      .meta({
        description:
          'rolling (default): in any interval as long as the window, at most max. calendar: fixed UTC windows (a day resets at 00:00 UTC).',
      }),
    max_in_flight: positiveInt(POS_INT_MSG)
      .optional()
      .meta({ description: 'A concurrency limit instead of a rate: at most this many calls in flight at once (no window or max).' }),
    scope: scopeSchema,
    increment: z
      .number({ error: 'expected a positive number' })
      .positive({ error: 'expected a positive number' })
      .optional()
      .meta({ description: 'Amount each call adds to the counter (default 1).' }),
    increment_from: argPath()
      .optional()
      .meta({ description: 'Add the numeric value of this argument instead of a fixed increment (a quota, e.g. spend per day).' }),
  },
  'a limit object with counter, scope and either window and max, or max_in_flight',
)
  .superRefine((l, ctx) => {
    const issue = (message: string, path: string) => ctx.addIssue({ code: 'custom', message, path: [path] });
    if (l.max_in_flight !== undefined) {
      for (const k of ['window', 'max', 'align', 'increment', 'increment_from'] as const) {
        if (l[k] !== undefined) issue(`a max_in_flight limit takes no ${k}`, k);
      }
      return;
    }
    if (l.window === undefined) issue('expected a window (second|minute|hour|day or a duration), or max_in_flight', 'window');
    if (l.max === undefined) issue('expected max (a positive integer), or max_in_flight', 'max');
    if (l.increment !== undefined && l.increment_from !== undefined) issue('use increment or increment_from, not both', 'increment_from');
  })
  .meta({ description: 'A rate limit, a quota or a concurrency limit, reserved before the call is forwarded.' });

const limitsSchema = z.array(LimitSchema, { error: 'expected an array of limits' });

// ---- conditions (require / deny_if) ----

const COND_PATH_MSG = 'expected args.<path>, e.g. "args.amount", "args.items.0.sku" or "args.items[*].sku"';
const OP_MSG = `expected op: ${CONDITION_OPS.join('|')}`;
const JSON_MSG = 'expected a JSON value';

const jsonValue = () => z.unknown().refine((v) => v !== undefined, { error: JSON_MSG });
const conditionFields = {
  path: z
    .string({ error: COND_PATH_MSG })
    .regex(new RegExp(CONDITION_PATH_PATTERN), { error: COND_PATH_MSG })
    .meta({ description: 'Where in the arguments: args.a.b, args.items.0.b, args.items[0].b, args.items[*].b (every element).' }),
  reason: nonEmpty('expected a non-empty string')
    .optional()
    .meta({ description: 'Text the agent sees when this condition denies (default: generated from path, op and value).' }),
};

function condition<const Ops extends readonly [string, ...string[]]>(ops: Ops, value: z.ZodType, description: string) {
  return strictObject({ path: conditionFields.path, op: z.enum(ops), value, reason: conditionFields.reason }, 'a condition with path, op and value').meta({
    description,
  });
}

const nonEmptyList = (item: z.ZodType, msg: string) => z.array(item, { error: msg }).min(1, { error: msg });

const regexCondition = condition(['regex'], z.string({ error: 'expected a regular expression (a string)' }), 'The string argument matches this RE2 regular expression (unanchored).').superRefine(
  (c, ctx) => {
    const problem = checkRegex(c, c.value as string);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, path: ['value'] });
  },
);

const PREFIX_MSG = 'expected a directory prefix without ".." or NUL bytes';
const HOST_MSG = 'expected a host name like "example.com" or "*.example.com" (no scheme, port or path)';

export const ConditionSchema = z
  .discriminatedUnion(
    'op',
    [
      condition(['eq', 'neq'], jsonValue(), 'The argument is (eq) or is not (neq) deep-equal to value.'),
      condition(
        ['lt', 'lte', 'gt', 'gte'],
        z.number({ error: 'expected a number' }),
        'Numeric comparison; an argument that is not a number fails it.',
      ),
      condition(
        ['in', 'not_in'],
        nonEmptyList(jsonValue(), 'expected a non-empty array of values'),
        'The argument is (in) or is not (not_in) deep-equal to one of the values.',
      ),
      condition(['exists'], z.boolean({ error: 'expected true or false' }), 'The argument is present (true) or absent (false).'),
      regexCondition,
      condition(['contains'], jsonValue(), 'A string argument contains value as a substring; an array argument has an element deep-equal to value.'),
      condition(
        ['path_prefix'],
        nonEmptyList(
          z.string({ error: PREFIX_MSG }).refine((p) => normalisePrefix(p) !== undefined, { error: PREFIX_MSG }),
          'expected a non-empty array of directory prefixes',
        ),
        'The argument, normalised lexically as a POSIX path, stays inside one of these directories.',
      ),
      condition(
        ['url_host'],
        nonEmptyList(
          z.string({ error: HOST_MSG }).refine((h) => normaliseHostPattern(h) !== undefined, { error: HOST_MSG }),
          'expected a non-empty array of host names',
        ),
        'The argument is an http(s) URL whose host is one of these (*.example.com: any subdomain).',
      ),
    ],
    { error: OP_MSG },
  )
  .meta({ description: 'A condition on the call’s arguments.' });

const conditionsSchema = (what: string) => z.array(ConditionSchema, { error: 'expected an array of conditions' }).meta({ description: what });
const REQUIRE_DESC = 'Conditions that must all hold, else the call is denied (checked in order; the first failing one is named).';
const DENY_IF_DESC = 'Conditions any of which denies the call (checked in order; the first matching one is named).';

// ---- approval and shadow ----

const DURATION_MSG = 'expected a duration like "10m" or a number of seconds';

const durationSchema = z.union(
  [
    z
      .string({ error: DURATION_MSG })
      .regex(new RegExp(DURATION_PATTERN), { error: DURATION_MSG, abort: true })
      .refine((s) => (durationMs(s) ?? 0) > 0, { error: 'expected a duration longer than zero and shorter than 100 years' }),
    positiveInt(DURATION_MSG).max(MAX_WINDOW_SECONDS, { error: 'expected at most 100 years of seconds' }),
  ],
  { error: DURATION_MSG },
);

const VIA_MSG = `expected ${APPROVAL_VIA.join('|')}, or an array of them`;

export const ApprovalSchema = strictObject(
  {
    timeout: durationSchema.meta({ description: 'How long to wait for a human before denying.' }),
    remember: durationSchema.optional().meta({ description: 'How long an approval covers repeated identical calls.' }),
    via: z
      .union(
        [
          z.enum(APPROVAL_VIA, { error: VIA_MSG }),
          z
            .array(z.enum(APPROVAL_VIA, { error: VIA_MSG }), { error: VIA_MSG })
            .min(1, { error: VIA_MSG })
            .refine((a) => new Set(a).size === a.length, { error: 'expected each channel at most once' }),
        ],
        { error: VIA_MSG },
      )
      .optional()
      .meta({
        description:
          'The channels the person is asked through, besides the admin API and CLI (which can always decide): webhook (signed POST with approve/deny links; also the default when via is omitted and webhooks are configured), elicitation (the MCP client asks its own user), dashboard. One name or an array.',
      }),
  },
  'an approval object with timeout',
).meta({ description: 'Human approval settings of a require_approval rule: how long the call waits for a person (timeout; 10m when the rule has no approval block), how long an approval re-admits the identical call (remember), and the channel (via).' });

const validateArgumentsSchema = (description: string) =>
  z.boolean({ error: 'expected true or false' }).optional().meta({ description });

const shadowSchema = (description: string) => z.boolean({ error: 'expected true or false' }).optional().meta({ description });

export const ToolRuleSchema = strictObject(
  {
    action: z
      .enum(ACTIONS, { error: 'expected allow|deny|require_approval' })
      .optional()
      .meta({ description: 'What happens to a call of this tool (default allow).' }),
    reason: nonEmpty('expected a non-empty string')
      .optional()
      .meta({ description: 'Text the agent sees when this rule denies a call; for require_approval, why a person must decide (shown to the approver).' }),
    on_deny: nonEmpty('expected a non-empty string').optional().meta({ description: 'Alias of reason.' }),
    limits: limitsSchema.optional(),
    require: conditionsSchema(REQUIRE_DESC).optional(),
    deny_if: conditionsSchema(DENY_IF_DESC).optional(),
    approval: ApprovalSchema.optional(),
    shadow: shadowSchema('Decide but do not enforce: decisions by this rule say what would have happened (overrides the policy’s shadow).'),
    validate_arguments: validateArgumentsSchema(
      'Check the arguments of an allowed call against the tool’s own inputSchema from tools/list before forwarding it (default: all_tools.validate_arguments, else true).',
    ),
  },
  'a tool rule object (use {} to allow the tool)',
).refine((r) => r.reason === undefined || r.on_deny === undefined, {
  error: 'use reason or on_deny, not both',
  path: ['on_deny'],
});

export const PolicySchema = strictObject(
  {
    $schema: z.string({ error: 'expected a string' }).optional().meta({ description: 'JSON Schema reference for editors.' }),
    version: z
      .union([z.literal('1', { error: 'expected "1"' }), z.literal(1, { error: 'expected "1"' })], { error: 'expected "1"' })
      .meta({ description: 'Policy format version.' }),
    description: z
      .string({ error: 'expected a string' })
      .optional()
      .meta({ description: 'What the policy is for, for people reading it; decisions do not use it.' }),
    default: z
      .enum(['allow', 'deny'], { error: 'expected allow|deny' })
      .meta({ description: 'What happens to a tool that no entry under tools matches.' }),
    hide: z
      .array(nonEmpty('expected a tool name or glob'), { error: 'expected an array of tool names or globs' })
      .optional()
      .meta({
        description: 'Tools removed from tools/list; calling one answers as an unknown tool. Globs: * any run, ? one character.',
      }),
    shadow: shadowSchema('Decide but do not enforce any decision: each says what would have happened.'),
    all_tools: strictObject(
      {
        limits: limitsSchema.optional(),
        require: conditionsSchema(`${REQUIRE_DESC} Checked after the tool’s own.`).optional(),
        deny_if: conditionsSchema(`${DENY_IF_DESC} Checked after the tool’s own.`).optional(),
        validate_arguments: validateArgumentsSchema(
          'The default for every tool: check arguments against the tool’s own inputSchema (true when omitted; a rule’s validate_arguments overrides it).',
        ),
      },
      'an object with limits, require, deny_if or validate_arguments',
    )
      .optional()
      .meta({ description: 'Limits, conditions and argument validation applied to every allowed call, after the tool’s own.' }),
    tools: z
      .record(nonEmpty('expected a tool name or glob (a non-empty string)'), ToolRuleSchema, {
        error: 'expected an object mapping tool names or globs to rules',
      })
      .optional()
      .meta({
        description:
          'Rules by exact tool name or glob (* any run, ? one character). An exact name beats any glob; among globs the most literal characters win, then the fewest wildcards, then the earliest.',
      }),
  },
  'a policy object with version and default',
).meta({ title: 'PolicyLayer policy', description: 'Rules a PolicyLayer gateway applies to every MCP tool call.' });

export type PolicyDocument = z.output<typeof PolicySchema>;
export type ToolRuleDocument = z.output<typeof ToolRuleSchema>;
export type LimitDocument = z.output<typeof LimitSchema>;
export type ConditionDocument = z.output<typeof ConditionSchema>;
export type ApprovalDocument = z.output<typeof ApprovalSchema>;
