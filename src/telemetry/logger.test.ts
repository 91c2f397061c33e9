import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { createLogger, scrub } from './logger.js';

test('scrub replaces a secret inside strings, nested objects, arrays and errors', () => {
  const out = scrub({ msg: 'Bearer sk-123456', nested: { list: ['x sk-123456 y'] }, err: new Error('sk-123456 refused') }, ['sk-123456']);
  assert.doesNotMatch(JSON.stringify(out), /sk-123456/);
  assert.match(JSON.stringify(out), /\[redacted\]/);
});

test('a logger given the config secrets never writes them, in the message or in a field', async () => {
  const sink = new PassThrough();
  let text = '';
  sink.on('data', (c: Buffer) => (text += c.toString()));
  const log = createLogger({ level: 'info', secrets: ['tok-abcdef'], destination: sink });
  log.info({ command: ['server', '--key', 'tok-abcdef'] }, 'starting with tok-abcdef');
  log.child({ server: 's' }).warn('stderr: using key tok-abcdef');
  await new Promise((r) => setImmediate(r));
  assert.match(text, /starting with \[redacted\]/);
  assert.doesNotMatch(text, /tok-abcdef/);
});
