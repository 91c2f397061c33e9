/**
 * `policylayer catalog`: the servers `scan` recorded in the control store, and the catalogue
 * shipped with PolicyLayer, server by server and tool by tool. Also where `scan` records: the
 * store of `-c gateway.yaml`, `--store`, or the gateway's embedded default store.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Catalog, type CatalogServerSummary, type CatalogServerView } from '../catalog/catalog.js';
import { toolPageMarkdown, toolPageText } from '../catalog/page.js';
import { shippedCatalog } from '../catalog/shipped.js';
import { DEFAULT_STORE, loadGatewayConfig } from '../config/index.js';
import { ErrorCodes, PolicyLayerError } from '../errors.js';
import { openControlStore } from '../main.js';
import { recommendRule } from '../risk/index.js';
import type { Category, ToolDefinition } from '../risk/index.js';
import type { CatalogRecordResult, CatalogScan, CatalogTarget, ControlStore } from '../store/store.js';
import { parse } from './args.js';
import type { Command } from './index.js';
import { renderTable } from './scan.js';

export const catalogCommand: Command = {
  summary: 'the catalogue of scanned servers and tools: risk, recommended rule, attack patterns per tool',
  usage: `Usage: policylayer catalog list [options]
       policylayer catalog show <server> [tool] [options]
       policylayer catalog history <server> [options]

Every successful 'policylayer scan' is recorded in the control store: the server
(its name, version, and how it was reached), each tool's definition with its hash,
its classification, when it was first and last seen, and every change of a
definition since. PolicyLayer also ships a catalogue of official reference servers
scanned from npm, so 'catalog show everything' works before any scan. A server
scanned here is shown before a shipped one of the same key.

  list                      every server: key, source, version, tools by category, last seen
  show <server>             its tools: category, severity, recommended rule, top reasons
  show <server> <tool>      the tool's page: what it does, its risk and why, the
                            recommended rule as a policy.json, the attack patterns that
                            abuse its access, and how to deny, rate-limit or require
                            approval for it
  history <server>          tools added, changed and removed between scans, newest first

<server> is a catalogue key (as 'list' shows it), or a server's name or title.

Options:
  -c <gateway.yaml>         read the catalogue in that config's store
  --store sqlite:<path>|postgres://…
                            read this store (default: the gateway's embedded default,
                            ./data/policylayer.db, when it exists)
  --format text|json|markdown   json for machines; markdown for show (default: text)
  --limit <n>, --before <id>    history: page size (1..1000, default 100) and cursor

Exits 0 when found, 1 for an unknown server or tool (the message lists what
exists) or a store that cannot be read, 2 on wrong options.

Examples:
  policylayer catalog list
  policylayer catalog show everything
  policylayer catalog show everything get-env --format markdown > get-env.md
  policylayer catalog history piloty -c gateway.yaml
`,
  run: (argv) => runCatalog(argv),
};

/** Wrong options: exit 2. */
class UsageError extends Error {}

/** -c and --store together, or a malformed --store: a usage error of whichever command was given them. */
export class StoreOptionError extends Error {}

const SEE = "\nSee 'policylayer catalog --help'.";
const STORE_SPEC = /^(?:sqlite:.+|postgres(?:ql)?:\/\/.+)$/;

