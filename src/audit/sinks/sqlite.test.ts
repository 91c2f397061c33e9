import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { chain, recordHash, type AuditDecision, type AuditEventInput, type AuditRecord } from '../event.js';
import { verifyChain } from '../verify.js';
import { AUDIT_SQLITE_SCHEMA_VERSION, openSqliteAuditSink, type SqliteAuditSink } from './sqlite.js';

const T0 = 1_700_000_000_000;
const A = '3f2a9c1d-5b7e-4f0a-9d2c-8e1f6a4b3c21';
const B = 'b81c04e2-7a19-4c55-a0d3-2f9e6b7c8d10';
const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-audit-sqlite-'));
let files = 0;
const freshFile = () => path.join(dir, `audit-${++files}.db`);

after(() => rmSync(dir, { recursive: true, force: true }));

const DECISIONS: AuditDecision[] = ['allow', 'deny', 'rate_limited', 'allow', 'hidden'];

/** Event `i` of a varied traffic: every decision kind here, nulls where the kind has none. */
function event(i: number, at = T0 + i * 1_000): AuditEventInput {
  const decision = DECISIONS[i % DECISIONS.length]!;
  const allowed = decision === 'allow';
  return {
    at,
    requestId: String(i),
    grantId: `grant-${i % 3}`,
    grantLabel: `agent ${i % 3}`,
    session: i % 4 === 0 ? null : `session-${i % 2}`,
    server: i % 2 === 0 ? 'crm' : 'github',
    method: 'tools/call',
    tool: ['search', 'update_contact', 'delete_contact'][i % 3]!,
    decision,
    rule: allowed ? '/tools/search' : '/tools/update_contact/deny_if/0',
    reason: allowed ? null : 'outside business hours',
    policyVersion: 'sha256:0123456789abcdef',
    arguments: { keys: ['id', 'name'], sha256: 'ab'.repeat(32) },
    upstreamStatus: allowed ? 'ok' : null,
    latencyMs: allowed ? 3.25 + i : null,
    resultBytes: allowed ? 100 + i : null,
    error: null,
  };
}

/** Records 1..n of `stream`, chained; `at` of record k is T0 + k s unless `at` says otherwise. */
function streamOf(stream: string, n: number, at: (k: number) => number = (k) => T0 + k * 1_000): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (let k = 1; k <= n; k++) out.push(chain(stream, out[out.length - 1], event(k, at(k))));
  return out;
}

async function all(sink: SqliteAuditSink): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for await (const r of sink.iterate()) out.push(r);
  return out;
}

/** Opens the sink's file the way anyone with access to it could, and runs `tamper` on it. */
function tamperWith(file: string, tamper: (db: Database.Database) => void): void {
  const db = new Database(file);
  try {
    tamper(db);
  } finally {
    db.close();
  }
}

/** A sink on a fresh file holding `records`. */
async function sinkWith(records: readonly AuditRecord[]): Promise<{ sink: SqliteAuditSink; file: string }> {
  const file = freshFile();
  const sink = openSqliteAuditSink(file);
  await sink.write(records);
  return { sink, file };
}

