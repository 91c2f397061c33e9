import { readSource } from '../policy/diagnostics.js';
import { readText } from '../policy/load.js';
import type { ServerView } from '../admin/control.js';
import { parse } from './args.js';
import { cliActor, printer, withControlPlane } from './control.js';
import type { Command } from './index.js';

export const serversCommand: Command = {
  summary: 'list servers, and add or remove servers while gateways run',
  usage: `Usage: policylayer servers <list|show|add|remove> -c <gateway.yaml> [options]

Servers of gateway.yaml are listed but changed only in the file. Servers added here are kept in
the control store (the config's \`store\`); every gateway using that store starts serving them,
or stops, within a second. Credentials are shown masked.

  list
  show <name>
  add <name> --policy <policy file>
      --url <url> [--transport streamable-http|sse] [--header "Name: value"]...
    | --command "<program> [args]" [--env NAME=value]... [--cwd <dir>] [--isolation shared|session]
    | --definition <server.yaml>        a server object as in gateway.yaml (for oauth and the rest)
      [--timeout <duration>]
  remove <name>

Write credentials as \${VAR} or \${file:path} references (single-quoted in the shell): the
store keeps the reference, and each gateway resolves it from its own environment.

Options: --format text|json

Example:
  policylayer servers add github -c gateway.yaml --url https://api.example.com/mcp \\
    --header 'Authorization: Bearer \${GITHUB_TOKEN}' --policy policies/github.yaml
`,
  async run(argv) {
    const [sub, ...rest] = argv;
    const { values, positionals } = parse(
      'servers',
      rest,
      {
        config: { type: 'string', short: 'c' },
        store: { type: 'string' },
        policy: { type: 'string' },
        url: { type: 'string' },
        transport: { type: 'string' },
        header: { type: 'string', multiple: true },
        command: { type: 'string' },
        env: { type: 'string', multiple: true },
        cwd: { type: 'string' },
        isolation: { type: 'string' },
        definition: { type: 'string' },
        timeout: { type: 'string' },
        format: { type: 'string' },
      },
      true,
    );
    const out = printer(values.format ?? 'text');
    const name = () => {
      const n = positionals[0];
      if (n === undefined) throw new Error(`missing the server name: policylayer servers ${sub} <name>`);
      return n;
    };
    return withControlPlane('servers', values, async (control) => {
      switch (sub) {
        case 'list': {
          const servers = await control.listServers();
          out(servers.length === 0 ? 'no servers\n' : servers.map(describe).join('\n\n') + '\n', servers);
          return 0;
        }
        case 'show': {
          const s = await control.getServer(name());
          out(`${describe(s)}\n`, s);
          return 0;
        }
        case 'add': {
          if (values.policy === undefined) throw new Error('--policy <policy file> is required: a server without a policy would refuse every call');
          const view = await control.addServer(cliActor(), name(), definitionOf(values), readText(values.policy));
          out(`${describe(view)}\n\nAdded: gateways using this store serve it at /mcp/${encodeURIComponent(view.name)} within a second.\n`, view);
          return 0;
        }
        case 'remove': {
          await control.removeServer(cliActor(), name());
          out(`removed '${name()}': gateways close its sessions and stop it within a second\n`, { removed: name() });
          return 0;
        }
        default:
          throw new Error(`unknown subcommand '${sub ?? ''}': expected list, show, add or remove\nSee 'policylayer servers --help'.`);
      }
    });
  },
};

interface DefinitionFlags {
  url?: string | undefined;
  transport?: string | undefined;
  header?: string[] | undefined;
  command?: string | undefined;
  env?: string[] | undefined;
  cwd?: string | undefined;
  isolation?: string | undefined;
  definition?: string | undefined;
  timeout?: string | undefined;
}

/** The server object the flags describe, in gateway.yaml's shape; the schema checks it afterwards. */
function definitionOf(v: DefinitionFlags): Record<string, unknown> {
  const kinds = [v.url, v.command, v.definition].filter((x) => x !== undefined).length;
  if (kinds !== 1) throw new Error('give exactly one of --url, --command or --definition');
  let d: Record<string, unknown>;
  if (v.definition !== undefined) {
    const read = readSource(readText(v.definition), v.definition);
    if (read.errors.length > 0) throw new Error(read.errors.join('\n'));
    if (typeof read.value !== 'object' || read.value === null || Array.isArray(read.value)) throw new Error(`${v.definition}: expected a server object`);
    d = { ...(read.value as Record<string, unknown>) };
  } else if (v.url !== undefined) {
    d = { url: v.url };
    if (v.transport !== undefined) d['transport'] = v.transport;
    if (v.header !== undefined) d['headers'] = pairs(v.header, ':', '--header "Name: value"');
  } else {
    d = { command: v.command };
    if (v.env !== undefined) d['env'] = pairs(v.env, '=', '--env NAME=value');
    if (v.cwd !== undefined) d['cwd'] = v.cwd;
    if (v.isolation !== undefined) d['isolation'] = v.isolation;
  }
  if (v.timeout !== undefined) d['timeout'] = v.timeout;
  return d;
}

function pairs(items: readonly string[], sep: string, form: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const at = item.indexOf(sep);
    if (at <= 0) throw new Error(`expected ${form}, got '${item}'`);
    out[item.slice(0, at).trim()] = item.slice(at + 1).trim();
  }
  return out;
}

function describe(s: ServerView): string {
  const d = s.definition;
  const target = s.kind === 'http' ? String(d['url']) : (d['command'] as string[] | string | undefined)?.toString().replace(/,/g, ' ') ?? '';
  const policy =
    s.policy.source === 'store'
      ? `stored version ${s.policy.version ?? '?'} (${s.policy.hash})`
      : s.policy.source === 'file'
        ? `${s.policy.path} (${s.policy.hash})`
        : `inline (${s.policy.hash})`;
  const lines = [`server:   ${s.name} (${s.source === 'config' ? 'gateway.yaml' : 'added at run time'})`, `${s.kind === 'http' ? 'url' : 'command'}:${' '.repeat(s.kind === 'http' ? 6 : 2)}${target}`, `policy:   ${policy}`];
  for (const key of ['headers', 'env'] as const) {
    const map = d[key] as Record<string, string> | undefined;
    if (map !== undefined) lines.push(`${key}:${' '.repeat(9 - key.length)}${Object.entries(map).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  }
  return lines.join('\n');
}
