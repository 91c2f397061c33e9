/**
 * The catalogue that ships with PolicyLayer: one JSON file per server in `catalog/` at the
 * package root, each a real scan of an npm package (scripts/catalog.mjs writes them), so a fresh
 * install can show tool pages without scanning anything. Read-only; loaded once, on first use.
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as z from 'zod';
import type { Classification } from '../risk/index.js';
import type { CatalogServerFacts } from '../store/store.js';

/** The format of a shipped file; bumped when a field changes meaning. */
export const SHIPPED_FORMAT = 1;

/** `catalog/` beside `dist/`: this file runs as dist/src/catalog/shipped.js. */
export const SHIPPED_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../catalog');

export interface ShippedTool {
  readonly name: string;
  readonly definitionHash: string;
  readonly classification: Classification;
  readonly definition: Readonly<Record<string, unknown>>;
}

export interface ShippedServer {
  readonly format: number;
  /** What `catalog show` takes. */
  readonly key: string;
  /** `name@version` of the npm package scanned. */
  readonly package: string;
  /** The command that regenerates every shipped file. */
  readonly regenerate: string;
  /** When it was scanned (ISO 8601). */
  readonly scannedAt: string;
  readonly server: CatalogServerFacts;
  readonly classifierVersion: number;
  readonly tools: readonly ShippedTool[];
  /** The file it was read from. */
  readonly file: string;
}

const nullableText = z.string().nullable();
const ShippedSchema = z.object({
  format: z.literal(SHIPPED_FORMAT),
  key: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/),
  package: z.string().min(1),
  regenerate: z.string().min(1),
  scannedAt: z.iso.datetime(),
  server: z.object({
    name: z.string(),
    title: nullableText,
    version: nullableText,
    displayName: nullableText,
    description: nullableText,
    instructions: nullableText,
    trusted: z.boolean(),
    transport: z.string(),
    target: z.union([z.object({ command: z.array(z.string()).min(1) }), z.object({ url: z.string() })]),
  }),
  classifierVersion: z.number().int().positive(),
  tools: z.array(
    z.object({
      name: z.string(),
      definitionHash: z.string().regex(/^sha256:[0-9a-f]{64}$/),
      classification: z.looseObject({ tool: z.string(), category: z.string(), severity: z.string(), reasons: z.array(z.unknown()) }),
      definition: z.looseObject({ name: z.string() }),
    }),
  ),
});

/** Reads and checks one shipped file; the error names the file and what is wrong with it. */
export function readShippedFile(file: string): ShippedServer {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`the shipped catalogue file ${file} cannot be read: ${(err as Error).message}`);
  }
  const parsed = ShippedSchema.safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `/${i.path.join('/')}: ${i.message}`);
    throw new Error(`the shipped catalogue file ${file} is not a catalogue entry: ${problems.join('; ')}`);
  }
  const names = new Set<string>();
  for (const t of parsed.data.tools) {
    if (t.definition.name !== t.name || t.classification.tool !== t.name) throw new Error(`the shipped catalogue file ${file}: tool ${JSON.stringify(t.name)} does not match its definition or classification`);
    if (names.has(t.name)) throw new Error(`the shipped catalogue file ${file} lists the tool ${JSON.stringify(t.name)} twice`);
    names.add(t.name);
  }
  return { ...(parsed.data as unknown as Omit<ShippedServer, 'file'>), file };
}

/** Every shipped entry in `dir`, by key. A missing folder is an empty catalogue; a key used twice is an error. */
export function readShippedCatalog(dir: string = SHIPPED_DIR): ShippedServer[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const entries = names.map((n) => readShippedFile(path.join(dir, n)));
  const keys = new Set<string>();
  for (const e of entries) {
    if (keys.has(e.key)) throw new Error(`two shipped catalogue files use the key '${e.key}' (one is ${e.file})`);
    keys.add(e.key);
  }
  return entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

let cached: readonly ShippedServer[] | undefined;

/** The shipped catalogue of this installation, read once. */
export function shippedCatalog(): readonly ShippedServer[] {
  cached ??= Object.freeze(readShippedCatalog());
  return cached;
}
