/**
 * Conditions and shadow mode through the gateway, with the real SDK client and the reference
 * server: a refused call never reaches the server, and a shadowed one does.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { connectHttp, textOf, type V1Connection } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { npmServerCommand, tappedCommand, toolCallsIn } from '../helpers/processes.js';
import { captureLogger } from '../helpers/safety-helpers.js';

const POLICY = {
  version: '1',
  default: 'deny',
  tools: {
    'get-sum': { deny_if: [{ path: 'args.a', op: 'gt', value: 100, reason: 'sums start small' }] },
    echo: { require: [{ path: 'args.message', op: 'regex', value: '^[a-z ]+$' }] },
    'get-tiny-image': { action: 'deny', reason: 'no images', shadow: true },
  },
};

describe('conditions through the gateway', () => {
  let tmp: TempDir;
  let tap: string;
  let gw: TestGateway;
  let conn: V1Connection;
  const log = captureLogger('info');

  before(async () => {
    tmp = tempDir();
    tap = path.join(tmp.path, 'received.jsonl');
    gw = await startTestGateway(
      `
servers:
  everything:
    command: ${yamlValue(tappedCommand(tap, npmServerCommand('everything')))}
    policy: ${yamlValue(POLICY)}
`,
      { logger: log.logger },
    );
    conn = await connectHttp(gw.endpoint('everything'));
  });
  after(async () => {
    await conn?.close();
    await gw?.stop();
    tmp?.remove();
  });

  test('runs a call whose arguments pass every condition', async () => {
    const result = await conn.client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 } });
    assert.equal(result.isError, undefined);
    assert.match(textOf(result), /5/);
  });

  test('refuses a call a deny_if condition matches, naming the condition and its reason, and the server never sees it', async () => {
    const result = await conn.client.callTool({ name: 'get-sum', arguments: { a: 500, b: 1 } });
    assert.equal(result.isError, true);
    assert.match(textOf(result), /Blocked by PolicyLayer policy/);
    assert.match(textOf(result), /sums start small/);
    assert.match(textOf(result), /\/tools\/get-sum\/deny_if\/0/);
    assert.deepEqual(
      toolCallsIn(tap).filter((n) => n === 'get-sum'),
      ['get-sum'],
    );
  });

  test('refuses a call whose argument fails a require regex, saying which argument and why', async () => {
    assert.equal((await conn.client.callTool({ name: 'echo', arguments: { message: 'hello there' } })).isError, undefined);
    const refused = await conn.client.callTool({ name: 'echo', arguments: { message: 'Hello; rm -rf /' } });
    assert.equal(refused.isError, true);
    assert.match(textOf(refused), /args\.message/);
    assert.match(textOf(refused), /\/tools\/echo\/require\/0/);
    assert.equal(toolCallsIn(tap).filter((n) => n === 'echo').length, 1);
  });

  test('lets a call a shadowed rule would refuse go through, and records what the rule would have done', async () => {
    const result = await conn.client.callTool({ name: 'get-tiny-image', arguments: {} });
    assert.equal(result.isError, undefined);
    assert.ok((result.content as Array<{ type: string }>).some((c) => c.type === 'image'));
    assert.match(log.text(), /shadow: the policy would have refused this call/);
    assert.match(log.text(), /no images/);
  });
});

describe('a policy in shadow mode', () => {
  test('hides nothing and refuses nothing, and logs each call it would have refused', async () => {
    const log = captureLogger('info');
    const gw = await startTestGateway(
      `
servers:
  everything:
    command: ${yamlValue(npmServerCommand('everything'))}
    policy: ${yamlValue({ version: '1', default: 'deny', shadow: true, hide: ['echo'] })}
`,
      { logger: log.logger },
    );
    const conn = await connectHttp(gw.endpoint('everything'));
    try {
      assert.ok((await conn.client.listTools()).tools.some((t) => t.name === 'echo'));
      const result = await conn.client.callTool({ name: 'echo', arguments: { message: 'still here' } });
      assert.match(textOf(result), /still here/);
      assert.match(log.text(), /would have refused/);
    } finally {
      await conn.close();
      await gw.stop();
    }
  });
});
