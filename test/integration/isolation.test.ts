/**
 * `isolation: session` for stdio servers: each client session gets a process of its own, started
 * with that client's own initialize, so nothing of one client's session is visible to another.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ListRootsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { StdioUpstream } from '../../src/transport/upstream/stdio.js';
import { connectHttp, type V1Connection, textOf } from '../helpers/clients.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { isAlive, npmServerCommand } from '../helpers/processes.js';

function withRoots(uri: string) {
  return {
    capabilities: { roots: { listChanged: true } },
    setup: (client: V1Connection['client']) => client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [{ uri, name: uri }] })),
  };
}


describe('a stdio server with isolation: session', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway(`
servers:
  everything:
    command: ${yamlValue(npmServerCommand('everything'))}
    isolation: session
    policy: { version: "1", default: allow }
`);
  });
  after(() => gw.stop());

  function dedicatedPids(): number[] {
    const up = gw.gateway.server('everything').upstream as unknown as { dedicated: Set<StdioUpstream> };
    return [...up.dedicated].map((d) => d.pid).filter((p): p is number => p !== undefined);
  }

  test('gives each client session its own process, which sees that client\'s own roots', async () => {
    const a = await connectHttp(gw.endpoint('everything'), withRoots('file:///work/alice'));
    const b = await connectHttp(gw.endpoint('everything'), withRoots('file:///work/bob'));
    try {
      const pids = dedicatedPids();
      assert.equal(pids.length, 2);
      assert.notEqual(pids[0], pids[1]);
      const ra = textOf(await a.client.callTool({ name: 'get-roots-list', arguments: {} }));
      const rb = textOf(await b.client.callTool({ name: 'get-roots-list', arguments: {} }));
      assert.match(ra, /file:\/\/\/work\/alice/);
      assert.doesNotMatch(ra, /bob/);
      assert.match(rb, /file:\/\/\/work\/bob/);
      assert.doesNotMatch(rb, /alice/);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('stops a session\'s process when the client ends the session', async () => {
    const c = await connectHttp(gw.endpoint('everything'));
    const [pid] = dedicatedPids();
    assert.ok(pid !== undefined && isAlive(pid));
    await c.close();
    for (let i = 0; i < 50 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(isAlive(pid), false);
    assert.deepEqual(dedicatedPids(), []);
  });
});

describe('a stdio server shared by its sessions (the default)', () => {
  test('does not pass one client\'s roots to a process other clients share', async () => {
    const gw = await startTestGateway(`
servers:
  everything:
    command: ${yamlValue(npmServerCommand('everything'))}
    policy: { version: "1", default: allow }
`);
    const a = await connectHttp(gw.endpoint('everything'), withRoots('file:///work/alice'));
    try {
      const tools = await a.client.listTools();
      // The server registers its roots tool only for a client that declared roots: the gateway did not.
      assert.equal(tools.tools.some((t) => t.name === 'get-roots-list'), false);
    } finally {
      await a.close();
      await gw.stop();
    }
  });
});
