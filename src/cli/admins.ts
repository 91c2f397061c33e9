import type { AdminCredentialView } from '../admin/control.js';
import { ADMIN_ROLES } from '../store/store.js';
import { parse } from './args.js';
import { cliActor, printer, withControlPlane } from './control.js';
import type { Command } from './index.js';

export const adminsCommand: Command = {
  summary: 'create, list and revoke admin API credentials',
  usage: `Usage: policylayer admins <create|list|revoke> -c <gateway.yaml> [options]

An admin credential opens the admin API (/admin/api) with a role:
  viewer          reads servers, grants, policies and the admin audit stream
  policy_manager  also changes policies (new versions, rollback)
  admin           everything, including grants and servers

  create <label> --role admin|policy_manager|viewer   prints the token (pla_…) once
  list
  revoke <label|id>                                   stops working within a second

Options: --format text|json

Example:
  policylayer admins create ops-alice --role admin -c gateway.yaml
`,
  async run(argv) {
    const [sub, ...rest] = argv;
    const { values, positionals } = parse(
      'admins',
      rest,
      { config: { type: 'string', short: 'c' }, store: { type: 'string' }, role: { type: 'string' }, format: { type: 'string' } },
      true,
    );
    const out = printer(values.format ?? 'text');
    const label = () => {
      const l = positionals[0];
      if (l === undefined) throw new Error(`missing the label: policylayer admins ${sub} <label>`);
      return l;
    };
    return withControlPlane('admins', values, async (control) => {
      switch (sub) {
        case 'create': {
          if (values.role === undefined) throw new Error(`--role is required: ${ADMIN_ROLES.join(', ')}`);
          const { admin, token } = await control.createAdmin(cliActor(), label(), values.role);
          out(`${describe(admin)}\ntoken:    ${token}\n\nThis token is shown once (Authorization: Bearer <token> on /admin/api).\n`, { admin, token });
          return 0;
        }
        case 'list': {
          const admins = await control.listAdmins();
          out(admins.length === 0 ? 'no admin credentials\n' : admins.map(describe).join('\n\n') + '\n', admins);
          return 0;
        }
        case 'revoke': {
          await control.revokeAdmin(cliActor(), label());
          out(`revoked '${label()}': it stops working within a second on every gateway\n`, { revoked: label() });
          return 0;
        }
        default:
          throw new Error(`unknown subcommand '${sub ?? ''}': expected create, list or revoke\nSee 'policylayer admins --help'.`);
      }
    });
  },
};

function describe(a: AdminCredentialView): string {
  return [`admin:    ${a.label} (${a.revokedAt === null ? 'active' : `revoked ${a.revokedAt}`})`, `role:     ${a.role}`, `id:       ${a.id}`, `created:  ${a.createdAt}`].join('\n');
}
