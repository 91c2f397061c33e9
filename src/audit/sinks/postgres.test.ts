import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { chain, recordHash, type AuditEventInput, type AuditRecord } from '../event.js';
import { signCheckpoint, type AuditSigningKey } from '../signing.js';
import type { AuditQuery } from '../store.js';
import { verifyChain, type VerifyResult } from '../verify.js';
import { AUDIT_POSTGRES_SCHEMA_VERSION, auditQuerySql, openPostgresAuditSink, type PostgresAuditSink } from './postgres.js';
import { pruneContract } from './prune-contract.js';
import { A, B, allRecords, event, newSigningKey as newKey, streamOf, T0 } from './records.fixture.js';

const DATABASE_URL = process.env.DATABASE_URL;
const REQUIRED = process.env.REQUIRE_SERVICES === '1';
// Every schema this run creates starts with this, so parallel runs never meet and cleanup is exact.
const RUN = `pl_audit_test_${randomBytes(5).toString('hex')}`;

/** Chains `events` into one stream. */
function chained(stream: string, events: readonly AuditEventInput[]): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (const e of events) out.push(chain(stream, out[out.length - 1], e));
  return out;
}

const all = allRecords;

type Failure = Extract<VerifyResult, { ok: false }>;

/** The gateway's audit signing key: prune signs with it, verify trusts it. */
const KEY = newKey();
const OTHER = newKey();
const TRUSTED = { publicKeys: [KEY.publicKey] };

