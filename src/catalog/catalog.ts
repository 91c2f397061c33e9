/**
 * Reading the catalogue: the servers scanned into the control store, then those shipped with
 * PolicyLayer, as the CLI (`policylayer catalog`) and the admin API show them. A name is looked
 * up in the store first, so a server scanned here stands before the shipped entry of the same key.
 * Unknown names are PolicyLayerError NOT_FOUND with the names that do exist.
 */
import { ErrorCodes, PolicyLayerError } from '../errors.js';
import { recommendRule } from '../risk/index.js';
import type { Classification, ToolDefinition } from '../risk/index.js';
import type { CatalogChange, CatalogServerRecord, CatalogTarget, CatalogToolRecord, ControlStore } from '../store/store.js';
import { canonicalJson } from '../util/canonical-json.js';
import { serverDisplayName } from './record.js';
import { toolPage, type PageServer, type ToolPage } from './page.js';
import type { ShippedServer } from './shipped.js';

export type CatalogSource = 'store' | 'shipped';

/** A server in the catalogue list. */
export interface CatalogServerSummary {
  readonly key: string;
  readonly source: CatalogSource;
  readonly name: string;
  readonly displayName: string;
  readonly title: string | null;
  readonly version: string | null;
  /** The npm package (`name@version`) of a shipped entry; null for a scanned one. */
  readonly package: string | null;
  readonly target: CatalogTarget;
  readonly transport: string;
  /** Tools listed by the last scan, and those by category. */
  readonly toolCount: number;
  readonly categories: Readonly<Record<string, number>>;
  /** ISO 8601. A shipped entry knows only when it was scanned: both are that time. */
  readonly firstSeen: string;
  readonly lastSeen: string;
  /** Scans recorded (1 for a shipped entry). */
  readonly scans: number;
  readonly classifierVersion: number;
}

/** A tool in a server's listing. */
export interface CatalogToolSummary {
  readonly name: string;
  readonly category: string;
  readonly severity: string;
  readonly recommendation: { readonly hide: boolean; readonly rule: unknown; readonly why: string };
  readonly definitionHash: string;
  readonly definition: Readonly<Record<string, unknown>>;
  readonly firstSeen: string | null;
  readonly lastSeen: string | null;
  readonly removedAt: string | null;
  /** The whole verdict as the classifier gave it: confidence, flags, every reason (the deciding ones first). */
  readonly classification: Classification;
}

export interface CatalogServerView extends CatalogServerSummary {
  readonly description: string | null;
  readonly instructions: string | null;
  readonly trusted: boolean;
  /** In the order the last scan listed them. */
  readonly tools: readonly CatalogToolSummary[];
  /** Tools an earlier scan listed and the last one did not. */
  readonly removedTools: readonly CatalogToolSummary[];
}

export interface CatalogHistoryEntry {
  readonly id: number;
  readonly at: string;
  readonly tool: string;
  readonly kind: CatalogChange['kind'];
  readonly oldHash: string | null;
  readonly newHash: string | null;
  /** For `changed`: the top-level fields of the definition that differ (`description`, `inputSchema`, …). */
  readonly fields: readonly string[];
  /** The definition after the change (null for removed), and before it (changed only). */
  readonly definition: Readonly<Record<string, unknown>> | null;
  readonly previousDefinition: Readonly<Record<string, unknown>> | null;
}

export interface CatalogHistoryView {
  readonly server: CatalogServerSummary;
  /** Newest first. */
  readonly changes: readonly CatalogHistoryEntry[];
  /** Pass as `before` for the next page; null on the last page. */
  readonly next: number | null;
}

export interface CatalogOptions {
  /** The control store to read scanned servers from; none: the shipped catalogue alone. */
  readonly store?: ControlStore | undefined;
  readonly shipped: readonly ShippedServer[];
}

/** One entry, wherever it is kept. */
type Entry =
  | { readonly source: 'store'; readonly record: CatalogServerRecord }
  | { readonly source: 'shipped'; readonly shipped: ShippedServer };

export class Catalog {
  private readonly store: ControlStore | undefined;
  private readonly shipped: readonly ShippedServer[];

  constructor(opts: CatalogOptions) {
    this.store = opts.store;
    this.shipped = opts.shipped;
  }

  /** Every server: scanned ones by key, then shipped ones by key. */
  async list(): Promise<CatalogServerSummary[]> {
    return (await this.entries()).map(summary);
  }

