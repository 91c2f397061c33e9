/**
 * Opens the audit sinks `audit.sinks` names, for the gateway (writing) and for the CLI and admin
 * API (reading). A spec is `sqlite:<path>`, `jsonl:<path>`, `stdout` or a `postgres://` URL; the
 * config loader has already made paths absolute. Drivers are loaded only when a spec needs them.
 */
import type { AuditSink } from './sink.js';
import type { AuditStore } from './store.js';
import type { JsonlFileSink } from './sinks/jsonl.js';

export interface OpenSinkOptions {
  /** `strict` syncs every SQLite commit to disk (see the SQLite sink). Default `async`. */
  readonly durability?: 'async' | 'strict';
  /** A SQLite sink writes on the caller's thread (see SqliteAuditSinkOptions.inline). */
  readonly inline?: boolean;
}

/** What a spec names: a queryable store, a JSON Lines file (readable in order), or stdout. */
export type OpenedSink =
  | { readonly kind: 'store'; readonly sink: AuditStore }
  | { readonly kind: 'jsonl'; readonly sink: JsonlFileSink }
  | { readonly kind: 'stdout'; readonly sink: AuditSink };

export function isPostgresSpec(spec: string): boolean {
  return spec.startsWith('postgres://') || spec.startsWith('postgresql://');
}

/** Opens one sink; throws (rejects) with a message naming the spec's kind and place, never a password. */
export async function openAuditSink(spec: string, opts: OpenSinkOptions = {}): Promise<OpenedSink> {
  if (spec.startsWith('sqlite:')) {
    const { openSqliteAuditSink } = await import('./sinks/sqlite.js');
    return { kind: 'store', sink: openSqliteAuditSink(spec.slice('sqlite:'.length), { synchronous: opts.durability === 'strict' ? 'full' : 'normal', inline: opts.inline }) };
  }
  if (spec.startsWith('jsonl:')) {
    const { JsonlFileSink } = await import('./sinks/jsonl.js');
    return { kind: 'jsonl', sink: new JsonlFileSink({ path: spec.slice('jsonl:'.length) }) };
  }
  if (spec === 'stdout') {
    const { StdoutSink } = await import('./sinks/stdout.js');
    return { kind: 'stdout', sink: new StdoutSink() };
  }
  if (isPostgresSpec(spec)) {
    const { openPostgresAuditSink } = await import('./sinks/postgres.js');
    return { kind: 'store', sink: await openPostgresAuditSink(spec) };
  }
  throw new Error(`unknown audit sink '${spec.replace(/\/\/[^@/]*@/, '//')}': expected sqlite:<path>, postgres://…, jsonl:<path> or stdout`);
}

/**
 * A sink the gateway writes to from its start even when its database cannot be reached yet (a
 * PostgreSQL server restarting): the first write opens it, and a failed open is a rejected write,
 * which the writer handles like any other (spill, retry with backoff). A wrong password is thus
 * reported in the log and the records wait in the spill file, rather than the gateway refusing to
 * start.
 */
export class DeferredSink implements AuditSink {
  readonly name: string;
  private opened: Promise<AuditSink> | undefined;
  private sink: AuditSink | undefined;
  private closed = false;

  constructor(
    name: string,
    private readonly open: () => Promise<AuditSink>,
  ) {
    this.name = name;
  }

  /** The sink, once a write has opened it. */
  get current(): AuditSink | undefined {
    return this.sink;
  }

  async write(records: Parameters<AuditSink['write']>[0]): Promise<void> {
    if (this.closed) throw new Error(`${this.name}: the sink is closed`);
    if (records.length === 0) return;
    if (this.sink === undefined) {
      this.opened ??= this.open().then(
        (s) => (this.sink = s),
        (err: unknown) => {
          // The next write tries again.
          this.opened = undefined;
          throw err;
        },
      );
      await this.opened;
    }
    await this.sink!.write(records);
  }

  async close(): Promise<void> {
    this.closed = true;
    const s = this.sink ?? (await this.opened?.catch(() => undefined));
    await s?.close();
  }
}

/** The place a spec names, fit for logs: a PostgreSQL URL without its user and password. */
export function sinkDisplayName(spec: string): string {
  if (!isPostgresSpec(spec)) return spec;
  try {
    const u = new URL(spec);
    return `postgres:${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return 'postgres:(unparsable URL)';
  }
}
