/**
 * What the catalogue keeps of a scan, and how it is read back into what the classifier saw.
 * Pure: no store, no clock. `scan` builds a CatalogScan with these; the shipped catalogue and its
 * check rebuild the classifier's input from what was kept, so a verdict can be recomputed from
 * the stored definitions alone.
 */
import { createHash } from 'node:crypto';
import type { Classification, ServerContext, ToolDefinition } from '../risk/index.js';
import type { CatalogToolScan } from '../store/store.js';
import { canonicalJson } from '../util/canonical-json.js';

/**
 * `sha256:` of the canonical JSON of a tool definition exactly as the server listed it (every
 * field: name, title, description, schemas, annotations, _meta). Unlike the classifier's cache key
 * it depends on nothing else, so it changes exactly when what the agent is shown changes.
 */
export function toolDefinitionHash(definition: Readonly<Record<string, unknown>>): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(definition)).digest('hex');
}

/** One classified tool as the store takes it. */
export function catalogToolOf(definition: Readonly<Record<string, unknown>>, classification: Classification): CatalogToolScan {
  return {
    name: classification.tool,
    definition,
    definitionHash: toolDefinitionHash(definition),
    // A JSON round trip: the store keeps JSON, and what is compared later is what JSON gives back.
    classification: JSON.parse(JSON.stringify(classification)) as CatalogToolScan['classification'],
  };
}

/** What the catalogue keeps of the server context a scan classified with. */
export interface KeptContext {
  readonly name: string;
  readonly title: string | null;
  readonly displayName: string | null;
  readonly description: string | null;
  readonly instructions: string | null;
  readonly trusted: boolean;
}

/** The name people know a server by: the name it was scanned under, else its title, else serverInfo.name. */
export function serverDisplayName(s: Pick<KeptContext, 'name' | 'title' | 'displayName'>): string {
  return s.displayName ?? s.title ?? s.name;
}

/** The classifier's input for a kept server, as `scan` built it: the same verdicts come out. */
export function serverContextOf(s: KeptContext, definitions: readonly Readonly<Record<string, unknown>>[]): ServerContext & { tools: readonly ToolDefinition[] } {
  return {
    name: serverDisplayName(s),
    ...(s.description !== null ? { description: s.description } : {}),
    ...(s.instructions !== null ? { instructions: s.instructions } : {}),
    trusted: s.trusted,
    tools: definitions as unknown as readonly ToolDefinition[],
  };
}
