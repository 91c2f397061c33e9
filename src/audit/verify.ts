/**
 * Checks an audit log's hash chains and, when one is broken, says where and how in words an
 * operator can act on: "stream 3f2a9c1d…, record 17: its content does not match its hash
 * (edited)".
 *
 * Every stream is checked on its own: records of several streams may arrive interleaved, each
 * stream's in seq order. Within a stream, record n must be numbered one past the record before it
 * (1 for the first, or one past a checkpoint, below), carry that record's hash as its prevHash,
 * and carry as its hash the hash of its own content (recordHash). The first record that does not
 * is reported, and nothing after it is judged: once a chain is broken, later records cannot be
 * told apart from the damage. Exact repeats of verified records are the exception: the writer
 * delivers at least once, so they are passed over and counted (VerifyOptions.duplicates).
 *
 * Telling the kinds of damage apart. A broken record alone often fits several stories, so the
 * verifier looks at its neighbours: the two records before it (already verified) and up to
 * AHEAD_RECORDS records of the same stream after it. It names a kind only when the evidence
 * proves it, and says "broken" otherwise:
 *
 * | problem      | evidence                                                                           | record named |
 * |--------------|------------------------------------------------------------------------------------|--------------|
 * | `edited`     | the record sits in its place (seq and prevHash fit) but its hash is not that of its content; or its hash fits its content only with another seq (its number was changed) and it follows the record before it; or the next record was chained to a different version of the record before (changed and re-hashed) | the edited one |
 * | `deleted`    | seq jumps past n and the record's prevHash is not the last one's hash (and the missing numbers do not turn up later); or the record's hash fits only a higher seq and nothing later is what its prevHash names (the records after a deletion were renumbered) | the first missing number |
 * | `inserted`   | two records that differ carry the same seq; or a record's successor follows the record before it (it does not belong between them), whether or not the records after it were renumbered | the inserted one |
 * | `reordered`  | seq goes backwards (and is no exact repeat); or seq jumps ahead and the skipped numbers arrive later; or the record's hash fits only another seq and the record its prevHash names is found elsewhere (numbers were swapped) | the first record out of place |
 * | `duplicated` | only with `duplicates: 'report'`: seq goes back and the records from there repeat, intact and chained, up to the last verified one (an append-only sink got a batch twice) | the first repeat |
 * | `checkpoint` | a checkpoint is unsigned, signed by a key not among VerifyOptions.publicKeys, or does not match its signature (checked before any record is read); or a record the checkpoint says was pruned is still present, or the first record after a checkpoint does not follow it | the checkpoint's record; that record |
 * | `unverifiable` | the log has checkpoints but no public key was given to check their signatures: nothing else is judged | the first checkpoint's record |
 * | `broken`     | the record's content is intact but its prevHash names no record in reach (the record before it or this one was replaced, and which cannot be told); or it follows the record before yet skips numbers (a writer's fault) | this record |
 * | `malformed`  | a field the chain needs is missing or of the wrong form (seq not a whole number ≥ 1, a hash not 64 lowercase hex digits) | this record |
 *
 * What no verifier of the chain alone can see: records removed from the end of a stream, a forged
 * record appended at the end with a correctly computed hash, a whole forged stream, or a chain
 * re-hashed from the point of an edit to its end. The chain proves that what is present was not
 * changed in place; anchoring each stream's last hash elsewhere (exported, signed) is what proves
 * that nothing was cut off or rewritten wholesale.
 *
 * Retention: after old records are pruned, a checkpoint `{ stream, seq, hash, at, prunedAt }`
 * (the last pruned record, and when it was pruned) stands in for them. The first remaining record
 * of that stream must then be numbered seq + 1 and carry hash as its prevHash. Whoever can write
 * to the database could delete a stream's first records and write a checkpoint that fits, so a
 * checkpoint counts only if it is signed (signing.ts): the gateway signs every checkpoint it
 * writes with its audit signing key, and verification is given the public half of that key
 * (VerifyOptions.publicKeys), kept where the database's writers cannot change it. Every checkpoint
 * is checked before any record: one that is unsigned, signed by a key not given, or changed after
 * it was signed is a `checkpoint` problem, since the records before it may have been removed by
 * hand. A log with checkpoints and no key to check them with is `unverifiable`, never a pass.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { GENESIS_HASH, recordHash, type AuditRecord } from './event.js';
import { checkpointSignatureValid, keyFingerprint, type SignedCheckpoint } from './signing.js';

/** The last pruned record of a stream: verification of that stream starts right after it. */
export interface AuditCheckpoint extends SignedCheckpoint {
  readonly stream: string;
  /** seq of the last pruned record; the stream's first remaining record must be seq + 1. */
  readonly seq: number;
  /** hash of the last pruned record; the stream's first remaining record must carry it as prevHash. */
  readonly hash: string;
  /** `at` of the last pruned record (ms since the epoch). */
  readonly at: number;
  /** When it was pruned (ms since the epoch). */
  readonly prunedAt: number;
  /** The fingerprint of the audit signing key that signed it; null if unsigned (written by hand, or before checkpoints were signed). */
  readonly keyId: string | null;
  /** Its signature (base64) over signing.ts's checkpointSigningText; null if unsigned. */
  readonly signature: string | null;
}

