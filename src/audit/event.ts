/**
 * The audit record: one per decision and per forwarded call. Its fields are the answer to
 * "which agent called which tool with what, what did the gateway decide, under which rule and
 * policy version, and what came of it", months later. docs/audit.md describes each field.
 *
 * Records form a hash chain per stream (one gateway process writes one stream): each record
 * carries the hash of the previous one and its own hash over its canonical form, so an edited,
 * deleted, inserted or reordered record breaks the chain at the first place it was touched.
 */
import { hash } from 'node:crypto';
import { canonicalJson } from '../util/canonical-json.js';
import { keysArgumentsJson } from './arguments.js';

export type AuditDecision =
  | 'allow'
  | 'deny'
  | 'hidden'
  | 'rate_limited'
  | 'invalid_arguments'
  | 'approval_requested'
  | 'approved'
  | 'denied_by_approver'
  | 'expired'
  | 'shadow_deny';

export const AUDIT_DECISIONS: readonly AuditDecision[] = [
  'allow',
  'deny',
  'hidden',
  'rate_limited',
  'invalid_arguments',
  'approval_requested',
  'approved',
  'denied_by_approver',
  'expired',
  'shadow_deny',
];

/** How arguments are recorded (`audit.arguments`). */
export type ArgumentsMode = 'keys' | 'redacted' | 'full';

/** What the gateway knows of a decision when it makes it: the event before it is chained. */
export interface AuditEventInput {
  /** ms since the epoch. */
  readonly at: number;
  /** The JSON-RPC id of the client's request, as text (ids may be numbers or strings). */
  readonly requestId: string | null;
  readonly grantId: string | null;
  readonly grantLabel: string | null;
  readonly session: string | null;
  readonly server: string;
  /** `tools/call`, `tools/list`, … */
  readonly method: string;
  readonly tool: string | null;
  readonly decision: AuditDecision;
  /** The rule that decided, as a JSON pointer (`/tools/x/deny_if/0`, `(default deny)`). */
  readonly rule: string | null;
  readonly reason: string | null;
  readonly policyVersion: string | null;
  /**
   * The arguments as `audit.arguments` says: `keys` gives `{ keys: [...], sha256 }` (top-level
   * keys and a hash of the canonical arguments), `redacted` the arguments with secret-looking
   * values masked, `full` the arguments themselves. Null when the method has none.
   */
  readonly arguments: unknown;
  /** For forwarded calls: `ok`, `tool_error` (isError result), `error` (JSON-RPC error), `crashed`, `timeout`, `cancelled`. */
  readonly upstreamStatus: string | null;
  /** ms from the request reaching the gateway to its answer leaving it. */
  readonly latencyMs: number | null;
  /** Bytes of the result forwarded to the client. */
  readonly resultBytes: number | null;
  readonly error: string | null;
}

/** A record as stored: the event, its place in its stream's chain, and the chain's hashes. */
export interface AuditRecord extends AuditEventInput {
  /** The stream the record belongs to (one per gateway process run), e.g. a UUID. */
  readonly stream: string;
  /** 1, 2, 3… within the stream, without gaps. */
  readonly seq: number;
  /** `hash` of the previous record of the stream; 64 zeros for the first. */
  readonly prevHash: string;
  /** Lowercase hex SHA-256 of `prevHash` and the record's canonical form (see recordHash). */
  readonly hash: string;
}

export const GENESIS_HASH = '0'.repeat(64);

/**
 * The fields a record's hash covers (everything but `hash`), in canonical order: the order
 * canonicalJson sorts them in. Kept as a list so the canonical form of an ordinary record is built
 * field by field, without sorting keys on every record: chaining runs on the call path.
 */
const HASHED_FIELDS = [
  'arguments',
  'at',
  'decision',
  'error',
  'grantId',
  'grantLabel',
  'latencyMs',
  'method',
  'policyVersion',
  'prevHash',
  'reason',
  'requestId',
  'resultBytes',
  'rule',
  'seq',
  'server',
  'session',
  'stream',
  'tool',
  'upstreamStatus',
] as const satisfies readonly (keyof Omit<AuditRecord, 'hash'>)[];

/** HASHED_FIELDS but `arguments`, the one field that holds an object. */
const PLAIN_FIELDS = HASHED_FIELDS.slice(1) as readonly Exclude<(typeof HASHED_FIELDS)[number], 'arguments'>[];

/**
 * canonicalJson of the record without `hash`. A record holding exactly the fields of its type
 * (the writer's, a sink's read back) takes the fast path, which gives the very same text; one
 * with any other key, or an object where a plain value belongs (a hand-made or tampered object),
 * is serialised generically.
 */
export function canonicalRecord(r: Omit<AuditRecord, 'hash'>): string {
  const keys = Object.keys(r);
  const expected = 'hash' in r ? HASHED_FIELDS.length + 1 : HASHED_FIELDS.length;
  if (keys.length !== expected || !('arguments' in r)) return generic(r);
  for (const f of PLAIN_FIELDS) if (!(f in r)) return generic(r);
  return written(r) ?? generic(r);
}

/**
 * The canonical form of a record known to hold exactly the fields of its type, written member
 * by member in canonical (sorted) order; undefined when a value is not plain (an object where a
 * string belongs, an undefined member), which only the generic way writes right. Chaining runs
 * for every record: this is a third of what one JSON.stringify of the fields in order cost, and
 * the strings that repeat from record to record (server, tool, session, rule…) are escaped once.
 */
