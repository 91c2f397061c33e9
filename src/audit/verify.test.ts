import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { chain, recordHash, type AuditEventInput, type AuditRecord } from './event.js';
import { keyFingerprint, signCheckpoint, type AuditSigningKey, type CheckpointContent } from './signing.js';
import { verifyChain, type AuditCheckpoint, type VerifyResult } from './verify.js';

const S1 = '3f2a9c1d-5b7e-4f0a-9d2c-8e1f6a4b3c21';
const S2 = 'b81c04e2-7a19-4c55-a0d3-2f9e6b7c8d10';
const S3 = 'short';

function event(i: number): AuditEventInput {
  return {
    at: 1_700_000_000_000 + i * 10,
    requestId: String(i),
    grantId: `g${i % 3}`,
    grantLabel: 'ci bot',
    session: 's1',
    server: 'crm',
    method: 'tools/call',
    tool: i % 2 === 0 ? 'search' : 'update_contact',
    decision: i % 5 === 0 ? 'deny' : 'allow',
    rule: i % 5 === 0 ? '/tools/update_contact/deny_if/0' : null,
    reason: i % 5 === 0 ? 'outside business hours' : null,
    policyVersion: 'v7',
    arguments: { keys: ['id', 'name'], sha256: 'ab'.repeat(32) },
    upstreamStatus: i % 5 === 0 ? null : 'ok',
    latencyMs: i % 5 === 0 ? null : 3 + i,
    resultBytes: i % 5 === 0 ? null : 120 + i,
    error: null,
  };
}

const T = 1_700_000_000_000;
const PRUNED_AT = T + 86_400_000;

function newKey(): AuditSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { keyId: keyFingerprint(publicKey), privateKey, publicKey };
}
/** The audit signing key the tests trust, and another one. */
const KEY = newKey();
const OTHER = newKey();

/** `cp` as the gateway's prune writes it: signed by `key`. */
function signed(cp: CheckpointContent, key: AuditSigningKey = KEY): AuditCheckpoint {
  const { stream, seq, hash, at, prunedAt } = cp;
  return { stream, seq, hash, at, prunedAt, ...signCheckpoint(key, { stream, seq, hash, at, prunedAt }) };
}

/** Records 1..n of `stream`, correctly chained. */
function streamOf(stream: string, n: number): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (let i = 1; i <= n; i++) out.push(chain(stream, out[out.length - 1], event(i)));
  return out;
}

/** What a forger who knows the algorithm writes: the record with `patch` and a hash that fits it. */
function rehashed(r: AuditRecord, patch: Partial<AuditRecord> = {}): AuditRecord {
  const { hash: _old, ...rest } = { ...r, ...patch };
  return { ...rest, hash: recordHash(rest) };
}

/** Every record from index `from` on, renumbered by `by` (their hashes left as written). */
function renumbered(records: AuditRecord[], from: number, by: number): AuditRecord[] {
  return records.map((r, i) => (i >= from ? { ...r, seq: r.seq + by } : r));
}

function failure(result: VerifyResult): Extract<VerifyResult, { ok: false }> {
  assert.equal(result.ok, false, `expected a failure, got ${JSON.stringify(result)}`);
  return result as Extract<VerifyResult, { ok: false }>;
}

async function* slowly<T>(items: readonly T[]): AsyncGenerator<T> {
  for (const item of items) {
    await new Promise((resolve) => setImmediate(resolve));
    yield item;
  }
}

describe('verifyChain on an untouched log', () => {
  it('passes interleaved streams and counts their records and streams', async () => {
    const a = streamOf(S1, 20);
    const b = streamOf(S2, 7);
    const c = streamOf(S3, 3);
    const mixed: AuditRecord[] = [];
    for (let i = 0; i < 20; i++) mixed.push(...[a[i], b[i], c[i]].filter((r): r is AuditRecord => r !== undefined));
    assert.deepEqual(await verifyChain(mixed), { ok: true, records: 30, streams: 3, duplicates: 0 });
  });

  it('reads an async iterable as it reads an array', async () => {
    assert.deepEqual(await verifyChain(slowly(streamOf(S1, 5))), { ok: true, records: 5, streams: 1, duplicates: 0 });
  });

  it('passes an empty log', async () => {
    assert.deepEqual(await verifyChain([]), { ok: true, records: 0, streams: 0, duplicates: 0 });
  });
});