export type ChainProblem = 'edited' | 'deleted' | 'inserted' | 'reordered' | 'duplicated' | 'checkpoint' | 'broken' | 'malformed' | 'unverifiable';

export type VerifyResult =
  | {
      readonly ok: true;
      /** Records verified (each once: repeats are counted in `duplicates`). */
      readonly records: number;
      /** Streams that had at least one record (a stream pruned to its checkpoint has none). */
      readonly streams: number;
      /** Exact repeats of verified records that were passed over (see VerifyOptions.duplicates). */
      readonly duplicates: number;
    }
  | {
      readonly ok: false;
      readonly problem: ChainProblem;
      /** The stream of the first bad record, in full (the message shortens long ids). */
      readonly stream: string;
      /** The first bad record's seq; for `deleted`, the first missing number. */
      readonly seq: number;
      /** One sentence for an operator: stream, record, what was found, the problem in parentheses. */
      readonly message: string;
    };

export interface VerifyOptions {
  /** Checkpoints of pruned streams; with several for one stream, the furthest counts. Each must be signed by one of publicKeys. */
  readonly checkpoints?: Iterable<AuditCheckpoint>;
  /**
   * The public keys whose signatures make a checkpoint trusted: the audit signing key's (several
   * when gateways sharing a log each have their own, or after the key was replaced). A private
   * key stands for its public half. Without any, a log with checkpoints is `unverifiable`.
   */
  readonly publicKeys?: readonly KeyObject[];
  /**
   * What to do with a proven exact repeat of records already verified (the writer delivers at
   * least once, so an append-only sink may hold a retried batch twice): `skip` (default) passes
   * over it and counts it in `duplicates`; `report` fails with `duplicated`. A repeat that
   * differs in anything, or cannot be proven within AHEAD_RECORDS, is never skipped.
   */
  readonly duplicates?: 'skip' | 'report';
}

/** Same-stream records read past a broken one to tell what happened to it. */
export const AHEAD_RECORDS = 1_024;
/** Records of any stream read past a broken one while looking for AHEAD_RECORDS of its stream. */
const AHEAD_SCAN = 100_000;
/** How far from its seq a record's original number is looked for (2 × this many hashes, on failure only). */
const RENUMBER_WINDOW = 1_024;

const HEX64 = /^[0-9a-f]{64}$/;

/** Where a stream's chain stands: the last verified record, the checkpoint, or the genesis. */
interface Link {
  readonly seq: number;
  readonly hash: string;
  readonly kind: 'genesis' | 'checkpoint' | 'record';
}

interface StreamState {
  last: Link;
  /** The link before `last`, once `last` is a record. */
  before: Link | undefined;
}

const GENESIS: Link = { seq: 0, hash: GENESIS_HASH, kind: 'genesis' };

type Failure = Extract<VerifyResult, { ok: false }>;

