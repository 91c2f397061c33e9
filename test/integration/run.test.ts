/**
 * The command line as a user runs it: `policylayer run --policy P -- <server>` spawned by the real
 * SDK stdio client in place of the server (what Claude Code or Cursor does with .mcp.json), and
 * `policylayer validate` on the shipped example and on a broken config.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { EVERYTHING_BIN, MEMORY_BIN, POLICYLAYER_BIN, ROOT, childrenByKind, isAlive, killGroup, waitFor } from '../helpers/safety-helpers.js';
import { textOf } from '../helpers/clients.js';
import { openSqliteAuditSink } from '../../src/audit/sinks/sqlite.js';

let tmp: string;
const leftovers: number[] = [];

before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'pl-run-'));
});
after(() => {
  for (const pid of leftovers) killGroup(pid);
  rmSync(tmp, { recursive: true, force: true });
});

function policyFile(name: string, policy: unknown): string {
  const file = path.join(tmp, name);
  writeFileSync(file, JSON.stringify(policy));
  return file;
}


/** Starts `policylayer run` the way an MCP client does, with its stderr kept off the test output. */
async function wrap(
  policy: string,
  server: string[],
  env?: Record<string, string>,
  flags: string[] = [],
): Promise<{ client: Client; transport: StdioClientTransport; stderr: () => string }> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [POLICYLAYER_BIN, 'run', '--policy', policy, ...flags, '--', ...server],
    cwd: ROOT,
    env: { ...(process.env as Record<string, string>), ...env },
    stderr: 'pipe',
  });
  let stderr = '';
  transport.stderr?.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const client = new Client({ name: 'policylayer-test', version: '0' });
  try {
    await client.connect(transport);
  } catch (err) {
    await transport.close();
    throw err;
  } finally {
    if (transport.pid !== null) leftovers.push(transport.pid);
  }
  return { client, transport, stderr: () => stderr };
}

