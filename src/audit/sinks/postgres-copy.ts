/**
 * How the PostgreSQL audit sink sends a batch: COPY ... FROM STDIN, the rows in COPY's text format,
 * streamed in slices while they are encoded.
 *
 * Why COPY (bench/audit-postgres.ts --strategies; docs/benchmarks.md): the server no longer parses
 * one large jsonb parameter and extracts and casts 22 elements a row from it, and it inserts the
 * rows in multi-row heap writes: about 6 µs less server CPU a record (a fifth to a third of it,
 * depending on the indexes) and 100 bytes less WAL. On this side, a row costs about 4.5 µs to encode and check here, where
 * JSON.stringify of the row and the check for what text cannot hold took about 7. And the slices
 * overlap: the server inserts one while this process encodes the next, each slice its own turn
 * of the event loop (a few hundred µs).
 *
 * pg has no COPY of its own (pg-copy-streams adds it), but it runs any statement through a query
 * object and hands that object the server's CopyInResponse: CopyIn below is such an object, a
 * pg.Query that answers with the rows, through the connection's own CopyData/CopyDone/CopyFail
 * writers. No dependency, about forty lines, and pg's own result handling (the row count, errors).
 *
 * The text format, with two control characters instead of tab and `\N`:
 * - columns are separated by U+001F (unit separator), and NULL is U+001E (record separator) alone
 *   in its column. Neither occurs in what a gateway records, so an ordinary row is its values
 *   joined, with no escaping at all. A record with a string field holding a backslash, newline,
 *   carriage return, U+001F, NUL or a UTF-16 surrogate is written column by column instead
 *   (escapedRow): a test of each string field, about 1 µs a record, is what finding them costs. COPY
 *   reads backslash followed by any character but a letter or digit as that character, so
 *   `\` + U+001F is a literal U+001F, never a separator. It compares the NULL marker with a
 *   column's text before reading escapes, so only a value that is exactly U+001E needs one.
 * - The arguments column is JSON.stringify's text, which escapes every control character and lone
 *   surrogate: only its backslashes need escaping.
 * - PostgreSQL text can hold neither NUL nor a lone surrogate: a record with either in a string
 *   field keeps its columns with U+FFFD in their place and is also kept whole as JSON in
 *   `record_json` (see postgres.ts).
 */
import pg from 'pg';
import type { AuditRecord } from '../event.js';

/** The options of every COPY the sink runs: text format, our separator and NULL marker. */
export const COPY_FORMAT = `(FORMAT text, DELIMITER E'\\x1f', NULL E'\\x1e')`;

const SEP = '\x1f';
const NULL = '\x1e';
/** What a string field cannot hold as it is: what COPY gives a meaning to, and what text cannot hold. */
const SPECIAL = /[\0\n\r\\\x1f\ud800-\udfff]/;
const ESCAPE = /[\n\r\\\x1e\x1f]/g;

/** The string fields of a record, checked for what PostgreSQL text cannot hold. */
const STRING_FIELDS = [
  'stream',
  'requestId',
  'grantId',
  'grantLabel',
  'session',
  'server',
  'method',
  'tool',
  'decision',
  'rule',
  'reason',
  'policyVersion',
  'upstreamStatus',
  'error',
  'prevHash',
  'hash',
] as const;

/** NUL, or a UTF-16 surrogate without its other half. */
const UNSTORABLE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, 'g');

/** False when a string field holds a NUL or a lone surrogate, which PostgreSQL text cannot keep. */
export function storable(r: AuditRecord): boolean {
  for (const field of STRING_FIELDS) {
    const v = r[field];
    if (typeof v === 'string' && UNSTORABLE.test(v)) return false;
  }
  return true;
}

/** What a column can hold of `v`: U+FFFD for each NUL and lone surrogate. */
export function clean<T extends string | null>(v: T): T {
  return (typeof v === 'string' ? v.replace(UNSTORABLE_ALL, '\ufffd') : v) as T;
}