/**
 * Verifies `records` (every stream in them) and returns the first problem found, in the order
 * the records arrive, or the counts when there is none. The checkpoints' signatures are checked
 * first: a checkpoint that fails is reported without reading a record. Reads the source once;
 * stops reading it a little past the first problem (see AHEAD_RECORDS) and closes it
 * (`return()`), so a database cursor behind an async iterable is released.
 */
export async function verifyChain(
  records: Iterable<AuditRecord> | AsyncIterable<AuditRecord>,
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const checkpoints = [...(opts.checkpoints ?? [])];
  const unsigned = checkSignatures(checkpoints, opts.publicKeys ?? []);
  if (unsigned !== undefined) return unsigned;
  const anchors = new Map<string, Link>();
  for (const cp of checkpoints) {
    if (typeof cp.stream !== 'string' || !Number.isSafeInteger(cp.seq) || cp.seq < 1 || !HEX64.test(cp.hash)) {
      throw new TypeError(`invalid checkpoint ${JSON.stringify(cp)}: needs a stream, a seq ≥ 1 and a 64-digit hex hash`);
    }
    const had = anchors.get(cp.stream);
    if (had === undefined || cp.seq > had.seq) anchors.set(cp.stream, { seq: cp.seq, hash: cp.hash, kind: 'checkpoint' });
  }
  const allowDuplicates = opts.duplicates !== 'report';

  const source = new Source(records);
  const streams = new Map<string, StreamState>();
  let verified = 0;
  let duplicates = 0;
  try {
    for (;;) {
      let r = source.next();
      if (r instanceof Promise) r = await r;
      if (r === undefined) break;
      const wrong = malformed(r);
      if (wrong !== undefined) return wrong;
      let s = streams.get(r.stream);
      if (s === undefined) {
        s = { last: anchors.get(r.stream) ?? GENESIS, before: undefined };
        streams.set(r.stream, s);
      }
      // The cheap comparisons first: the hash is computed only for a record that sits in its place.
      if (r.seq === s.last.seq + 1 && r.prevHash === s.last.hash && recordHash(r) === r.hash) {
        s.before = s.last;
        s.last = { seq: r.seq, hash: r.hash, kind: 'record' };
        verified++;
        continue;
      }
      if (r.seq <= s.last.seq && s.last.kind === 'record') {
        const repeats = await repeatedRun(source, s.last, r);
        if (repeats > 0 && allowDuplicates) {
          duplicates += repeats;
          continue;
        }
        if (repeats > 0) {
          const label = repeats === 1 ? `record ${r.seq}` : `records ${r.seq}–${s.last.seq}`;
          return fail('duplicated', r.stream, r.seq, label, `written a second time after record ${s.last.seq}`);
        }
      }
      return classify(s, r, await source.peek(r.stream, AHEAD_RECORDS));
    }
  } finally {
    await source.close();
  }
  return { ok: true, records: verified, streams: streams.size, duplicates };
}

/**
 * The first checkpoint not signed by one of `publicKeys`, as a failure: unsigned, signed by
 * another key, or changed since it was signed (its signature no longer matches). Every
 * checkpoint is checked, whether or not its stream has records left: a forged one is evidence
 * either way.
 */
function checkSignatures(checkpoints: readonly AuditCheckpoint[], publicKeys: readonly KeyObject[]): Failure | undefined {
  const first = checkpoints[0];
  if (first === undefined) return undefined;
  const seqOf = (cp: AuditCheckpoint) => (Number.isSafeInteger(cp.seq) ? cp.seq : 0);
  const label = (cp: AuditCheckpoint) => `the checkpoint (record ${String(cp.seq)}, pruned)`;
  if (publicKeys.length === 0) {
    const streams = checkpoints.length === 1 ? 'a stream was' : `${new Set(checkpoints.map((c) => c.stream)).size} streams were`;
    return fail('unverifiable', first.stream, seqOf(first), label(first), `${streams} pruned, and no public key of the audit signing key was given to check the checkpoints' signatures with`);
  }
  const keys = new Map<string, KeyObject>();
  for (const k of publicKeys) keys.set(keyFingerprint(k), k.type === 'private' ? createPublicKey(k) : k);
  const trusted = keys.size === 1 ? `the audit signing key ${[...keys.keys()][0]!}` : `any of the audit signing keys ${[...keys.keys()].join(', ')}`;
  for (const cp of checkpoints) {
    const why = (text: string) => fail('checkpoint', cp.stream, seqOf(cp), label(cp), text);
    if (typeof cp.keyId !== 'string' || typeof cp.signature !== 'string') {
      return why(`it is not signed by ${trusted}: the records before it may have been removed by hand (or it was written before checkpoints were signed)`);
    }
    const key = keys.get(cp.keyId);
    if (key === undefined) {
      return why(`it is signed by key ${cp.keyId}, not by ${trusted}: the records before it may have been removed by hand`);
    }
    if (!checkpointSignatureValid(key, cp)) {
      return why(`it does not match its signature by the audit signing key ${cp.keyId}: it was changed after it was signed`);
    }
  }
  return undefined;
}

