import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { addLoggerSecrets, createLogger, scrub } from './logger.js';

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

test('a logger made without secrets redacts, from then on, the ones a server added at run time brings, in its children too', async () => {
  const sink = new PassThrough();
  let text = '';
  sink.on('data', (c: Buffer) => (text += c.toString()));
  const log = createLogger({ level: 'info', destination: sink });
  const child = log.child({ server: 'late' });
  addLoggerSecrets(log, ['late-key-123456', 'ab']);
  child.info('stderr: token late-key-123456');
  log.info('short values such as ab are left alone');
  await new Promise((r) => setImmediate(r));
  assert.match(text, /token \[redacted\]/);
  assert.doesNotMatch(text, /late-key-123456/);
  assert.match(text, /such as ab are/);
});