describe('verifyChain names an edited record', () => {
  it('whose content was changed, in a sentence with the stream, the record and the problem', async () => {
    const log = streamOf(S1, 10);
    log[4] = { ...log[4]!, reason: 'approved by the CFO' };
    const f = failure(await verifyChain(log));
    assert.deepEqual(f, {
      ok: false,
      problem: 'edited',
      stream: S1,
      seq: 5,
      message: 'stream 3f2a9c1d…, record 5: its content does not match its hash (edited)',
    });
  });

  it('whose content was changed and its hash recomputed, found through the record after it', async () => {
    const log = streamOf(S1, 10);
    log[4] = rehashed(log[4]!, { tool: 'delete_everything' });
    const f = failure(await verifyChain(log));
    assert.equal(f.problem, 'edited');
    assert.equal(f.seq, 5);
    assert.match(f.message, /record 5: it was changed and its hash recomputed/);
  });

  it('whose number alone was changed, naming the number it was written with', async () => {
    const log = streamOf(S1, 10);
    log[4] = { ...log[4]!, seq: 9 };
    const f = failure(await verifyChain(log));
    assert.deepEqual([f.problem, f.seq], ['edited', 9]);
    assert.match(f.message, /written as record 5: its number was changed/);
  });
});

describe('verifyChain names deleted records', () => {
  it('by the first missing number when one record is gone', async () => {
    const log = streamOf(S1, 10);
    log.splice(4, 1);
    const f = failure(await verifyChain(log));
    assert.deepEqual(f, {
      ok: false,
      problem: 'deleted',
      stream: S1,
      seq: 5,
      message: 'stream 3f2a9c1d…, record 5: missing: record 6 follows record 4 (deleted)',
    });
  });

  it('as a range when several are gone, the first record of the stream included', async () => {
    const log = streamOf(S1, 10);
    assert.match(failure(await verifyChain([...log.slice(0, 4), ...log.slice(7)])).message, /records 5–7: missing: record 8 follows record 4 \(deleted\)/);
    const f = failure(await verifyChain(log.slice(2)));
    assert.deepEqual([f.problem, f.seq], ['deleted', 1]);
    assert.match(f.message, /records 1–2: missing: record 3 follows the start of the stream/);
  });

  it('when the records after the deleted one were renumbered to close the gap', async () => {
    const log = streamOf(S1, 10);
    const closed = renumbered([...log.slice(0, 4), ...log.slice(5)], 4, -1);
    const f = failure(await verifyChain(closed));
    assert.deepEqual([f.problem, f.seq], ['deleted', 5]);
    assert.match(f.message, /record 5: missing: the records after it were renumbered to close the gap \(record 6 is now 5\)/);
  });
});

describe('verifyChain names an inserted record', () => {
  it('when a forged record is chained in with a correct hash and the records after it renumbered', async () => {
    const log = streamOf(S1, 10);
    const forged = chain(S1, log[3], { ...event(99), tool: 'export_all' });
    const tampered = [...log.slice(0, 4), forged, ...renumbered(log.slice(4), 0, 1)];
    const f = failure(await verifyChain(tampered));
    assert.deepEqual([f.problem, f.seq], ['inserted', 5]);
    assert.match(f.message, /record 5: it does not belong to the chain: record 6 \(written as 5\) follows record 4/);
  });

  it('when the forged record has a number of its own but no hash that fits', async () => {
    const log = streamOf(S1, 10);
    const forged = { ...log[4]!, tool: 'export_all', hash: 'f'.repeat(64) };
    const f = failure(await verifyChain([...log.slice(0, 4), forged, ...log.slice(4)]));
    assert.deepEqual([f.problem, f.seq], ['inserted', 5]);
    assert.match(f.message, /record 5: it does not belong to the chain: record 5 follows record 4/);
  });

  it('when two different records carry the same number', async () => {
    const log = streamOf(S1, 10);
    const forged = rehashed(log[4]!, { reason: 'forged' });
    const f = failure(await verifyChain([...log.slice(0, 5), forged, ...log.slice(5)]));
    assert.deepEqual([f.problem, f.seq], ['inserted', 5]);
    assert.match(f.message, /two different records are numbered 5/);
  });
});