/**
 * How many records, starting with `r`, repeat the verified records `r.seq`..`last.seq` exactly
 * (0 if they do not): each intact and chained to the one before, the last carrying `last`'s
 * hash. That last hash covers its prevHash, which is the hash of the one before, and so on back
 * to `r`: so the whole run is, record for record, what was already verified. The repeated
 * records are taken from the source.
 */
async function repeatedRun(source: Source, last: Link, r: AuditRecord): Promise<number> {
  const length = last.seq - r.seq + 1;
  if (length > AHEAD_RECORDS + 1 || recordHash(r) !== r.hash) return 0;
  const rest = length > 1 ? await source.peek(r.stream, length - 1) : [];
  if (rest.length < length - 1) return 0;
  let prev = r;
  for (const x of rest) {
    if (malformed(x) !== undefined || x.seq !== prev.seq + 1 || x.prevHash !== prev.hash || recordHash(x) !== x.hash) return 0;
    prev = x;
  }
  if (prev.hash !== last.hash) return 0;
  source.skip(new Set(rest));
  return length;
}

const isOf = (r: unknown, stream: string): r is AuditRecord => typeof r === 'object' && r !== null && (r as AuditRecord).stream === stream;

/**
 * One pull at a time from a sync or async iterable, without a microtask per record for a sync
 * one, with a look-ahead buffer: records read past the current one to judge it are handed out
 * again by next() unless taken with skip().
 */
class Source {
  private readonly it: Iterator<AuditRecord> | AsyncIterator<AuditRecord>;
  private ended = false;
  private buffer: AuditRecord[] = [];
  private head = 0;

  constructor(records: Iterable<AuditRecord> | AsyncIterable<AuditRecord>) {
    this.it =
      Symbol.asyncIterator in records ? (records as AsyncIterable<AuditRecord>)[Symbol.asyncIterator]() : (records as Iterable<AuditRecord>)[Symbol.iterator]();
  }

  /** The next record, or undefined at the end; a promise of it only when the source is async. */
  next(): AuditRecord | undefined | Promise<AuditRecord | undefined> {
    if (this.head < this.buffer.length) {
      const r = this.buffer[this.head++];
      if (this.head === this.buffer.length) {
        this.buffer = [];
        this.head = 0;
      }
      return r;
    }
    return this.pull();
  }

  private pull(): AuditRecord | undefined | Promise<AuditRecord | undefined> {
    if (this.ended) return undefined;
    const step = this.it.next();
    if (step instanceof Promise) return step.then((s) => this.take(s));
    return this.take(step);
  }

  private take(step: IteratorResult<AuditRecord>): AuditRecord | undefined {
    if (step.done) {
      this.ended = true;
      return undefined;
    }
    return step.value;
  }

