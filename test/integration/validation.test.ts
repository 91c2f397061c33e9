/**
 * Argument validation end to end: the real SDK client, the gateway, and server-everything on
 * stdio behind a tap that records what the server receives. Arguments that do not match the
 * tool's own inputSchema are refused with a reason naming the field and never reach the server.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectHttp, type V1Connection, textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { npmServerCommand, tappedCommand, toolCallsIn } from '../helpers/processes.js';

let tmp: TempDir;
let gw: TestGateway;
let checkedLog: string;
let uncheckedLog: string;
const open = new Set<V1Connection>();

before(async () => {
  tmp = tempDir();
  checkedLog = path.join(tmp.path, 'checked.jsonl');
  uncheckedLog = path.join(tmp.path, 'unchecked.jsonl');
  gw = await startTestGateway(`
servers:
  checked:
    command: ${yamlValue(tappedCommand(checkedLog, npmServerCommand('everything')))}
    policy: ${yamlValue({ version: '1', default: 'deny', tools: { 'get-sum': {}, echo: {} } })}
  unchecked:
    command: ${yamlValue(tappedCommand(uncheckedLog, npmServerCommand('everything')))}
    policy: ${yamlValue({ version: '1', default: 'deny', tools: { 'get-sum': { validate_arguments: false }, echo: {} } })}
`);
});

after(async () => {
  for (const c of open) await c.close().catch(() => {});
  await gw?.stop();
  tmp?.remove();
});

async function connect(server: string): Promise<V1Connection> {
  const c = await connectHttp(gw.endpoint(server));
  open.add(c);
  return c;
}

async function callTool(c: V1Connection, name: string, args: Record<string, unknown>) {
  return (await c.client.callTool({ name, arguments: args })) as { isError?: boolean; content: unknown };
}

describe('argument validation against the tool’s input schema', () => {
  test('a call made before any tools/list is still validated: a string for a number is refused naming the field and never reaches the server', async () => {
    const c = await connect('checked');
    const refused = await callTool(c, 'get-sum', { a: 1, b: 'two' });
    assert.equal(refused.isError, true);
    const text = textOf(refused);
    assert.match(text, /^Blocked by PolicyLayer policy: the call to 'get-sum' was refused\. Reason: argument 'b' must be number/);
    assert.match(text, /\(rule \(input schema\), policy sha256:[0-9a-f]{16}\)\.$/);
    assert.deepEqual(toolCallsIn(checkedLog), []);
  });

  test('a valid call passes and the server answers it', async () => {
    const c = await connect('checked');
    const ok = await callTool(c, 'get-sum', { a: 2, b: 3 });
    assert.equal(ok.isError, undefined);
    assert.match(textOf(ok), /5/);
    assert.deepEqual(toolCallsIn(checkedLog), ['get-sum']);
  });

  test('a missing required argument is named, after the client listed the tools', async () => {
    const c = await connect('checked');
    const { tools } = await c.client.listTools();
    assert.ok(tools.some((t) => t.name === 'get-sum'));
    const refused = await callTool(c, 'get-sum', { a: 2 });
    assert.equal(refused.isError, true);
    assert.match(textOf(refused), /Reason: argument 'b' is required/);
    const echo = await callTool(c, 'echo', {});
    assert.match(textOf(echo), /Reason: argument 'message' is required/);
    assert.deepEqual(toolCallsIn(checkedLog), ['get-sum']);
  });

  test('with validate_arguments: false the bad call reaches the server, which answers it itself', async () => {
    const c = await connect('unchecked');
    const answer = await callTool(c, 'get-sum', { a: 1, b: 'two' }).catch((err: Error) => ({ isError: true, content: err.message }));
    assert.doesNotMatch(JSON.stringify(answer), /PolicyLayer/);
    assert.deepEqual(toolCallsIn(uncheckedLog), ['get-sum']);
    // Other tools of the same server are still validated.
    const echo = await callTool(c, 'echo', { message: 5 });
    assert.match(textOf(echo), /Reason: argument 'message' must be string, got integer 5/);
    assert.deepEqual(toolCallsIn(uncheckedLog), ['get-sum']);
  });
});
