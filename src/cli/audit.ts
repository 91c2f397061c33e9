/**
 * `policylayer audit`: reads the log the gateway writes. Exit statuses follow grep's: 1 is an
 * answer (verify found a broken chain, or a checkpoint not signed off by a key it was given), 2 a
 * question that could not be asked (arguments, config, a sink that will not open, checkpoints and
 * no key to check them with), so a cron job can alarm on 1 alone.
 */
import type { KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { AUDIT_DECISIONS, type AuditDecision, type AuditRecord } from '../audit/event.js';
import { isPostgresSpec, openAuditSink, sinkDisplayName, type OpenedSink } from '../audit/open.js';
import { publicKeyPem, readPublicKey, readSigningKey } from '../audit/signing.js';
import type { AuditQuery, AuditStore } from '../audit/store.js';
import { verifyChain, type VerifyResult } from '../audit/verify.js';
import { loadGatewayConfig, type GatewayConfig } from '../config/index.js';
import { openControlStore } from '../main.js';
import { parseDuration } from '../util/duration.js';
import { parse } from './args.js';
import type { Command } from './index.js';

export const auditCommand: Command = {
  summary: 'verify, tail, search and export the audit log',
  usage: `Usage: policylayer audit <verify|tail|search|export|public-key> [-c <gateway.yaml> | --sink <spec>] [options]

Reads the audit sinks of gateway.yaml (audit.sinks), or the one named by --sink:
sqlite:<path>, postgres://…, jsonl:<path> (verify only) or stdout (nothing to read).

  verify [--sink <spec>]... [--public-key <pem file>]... [--format text|json]
      Checks every sink's hash chains, and the signatures of the checkpoints retention
      left, with the public half of audit.signing_key (-c), or with the keys given by
      --public-key instead (an auditor need not hold the private key). Exit 0 when all
      verify, 1 when a record was changed, deleted, inserted or reordered or a
      checkpoint is not signed by a key given (the first such place is named), 2 when
      a sink cannot be opened or there are checkpoints and no key to check them with.
  public-key -c <gateway.yaml>
      Prints the public half of the audit signing key (PEM, after a line with its
      fingerprint), for verify --public-key. Keep it where the database's writers
      cannot change it.
  tail [-n 20] [--follow] [filters] [--format table|jsonl|json]
      The last n matching records, oldest first; --follow then prints new ones as they
      arrive (checked every second) until Ctrl-C.
  search [filters] [--limit 100] [--cursor <c>] [--format table|json|jsonl]
      One page of matching records, newest first, and the cursor of the next page.
  export --format jsonl|csv [filters] [-o <file>]
      Every matching record, oldest first, to stdout or <file>. An export without filters
      verifies again: policylayer audit verify --sink jsonl:<file>.

Filters (combined with AND):
  --grant <id|label>    a label is looked up in the config's store
  --tool <name>  --server <name>
  --decision <${AUDIT_DECISIONS.join('|')}>
  --since <when>  --until <when>
      when: an ISO 8601 date or time (2024-05-01, 2024-05-01T09:30:00Z; UTC unless it
      says otherwise), or a duration meaning that long ago (15m, 24h, 7d)

Tail and search read the first SQLite or PostgreSQL sink. Errors in the arguments, the
config or opening a sink exit with 2.

Example:
  policylayer audit search -c gateway.yaml --grant alice-laptop --decision deny --since 24h
`,
  run: (argv) => runAudit(argv),
};

/** Where a command writes: the process's streams, or a test's. */
export interface AuditIo {
  readonly stdout: Writable;
  readonly stderr: Writable;
}

/** Arguments, config or a sink that cannot be opened: the command exits 2, not 1 (which verify keeps for a broken chain). */
class UsageError extends Error {}

/** Records per query when walking many pages (the stores' largest page). */
const WALK_PAGE = 1_000;
/** How often --follow asks the store for new records. */
const FOLLOW_INTERVAL_MS = 1_000;
/** The table is kept to this many columns, the common width of a terminal with room to spare. */
const TABLE_WIDTH = 120;

/** `policylayer audit …` without the program name: the exit status, or a rejection for an unexpected error (exit 1). */
export async function runAudit(argv: string[], io: AuditIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case 'verify':
        return await verifyCommand(rest, io);
      case 'tail':
        return await tailCommand(rest, io);
      case 'search':
        return await searchCommand(rest, io);
      case 'export':
        return await exportCommand(rest, io);
      case 'public-key':
        return publicKeyCommand(rest, io);
      default:
        throw new UsageError(`unknown subcommand '${sub ?? ''}': expected verify, tail, search, export or public-key\nSee 'policylayer audit --help'.`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`policylayer: ${err.message}\n`);
      return 2;
    }
    // The reader of a pipe went away (`| head`): what it wanted has been written.
    if ((err as NodeJS.ErrnoException).code === 'EPIPE') return 0;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Options

const SOURCE = {
  config: { type: 'string', short: 'c' },
  sink: { type: 'string' },
  format: { type: 'string' },
} as const;

const FILTERS = {
  grant: { type: 'string' },
  tool: { type: 'string' },
  decision: { type: 'string' },
  server: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
} as const;

interface SourceFlags {
  config?: string | undefined;
  sink?: string | string[] | undefined;
}

interface FilterFlags {
  grant?: string | undefined;
  tool?: string | undefined;
  decision?: string | undefined;
  server?: string | undefined;
  since?: string | undefined;
  until?: string | undefined;
}

function parseUsage<T extends Parameters<typeof parse>[2]>(sub: string, argv: string[], options: T) {
  try {
    return parse(`audit ${sub}`, argv, options).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[], fallback?: T): T {
  if (value === undefined) {
    if (fallback !== undefined) return fallback;
    throw new UsageError(`${flag} ${allowed.join('|')} is required`);
  }
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${flag} expects ${allowed.join(', ')}; got '${value}'`);
  return value as T;
}

function count(flag: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(n >= min && n <= max)) throw new UsageError(`${flag} expects a whole number from ${min} to ${max}; got '${value}'`);
  return n;
}

function loadConfig(flags: SourceFlags): GatewayConfig | undefined {
  if (flags.config === undefined) {
    if (flags.sink === undefined) throw new UsageError("missing -c <gateway.yaml> (or --sink <spec>)\nSee 'policylayer audit --help'.");
    return undefined;
  }
  try {
    return loadGatewayConfig(flags.config);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

const ISO_TIME = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:\d{2})?)?$/i;

/**
 * `--since`/`--until`: an ISO 8601 date or time, or a duration before `now`. A time without a zone
 * is UTC, as the times the table prints are, so one can be copied from the output into a filter
 * (JavaScript alone would read `2024-05-01T09:30` as local time but `2024-05-01` as UTC).
 */
function parseWhen(flag: string, text: string, now: number): number {
  const iso = ISO_TIME.exec(text.trim());
  if (iso !== null) {
    const [, date, time, zone] = iso;
    const ms = Date.parse(time === undefined ? `${date}T00:00:00Z` : `${date}T${time}${zone?.toUpperCase() ?? 'Z'}`);
    if (Number.isFinite(ms)) return ms;
  } else {
    try {
      return now - parseDuration(text);
    } catch {
      // Neither form: the error below names both.
    }
  }
  throw new UsageError(`${flag} expects an ISO 8601 date or time (2024-05-01, 2024-05-01T09:30:00Z) or a duration ago (15m, 24h, 7d); got '${text}'`);
}

/** The query the filter flags describe; a grant label becomes the grant's id when the config's store knows it. */
async function queryOf(flags: FilterFlags, config: GatewayConfig | undefined, now: number, io: AuditIo): Promise<AuditQuery> {
  const q: { -readonly [K in keyof AuditQuery]: AuditQuery[K] } = {};
  if (flags.grant !== undefined) q.grant = await grantId(flags.grant, config, io);
  if (flags.tool !== undefined) q.tool = flags.tool;
  if (flags.server !== undefined) q.server = flags.server;
  if (flags.decision !== undefined) q.decision = oneOf<AuditDecision>('--decision', flags.decision, AUDIT_DECISIONS);
  if (flags.since !== undefined) q.since = parseWhen('--since', flags.since, now);
  if (flags.until !== undefined) q.until = parseWhen('--until', flags.until, now);
  if (q.since !== undefined && q.until !== undefined && q.since >= q.until) {
    throw new UsageError(`--since (${iso(q.since)}) must be before --until (${iso(q.until)})`);
  }
  return q;
}

/**
 * Stores filter (and index) records by the grant's id, so a label is translated through the
 * control store. The store is opened only if it is there: opening a missing SQLite file would
 * create it, from a command that only reads.
 */
async function grantId(value: string, config: GatewayConfig | undefined, io: AuditIo): Promise<string> {
  if (config === undefined) return value;
  const spec = config.store;
  if (spec.startsWith('sqlite:')) {
    const file = spec.slice('sqlite:'.length);
    if (file === ':memory:' || !existsSync(file)) return value;
  }
  let store: Awaited<ReturnType<typeof openControlStore>>;
  try {
    store = await openControlStore(spec);
  } catch (err) {
    io.stderr.write(`policylayer: cannot open the store ${sinkDisplayName(spec)} to look up grant '${value}', taking it as an id: ${(err as Error).message}\n`);
    return value;
  }
  try {
    // getGrant prefers an id over a label spelled the same, so an id is returned as it is.
    return (await store.getGrant(value))?.id ?? value;
  } finally {
    await store.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Sinks

function specsOf(flags: SourceFlags, config: GatewayConfig | undefined): string[] {
  if (flags.sink !== undefined) return Array.isArray(flags.sink) ? flags.sink : [flags.sink];
  return config?.audit.sinks ?? [];
}

/**
 * Opens a sink for reading. Opening SQLite or JSON Lines creates what is missing, which would
 * hide a mistyped path behind an empty log: a file that is not there is an error instead.
 */
async function openForReading(spec: string): Promise<OpenedSink> {
  const display = sinkDisplayName(spec);
  if (spec.startsWith('sqlite:')) {
    const file = spec.slice('sqlite:'.length);
    if (file !== ':memory:' && !existsSync(file)) throw new UsageError(`${display}: no such file`);
  }
  let opened: OpenedSink;
  try {
    opened = await openAuditSink(spec);
  } catch (err) {
    const message = (err as Error).message;
    throw new UsageError(message.includes(display) ? message : `cannot open ${display}: ${message}`);
  }
  if (opened.kind === 'jsonl' && (await opened.sink.files()).length === 0) {
    await opened.sink.close();
    throw new UsageError(`${display}: no such file`);
  }
  return opened;
}

/** The first SQLite or PostgreSQL sink: the ones that answer queries. */
async function openQueryable(sub: string, flags: SourceFlags, config: GatewayConfig | undefined): Promise<AuditStore> {
  const specs = specsOf(flags, config);
  const spec = specs.find((s) => s.startsWith('sqlite:') || isPostgresSpec(s));
  if (spec === undefined) {
    const where = flags.sink !== undefined ? `--sink ${specs.map(sinkDisplayName).join(' ')}` : `${flags.config ?? 'the config'} (audit.sinks)`;
    throw new UsageError(`audit ${sub} reads a sqlite: or postgres:// sink, and ${where} names none; JSON Lines files can be checked with audit verify`);
  }
  const opened = await openForReading(spec);
  if (opened.kind !== 'store') throw new UsageError(`${sinkDisplayName(spec)} cannot be queried`);
  return opened.sink;
}

// ---------------------------------------------------------------------------------------------
// verify

type SinkReport =
  | { sink: string; ok: true; records: number; streams: number; duplicates: number }
  | { sink: string; ok: false; problem: string; stream?: string; seq?: number; message: string }
  | { sink: string; ok: null; skipped?: string; error?: string };

async function verifyCommand(argv: string[], io: AuditIo): Promise<number> {
  const values = parseUsage('verify', argv, { ...SOURCE, sink: { type: 'string', multiple: true }, 'public-key': { type: 'string', multiple: true } });
  const format = oneOf('--format', values.format, ['text', 'json'] as const, 'text');
  const config = loadConfig(values);
  const specs = specsOf(values, config);
  if (specs.length === 0) throw new UsageError(`${values.config ?? 'the config'} names no audit sink (audit.sinks is empty)`);
  const publicKeys = verifyKeys(values['public-key'], config);

  const reports: SinkReport[] = [];
  for (const spec of specs) reports.push(await verifySink(spec, publicKeys));

  if (format === 'json') {
    const ok = reports.every((r) => r.ok === true || (r.ok === null && r.skipped !== undefined));
    io.stdout.write(`${JSON.stringify({ ok, sinks: reports }, null, 2)}\n`);
  } else {
    for (const r of reports) {
      if (r.ok === true) {
        io.stdout.write(`${r.sink}: ok: ${plural(r.records, 'record')} in ${plural(r.streams, 'stream')} (${plural(r.duplicates, 'duplicate')} passed over)\n`);
      } else if (r.ok === false) {
        io.stdout.write(`${r.sink}: FAILED: ${r.message}\n`);
      } else if (r.skipped !== undefined) {
        io.stdout.write(`${r.sink}: skipped: ${r.skipped}\n`);
      }
    }
  }
  for (const r of reports) if (r.ok === null && r.error !== undefined) io.stderr.write(`policylayer: ${r.error}\n`);
  // A proven broken chain outranks a sink that could not be read: that is what an alert must say.
  if (reports.some((r) => r.ok === false)) return 1;
  return reports.some((r) => r.ok === null && r.error !== undefined) ? 2 : 0;
}

/**
 * The public keys checkpoints are checked with: those of --public-key, or else the public half of
 * the config's audit.signing_key when the file is there (the default one is made by the gateway
 * when retention first needs it: before that, no checkpoint needs it either).
 */
function verifyKeys(files: string[] | undefined, config: GatewayConfig | undefined): KeyObject[] {
  if (files !== undefined && files.length > 0) {
    return files.map((file) => {
      try {
        return readPublicKey(path.resolve(file));
      } catch (err) {
        throw new UsageError(`--public-key: ${(err as Error).message}`);
      }
    });
  }
  const file = config?.audit.signingKey;
  if (config === undefined || file === undefined) return [];
  if (config.audit.signingKeyNamed !== true && !existsSync(file)) return [];
  try {
    return [readSigningKey(file).publicKey];
  } catch (err) {
    throw new UsageError(
      `${(err as Error).message} (audit.signing_key of ${config.source}); where the private key cannot be read, verify with --public-key <pem file> (policylayer audit public-key prints it)`,
    );
  }
}

async function verifySink(spec: string, publicKeys: readonly KeyObject[]): Promise<SinkReport> {
  const display = sinkDisplayName(spec);
  if (spec === 'stdout') return { sink: display, ok: null, skipped: 'records written to stdout cannot be read back' };
  let opened: OpenedSink;
  try {
    opened = await openForReading(spec);
  } catch (err) {
    return { sink: display, ok: null, error: (err as Error).message };
  }
  const name = opened.sink.name;
  try {
    let result: VerifyResult;
    if (opened.kind === 'store') result = await opened.sink.verify({ publicKeys });
    else if (opened.kind === 'jsonl') result = await verifyChain(opened.sink.iterate(), { publicKeys });
    else return { sink: name, ok: null, skipped: 'this sink cannot be read back' };
    if (result.ok) return { sink: name, ok: true, records: result.records, streams: result.streams, duplicates: result.duplicates };
    // Not a broken chain: a question that could not be asked without a key (exit 2, not 1).
    if (result.problem === 'unverifiable') {
      return { sink: name, ok: null, error: `${name}: cannot check the checkpoints' signatures: give the signing key (audit.signing_key) or --public-key <pem file>` };
    }
    return { sink: name, ok: false, problem: result.problem, stream: result.stream, seq: result.seq, message: result.message };
  } catch (err) {
    // A line that is not JSON, a row the driver cannot read: the log is damaged, not merely unopened.
    return { sink: name, ok: false, problem: 'unreadable', message: (err as Error).message };
  } finally {
    await opened.sink.close();
  }
}

// ---------------------------------------------------------------------------------------------
// public-key

/** Prints the public half of the config's audit signing key, after a line with its fingerprint (PEM readers pass over text before the key). */
function publicKeyCommand(argv: string[], io: AuditIo): number {
  const values = parseUsage('public-key', argv, { config: { type: 'string', short: 'c' } });
  if (values.config === undefined) throw new UsageError("missing -c <gateway.yaml>\nSee 'policylayer audit --help'.");
  const config = loadConfig(values)!;
  const file = config.audit.signingKey!;
  if (!existsSync(file)) {
    throw new UsageError(
      config.audit.signingKeyNamed === true
        ? `audit.signing_key ${file}: no such file`
        : `no audit signing key at ${file} yet: the gateway makes it when it first starts with audit.retention set (or name one with audit.signing_key)`,
    );
  }
  let key;
  try {
    key = readSigningKey(file);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  io.stdout.write(`audit signing key ${key.keyId} (fingerprint: SHA-256 of the public key, first 16 hex digits)\n${publicKeyPem(key.publicKey)}`);
  return 0;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------------------------------------
// tail

async function tailCommand(argv: string[], io: AuditIo): Promise<number> {
  const values = parseUsage('tail', argv, {
    ...SOURCE,
    ...FILTERS,
    lines: { type: 'string', short: 'n' },
    follow: { type: 'boolean', short: 'f' },
  });
  const format = oneOf('--format', values.format, ['table', 'jsonl', 'json'] as const, 'table');
  if (format === 'json' && values.follow === true) throw new UsageError('--follow prints records as they come: use --format table or jsonl');
  const n = count('-n', values.lines, 20, 0, Number.MAX_SAFE_INTEGER);
  const config = loadConfig(values);
  const filter = await queryOf(values, config, Date.now(), io);
  const store = await openQueryable('tail', values, config);
  const out = new Output(io.stdout);
  try {
    const newest: AuditRecord[] = [];
    let after: string | undefined;
    while (newest.length < n) {
      const page = await queryPage(store, { ...filter, order: 'newest', limit: Math.min(WALK_PAGE, n - newest.length), after });
      newest.push(...page.records);
      if (page.next === undefined) break;
      after = page.next;
    }
    const records = newest.reverse();
    const table = new Table();
    if (format === 'json') await out.write(`${JSON.stringify(records, null, 2)}\n`);
    else await out.write(format === 'table' ? table.format(records) : jsonLines(records));
    if (values.follow === true) await follow(store, filter, records, format === 'table' ? (r) => table.format(r) : jsonLines, out);
    return 0;
  } finally {
    out.detach();
    await store.close();
  }
}

/**
 * Prints records newer than the tail as they reach the store, until SIGINT or SIGTERM.
 *
 * An `oldest` walk from the newest record printed. The store only hands out a cursor when a
 * page is full, so the last, partial page is read again on every poll and the records already
 * printed from it are skipped by their place in their stream; once it fills, the walk moves on
 * and forgets them. Records that reach the store after the walk has passed their time (a
 * gateway's batch held back longer than a full page takes to fill) are not printed.
 */
async function follow(
  store: AuditStore,
  filter: AuditQuery,
  printed: readonly AuditRecord[],
  render: (records: readonly AuditRecord[]) => string,
  out: Output,
): Promise<void> {
  const start = Math.max(printed[printed.length - 1]?.at ?? Date.now(), filter.since ?? Number.NEGATIVE_INFINITY);
  let seen = new Set(printed.filter((r) => r.at >= start).map(place));
  let after: string | undefined;
  const stop = interruption();
  try {
    while (!stop.stopped) {
      for (;;) {
        const page = await queryPage(store, { ...filter, since: start, order: 'oldest', limit: WALK_PAGE, after });
        const fresh = page.records.filter((r) => !seen.has(place(r)));
        if (fresh.length > 0) await out.write(render(fresh));
        if (page.next === undefined) {
          for (const r of fresh) seen.add(place(r));
          break;
        }
        // Everything up to the cursor is behind the walk now: no later page returns it.
        after = page.next;
        seen = new Set();
        if (stop.stopped) return;
      }
      await stop.sleep(FOLLOW_INTERVAL_MS);
    }
  } finally {
    stop.dispose();
  }
}

const place = (r: AuditRecord): string => `${r.seq} ${r.stream}`;

function interruption() {
  let stopped = false;
  let wake: (() => void) | undefined;
  const onSignal = () => {
    stopped = true;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    get stopped() {
      return stopped;
    },
    sleep(ms: number): Promise<void> {
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    },
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// search

async function searchCommand(argv: string[], io: AuditIo): Promise<number> {
  const values = parseUsage('search', argv, { ...SOURCE, ...FILTERS, limit: { type: 'string' }, cursor: { type: 'string' } });
  const format = oneOf('--format', values.format, ['table', 'json', 'jsonl'] as const, 'table');
  const limit = count('--limit', values.limit, 100, 1, WALK_PAGE);
  const config = loadConfig(values);
  const filter = await queryOf(values, config, Date.now(), io);
  const store = await openQueryable('search', values, config);
  const out = new Output(io.stdout);
  try {
    const page = await queryPage(store, { ...filter, order: 'newest', limit, after: values.cursor });
    if (format === 'json') {
      await out.write(`${JSON.stringify({ records: page.records, next: page.next ?? null }, null, 2)}\n`);
    } else if (format === 'jsonl') {
      await out.write(jsonLines(page.records));
      // stdout stays one record per line; the way on goes where a person reads it.
      if (page.next !== undefined) io.stderr.write(`more: --cursor ${page.next}\n`);
    } else {
      await out.write(page.records.length === 0 ? 'no matching records\n' : new Table().format(page.records));
      if (page.next !== undefined) await out.write(`more: --cursor ${page.next}\n`);
    }
    return 0;
  } finally {
    out.detach();
    await store.close();
  }
}

/** A query whose only bad input can be the user's cursor or times, which the store rejects with a RangeError. */
async function queryPage(store: AuditStore, q: AuditQuery) {
  try {
    return await store.query(q);
  } catch (err) {
    if (err instanceof RangeError) throw new UsageError(err.message);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// export

async function exportCommand(argv: string[], io: AuditIo): Promise<number> {
  const values = parseUsage('export', argv, { ...SOURCE, ...FILTERS, output: { type: 'string', short: 'o' } });
  const format = oneOf('--format', values.format, ['jsonl', 'csv'] as const);
  const config = loadConfig(values);
  const filter = await queryOf(values, config, Date.now(), io);
  const store = await openQueryable('export', values, config);
  const file = values.output === undefined ? undefined : path.resolve(values.output);
  let stream: Writable = io.stdout;
  let out: Output | undefined;
  let done = false;
  try {
    if (file !== undefined) {
      // Opened before the first record is read, so a wrong path is an error of the command line.
      const fh = await open(file, 'w').catch((err: Error) => {
        throw new UsageError(`cannot write ${file}: ${err.message}`);
      });
      stream = fh.createWriteStream();
    }
    out = new Output(stream);
    if (format === 'csv') await out.write(csvRow(CSV_COLUMNS));
    let after: string | undefined;
    for (;;) {
      const page = await queryPage(store, { ...filter, order: 'oldest', limit: WALK_PAGE, after });
      await out.write(format === 'csv' ? page.records.map(csvRecord).join('') : jsonLines(page.records));
      if (page.next === undefined) break;
      after = page.next;
    }
    if (file !== undefined) await out.end();
    done = true;
    return 0;
  } finally {
    out?.detach();
    await store.close();
    if (!done && out !== undefined && file !== undefined) {
      stream.destroy();
      io.stderr.write(`policylayer: ${file} is incomplete: the export stopped before its end\n`);
    }
  }
}

/**
 * Every field of a record, in the order AuditRecord declares them. A mapped type over the record's
 * keys, so a field added to the record fails to compile here until it has a column.
 */
const FIELD_ORDER: { readonly [K in keyof AuditRecord]-?: null } = {
  at: null,
  requestId: null,
  grantId: null,
  grantLabel: null,
  session: null,
  server: null,
  method: null,
  tool: null,
  decision: null,
  rule: null,
  reason: null,
  policyVersion: null,
  arguments: null,
  upstreamStatus: null,
  latencyMs: null,
  resultBytes: null,
  error: null,
  stream: null,
  seq: null,
  prevHash: null,
  hash: null,
};
const CSV_COLUMNS = Object.keys(FIELD_ORDER) as (keyof AuditRecord)[];

/**
 * One CSV row per record (RFC 4180: CRLF line ends, fields with a quote, comma or line break in
 * double quotes, quotes doubled). Null is an empty field and the empty string a quoted empty
 * one, PostgreSQL's COPY convention, so the file tells the two apart as the record does.
 * `arguments` is its JSON text (`null` when the arguments were null, an empty field when absent).
 */
function csvRecord(r: AuditRecord): string {
  return csvRow(CSV_COLUMNS.map((k) => (k === 'arguments' ? (r.arguments === undefined ? null : JSON.stringify(r.arguments)) : (r[k] as string | number | null))));
}

function csvRow(cells: readonly (string | number | null | undefined)[]): string {
  return cells.map(csvCell).join(',') + '\r\n';
}

function csvCell(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return '';
  const s = String(v);
  return s === '' || /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

// ---------------------------------------------------------------------------------------------
// Output

/** The records as stored, one JSON line each: the JSON Lines sink's own format, so an export verifies. */
function jsonLines(records: readonly AuditRecord[]): string {
  let text = '';
  for (const r of records) text += `${JSON.stringify(r)}\n`;
  return text;
}

function iso(ms: number): string {
  const d = new Date(ms);
  // A tampered time out of Date's range must not stop the listing that would show it.
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
}

/**
 * The compact line per record: time, decision, server, tool (or method), grant, rule, and for
 * forwarded calls the upstream status and latency. Columns are as wide as their longest value so
 * far (they only grow, so a followed tail stays aligned), and the widest give way, value by value
 * ending in '…', until a line fits TABLE_WIDTH.
 */
class Table {
  /** decision, server, tool, grant, rule; time is fixed and the outcome ends the line unpadded. */
  private widths = [0, 0, 0, 0, 0];
  private static readonly TIME = 24;
  /** Never narrowed below this, whatever the line's length. */
  private static readonly MIN = 10;
  /** Server, tool, grant and rule may be cut; the decision never is. */
  private static readonly SHRINKABLE = [1, 2, 3, 4];

  format(records: readonly AuditRecord[]): string {
    const rows = records.map((r) => ({ time: iso(r.at), cells: Table.cells(r), outcome: Table.outcome(r) }));
    for (const row of rows) row.cells.forEach((c, i) => (this.widths[i] = Math.max(this.widths[i]!, c.length)));
    const widths = [...this.widths];
    const outcome = Math.max(0, ...rows.map((r) => r.outcome.length));
    const total = () => Table.TIME + widths.reduce((a, b) => a + b + 1, 0) + (outcome > 0 ? outcome + 1 : 0);
    while (total() > TABLE_WIDTH) {
      let widest = -1;
      for (const i of Table.SHRINKABLE) if (widths[i]! > Table.MIN && (widest < 0 || widths[i]! > widths[widest]!)) widest = i;
      if (widest < 0) break;
      widths[widest]!--;
    }
    let text = '';
    for (const row of rows) {
      const cells = row.cells.map((c, i) => fit(c, widths[i]!));
      text += `${[row.time, ...cells, row.outcome].join(' ').trimEnd()}\n`;
    }
    return text;
  }

  private static cells(r: AuditRecord): string[] {
    return [r.decision, r.server, r.tool ?? r.method, r.grantLabel ?? r.grantId ?? '-', r.rule ?? '-'].map((s) => oneLine(String(s)));
  }

  private static outcome(r: AuditRecord): string {
    if (r.upstreamStatus === null) return '';
    const l = r.latencyMs;
    const latency = l === null ? '' : ` ${l < 10 ? l.toFixed(1) : Math.round(l)}ms`;
    return oneLine(r.upstreamStatus) + latency;
  }
}

/** A value padded or cut to `width`. */
function fit(s: string, width: number): string {
  return s.length <= width ? s.padEnd(width) : `${s.slice(0, width - 1)}…`;
}

/** Names come from agents and servers: a line break or control character in one must not forge a line. */
function oneLine(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f]/g, '?');
}

/**
 * Writes that wait when the stream's buffer is full, so an export of any size holds one page in
 * memory, and that fail (rather than crash the process) when the stream breaks.
 */
class Output {
  private failed: Error | undefined;
  private readonly onError = (err: Error) => {
    this.failed = err;
  };

  constructor(private readonly stream: Writable) {
    stream.on('error', this.onError);
  }

  async write(text: string): Promise<void> {
    if (this.failed !== undefined) throw this.failed;
    if (text === '' || this.stream.write(text)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        this.stream.off('drain', done);
        this.stream.off('error', done);
        if (err !== undefined) reject(err);
        else resolve();
      };
      this.stream.on('drain', done);
      this.stream.on('error', done);
    });
  }

  /** Flushes and closes a file. */
  async end(): Promise<void> {
    if (this.failed !== undefined) throw this.failed;
    await new Promise<void>((resolve, reject) => {
      this.stream.once('error', reject);
      this.stream.end(() => resolve());
    });
  }

  /** Stops listening on a file; stdout keeps the listener, since a broken pipe may still report after the last write. */
  detach(): void {
    if (this.stream !== process.stdout) this.stream.off('error', this.onError);
  }
}
