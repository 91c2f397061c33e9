/** Hot reload: a policy file changed on disk governs the next call; a broken one changes nothing. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { connectHttp, textOf, type V1Connection } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { REPO_ROOT } from '../helpers/processes.js';
import { captureLogger } from '../helpers/safety-helpers.js';

const FIXTURE = [process.execPath, path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js')];

async function until(what: string, predicate: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('a gateway whose policy file changes while it runs', () => {
  let tmp: TempDir;
  let policyFile: string;
  let gw: TestGateway;
  let conn: V1Connection;
  let listChanged = 0;
  const log = captureLogger('info');

  const writePolicy = (p: unknown) => writeFileSync(policyFile, typeof p === 'string' ? p : JSON.stringify(p));

  before(async () => {
    tmp = tempDir();
    policyFile = path.join(tmp.path, 'policy.json');
    writePolicy({ version: '1', default: 'allow' });
    gw = await startTestGateway(
      `
servers:
  fixture:
    command: ${yamlValue(FIXTURE)}
    policy: ${yamlValue(policyFile)}
`,
      { logger: log.logger },
    );
    conn = await connectHttp(gw.endpoint('fixture'), {
      setup: (c) => c.setNotificationHandler(ToolListChangedNotificationSchema, () => void listChanged++),
    });
    // The client opens its server-message stream after initialize; notifications need it.
    await until('the client stream', () => [...gw.gateway.sessions.values()].some((s) => s.toClient !== undefined));
  });
  after(async () => {
    await conn?.close();
    await gw?.stop();
    tmp?.remove();
  });

  test('tells clients the server may announce tool-list changes', () => {
    assert.equal(conn.client.getServerCapabilities()?.tools?.listChanged, true);
  });

  test('hides a tool on the next call after the file hides it, and tells the client its tool list changed', async () => {
    assert.ok((await conn.client.listTools()).tools.some((t) => t.name === 'echo'));
    writePolicy({ version: '1', default: 'allow', hide: ['echo'] });
    await until('tools/list_changed', () => listChanged === 1);
    assert.equal((await conn.client.listTools()).tools.some((t) => t.name === 'echo'), false);
    await assert.rejects(conn.client.callTool({ name: 'echo', arguments: { text: 'x' } }), /Unknown tool: echo/);
  });

  test('keeps the policy in force when the new file is invalid, and logs where it is wrong', async () => {
    const before = gw.gateway.server('fixture').policy.version;
    writePolicy('{ "version": "1", "default": "maybe" }');
    await until('the rejection in the log', () => log.text().includes('policy change rejected'));
    assert.equal(gw.gateway.server('fixture').policy.version, before);
    assert.match(log.text(), /\/default/);
    await assert.rejects(conn.client.callTool({ name: 'echo', arguments: { text: 'x' } }), /Unknown tool: echo/);
  });

  test('applies a change that leaves the visible tools as they were without telling the client', async () => {
    const told = listChanged;
    writePolicy({ version: '1', default: 'allow', hide: ['echo'], tools: { sleep: { action: 'deny', reason: 'no sleeping today' } } });
    await until('the new policy', () => gw.gateway.server('fixture').policy.document.tools?.sleep !== undefined);
    const result = await conn.client.callTool({ name: 'sleep', arguments: { ms: 1 } });
    assert.equal(result.isError, true);
    assert.match(textOf(result), /no sleeping today/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(listChanged, told);
  });
});