/**
 * A number column's text, or null. A number JSON cannot write (NaN, ±Infinity; never a time, seq
 * or size the gateway makes) has none: it is stored as NULL, which is also what the record's hash
 * saw, since canonical JSON writes them as null too.
 */
function num(v: number | null | undefined): string | null {
  return typeof v === 'number' && Number.isFinite(v) ? String(v) : null;
}

/** The arguments column's text: their JSON text (escapes and all), or null when absent. */
function args(v: unknown): string | null {
  return v === undefined ? null : (JSON.stringify(v) ?? null);
}

/**
 * A text column as it is: the NULL marker for null (and undefined, as JSON would write it), the
 * marker escaped if it is the value (COPY would read it as NULL).
 */
function text(v: string | null | undefined): string {
  return v === null || v === undefined ? NULL : v === NULL ? `\\${NULL}` : v;
}

/**
 * True when no string field of `r` needs escapedRow: the fields' values can be joined as they are.
 * `checked` is the record before it when that one passed: its stream and hash, which are usually
 * this one's stream and prevHash (the same strings), need no second look.
 */
function plain(r: AuditRecord, checked: AuditRecord | undefined): boolean {
  if (!(r.stream === checked?.stream || ok(r.stream)) || !(r.prevHash === checked?.hash || ok(r.prevHash))) return false;
  return (
    ok(r.requestId) && ok(r.grantId) && ok(r.grantLabel) && ok(r.session) && ok(r.server) && ok(r.method) && ok(r.tool) &&
    ok(r.decision) && ok(r.rule) && ok(r.reason) && ok(r.policyVersion) && ok(r.upstreamStatus) && ok(r.error) && ok(r.hash)
  );
}

/** Whether a string field can be joined into a row as it is. */
function ok(v: string | null): boolean {
  return v === null || !SPECIAL.test(v);
}

/** The row of a record that plain() passed, in INSERT_COLUMNS order (postgres.ts), record_json NULL. */
function plainRow(r: AuditRecord): string {
  const a = args(r.arguments);
  // One join: the row is made flat at once (a chain of `+` would make ~40 rope nodes to flatten later).
  return [
    text(r.stream),
    num(r.seq) ?? NULL,
    num(r.at) ?? NULL,
    text(r.requestId),
    text(r.grantId),
    text(r.grantLabel),
    text(r.session),
    text(r.server),
    text(r.method),
    text(r.tool),
    text(r.decision),
    text(r.rule),
    text(r.reason),
    text(r.policyVersion),
    a === null ? NULL : a.includes('\\') ? escapeColumn(a) : a,
    text(r.upstreamStatus),
    num(r.latencyMs) ?? NULL,
    num(r.resultBytes) ?? NULL,
    text(r.error),
    text(r.prevHash),
    text(r.hash),
    NULL,
  ].join(SEP);
}

/** A column's text as COPY reads it back: a backslash before each character COPY gives a meaning to. */
export function escapeColumn(v: string): string {
  return v.replace(ESCAPE, (c) => (c === '\n' ? '\\n' : c === '\r' ? '\\r' : `\\${c}`));
}

/** One row whose values need escaping, or cleaning and record_json. */
function escapedRow(r: AuditRecord): string {
  const whole = storable(r) ? null : JSON.stringify(r);
  const s = whole === null ? (v: string | null) => v : clean;
  const columns: Array<string | null | undefined> = [
    s(r.stream),
    num(r.seq),
    num(r.at),
    s(r.requestId),
    s(r.grantId),
    s(r.grantLabel),
    s(r.session),
    s(r.server),
    s(r.method),
    s(r.tool),
    s(r.decision),
    s(r.rule),
    s(r.reason),
    s(r.policyVersion),
    args(r.arguments),
    s(r.upstreamStatus),
    num(r.latencyMs),
    num(r.resultBytes),
    s(r.error),
    s(r.prevHash),
    s(r.hash),
    whole,
  ];
  return columns.map((c) => (c === null || c === undefined ? NULL : escapeColumn(c))).join(SEP);
}

