/**
 * What pruning must do on every queryable audit sink (SQLite, PostgreSQL), run by each sink's
 * tests against a real store: delete each stream's oldest records behind a signed checkpoint,
 * keep what a cut would leave a hole before, take several steps while the gateway writes on, and
 * leave a log that verifies after every step. How a tamperer is caught differs by medium and
 * stays with each sink's tests.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { chain, type AuditRecord } from '../event.js';
import { checkpointSignatureValid, type AuditSigningKey } from '../signing.js';
import type { AuditStore } from '../store.js';
import { verifyChain } from '../verify.js';
import { A, B, allRecords, event, streamOf, T0 } from './records.fixture.js';

/** A sink holding `records`, and how to let it go at the end of a test. */
export type OpenWith = (records: readonly AuditRecord[]) => Promise<{ sink: AuditStore; release(): Promise<void> }>;

export function pruneContract(sinkWith: OpenWith, key: AuditSigningKey): void {
  const trusted = { publicKeys: [key.publicKey] };
  const withSink = async (records: readonly AuditRecord[], test: (sink: AuditStore) => Promise<void>): Promise<void> => {
    const { sink, release } = await sinkWith(records);
    try {
      await test(sink);
    } finally {
      await release();
    }
  };

  it('deletes records before the cut stream by stream, leaves a checkpoint for each, and the log still verifies', async () => {
    const a = streamOf(A, 20);
    const b = streamOf(B, 10, (k) => T0 + k * 3_000);
    await withSink([...a, ...b], async (sink) => {
      // Before T0 + 8.5 s: records 1–8 of A (1 s apart) and 1–2 of B (3 s apart).
      assert.deepEqual(await sink.prune(T0 + 8_500, key), { records: 10, streams: 2 });
      assert.deepEqual(
        (await sink.checkpoints()).map(({ stream, seq, hash, at, keyId }) => ({ stream, seq, hash, at, keyId })),
        [
          { stream: A, seq: 8, hash: a[7]!.hash, at: a[7]!.at, keyId: key.keyId },
          { stream: B, seq: 2, hash: b[1]!.hash, at: b[1]!.at, keyId: key.keyId },
        ],
      );
      for (const cp of await sink.checkpoints()) assert.ok(checkpointSignatureValid(key.publicKey, cp), `the checkpoint of ${cp.stream} is signed`);
      assert.deepStrictEqual(await allRecords(sink), [...a.slice(8), ...b.slice(2)]);
      assert.deepEqual(await verifyChain(sink.iterate(), { checkpoints: await sink.checkpoints(), ...trusted }), { ok: true, records: 20, streams: 2, duplicates: 0 });
      assert.deepEqual(await sink.verify(trusted), { ok: true, records: 20, streams: 2, duplicates: 0 });
      // Without its checkpoints, the pruned log reads as records deleted.
      assert.equal((await verifyChain(sink.iterate())).ok, false);
      // Pruning again at the same cut changes nothing; a later cut moves the checkpoints on.
      assert.deepEqual(await sink.prune(T0 + 8_500, key), { records: 0, streams: 0 });
      assert.deepEqual(await sink.prune(T0 + 12_500, key), { records: 6, streams: 2 });
      assert.deepEqual((await sink.checkpoints()).map((c) => [c.stream, c.seq]), [[A, 12], [B, 4]]);
      assert.equal((await sink.verify(trusted)).ok, true);
    });
  });

  it('prunes a whole stream down to its checkpoint, and the stream verifies as its gateway writes on', async () => {
    const records = streamOf(A, 12);
    await withSink(records.slice(0, 10), async (sink) => {
      assert.deepEqual(await sink.prune(T0 + 60_000, key), { records: 10, streams: 1 });
      assert.deepEqual(await allRecords(sink), []);
      assert.deepEqual(await sink.verify(trusted), { ok: true, records: 0, streams: 0, duplicates: 0 });
      await sink.write(records.slice(10));
      assert.deepEqual(await sink.verify(trusted), { ok: true, records: 2, streams: 1, duplicates: 0 });
    });
  });

  it('keeps an old record that follows a newer one (a clock stepped back), since deleting it would leave a hole', async () => {
    const times = [1, 2, 9, 3, 4, 10];
    await withSink(streamOf(A, 6, (k) => T0 + times[k - 1]! * 1_000), async (sink) => {
      assert.deepEqual(await sink.prune(T0 + 5_500, key), { records: 2, streams: 1 });
      assert.deepEqual((await allRecords(sink)).map((r) => r.seq), [3, 4, 5, 6]);
      assert.equal((await sink.verify(trusted)).ok, true);
    });
  });

  it('prunes a long stream in several steps while the gateway writes on, the log verifying throughout', async () => {
    const records = streamOf(A, 12_000, (k) => T0 + k);
    await withSink(records, async (sink) => {
      const pruning = sink.prune(T0 + 11_000.5, key);
      // Steps alternate with the event loop: a write lands between them and the chain holds.
      const more = chain(A, records[records.length - 1], event(12_001, T0 + 12_001));
      await sink.write([more]);
      assert.equal((await sink.verify(trusted)).ok, true, 'between steps');
      assert.deepEqual(await pruning, { records: 11_000, streams: 1 });
      assert.deepEqual((await sink.checkpoints()).map(({ stream, seq, hash }) => ({ stream, seq, hash })), [{ stream: A, seq: 11_000, hash: records[10_999]!.hash }]);
      assert.deepEqual(await sink.verify(trusted), { ok: true, records: 1_001, streams: 1, duplicates: 0 });
    });
  });
}
