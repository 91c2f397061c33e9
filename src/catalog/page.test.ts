import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePolicy } from '../policy/index.js';
import { RiskClassifier } from '../risk/index.js';
import type { ServerContext, ToolDefinition } from '../risk/index.js';
import { toolDefinitionHash } from './record.js';
import { toolPage, toolPageMarkdown, toolPageText, type PageServer } from './page.js';

const T0 = Date.UTC(2026, 4, 4, 9, 12, 31);

// PiloTY as its seed page describes it: create_session has no description; the server says it is
// a persistent, interactive terminal.
const PILOTY_TOOLS: ToolDefinition[] = [
  { name: 'create_session', inputSchema: { type: 'object', properties: { session_id: { type: 'string' } } } },
  { name: 'run', description: 'Run a command in a session and return its output.', inputSchema: { type: 'object', properties: { session_id: { type: 'string' }, command: { type: 'string' } } } },
  { name: 'read_output', description: 'Read new output from a session.', inputSchema: { type: 'object', properties: { session_id: { type: 'string' } } } },
];
const PILOTY_CONTEXT: ServerContext = {
  name: 'PiloTY',
  description: 'a persistent, interactive terminal, enabling long-running commands, log monitoring, and stateful shell interactions across tool calls',
  tools: PILOTY_TOOLS,
};
const PILOTY: PageServer = { key: 'piloty', source: 'store', name: 'piloty', displayName: 'PiloTY', version: '0.2.0', package: null, target: { command: ['uvx', 'piloty'] } };

function pageOf(server: PageServer, context: ServerContext & { tools: readonly ToolDefinition[] }, name: string) {
  const classifications = new RiskClassifier().classifyServer(context);
  const i = context.tools.findIndex((t) => t.name === name);
  const definition = context.tools[i] as unknown as Record<string, unknown>;
  return toolPage(server, {
    definition,
    definitionHash: toolDefinitionHash(definition),
    classification: classifications[i]!,
    classifierVersion: 1,
    firstSeen: T0,
    lastSeen: T0 + 60_000,
    removedAt: null,
  });
}

test("explains a tool without a description from the server context, as PiloTY's create_session seed page does", () => {
  const p = pageOf(PILOTY, { ...PILOTY_CONTEXT, tools: PILOTY_TOOLS }, 'create_session');
  assert.equal(p.verdict, 'High Risk');
  assert.equal(p.category, 'Execute');
  assert.equal(p.description, '');
  assert.equal(p.whatItDoesFrom, 'classifier');
  assert.match(p.whatItDoes, /^Although the description is empty, its name and the server context make clear what create_session does: /);
  assert.match(p.whatItDoes, /starts a session: an execution environment; server runs terminal sessions \(server description: "terminal"\)\./);
  assert.match(p.whatItDoes, /That makes it an Execute tool on PiloTY: it can trigger actions or run processes/);
  assert.ok(p.reasons.some((r) => r.source === 'server' && /terminal/.test(r.text)), JSON.stringify(p.reasons));
});

test("gives the recommended rule as a whole policy.json exactly like the seed page's", () => {
  const p = pageOf(PILOTY, { ...PILOTY_CONTEXT, tools: PILOTY_TOOLS }, 'create_session');
  assert.deepEqual(p.recommendation.policy, {
    version: '1',
    default: 'deny',
    tools: { create_session: { limits: [{ counter: 'create_session_rate', window: 'minute', max: 10, scope: 'grant' }] } },
  });
  assert.equal(p.recommendation.hide, false);
  assert.match(p.recommendation.summary, /^Runs or drives something: at most 10 calls a minute per grant/);
});

test('every policy on a page is one the gateway loads: the recommended rule and each way to control the tool', () => {
  for (const name of ['create_session', 'run', 'read_output']) {
    const p = pageOf(PILOTY, { ...PILOTY_CONTEXT, tools: PILOTY_TOOLS }, name);
    for (const [what, doc] of [
      ['recommended', p.recommendation.policy],
      ['deny', p.controls.deny.policy],
      ['rate limit', p.controls.rateLimit.policy],
      ['approval', p.controls.requireApproval.policy],
    ] as const) {
      assert.doesNotThrow(() => parsePolicy(JSON.stringify(doc), `${name} ${what}`), `${name} ${what}`);
    }
  }
});

test('offers a deny, a rate limit and an approval for the tool, each naming it', () => {
  const p = pageOf(PILOTY, { ...PILOTY_CONTEXT, tools: PILOTY_TOOLS }, 'run');
  assert.deepEqual(p.controls.deny.policy.tools, { run: { action: 'deny', reason: 'run is not available to agents here' } });
  assert.deepEqual(p.controls.rateLimit.policy.tools, { run: { limits: [{ counter: 'run_rate', window: 'minute', max: 10, scope: 'grant' }] } });
  assert.deepEqual(p.controls.requireApproval.policy.tools, { run: { action: 'require_approval', reason: 'a person approves each call to run', approval: { timeout: '10m' } } });
  assert.match(p.controls.deny.text, /blocked by policy/);
  assert.match(p.controls.rateLimit.text, /At most 10 calls a minute per grant/);
});