  /**
   * Up to `count` of `stream`'s records after the current one, without taking them: reads ahead
   * into the buffer, holding at most AHEAD_SCAN records of all streams.
   */
  async peek(stream: string, count: number): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    for (let i = this.head; i < this.buffer.length && out.length < count; i++) {
      if (isOf(this.buffer[i], stream)) out.push(this.buffer[i]!);
    }
    while (out.length < count && this.buffer.length - this.head < AHEAD_SCAN) {
      let r = this.pull();
      if (r instanceof Promise) r = await r;
      if (r === undefined) break;
      this.buffer.push(r);
      if (isOf(r, stream)) out.push(r);
    }
    return out;
  }

  /** Takes `records` (from peek) out of what next() hands out. */
  skip(records: ReadonlySet<AuditRecord>): void {
    this.buffer = this.buffer.slice(this.head).filter((r) => !records.has(r));
    this.head = 0;
  }

  /** Tells an unfinished source that no more will be read (closes a cursor behind it). */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.it.return?.();
  }
}

function malformed(r: AuditRecord): Failure | undefined {
  const o = r as unknown as Record<string, unknown> | null;
  if (typeof o !== 'object' || o === null) return fail('malformed', '', 0, 'a record', 'it is not an object');
  const stream = typeof o.stream === 'string' ? o.stream : '';
  const seq = typeof o.seq === 'number' && Number.isFinite(o.seq) ? o.seq : 0;
  const label = typeof o.seq === 'number' ? `record ${String(o.seq)}` : 'a record';
  if (stream === '') return fail('malformed', stream, seq, label, 'it names no stream');
  if (!Number.isSafeInteger(o.seq) || (o.seq as number) < 1) return fail('malformed', stream, seq, label, `its seq ${JSON.stringify(o.seq) ?? 'undefined'} is not a whole number ≥ 1`);
  if (typeof o.prevHash !== 'string' || !HEX64.test(o.prevHash)) return fail('malformed', stream, seq, label, 'its prevHash is not 64 lowercase hex digits');
  if (typeof o.hash !== 'string' || !HEX64.test(o.hash)) return fail('malformed', stream, seq, label, 'its hash is not 64 lowercase hex digits');
  return undefined;
}

/**
 * Why `r` does not continue its stream's chain at `s`, given up to AHEAD_RECORDS records of the
 * stream after it. See the table at the top of the file; each branch names the evidence it needs.
 */
