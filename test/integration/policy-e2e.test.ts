/**
 * The policy, end to end: a real SDK client, the real gateway loaded from a YAML config, and real
 * MCP servers from npm (server-everything on stdio and over HTTP, server-filesystem and
 * server-memory on stdio). What the operator wrote is what the agent experiences, and a refused
 * call never reaches the server.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { connectHttp, type V1Connection, textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { npmServerCommand, startEverythingHttp, tappedCommand, type HttpServerProcess, toolCallsIn } from '../helpers/processes.js';

/** The seed page's policy file, byte for byte: the contract that must load unchanged. */
const SEED_POLICY =
  '{"version":"1","default":"deny","tools":{"create_session":{"limits":[{"counter":"create_session_rate","window":"minute","max":10,"scope":"grant"}]}}}';

const EVERYTHING_POLICY = {
  version: '1',
  default: 'deny',
  hide: ['get-env', 'trigger-*'],
  tools: {
    echo: {},
    'get-sum': {},
    'get-tiny-image': { action: 'deny', reason: 'images are not needed for this agent' },
    'toggle-*': { action: 'deny' },
  },
};

const FILESYSTEM_POLICY = {
  version: '1',
  default: 'deny',
  hide: ['move_file'],
  tools: {
    read_text_file: {},
    list_directory: {},
    write_file: { action: 'deny', reason: 'the sandbox is read-only' },
  },
};

const MEMORY_POLICY = {
  version: '1',
  default: 'allow',
  hide: ['delete_observations', 'delete_relations'],
  tools: { delete_entities: { action: 'deny', reason: 'memories are append-only' } },
};

let tmp: TempDir;
let sandbox: string;
let tapLog: string;
let everythingHttp: HttpServerProcess;
let gw: TestGateway;
const open = new Set<V1Connection>();

before(async () => {
  tmp = tempDir();
  tapLog = path.join(tmp.path, 'everything-received.jsonl');
  sandbox = path.join(tmp.path, 'sandbox');
  mkdirSync(sandbox);
  writeFileSync(path.join(sandbox, 'hello.txt'), 'hello from the sandbox\n');
  writeFileSync(path.join(tmp.path, 'seed.policy.json'), SEED_POLICY);
  everythingHttp = await startEverythingHttp();
  // Relative policy paths resolve against the config's folder, as they do for a gateway.yaml on disk.
  gw = await startTestGateway(
    `
servers:
  everything-stdio:
    command: ${yamlValue(tappedCommand(tapLog, npmServerCommand('everything')))}
    policy: ${yamlValue(EVERYTHING_POLICY)}
  everything-http:
    url: ${everythingHttp.url}
    policy: ${yamlValue(EVERYTHING_POLICY)}
  files:
    command: ${yamlValue(npmServerCommand('filesystem', sandbox))}
    policy: ${yamlValue(FILESYSTEM_POLICY)}
  memory:
    command: ${yamlValue(npmServerCommand('memory'))}
    env: { MEMORY_FILE_PATH: ${yamlValue(path.join(tmp.path, 'memory.jsonl'))} }
    policy: ${yamlValue(MEMORY_POLICY)}
  seeded:
    command: ${yamlValue(npmServerCommand('memory'))}
    env: { MEMORY_FILE_PATH: ${yamlValue(path.join(tmp.path, 'seeded-memory.jsonl'))} }
    policy: seed.policy.json
`,
    { dir: tmp.path },
  );
});

after(async () => {
  await Promise.allSettled([...open].map((c) => c.close()));
  await gw?.stop();
  await everythingHttp?.stop();
  tmp?.remove();
});

async function connect(server: string): Promise<V1Connection> {
  const conn = await connectHttp(gw.endpoint(server));
  open.add(conn);
  return conn;
}

async function release(conn: V1Connection): Promise<void> {
  open.delete(conn);
  await conn.close();
}



