import { ConfigError } from '../errors.js';
import { denialText } from '../gateway/gateway.js';
import { loadGatewayConfig } from '../config/index.js';
import { grantRefusal } from '../identity/authenticator.js';
import { openControlStore } from '../main.js';
import { evaluate, loadPolicyFile, parsePolicy } from '../policy/index.js';
import type { CompiledPolicy, Decision, LimitSpec } from '../policy/index.js';
import { parse } from './args.js';
import type { Command } from './index.js';
import { durationText, windowText } from '../util/duration.js';

export const explainCommand: Command = {
  summary: 'show what a policy decides for one tool call, and why',
  usage: `Usage: policylayer explain <policy.json|policy.yaml> --tool <name> [--args '<json object>'] [--format text|json]
       policylayer explain -c <gateway.yaml> --server <name> [--grant <label|id>] --tool <name> [--args …]

Loads the policy with the loader the server uses, evaluates one call and prints the
decision: the effect, the rule that fired (a JSON pointer), the reason, what the agent
would read, the policy version and the limits the call would reserve. Exits 0 whatever
the decision; 1 when the policy or the options are invalid.

With -c and --server the policy is that server's in the gateway config; with --grant it is the
grant's own policy on that server when it has one (from the config's store), and a grant that
could not call the server at all (unbound, revoked, expired) is said so.

Examples:
  policylayer explain examples/filesystem/policy.yaml --tool write_file --args '{"path":"/tmp/x"}'
  policylayer explain examples/piloty/policy.json --tool create_session --format json
  policylayer explain -c gateway.yaml --server piloty --grant ci-runner --tool create_session
`,
  async run(argv) {
    const { values, positionals } = parse(
      'explain',
      argv,
      {
        tool: { type: 'string', short: 't' },
        args: { type: 'string', short: 'a' },
        format: { type: 'string' },
        config: { type: 'string', short: 'c' },
        server: { type: 'string' },
        grant: { type: 'string' },
      },
      true,
    );
    const format = parseFormat('explain', values.format);
    const fromConfig = values.config !== undefined;
    if (fromConfig ? positionals.length !== 0 : positionals.length !== 1) {
      throw new Error(
        fromConfig
          ? "give either a policy file or -c <gateway.yaml> --server <name>, not both\nSee 'policylayer explain --help'."
          : `expected exactly one policy file, got ${positionals.length}\nSee 'policylayer explain --help'.`,
      );
    }
    if (values.grant !== undefined && !fromConfig) throw new Error("--grant needs -c <gateway.yaml> and --server <name>\nSee 'policylayer explain --help'.");
    if (values.tool === undefined || values.tool === '') throw new Error("missing --tool <name>\nSee 'policylayer explain --help'.");
    const args = parseCallArgs(values.args);

    let policy: CompiledPolicy;
    let grant: GrantView | undefined;
    const file = fromConfig ? values.config! : (positionals[0] as string);
    try {
      if (fromConfig) {
        const chosen = await configPolicy(values.config!, values.server, values.grant);
        if ('refused' in chosen) {
          if (format === 'json') process.stdout.write(JSON.stringify({ ok: true, grant: chosen.grant, refused: chosen.refused }, null, 2) + '\n');
          else process.stdout.write(`grant:       ${chosen.grant.label}\nrefused:     ${chosen.refused}\n`);
          return 0;
        }
        ({ policy, grant } = chosen);
      } else {
        policy = loadPolicyFile(file);
      }
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      reportInvalid(format, file, err.issues);
      return 1;
    }
    const decision = evaluate({ tool: values.tool, args }, policy);
    const agent = agentView(values.tool, decision);
    if (format === 'json') {
      const source = { source: policy.source, version: policy.version, ...(policy.convertedFrom !== undefined ? { convertedFrom: policy.convertedFrom } : {}) };
      const out = { ok: true, ...(grant !== undefined ? { grant } : {}), policy: source, call: { tool: values.tool, args }, decision, agentSees: agent };
      process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    } else {
      const head = grant === undefined ? '' : `grant:       ${grant.label} (${grant.policy === 'own' ? `its own policy on ${values.server}` : `the server's policy`})\n`;
      process.stdout.write(head + explainText(policy, values.tool, args, decision, agent));
    }
    return 0;
  },
};

