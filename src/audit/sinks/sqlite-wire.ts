/**
 * How the SQLite audit sink hands records to its writer thread. A structured clone of the records
 * themselves cost about 3 µs a record to serialise on the main thread and 3 to 6 µs to deserialise
 * on the writer thread (objects of 21 properties, one more for the arguments): more than the
 * insert. So a slice of records crosses as:
 *
 * - `nums`, a Float64Array (a copy of its bytes), NUMS numbers per record: its time and seq; for
 *   each of STRING_FIELDS (values that repeat from record to record) a number standing for the
 *   string, 0 for null; latency and result size (NaN for null: a JSON hash cannot tell them
 *   apart, and SQLite stores a NaN as NULL anyway); and the lengths of its other strings in `text`;
 * - `text`: those other strings (request id, reason, error, the arguments as JSON, hash, prevHash)
 *   one after the other: one string to copy instead of five, sliced apart again on the other side
 *   (V8 slices without copying). A length of -1 stands for null (for the arguments: absent; for
 *   prevHash: the hash of the record before, as it nearly always is);
 * - `strings`: the strings of STRING_FIELDS first seen in this slice, which get the next numbers in
 *   order (the sender remembers the numbers it gave, the thread the strings), so a grant's id
 *   crosses once;
 * - `raw`: records that do not fit the above (a field of an unexpected type), as they are, so the
 *   thread rejects or stores them exactly as it would any record.
 *
 * The numbering restarts (`reset`) when it has grown past MAX_STRINGS, so a long-running gateway
 * with many sessions does not remember every one of them, and with each new thread.
 */
import type { AuditRecord } from '../event.js';

/** The fields `nums` holds as numbers standing for strings, from its third place on. */
export const STRING_FIELDS = ['grantId', 'grantLabel', 'session', 'server', 'method', 'tool', 'decision', 'rule', 'policyVersion', 'upstreamStatus', 'stream'] as const;
/** Where each value of a record is among its NUMS numbers. */
export const AT = 0;
export const SEQ = 1;
export const STRINGS = 2;
export const LATENCY = 13;
export const RESULT_BYTES = 14;
/** The lengths in `text` of: request id, reason, error, arguments JSON, hash, prevHash. */
export const TEXT_LENGTHS = 15;
export const NUMS = 21;
/** Strings remembered before the numbering restarts. */
const MAX_STRINGS = 50_000;

export interface WireSlice {
  readonly reset: boolean;
  readonly strings: string[];
  readonly nums: Float64Array;
  readonly text: string;
  readonly raw: Array<[number, AuditRecord]> | undefined;
  readonly count: number;
}

/** The main thread's side: numbers the strings it sends. One per writer thread. */
export class WireEncoder {
  private ids = new Map<string, number>();
  private reset = false;
  private fresh: string[] = [];
  /** Per field, the last string seen and its number: consecutive records often share them (the stream always). */
  private readonly lastText: Array<string | null> = Array(STRING_FIELDS.length).fill(null);
  private readonly lastId: number[] = Array(STRING_FIELDS.length).fill(0);

