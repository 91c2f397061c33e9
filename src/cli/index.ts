/** `policylayer <command>`: one file per command, this one only dispatches. */
import { serveCommand } from './serve.js';
import { runCommand } from './run.js';
import { validateCommand } from './validate.js';
import { explainCommand } from './explain.js';
import { testCommand } from './test.js';
import { convertCommand } from './convert.js';
import { grantsCommand } from './grants.js';
import { serversCommand } from './servers.js';
import { adminsCommand } from './admins.js';
import { auditCommand } from './audit.js';
import { approvalsCommand } from './approvals.js';
import { scanCommand } from './scan.js';
import { catalogCommand } from './catalog.js';

export interface Command {
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  serve: serveCommand,
  run: runCommand,
  validate: validateCommand,
  explain: explainCommand,
  test: testCommand,
  scan: scanCommand,
  catalog: catalogCommand,
  convert: convertCommand,
  grants: grantsCommand,
  servers: serversCommand,
  admins: adminsCommand,
  approvals: approvalsCommand,
  audit: auditCommand,
};

function help(): string {
  const lines = ['Usage: policylayer <command> [options]', '', 'Commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)} ${c.summary}`);
  lines.push('', "Run 'policylayer <command> --help' for a command's options and an example.");
  return lines.join('\n') + '\n';
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help());
    return name === undefined ? 1 : 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write('0.1.0\n');
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`policylayer: unknown command '${name}'\n\n${help()}`);
    return 1;
  }
  // Only the command's own options: after `--` come a server's arguments, its -h included.
  const own = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (own.includes('--help') || own.includes('-h')) {
    process.stdout.write(command.usage);
    return 0;
  }
  return command.run(rest);
}