/** Rows `from` to `to` (exclusive) of `records` in COPY's text format, each ending in a newline. */
export function copyRows(records: readonly AuditRecord[], from: number, to: number): string {
  const rows = new Array<string>(to - from + 1);
  let checked: AuditRecord | undefined;
  for (let i = from; i < to; i++) {
    const r = records[i]!;
    const ok = plain(r, checked);
    rows[i - from] = ok ? plainRow(r) : escapedRow(r);
    checked = ok ? r : undefined;
  }
  // The last element is empty: the text ends in a newline.
  rows[to - from] = '';
  return rows.join('\n');
}

/** Rows per CopyData message, each encoded in its own turn of the event loop: ~70 KB, a few hundred µs. */
export const SLICE_ROWS = 100;

/** The writers of CopyData, CopyDone and CopyFail that pg's connection has (pg's own Query uses the last). */
interface CopyConnection {
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
  sendCopyFail(message: string): void;
}

/**
 * Runs `sql`, whose last statement is a COPY ... FROM STDIN of `records`, on `client`, and
 * resolves with the rows the COPY took (all of them, or it rejects). Outside a transaction the
 * statements of `sql` run as one of their own (the simple query protocol's implicit transaction):
 * all of them or none, committed before this resolves.
 */
export function copyIn(client: pg.ClientBase, sql: string, records: readonly AuditRecord[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const copy = new CopyIn(sql, records);
    // pg reports the end of the query with one of these: 'error' as soon as the server (or the
    // connection) fails it, 'end' once the server is ready for the next query.
    copy.on('error', (err) => {
      copy.finished = true;
      reject(copy.failure ?? err);
    });
    copy.on('end', (result: pg.QueryResult | pg.QueryResult[]) => {
      copy.finished = true;
      // One result per statement when there are several: the COPY's is the last.
      const last = Array.isArray(result) ? result[result.length - 1] : result;
      resolve(last?.rowCount ?? 0);
    });
    client.query(copy);
  });
}

class CopyIn extends pg.Query {
  /** Set once the query is over: from then on the connection may carry another query, and nothing more is sent. */
  finished = false;
  /** An error of this side while encoding, reported instead of the server's "COPY from stdin failed". */
  failure: Error | undefined;
  private next = 0;
  private connection: CopyConnection | undefined;

  constructor(
    sql: string,
    private readonly records: readonly AuditRecord[],
  ) {
    super(sql);
  }

  /** pg calls this when the server asks for the rows. */
  handleCopyInResponse(connection: CopyConnection): void {
    this.connection = connection;
    this.pump();
  }

  /**
   * Sends the next slice and comes back on a later turn of the event loop, so that other work
   * runs in between and the server inserts this slice while the next is encoded. If the server
   * fails the COPY meanwhile (a conflict, a bad value), it drops whatever still arrives for it,
   * and pg ends the query at once: `finished` stops the pump before the connection is reused.
   */
  private readonly pump = (): void => {
    const connection = this.connection;
    if (this.finished || connection === undefined) return;
    if (this.next >= this.records.length) {
      connection.endCopyFrom();
      return;
    }
    const to = Math.min(this.records.length, this.next + SLICE_ROWS);
    let slice: Buffer;
    try {
      slice = Buffer.from(copyRows(this.records, this.next, to), 'utf8');
    } catch (err) {
      // The server then fails the COPY (nothing of it is kept), and the query reports this error.
      this.failure = err instanceof Error ? err : new Error(String(err));
      connection.sendCopyFail(`the audit sink could not encode the batch: ${this.failure.message}`);
      return;
    }
    this.next = to;
    connection.sendCopyFromChunk(slice);
    setImmediate(this.pump);
  };
}
