import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lineSplitter } from './lines.js';

test('passes on each complete line, keeps a partial one for the next chunk, and skips blank lines', () => {
  const lines: string[] = [];
  const feed = lineSplitter((l) => lines.push(l));
  feed('{"a":1}\n{"b"');
  assert.deepEqual(lines, ['{"a":1}']);
  feed(':2}\r\n\n  \n{"c":3}');
  assert.deepEqual(lines, ['{"a":1}', '{"b":2}']);
  feed('\n');
  assert.deepEqual(lines, ['{"a":1}', '{"b":2}', '{"c":3}']);
});

test('splits a chunk that holds many messages in one pass', () => {
  const lines: string[] = [];
  const feed = lineSplitter((l) => lines.push(l));
  feed(Array.from({ length: 1000 }, (_, i) => `{"id":${i}}`).join('\n') + '\n');
  assert.equal(lines.length, 1000);
  assert.equal(lines[999], '{"id":999}');
});