  /** One server with its tools. */
  async server(ref: string): Promise<CatalogServerView> {
    const entry = await this.find(ref);
    const tools = await this.tools(entry);
    const current = tools.filter((t) => t.removedAt === null);
    const removed = tools.filter((t) => t.removedAt !== null);
    const s = summary(entry);
    const facts = entry.source === 'store' ? entry.record : entry.shipped.server;
    return { ...s, description: facts.description, instructions: facts.instructions, trusted: facts.trusted, tools: current, removedTools: removed };
  }

  /** The page of one tool (a removed one too: its page says so). */
  async tool(ref: string, name: string): Promise<ToolPage> {
    const entry = await this.find(ref);
    const tools = await this.tools(entry);
    const t = tools.find((x) => x.name === name);
    if (t === undefined) {
      const s = summary(entry);
      const listed = tools.filter((x) => x.removedAt === null).map((x) => x.name);
      const close = listed.filter((x) => x.toLowerCase() === name.toLowerCase());
      throw new PolicyLayerError(
        ErrorCodes.NOT_FOUND,
        `${s.displayName} (catalogue key ${s.key}) has no tool '${name}'${close.length > 0 ? `; did you mean '${close[0]}'?` : ''}: its tools are ${listed.join(', ') || '(none)'}`,
      );
    }
    return toolPage(pageServer(entry), {
      definition: t.definition,
      definitionHash: t.definitionHash,
      classification: t.classification,
      classifierVersion: classifierVersion(entry),
      firstSeen: t.firstSeen === null ? null : Date.parse(t.firstSeen),
      lastSeen: t.lastSeen === null ? null : Date.parse(t.lastSeen),
      removedAt: t.removedAt === null ? null : Date.parse(t.removedAt),
    });
  }

  /** A server's recorded changes, newest first; a shipped entry has none (it is one scan). */
  async history(ref: string, query: { limit?: number | undefined; before?: number | undefined } = {}): Promise<CatalogHistoryView> {
    const entry = await this.find(ref);
    const s = summary(entry);
    if (entry.source === 'shipped') return { server: s, changes: [], next: null };
    const limit = Math.min(1000, Math.max(1, query.limit ?? 100));
    const key = entry.record.key;
    const page = await this.store!.listCatalogChanges(key, { limit, ...(query.before !== undefined ? { beforeId: query.before } : {}) });
    const changes: CatalogHistoryEntry[] = [];
    for (const [i, c] of page.entries()) {
      let previous: Readonly<Record<string, unknown>> | null = null;
      if (c.kind === 'changed') previous = findPrevious(page.slice(i + 1), c.tool) ?? (await this.previousDefinition(key, c.tool, page[page.length - 1]!.id));
      changes.push({
        id: c.id,
        at: new Date(c.at).toISOString(),
        tool: c.tool,
        kind: c.kind,
        oldHash: c.oldHash,
        newHash: c.newHash,
        fields: previous !== null && c.definition !== null ? changedFields(previous, c.definition) : [],
        definition: c.definition,
        previousDefinition: previous,
      });
    }
    return { server: s, changes, next: page.length === limit ? page[page.length - 1]!.id : null };
  }

  /** The definition `tool` had before the changes from id `beforeId` on: paged back until found. */
  private async previousDefinition(key: string, tool: string, beforeId: number): Promise<Readonly<Record<string, unknown>> | null> {
    let cursor = beforeId;
    for (;;) {
      const older = await this.store!.listCatalogChanges(key, { limit: 1000, beforeId: cursor });
      const found = findPrevious(older, tool);
      if (found !== undefined || older.length < 1000) return found ?? null;
      cursor = older[older.length - 1]!.id;
    }
  }

  private async entries(): Promise<Entry[]> {
    const stored = this.store ? await this.store.listCatalogServers() : [];
    return [...stored.map((record) => ({ source: 'store' as const, record })), ...this.shipped.map((shipped) => ({ source: 'shipped' as const, shipped }))];
  }

  /**
   * The entry `ref` names: a key (the store's first, then the shipped one), else the one server
   * whose name, title, display name or package is `ref` (any case).
   */
  private async find(ref: string): Promise<Entry> {
    const all = await this.entries();
    const byKey = all.find((e) => keyOf(e) === ref);
    if (byKey) return byKey;
    const wanted = ref.toLowerCase();
    const matches = all.filter((e) => namesOf(e).some((n) => n.toLowerCase() === wanted));
    const keys = [...new Set(matches.map(keyOf))];
    if (keys.length === 1) return matches[0]!;
    if (keys.length > 1) {
      throw new PolicyLayerError(ErrorCodes.NOT_FOUND, `'${ref}' names more than one catalogue server: ${keys.join(', ')}; give its key`);
    }
    const known = [...new Set(all.map(keyOf))];
    throw new PolicyLayerError(
      ErrorCodes.NOT_FOUND,
      `no server '${ref}' in the catalogue${known.length > 0 ? `: it holds ${known.join(', ')}` : ', which is empty'}. Scan one with: policylayer scan -- <command>`,
    );
  }

