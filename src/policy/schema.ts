// The policy file's schema. It validates only; normalisation (windows to milliseconds, rule
// precedence) happens in compile.ts, which keeps this schema representable as JSON Schema for
// editors (schema/policy.schema.json is generated from it).
import * as z from 'zod';
import { DURATION_PATTERN, parseDuration } from '../util/duration.js';
import { strictObject } from './diagnostics.js';

export const WINDOW_NAMES = ['second', 'minute', 'hour', 'day'] as const;
export const ACTIONS = ['allow', 'deny', 'require_approval'] as const;
export const BUILTIN_SCOPES = ['grant', 'session', 'server'] as const;

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

export const LimitSchema = strictObject(
  {
    counter: nonEmpty('expected a counter name (a non-empty string)').meta({
      description: 'Counter name; limits with the same counter and scope share one count.',
    }),
    window: windowSchema,
    max: positiveInt(POS_INT_MSG).meta({ description: 'Most calls (or increments) allowed per window.' }),
    scope: scopeSchema,
    increment: z
      .number({ error: 'expected a positive number' })
      .positive({ error: 'expected a positive number' })
      .optional()
      .meta({ description: 'Amount each call adds to the counter (default 1).' }),
    increment_from: argPath()
      .optional()
      .meta({ description: 'Add the numeric value of this argument instead of a fixed increment.' }),
  },
  'a limit object with counter, window, max and scope',
)
  .refine((l) => l.increment === undefined || l.increment_from === undefined, {
    error: 'use increment or increment_from, not both',
    path: ['increment_from'],
  })
  .meta({ description: 'A rate limit or quota (carried in the decision; enforced by the limiter).' });

const limitsSchema = z.array(LimitSchema, { error: 'expected an array of limits' });

export const ToolRuleSchema = strictObject(
  {
    action: z
      .enum(ACTIONS, { error: 'expected allow|deny|require_approval' })
      .optional()
      .meta({ description: 'What happens to a call of this tool (default allow).' }),
    reason: nonEmpty('expected a non-empty string')
      .optional()
      .meta({ description: 'Text the agent sees when this rule denies a call.' }),
    on_deny: nonEmpty('expected a non-empty string').optional().meta({ description: 'Alias of reason.' }),
    limits: limitsSchema.optional(),
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
    default: z
      .enum(['allow', 'deny'], { error: 'expected allow|deny' })
      .meta({ description: 'What happens to a tool that no entry under tools matches.' }),
    hide: z
      .array(nonEmpty('expected a tool name or glob'), { error: 'expected an array of tool names or globs' })
      .optional()
      .meta({
        description: 'Tools removed from tools/list; calling one answers as an unknown tool. Globs: * any run, ? one character.',
      }),
    all_tools: strictObject({ limits: limitsSchema.optional() }, 'an object with limits')
      .optional()
      .meta({ description: 'Limits applied to every allowed call, in addition to the tool’s own.' }),
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
