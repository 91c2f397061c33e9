/**
 * The risk classifier on the seed servers, as a scan sees them: the tools listed by the fixtures
 * that reproduce PiloTY and PoolParty (over stdio and Streamable HTTP, with the real SDK client),
 * classified with the server context a catalogue has. The verdicts match the seed pages where the
 * seed is right, and the table in docs/risk.md ("The seed servers") says why where they differ.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { connectStdio } from './helpers/clients.js';
import { REPO_ROOT } from './helpers/processes.js';
import { PILOTY_CATALOGUE_DESCRIPTION, PILOTY_CREATE_SESSION_DOCSTRING } from './fixtures/piloty-server.js';
import { POOLPARTY_CATALOGUE_DESCRIPTION, startPoolPartyServer } from './fixtures/poolparty-server.js';
import { loadPolicyFile } from '../src/policy/index.js';
import { RiskClassifier, classifyTool, recommendPolicy } from '../src/risk/index.js';
import type { Classification, ServerContext, ToolDefinition } from '../src/risk/index.js';

type Listed = ServerContext & { tools: readonly ToolDefinition[] };

/** What a scan learns from the server itself: its name, its instructions and its tools. */
async function listed(client: Client): Promise<Listed> {
  const { tools } = await client.listTools();
  const info = client.getServerVersion();
  const instructions = client.getInstructions();
  return { ...(info?.name ? { name: info.name } : {}), ...(instructions ? { instructions } : {}), tools };
}