describe('verifyChain names reordered records', () => {
  it('when a record arrives before one that precedes it', async () => {
    const log = streamOf(S1, 10);
    const f = failure(await verifyChain([...log.slice(0, 3), log[4]!, log[3]!, ...log.slice(5)]));
    assert.deepEqual(f, {
      ok: false,
      problem: 'reordered',
      stream: S1,
      seq: 5,
      message: 'stream 3f2a9c1d…, record 5: it comes before record 4: records are out of order (reordered)',
    });
  });

  it('when two neighbours swapped their numbers', async () => {
    const log = streamOf(S1, 10);
    const swapped = [...log.slice(0, 3), { ...log[4]!, seq: 4 }, { ...log[3]!, seq: 5 }, ...log.slice(5)];
    const f = failure(await verifyChain(swapped));
    assert.deepEqual([f.problem, f.seq], ['reordered', 4]);
    assert.match(f.message, /record 4: it holds record 5, moved here/);
  });

  it('when two distant records swapped their numbers', async () => {
    const log = streamOf(S1, 20);
    const swapped = log.map((r) => (r.seq === 4 ? { ...log[14]!, seq: 4 } : r.seq === 15 ? { ...log[3]!, seq: 15 } : r));
    const f = failure(await verifyChain(swapped));
    assert.deepEqual([f.problem, f.seq], ['reordered', 4]);
    assert.match(f.message, /record 4: it holds record 15, moved here/);
  });

  it('when a number goes backwards without repeating the records before', async () => {
    const log = streamOf(S1, 10);
    const other = rehashed(log[1]!, { reason: 'late' });
    const f = failure(await verifyChain([...log.slice(0, 6), other, ...log.slice(6)]));
    assert.deepEqual([f.problem, f.seq], ['reordered', 2]);
    assert.match(f.message, /record 2: it comes after record 6/);
  });
});

describe('verifyChain with repeated records (the writer delivers at least once)', () => {
  it('passes over a record written twice in a row and counts it', async () => {
    const log = streamOf(S1, 10);
    assert.deepEqual(await verifyChain([...log.slice(0, 5), log[4]!, ...log.slice(5)]), { ok: true, records: 10, streams: 1, duplicates: 1 });
  });

  it('passes over a batch written again after part of it was, other streams interleaved', async () => {
    const log = streamOf(S1, 10);
    const other = streamOf(S2, 4);
    const mixed = [...log.slice(0, 6), other[0]!, log[3]!, other[1]!, log[4]!, log[5]!, other[2]!, ...log.slice(6), other[3]!];
    assert.deepEqual(await verifyChain(mixed), { ok: true, records: 14, streams: 2, duplicates: 3 });
  });

  it("reports them as duplicated when asked to with duplicates: 'report'", async () => {
    const log = streamOf(S1, 10);
    const once = failure(await verifyChain([...log.slice(0, 5), log[4]!, ...log.slice(5)], { duplicates: 'report' }));
    assert.equal(once.message, 'stream 3f2a9c1d…, record 5: written a second time after record 5 (duplicated)');
    const run = failure(await verifyChain([...log.slice(0, 6), ...log.slice(3)], { duplicates: 'report' }));
    assert.deepEqual([run.problem, run.seq], ['duplicated', 4]);
    assert.match(run.message, /records 4–6: written a second time after record 6/);
  });

  it('never passes over a repeat whose content was changed, even with the same hash', async () => {
    const log = streamOf(S1, 10);
    const f = failure(await verifyChain([...log.slice(0, 5), { ...log[4]!, tool: 'x' }, ...log.slice(5)]));
    assert.deepEqual([f.problem, f.seq], ['inserted', 5]);
  });

  it('never passes over a run going back that does not repeat up to the last verified record', async () => {
    const log = streamOf(S1, 10);
    const f = failure(await verifyChain([...log.slice(0, 6), log[3]!, log[4]!, ...log.slice(6)]));
    assert.deepEqual([f.problem, f.seq], ['reordered', 4]);
  });
});

