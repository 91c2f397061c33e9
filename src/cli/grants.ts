import { loadGatewayConfig } from '../config/index.js';
import { hashToken, newToken } from '../identity/tokens.js';
import { openControlStore } from '../main.js';
import { parsePolicy } from '../policy/index.js';
import { readText } from '../policy/load.js';
import type { GrantRecord } from '../store/store.js';
import { StoreConflictError } from '../store/store.js';
import { parseDuration } from '../util/duration.js';
import { parse } from './args.js';
import type { Command } from './index.js';

const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

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
    const format = values.format ?? 'text';
    if (format !== 'text' && format !== 'json') throw new Error(`--format expects text or json, got '${format}'`);
    if (!values.config && !values.store) throw new Error("missing -c <gateway.yaml> (or --store)\nSee 'policylayer grants --help'.");
    const config = values.config ? loadGatewayConfig(values.config) : undefined;
    const storeUrl = values.store ?? config!.store;
    const out = (text: string, json: unknown) => process.stdout.write(format === 'json' ? `${JSON.stringify(json, null, 2)}\n` : text);
    const target = () => {
      const t = positionals[0];
      if (t === undefined) throw new Error(`missing the grant: policylayer grants ${sub} <label|id>`);
      return t;
    };

    const store = await openControlStore(storeUrl);
    try {
      switch (sub) {
        case 'create': {
          const label = values.label;
          if (label === undefined || !LABEL.test(label)) {
            throw new Error('--label <name> is required: letters, digits, ".", "_" and "-", at most 64');
          }
          const servers = [...new Set(values.server ?? [])];
          if (servers.length === 0) throw new Error('at least one --server <name> is required');
          if (config) {
            for (const s of servers) if (!config.servers.has(s)) throw new Error(`no server named '${s}' in ${values.config}`);
          }
          const policies = grantPolicies(values.policy ?? [], servers);
          const now = Date.now();
          const expiresAt = values.expires === undefined ? null : now + parseDuration(values.expires);
          const token = newToken();
          let grant: GrantRecord;
          try {
            grant = await store.createGrant({ label, servers, policies, expiresAt }, hashToken(token), now);
          } catch (err) {
            if (err instanceof StoreConflictError) throw new Error(`a grant labelled '${label}' exists already`);
            throw err;
          }
          out(
            `${describe(grant)}\ntoken:    ${token}\n\nThis token is shown once: give it to the agent now (Authorization: Bearer <token>).\n`,
            { grant: view(grant), token },
          );
          return 0;
        }
        case 'list': {
          const grants = await store.listGrants();
          out(grants.length === 0 ? 'no grants\n' : grants.map((g) => describe(g)).join('\n\n') + '\n', grants.map(view));
          return 0;
        }
        case 'show': {
          const g = await store.getGrant(target());
          if (g === undefined) throw new Error(`no grant '${target()}'`);
          out(`${describe(g)}\n`, view(g));
          return 0;
        }
        case 'revoke': {
          if (!(await store.revokeGrant(target(), Date.now()))) throw new Error(`no grant '${target()}'`);
          out(`revoked '${target()}': its tokens stop working within a second on every gateway\n`, { revoked: target() });
          return 0;
        }
        case 'rotate': {
          const now = Date.now();
          const grace = values.grace === undefined ? 0 : parseDuration(values.grace);
          const token = newToken();
          if (!(await store.rotateToken(target(), hashToken(token), now, now + grace))) {
            throw new Error(`no grant '${target()}' that can be rotated (it may be revoked)`);
          }
          const until = grace === 0 ? 'stops working now' : `keeps working until ${new Date(now + grace).toISOString()}`;
          out(`rotated '${target()}': the old token ${until}\ntoken:    ${token}\n\nThis token is shown once.\n`, {
            rotated: target(),
            token,
            oldTokenValidUntil: now + grace,
          });
          return 0;
        }
        default:
          throw new Error(`unknown subcommand '${sub ?? ''}': expected create, list, show, revoke or rotate\nSee 'policylayer grants --help'.`);
      }
    } finally {
      await store.close();
    }
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

function view(g: GrantRecord) {
  return {
    id: g.id,
    label: g.label,
    servers: g.servers,
    ownPolicies: Object.keys(g.policies),
    createdAt: new Date(g.createdAt).toISOString(),
    expiresAt: g.expiresAt === null ? null : new Date(g.expiresAt).toISOString(),
    revokedAt: g.revokedAt === null ? null : new Date(g.revokedAt).toISOString(),
  };
}

function describe(g: GrantRecord): string {
  const v = view(g);
  const state = v.revokedAt !== null ? `revoked ${v.revokedAt}` : v.expiresAt !== null && g.expiresAt! <= Date.now() ? `expired ${v.expiresAt}` : 'active';
  const lines = [
    `grant:    ${g.label} (${state})`,
    `id:       ${g.id}`,
    `servers:  ${g.servers.join(', ')}`,
    `created:  ${v.createdAt}`,
    `expires:  ${v.expiresAt ?? 'never'}`,
  ];
  if (v.ownPolicies.length > 0) lines.push(`policies: own policy on ${v.ownPolicies.join(', ')}`);
  return lines.join('\n');
}