interface GrantView {
  readonly label: string;
  readonly id: string;
  /** Whose policy decides this grant's calls on the server. */
  readonly policy: 'own' | 'server';
}

/**
 * The policy a call to `server` is decided by, as the gateway would choose it: the server's, or
 * the grant's own on that server. A grant the gateway would refuse before any policy is asked
 * (unbound, revoked, expired) is reported as such.
 */
async function configPolicy(
  configFile: string,
  server: string | undefined,
  grantKey: string | undefined,
): Promise<{ policy: CompiledPolicy; grant: GrantView | undefined } | { grant: { label: string; id: string }; refused: string }> {
  if (server === undefined) throw new Error("-c needs --server <name>\nSee 'policylayer explain --help'.");
  const config = loadGatewayConfig(configFile);
  const serverConfig = config.servers.get(server);
  if (serverConfig === undefined) throw new Error(`no server named '${server}' in ${configFile}`);
  if (grantKey === undefined) return { policy: serverConfig.policy, grant: undefined };
  const store = await openControlStore(config.store);
  let record;
  try {
    record = await store.getGrant(grantKey);
  } finally {
    await store.close();
  }
  if (record === undefined) throw new Error(`no grant '${grantKey}' in the store ${config.store}`);
  const who = { label: record.label, id: record.id };
  const refusal = grantRefusal(record, server, Date.now());
  if (refusal !== undefined) {
    const why = { revoked: 'the grant is revoked', expired: 'the grant has expired', rotated: 'its token was rotated out', unbound: `the grant is not bound to '${server}'` }[refusal.why];
    return { grant: who, refused: `${why}: every request answers ${refusal.status} ${refusal.error}` };
  }
  const own = record.policies[server];
  if (own === undefined) return { policy: serverConfig.policy, grant: { ...who, policy: 'server' } };
  return { policy: parsePolicy(own, `grant ${record.label}, server ${server}`), grant: { ...who, policy: 'own' } };
}

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
    case 'require_approval':
      if (!d.enforced) return "the call is forwarded (shadow mode: it would have been held for a person's approval); the agent reads the server's own answer";
      return (
        `the call is held until a person decides (policylayer approvals approve|deny, timeout ${approvalText(d).timeout}); ` +
        "approved, it is forwarded and the agent reads the server's own answer; denied or expired, a tool result (isError) saying who or what refused it and why"
      );
    default:
      return "the call is forwarded; the agent reads the server's own answer";
  }
}

/** A require_approval decision's approval settings, as a person reads them. */
function approvalText(d: Decision): { timeout: string; line: string } {
  const a = d.approval;
  if (a === undefined) return { timeout: '10m', line: 'timeout 10m' };
  const timeout = durationText(a.timeoutMs);
  const parts = [`timeout ${timeout}`];
  if (a.rememberMs !== undefined) parts.push(`remember ${durationText(a.rememberMs)}`);
  if (a.via !== undefined) parts.push(`via ${a.via.join(', ')}`);
  return { timeout, line: `${parts.join(', ')} (${a.pointer})` };
}

// `enforced` is shown only through `shadow`, which is present exactly when it is false.
const DECISION_FIELDS = new Set(['effect', 'rule', 'reason', 'policyVersion', 'limits', 'enforced', 'validateArguments', 'approval']);
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
  if (d.approval !== undefined) lines.push(`approval:    ${approvalText(d).line}`);
  if (d.limits.length === 0) lines.push('limits:      none');
  else {
    const when = d.effect === 'require_approval' && d.enforced ? 'once a person approves the call, before it is forwarded' : 'before the call is forwarded';
    lines.push(`limits:      ${d.limits.length} reserved ${when}`);
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