function sinkTests(url: string): void {
  const admin = new pg.Pool({ connectionString: url, max: 3 });
  const schemas: string[] = [];
  const sinks: PostgresAuditSink[] = [];

  /** A new, empty schema of this run, and the URL of a connection that works in it. */
  async function freshSchema(): Promise<{ schema: string; schemaUrl: string }> {
    const schema = `${RUN}_${schemas.length + 1}`;
    await admin.query(`CREATE SCHEMA ${pg.escapeIdentifier(schema)}`);
    schemas.push(schema);
    const u = new URL(url);
    u.searchParams.set('options', `-c search_path=${schema}`);
    return { schema, schemaUrl: u.href };
  }

  async function open(schemaUrl: string): Promise<PostgresAuditSink> {
    const sink = await openPostgresAuditSink(schemaUrl, { poolSize: 3 });
    sinks.push(sink);
    return sink;
  }

  /** A sink on a fresh schema holding `records`. */
  async function sinkWith(records: readonly AuditRecord[]): Promise<{ sink: PostgresAuditSink; schema: string }> {
    const { schema, schemaUrl } = await freshSchema();
    const sink = await open(schemaUrl);
    await sink.write(records);
    return { sink, schema };
  }

  /** Runs `tamper` on a connection of its own in `schema`, the way anyone with SQL access to the database could. */
  async function tamperWith<T>(schema: string, tamper: (db: pg.PoolClient) => Promise<T>): Promise<T> {
    const db = await admin.connect();
    try {
      await db.query(`SET search_path TO ${pg.escapeIdentifier(schema)}`);
      return await tamper(db);
    } finally {
      await db.query('RESET search_path').then(
        () => db.release(),
        (err: Error) => db.release(err),
      );
    }
  }

  const rowCount = (schema: string) => tamperWith(schema, async (db) => Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM audit_records')).rows[0]!.n));

  after(async () => {
    await Promise.all(sinks.map((s) => s.close()));
    for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`);
    await admin.end();
  });

  describe('PostgreSQL audit sink: writing and reading back', () => {
    it('writes a batch and reads back every field exactly, nulls, absent arguments and fractions included', async () => {
      const first = event(1, T0);
      const records = chained(A, [
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
        { ...first, at: T0 + 6, method: 'ping', arguments: undefined, latencyMs: 0.1 + 0.2, resultBytes: 0 },
        {
          ...first,
          at: T0 + 7,
          tool: 'créer_fiche',
          reason: 'non, pas « ça » 🚫',
          arguments: { path: '/tmp/ü', nested: { list: [1, 2.5, null, true, 'x'], empty: {} }, big: 12345678901234, tiny: 5e-324 },
          upstreamStatus: 'error',
          latencyMs: 1e-7,
          resultBytes: 2 ** 53 - 1,
          error: 'upstream error -32603: "internal"',
        },
      ]);
      const { sink } = await sinkWith(records);
      assert.deepStrictEqual(await all(sink), records);
      const page = await sink.query({ order: 'oldest' });
      assert.deepStrictEqual(page.records, records);
      assert.equal(page.next, undefined);
      assert.deepEqual(await sink.verify(), { ok: true, records: 4, streams: 1, duplicates: 0 });
    });

    it('keeps the arguments as the JSON text it was given, keys in their order, where jsonb would reorder them', async () => {
      const args = { zeta: 1, alpha: { y: [3, 2, 1], b: 'two' }, mid: null };
      const records = chained(A, [{ ...event(1), arguments: args }]);
      const { sink, schema } = await sinkWith(records);
      const [back] = await all(sink);
      assert.equal(JSON.stringify(back!.arguments), JSON.stringify(args));
      const stored = await tamperWith(schema, async (db) => (await db.query<{ text: string; zeta: string }>("SELECT arguments::text AS text, arguments->>'zeta' AS zeta FROM audit_records")).rows[0]!);
      assert.deepEqual(stored, { text: JSON.stringify(args), zeta: '1' }, 'stored as json text, and operators can still reach into it');
    });

    it('keeps records holding NUL characters and lone UTF-16 surrogates exactly, so their hashes still verify', async () => {
      // JSON.parse of a client's request makes such strings; PostgreSQL text holds neither.
      const lone = JSON.parse('"bad \\ud800 name"') as string;
      const low = JSON.parse('"\\udc00 first"') as string;
      const base = event(3);
      const records = chained(A, [
        { ...base, at: T0 + 1_000, tool: 'nul\u0000tool' },
        { ...base, at: T0 + 2_000, reason: lone, error: low },
        { ...base, at: T0 + 3_000, arguments: { 'key\u0000': 'v\u0000', [lone]: [low, '😀'], 文字: '\ud83d\ude00' } },
        { ...base, at: T0 + 4_000, tool: 'ツール', reason: '😀 paired surrogates are fine' },
      ]);
      const { sink, schema } = await sinkWith(records);
      assert.deepStrictEqual(await all(sink), records);
      assert.deepStrictEqual((await sink.query({ order: 'oldest' })).records, records);
      assert.deepEqual(await sink.verify(), { ok: true, records: 4, streams: 1, duplicates: 0 });
      const rows = await tamperWith(schema, async (db) => (await db.query<{ seq: number; tool: string; reason: string | null; whole: boolean }>('SELECT seq, tool, reason, record_json IS NOT NULL AS whole FROM audit_records ORDER BY seq')).rows);
      assert.deepEqual(
        rows.map((r) => [Number(r.seq), r.tool, r.reason, r.whole]),
        [
          [1, 'nul\ufffdtool', null, true],
          [2, 'search', 'bad \ufffd name', true],
          // Arguments are JSON text, whose escapes hold both: no need to keep the record whole.
          [3, 'search', null, false],
          [4, 'ツール', '😀 paired surrogates are fine', false],
        ],
        'the columns hold what PostgreSQL text can, for queries; the whole record is kept only where they cannot',
      );
    });

    it('resolves an empty batch without touching the database, even with its table gone', async () => {
      const { sink, schema } = await sinkWith([]);
      await tamperWith(schema, (db) => db.query('DROP TABLE audit_records'));
      await sink.write([]);
      await assert.rejects(sink.write(streamOf(A, 1)), /audit_records/);
    });

    it('creates its tables and indexes in the schema of its connection, records its schema version, and opening again changes nothing', async () => {
      const { schema, schemaUrl } = await freshSchema();
      const records = streamOf(A, 3);
      const sink = await open(schemaUrl);
      await sink.write(records);
      await sink.close();
      const layout = async () => {
        const { rows: tables } = await admin.query<{ table_name: string }>(
          'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
          [schema],
        );
        const { rows: indexes } = await admin.query<{ indexname: string }>('SELECT indexname FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname', [schema]);
        const { rows: versions } = await admin.query<{ version: number }>(`SELECT version FROM ${pg.escapeIdentifier(schema)}.audit_schema_versions ORDER BY version`);
        return { tables: tables.map((t) => t.table_name), indexes: indexes.map((i) => i.indexname), versions: versions.map((v) => v.version) };
      };
      const expected = {
        tables: ['audit_checkpoints', 'audit_record_buckets', 'audit_records', 'audit_schema_versions'],
        indexes: [
          'audit_checkpoints_pkey',
          'audit_record_buckets_value',
          'audit_records_at',
          'audit_records_grant',
          'audit_records_pkey',
          'audit_schema_versions_pkey',
        ],
        versions: Array.from({ length: AUDIT_POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1),
      };
      assert.deepEqual(await layout(), expected);
      const again = await open(schemaUrl);
      assert.deepStrictEqual(await all(again), records);
      assert.deepEqual(await layout(), expected);
    });

    it('creates the schema once when five sinks (five pools) open a new schema at the same time, and each writes and reads the shared log', async () => {
      const { schema, schemaUrl } = await freshSchema();
      const racers = await Promise.all(Array.from({ length: 5 }, () => open(schemaUrl)));
      const { rows } = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${pg.escapeIdentifier(schema)}.audit_schema_versions`);
      // One row per version applied, each once.
      assert.equal(Number(rows[0]!.n), AUDIT_POSTGRES_SCHEMA_VERSION);
      const streams = racers.map((_, i) => `${A.slice(0, -1)}${i}`);
      await Promise.all(racers.map((sink, i) => sink.write(streamOf(streams[i]!, 10))));
      for (const sink of racers) assert.deepEqual(await sink.verify(), { ok: true, records: 50, streams: 5, duplicates: 0 });
    });

    it('refuses a schema whose version is newer than this code knows', async () => {
      const { schema, schemaUrl } = await freshSchema();
      await (await open(schemaUrl)).close();
      await tamperWith(schema, (db) => db.query('INSERT INTO audit_schema_versions (version, applied_at) VALUES ($1, $2)', [AUDIT_POSTGRES_SCHEMA_VERSION + 1, T0]));
      await assert.rejects(
        openPostgresAuditSink(schemaUrl),
        new RegExp(`: cannot open the audit log: the database's audit schema is version ${AUDIT_POSTGRES_SCHEMA_VERSION + 1}, newer than this gateway's ${AUDIT_POSTGRES_SCHEMA_VERSION}: upgrade the gateway$`),
      );
    });

    it('names itself by host, port and database, never by user or password, in its name and its errors', async () => {
      const { schemaUrl } = await freshSchema();
      const sink = await open(schemaUrl);
      const u = new URL(url);
      assert.equal(sink.name, `postgres:${u.hostname}:${u.port || '5432'}${u.pathname}`);
      const secret = 'postgres://audit_writer:s3cret-pa55@127.0.0.1:1/audit_db';
      const err = await openPostgresAuditSink(secret).then(
        () => assert.fail('nothing listens on port 1'),
        (e: unknown) => e as Error,
      );
      assert.match(err.message, /^postgres:127\.0\.0\.1:1\/audit_db: cannot open the audit log: /);
      assert.doesNotMatch(err.message, /audit_writer|s3cret/);
    });

    it('writes none of a batch when one of its records conflicts with a stored one (all or nothing)', async () => {
      const records = streamOf(A, 7);
      const { sink, schema } = await sinkWith(records.slice(0, 5));
      const other = chain(A, records[1], { ...event(3), reason: 'forged' });
      await assert.rejects(
        sink.write([records[5]!, records[6]!, other]),
        new RegExp(`^Error: postgres:[^ ]+: stream ${A} already has a different record 3 \\(hash ${records[2]!.hash}, not ${other.hash}\\); the batch was not written$`),
      );
      assert.deepStrictEqual(await all(sink), records.slice(0, 5));
      assert.equal(await rowCount(schema), 5);
    });

    it('rejects a batch holding two different records for one place in a chain, and stores none of it', async () => {
      const records = streamOf(A, 4);
      const twin = chain(A, records[1], { ...event(3), tool: 'export_all' });
      const { sink, schema } = await sinkWith([]);
      await assert.rejects(sink.write([...records, twin]), /already has a different record 3/);
      assert.equal(await rowCount(schema), 0);
    });

    it('passes over records it already holds with the same hash, since the writer delivers at least once', async () => {
      const records = streamOf(A, 8);
      const { sink, schema } = await sinkWith(records.slice(0, 5));
      await sink.write(records.slice(3));
      assert.deepStrictEqual(await all(sink), records);
      await sink.write(records);
      await sink.write(records);
      assert.equal(await rowCount(schema), 8, 'a batch delivered again changes nothing');
      assert.deepEqual(await sink.verify(), { ok: true, records: 8, streams: 1, duplicates: 0 });
    });

    it('rejects a write once closed, and closing twice (even at once) is harmless', async () => {
      const { sink } = await sinkWith([]);
      await Promise.all([sink.close(), sink.close()]);
      await sink.close();
      await assert.rejects(sink.write(streamOf(A, 1)), /the audit sink is closed/);
      await assert.rejects(sink.write([]), /the audit sink is closed/);
    });

    it('reports every failure as a rejection, never as a synchronous throw', async () => {
      const { sink } = await sinkWith([]);
      const fractional = { ...streamOf(A, 1)[0]!, seq: 1.5 };
      let writing: Promise<void> | undefined;
      let querying: Promise<unknown> | undefined;
      assert.doesNotThrow(() => {
        writing = sink.write([fractional]);
        querying = sink.query({ after: 'not-a-cursor' });
      });
      await Promise.all([assert.rejects(writing!, /bigint/), assert.rejects(querying!, /invalid cursor/)]);
      await assert.rejects(sink.prune(Number.NaN, KEY), /beforeMs must be a time/);
    });

    it('reads back stream by stream, each in seq order, across many pages, however the streams were interleaved when written', async () => {
      const a = streamOf(A, 2_600, (k) => T0 + k);
      const b = streamOf(B, 2_600, (k) => T0 + k);
      const { sink } = await sinkWith([]);
      for (let i = 0; i < a.length; i += 500) {
        await sink.write([...b.slice(i, i + 500), ...a.slice(i, i + 500)]);
      }
      const back = await all(sink);
      assert.equal(back.length, 5_200);
      assert.deepStrictEqual(back, [...a, ...b]);
      assert.deepEqual(await sink.verify(), { ok: true, records: 5_200, streams: 2, duplicates: 0 });
    });
  });

  describe('PostgreSQL audit sink: queries', () => {
    // Two streams written at the same times, so pages must order records with equal times: by
    // the order they were written in, here all of A, then all of B.
    const a = streamOf(A, 30, (k) => T0 + Math.ceil(k / 2) * 1_000);
    const b = streamOf(B, 30, (k) => T0 + Math.ceil(k / 2) * 1_000);
    const everything = [...a, ...b];
    const written = (r: AuditRecord) => (r.stream === A ? 0 : 1_000) + r.seq;
    const newestFirst = (rs: AuditRecord[]) => [...rs].sort((x, y) => y.at - x.at || written(y) - written(x));
    /** A sink on a fresh schema holding both streams, A's records written first. */
    async function log(): Promise<PostgresAuditSink> {
      const { sink } = await sinkWith(a);
      await sink.write(b);
      return sink;
    }

    it('filters by grant, tool, decision, server and time, newest first unless asked otherwise', async () => {
      const sink = await log();
      const cases: Array<[AuditQuery, (r: AuditRecord) => boolean]> = [
        [{ grant: 'grant-1' }, (r) => r.grantId === 'grant-1'],
        [{ tool: 'delete_contact' }, (r) => r.tool === 'delete_contact'],
        [{ decision: 'deny' }, (r) => r.decision === 'deny'],
        [{ server: 'github' }, (r) => r.server === 'github'],
        [{ server: 'github', decision: 'allow' }, (r) => r.server === 'github' && r.decision === 'allow'],
        [{ since: T0 + 5_000, until: T0 + 9_000 }, (r) => r.at >= T0 + 5_000 && r.at < T0 + 9_000],
        // Fractional bounds: a record at T0 + 5 s is at or after T0 + 4.5 s, and not before T0 + 5 s.
        [{ since: T0 + 4_500.5, until: T0 + 5_000.5 }, (r) => r.at === T0 + 5_000],
        [{ grant: 'grant-2', tool: 'search', since: T0 + 3_000 }, (r) => r.grantId === 'grant-2' && r.tool === 'search' && r.at >= T0 + 3_000],
        [{ grant: 'nobody' }, () => false],
      ];
      for (const [filter, match] of cases) {
        const page = await sink.query({ ...filter, limit: 1_000 });
        assert.deepStrictEqual(page.records, newestFirst(everything.filter(match)), JSON.stringify(filter));
        assert.equal(page.next, undefined);
        const oldest = await sink.query({ ...filter, limit: 1_000, order: 'oldest' });
        assert.deepStrictEqual(oldest.records, newestFirst(everything.filter(match)).reverse(), JSON.stringify(filter));
      }
    });

    it('pages through every match with the cursor, either way, never repeating or skipping a record of the same millisecond', async () => {
      const sink = await log();
      for (const order of ['newest', 'oldest'] as const) {
        for (const filter of [{}, { grant: 'grant-0' }, { decision: 'allow' as const }, { server: 'crm', since: T0 + 2_000 }]) {
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
          const f = filter as AuditQuery;
          const expected = newestFirst(
            everything.filter(
              (r) =>
                (f.grant === undefined || r.grantId === f.grant) &&
                (f.decision === undefined || r.decision === f.decision) &&
                (f.server === undefined || r.server === f.server) &&
                (f.since === undefined || r.at >= f.since),
            ),
          );
          assert.deepStrictEqual(seen, order === 'newest' ? expected : expected.reverse(), `${order} ${JSON.stringify(filter)}`);
          assert.equal(pages, Math.max(1, Math.ceil(expected.length / 7)));
        }
      }
    });

    it('orders records of one millisecond by the order they were written in, batch after batch', async () => {
      // Fifty records of the same millisecond in five batches of two streams: pages of three.
      const x = streamOf(A, 25, () => T0);
      const y = streamOf(B, 25, () => T0);
      const { sink } = await sinkWith([]);
      const order: AuditRecord[] = [];
      for (let i = 0; i < 25; i += 5) {
        const batch = [...y.slice(i, i + 5), ...x.slice(i, i + 5)];
        await sink.write(batch);
        order.push(...batch);
      }
      const seen: AuditRecord[] = [];
      let after: string | undefined;
      do {
        const page = await sink.query({ order: 'oldest', limit: 3, after });
        seen.push(...page.records);
        after = page.next;
      } while (after !== undefined);
      assert.deepStrictEqual(seen, order);
    });

    it('gives 100 records a page unless asked, at least 1, and never more than 1,000', async () => {
      assert.equal((await (await log()).query({})).records.length, 60);
      const { sink } = await sinkWith(streamOf(A, 1_100, (k) => T0 + k));
      assert.equal((await sink.query({})).records.length, 100);
      assert.equal((await sink.query({ limit: 0 })).records.length, 1);
      assert.equal((await sink.query({ limit: 5_000 })).records.length, 1_000);
    });

    it('refuses a cursor it did not make', async () => {
      const sink = await log();
      await assert.rejects(sink.query({ after: 'not-a-cursor' }), /invalid cursor/);
      await assert.rejects(sink.query({ after: Buffer.from('[1,"x"]').toString('base64url') }), /invalid cursor/);
      await assert.rejects(sink.query({ after: Buffer.from('[1.5,3]').toString('base64url') }), /invalid cursor/);
    });

    it('answers every filter, with and without a cursor, by walking one index in the page order, sorting no more than one bucket of matches', async () => {
      const { sink, schema } = await sinkWith(streamOf(A, 3_000, (k) => T0 + k));
      // A cursor half-way, so that either order has many buckets ahead: with a handful, a plain sort
      // of everything costs the planner no more than sorting bucket by bucket, and it may take it.
      const cursor = (await sink.query({ limit: 1_000 })).next!;
      const page = await sink.query({ limit: 500, after: cursor });
      assert.equal(page.records.length, 500);
      // Each shape, and the index that must lead it: a grant has an index of its own (here, where each
      // grant is a third of the records, walking time costs as little); a tool, server or decision
      // is found through its buckets, each read in its span of the time index.
      // With several values, the planner expects few matches here, and may sort them all at once
      // (as cheap as bucket by bucket, for so few): the shape is still asked for, the sort is not.
      const shapes: Array<[AuditQuery, 'at' | '(grant|at)' | 'buckets' | 'buckets, any sort']> = [
        [{}, 'at'],
        [{ since: T0 + 100, until: T0 + 2_000 }, 'at'],
        [{ grant: 'grant-1' }, '(grant|at)'],
        [{ grant: 'grant-1', tool: 'search', decision: 'allow', server: 'crm', since: T0 }, '(grant|at)'],
        [{ tool: 'search' }, 'buckets'],
        [{ decision: 'deny' }, 'buckets'],
        [{ decision: 'allow' }, 'buckets'],
        [{ server: 'crm' }, 'buckets'],
        [{ tool: 'search', server: 'crm', decision: 'deny', since: T0 + 100, until: T0 + 2_000 }, 'buckets, any sort'],
      ];
      await tamperWith(schema, async (db) => {
        await db.query('ANALYZE audit_records');
        await db.query('ANALYZE audit_record_buckets');
        // Whether an index gives the order is what is asked here, not which plan costs least on a
        // table this small: scans that cannot give the order are ruled out, sorting is not.
        await db.query('SET enable_seqscan = off');
        await db.query('SET enable_bitmapscan = off');
        try {
          for (const [shape, lead] of shapes) {
            for (const order of ['newest', 'oldest'] as const) {
              for (const after of [undefined, cursor]) {
                const filter = { ...shape, order, after };
                const { text, values } = auditQuerySql(filter);
                const { rows } = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${text}`, values);
                const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
                const says = `${JSON.stringify(filter)}\n${plan}`;
                if (lead.startsWith('buckets')) {
                  assert.match(plan, /Index Only Scan( Backward)? using audit_record_buckets_value on audit_record_buckets b/, says);
                  assert.match(plan, /Nested Loop[^]*Index Scan( Backward)? using audit_records_at on audit_records/, says);
                  if (lead === 'buckets') {
                    // The one sort: each bucket's matches (already in order), never the whole.
                    assert.match(plan, /Incremental Sort[^]*Presorted Key: b\.bucket/, says);
                    assert.doesNotMatch(plan, /(^|->  )Sort /m, says);
                  }
                } else {
                  assert.match(plan, new RegExp(`Index Scan( Backward)? using audit_records_${lead} on audit_records`), says);
                  assert.doesNotMatch(plan, /Sort/, says);
                }
                assert.doesNotMatch(plan, /Seq Scan/, says);
              }
            }
          }
        } finally {
          await db.query('RESET enable_seqscan');
          await db.query('RESET enable_bitmapscan');
        }
      });
    });
  });

  describe('PostgreSQL audit sink: tampering with the table is found by verification', () => {
    const records = streamOf(A, 20);
    const COLUMNS =
      'stream, seq, at, request_id, grant_id, grant_label, session, server, method, tool, decision, rule, reason, policy_version, arguments, upstream_status, latency_ms, result_bytes, error, prev_hash, hash';
    const insertForged = (db: pg.PoolClient, r: AuditRecord) =>
      db.query(`INSERT INTO audit_records (${COLUMNS}) VALUES (${COLUMNS.split(',').map((_, i) => `$${i + 1}`).join(', ')})`, [
        r.stream, r.seq, r.at, r.requestId, r.grantId, r.grantLabel, r.session, r.server, r.method, r.tool, r.decision, r.rule, r.reason,
        r.policyVersion, JSON.stringify(r.arguments), r.upstreamStatus, r.latencyMs, r.resultBytes, r.error, r.prevHash, r.hash,
      ]);

    async function tampered(tamper: (db: pg.PoolClient) => Promise<unknown>, stored: readonly AuditRecord[] = records): Promise<Failure> {
      const { sink, schema } = await sinkWith(stored);
      assert.deepEqual(await verifyChain(sink.iterate()), { ok: true, records: stored.length, streams: 1, duplicates: 0 }, 'untouched, it verifies');
      await tamperWith(schema, tamper);
      const result = await verifyChain(sink.iterate());
      assert.deepEqual(await sink.verify(), result, 'verify() finds the same');
      assert.equal(result.ok, false);
      return result as Failure;
    }

    it('a record whose tool was edited with an UPDATE', async () => {
      const f = await tampered((db) => db.query("UPDATE audit_records SET tool = 'read_only_search' WHERE seq = 7"));
      assert.deepEqual(f, { ok: false, problem: 'edited', stream: A, seq: 7, message: 'stream 3f2a9c1d…, record 7: its content does not match its hash (edited)' });
    });

    it('a record whose reason, time or arguments were edited', async () => {
      for (const [edit, seq] of [
        ["reason = 'approved by the CFO'", 12],
        ['at = at + 1', 3],
        [`arguments = '{"keys":["id"],"sha256":"${'cd'.repeat(32)}"}'`, 16],
        ['latency_ms = latency_ms + 0.001', 18],
      ] as const) {
        const f = await tampered((db) => db.query(`UPDATE audit_records SET ${edit} WHERE seq = ${seq}`));
        assert.deepEqual([f.problem, f.seq], ['edited', seq], edit);
      }
    });

    it('a record edited and given a hash that fits its new content', async () => {
      const forged = { ...records[6]!, decision: 'allow' as const, reason: null };
      const f = await tampered((db) => db.query("UPDATE audit_records SET decision = 'allow', reason = NULL, hash = $1 WHERE seq = 7", [recordHash(forged)]));
      assert.deepEqual([f.problem, f.seq], ['edited', 7]);
      assert.match(f.message, /record 7: it was changed and its hash recomputed/);
    });

    it('a record kept whole as JSON (it holds a NUL) whose JSON was edited', async () => {
      const stored = chained(A, [event(1), { ...event(2), tool: 'a\u0000b' }, event(3)]);
      const f = await tampered((db) => db.query(`UPDATE audit_records SET record_json = replace(record_json, '"decision":"rate_limited"', '"decision":"allow"') WHERE seq = 2`), stored);
      assert.deepEqual([f.problem, f.seq], ['edited', 2]);
    });

    it('a record removed with a DELETE', async () => {
      const f = await tampered((db) => db.query('DELETE FROM audit_records WHERE seq = 9'));
      assert.deepEqual(f, { ok: false, problem: 'deleted', stream: A, seq: 9, message: 'stream 3f2a9c1d…, record 9: missing: record 10 follows record 8 (deleted)' });
    });

    it('a forged record INSERTed with a correct hash, the records after it renumbered to make room', async () => {
      const forged = chain(A, records[9], { ...event(10), tool: 'export_all', decision: 'allow' });
      const f = await tampered(async (db) => {
        // Two steps, since renumbering in place would collide with the primary key.
        await db.query('UPDATE audit_records SET seq = -(seq + 1) WHERE seq >= 11');
        await db.query('UPDATE audit_records SET seq = -seq WHERE seq < 0');
        await insertForged(db, forged);
      });
      assert.deepEqual([f.problem, f.seq], ['inserted', 11]);
      assert.match(f.message, /record 11: it does not belong to the chain: record 12 \(written as 11\) follows record 10/);
    });

    it('a record replaced (DELETE, then INSERT) by a forged one chained to the record before it, as an edit with its hash recomputed', async () => {
      const forged = chain(A, records[4], { ...event(6), decision: 'allow', reason: null });
      const f = await tampered(async (db) => {
        await db.query('DELETE FROM audit_records WHERE seq = 6');
        await insertForged(db, forged);
      });
      assert.deepEqual([f.problem, f.seq], ['edited', 6]);
      assert.match(f.message, /record 6: it was changed and its hash recomputed: record 7 was chained to a different record 6/);
    });

    it('two records whose seq were swapped', async () => {
      const f = await tampered(async (db) => {
        await db.query('UPDATE audit_records SET seq = -1 WHERE seq = 5');
        await db.query('UPDATE audit_records SET seq = 5 WHERE seq = 15');
        await db.query('UPDATE audit_records SET seq = 15 WHERE seq = -1');
      });
      assert.deepEqual(f, { ok: false, problem: 'reordered', stream: A, seq: 5, message: 'stream 3f2a9c1d…, record 5: it holds record 15, moved here (reordered)' });
    });
  });

  describe('PostgreSQL audit sink: pruning', () => {
    // Every sink opened here is closed after the suite.
    pruneContract(async (records) => ({ sink: (await sinkWith(records)).sink, release: async () => {} }), KEY);

    it('records in each checkpoint the time of the last pruned record and when it was pruned', async () => {
      const { schemaUrl, schema } = await freshSchema();
      const sink = await openPostgresAuditSink(schemaUrl, { clock: () => T0 + 99_000 });
      sinks.push(sink);
      await sink.write(streamOf(A, 5));
      await sink.prune(T0 + 3_500, KEY);
      const rows = await tamperWith(schema, async (db) => (await db.query('SELECT stream, seq, at, pruned_at, key_id FROM audit_checkpoints')).rows);
      assert.deepEqual(rows, [{ stream: A, seq: '3', at: String(T0 + 3_000), pruned_at: String(T0 + 99_000), key_id: KEY.keyId }]);
    });

    it('still finds a record edited after pruning', async () => {
      const { sink, schema } = await sinkWith(streamOf(A, 20));
      await sink.prune(T0 + 10_500, KEY);
      await tamperWith(schema, (db) => db.query("UPDATE audit_records SET tool = 'x' WHERE seq = 14"));
      const f = await verifyChain(sink.iterate(), { checkpoints: await sink.checkpoints(), ...TRUSTED });
      assert.deepEqual(f, { ok: false, problem: 'edited', stream: A, seq: 14, message: 'stream 3f2a9c1d…, record 14: its content does not match its hash (edited)' });
      assert.deepEqual(await sink.verify(TRUSTED), f);
    });

    it('finds records deleted right after the checkpoint, and a checkpoint that was altered', async () => {
      const { sink, schema } = await sinkWith(streamOf(A, 20));
      await sink.prune(T0 + 10_500, KEY);
      await tamperWith(schema, (db) => db.query('DELETE FROM audit_records WHERE seq IN (11, 12)'));
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.seq, f.message], ['deleted', 11, 'stream 3f2a9c1d…, records 11–12: missing: record 13 follows the checkpoint (record 10, pruned) (deleted)']);
      await tamperWith(schema, (db) => db.query('UPDATE audit_checkpoints SET seq = 12'));
      const g = await sink.verify(TRUSTED);
      assert.deepEqual(g.ok ? g : [g.problem, g.seq], ['checkpoint', 12]);
      assert.match(g.ok ? '' : g.message, /the checkpoint \(record 12, pruned\): it does not match its signature .*: it was changed after it was signed/);
    });

    it('verify() reads records and checkpoints from one snapshot, so a prune committed while it reads does not confuse it', async () => {
      const records = streamOf(A, 30_000, (k) => T0 + k);
      const { schema, schemaUrl } = await freshSchema();
      const named = new URL(schemaUrl);
      named.searchParams.set('application_name', `${schema}_verify`);
      const sink = await open(named.href);
      for (let i = 0; i < records.length; i += 5_000) await sink.write(records.slice(i, i + 5_000));
      let pruned = false;
      const verifying = sink.verify(TRUSTED).then((result) => ({ result, prunedBefore: pruned }));
      // Once verify() holds its snapshot, another process prunes the first 10,000 records (far
      // past the page verify() reads first) in one round trip: one transaction, as prune() does.
      for (;;) {
        const { rows } = await admin.query('SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND backend_xmin IS NOT NULL', [`${schema}_verify`]);
        if (rows.length > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const last = records[9_999]!;
      const { keyId, signature } = signCheckpoint(KEY, { stream: A, seq: 10_000, hash: last.hash, at: last.at, prunedAt: T0 });
      await tamperWith(schema, (db) =>
        db.query(`BEGIN; DELETE FROM audit_records WHERE seq <= 10000;
          INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at, key_id, signature)
          VALUES ('${A}', 10000, '${last.hash}', ${last.at}, ${T0}, '${keyId}', '${signature}'); COMMIT`),
      );
      pruned = true;
      const { result, prunedBefore } = await verifying;
      assert.equal(prunedBefore, true, 'the prune committed while verify() was still reading');
      assert.deepEqual(result, { ok: true, records: 30_000, streams: 1, duplicates: 0 }, 'it saw the log as it was when it began');
      assert.deepEqual(await sink.verify(TRUSTED), { ok: true, records: 20_000, streams: 1, duplicates: 0 });
    });
  });

  describe('PostgreSQL audit sink: signed checkpoints', () => {
    /** What someone with SQL access does to hide records 1..seq of a stream: deletes them and writes a checkpoint that fits. */
    async function forge(schema: string, records: readonly AuditRecord[], seq: number, signer?: AuditSigningKey): Promise<void> {
      const last = records[seq - 1]!;
      const content = { stream: last.stream, seq, hash: last.hash, at: last.at, prunedAt: T0 + 99_000 };
      const signed = signer === undefined ? { keyId: null, signature: null } : signCheckpoint(signer, content);
      await tamperWith(schema, async (db) => {
        await db.query('DELETE FROM audit_records WHERE stream = $1 AND seq <= $2', [last.stream, seq]);
        await db.query('INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
          last.stream,
          seq,
          last.hash,
          last.at,
          content.prunedAt,
          signed.keyId,
          signed.signature,
        ]);
      });
    }

    it('names the stream whose checkpoint was forged: records deleted by SQL and an unsigned checkpoint inserted', async () => {
      const a = streamOf(A, 20);
      const { sink, schema } = await sinkWith([...a, ...streamOf(B, 10)]);
      await forge(schema, a, 5);
      assert.deepEqual(await sink.verify(TRUSTED), {
        ok: false,
        problem: 'checkpoint',
        stream: A,
        seq: 5,
        message: `stream 3f2a9c1d…, the checkpoint (record 5, pruned): it is not signed by the audit signing key ${KEY.keyId}: the records before it may have been removed by hand (or it was written before checkpoints were signed) (checkpoint)`,
      });
    });

    it('names the stream whose checkpoint was forged with another key', async () => {
      const b = streamOf(B, 10);
      const { sink, schema } = await sinkWith([...streamOf(A, 20), ...b]);
      await forge(schema, b, 4, OTHER);
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['checkpoint', B, 4]);
      assert.match(f.ok ? '' : f.message, new RegExp(`^stream b81c04e2…, the checkpoint \\(record 4, pruned\\): it is signed by key ${OTHER.keyId}, not by the audit signing key ${KEY.keyId}`));
    });

    it('finds a signed checkpoint whose seq or hash was changed by SQL', async () => {
      const records = streamOf(A, 20);
      for (const tamper of [
        // Two more records gone, the checkpoint moved over them.
        `DELETE FROM audit_records WHERE seq IN (11, 12); UPDATE audit_checkpoints SET seq = 12, hash = '${records[11]!.hash}'`,
        `UPDATE audit_checkpoints SET hash = '${'e'.repeat(64)}'`,
      ]) {
        const { sink, schema } = await sinkWith(records);
        await sink.prune(T0 + 10_500, KEY);
        await tamperWith(schema, (db) => db.query(tamper));
        const f = await sink.verify(TRUSTED);
        assert.equal(f.ok ? f : f.problem, 'checkpoint', tamper);
        assert.match(f.ok ? '' : f.message, /^stream 3f2a9c1d…, the checkpoint \(record 1[02], pruned\): it does not match its signature by the audit signing key [0-9a-f]{16}: it was changed after it was signed \(checkpoint\)$/);
      }
    });

    it('does not sign over a forged checkpoint or records deleted by hand: those streams are held, and say why', async () => {
      const a = streamOf(A, 20);
      const b = streamOf(B, 10, (k) => T0 + k * 3_000);
      const { sink, schema } = await sinkWith([...a, ...b]);
      await forge(schema, a, 5);
      await tamperWith(schema, (db) => db.query('DELETE FROM audit_records WHERE stream = $1 AND seq <= 1', [B]));
      assert.deepEqual(await sink.prune(T0 + 10_500, KEY), {
        records: 0,
        streams: 0,
        held: [
          { stream: A, reason: 'its checkpoint (record 5, pruned) is not signed' },
          { stream: B, reason: 'record 2 does not follow the start of the stream' },
        ],
      });
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['checkpoint', A, 5]);
    });

    it('opens a schema of the version before checkpoints were signed, and verify reports its unsigned checkpoint', async () => {
      const a = streamOf(A, 20);
      const { sink: writer, schema, schemaUrl } = await (async () => {
        const fresh = await freshSchema();
        const s = await open(fresh.schemaUrl);
        await s.write(a);
        return { sink: s, ...fresh };
      })();
      await writer.close();
      // The schema as version 1 left it after a prune: a checkpoint without key_id or signature.
      await tamperWith(schema, (db) =>
        db.query(`ALTER TABLE audit_checkpoints DROP COLUMN key_id, DROP COLUMN signature;
          DELETE FROM audit_schema_versions WHERE version > 1;
          DELETE FROM audit_records WHERE seq <= 5;
          INSERT INTO audit_checkpoints (stream, seq, hash, at, pruned_at) VALUES ('${A}', 5, '${a[4]!.hash}', ${a[4]!.at}, ${T0 + 99_000})`),
      );
      const sink = await open(schemaUrl);
      assert.deepEqual(await sink.checkpoints(), [{ stream: A, seq: 5, hash: a[4]!.hash, at: a[4]!.at, prunedAt: T0 + 99_000, keyId: null, signature: null }]);
      const f = await sink.verify(TRUSTED);
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['checkpoint', A, 5]);
      assert.match(f.ok ? '' : f.message, /it is not signed by the audit signing key .*\(or it was written before checkpoints were signed\)/);
      assert.deepEqual((await sink.prune(T0 + 10_500, KEY)).held, [{ stream: A, reason: 'its checkpoint (record 5, pruned) is not signed' }]);
    });

    it('verifies a pruned log only with a key: without one it is unverifiable, never a pass', async () => {
      const { sink } = await sinkWith(streamOf(A, 20));
      await sink.prune(T0 + 10_500, KEY);
      const f = await sink.verify();
      assert.deepEqual(f.ok ? f : [f.problem, f.stream, f.seq], ['unverifiable', A, 10]);
      assert.deepEqual(await sink.verify({ publicKeys: [OTHER.publicKey, KEY.publicKey] }), { ok: true, records: 10, streams: 1, duplicates: 0 });
    });
  });

  describe('PostgreSQL audit sink: COPY and schema version 3', () => {
    /** A sink of one connection, so that a write after a failed one runs on the very connection the failure left. */
    async function oneConnection(): Promise<{ sink: PostgresAuditSink; schema: string; schemaUrl: string }> {
      const { schema, schemaUrl } = await freshSchema();
      const sink = await openPostgresAuditSink(schemaUrl, { poolSize: 1 });
      sinks.push(sink);
      return { sink, schema, schemaUrl };
    }

    it('stores values holding what COPY gives a meaning to exactly: backslashes, tabs, newlines, its separator and NULL marker, empty strings', async () => {
      const base = event(1);
      const odd = 'str\\eam\t\x1f\x1e\\N';
      const records = [
        ...chained(A, [
          {
            ...base,
            requestId: '\x1e',
            grantId: 'g\x1fh',
            grantLabel: '\\N',
            session: '\x1e\x1e',
            tool: 'to\tol\n',
            rule: '\\.',
            reason: 'line 1\r\nline 2 \\ end \\',
            policyVersion: '\\x41',
            upstreamStatus: '\\101',
            error: '',
            arguments: { 'a\\b': 'c"d\n', tab: '\t', marks: '\x1f\x1e', nested: ['\\N', '\x1e'], é: 'ü' },
          },
          // Only the arguments need escaping here: the row is otherwise joined as it is.
          { ...event(2), arguments: { path: 'C:\\temp\\"quoted"' } },
          { ...event(3), requestId: '', grantId: '\x1e ', error: ' \x1e' },
        ]),
        ...chained(odd, [event(4), event(5)]),
      ];
      const { sink, schema } = await sinkWith(records);
      const byStream = [...records].sort((x, y) => (x.stream < y.stream ? -1 : x.stream > y.stream ? 1 : x.seq - y.seq));
      assert.deepStrictEqual(await all(sink), byStream);
      assert.deepStrictEqual((await sink.query({ order: 'oldest' })).records, records);
      assert.deepStrictEqual((await sink.query({ grant: 'g\x1fh' })).records, [records[0]]);
      assert.deepEqual(await sink.verify(), { ok: true, records: 5, streams: 2, duplicates: 0 });
      const stored = await tamperWith(schema, async (db) => (await db.query(`SELECT request_id, session, error, record_json FROM audit_records WHERE stream = $1 ORDER BY seq`, [A])).rows);
      assert.deepEqual(
        stored,
        [
          { request_id: '\x1e', session: '\x1e\x1e', error: '', record_json: null },
          { request_id: '2', session: 'session-0', error: null, record_json: null },
          { request_id: '', session: 'session-1', error: ' \x1e', record_json: null },
        ],
        'the columns hold the values themselves (an empty string is not NULL), none kept whole as JSON',
      );
      // A batch delivered again takes the redelivery path, which must find these places too.
      await sink.write(records);
      assert.equal(await rowCount(schema), 5);
    });

    it('sends a large batch in slices and stores none of it when its last slice fails, and the connection serves the next write', async () => {
      const records = streamOf(A, 1_200, (k) => T0 + k);
      const { sink, schema } = await oneConnection();
      await sink.write(records.slice(0, 300));
      // A value the server refuses near the end of a batch of 900: the COPY fails after several slices.
      const bad = [...records.slice(300, 1_150), { ...records[1_150]!, seq: 1_150.5 }, ...records.slice(1_151)];
      await assert.rejects(sink.write(bad), /bigint/);
      assert.equal(await rowCount(schema), 300);
      // A record in the last slice claiming a stored place: the COPY fails on the key, and the redelivery path finds it.
      const forged = chain(A, records[3], { ...event(5), tool: 'export_all' });
      await assert.rejects(sink.write([...records.slice(300, 1_199), forged]), /stream [^ ]+ already has a different record 5 .*the batch was not written$/);
      assert.equal(await rowCount(schema), 300);
      // Delivered again from record 201: the first 100 are passed over, the rest stored in order.
      await sink.write(records.slice(200));
      assert.deepStrictEqual(await all(sink), records);
      assert.deepStrictEqual((await sink.query({ order: 'oldest', limit: 1_000 })).records, records.slice(0, 1_000));
      assert.deepEqual(await sink.verify(), { ok: true, records: 1_200, streams: 1, duplicates: 0 });
    });

    it('rejects a batch it cannot encode with the reason, stores none of it, and the connection serves the next write', async () => {
      const records = streamOf(A, 400);
      const { sink, schema } = await oneConnection();
      const unencodable = [...records.slice(0, 350), { ...records[350]!, arguments: { n: 1n } }, ...records.slice(351)];
      await assert.rejects(sink.write(unencodable), /BigInt/);
      assert.equal(await rowCount(schema), 0);
      await sink.write(records);
      assert.deepEqual(await sink.verify(), { ok: true, records: 400, streams: 1, duplicates: 0 });
    });

    /** The bucket rows of `schema`, as `kind:value:bucket` in order, duplicates included. */
    const bucketRows = (schema: string) =>
      tamperWith(schema, async (db) =>
        (await db.query<{ row: string }>(`SELECT kind || ':' || value || ':' || bucket AS row FROM audit_record_buckets ORDER BY kind, value, bucket`)).rows.map((r) => r.row),
      );
    /** The bucket rows `records` need, as bucketRows() gives them. */
    const needed = (records: readonly AuditRecord[]) =>
      [
        ...new Set(
          records.flatMap((r) => {
            const b = Math.floor(r.at / 64);
            return [...(r.tool === null ? [] : [`tool:${r.tool}:${b}`]), `server:${r.server}:${b}`, `decision:${r.decision}:${b}`];
          }),
        ),
      ].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));

    it('upgrades a table of schema version 1 in place: buckets made from its records, and the old records still verify and are found', async () => {
      const records = streamOf(A, 40, (k) => T0 + k * 20);
      const { schema, schemaUrl } = await freshSchema();
      const first = await open(schemaUrl);
      await first.write(records.slice(0, 30));
      await first.close();
      // The schema as version 1 left it: an index per filter, no buckets, checkpoints unsigned.
      await tamperWith(schema, (db) =>
        db.query(`DROP TABLE audit_record_buckets;
          DROP TRIGGER audit_records_pruned ON audit_records;
          DROP FUNCTION audit_record_buckets_prune();
          DROP INDEX audit_records_at;
          CREATE INDEX audit_records_at ON audit_records (at, id);
          CREATE INDEX audit_records_tool ON audit_records (tool, at, id);
          CREATE INDEX audit_records_decision ON audit_records (decision, at, id);
          CREATE INDEX audit_records_server ON audit_records (server, at, id);
          ALTER TABLE audit_checkpoints DROP COLUMN key_id, DROP COLUMN signature;
          DELETE FROM audit_schema_versions WHERE version > 1`),
      );
      const layout = () =>
        tamperWith(schema, async (db) => ({
          indexes: (await db.query<{ def: string }>('SELECT indexdef AS def FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname', [schema, 'audit_records'])).rows.map(
            (r) => r.def.replace(/^.* USING btree /, ''),
          ),
          versions: (await db.query<{ version: number }>('SELECT version FROM audit_schema_versions ORDER BY version')).rows.map((r) => r.version),
        }));
      assert.deepEqual(await layout(), {
        indexes: ['(at, id)', '(decision, at, id)', '(grant_id, at, id)', '(stream, seq)', '(server, at, id)', '(tool, at, id)'],
        versions: [1],
      });

      const sink = await open(schemaUrl);
      assert.deepEqual(await layout(), { indexes: ['(at, id, tool, server, decision)', '(grant_id, at, id)', '(stream, seq)'], versions: [1, 2, 3] });
      assert.deepEqual(await bucketRows(schema), needed(records.slice(0, 30)), 'a bucket row for each tool, server and decision of every bucket, once');
      assert.deepEqual(await sink.verify(), { ok: true, records: 30, streams: 1, duplicates: 0 });
      await sink.write(records.slice(25));
      assert.deepStrictEqual(await all(sink), records);
      assert.deepEqual(await sink.verify(), { ok: true, records: 40, streams: 1, duplicates: 0 });
      assert.deepEqual(await bucketRows(schema), needed(records));
      const newestFirst = [...records].reverse();
      for (const filter of [{ tool: 'search' }, { server: 'crm' }, { decision: 'deny' }, { decision: 'allow' as const, tool: 'update_contact' }] as AuditQuery[]) {
        const expected = newestFirst.filter((r) => (filter.tool ?? r.tool) === r.tool && (filter.server ?? r.server) === r.server && (filter.decision ?? r.decision) === r.decision);
        assert.ok(expected.length > 0);
        assert.deepStrictEqual((await sink.query({ ...filter, limit: 1_000 })).records, expected, JSON.stringify(filter));
      }
    });

    it('writes a batch\'s bucket rows with its records, none when the batch fails, and each once however often its buckets come back', async () => {
      const records = streamOf(A, 600, (k) => T0 + k * 3);
      const { sink, schema, schemaUrl } = await oneConnection();
      await sink.write(records.slice(0, 200));
      assert.deepEqual(await bucketRows(schema), needed(records.slice(0, 200)));
      // A batch whose COPY fails after its bucket rows went in: those go too, and are not remembered.
      const failing = records.slice(200, 400).map((r, i) => (i === 150 ? { ...r, seq: 1.5 } : r));
      await assert.rejects(sink.write(failing), /bigint/);
      assert.deepEqual(await bucketRows(schema), needed(records.slice(0, 200)));
      // The rest, in batches that share buckets with each other and with what is stored.
      for (let i = 200; i < 600; i += 50) await sink.write(records.slice(i, i + 50));
      assert.deepEqual(await bucketRows(schema), needed(records), 'no pair twice, though batches share buckets');
      // Delivered again, and by a second sink (another gateway) that knows none of them.
      await sink.write(records.slice(100, 300));
      const other = await open(schemaUrl);
      await other.write(records.slice(500));
      assert.deepEqual(await bucketRows(schema), needed(records));
      // Rows two gateways added at the same moment may repeat: queries still give each record once.
      await tamperWith(schema, (db) => db.query(`INSERT INTO audit_record_buckets SELECT * FROM audit_record_buckets`));
      const expected = [...records].reverse().filter((r) => r.tool === 'search' && r.decision === 'allow');
      assert.deepStrictEqual((await sink.query({ tool: 'search', decision: 'allow', limit: 1_000 })).records, expected);
    });

    it('pages through many records a bucket with tool, server and decision filters, either way, each record once', async () => {
      // Two streams in the same milliseconds, 4 records a ms on average: about 250 a bucket.
      const a = streamOf(A, 3_000, (k) => T0 + Math.floor(k / 2));
      const b = streamOf(B, 3_000, (k) => T0 + Math.floor(k / 2));
      const { sink } = await sinkWith([]);
      const order: AuditRecord[] = [];
      for (let i = 0; i < 3_000; i += 500) {
        const batch = [...a.slice(i, i + 500), ...b.slice(i, i + 500)];
        await sink.write(batch);
        order.push(...batch);
      }
      const written = new Map(order.map((r, i) => [r, i]));
      const byTime = [...order].sort((x, y) => x.at - y.at || written.get(x)! - written.get(y)!);
      const filters: AuditQuery[] = [
        { tool: 'delete_contact' },
        { server: 'github', decision: 'allow' },
        { decision: 'hidden' },
        { tool: 'search', server: 'crm', since: T0 + 100, until: T0 + 1_300 },
        { decision: 'deny', since: T0 + 1_400.5 },
        { tool: 'search', until: T0 + 3 },
      ];
      for (const filter of filters) {
        const match = (r: AuditRecord) =>
          (filter.tool ?? r.tool) === r.tool &&
          (filter.server ?? r.server) === r.server &&
          (filter.decision ?? r.decision) === r.decision &&
          r.at >= Math.ceil(filter.since ?? -Infinity) &&
          r.at < Math.ceil(filter.until ?? Infinity);
        const expected = byTime.filter(match);
        assert.ok(expected.length > 0, JSON.stringify(filter));
        for (const way of ['oldest', 'newest'] as const) {
          const seen: AuditRecord[] = [];
          let after: string | undefined;
          do {
            const page = await sink.query({ ...filter, order: way, limit: 37, after });
            seen.push(...page.records);
            after = page.next;
            assert.ok(page.records.length === 37 || after === undefined, 'only the last page is short');
          } while (after !== undefined);
          assert.deepStrictEqual(seen, way === 'oldest' ? expected : [...expected].reverse(), `${way} ${JSON.stringify(filter)}`);
        }
      }
    });

    it('deletes the bucket rows of pruned time with the records, keeping a minute before the oldest record left', async () => {
      // A record every 2 s for 10 minutes: prune the first 8.
      const records = streamOf(A, 300, (k) => T0 + k * 2_000);
      const { sink, schema } = await sinkWith(records);
      assert.deepEqual(await bucketRows(schema), needed(records));
      const cut = T0 + 480_000;
      const { records: pruned } = await sink.prune(cut, KEY);
      assert.equal(pruned, 239);
      const left = records.slice(239);
      const keep = Math.floor(left[0]!.at / 64) - Math.ceil(60_000 / 64);
      assert.deepEqual(
        await bucketRows(schema),
        needed(records).filter((row) => Number(row.split(':').pop()) >= keep),
        'the rows of buckets more than a minute older than the oldest record left are gone',
      );
      assert.ok((await bucketRows(schema)).length > needed(left).length, 'the minute before it stays');
      assert.deepStrictEqual((await sink.query({ tool: 'search', limit: 1_000, order: 'oldest' })).records, left.filter((r) => r.tool === 'search'));
      assert.deepEqual(await sink.verify(TRUSTED), { ok: true, records: 61, streams: 1, duplicates: 0 });
      // Pruning everything leaves the bucket rows (there is no oldest record to count from), and writing goes on.
      await sink.prune(T0 + 10_000_000, KEY);
      const more = chain(A, records[299], event(301, T0 + 700_000));
      await sink.write([more]);
      assert.deepStrictEqual((await sink.query({ tool: more.tool! })).records, [more]);
    });
  });
}

if (DATABASE_URL === undefined) {
  if (REQUIRED) {
    it('the PostgreSQL audit sink is tested against DATABASE_URL, which REQUIRE_SERVICES=1 makes mandatory', () => {
      assert.fail('REQUIRE_SERVICES=1 but DATABASE_URL is not set');
    });
  } else {
    it('the PostgreSQL audit sink is tested against DATABASE_URL', { skip: 'DATABASE_URL is not set (REQUIRE_SERVICES=1 makes this a failure)' }, () => {});
  }
} else {
  sinkTests(DATABASE_URL);
}
