import { LABEL_PATTERN, type GrantView } from '../admin/control.js';
import { parsePolicy } from '../policy/index.js';
import { readText } from '../policy/load.js';
import { parseDuration } from '../util/duration.js';
import { parse } from './args.js';
import { cliActor, printer, withControlPlane } from './control.js';
import type { Command } from './index.js';

export const grantsCommand: Command = {
  summary: 'create, list, show, revoke and rotate grants (agent tokens)',
  usage: `Usage: policylayer grants <create|list|show|revoke|rotate> -c <gateway.yaml> [options]

A grant is one agent's bearer token, bound to servers. The store is the config's \`store\`
(or --store sqlite:<path> | postgres://…). The token is printed once, at create and rotate;
only its hash is kept.

  create --label <name> --server <s> [--server <s>...] [--expires <duration>]
         [--policy <server>=<policy file>]...   the grant's own policy on that server
  list                                          every grant, revoked ones included
  show <label|id>
  revoke <label|id>                             every token of the grant stops working at once
  rotate <label|id> [--grace <duration>]        a new token; the old one works for --grace (default 0)

Options: --format text|json

Example:
  policylayer grants create -c gateway.yaml --label alice-laptop --server piloty --expires 30d
`,
  async run(argv) {
    const [sub, ...rest] = argv;
    const { values, positionals } = parse(
      'grants',
      rest,
      {
        config: { type: 'string', short: 'c' },
        store: { type: 'string' },
        label: { type: 'string' },
        server: { type: 'string', multiple: true },
        expires: { type: 'string' },
        policy: { type: 'string', multiple: true },
        grace: { type: 'string' },
        format: { type: 'string' },
      },
      true,
    );
    const out = printer(values.format ?? 'text');
    const target = () => {
      const t = positionals[0];
      if (t === undefined) throw new Error(`missing the grant: policylayer grants ${sub} <label|id>`);
      return t;
    };
    return withControlPlane('grants', values, async (control) => {
      switch (sub) {
        case 'create': {
          const label = values.label;
          if (label === undefined || !LABEL_PATTERN.test(label)) {
            throw new Error('--label <name> is required: letters, digits, ".", "_" and "-", at most 64');
          }
          const servers = [...new Set(values.server ?? [])];
          if (servers.length === 0) throw new Error('at least one --server <name> is required');
          const { grant, token } = await control.createGrant(cliActor(), {
            label,
            servers,
            expiresInMs: values.expires === undefined ? undefined : parseDuration(values.expires),
            policies: grantPolicies(values.policy ?? [], servers),
          });
          out(`${describe(grant)}\ntoken:    ${token}\n\nThis token is shown once: give it to the agent now (Authorization: Bearer <token>).\n`, { grant, token });
          return 0;
        }
        case 'list': {
          const grants = await control.listGrants();
          out(grants.length === 0 ? 'no grants\n' : grants.map(describe).join('\n\n') + '\n', grants);
          return 0;
        }
        case 'show': {
          const g = await control.getGrant(target());
          out(`${describe(g)}\n`, g);
          return 0;
        }
        case 'revoke': {
          await control.revokeGrant(cliActor(), target());
          out(`revoked '${target()}': its tokens stop working within a second on every gateway\n`, { revoked: target() });
          return 0;
        }
        case 'rotate': {
          const grace = values.grace === undefined ? 0 : parseDuration(values.grace);
          const r = await control.rotateGrant(cliActor(), target(), grace);
          const until = grace === 0 ? 'stops working now' : `keeps working until ${r.oldTokenValidUntil}`;
          out(`rotated '${target()}': the old token ${until}\ntoken:    ${r.token}\n\nThis token is shown once.\n`, {
            rotated: target(),
            token: r.token,
            oldTokenValidUntil: r.oldTokenValidUntil,
          });
          return 0;
        }
        default:
          throw new Error(`unknown subcommand '${sub ?? ''}': expected create, list, show, revoke or rotate\nSee 'policylayer grants --help'.`);
      }
    });
  },
};

/** `--policy server=file` pairs, each policy validated now so a broken one never reaches a gateway. */
function grantPolicies(pairs: readonly string[], servers: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new Error(`--policy expects <server>=<policy file>, got '${pair}'`);
    const server = pair.slice(0, at);
    if (!servers.includes(server)) throw new Error(`--policy names '${server}', which is not one of the grant's --server`);
    const file = pair.slice(at + 1);
    const text = readText(file);
    parsePolicy(text, file);
    out[server] = text;
  }
  return out;
}

function describe(g: GrantView): string {
  const state = g.state === 'revoked' ? `revoked ${g.revokedAt}` : g.state === 'expired' ? `expired ${g.expiresAt}` : 'active';
  const lines = [
    `grant:    ${g.label} (${state})`,
    `id:       ${g.id}`,
    `servers:  ${g.servers.join(', ')}`,
    `created:  ${g.createdAt}`,
    `expires:  ${g.expiresAt ?? 'never'}`,
  ];
  if (g.ownPolicies.length > 0) lines.push(`policies: own policy on ${g.ownPolicies.join(', ')}`);
  return lines.join('\n');
}