for (const server of ['everything-stdio', 'everything-http']) {
  describe(`policy on server-everything over ${server === 'everything-stdio' ? 'stdio' : 'Streamable HTTP'}`, () => {
    test('hidden tools, by name and by glob, are absent from tools/list; denied and unlisted tools stay listed', async () => {
      const c = await connect(server);
      const names = (await c.client.listTools()).tools.map((t) => t.name);
      assert.ok(!names.includes('get-env'), 'get-env is hidden by name');
      assert.deepEqual(
        names.filter((n) => n.startsWith('trigger-')),
        [],
        'trigger-* is hidden by glob',
      );
      for (const n of ['echo', 'get-sum', 'get-tiny-image', 'toggle-simulated-logging', 'get-structured-content']) {
        assert.ok(names.includes(n), `${n} is still listed: only hide removes a tool from the list`);
      }
      await release(c);
    });

    test('calling a hidden tool answers as an unknown tool (-32602) and never reaches the server', async () => {
      const c = await connect(server);
      for (const name of ['get-env', 'trigger-long-running-operation']) {
        const err = await c.client.callTool({ name, arguments: {} }).then(
          () => assert.fail(`${name} should not be callable`),
          (e: unknown) => e,
        );
        assert.ok(err instanceof McpError, `a JSON-RPC error, not a result: ${String(err)}`);
        assert.equal(err.code, -32602);
        assert.match(err.message, new RegExp(`Unknown tool: ${name}`));
        assert.doesNotMatch(err.message, /polic/i, 'the answer does not reveal that a policy hid the tool');
      }
      if (server === 'everything-stdio') {
        assert.ok(!toolCallsIn(tapLog).includes('get-env'));
        assert.ok(!toolCallsIn(tapLog).includes('trigger-long-running-operation'));
      }
      await release(c);
    });

    test('a deny rule with a reason answers isError, saying it was blocked by policy, naming the rule and the reason', async () => {
      const c = await connect(server);
      const result = await c.client.callTool({ name: 'get-tiny-image', arguments: {} });
      assert.equal(result.isError, true);
      const t = textOf(result);
      assert.match(t, /Blocked by PolicyLayer policy/);
      assert.match(t, /'get-tiny-image'/);
      assert.match(t, /images are not needed for this agent/);
      assert.match(t, /rule \/tools\/get-tiny-image\b/);
      if (server === 'everything-stdio') assert.ok(!toolCallsIn(tapLog).includes('get-tiny-image'), 'the server never saw the call');
      await release(c);
    });

    test('a glob deny rule without a reason names the rule that matched', async () => {
      const c = await connect(server);
      const result = await c.client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
      assert.equal(result.isError, true);
      assert.match(textOf(result), /Blocked by PolicyLayer policy/);
      assert.match(textOf(result), /rule \/tools\/toggle-\*/);
      await release(c);
    });

    test('default deny refuses a tool the policy does not list, and allows the ones listed as {}', async () => {
      const c = await connect(server);
      const refused = await c.client.callTool({ name: 'get-structured-content', arguments: { location: 'Chicago' } });
      assert.equal(refused.isError, true);
      assert.match(textOf(refused), /Blocked by PolicyLayer policy/);
      assert.match(textOf(refused), /default: deny/);
      assert.match(textOf(refused), /\(default deny\)/);
      if (server === 'everything-stdio') assert.ok(!toolCallsIn(tapLog).includes('get-structured-content'));
      const echo = await c.client.callTool({ name: 'echo', arguments: { message: 'allowed' } });
      assert.equal(echo.isError, undefined);
      assert.equal(textOf(echo), 'Echo: allowed');
      assert.match(textOf(await c.client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3 } })), /5/);
      if (server === 'everything-stdio') assert.ok(toolCallsIn(tapLog).includes('echo'), 'allowed calls do reach the server');
      await release(c);
    });
  });
}

