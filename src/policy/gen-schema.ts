// Writes schema/policy.schema.json when run directly: `node dist/src/policy/gen-schema.js`.
// A test fails when the committed file and this output differ, so the two cannot drift.
import { writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as z from 'zod';
import { PolicySchema } from './schema.js';

export const POLICY_SCHEMA_ID = 'https://policylayer.dev/schema/policy.schema.json';

/** The JSON Schema of the policy file, generated from the schema the loader uses. */
export function policyJsonSchema(): Record<string, unknown> {
  const generated = z.toJSONSchema(PolicySchema, { target: 'draft-2020-12', io: 'input' }) as Record<string, unknown>;
  const { $schema, ...rest } = generated;
  return { $schema, $id: POLICY_SCHEMA_ID, ...rest };
}

/** The exact text of the committed schema file. */
export function policyJsonSchemaText(): string {
  return JSON.stringify(policyJsonSchema(), null, 2) + '\n';
}

// The compiled file sits at dist/src/policy/, three levels below the repository root.
export const SCHEMA_FILE = fileURLToPath(new URL('../../../schema/policy.schema.json', import.meta.url));

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  writeFileSync(SCHEMA_FILE, policyJsonSchemaText());
  process.stdout.write(`wrote ${SCHEMA_FILE}\n`);
}