function written(o: Omit<AuditRecord, 'hash'>): string | undefined {
  const a = o.arguments;
  let args = '';
  if (a !== undefined) {
    const text = keysArgumentsJson(a) ?? (typeof a === 'object' && a !== null ? canonicalJson(a) : plain(a));
    if (text === undefined) return undefined;
    args = `"arguments":${text},`;
  }
  const at = o.at === lastAt ? lastAtJson : atJson(o.at);
  const decision = repeated(o.decision, 0);
  const error = once(o.error);
  const grantId = repeated(o.grantId, 1);
  const grantLabel = repeated(o.grantLabel, 2);
  const latencyMs = plain(o.latencyMs);
  const method = repeated(o.method, 3);
  const policyVersion = repeated(o.policyVersion, 4);
  // Nearly always the hash chained last: hex digits, which JSON writes as they are.
  const prevHash = o.prevHash === lastHash ? `"${lastHash}"` : once(o.prevHash);
  const reason = repeated(o.reason, 5);
  const requestId = once(o.requestId);
  const resultBytes = plain(o.resultBytes);
  const rule = repeated(o.rule, 6);
  const seq = plain(o.seq);
  const server = repeated(o.server, 7);
  const session = repeated(o.session, 8);
  const stream = repeated(o.stream, 9);
  const tool = repeated(o.tool, 10);
  const upstreamStatus = repeated(o.upstreamStatus, 11);
  if (
    at === undefined || decision === undefined || error === undefined || grantId === undefined || grantLabel === undefined ||
    latencyMs === undefined || method === undefined || policyVersion === undefined || prevHash === undefined ||
    reason === undefined || requestId === undefined || resultBytes === undefined || rule === undefined || seq === undefined ||
    server === undefined || session === undefined || stream === undefined || tool === undefined || upstreamStatus === undefined
  ) {
    return undefined;
  }
  return (
    `{${args}"at":${at},"decision":${decision},"error":${error},"grantId":${grantId},"grantLabel":${grantLabel},` +
    `"latencyMs":${latencyMs},"method":${method},"policyVersion":${policyVersion},"prevHash":${prevHash},"reason":${reason},` +
    `"requestId":${requestId},"resultBytes":${resultBytes},"rule":${rule},"seq":${seq},"server":${server},"session":${session},` +
    `"stream":${stream},"tool":${tool},"upstreamStatus":${upstreamStatus}}`
  );
}

/** JSON of a string, number or null as JSON.stringify writes it; undefined for anything else. */
function plain(v: unknown): string | undefined {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  return v === null ? 'null' : undefined;
}

/** Texts of the strings seen most recently, as JSON: the values of the fields that repeat. */
let escaped = new Map<string, string>();
/** Strings remembered at most; then the map starts again (session ids keep arriving). */
const MAX_ESCAPED = 4096;

/** Each repeating field's (by its place in written()) last string and that string's JSON. */
const lastString: Array<string | undefined> = Array(12).fill(undefined);
const lastJson: string[] = Array(12).fill('');

/**
 * plain() of a value that repeats from record to record, field `slot` of written(): most records
 * have the previous one's server, tool, decision…, and comparing with that costs less than a
 * lookup in `escaped`.
 */
function repeated(v: unknown, slot: number): string | undefined {
  if (typeof v !== 'string') return plain(v);
  if (v === lastString[slot]) return lastJson[slot];
  let text = escaped.get(v);
  if (text === undefined) {
    text = JSON.stringify(v);
    if (escaped.size >= MAX_ESCAPED) escaped = new Map();
    escaped.set(v, text);
  }
  lastString[slot] = v;
  lastJson[slot] = text;
  return text;
}

/** plain() of a value that is new in every record (a request id, a hash): not worth remembering. */
const once = plain;

/**
 * The time of the record written last and its JSON: the records of one millisecond share it, and
 * a number that large is turned into text by the slow, general way.
 */
let lastAt = NaN;
let lastAtJson = '';

function atJson(v: unknown): string | undefined {
  const text = plain(v);
  if (typeof v === 'number' && text !== undefined) {
    lastAt = v;
    lastAtJson = text;
  }
  return text;
}

/** The hash chain() made last (SHA-256 in lowercase hex): the next record's prevHash. */
let lastHash = '';

function generic(r: Omit<AuditRecord, 'hash'>): string {
  const { hash: _ignored, ...rest } = r as AuditRecord;
  return canonicalJson(rest);
}

/** SHA-256 over the previous hash and the record's canonical form, separated so neither can absorb the other. */
export function recordHash(r: Omit<AuditRecord, 'hash'>): string {
  // The one-shot hash: a Hash object per record costs more than the hashing itself.
  return hash('sha256', `${r.prevHash}\n${canonicalRecord(r)}`, 'hex');
}

/** Chains `event` after `prev` (undefined for the first record of `stream`). */
export function chain(stream: string, prev: Pick<AuditRecord, 'seq' | 'hash'> | undefined, event: AuditEventInput): AuditRecord {
  // One object literal of one shape for every record (no spreads): chaining runs on the call path,
  // and a single hidden class keeps it and every later reader of records fast.
  const r = {
    at: event.at,
    requestId: event.requestId,
    grantId: event.grantId,
    grantLabel: event.grantLabel,
    session: event.session,
    server: event.server,
    method: event.method,
    tool: event.tool,
    decision: event.decision,
    rule: event.rule,
    reason: event.reason,
    policyVersion: event.policyVersion,
    arguments: event.arguments,
    upstreamStatus: event.upstreamStatus,
    latencyMs: event.latencyMs,
    resultBytes: event.resultBytes,
    error: event.error,
    stream,
    seq: (prev?.seq ?? 0) + 1,
    prevHash: prev?.hash ?? GENESIS_HASH,
    hash: '',
  };
  // Made here with exactly its type's fields: the check canonicalRecord starts with is not needed.
  r.hash = hash('sha256', `${r.prevHash}\n${written(r) ?? generic(r)}`, 'hex');
  lastHash = r.hash;
  return r;
}
