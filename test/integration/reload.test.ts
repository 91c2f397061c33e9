/** Hot reload: a policy file changed on disk governs the next call; a broken one changes nothing. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
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

describe('a gateway whose policy files are replaced rather than written in place', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  const log = captureLogger('debug');
  const rereads = () => log.lines.filter((l) => l.msg === 'reading the policy file again').length;
  /** Whether the policy in force for `server` names `tool`: each change below adds a tool of its own. */
  const names = (server: string, tool: string) => gw.gateway.server(server).policy.document.tools?.[tool] !== undefined;
  const policyWith = (tool: string) => JSON.stringify({ version: '1', default: 'allow', tools: { [tool]: {} } });

  /** What Kubernetes does to a ConfigMap volume: the new files in a new folder, then one symlink switched to it. */
  const switchConfigMap = (from: string, to: string, tool: string) => {
    mkdirSync(path.join(tmp.path, to));
    writeFileSync(path.join(tmp.path, to, 'policy.json'), policyWith(tool));
    symlinkSync(to, path.join(tmp.path, '..data_tmp'));
    renameSync(path.join(tmp.path, '..data_tmp'), path.join(tmp.path, '..data'));
    rmSync(path.join(tmp.path, from), { recursive: true });
  };
  /** What many editors do on save: write a new file beside the old one, then rename it over. */
  const saveByRename = (tool: string) => {
    writeFileSync(path.join(tmp.path, 'edited.json.tmp'), policyWith(tool));
    renameSync(path.join(tmp.path, 'edited.json.tmp'), path.join(tmp.path, 'edited.json'));
  };

  before(async () => {
    tmp = tempDir();
    mkdirSync(path.join(tmp.path, '..v1'));
    writeFileSync(path.join(tmp.path, '..v1', 'policy.json'), policyWith('v1'));
    symlinkSync('..v1', path.join(tmp.path, '..data'));
    symlinkSync('..data/policy.json', path.join(tmp.path, 'mounted.json'));
    writeFileSync(path.join(tmp.path, 'edited.json'), policyWith('first'));
    gw = await startTestGateway(
      `
servers:
  mounted:
    command: ${yamlValue(FIXTURE)}
    policy: ${yamlValue(path.join(tmp.path, 'mounted.json'))}
  edited:
    command: ${yamlValue(FIXTURE)}
    policy: ${yamlValue(path.join(tmp.path, 'edited.json'))}
`,
      { logger: log.logger },
    );
  });
  after(async () => {
    await gw?.stop();
    tmp?.remove();
  });

  test('reads a ConfigMap volume again when its ..data symlink is switched to a new folder', async () => {
    assert.ok(names('mounted', 'v1'));
    switchConfigMap('..v1', '..v2', 'v2');
    await until('the policy of ..v2', () => names('mounted', 'v2'));
  });

  test('follows the path, not the file it named: the next switch is read too', async () => {
    switchConfigMap('..v2', '..v3', 'v3');
    await until('the policy of ..v3', () => names('mounted', 'v3'));
  });

  test('reads a file saved by renaming a new one over it, and every save after that', async () => {
    saveByRename('second');
    await until('the second save', () => names('edited', 'second'));
    saveByRename('third');
    await until('the third save', () => names('edited', 'third'));
    writeFileSync(path.join(tmp.path, 'edited.json'), policyWith('written in place'));
    await until('the change written in place', () => names('edited', 'written in place'));
  });

  test('reads the saves after a rename even while something still holds the replaced file open', async () => {
    const held = openSync(path.join(tmp.path, 'edited.json'), 'r');
    try {
      saveByRename('while held');
      await until('the save while the old file is held', () => names('edited', 'while held'));
      writeFileSync(path.join(tmp.path, 'edited.json'), policyWith('after it'));
      await until('the change after it', () => names('edited', 'after it'));
    } finally {
      closeSync(held);
    }
  });

  test('keeps the policy in force while the file is gone, and loads it once it is back', async () => {
    const version = gw.gateway.server('edited').policy.version;
    unlinkSync(path.join(tmp.path, 'edited.json'));
    await until('the log saying the file is gone', () => log.text().includes('the policy file is gone'));
    assert.equal(gw.gateway.server('edited').policy.version, version);
    writeFileSync(path.join(tmp.path, 'edited.json'), policyWith('restored'));
    await until('the restored policy', () => names('edited', 'restored'));
    assert.match(log.text(), /the policy file is back/);
  });

  test('does not read the policy again when other files of its folder change, such as an audit database kept beside it', async () => {
    const before = rereads();
    for (let i = 0; i < 20; i++) writeFileSync(path.join(tmp.path, 'audit.db-wal'), `write ${i}`);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(rereads(), before);
  });

  test('leaves the other server alone whatever happens to this one', () => {
    assert.ok(names('mounted', 'v3'));
  });
});
