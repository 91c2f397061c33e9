// The labelled set of real MCP tools the classifier is measured on (test/fixtures/risk/):
// servers/<id>.json holds a server's definitions as collected (collect.mjs), labels/<id>.json
// holds a person's verdict on each tool, split.json which servers are held out.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { CATEGORIES, SEVERITIES } from './types.js';
import type { Category, ServerContext, Severity, ToolDefinition } from './types.js';

export interface Label {
  readonly category: Category;
  readonly severity: Severity;
  /** The one-line justification. */
  readonly why: string;
}

export interface LabelledTool {
  readonly server: string;
  readonly tool: ToolDefinition;
  readonly label: Label;
}

export interface LabelledServer {
  readonly id: string;
  /** package@version the definitions were read from. */
  readonly package: string;
  readonly source: string;
  readonly heldOut: boolean;
  readonly context: ServerContext & { readonly tools: readonly ToolDefinition[] };
  readonly tools: readonly LabelledTool[];
}

interface ServerFile {
  server: { id: string; package: string; source: string; name: string; description?: string; instructions?: string; packageDescription?: string };
  tools: ToolDefinition[];
}

/** The fixture folder, found from this file whether it runs from src/ or dist/src/. */
export function fixtureDir(): string {
  const here = path.dirname(new URL(import.meta.url).pathname);
  for (const up of ['../..', '../../..']) {
    const dir = path.resolve(here, up, 'test/fixtures/risk');
    try {
      readdirSync(path.join(dir, 'servers'));
      return dir;
    } catch {
      // not here
    }
  }
  throw new Error('test/fixtures/risk not found');
}

/** Loads every server with its labels. Throws on a tool without a label or a label without a tool. */
export function loadLabelledSet(dir = fixtureDir()): LabelledServer[] {
  const split = JSON.parse(readFileSync(path.join(dir, 'split.json'), 'utf8')) as { heldOut: string[] };
  const heldOut = new Set(split.heldOut);
  const problems: string[] = [];
  const out: LabelledServer[] = [];
  for (const file of readdirSync(path.join(dir, 'servers')).filter((f) => f.endsWith('.json')).sort()) {
    const doc = JSON.parse(readFileSync(path.join(dir, 'servers', file), 'utf8')) as ServerFile;
    let labels: Record<string, [string, string, string]> = {};
    try {
      labels = JSON.parse(readFileSync(path.join(dir, 'labels', file), 'utf8')) as typeof labels;
    } catch {
      problems.push(`labels/${file}: missing`);
    }
    const s = doc.server;
    const context = {
      name: s.name,
      // The server's own description when it gives one; its package's otherwise.
      description: s.description ?? s.packageDescription ?? '',
      ...(s.instructions ? { instructions: s.instructions } : {}),
      tools: doc.tools,
    };
    const tools: LabelledTool[] = [];
    for (const t of doc.tools) {
      const l = labels[t.name];
      if (!l) {
        problems.push(`labels/${file}: no label for ${t.name}`);
        continue;
      }
      const [category, severity, why] = l;
      if (!(CATEGORIES as readonly string[]).includes(category) || !(SEVERITIES as readonly string[]).includes(severity) || !why) {
        problems.push(`labels/${file}: ${t.name}: expected [category, severity, justification], got ${JSON.stringify(l)}`);
        continue;
      }
      tools.push({ server: s.id, tool: t, label: { category: category as Category, severity: severity as Severity, why } });
    }
    const names = new Set(doc.tools.map((t) => t.name));
    for (const k of Object.keys(labels)) if (!names.has(k)) problems.push(`labels/${file}: label for ${k}, which the server does not list`);
    out.push({ id: s.id, package: s.package, source: s.source, heldOut: heldOut.has(s.id), context, tools });
  }
  for (const id of heldOut) if (!out.some((s) => s.id === id)) problems.push(`split.json: held-out server ${id} has no file`);
  if (problems.length > 0) throw new Error(`labelled set is inconsistent:\n  ${problems.join('\n  ')}`);
  return out;
}