describe('the classifier on the seed servers', () => {
  let piloty: Listed;
  let poolparty: Listed;
  const verdicts = new Map<string, Classification>();

  before(async () => {
    const p = await connectStdio([process.execPath, path.join(REPO_ROOT, 'dist/test/fixtures/piloty-server.js')]);
    try {
      piloty = await listed(p.client);
    } finally {
      await p.close();
    }
    const upstream = await startPoolPartyServer({ apiKey: 'pp-test-key' });
    const client = new Client({ name: 'scan', version: '1.0.0' });
    try {
      await client.connect(new StreamableHTTPClientTransport(new URL(upstream.url), { requestInit: { headers: { authorization: 'Bearer pp-test-key' } } }));
      poolparty = await listed(client);
    } finally {
      await client.close();
      await upstream.close();
    }
    // With the descriptions catalogues give them, as the seed pages had them
    // ("a server described as providing 'a persistent, interactive terminal …'").
    const classifier = new RiskClassifier();
    for (const v of classifier.classifyServer({ ...piloty, description: PILOTY_CATALOGUE_DESCRIPTION })) verdicts.set(`piloty/${v.tool}`, v);
    for (const v of classifier.classifyServer({ ...poolparty, description: POOLPARTY_CATALOGUE_DESCRIPTION })) verdicts.set(`poolparty/${v.tool}`, v);
  });

  after(() => {
    verdicts.clear();
  });

  const verdict = (key: string): Classification => {
    const v = verdicts.get(key);
    assert.ok(v, `no verdict for ${key}`);
    return v;
  };

  test('lists PiloTY\'s 17 tools and PoolParty\'s join flow, pool_block and claim_test_pol from the fixtures', () => {
    assert.equal(piloty.tools.length, 17);
    assert.equal(piloty.name, 'PiloTY');
    assert.equal(piloty.tools.find((t) => t.name === 'create_session')?.description, '');
    for (const n of ['create_join_session', 'submit_media_block', 'pool_block', 'claim_test_pol']) assert.ok(poolparty.tools.some((t) => t.name === n), n);
  });

  test('files PiloTY\'s create_session, with its empty description, as Execute and High, as its seed page does, because of the terminal server it is on', () => {
    const v = verdict('piloty/create_session');
    assert.deepEqual([v.category, v.severity], ['Execute', 'High']);
    assert.ok(v.reasons.some((r) => r.source === 'server' && /terminal/.test(r.text)), JSON.stringify(v.reasons));
  });

  test('still files create_session as Execute from its sibling tools alone, and with the docstring its source carries', () => {
    // Without any catalogue text: the server's name and tools are all a scan has.
    const bare = new RiskClassifier().classifyServer(piloty).find((x) => x.tool === 'create_session')!;
    assert.deepEqual([bare.category, bare.severity], ['Execute', 'High']);
    assert.ok(bare.reasons.some((r) => r.source === 'siblings' && /terminal/.test(r.text)), JSON.stringify(bare.reasons));
    // The source's docstring mentions the session's shell: arbitrary commands, so Critical.
    const documented = { ...piloty.tools.find((t) => t.name === 'create_session')!, description: PILOTY_CREATE_SESSION_DOCSTRING };
    const withDoc = classifyTool(documented, { ...piloty, description: PILOTY_CATALOGUE_DESCRIPTION });
    assert.deepEqual([withDoc.category, withDoc.severity], ['Execute', 'Critical']);
  });

  test('files PiloTY\'s input tools as Execute, its readers as Read, and terminate as Write (it ends the agent\'s own session)', () => {
    for (const n of ['run', 'send_input', 'send_password', 'send_control', 'send_signal']) assert.equal(verdict(`piloty/${n}`).category, 'Execute', n);
    assert.equal(verdict('piloty/run').severity, 'Critical');
    for (const n of ['poll_output', 'get_screen', 'get_scrollback', 'expect', 'expect_prompt', 'get_metadata', 'list_sessions', 'transcript']) {
      assert.equal(verdict(`piloty/${n}`).category, 'Read', n);
    }
    assert.deepEqual([verdict('piloty/terminate').category, verdict('piloty/terminate').severity], ['Write', 'Medium']);
  });

  test('files PoolParty\'s create_join_session and submit_media_block as Write and Medium, as their seed pages do', () => {
    for (const n of ['create_join_session', 'submit_media_block']) {
      const v = verdict(`poolparty/${n}`);
      assert.deepEqual([v.category, v.severity], ['Write', 'Medium'], n);
    }
  });

  test('files pool_block (a staking transaction) and claim_test_pol (it sends tokens) as Financial, where the commercial catalogue says Read', () => {
    for (const n of ['pool_block', 'claim_test_pol', 'finalize_block_mint']) {
      const v = verdict(`poolparty/${n}`);
      assert.equal(v.category, 'Financial', `${n}: ${JSON.stringify(v.reasons)}`);
      assert.ok(['High', 'Critical'].includes(v.severity), `${n}: ${v.severity}`);
    }
    // And the read-only preview it files as Execute is a Read.
    assert.deepEqual([verdict('poolparty/preview_channel_template').category, verdict('poolparty/preview_channel_template').severity], ['Read', 'Low']);
    for (const [key, v] of verdicts) if (v.category === 'Read') assert.ok(!['pool_block', 'claim_test_pol', 'finalize_block_mint'].includes(v.tool), key);
  });

  test('the recommended policies in examples/ are what a scan recommends now, and keep the seed rules exactly', () => {
    const seed = (counter: string, max: number) => ({ limits: [{ counter, window: 'minute', max, scope: 'grant' }] });
    for (const [name, server, description] of [
      ['piloty', piloty, PILOTY_CATALOGUE_DESCRIPTION],
      ['poolparty', poolparty, POOLPARTY_CATALOGUE_DESCRIPTION],
    ] as const) {
      const file = loadPolicyFile(path.join(REPO_ROOT, 'examples', name, 'recommended.policy.yaml'));
      const now = new RiskClassifier().classifyServer({ ...server, description });
      const expected = recommendPolicy(now.map((classification, i) => ({ classification, tool: server.tools[i]! })));
      assert.deepEqual(
        JSON.parse(JSON.stringify(file.document)),
        JSON.parse(JSON.stringify(expected)),
        `examples/${name}/recommended.policy.yaml is stale: regenerate it as its README says`,
      );
    }
    const pilotyRules = loadPolicyFile(path.join(REPO_ROOT, 'examples/piloty/recommended.policy.yaml')).document.tools ?? {};
    assert.deepEqual(pilotyRules.create_session, seed('create_session_rate', 10));
    const poolRules = loadPolicyFile(path.join(REPO_ROOT, 'examples/poolparty/recommended.policy.yaml')).document.tools ?? {};
    assert.deepEqual(poolRules.create_join_session, seed('create_join_session_rate', 30));
    assert.deepEqual(poolRules.submit_media_block, seed('submit_media_block_rate', 30));
    for (const n of ['pool_block', 'claim_test_pol']) assert.equal(poolRules[n]?.action, 'require_approval', n);
  });

  test('docs/risk.md lists each seed tool with the category and severity the classifier gives it now', () => {
    const doc = readFileSync(path.join(REPO_ROOT, 'docs/risk.md'), 'utf8');
    const start = doc.indexOf('## The seed servers');
    assert.ok(start >= 0, 'docs/risk.md has a section "The seed servers"');
    const next = doc.indexOf('\n## ', start + 1);
    const section = doc.slice(start, next < 0 ? undefined : next);
    const rows = new Map<string, [string, string]>();
    for (const m of section.matchAll(/^\| (PiloTY|PoolParty) \| `([a-z_]+)` \| (\w+) \| (\w+) \|/gm)) rows.set(`${m[1]!.toLowerCase()}/${m[2]}`, [m[3]!, m[4]!]);
    assert.deepEqual([...rows.keys()].sort(), [...verdicts.keys()].sort(), 'one row per tool of both servers');
    for (const [key, v] of verdicts) assert.deepEqual(rows.get(key), [v.category, v.severity], key);
  });
});
