import { loadGatewayConfig } from '../config/index.js';
import { ConfigError } from '../errors.js';
import { loadPolicyFile } from '../policy/index.js';
import { parse } from './args.js';
import type { Command } from './index.js';

export const validateCommand: Command = {
  summary: 'check a gateway config or a policy file, with the loader the server uses',
  usage: `Usage: policylayer validate [-c <gateway.yaml>] [<policy.json|policy.yaml> ...] [--format text|json]

Exits 0 when every file is valid, 1 otherwise; each problem names the file, the
JSON pointer and the line. A policy written for the Intercept proxy is checked as the
policy it converts to (see 'policylayer convert'); its warnings go to stderr.

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
    const results: Array<{ file: string; ok: boolean; errors: string[]; convertedFrom?: string; warnings?: readonly string[] }> = [];
    for (const t of targets) {
      try {
        if (t.kind === 'config') {
          loadGatewayConfig(t.path);
          results.push({ file: t.path, ok: true, errors: [] });
        } else {
          const p = loadPolicyFile(t.path);
          results.push({
            file: t.path,
            ok: true,
            errors: [],
            ...(p.convertedFrom !== undefined ? { convertedFrom: p.convertedFrom } : {}),
            ...(p.warnings !== undefined ? { warnings: p.warnings } : {}),
          });
        }
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        results.push({ file: t.path, ok: false, errors: err.issues });
      }
    }
    if (values.format === 'json') {
      process.stdout.write(JSON.stringify({ ok: results.every((r) => r.ok), files: results }, null, 2) + '\n');
    } else {
      for (const r of results) {
        if (r.ok) {
          // A file in another proxy's format is valid as the policy it converts to: say so, with the caveats.
          process.stdout.write(`ok    ${r.file}${r.convertedFrom === 'intercept' ? ' (an Intercept policy, converted on load)' : ''}\n`);
          for (const w of r.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
        }
        else process.stderr.write(`error ${r.file}\n${r.errors.map((e) => `  ${e}`).join('\n')}\n`);
      }
    }
    return results.every((r) => r.ok) ? 0 : 1;
  },
};