function classify(s: StreamState, r: AuditRecord, ahead: readonly AuditRecord[]): Failure {
  const p = s.last;
  const pp = s.before;
  const at = (seq: number, problem: ChainProblem, text: string): Failure => fail(problem, r.stream, seq, `record ${seq}`, text);
  const selfOk = recordHash(r) === r.hash;
  const next = ahead[0];

  // Numbered at or before where the chain stands.
  if (r.seq <= p.seq) {
    if (p.kind === 'checkpoint') {
      return at(r.seq, 'checkpoint', `it is still present although the checkpoint says records up to ${p.seq} were pruned`);
    }
    // Exact repeats were taken out before (repeatedRun): these records differ from the ones verified.
    if (r.seq === p.seq) return at(r.seq, 'inserted', `two different records are numbered ${r.seq}: one of them was inserted`);
    return at(r.seq, 'reordered', `it comes after record ${p.seq}: records are out of order`);
  }

  // Numbered past the next number.
  if (r.seq > p.seq + 1) {
    if (!selfOk) {
      const orig = originalSeq(r);
      if (orig !== undefined && r.prevHash === p.hash) return at(r.seq, 'edited', `it follows ${name(p)} but was written as record ${orig}: its number was changed`);
      if (orig === undefined && r.prevHash === p.hash) return at(r.seq, 'edited', `it follows ${name(p)} but its content does not match its hash`);
    }
    const early = ahead.find((a) => a.seq > p.seq && a.seq < r.seq);
    if (early !== undefined) return at(r.seq, 'reordered', `it comes before record ${early.seq}: records are out of order`);
    if (selfOk && r.prevHash === p.hash) {
      return at(r.seq, 'broken', `it follows ${name(p)} directly, yet was numbered ${r.seq}: the numbers were skipped when the record was written`);
    }
    return deleted(r.stream, p.seq + 1, r.seq - 1, `record ${r.seq} follows ${name(p)}`);
  }

  // Numbered right (p.seq + 1), content intact: the link to the record before is what is wrong.
  if (selfOk) {
    if (pp !== undefined && p.kind === 'record' && r.prevHash === pp.hash) {
      return at(p.seq, 'inserted', `it does not belong to the chain: record ${r.seq} follows ${name(pp)}`);
    }
    if (next !== undefined && next.prevHash === p.hash) {
      return at(r.seq, 'inserted', `it does not belong to the chain: record ${next.seq} follows ${name(p)}`);
    }
    if (p.kind === 'checkpoint') {
      return at(r.seq, 'checkpoint', `its prevHash is not the checkpoint's hash (record ${p.seq}, pruned): the checkpoint or this record was replaced`);
    }
    if (p.kind === 'record' && next !== undefined && next.prevHash === r.hash) {
      return at(p.seq, 'edited', `it was changed and its hash recomputed: record ${r.seq} was chained to a different record ${p.seq}`);
    }
    if (p.kind === 'genesis') return at(r.seq, 'broken', 'it is the first record of its stream, yet its prevHash is not the genesis hash (64 zeros)');
    return at(r.seq, 'broken', `its prevHash is not the hash of ${name(p)}: that record or this one was replaced`);
  }

  // Numbered right, but the hash is not that of the content: first, was only the number changed?
  const orig = originalSeq(r);
  if (orig !== undefined) {
    if (pp !== undefined && p.kind === 'record' && r.prevHash === pp.hash) {
      return at(p.seq, 'inserted', `it does not belong to the chain: record ${r.seq} (written as ${orig}) follows ${name(pp)}, the records after it were renumbered`);
    }
    if (r.prevHash === p.hash) return at(r.seq, 'edited', `it follows ${name(p)} but was written as record ${orig}: its number was changed`);
    if (orig > r.seq) {
      // Renumbered down: either swapped with a later record (the one its prevHash names turns up
      // later), or records before it were deleted and the rest renumbered to close the gap.
      if (ahead.some((a) => a.hash === r.prevHash)) return at(r.seq, 'reordered', `it holds record ${orig}, moved here`);
      const them = orig - 1 === r.seq ? 'it' : 'them';
      return deleted(r.stream, r.seq, orig - 1, `the records after ${them} were renumbered to close the gap (record ${orig} is now ${r.seq})`);
    }
    return at(r.seq, 'reordered', `it holds record ${orig}, moved here`);
  }
  // A forged record whose hash was not even computed: the records after it still follow the one before.
  if (next !== undefined && next.prevHash === p.hash) {
    return at(r.seq, 'inserted', `it does not belong to the chain: record ${next.seq} follows ${name(p)}`);
  }
  if (r.prevHash === p.hash) return at(r.seq, 'edited', 'its content does not match its hash');
  return at(r.seq, 'edited', `its content does not match its hash, and it does not follow ${name(p)}`);
}

/** The seq, within RENUMBER_WINDOW of its own, with which `r`'s hash matches its content: where it was written. */
function originalSeq(r: AuditRecord): number | undefined {
  for (let d = 1; d <= RENUMBER_WINDOW; d++) {
    if (r.seq - d >= 1 && recordHash({ ...r, seq: r.seq - d }) === r.hash) return r.seq - d;
    if (recordHash({ ...r, seq: r.seq + d }) === r.hash) return r.seq + d;
  }
  return undefined;
}

/** Records `first`..`last` (as originally numbered) are gone; the failure names the first. */
function deleted(stream: string, first: number, last: number, why: string): Failure {
  const label = first === last ? `record ${first}` : `records ${first}–${last}`;
  return fail('deleted', stream, first, label, `missing: ${why}`);
}

function name(l: Link): string {
  switch (l.kind) {
    case 'genesis':
      return 'the start of the stream';
    case 'checkpoint':
      return `the checkpoint (record ${l.seq}, pruned)`;
    case 'record':
      return `record ${l.seq}`;
  }
}

/** Long stream ids (UUIDs) are shortened in messages; the result carries the whole id. */
function shortStream(stream: string): string {
  return stream.length > 12 ? `${stream.slice(0, 8)}…` : stream;
}

function fail(problem: ChainProblem, stream: string, seq: number, label: string, text: string): Failure {
  return { ok: false, problem, stream, seq, message: `stream ${shortStream(stream)}, ${label}: ${text} (${problem})` };
}
