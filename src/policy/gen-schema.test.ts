import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SCHEMA_FILE, policyJsonSchema, policyJsonSchemaText } from './gen-schema.js';

test('the committed schema/policy.schema.json equals the schema generated from the loader (run gen-schema to update it)', () => {
  assert.equal(readFileSync(SCHEMA_FILE, 'utf8'), policyJsonSchemaText());
});

test('the JSON Schema rejects unknown keys and requires version and default, like the loader', () => {
  const schema = policyJsonSchema() as { additionalProperties?: unknown; required?: unknown; $id?: unknown };
  assert.equal(schema.additionalProperties, false);
  assert.deepEqual(schema.required, ['version', 'default']);
  assert.equal(typeof schema.$id, 'string');
});