test('uses the description as what the tool does when there is one', () => {
  const p = pageOf(PILOTY, { ...PILOTY_CONTEXT, tools: PILOTY_TOOLS }, 'read_output');
  assert.equal(p.whatItDoes, 'Read new output from a session.');
  assert.equal(p.whatItDoesFrom, 'description');
  assert.equal(p.category, 'Read');
  assert.deepEqual(p.recommendation.policy, { version: '1', default: 'deny', tools: { read_output: {} } });
});

test('lists the attack patterns that abuse the tool’s kind of access, the specific ones first', () => {
  const p = pageOf(PILOTY, { ...PILOTY_CONTEXT, tools: PILOTY_TOOLS }, 'run');
  const ids = p.attackPatterns.map((a) => a.id);
  assert.equal(ids[0], 'command-injection');
  assert.deepEqual(ids.slice(-3), ['tool-poisoning', 'rug-pull', 'tool-shadowing']);
  assert.equal(p.attackPatterns[0]!.because, 'Execute tools');
  assert.equal(p.attackPatterns.at(-1)!.because, 'any tool a server lists');
});

test('hides a Destructive tool in its recommended policy and says why', () => {
  const tools: ToolDefinition[] = [{ name: 'delete_entities', description: 'Delete multiple entities and their associated relations from the knowledge graph' }];
  const server: PageServer = { key: 'memory', source: 'shipped', name: 'memory-server', displayName: 'memory-server', version: '0.6.3', package: '@modelcontextprotocol/server-memory@2026.8.31', target: { command: ['npx', '-y', '@modelcontextprotocol/server-memory'] } };
  const p = pageOf(server, { name: 'memory-server', tools }, 'delete_entities');
  assert.equal(p.category, 'Destructive');
  assert.deepEqual(p.recommendation.policy, { version: '1', default: 'deny', hide: ['delete_entities'], tools: {} });
  assert.equal(p.recommendation.hide, true);
  assert.ok(p.attackPatterns.some((a) => a.id === 'destructive-bulk-operation'));
});

test('says plainly when nothing tells what a tool without a description does', () => {
  const tools: ToolDefinition[] = [{ name: 'zorp' }];
  const p = pageOf(PILOTY, { name: 'Mystery', tools }, 'zorp');
  assert.equal(p.category, 'Unknown');
  assert.match(p.whatItDoes, /^zorp has no description, and neither its name, its parameters nor PiloTY's other tools say what it does/);
  assert.equal(p.controls.requireApproval.policy.tools?.zorp?.action, 'require_approval');
});

test('warns that a name with * or ? would be read as a glob', () => {
  const tools: ToolDefinition[] = [{ name: 'get*', description: 'Get things.' }];
  const p = pageOf(PILOTY, { tools }, 'get*');
  assert.equal(p.notes.length, 1);
  assert.match(p.notes[0]!, /glob/);
  assert.deepEqual(p.recommendation.policy.tools, {});
});

test('renders as Markdown with the verdict first and each policy as a JSON block, and as plain text', () => {
  const p = pageOf(PILOTY, { ...PILOTY_CONTEXT, tools: PILOTY_TOOLS }, 'create_session');
  const md = toolPageMarkdown(p);
  assert.match(md, /^# create_session: High Risk\n/);
  for (const h of ['## What it does', '## Why Execute, High', '## Recommended rule', '## Attack patterns that abuse this access', '## How to control it', '### Deny it', '### Rate-limit it', '### Require approval']) {
    assert.ok(md.includes(`\n${h}\n`), h);
  }
  assert.equal(md.match(/```json\n/g)?.length, 4);
  assert.ok(md.includes(JSON.stringify(p.recommendation.policy, null, 2)));
  assert.match(md, /first seen 2026-05-04T09:12:31\.000Z, last seen 2026-05-04T09:13:31\.000Z/);
  const text = toolPageText(p);
  assert.match(text, /^create_session: High Risk, Execute\nserver: +PiloTY 0\.2\.0 \(catalogue key piloty, scanned here\)\n/);
  assert.match(text, /\nWHAT IT DOES\nAlthough the description is empty/);
});

test('says so on the page of a tool the server no longer lists', () => {
  const classification = new RiskClassifier().classify(PILOTY_TOOLS[2]!, PILOTY_CONTEXT);
  const definition = PILOTY_TOOLS[2] as unknown as Record<string, unknown>;
  const p = toolPage(PILOTY, { definition, definitionHash: toolDefinitionHash(definition), classification, classifierVersion: 1, firstSeen: T0, lastSeen: T0, removedAt: T0 + 1000 });
  assert.equal(p.removedAt, '2026-05-04T09:12:32.000Z');
  assert.match(toolPageMarkdown(p), /The server no longer lists this tool \(since 2026-05-04T09:12:32\.000Z\)/);
});
