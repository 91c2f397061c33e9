import { ConfigError } from '../errors.js';
import { denialText } from '../gateway/gateway.js';
import { evaluate, loadPolicyFile } from '../policy/index.js';
import type { CompiledPolicy, Decision, LimitSpec } from '../policy/index.js';
import { parse } from './args.js';
import type { Command } from './index.js';
import { windowText } from '../util/duration.js';

export const explainCommand: Command = {
  summary: 'show what a policy decides for one tool call, and why',
  usage: `Usage: policylayer explain <policy.json|policy.yaml> --tool <name> [--args '<json object>'] [--format text|json]

Loads the policy with the loader the server uses, evaluates one call and prints the
decision: the effect, the rule that fired (a JSON pointer), the reason, what the agent
would read, the policy version and the limits the call would reserve. Exits 0 whatever
the decision; 1 when the policy or the options are invalid.

Examples:
  policylayer explain examples/filesystem/policy.yaml --tool write_file --args '{"path":"/tmp/x"}'
  policylayer explain examples/piloty/policy.json --tool create_session --format json
`,
  async run(argv) {
    const { values, positionals } = parse(
      'explain',
      argv,
      { tool: { type: 'string', short: 't' }, args: { type: 'string', short: 'a' }, format: { type: 'string' } },
      true,
    );
    const format = parseFormat('explain', values.format);
    if (positionals.length !== 1) {
      throw new Error(`expected exactly one policy file, got ${positionals.length}\nSee 'policylayer explain --help'.`);
    }
    const file = positionals[0] as string;
    if (values.tool === undefined || values.tool === '') throw new Error("missing --tool <name>\nSee 'policylayer explain --help'.");
    const args = parseCallArgs(values.args);

    let policy: CompiledPolicy;
    try {
      policy = loadPolicyFile(file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      reportInvalid(format, file, err.issues);
      return 1;
    }
    const decision = evaluate({ tool: values.tool, args }, policy);
    const agent = agentView(values.tool, decision);
    if (format === 'json') {
      const source = { source: policy.source, version: policy.version, ...(policy.convertedFrom !== undefined ? { convertedFrom: policy.convertedFrom } : {}) };
      const out = { ok: true, policy: source, call: { tool: values.tool, args }, decision, agentSees: agent };
      process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    } else {
      process.stdout.write(explainText(policy, values.tool, args, decision, agent));
    }
    return 0;
  },
};

/** `--format`: text (the default) or json; anything else is an error rather than a silent default. */
export function parseFormat(command: string, value: string | undefined): 'text' | 'json' {
  if (value === undefined || value === 'text' || value === 'json') return value ?? 'text';
  throw new Error(`--format must be text or json, got '${value}'\nSee 'policylayer ${command} --help'.`);
}

/** `--args`: a JSON object, as the agent would send in `tools/call` `arguments`. */
function parseCallArgs(text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`--args is not valid JSON (${(err as Error).message}); expected an object, e.g. --args '{"path":"/tmp/x"}'`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw new Error(`--args must be a JSON object, got ${got}; e.g. --args '{"path":"/tmp/x"}'`);
  }
  return value as Record<string, unknown>;
}

/** Prints a policy's load errors as `validate` does: one located problem per line. */
export function reportInvalid(format: 'text' | 'json', file: string, issues: readonly string[]): void {
  if (format === 'json') process.stdout.write(JSON.stringify({ ok: false, file, errors: issues }, null, 2) + '\n');
  else process.stderr.write(`error ${file}\n${issues.map((e) => `  ${e}`).join('\n')}\n`);
}

/** What reaches the agent for this decision, as the gateway sends it. */
export function agentView(tool: string, d: Decision): string {
  switch (d.effect) {
    case 'deny':
      return `tool result (isError): ${denialText(tool, d)}`;
    case 'hidden':
      return `JSON-RPC error -32602: Unknown tool: ${tool} (and the tool is absent from tools/list)`;
    default:
      return "the call is forwarded; the agent reads the server's own answer";
  }
}

// `enforced` is shown only through `shadow`, which is present exactly when it is false.
const DECISION_FIELDS = new Set(['effect', 'rule', 'reason', 'policyVersion', 'limits', 'enforced', 'validateArguments']);
const LIMIT_FIELDS = new Set(['counter', 'kind', 'windowMs', 'max', 'scope', 'increment', 'incrementFrom', 'pointer']);

/** Fields of a decision that this command does not know by name (added to the policy language later). */
export function extraFields(d: Decision): Array<[string, unknown]> {
  return Object.entries(d).filter(([k, v]) => !DECISION_FIELDS.has(k) && v !== undefined);
}

function explainText(policy: CompiledPolicy, tool: string, args: Record<string, unknown>, d: Decision, agent: string): string {
  const lines = [
    `call:        ${tool} ${JSON.stringify(args)}`,
    `policy:      ${policy.source} (${d.policyVersion})${policy.convertedFrom === 'intercept' ? ', an Intercept policy converted on load: rule pointers are into the converted policy (policylayer convert shows it)' : ''}`,
    `effect:      ${d.effect}`,
    `rule:        ${d.rule}`,
    `reason:      ${d.reason}`,
    `agent sees:  ${agent}`,
  ];
  if (d.limits.length === 0) lines.push('limits:      none');
  else {
    lines.push(`limits:      ${d.limits.length} reserved before the call is forwarded`);
    for (const l of d.limits) lines.push(`  - ${limitText(l)}`);
  }
  for (const [k, v] of extraFields(d)) lines.push(`${(k + ':').padEnd(12)} ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return lines.join('\n') + '\n';
}

function limitText(l: LimitSpec): string {
  const parts =
    l.kind === 'in_flight'
      ? [`counter ${l.counter}`, `max in flight ${l.max}`, `scope ${l.scope}`]
      : [`counter ${l.counter}`, `window ${windowText(l.windowMs)}${l.kind === 'calendar' ? ' (calendar, UTC)' : ''}`, `max ${l.max}`, `scope ${l.scope}`];
  if (l.incrementFrom !== undefined) parts.push(`increment from ${l.incrementFrom}`);
  else if (l.increment !== undefined) parts.push(`increment ${l.increment}`);
  for (const [k, v] of Object.entries(l)) {
    if (!LIMIT_FIELDS.has(k) && v !== undefined) parts.push(`${k} ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return `${parts.join(', ')} (${l.pointer})`;
}

export { windowText };