export async function runCatalog(argv: string[]): Promise<number> {
  try {
    return await catalog(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`policylayer catalog: ${err.message}\n`);
      return 2;
    }
    if (err instanceof PolicyLayerError && err.code === ErrorCodes.NOT_FOUND) {
      process.stderr.write(`policylayer catalog: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

async function catalog(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  let parsed;
  try {
    parsed = parse(
      'catalog',
      rest,
      {
        config: { type: 'string', short: 'c' },
        store: { type: 'string' },
        format: { type: 'string' },
        limit: { type: 'string' },
        before: { type: 'string' },
      },
      true,
    );
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\nSee .*$/s, '') + SEE);
  }
  const { values, positionals } = parsed;
  if (sub !== 'list' && sub !== 'show' && sub !== 'history') {
    throw new UsageError(`${sub === undefined ? 'missing a subcommand' : `unknown subcommand '${sub}'`}: expected list, show or history${SEE}`);
  }
  const format = values.format ?? 'text';
  const formats = sub === 'show' ? ['text', 'json', 'markdown'] : ['text', 'json'];
  if (!formats.includes(format)) throw new UsageError(`--format for ${sub} expects ${formats.join(', ')}; got '${format}'${SEE}`);
  const wanted = { list: 0, show: 1, history: 1 }[sub];
  const most = { list: 0, show: 2, history: 1 }[sub];
  if (positionals.length < wanted) throw new UsageError(`${sub} needs the server: policylayer catalog ${sub} <server>${sub === 'show' ? ' [tool]' : ''}${SEE}`);
  if (positionals.length > most) throw new UsageError(`unexpected '${positionals[most]}' after ${sub}${most > 0 ? ` ${positionals.slice(0, most).join(' ')}` : ''}${SEE}`);
  if (sub !== 'history' && (values.limit !== undefined || values.before !== undefined)) throw new UsageError(`--limit and --before apply to history${SEE}`);
  const limit = whole(values.limit, '--limit', 1, 1000);
  const before = whole(values.before, '--before', 1, Number.MAX_SAFE_INTEGER);
  let choice: CatalogStoreChoice | undefined;
  try {
    choice = catalogStoreChoice(values, false);
  } catch (err) {
    if (err instanceof StoreOptionError) throw new UsageError(err.message + SEE);
    throw err;
  }
  const store = choice === undefined ? undefined : await openStore(choice);
  try {
    const cat = new Catalog({ store, shipped: shippedCatalog() });
    const out = (text: string, json: unknown) => void process.stdout.write(format === 'json' ? `${JSON.stringify(json, null, 2)}\n` : text);
    if (sub === 'list') {
      const servers = await cat.list();
      out(listText(servers, choice), { store: choice?.shown ?? null, servers });
    } else if (sub === 'show' && positionals.length === 2) {
      const page = await cat.tool(positionals[0]!, positionals[1]!);
      out(format === 'markdown' ? toolPageMarkdown(page) : toolPageText(page), page);
    } else if (sub === 'show') {
      const view = await cat.server(positionals[0]!);
      out(format === 'markdown' ? serverMarkdown(view) : serverText(view), view);
    } else {
      const history = await cat.history(positionals[0]!, { limit, before });
      out(historyText(history), history);
    }
    return 0;
  } finally {
    await store?.close();
  }
}

function whole(v: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,16}$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${flag} expects a whole number from ${min} to ${max === 1000 ? 1000 : 'the last id'}; got '${v}'${SEE}`);
  return Number(v);
}

// ---------------------------------------------------------------------------------------------
// Which store

/** A control store to read or record the catalogue in, and how to name it in output (no password). */
export interface CatalogStoreChoice {
  readonly spec: string;
  readonly shown: string;
  /** Named by -c or --store (else the embedded default). */
  readonly explicit: boolean;
}

/**
 * The store of `-c` (its `store:`), or `--store`, or the embedded default a `serve` without
 * `store:` uses (`./data/policylayer.db`, here relative to the working directory). Reading, the
 * default is used only when its file exists: a fresh install reads the shipped catalogue alone,
 * and no empty database is left behind. Throws StoreOptionError for a malformed --store or both given;
 * a config that does not load is a ConfigError (exit 1).
 */
export function catalogStoreChoice(values: { config?: string | undefined; store?: string | undefined }, recording: boolean): CatalogStoreChoice | undefined {
  if (values.config !== undefined && values.store !== undefined) throw new StoreOptionError('give -c <gateway.yaml> or --store, not both');
  if (values.store !== undefined) {
    if (!STORE_SPEC.test(values.store)) throw new StoreOptionError(`--store expects sqlite:<path> or postgres://…; got '${shownStore(values.store)}'`);
    const spec = absoluteSqlite(values.store);
    return { spec, shown: shownStore(spec), explicit: true };
  }
  if (values.config !== undefined) {
    const spec = loadGatewayConfig(values.config).store;
    return { spec, shown: shownStore(spec), explicit: true };
  }
  const spec = absoluteSqlite(DEFAULT_STORE);
  if (!recording && !existsSync(spec.slice('sqlite:'.length))) return undefined;
  return { spec, shown: shownStore(spec), explicit: false };
}

function absoluteSqlite(spec: string): string {
  if (!spec.startsWith('sqlite:')) return spec;
  const file = spec.slice('sqlite:'.length);
  return file === ':memory:' ? spec : `sqlite:${path.resolve(file)}`;
}

/** A store spec for output: a PostgreSQL URL's password (and query values) masked. */
export function shownStore(spec: string): string {
  if (spec.startsWith('sqlite:')) return spec;
  try {
    const u = new URL(spec);
    if (u.password !== '') u.password = '…';
    for (const k of [...new Set(u.searchParams.keys())]) u.searchParams.set(k, '…');
    return u.href.replace(/%E2%80%A6/g, '…');
  } catch {
    return 'the store URL given';
  }
}

async function openStore(choice: CatalogStoreChoice): Promise<ControlStore> {
  try {
    return await openControlStore(choice.spec);
  } catch (err) {
    throw new Error(`cannot open the control store ${choice.shown}: ${(err as Error).message}`);
  }
}

/** Records a finished scan in the chosen store (opened, migrated and closed here). */
export async function recordInCatalogue(choice: CatalogStoreChoice, scan: CatalogScan, now: number): Promise<CatalogRecordResult> {
  const store = await openStore(choice);
  try {
    return await store.recordCatalogScan(scan, now);
  } finally {
    await store.close();
  }
}

/** The one line `scan` prints about where the scan was recorded, and what changed since the last. */
export function recordedLine(choice: CatalogStoreChoice, r: CatalogRecordResult): string {
  const key = r.server.key;
  const where = `Recorded in the catalogue as '${key}' (${choice.shown})`;
  if (r.created) return `${where}: first scan of this server; see it with: policylayer catalog show ${key}`;
  if (r.changes.length === 0) return `${where}: no tool changed since the last scan.`;
  const by = (kind: string) => r.changes.filter((c) => c.kind === kind).map((c) => c.tool);
  const parts = [
    ['changed', by('changed')],
    ['added', by('added')],
    ['removed', by('removed')],
  ]
    .filter(([, tools]) => tools!.length > 0)
    .map(([kind, tools]) => `${kind} ${(tools as string[]).join(', ')}`);
  return `${where}: since the last scan, ${parts.join('; ')}. Review with: policylayer catalog history ${key}`;
}

// ---------------------------------------------------------------------------------------------
// Text

const CATEGORY_ORDER: readonly Category[] = ['Read', 'Write', 'Execute', 'Financial', 'Destructive', 'Unknown'];

function categoryText(categories: Readonly<Record<string, number>>): string {
  const known = CATEGORY_ORDER.filter((c) => categories[c] !== undefined).map((c) => `${categories[c]} ${c}`);
  const other = Object.keys(categories).filter((c) => !CATEGORY_ORDER.includes(c as Category)).map((c) => `${categories[c]} ${c}`);
  return [...known, ...other].join(', ') || 'no tools';
}

function targetText(t: CatalogTarget): string {
  return 'url' in t ? t.url : t.command.map((a) => (/^[\w@%+=:,./…-]+$/u.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

function listText(servers: readonly CatalogServerSummary[], choice: CatalogStoreChoice | undefined): string {
  const scanned = servers.filter((s) => s.source === 'store').length;
  const head = choice === undefined
    ? `Catalogue: ${servers.length - scanned} servers shipped with PolicyLayer (no control store at ./data/policylayer.db: nothing scanned here yet).\n`
    : `Catalogue: ${scanned} server${scanned === 1 ? '' : 's'} scanned into ${choice.shown}, ${servers.length - scanned} shipped with PolicyLayer.\n`;
  if (servers.length === 0) return `${head}Scan one with: policylayer scan -- <command>\n`;
  const rows = [['KEY', 'SOURCE', 'SERVER', 'VERSION', 'TOOLS', 'LAST SEEN', 'CATEGORIES']];
  for (const s of servers) {
    rows.push([s.key, s.source, s.displayName, s.version ?? '-', String(s.toolCount), s.lastSeen.replace(/:\d\d(?:\.\d{3})?Z$/, 'Z'), categoryText(s.categories)]);
  }
  return `${head}\n${table(rows)}\nA server's tools: policylayer catalog show <key>; a tool's page: policylayer catalog show <key> <tool>\n`;
}

function sourceText(v: CatalogServerSummary): string {
  return v.source === 'shipped' ? `shipped with PolicyLayer, scanned from ${v.package}` : `scanned here, ${v.scans} scan${v.scans === 1 ? '' : 's'}`;
}

function serverText(v: CatalogServerView): string {
  const width = process.stdout.isTTY && process.stdout.columns ? Math.max(80, process.stdout.columns) : 120;
  const color = process.stdout.isTTY === true && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';
  const lines = [
    `${v.displayName}${v.version ? ` ${v.version}` : ''}${v.displayName !== v.name ? ` (${v.name})` : ''}: catalogue key ${v.key}, ${sourceText(v)}`,
    `reached by:  ${targetText(v.target)} (${v.transport})`,
    `seen:        ${v.source === 'shipped' ? `scanned ${v.lastSeen}` : `first ${v.firstSeen}, last ${v.lastSeen}`}; risk classifier v${v.classifierVersion}${v.trusted ? '; marked trusted' : ''}`,
    `tools:       ${v.toolCount}: ${categoryText(v.categories)}`,
    '',
  ];
  const rows = v.tools.map((t) => ({ definition: t.definition, classification: t.classification, recommendation: recommendRule(t.classification, t.definition as unknown as ToolDefinition) }));
  let text = lines.join('\n') + '\n' + renderTable(rows as unknown as Parameters<typeof renderTable>[0], width, color);
  if (v.removedTools.length > 0) text += `\nNo longer listed: ${v.removedTools.map((t) => `${t.name} (since ${t.removedAt})`).join(', ')}\n`;
  text += `\nA tool's page: policylayer catalog show ${v.key} <tool>${v.source === 'store' ? `; changes: policylayer catalog history ${v.key}` : ''}\n`;
  return text;
}

function serverMarkdown(v: CatalogServerView): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\s+/g, ' ');
  const out = [
    `# ${v.displayName}`,
    '',
    `${v.version ? `Version ${v.version}, ` : ''}catalogue key \`${v.key}\`, ${sourceText(v)}. Reached by \`${targetText(v.target)}\` (${v.transport}). ${v.toolCount} tools: ${categoryText(v.categories)}.`,
    '',
    '| Tool | Category | Severity | Recommended | Top reason |',
    '|---|---|---|---|---|',
  ];
  for (const t of v.tools) {
    const rule = t.recommendation.hide ? 'hidden' : t.recommendation.why.split(':')[0]!;
    out.push(`| \`${cell(t.name)}\` | ${t.category} | ${t.severity} | ${cell(rule)} | ${cell(t.classification.reasons[0]?.text ?? '')} |`);
  }
  if (v.removedTools.length > 0) out.push('', `No longer listed: ${v.removedTools.map((t) => `\`${t.name}\``).join(', ')}.`);
  out.push('');
  return out.join('\n');
}

function historyText(h: Awaited<ReturnType<Catalog['history']>>): string {
  const s = h.server;
  if (s.source === 'shipped') {
    return `${s.key} is shipped with PolicyLayer: one scan of ${s.package}, with no history. Scan it here to start one, e.g.: policylayer scan -- ${targetText(s.target)}\n`;
  }
  const head = `${s.displayName}${s.version ? ` ${s.version}` : ''} (catalogue key ${s.key}): first seen ${s.firstSeen}, last ${s.lastSeen}, ${s.scans} scan${s.scans === 1 ? '' : 's'}\n\n`;
  const short = (h: string | null) => (h === null ? '' : h.slice(0, 'sha256:'.length + 12) + '…');
  const rows = [['AT', 'CHANGE', 'TOOL', 'DEFINITION']];
  for (const c of h.changes) {
    const def =
      c.kind === 'changed' ? `${short(c.oldHash)} → ${short(c.newHash)}${c.fields.length > 0 ? ` (${c.fields.join(', ')})` : ''}` : c.kind === 'added' ? short(c.newHash) : `was ${short(c.oldHash)}`;
    rows.push([c.at, c.kind, c.tool, def]);
  }
  const more = h.next !== null ? `more: --before ${h.next}\n` : '';
  return head + (h.changes.length === 0 ? 'no changes recorded\n' : table(rows)) + more;
}