  /** `records[from..to)` as a slice; `first` when it starts a batch (its first prevHash is always sent). */
  encode(records: readonly AuditRecord[], from: number, to: number, first: boolean): WireSlice {
    if (this.ids.size > MAX_STRINGS) {
      this.ids = new Map();
      this.lastText.fill(null);
      this.reset = true;
    }
    const count = to - from;
    const nums = new Float64Array(count * NUMS);
    let text = '';
    let raw: Array<[number, AuditRecord]> | undefined;
    const before = first ? undefined : records[from - 1];
    let prevHash: unknown = before !== undefined && fits(before) ? before.hash : undefined;
    for (let k = 0; k < count; k++) {
      const r = records[from + k]!;
      const args = fits(r) ? argumentsJson(r.arguments) : false;
      if (args === false) {
        (raw ??= []).push([k, r]);
        // The record after it always carries its prevHash.
        prevHash = undefined;
        continue;
      }
      const n = k * NUMS;
      nums[n + AT] = r.at;
      nums[n + SEQ] = r.seq;
      nums[n + STRINGS] = this.id(0, r.grantId);
      nums[n + STRINGS + 1] = this.id(1, r.grantLabel);
      nums[n + STRINGS + 2] = this.id(2, r.session);
      nums[n + STRINGS + 3] = this.id(3, r.server);
      nums[n + STRINGS + 4] = this.id(4, r.method);
      nums[n + STRINGS + 5] = this.id(5, r.tool);
      nums[n + STRINGS + 6] = this.id(6, r.decision);
      nums[n + STRINGS + 7] = this.id(7, r.rule);
      nums[n + STRINGS + 8] = this.id(8, r.policyVersion);
      nums[n + STRINGS + 9] = this.id(9, r.upstreamStatus);
      nums[n + STRINGS + 10] = this.id(10, r.stream);
      nums[n + LATENCY] = r.latencyMs ?? NaN;
      nums[n + RESULT_BYTES] = r.resultBytes ?? NaN;
      const t = n + TEXT_LENGTHS;
      nums[t] = r.requestId === null ? -1 : r.requestId.length;
      nums[t + 1] = r.reason === null ? -1 : r.reason.length;
      nums[t + 2] = r.error === null ? -1 : r.error.length;
      nums[t + 3] = args === null ? -1 : args.length;
      nums[t + 4] = r.hash.length;
      const samePrev = r.prevHash === prevHash;
      nums[t + 5] = samePrev ? -1 : r.prevHash.length;
      text += (r.requestId ?? '') + (r.reason ?? '') + (r.error ?? '') + (args ?? '') + r.hash + (samePrev ? '' : r.prevHash);
      prevHash = r.hash;
    }
    const slice: WireSlice = { reset: this.reset, strings: this.fresh, nums, text, raw, count };
    this.reset = false;
    this.fresh = [];
    return slice;
  }

  /**
   * Forgets every number given: the next slice starts the numbering again. For when a slice could
   * not be sent, so that the strings it numbered are not taken to be known on the other side.
   */
  restart(): void {
    this.ids = new Map();
    this.lastText.fill(null);
    this.fresh = [];
    this.reset = true;
  }

  private id(field: number, s: string | null): number {
    if (s === null) return 0;
    if (s === this.lastText[field]) return this.lastId[field]!;
    let id = this.ids.get(s);
    if (id === undefined) {
      id = this.ids.size + 1;
      this.ids.set(s, id);
      this.fresh.push(s);
    }
    this.lastText[field] = s;
    this.lastId[field] = id;
    return id;
  }
}

/** The arguments as JSON, null when absent; false when they cannot be serialised (the record then crosses as it is, and the thread rejects its batch with JSON's error). */
function argumentsJson(args: unknown): string | null | false {
  if (args === undefined) return null;
  try {
    return JSON.stringify(args) ?? null;
  } catch {
    return false;
  }
}

/** The fields of a record, checked as the encoder needs them: anything else crosses as it is. */
function fits(r: AuditRecord): boolean {
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.at === 'number' &&
    typeof r.seq === 'number' &&
    typeof r.hash === 'string' &&
    typeof r.prevHash === 'string' &&
    typeof r.stream === 'string' &&
    typeof r.server === 'string' &&
    typeof r.method === 'string' &&
    typeof r.decision === 'string' &&
    stringOrNull(r.grantId) &&
    stringOrNull(r.grantLabel) &&
    stringOrNull(r.session) &&
    stringOrNull(r.tool) &&
    stringOrNull(r.rule) &&
    stringOrNull(r.policyVersion) &&
    stringOrNull(r.upstreamStatus) &&
    stringOrNull(r.requestId) &&
    stringOrNull(r.reason) &&
    stringOrNull(r.error) &&
    numberOrNull(r.latencyMs) &&
    numberOrNull(r.resultBytes)
  );
}

const stringOrNull = (v: unknown): boolean => v === null || typeof v === 'string';
const numberOrNull = (v: unknown): boolean => v === null || typeof v === 'number';

/**
 * The strings a thread was sent, by number, and beside each the id the writer gave it in the
 * database (0 until it has one; see AuditRecordWriter).
 */
export interface StringTable {
  readonly texts: string[];
  readonly ids: number[];
}

/**
 * The writer thread's side. The strings a slice refers to are bound to it when it arrives
 * (`receive`), since a later slice may restart the numbering before this one is written.
 */
export class WireDecoder {
  private table: StringTable = { texts: [''], ids: [0] };

  receive(slice: WireSlice): ReceivedSlice {
    if (slice.reset) this.table = { texts: [''], ids: [0] };
    for (const s of slice.strings) {
      this.table.texts.push(s);
      this.table.ids.push(0);
    }
    return { slice, table: this.table };
  }
}

export interface ReceivedSlice {
  readonly slice: WireSlice;
  readonly table: StringTable;
}