describe('verifyChain with checkpoints of pruned records', () => {
  const log = streamOf(S1, 10);
  const checkpoint = signed({ stream: S1, seq: 4, hash: log[3]!.hash, at: log[3]!.at, prunedAt: PRUNED_AT });
  const publicKeys = [KEY.publicKey];

  it('starts the stream right after its checkpoint', async () => {
    assert.deepEqual(await verifyChain(log.slice(4), { checkpoints: [checkpoint], publicKeys }), { ok: true, records: 6, streams: 1, duplicates: 0 });
  });

  it('without the checkpoint, reports the pruned records as deleted', async () => {
    const f = failure(await verifyChain(log.slice(4), { publicKeys }));
    assert.deepEqual([f.problem, f.seq], ['deleted', 1]);
  });

  it('accepts a stream pruned to its checkpoint and nothing after it', async () => {
    assert.deepEqual(await verifyChain(streamOf(S2, 3), { checkpoints: [checkpoint], publicKeys }), { ok: true, records: 3, streams: 1, duplicates: 0 });
  });

  it('reports records deleted right after the checkpoint', async () => {
    const f = failure(await verifyChain(log.slice(6), { checkpoints: [checkpoint], publicKeys }));
    assert.deepEqual([f.problem, f.seq], ['deleted', 5]);
    assert.match(f.message, /records 5–6: missing: record 7 follows the checkpoint \(record 4, pruned\)/);
  });

  it('reports a checkpoint whose hash the first remaining record does not carry', async () => {
    const f = failure(await verifyChain(log.slice(4), { checkpoints: [signed({ ...checkpoint, hash: 'e'.repeat(64) })], publicKeys }));
    assert.deepEqual([f.problem, f.seq], ['checkpoint', 5]);
  });

  it('reports a record the checkpoint says was pruned', async () => {
    const f = failure(await verifyChain(log.slice(2), { checkpoints: [checkpoint], publicKeys }));
    assert.deepEqual([f.problem, f.seq], ['checkpoint', 3]);
    assert.match(f.message, /record 3: it is still present although the checkpoint says records up to 4 were pruned/);
  });

  it('counts the furthest of two checkpoints for one stream', async () => {
    const older = signed({ stream: S1, seq: 2, hash: log[1]!.hash, at: log[1]!.at, prunedAt: PRUNED_AT });
    assert.equal((await verifyChain(log.slice(4), { checkpoints: [older, checkpoint], publicKeys })).ok, true);
    assert.equal((await verifyChain(log.slice(4), { checkpoints: [checkpoint, older], publicKeys })).ok, true);
  });

  it('refuses a checkpoint that is not one, even signed', async () => {
    await assert.rejects(verifyChain(log, { checkpoints: [signed({ stream: S1, seq: 0, hash: 'x', at: 0, prunedAt: 0 })], publicKeys }), TypeError);
  });
});

describe('verifyChain checks that each checkpoint is signed off', () => {
  const log = streamOf(S1, 10);
  const content = { stream: S1, seq: 4, hash: log[3]!.hash, at: log[3]!.at, prunedAt: PRUNED_AT };
  const publicKeys = [KEY.publicKey];

  it('names the stream whose checkpoint is not signed (forged, or written before checkpoints were signed)', async () => {
    const f = failure(await verifyChain(log.slice(4), { checkpoints: [{ ...content, keyId: null, signature: null }], publicKeys }));
    assert.deepEqual(f, {
      ok: false,
      problem: 'checkpoint',
      stream: S1,
      seq: 4,
      message: `stream 3f2a9c1d…, the checkpoint (record 4, pruned): it is not signed by the audit signing key ${KEY.keyId}: the records before it may have been removed by hand (or it was written before checkpoints were signed) (checkpoint)`,
    });
  });

  it('names the stream whose checkpoint was forged with another key, and that key', async () => {
    const f = failure(await verifyChain(log.slice(4), { checkpoints: [signed(content, OTHER)], publicKeys }));
    assert.deepEqual([f.problem, f.stream, f.seq], ['checkpoint', S1, 4]);
    assert.match(f.message, new RegExp(`^stream 3f2a9c1d…, the checkpoint \\(record 4, pruned\\): it is signed by key ${OTHER.keyId}, not by the audit signing key ${KEY.keyId}: the records before it may have been removed by hand`));
  });

  for (const [field, patch] of [
    ['seq', { seq: 3 }],
    ['hash', { hash: log[2]!.hash }],
    ['at', { at: content.at + 1 }],
    ['prunedAt', { prunedAt: PRUNED_AT + 1 }],
    ['stream', { stream: S2 }],
  ] as const) {
    it(`reports a signed checkpoint whose ${field} was changed after it was signed`, async () => {
      const cp = { ...signed(content), ...patch };
      const f = failure(await verifyChain(log, { checkpoints: [cp], publicKeys }));
      assert.deepEqual([f.problem, f.stream, f.seq], ['checkpoint', cp.stream, cp.seq]);
      assert.match(f.message, new RegExp(`it does not match its signature by the audit signing key ${KEY.keyId}: it was changed after it was signed \\(checkpoint\\)$`));
    });
  }

  it('reports a signature that is not one', async () => {
    const f = failure(await verifyChain(log.slice(4), { checkpoints: [{ ...signed(content), signature: 'not base64 at all!' }], publicKeys }));
    assert.deepEqual([f.problem, f.seq], ['checkpoint', 4]);
  });

  it('checks every checkpoint before any record, even one whose stream has no records left', async () => {
    const gone = { stream: S2, seq: 9, hash: 'd'.repeat(64), at: T, prunedAt: PRUNED_AT, keyId: null, signature: null };
    const f = failure(await verifyChain(log.slice(4), { checkpoints: [signed(content), gone], publicKeys }));
    assert.deepEqual([f.problem, f.stream, f.seq], ['checkpoint', S2, 9]);
  });

  it('accepts checkpoints signed by any of the keys given (gateways with a key each, a key replaced)', async () => {
    const b = streamOf(S2, 6);
    const other = signed({ stream: S2, seq: 2, hash: b[1]!.hash, at: b[1]!.at, prunedAt: PRUNED_AT }, OTHER);
    const both = { checkpoints: [signed(content), other], publicKeys: [OTHER.publicKey, KEY.publicKey] };
    assert.deepEqual(await verifyChain([...log.slice(4), ...b.slice(2)], both), { ok: true, records: 10, streams: 2, duplicates: 0 });
  });

  it('takes a private key for its public half', async () => {
    assert.equal((await verifyChain(log.slice(4), { checkpoints: [signed(content)], publicKeys: [KEY.privateKey] })).ok, true);
  });

  it('calls a log with checkpoints and no key to check them with unverifiable, never a pass', async () => {
    const f = failure(await verifyChain(log.slice(4), { checkpoints: [signed(content)] }));
    assert.deepEqual(f, {
      ok: false,
      problem: 'unverifiable',
      stream: S1,
      seq: 4,
      message: "stream 3f2a9c1d…, the checkpoint (record 4, pruned): a stream was pruned, and no public key of the audit signing key was given to check the checkpoints' signatures with (unverifiable)",
    });
    assert.equal(failure(await verifyChain(log.slice(4), { checkpoints: [signed(content)], publicKeys: [] })).problem, 'unverifiable');
  });

  it('needs no key for a log without checkpoints', async () => {
    assert.deepEqual(await verifyChain(log), { ok: true, records: 10, streams: 1, duplicates: 0 });
  });
});