describe('policylayer run', () => {
  it('records every decision to the sinks --audit names, and writes them out when the client leaves', async () => {
    const policy = policyFile('audited.json', { version: '1', default: 'allow', tools: { 'get-sum': { action: 'deny', reason: 'no sums' } } });
    const db = path.join(tmp, 'run-audit.db');
    const { client, transport } = await wrap(policy, [process.execPath, EVERYTHING_BIN], undefined, ['--audit', `sqlite:${db}`, '--audit-arguments', 'full']);
    try {
      await client.callTool({ name: 'echo', arguments: { message: 'hi' } });
      await client.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } });
    } finally {
      await transport.close();
    }
    const pid = transport.pid;
    if (pid !== null) await waitFor(() => !isAlive(pid), 5000);
    const sink = openSqliteAuditSink(db);
    try {
      const records = [];
      // A call slower than the flush interval also has a `forwarded` record; only outcomes are compared.
      for await (const r of sink.iterate()) if (r.method === 'tools/call' && r.upstreamStatus !== 'forwarded') records.push(r);
      assert.deepEqual(
        records.map((r) => [r.tool, r.decision, r.upstreamStatus]),
        [
          ['echo', 'allow', 'ok'],
          ['get-sum', 'deny', null],
        ],
      );
      assert.deepEqual(records[0]!.arguments, { message: 'hi' });
      assert.equal((await sink.verify()).ok, true);
    } finally {
      await sink.close();
    }
  });

  it('refuses --audit stdout, which the MCP messages use, and a sink it does not know', () => {
    for (const [sink, word] of [
      ['stdout', /stdout carries the MCP messages/],
      ['mysql://db', /expected sqlite:<path>/],
    ] as const) {
      const r = spawnSync(process.execPath, [POLICYLAYER_BIN, 'run', '--policy', policyFile('p.json', { version: '1', default: 'allow' }), '--audit', sink, '--', 'true'], {
        encoding: 'utf8',
      });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, word);
    }
  });

  it('refuses a --busy-poll-us that is not a whole number of microseconds up to 100000', () => {
    for (const value of ['-5', 'fast', '250000']) {
      const r = spawnSync(process.execPath, [POLICYLAYER_BIN, 'run', '--policy', policyFile('p.json', { version: '1', default: 'allow' }), `--busy-poll-us=${value}`, '--', 'true'], {
        encoding: 'utf8',
      });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, new RegExp(`--busy-poll-us: expected a whole number of microseconds from 0 to 100000, got '${value}'`));
    }
  });

  it('answers calls the same with busy polling off and with a long window', async () => {
    const policy = policyFile('polling.json', { version: '1', default: 'allow' });
    for (const window of ['0', '5000']) {
      const { client } = await wrap(policy, [process.execPath, EVERYTHING_BIN], undefined, ['--busy-poll-us', window]);
      try {
        for (let i = 0; i < 3; i++) {
          const echoed = await client.callTool({ name: 'echo', arguments: { message: `call ${i} at ${window} µs` } });
          assert.match(textOf(echoed), new RegExp(`call ${i} at ${window} µs`));
        }
      } finally {
        await client.close();
      }
    }
  });

  it('wraps server-everything: hidden tools are not listed, a denied call answers isError, an allowed call runs', async () => {
    const policy = policyFile('everything.json', {
      version: '1',
      default: 'allow',
      hide: ['get-env'],
      tools: { 'get-sum': { action: 'deny', reason: 'sums are off today' } },
    });
    const { client } = await wrap(policy, [process.execPath, EVERYTHING_BIN]);
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(names.includes('echo'));
      assert.ok(names.includes('get-sum'), 'a denied tool is still listed');
      assert.ok(!names.includes('get-env'), 'a hidden tool is not listed');

      const denied = await client.callTool({ name: 'get-sum', arguments: { a: 1, b: 2 } });
      assert.equal(denied.isError, true);
      assert.match(textOf(denied), /Blocked by PolicyLayer policy.*sums are off today/);

      const echoed = await client.callTool({ name: 'echo', arguments: { message: 'through the wrapper' } });
      assert.equal(echoed.isError, undefined);
      assert.match(textOf(echoed), /through the wrapper/);

      await assert.rejects(client.callTool({ name: 'get-env', arguments: {} }), /Unknown tool: get-env/);
    } finally {
      await client.close();
    }
  });

  it('ends both its own process and the server it started when the client closes', async () => {
    const memoryFile = path.join(tmp, 'memory.jsonl');
    const policy = policyFile('memory.json', { version: '1', default: 'deny', tools: { create_entities: {}, read_graph: {} } });
    const { client, transport } = await wrap(policy, [process.execPath, MEMORY_BIN], { MEMORY_FILE_PATH: memoryFile });
    const gatewayPid = transport.pid!;
    const created = await client.callTool({
      name: 'create_entities',
      arguments: { entities: [{ name: 'run-probe', entityType: 'probe', observations: ['made through policylayer run'] }] },
    });
    assert.equal(created.isError, undefined);
    const graph = await client.callTool({ name: 'read_graph', arguments: {} });
    assert.match(textOf(graph), /run-probe/);
    const refused = await client.callTool({ name: 'delete_entities', arguments: { entityNames: ['run-probe'] } });
    assert.equal(refused.isError, true);
    assert.match(textOf(refused), /default deny/);

    const { servers, reapers } = childrenByKind(gatewayPid);
    assert.equal(servers.length, 1, 'policylayer run started one server process');
    leftovers.push(...servers, ...reapers);
    await client.close();
    assert.ok(await waitFor(() => !isAlive(gatewayPid), 5000), `policylayer run (pid ${gatewayPid}) exited`);
    assert.ok(await waitFor(() => !isAlive(servers[0]!), 5000), `the server (pid ${servers[0]}) exited`);
    for (const r of reapers) assert.ok(await waitFor(() => !isAlive(r), 5000), `the reaper (pid ${r}) exited`);
  });

  it('answers the client initialize with a clear error when the wrapped command does not exist', async () => {
    const policy = policyFile('any.json', { version: '1', default: 'allow' });
    const t0 = Date.now();
    const err = await wrap(policy, ['/nonexistent/policylayer-no-such-server']).then(
      async ({ client }) => {
        await client.close();
        return null;
      },
      (e: Error) => e,
    );
    assert.ok(err, 'initialize failed');
    assert.match(err.message, /could not be started.*ENOENT/);
    assert.ok(Date.now() - t0 < 10_000, 'well before the 60 s default timeout');
  });
});

describe('policylayer validate', () => {
  it('exits 0 on the quickstart example config', () => {
    const r = spawnSync(process.execPath, [POLICYLAYER_BIN, 'validate', '-c', 'examples/quickstart/gateway.yaml'], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /ok\s+examples\/quickstart\/gateway\.yaml/);
  });

  it('exits non-zero on a broken config and names the file, the path in it and the line', () => {
    const file = path.join(tmp, 'broken.yaml');
    writeFileSync(
      file,
      ['listen: 127.0.0.1:4100', 'servers:', '  everything:', '    command: [ "node", "server.js" ]', '    timeout: soon', '    policy: { version: "1", default: "allow" }', ''].join('\n'),
    );
    const r = spawnSync(process.execPath, [POLICYLAYER_BIN, 'validate', '-c', file], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.ok(r.stderr.includes(file), r.stderr);
    assert.match(r.stderr, /\/servers\/everything\/timeout/);
    assert.match(r.stderr, /line 5\b/);
  });
});
