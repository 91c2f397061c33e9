import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { ConfigError } from '../errors.js';
import { readSource } from '../policy/diagnostics.js';
import { convertIntercept, isInterceptPolicy } from '../policy/intercept.js';
import { readText } from '../policy/load.js';
import { PolicySchema } from '../policy/schema.js';
import type { PolicyDocument } from '../policy/schema.js';
import { parse } from './args.js';
import type { Command } from './index.js';

export const convertCommand: Command = {
  summary: 'convert a policy written for the Intercept proxy into a PolicyLayer policy',
  usage: `Usage: policylayer convert <intercept.yaml> [--format yaml|json] [-o <out>]

Reads a policy written for the Intercept proxy (version, default, hide, and tools
with rules) and prints the PolicyLayer policy that decides every call the same way:
YAML by default, headed by a comment naming the file it came from, or JSON. Parts
that convert with a caveat are printed to stderr as warnings. Exits 1 when the file
is not a valid Intercept policy or uses something PolicyLayer cannot express; each
problem names the file, the JSON pointer and the line.

The gateway, run, validate, explain and test load Intercept files as they are; this
command shows the result, or replaces the file for good. The mapping and its known
differences are in docs/policy.md, "Policies written for Intercept".

Examples:
  policylayer convert examples/intercept/stripe.policy.yaml
  policylayer convert intercept.yaml -o policy.yaml
  policylayer convert intercept.yaml --format json -o policy.json
`,
  async run(argv) {
    const { values, positionals } = parse(
      'convert',
      argv,
      { format: { type: 'string' }, output: { type: 'string', short: 'o' } },
      true,
    );
    const format = values.format ?? 'yaml';
    if (format !== 'yaml' && format !== 'json') {
      throw new Error(`--format must be yaml or json, got '${format}'\nSee 'policylayer convert --help'.`);
    }
    if (positionals.length !== 1) {
      throw new Error(`expected exactly one Intercept policy file, got ${positionals.length}\nSee 'policylayer convert --help'.`);
    }
    const file = positionals[0] as string;
    const out = values.output;
    if (out !== undefined && path.resolve(out) === path.resolve(file)) {
      throw new Error(`-o ${out} is the file being converted; write the result somewhere else`);
    }

    let converted: { document: PolicyDocument; warnings: readonly string[] };
    try {
      const read = readSource(readText(file), file);
      if (read.errors.length > 0) throw new ConfigError([...read.errors]);
      if (!isInterceptPolicy(read.value)) {
        const already = PolicySchema.safeParse(read.value).success;
        throw new ConfigError([
          already
            ? `${file}: already a PolicyLayer policy; there is nothing to convert`
            : `${file}: not an Intercept policy: no entry under tools has rules (an Intercept tool is written { rules: [...] })`,
        ]);
      }
      converted = convertIntercept(read.value, file, read.text);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`error ${file}\n${err.issues.map((e) => `  ${e}`).join('\n')}\n`);
      return 1;
    }

    for (const w of converted.warnings) process.stderr.write(`warning: ${w}\n`);
    const text = format === 'json' ? JSON.stringify(converted.document, null, 2) + '\n' : yamlText(file, converted);
    if (out === undefined) {
      process.stdout.write(text);
    } else {
      writeFileSync(out, text);
      process.stderr.write(`wrote ${out}\n`);
    }
    return 0;
  },
};

/** The policy as YAML, headed by where it came from and, as comments, the conversion's caveats. */
function yamlText(file: string, converted: { document: PolicyDocument; warnings: readonly string[] }): string {
  const header = [
    `# PolicyLayer policy converted from the Intercept policy ${path.basename(file)} by \`policylayer convert\`.`,
    '# Mapping and known differences: docs/policy.md, "Policies written for Intercept".',
  ];
  if (converted.warnings.length > 0) {
    header.push('# Warnings from the conversion:');
    for (const w of converted.warnings) header.push(`#   ${w.replace(/\r?\n/g, ' ')}`);
  }
  // lineWidth 0: reasons stay on one line each instead of being folded.
  return `${header.join('\n')}\n${stringify(converted.document, { lineWidth: 0 })}`;
}