describe('SQLite audit sink: writing and reading back', () => {
  it('writes a batch and reads back every field exactly, nulls, absent arguments and fractions included', async () => {
    const first = event(1, T0);
    const events: AuditEventInput[] = [
      first,
      {
        ...first,
        at: T0 + 5,
        requestId: null,
        grantId: null,
        grantLabel: null,
        session: null,
        method: 'tools/list',
        tool: null,
        rule: null,
        reason: null,
        policyVersion: null,
        arguments: null,
        upstreamStatus: null,
        latencyMs: null,
        resultBytes: null,
        error: null,
      },
      { ...first, at: T0 + 6, method: 'ping', arguments: undefined, latencyMs: 0.125, resultBytes: 0 },
      {
        ...first,
        at: T0 + 7,
        tool: 'créer_fiche',
        reason: 'non, pas « ça » 🚫',
        arguments: { path: '/tmp/ü', nested: { list: [1, 2.5, null, true, 'x'], empty: {} }, big: 12345678901234 },
        upstreamStatus: 'error',
        error: 'upstream error -32603: "internal"',
      },
    ];
    const records: AuditRecord[] = [];
    for (const e of events) records.push(chain(A, records[records.length - 1], e));
    const { sink } = await sinkWith(records);
    try {
      assert.deepStrictEqual(await all(sink), records);
      const page = await sink.query({ order: 'oldest' });
      assert.deepStrictEqual(page.records, records);
      assert.equal(page.next, undefined);
      assert.deepEqual(await sink.verify(), { ok: true, records: 4, streams: 1, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });

  it('keeps a record holding a lone UTF-16 surrogate exactly, so its hash still verifies', async () => {
    // JSON.parse('"\\ud800"') makes such a string out of a client's request; SQLite's UTF-8 text cannot hold it.
    const lone = JSON.parse('"bad \\ud800 name"') as string;
    const records = [chain(A, undefined, { ...event(1), tool: lone, reason: 'fine' })];
    const { sink, file } = await sinkWith(records);
    try {
      assert.deepStrictEqual(await all(sink), records);
      assert.equal((await sink.verify()).ok, true);
      tamperWith(file, (db) => {
        const row = db.prepare<[], { tool: string; record_json: string | null }>('SELECT tool, record_json FROM audit_records').get()!;
        assert.notEqual(row.tool, lone, 'the column holds what UTF-8 can, for queries');
        assert.match(row.tool, /^bad \ufffd+ name$/);
        assert.notEqual(row.record_json, null);
      });
    } finally {
      await sink.close();
    }
  });

  it('resolves an empty batch without writing anything', async () => {
    const { sink } = await sinkWith([]);
    try {
      assert.deepEqual(await all(sink), []);
    } finally {
      await sink.close();
    }
  });

  it('creates the file and its folders in WAL mode, and opening it again changes nothing', async () => {
    const file = path.join(dir, 'nested', 'deeper', 'audit.db');
    const records = streamOf(A, 3);
    const sink = openSqliteAuditSink(file);
    assert.equal(sink.name, `sqlite:${file}`);
    await sink.write(records);
    await sink.close();
    assert.equal(existsSync(file), true);
    const schema = () =>
      tamperWith(file, (db) => {
        assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
        assert.equal(db.pragma('user_version', { simple: true }), AUDIT_SQLITE_SCHEMA_VERSION);
        const names = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE name LIKE 'audit%' ORDER BY name").all();
        assert.deepEqual(
          names.map((n) => n.name),
          ['audit_checkpoints', 'audit_records', 'audit_records_at', 'audit_records_decision', 'audit_records_grant', 'audit_records_tool'],
        );
      });
    schema();
    const again = openSqliteAuditSink(file);
    try {
      assert.deepStrictEqual(await all(again), records);
    } finally {
      await again.close();
    }
    schema();
  });

  it('refuses a file whose schema is newer than this code knows', () => {
    const file = freshFile();
    tamperWith(file, (db) => db.pragma(`user_version = ${AUDIT_SQLITE_SCHEMA_VERSION + 1}`));
    assert.throws(() => openSqliteAuditSink(file), /newer than this gateway's/);
  });

  it('writes none of a batch when one of its records conflicts with a stored one (all or nothing)', async () => {
    const records = streamOf(A, 7);
    const { sink } = await sinkWith(records.slice(0, 5));
    try {
      const other = chain(A, records[1], { ...event(3), reason: 'forged' });
      await assert.rejects(sink.write([records[5]!, records[6]!, other]), /already has a different record 3/);
      assert.deepStrictEqual(await all(sink), records.slice(0, 5));
    } finally {
      await sink.close();
    }
  });

  it('passes over records it already holds with the same hash, since the writer delivers at least once', async () => {
    const records = streamOf(A, 8);
    const { sink } = await sinkWith(records.slice(0, 5));
    try {
      await sink.write(records.slice(3));
      assert.deepStrictEqual(await all(sink), records);
    } finally {
      await sink.close();
    }
  });

  it('rejects a write once closed, and closing twice is harmless', async () => {
    const { sink } = await sinkWith([]);
    await sink.close();
    await sink.close();
    await assert.rejects(sink.write(streamOf(A, 1)));
  });

  it('reads :memory: as it reads a file', async () => {
    const sink = openSqliteAuditSink(':memory:');
    try {
      const records = streamOf(A, 3);
      await sink.write(records);
      assert.equal(sink.name, 'sqlite::memory:');
      assert.deepStrictEqual(await all(sink), records);
      assert.equal((await sink.verify()).ok, true);
    } finally {
      await sink.close();
    }
  });
});

describe('SQLite audit sink: queries', () => {
  // Two streams written at the same times, so pages must order records with equal times: by
  // the order they were written in, here all of A, then all of B.
  const a = streamOf(A, 30, (k) => T0 + Math.ceil(k / 2) * 1_000);
  const b = streamOf(B, 30, (k) => T0 + Math.ceil(k / 2) * 1_000);
  const everything = [...a, ...b];
  const written = (r: AuditRecord) => (r.stream === A ? 0 : 1_000) + r.seq;
  const newestFirst = (rs: AuditRecord[]) => [...rs].sort((x, y) => y.at - x.at || written(y) - written(x));

  async function withLog(fn: (sink: SqliteAuditSink) => Promise<void>): Promise<void> {
    const sink = openSqliteAuditSink(freshFile());
    try {
      await sink.write(a);
      await sink.write(b);
      await fn(sink);
    } finally {
      await sink.close();
    }
  }

  it('filters by grant, tool, decision, server and time, newest first unless asked otherwise', async () => {
    await withLog(async (sink) => {
      const cases: Array<[Parameters<SqliteAuditSink['query']>[0], (r: AuditRecord) => boolean]> = [
        [{ grant: 'grant-1' }, (r) => r.grantId === 'grant-1'],
        [{ tool: 'delete_contact' }, (r) => r.tool === 'delete_contact'],
        [{ decision: 'deny' }, (r) => r.decision === 'deny'],
        [{ server: 'github', decision: 'allow' }, (r) => r.server === 'github' && r.decision === 'allow'],
        [{ since: T0 + 5_000, until: T0 + 9_000 }, (r) => r.at >= T0 + 5_000 && r.at < T0 + 9_000],
        [{ grant: 'grant-2', tool: 'search', since: T0 + 3_000 }, (r) => r.grantId === 'grant-2' && r.tool === 'search' && r.at >= T0 + 3_000],
      ];
      for (const [filter, match] of cases) {
        const page = await sink.query({ ...filter, limit: 1_000 });
        assert.deepStrictEqual(page.records, newestFirst(everything.filter(match)), JSON.stringify(filter));
        assert.equal(page.next, undefined);
        const oldest = await sink.query({ ...filter, limit: 1_000, order: 'oldest' });
        assert.deepStrictEqual(oldest.records, newestFirst(everything.filter(match)).reverse(), JSON.stringify(filter));
      }
    });
  });

  it('pages through every match with the cursor, either way, never repeating or skipping a record of the same time', async () => {
    await withLog(async (sink) => {
      for (const order of ['newest', 'oldest'] as const) {
        for (const filter of [{}, { grant: 'grant-0' }, { decision: 'allow' as const }]) {
          const seen: AuditRecord[] = [];
          let after: string | undefined;
          let pages = 0;
          do {
            const page = await sink.query({ ...filter, order, limit: 7, after });
            seen.push(...page.records);
            after = page.next;
            pages++;
            assert.ok(page.records.length === 7 || after === undefined, 'only the last page is short');
          } while (after !== undefined);
          const expected = newestFirst(everything.filter((r) => (filter.grant === undefined || r.grantId === filter.grant) && (filter.decision === undefined || r.decision === filter.decision)));
          assert.deepStrictEqual(seen, order === 'newest' ? expected : expected.reverse(), `${order} ${JSON.stringify(filter)}`);
          assert.equal(pages, Math.max(1, Math.ceil(expected.length / 7)));
        }
      }
    });
  });

  it('gives 100 records a page unless asked, and never more than 1,000', async () => {
    await withLog(async (sink) => {
      assert.equal((await sink.query({})).records.length, 60);
      assert.equal((await sink.query({ limit: 0 })).records.length, 1);
      const sink2 = openSqliteAuditSink(':memory:');
      try {
        await sink2.write(streamOf(A, 1_100));
        assert.equal((await sink2.query({})).records.length, 100);
        assert.equal((await sink2.query({ limit: 5_000 })).records.length, 1_000);
      } finally {
        await sink2.close();
      }
    });
  });

  it('refuses a cursor it did not make', async () => {
    await withLog(async (sink) => {
      await assert.rejects(sink.query({ after: 'not-a-cursor' }), /invalid cursor/);
      await assert.rejects(sink.query({ after: Buffer.from('[1,"x",3]').toString('base64url') }), /invalid cursor/);
    });
  });
});

describe('SQLite audit sink: tampering with the file is found by verification', () => {
  const records = streamOf(A, 20);

  async function tampered(tamper: (db: Database.Database) => void) {
    const { sink, file } = await sinkWith(records);
    try {
      assert.deepEqual(await verifyChain(sink.iterate()), { ok: true, records: 20, streams: 1, duplicates: 0 }, 'untouched, it verifies');
      tamperWith(file, tamper);
      const result = await verifyChain(sink.iterate());
      assert.deepEqual(await sink.verify(), result, 'verify() finds the same');
      assert.equal(result.ok, false);
      return result as Extract<typeof result, { ok: false }>;
    } finally {
      await sink.close();
    }
  }

  it('a record whose tool was edited', async () => {
    const f = await tampered((db) => db.prepare("UPDATE audit_records SET tool = 'read_only_search' WHERE seq = 7").run());
    assert.deepEqual(f, { ok: false, problem: 'edited', stream: A, seq: 7, message: 'stream 3f2a9c1d…, record 7: its content does not match its hash (edited)' });
  });

  it('a record whose reason was edited', async () => {
    const f = await tampered((db) => db.prepare("UPDATE audit_records SET reason = 'approved by the CFO' WHERE seq = 12").run());
    assert.deepEqual([f.problem, f.seq], ['edited', 12]);
  });

  it('a record edited and given a hash that fits its new content', async () => {
    const forged = { ...records[6]!, decision: 'allow' as const, reason: null };
    const f = await tampered((db) => db.prepare("UPDATE audit_records SET decision = 'allow', reason = NULL, hash = ? WHERE seq = 7").run(recordHash(forged)));
    assert.deepEqual([f.problem, f.seq], ['edited', 7]);
    assert.match(f.message, /record 7: it was changed and its hash recomputed/);
  });

  it('a deleted record', async () => {
    const f = await tampered((db) => db.prepare('DELETE FROM audit_records WHERE seq = 9').run());
    assert.deepEqual(f, { ok: false, problem: 'deleted', stream: A, seq: 9, message: 'stream 3f2a9c1d…, record 9: missing: record 10 follows record 8 (deleted)' });
  });

  it('a forged record inserted with a correct hash, the records after it renumbered to make room', async () => {
    const forged = chain(A, records[9], { ...event(10), tool: 'export_all', decision: 'allow' });
    const f = await tampered((db) => {
      // Two steps, since renumbering in place would collide with the primary key.
      db.prepare('UPDATE audit_records SET seq = -(seq + 1) WHERE seq >= 11').run();
      db.prepare('UPDATE audit_records SET seq = -seq WHERE seq < 0').run();
      const columns = 'stream, seq, at, request_id, grant_id, grant_label, session, server, method, tool, decision, rule, reason, policy_version, arguments, upstream_status, latency_ms, result_bytes, error, prev_hash, hash';
      db.prepare(`INSERT INTO audit_records (${columns}) VALUES (${columns.split(',').map(() => '?').join(', ')})`).run(
        forged.stream, forged.seq, forged.at, forged.requestId, forged.grantId, forged.grantLabel, forged.session, forged.server, forged.method,
        forged.tool, forged.decision, forged.rule, forged.reason, forged.policyVersion, JSON.stringify(forged.arguments), forged.upstreamStatus,
        forged.latencyMs, forged.resultBytes, forged.error, forged.prevHash, forged.hash,
      );
    });
    assert.deepEqual([f.problem, f.seq], ['inserted', 11]);
    assert.match(f.message, /record 11: it does not belong to the chain: record 12 \(written as 11\) follows record 10/);
  });

  it('two records whose seq were swapped', async () => {
    const f = await tampered((db) => {
      db.prepare('UPDATE audit_records SET seq = -1 WHERE seq = 5').run();
      db.prepare('UPDATE audit_records SET seq = 5 WHERE seq = 15').run();
      db.prepare('UPDATE audit_records SET seq = 15 WHERE seq = -1').run();
    });
    assert.deepEqual(f, { ok: false, problem: 'reordered', stream: A, seq: 5, message: 'stream 3f2a9c1d…, record 5: it holds record 15, moved here (reordered)' });
  });
});

describe('SQLite audit sink: pruning', () => {
  it('deletes records before the cut stream by stream, leaves a checkpoint for each, and the log still verifies', async () => {
    const a = streamOf(A, 20);
    const b = streamOf(B, 10, (k) => T0 + k * 3_000);
    const { sink } = await sinkWith([...a, ...b]);
    try {
      // Before T0 + 8.5 s: records 1–8 of A (1 s apart) and 1–2 of B (3 s apart).
      assert.deepEqual(await sink.prune(T0 + 8_500), { records: 10, streams: 2 });
      assert.deepEqual(await sink.checkpoints(), [
        { stream: A, seq: 8, hash: a[7]!.hash },
        { stream: B, seq: 2, hash: b[1]!.hash },
      ]);
      assert.deepStrictEqual(await all(sink), [...a.slice(8), ...b.slice(2)]);
      assert.deepEqual(await verifyChain(sink.iterate(), { checkpoints: await sink.checkpoints() }), { ok: true, records: 20, streams: 2, duplicates: 0 });
      assert.deepEqual(await sink.verify(), { ok: true, records: 20, streams: 2, duplicates: 0 });
      // Without its checkpoints, the pruned log reads as records deleted.
      assert.equal((await verifyChain(sink.iterate())).ok, false);
      // Pruning again at the same cut changes nothing; a later cut moves the checkpoints on.
      assert.deepEqual(await sink.prune(T0 + 8_500), { records: 0, streams: 0 });
      assert.deepEqual(await sink.prune(T0 + 12_500), { records: 6, streams: 2 });
      assert.deepEqual((await sink.checkpoints()).map((c) => [c.stream, c.seq]), [[A, 12], [B, 4]]);
      assert.equal((await sink.verify()).ok, true);
    } finally {
      await sink.close();
    }
  });

  it('still finds a record edited after pruning', async () => {
    const { sink, file } = await sinkWith(streamOf(A, 20));
    try {
      await sink.prune(T0 + 10_500);
      tamperWith(file, (db) => db.prepare("UPDATE audit_records SET tool = 'x' WHERE seq = 14").run());
      const f = await verifyChain(sink.iterate(), { checkpoints: await sink.checkpoints() });
      assert.deepEqual(f, { ok: false, problem: 'edited', stream: A, seq: 14, message: 'stream 3f2a9c1d…, record 14: its content does not match its hash (edited)' });
    } finally {
      await sink.close();
    }
  });

  it('finds records deleted right after the checkpoint, and a checkpoint that was altered', async () => {
    const { sink, file } = await sinkWith(streamOf(A, 20));
    try {
      await sink.prune(T0 + 10_500);
      tamperWith(file, (db) => db.prepare('DELETE FROM audit_records WHERE seq IN (11, 12)').run());
      const f = await sink.verify();
      assert.deepEqual(f.ok ? f : [f.problem, f.seq, f.message], ['deleted', 11, 'stream 3f2a9c1d…, records 11–12: missing: record 13 follows the checkpoint (record 10, pruned) (deleted)']);
      tamperWith(file, (db) => db.prepare('UPDATE audit_checkpoints SET seq = 12').run());
      const g = await sink.verify();
      assert.deepEqual(g.ok ? g : [g.problem, g.seq], ['checkpoint', 13]);
    } finally {
      await sink.close();
    }
  });

  it('prunes a whole stream down to its checkpoint, and the stream verifies as its gateway writes on', async () => {
    const records = streamOf(A, 12);
    const { sink } = await sinkWith(records.slice(0, 10));
    try {
      assert.deepEqual(await sink.prune(T0 + 60_000), { records: 10, streams: 1 });
      assert.deepEqual(await all(sink), []);
      assert.deepEqual(await sink.verify(), { ok: true, records: 0, streams: 0, duplicates: 0 });
      await sink.write(records.slice(10));
      assert.deepEqual(await sink.verify(), { ok: true, records: 2, streams: 1, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });

  it('keeps an old record that follows a newer one (a clock stepped back), since deleting it would leave a hole', async () => {
    const times = [1, 2, 9, 3, 4, 10];
    const records = streamOf(A, 6, (k) => T0 + times[k - 1]! * 1_000);
    const { sink } = await sinkWith(records);
    try {
      assert.deepEqual(await sink.prune(T0 + 5_500), { records: 2, streams: 1 });
      assert.deepEqual((await all(sink)).map((r) => r.seq), [3, 4, 5, 6]);
      assert.equal((await sink.verify()).ok, true);
    } finally {
      await sink.close();
    }
  });

  it('prunes a long stream in several steps, the log verifying throughout', async () => {
    const records = streamOf(A, 12_000, (k) => T0 + k);
    const { sink } = await sinkWith(records);
    try {
      const pruning = sink.prune(T0 + 11_000.5);
      // Steps alternate with the event loop: a write lands between them and the chain holds.
      const more = chain(A, records[records.length - 1], event(12_001, T0 + 12_001));
      await sink.write([more]);
      assert.deepEqual(await pruning, { records: 11_000, streams: 1 });
      assert.deepEqual(await sink.checkpoints(), [{ stream: A, seq: 11_000, hash: records[10_999]!.hash }]);
      assert.deepEqual(await sink.verify(), { ok: true, records: 1_001, streams: 1, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });

  it('verify() reads records and checkpoints from one snapshot, so a prune running meanwhile does not confuse it', async () => {
    const records = streamOf(A, 5_000, (k) => T0 + k);
    const { sink } = await sinkWith(records);
    try {
      const verifying = sink.verify();
      const pruned = await sink.prune(T0 + 3_000.5);
      assert.deepEqual(pruned, { records: 3_000, streams: 1 });
      assert.deepEqual(await verifying, { ok: true, records: 5_000, streams: 1, duplicates: 0 });
      assert.deepEqual(await sink.verify(), { ok: true, records: 2_000, streams: 1, duplicates: 0 });
    } finally {
      await sink.close();
    }
  });
});