  private async tools(entry: Entry): Promise<CatalogToolSummary[]> {
    if (entry.source === 'store') return (await this.store!.listCatalogTools(entry.record.key)).map(storedTool);
    const at = entry.shipped.scannedAt;
    return entry.shipped.tools.map((t) =>
      toolSummary(t.name, t.classification, t.definition, t.definitionHash, { firstSeen: at, lastSeen: at, removedAt: null }),
    );
  }
}

function keyOf(e: Entry): string {
  return e.source === 'store' ? e.record.key : e.shipped.key;
}

function namesOf(e: Entry): string[] {
  const s = e.source === 'store' ? e.record : e.shipped.server;
  const names = [s.name, s.title, s.displayName].filter((n): n is string => n !== null);
  if (e.source === 'shipped') names.push(e.shipped.package.replace(/@[^@/]*$/, ''));
  return names;
}

function classifierVersion(e: Entry): number {
  return e.source === 'store' ? e.record.classifierVersion : e.shipped.classifierVersion;
}

function summary(e: Entry): CatalogServerSummary {
  if (e.source === 'store') {
    const r = e.record;
    return {
      key: r.key,
      source: 'store',
      name: r.name,
      displayName: serverDisplayName(r),
      title: r.title,
      version: r.version,
      package: null,
      target: r.target,
      transport: r.transport,
      toolCount: r.tools,
      categories: r.categories,
      firstSeen: new Date(r.firstSeen).toISOString(),
      lastSeen: new Date(r.lastSeen).toISOString(),
      scans: r.scans,
      classifierVersion: r.classifierVersion,
    };
  }
  const s = e.shipped;
  const categories: Record<string, number> = {};
  for (const t of [...s.tools].sort((a, b) => (a.classification.category < b.classification.category ? -1 : 1))) {
    categories[t.classification.category] = (categories[t.classification.category] ?? 0) + 1;
  }
  return {
    key: s.key,
    source: 'shipped',
    name: s.server.name,
    displayName: serverDisplayName(s.server),
    title: s.server.title,
    version: s.server.version,
    package: s.package,
    target: s.server.target,
    transport: s.server.transport,
    toolCount: s.tools.length,
    categories,
    firstSeen: s.scannedAt,
    lastSeen: s.scannedAt,
    scans: 1,
    classifierVersion: s.classifierVersion,
  };
}

function pageServer(e: Entry): PageServer {
  const s = summary(e);
  return { key: s.key, source: s.source, name: s.name, displayName: s.displayName, version: s.version, package: s.package, target: s.target };
}

function storedTool(t: CatalogToolRecord): CatalogToolSummary {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return toolSummary(t.name, t.classification as unknown as Classification, t.definition, t.definitionHash, {
    firstSeen: iso(t.firstSeen),
    lastSeen: iso(t.lastSeen),
    removedAt: iso(t.removedAt),
  });
}

function toolSummary(
  name: string,
  c: Classification,
  definition: Readonly<Record<string, unknown>>,
  definitionHash: string,
  seen: { firstSeen: string | null; lastSeen: string | null; removedAt: string | null },
): CatalogToolSummary {
  const r = recommendRule(c, definition as unknown as ToolDefinition);
  return {
    name,
    category: c.category,
    severity: c.severity,
    recommendation: { hide: r.hide, rule: r.rule ?? null, why: r.why },
    definitionHash,
    definition,
    ...seen,
    classification: c,
  };
}

/** The definition of the newest added or changed row of `tool` among `older` (newest first). */
function findPrevious(older: readonly CatalogChange[], tool: string): Readonly<Record<string, unknown>> | undefined {
  const row = older.find((c) => c.tool === tool && c.definition !== null);
  return row?.definition ?? undefined;
}

/** Top-level fields whose values differ between two definitions, sorted. */
export function changedFields(before: Readonly<Record<string, unknown>>, after: Readonly<Record<string, unknown>>): string[] {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...keys].filter((k) => canonicalJson(before[k]) !== canonicalJson(after[k])).sort();
}
