import { loadGatewayConfig } from '../config/index.js';
import { ConfigError } from '../errors.js';
import { loadPolicyFile } from '../policy/index.js';
import { parse } from './args.js';
import type { Command } from './index.js';

export const validateCommand: Command = {
  summary: 'check a gateway config or a policy file, with the loader the server uses',
  usage: `Usage: policylayer validate [-c <gateway.yaml>] [<policy.json|policy.yaml> ...] [--format text|json]

Exits 0 when every file is valid, 1 otherwise; each problem names the file, the
JSON pointer and the line.

Examples:
  policylayer validate -c examples/quickstart/gateway.yaml
  policylayer validate examples/piloty/policy.json
`,
  async run(argv) {
    const { values, positionals } = parse('validate', argv, { config: { type: 'string', short: 'c' }, format: { type: 'string' } }, true);
    const targets: Array<{ kind: 'config' | 'policy'; path: string }> = [];
    if (values.config) targets.push({ kind: 'config', path: values.config });
    for (const p of positionals) targets.push({ kind: 'policy', path: p });
    if (targets.length === 0) throw new Error("nothing to validate: give -c <gateway.yaml> or policy files\nSee 'policylayer validate --help'.");
    const results: Array<{ file: string; ok: boolean; errors: string[] }> = [];
    for (const t of targets) {
      try {
        if (t.kind === 'config') loadGatewayConfig(t.path);
        else loadPolicyFile(t.path);
        results.push({ file: t.path, ok: true, errors: [] });
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        results.push({ file: t.path, ok: false, errors: err.issues });
      }
    }
    if (values.format === 'json') {
      process.stdout.write(JSON.stringify({ ok: results.every((r) => r.ok), files: results }, null, 2) + '\n');
    } else {
      for (const r of results) {
        if (r.ok) process.stdout.write(`ok    ${r.file}\n`);
        else process.stderr.write(`error ${r.file}\n${r.errors.map((e) => `  ${e}`).join('\n')}\n`);
      }
    }
    return results.every((r) => r.ok) ? 0 : 1;
  },
};