describe('policy on server-filesystem', () => {
  test('a denied write_file leaves the disk untouched while reads are allowed', async () => {
    const c = await connect('files');
    const target = path.join(sandbox, 'written.txt');
    const denied = await c.client.callTool({ name: 'write_file', arguments: { path: target, content: 'should not exist' } });
    assert.equal(denied.isError, true);
    assert.match(textOf(denied), /Blocked by PolicyLayer policy/);
    assert.match(textOf(denied), /the sandbox is read-only/);
    assert.match(textOf(denied), /rule \/tools\/write_file\b/);
    assert.equal(existsSync(target), false, 'the file was not written');
    const read = await c.client.callTool({ name: 'read_text_file', arguments: { path: path.join(sandbox, 'hello.txt') } });
    assert.equal(read.isError, undefined);
    assert.match(textOf(read), /hello from the sandbox/);
    const listing = await c.client.callTool({ name: 'list_directory', arguments: { path: sandbox } });
    assert.match(textOf(listing), /hello\.txt/);
    await release(c);
  });

  test('a hidden move_file is neither listed nor callable, and unlisted tools are refused by default', async () => {
    const c = await connect('files');
    const names = (await c.client.listTools()).tools.map((t) => t.name);
    assert.ok(!names.includes('move_file'));
    assert.ok(names.includes('create_directory'), 'a default-denied tool is still listed');
    await assert.rejects(
      c.client.callTool({ name: 'move_file', arguments: { source: path.join(sandbox, 'hello.txt'), destination: path.join(sandbox, 'moved.txt') } }),
      (e: unknown) => e instanceof McpError && e.code === -32602 && /Unknown tool: move_file/.test(e.message),
    );
    assert.ok(existsSync(path.join(sandbox, 'hello.txt')), 'the file was not moved');
    const mkdir = await c.client.callTool({ name: 'create_directory', arguments: { path: path.join(sandbox, 'new-dir') } });
    assert.equal(mkdir.isError, true);
    assert.match(textOf(mkdir), /default: deny/);
    assert.equal(existsSync(path.join(sandbox, 'new-dir')), false);
    await release(c);
  });
});

describe('policy on server-memory', () => {
  test('denied deletes keep what allowed writes stored, and hidden deletes answer as unknown tools', async () => {
    const c = await connect('memory');
    const created = await c.client.callTool({
      name: 'create_entities',
      arguments: { entities: [{ name: 'Ada', entityType: 'person', observations: ['wrote the first program'] }] },
    });
    assert.equal(created.isError, undefined);
    const denied = await c.client.callTool({ name: 'delete_entities', arguments: { entityNames: ['Ada'] } });
    assert.equal(denied.isError, true);
    assert.match(textOf(denied), /memories are append-only/);
    assert.match(textOf(denied), /rule \/tools\/delete_entities\b/);
    await assert.rejects(
      c.client.callTool({ name: 'delete_observations', arguments: { deletions: [{ entityName: 'Ada', observations: ['wrote the first program'] }] } }),
      (e: unknown) => e instanceof McpError && e.code === -32602,
    );
    const graph = await c.client.callTool({ name: 'read_graph', arguments: {} });
    assert.match(textOf(graph), /"name": ?"Ada"/);
    assert.match(textOf(graph), /wrote the first program/);
    await release(c);
  });

  test('the seed policy file loads unchanged: create_session is allowed through, every other tool is denied by default', async () => {
    // The file on disk is the seed page's text, byte for byte.
    assert.equal(readFileSync(path.join(tmp.path, 'seed.policy.json'), 'utf8'), SEED_POLICY);
    const policy = gw.config.servers.get('seeded')!.policy;
    assert.ok(policy, 'the seed policy compiled');
    const c = await connect('seeded');
    const create = await c.client.callTool({
      name: 'create_entities',
      arguments: { entities: [{ name: 'Grace', entityType: 'person', observations: [] }] },
    });
    assert.equal(create.isError, true);
    assert.match(textOf(create), /Blocked by PolicyLayer policy/);
    assert.match(textOf(create), /\(default deny\)/);
    assert.equal(existsSync(path.join(tmp.path, 'seeded-memory.jsonl')) && /Grace/.test(readFileSync(path.join(tmp.path, 'seeded-memory.jsonl'), 'utf8')), false);
    // create_session is allowed by the seed policy, so the call reaches this server, which has no such tool.
    const session = await c.client.callTool({ name: 'create_session', arguments: {} }).then(
      (r) => textOf(r),
      (e: Error) => e.message,
    );
    assert.doesNotMatch(session, /Blocked by PolicyLayer policy/);
    assert.match(session, /create_session not found/, 'the server itself answered');
    await release(c);
  });
});
