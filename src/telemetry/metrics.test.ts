import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Metrics } from './metrics.js';

/** The value of `policylayer_tool_calls_total` for one server and outcome in an exposition text. */
function calls(text: string, server: string, outcome: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`policylayer_tool_calls_total{server="${server}",outcome="${outcome}"}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

test('calls are counted by server and outcome, and every scrape shows the totals so far', async () => {
  const m = new Metrics();
  m.call('files', 'allowed');
  m.call('files', 'allowed');
  m.call('files', 'denied');
  m.call('payments', 'allowed');
  let text = await m.text();
  assert.equal(calls(text, 'files', 'allowed'), 2);
  assert.equal(calls(text, 'files', 'denied'), 1);
  assert.equal(calls(text, 'payments', 'allowed'), 1);
  assert.equal(calls(text, 'payments', 'denied'), undefined, 'an outcome never seen is not shown');

  // A second scrape with nothing new shows the same totals, not twice as much.
  text = await m.text();
  assert.equal(calls(text, 'files', 'allowed'), 2);

  m.call('files', 'allowed');
  m.call('payments', 'hidden');
  text = await m.text();
  assert.equal(calls(text, 'files', 'allowed'), 3);
  assert.equal(calls(text, 'files', 'denied'), 1);
  assert.equal(calls(text, 'payments', 'hidden'), 1);
});