describe('verifyChain reports', () => {
  it('the first bad record in the order records arrive, whole stream id in the result', async () => {
    const a = streamOf(S1, 6);
    const b = streamOf(S2, 6);
    a[4] = { ...a[4]!, tool: 'x' };
    b[2] = { ...b[2]!, tool: 'y' };
    const mixed = a.flatMap((r, i) => [r, b[i]!]);
    const f = failure(await verifyChain(mixed));
    assert.deepEqual([f.stream, f.seq], [S2, 3]);
    assert.match(f.message, /^stream b81c04e2…, record 3:/);
  });

  it('a short stream id in full', async () => {
    const log = streamOf(S3, 3);
    log[1] = { ...log[1]!, error: 'boom' };
    assert.match(failure(await verifyChain(log)).message, /^stream short, record 2:/);
  });

  it('a record without a usable seq or hash as malformed', async () => {
    const log = streamOf(S1, 3);
    const bad = [{ ...log[0]!, seq: 1.5 }, { ...log[0]!, hash: 'ABC' }, { ...log[0]!, stream: '' }];
    for (const r of bad) assert.equal(failure(await verifyChain([r as AuditRecord])).problem, 'malformed');
  });

  it('a content change that fits no other story as edited', async () => {
    const log = streamOf(S1, 10);
    log[4] = { ...log[4]!, prevHash: 'c'.repeat(64), tool: 'z' };
    const f = failure(await verifyChain(log));
    assert.deepEqual([f.problem, f.seq], ['edited', 5]);
    assert.match(f.message, /its content does not match its hash, and it does not follow record 4/);
  });

  it('a first record that does not start from the genesis hash as broken', async () => {
    const log = streamOf(S1, 3);
    const f = failure(await verifyChain([rehashed(log[0]!, { prevHash: 'a'.repeat(64) }), ...log.slice(1)]));
    assert.deepEqual([f.problem, f.seq], ['broken', 1]);
    assert.match(f.message, /record 1: it is the first record of its stream, yet its prevHash is not the genesis hash/);
  });

  it('an intact record that follows nothing it can see as broken', async () => {
    const log = streamOf(S1, 10);
    const f = failure(await verifyChain([...log.slice(0, 9), rehashed(log[9]!, { prevHash: 'd'.repeat(64) })]));
    assert.deepEqual([f.problem, f.seq], ['broken', 10]);
  });
});

describe('verifyChain reading its source', () => {
  it('stops a little past the first problem and closes the source', async () => {
    const log = streamOf(S1, 3_000);
    log[9] = { ...log[9]!, tool: 'x' };
    let pulled = 0;
    let closed = false;
    async function* source(): AsyncGenerator<AuditRecord> {
      try {
        for (const r of log) {
          pulled++;
          yield r;
        }
      } finally {
        closed = true;
      }
    }
    assert.equal(failure(await verifyChain(source())).seq, 10);
    assert.equal(closed, true);
    assert.ok(pulled < log.length, `read ${pulled} of ${log.length}`);
  });
});
