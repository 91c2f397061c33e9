// The PostgreSQL sink's COPY rows and bucket rows, without a server: what they hold for ordinary
// records and for the values that need escaping or cleaning. postgres.test.ts stores them for real.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chain, type AuditRecord } from '../event.js';
import { BUCKET_MS, bucketOf, insertBucketsSql, StoredBuckets } from './postgres-buckets.js';
import { copyRows, escapeColumn } from './postgres-copy.js';
import { A, event, streamOf, T0 } from './records.fixture.js';

const SEP = '\x1f';
const NULL = '\x1e';
const columns = (row: string) => row.replace(/\n$/, '').split(SEP);

describe('PostgreSQL sink: COPY rows', () => {
  it('writes an ordinary record as its values joined, NULL as the marker, record_json NULL', () => {
    const [r] = streamOf(A, 1);
    const text = copyRows([r!], 0, 1);
    assert.ok(text.endsWith('\n') && text.indexOf('\n') === text.length - 1, 'one line');
    const c = columns(text);
    assert.equal(c.length, 22);
    assert.deepEqual(c.slice(0, 5), [A, '1', String(r!.at), r!.requestId, r!.grantId]);
    assert.equal(c[14], JSON.stringify(r!.arguments));
    assert.equal(c[12], r!.reason ?? NULL);
    assert.deepEqual(c.slice(19), [r!.prevHash, r!.hash, NULL]);
  });

  it('writes NULL for absent arguments and for numbers JSON has no text for, and escapes a value that is the NULL marker', () => {
    const r = { ...streamOf(A, 1)[0]!, arguments: undefined, latencyMs: Number.NaN, resultBytes: Number.POSITIVE_INFINITY, requestId: NULL, error: '' };
    const c = columns(copyRows([r], 0, 1));
    assert.equal(c[14], NULL);
    assert.equal(c[16], NULL);
    assert.equal(c[17], NULL);
    assert.equal(c[3], `\\${NULL}`, 'the marker as a value is escaped, so COPY reads it as text');
    assert.equal(c[18], '', 'an empty string is not NULL');
  });

  it('escapes backslashes, newlines, carriage returns and the separator, and nothing else', () => {
    assert.equal(escapeColumn('a\\b\nc\rd\x1fe\x1ef\tg'), 'a\\\\b\\nc\\rd\\\x1fe\\\x1ef\tg');
    const r = chain(A, undefined, { ...event(1), tool: 'x\x1fy', reason: 'line\nbreak', arguments: { path: 'C:\\temp' } });
    const line = copyRows([r], 0, 1);
    assert.equal(line.split('\n').length, 2, 'the newline of the reason is escaped: one line');
    const c = line.replace(/\n$/, '').split(/(?<!\\)\x1f/);
    assert.equal(c.length, 22, 'the separator in the tool is escaped: 22 columns');
    assert.equal(c[9], 'x\\\x1fy');
    assert.equal(c[12], 'line\\nbreak');
    assert.equal(c[14], JSON.stringify({ path: 'C:\\temp' }).replace(/\\/g, '\\\\'));
    assert.equal(c[21], NULL, 'nothing here needs the record kept whole');
  });

  it('keeps a record with a NUL or a lone surrogate whole in record_json, its columns cleaned', () => {
    const r = chain(A, undefined, { ...event(1), tool: 'nul\0tool', reason: JSON.parse('"\\ud800"') as string });
    const c = copyRows([r], 0, 1).replace(/\n$/, '').split(/(?<!\\)\x1f/);
    assert.equal(c[9], 'nul\ufffdtool');
    assert.equal(c[12], '\ufffd');
    // JSON escapes both, so the whole record is plain text, its backslashes escaped for COPY.
    assert.equal(c[21], escapeColumn(JSON.stringify(r)));
    assert.deepStrictEqual(JSON.parse(c[21]!.replace(/\\\\/g, '\\')) as AuditRecord, r);
  });
});

describe('PostgreSQL sink: bucket rows', () => {
  const T = T0 - (T0 % BUCKET_MS);

  it('gives each tool, server and decision of a bucket once, and none of those already stored', () => {
    const records = streamOf(A, 6, (k) => T + (k <= 3 ? 0 : BUCKET_MS) + k);
    const buckets = new StoredBuckets();
    const rows = buckets.missing(records);
    const expected = new Set(records.flatMap((r) => [`tool ${r.tool} ${bucketOf(r.at)}`, `server ${r.server} ${bucketOf(r.at)}`, `decision ${r.decision} ${bucketOf(r.at)}`]));
    assert.deepEqual(new Set(rows.map((r) => `${r.kind} ${r.value} ${r.bucket}`)), expected);
    assert.equal(rows.length, expected.size, 'each once');
    assert.deepEqual(buckets.missing(records), rows, 'nothing is remembered before it is stored');
    buckets.stored(rows);
    assert.deepEqual(buckets.missing(records), []);
    const later = streamOf(A, 1, () => T + 2 * BUCKET_MS);
    assert.deepEqual(buckets.missing(later).map((r) => r.kind), ['tool', 'server', 'decision']);
  });

  it('leaves out a null tool, and gives the value a column holds where it cannot hold the record\'s', () => {
    const [r] = streamOf(A, 1, () => T);
    const rows = new StoredBuckets().missing([{ ...r!, tool: null, server: 'a\0b' }]);
    assert.deepEqual(
      rows.map((x) => [x.kind, x.value]),
      [
        ['server', 'a\ufffdb'],
        ['decision', r!.decision],
      ],
    );
  });

  it('forgets buckets well behind the newest it stored, so a sink remembers about a second', () => {
    const buckets = new StoredBuckets();
    const old = streamOf(A, 1, () => T);
    buckets.stored(buckets.missing(old));
    buckets.stored(buckets.missing(streamOf(A, 1, () => T + 15 * BUCKET_MS)));
    assert.deepEqual(buckets.missing(old), [], 'fifteen buckets back: remembered');
    buckets.stored(buckets.missing(streamOf(A, 1, () => T + 16 * BUCKET_MS)));
    assert.equal(buckets.missing(old).length, 3, 'sixteen back: forgotten, and inserted again if it comes back');
  });

  it('quotes the values it puts in the INSERT, backslashes and quotes included', () => {
    const sql = insertBucketsSql([
      { kind: 'tool', value: "it's", bucket: 7, known: "it's" },
      { kind: 'server', value: 'back\\slash', bucket: -3, known: 'back\\slash' },
    ]);
    assert.match(sql, /\('tool', 'it''s', 7::bigint\),\n\('server', {1,2}E'back\\\\slash', -3::bigint\)/);
    assert.match(sql, /WHERE NOT EXISTS/);
  });
});
