/**
 * The seed servers end to end: the example configs and policies in examples/piloty and
 * examples/poolparty, loaded as users copy them, with only the upstream pointed at a fixture that
 * reproduces the server (test/fixtures/piloty-server.ts: PiloTY's 17 tools on a real shell;
 * test/fixtures/poolparty-server.ts: PoolParty's join flow behind its own API key). A real
 * gateway, the real SDK client, one grant token per agent. Every seed rule holds.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { connectHttp, waitFor, type V1Connection, callTool as call, assertRateLimited, type CallResult } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, type TestGateway } from '../helpers/gateway.js';
import { isAlive, REPO_ROOT, tappedCommand, toolCallsIn } from '../helpers/processes.js';
import { PILOTY_TOOLS } from '../fixtures/piloty-server.js';
import { POOLPARTY_TOOLS, SUBMISSIONS_PER_JOIN_SESSION, startPoolPartyServer, type PoolPartyFixture } from '../fixtures/poolparty-server.js';
import { hashToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import type { ControlStore } from '../../src/store/store.js';

const EXAMPLES = path.join(REPO_ROOT, 'examples');
const PILOTY_FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/piloty-server.js');

interface ExampleConfig {
  auth?: unknown;
  store?: string;
  servers: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
}

/**
 * An example's gateway.yaml as users copy it, with the store moved into `dir`, the server's
 * policy path made absolute (so it is the example's own file), and `patch` applied to the server.
 */
function exampleConfig(name: string, dir: string, patch: (server: Record<string, unknown>) => void): string {
  const folder = path.join(EXAMPLES, name);
  const doc = parseYaml(readFileSync(path.join(folder, 'gateway.yaml'), 'utf8')) as ExampleConfig;
  assert.deepEqual(doc.auth, { required: true }, `examples/${name}/gateway.yaml asks every agent for a grant`);
  doc.store = `sqlite:${path.join(dir, 'control.db')}`;
  const server = doc.servers[name]!;
  server.policy = path.join(folder, server.policy as string);
  patch(server);
  return toYaml(doc);
}


/** A tool result's JSON text (the fixtures answer JSON, as the servers they stand for do). */
function json(r: CallResult): Record<string, unknown> {
  assert.equal(r.isError, false, r.text);
  return JSON.parse(r.text) as Record<string, unknown>;
}

/** Grants on the gateway's store, made the way `policylayer grants create` makes them. */
class Grants {
  private constructor(private readonly store: ControlStore) {}
  static async open(dir: string): Promise<Grants> {
    return new Grants(await openControlStore(`sqlite:${path.join(dir, 'control.db')}`));
  }
  async create(label: string, servers: string[], policies?: Record<string, string>): Promise<string> {
    const token = newToken();
    await this.store.createGrant({ label, servers, ...(policies ? { policies } : {}) }, hashToken(token), Date.now());
    return token;
  }
  close(): Promise<void> {
    return this.store.close();
  }
}

/** Pids of live processes whose environment holds `marker` (a server, its shells and their jobs). */
function processesMarked(marker: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(marker) && isAlive(Number(entry))) out.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
}

describe('PiloTY behind the gateway with examples/piloty', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let grants: Grants;
  let tap: string;
  // Every process of this gateway's PiloTY (the server, its terminals, what runs in them)
  // carries this in its environment, so the test can see that none outlives the gateway.
  const marker = `PILOTY_SEED_RUN=${randomBytes(8).toString('hex')}`;
  const open: V1Connection[] = [];
  const tokens: Record<string, string> = {};

  // The operator's own, permissive policy for one grant (ops), so a real shell can be driven
  // through the gateway; the seed rule stays on create_session.
  const OPS_POLICY = {
    version: '1',
    default: 'allow',
    tools: { create_session: { limits: [{ counter: 'create_session_rate', window: 'minute', max: 10, scope: 'grant' }] } },
  };

  before(async () => {
    tmp = tempDir('pl-seed-piloty-');
    tap = path.join(tmp.path, 'tap.jsonl');
    const [name, value] = marker.split('=') as [string, string];
    const yaml = exampleConfig('piloty', tmp.path, (s) => {
      s.command = tappedCommand(tap, [process.execPath, PILOTY_FIXTURE]);
      // PiloTY's own knob: how long a quiet terminal means "done" when no prompt says so.
      s.env = { ...(s.env as Record<string, string>), PILOTY_QUIESCENCE_MS: '200', [name]: value };
    });
    gw = await startTestGateway(yaml, { dir: tmp.path });
    grants = await Grants.open(tmp.path);
    tokens.alice = await grants.create('alice-laptop', ['piloty']);
    tokens.bob = await grants.create('bob-laptop', ['piloty']);
    tokens.ops = await grants.create('ops', ['piloty'], { piloty: JSON.stringify(OPS_POLICY) });
  });

  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await gw?.stop();
    await grants?.close();
    tmp?.remove();
  });

  const connect = async (who: string) => {
    const c = await connectHttp(gw.endpoint('piloty'), { headers: { authorization: `Bearer ${tokens[who]}` } });
    open.push(c);
    return c;
  };

  test('lists all 17 PiloTY tools as the server publishes them, create_session with its empty description', async () => {
    const c = await connect('alice');
    const { tools } = await c.client.listTools();
    assert.deepEqual(
      tools.map((t) => t.name),
      PILOTY_TOOLS.map((t) => t.name),
    );
    assert.equal(tools.length, 17);
    assert.equal(tools.find((t) => t.name === 'create_session')?.description, '');
  });

  test('admits 10 create_session calls in a minute for one grant, refuses the 11th with when to retry, and admits another grant', async () => {
    const alice = await connect('alice');
    for (let i = 0; i < 10; i++) {
      const r = json(await call(alice, 'create_session', { session_id: `alice-${i}`, cwd: tmp.path }));
      assert.equal(r.created, true);
      assert.equal(r.status, 'ready');
    }
    assertRateLimited(await call(alice, 'create_session', { session_id: 'alice-10', cwd: tmp.path }), 'create_session_rate', 10, '/tools/create_session/limits/0');

    // The count is the grant's: a second session of the same grant is refused too, another grant is not.
    const aliceAgain = await connect('alice');
    assert.match((await call(aliceAgain, 'create_session', { session_id: 'alice-11', cwd: tmp.path })).text, /create_session_rate/);
    const bob = await connect('bob');
    assert.equal(json(await call(bob, 'create_session', { session_id: 'bob-0', cwd: tmp.path })).created, true);

    // Refused calls never reached the server: it saw exactly the 11 admitted ones.
    await waitFor(() => toolCallsIn(tap).filter((n) => n === 'create_session').length >= 11, 'the tap to record the calls');
    assert.equal(toolCallsIn(tap).filter((n) => n === 'create_session').length, 11);
  });

  test('denies every other PiloTY tool by default deny, naming the rule, and none reaches the server', async () => {
    const c = await connect('bob');
    const others = PILOTY_TOOLS.filter((t) => t.name !== 'create_session');
    assert.equal(others.length, 16);
    for (const t of others) {
      const r = await call(c, t.name, { session_id: 'bob-0', command: 'echo should-not-run' });
      assert.equal(r.isError, true, t.name);
      assert.match(r.text, new RegExp(`the call to '${t.name}' was refused`));
      assert.match(r.text, /not allowed by the policy \(default: deny\)/);
      assert.match(r.text, /rule \(default deny\)/);
    }
    assert.deepEqual(
      toolCallsIn(tap).filter((n) => n !== 'create_session'),
      [],
    );
  });

  test('runs real shell commands through the gateway for a grant whose policy allows them: output, cd that persists, Ctrl+C, terminate', async () => {
    const c = await connect('ops');
    const work = path.join(tmp.path, 'work');
    mkdirSync(work);
    assert.equal(json(await call(c, 'create_session', { session_id: 'ops', cwd: tmp.path, description: 'seed test' })).status, 'ready');

    const hi = json(await call(c, 'run', { session_id: 'ops', command: 'echo hi' }));
    assert.match(hi.output as string, /^hi$/m);
    assert.equal(hi.status, 'ready');
    assert.equal(hi.prompt, 'shell');

    // State lives in the shell between calls.
    json(await call(c, 'run', { session_id: 'ops', command: 'cd work && export GREETING=persisted' }));
    const pwd = json(await call(c, 'run', { session_id: 'ops', command: 'pwd; echo "$GREETING"' }));
    assert.match(pwd.output as string, new RegExp(`^${work.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    assert.match(pwd.output as string, /^persisted$/m);

    // A long command returns while it runs (the terminal went quiet); Ctrl+C interrupts it.
    const long = json(await call(c, 'run', { session_id: 'ops', command: 'sleep 30' }));
    assert.equal(long.status, 'running');
    const interrupted = json(await call(c, 'send_control', { session_id: 'ops', key: 'c' }));
    assert.equal(interrupted.status, 'ready');
    assert.match(json(await call(c, 'run', { session_id: 'ops', command: 'echo "exit=$?"' })).output as string, /^exit=130$/m);

    // Raw input without a newline is typed, not run; the newline runs it.
    json(await call(c, 'send_input', { session_id: 'ops', text: 'echo typed' }));
    assert.match(json(await call(c, 'send_input', { session_id: 'ops', text: '\n' })).output as string, /^typed$/m);

    // A background job's output arrives later: poll_output and expect see it.
    json(await call(c, 'run', { session_id: 'ops', command: '(sleep 0.3; echo from-the-background) &' }));
    const seen = json(await call(c, 'expect', { session_id: 'ops', pattern: 'from-the-back\\w+', timeout: 5 }));
    assert.equal(seen.matched, true);
    assert.equal(seen.match, 'from-the-background');

    const meta = json(await call(c, 'get_metadata', { session_id: 'ops' }));
    const shellPid = meta.pid as number;
    assert.ok(Number.isInteger(shellPid) && isAlive(shellPid), `shell pid ${shellPid}`);
    assert.equal(meta.description, 'seed test');
    assert.match(json(await call(c, 'get_scrollback', { session_id: 'ops', lines: 50, strip_ansi: true })).scrollback as string, /persisted/);

    assert.equal(json(await call(c, 'terminate', { session_id: 'ops' })).status, 'terminated');
    await waitFor(() => !isAlive(shellPid), `the shell ${shellPid} to end`);
    assert.equal(json(await call(c, 'run', { session_id: 'ops', command: 'echo again' })).status, 'terminated');
  });

  test('a refused tool is refused whatever its arguments, and the permissive grant cannot lift another grant\'s limit', async () => {
    const bob = await connect('bob');
    assert.match((await call(bob, 'run', { session_id: 'bob-0', command: 'id' })).text, /rule \(default deny\)/);
    // ops used 1 of its own 10; alice's count is untouched by it and still full.
    const alice = await connect('alice');
    assert.match((await call(alice, 'create_session', { session_id: 'alice-12', cwd: tmp.path })).text, /create_session_rate/);
  });

  test('leaves no process behind: the servers, their terminals and the jobs in them end with the gateway', async () => {
    const c = await connect('ops');
    // ops has used 1 of its 10 create_session calls.
    json(await call(c, 'create_session', { session_id: 'ops-bg', cwd: tmp.path }));
    const job = json(await call(c, 'run', { session_id: 'ops-bg', command: 'sleep 300 & echo "job=$!"' }));
    const jobPid = Number(/job=(\d+)/.exec(job.output as string)?.[1]);
    assert.ok(isAlive(jobPid), `job ${jobPid}`);
    assert.ok(processesMarked(marker).length > 0, 'the marker is visible in the fixture processes');

    await Promise.all(open.splice(0).map((x) => x.close()));
    await gw.stop();
    await waitFor(() => processesMarked(marker).length === 0, `every PiloTY process to end (left: ${processesMarked(marker).join(', ')})`, 10_000);
    assert.equal(isAlive(jobPid), false);
  });
});

describe('PoolParty behind the gateway with examples/poolparty', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let grants: Grants;
  let upstream: PoolPartyFixture;
  const apiKey = `pp_live_${randomBytes(16).toString('hex')}`;
  const open: V1Connection[] = [];
  const tokens: Record<string, string> = {};

  before(async () => {
    tmp = tempDir('pl-seed-poolparty-');
    upstream = await startPoolPartyServer({ apiKey });
    const yaml = exampleConfig('poolparty', tmp.path, (s) => {
      s.url = upstream.url;
    });
    // The key is in the gateway's environment only, where ${POOLPARTY_API_KEY} finds it.
    gw = await startTestGateway(yaml, { dir: tmp.path, env: { ...process.env, POOLPARTY_API_KEY: apiKey } });
    grants = await Grants.open(tmp.path);
    for (const who of ['alice', 'bob', 'carol']) tokens[who] = await grants.create(`${who}-agent`, ['poolparty']);
  });

  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await gw?.stop();
    await upstream?.close();
    await grants?.close();
    tmp?.remove();
  });

  const connect = async (who: string) => {
    // The agent's only credential is its grant token: it never holds PoolParty's key.
    const c = await connectHttp(gw.endpoint('poolparty'), { headers: { authorization: `Bearer ${tokens[who]}` } });
    open.push(c);
    return c;
  };

  const join = async (c: V1Connection): Promise<string> => {
    const r = json(await call(c, 'create_join_session', { channelSlug: 'main' }));
    assert.equal(r.submissionsAllowed, SUBMISSIONS_PER_JOIN_SESSION);
    return r.sessionToken as string;
  };
  const submit = (c: V1Connection, sessionToken: string, i = 0) =>
    call(c, 'submit_media_block', { sessionToken, title: `demo ${i}`, mediaUrl: `https://cdn.example.com/demo-${i}.mp4`, mediaType: 'video' });

  // Requests this test sends to PoolParty itself, not through the gateway, say so.
  const DIRECT = { 'x-test-direct': '1' };

  test('the PoolParty fixture refuses a request without its own API key, or with an agent\'s grant token', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} });
    const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...DIRECT };
    const none = await fetch(upstream.url, { method: 'POST', headers, body });
    assert.equal(none.status, 401);
    const grant = await fetch(upstream.url, { method: 'POST', headers: { ...headers, authorization: `Bearer ${tokens.alice}` }, body });
    assert.equal(grant.status, 401);
    assert.doesNotMatch(await grant.text(), new RegExp(tokens.alice!));
  });

  test('runs the join flow through the gateway: a session token good for three submissions, the fourth and an unknown token refused by PoolParty', async () => {
    const c = await connect('alice');
    const token = await join(c);
    for (let i = 1; i <= 3; i++) {
      const r = json(await submit(c, token, i));
      assert.equal(r.submissionsRemaining, 3 - i);
      assert.equal(r.mintStatus, 'pre_mint');
    }
    const fourth = await submit(c, token, 4);
    assert.equal(fourth.isError, true);
    assert.match(fourth.text, /used all 3 anonymous submissions; call create_join_session/);
    assert.doesNotMatch(fourth.text, /PolicyLayer/, 'refused by PoolParty, not by the policy');
    const unknown = await submit(c, 'pjs_not-a-real-token');
    assert.equal(unknown.isError, true);
    assert.match(unknown.text, /Unknown or expired sessionToken/);
    assert.equal(upstream.joinSessions.get(token)?.submissions, 3);
  });

  test('sends PoolParty its key from the gateway\'s environment on every request, and never the agent\'s own token', async () => {
    await connect('carol');
    const viaGateway = upstream.requests.filter((r) => r.headers['x-test-direct'] === undefined);
    assert.ok(viaGateway.some((r) => r.rpc === 'tools/call'), 'tool calls reached PoolParty');
    for (const r of viaGateway) assert.equal(r.headers.authorization, `Bearer ${apiKey}`, `${r.method} ${r.rpc ?? ''}`);
    const seen = JSON.stringify(viaGateway.map((r) => r.headers));
    for (const who of Object.keys(tokens)) assert.ok(!seen.includes(tokens[who]!), `${who}'s grant token never reaches PoolParty`);
  });

  test('admits 30 create_join_session and 30 submit_media_block calls a minute per grant, each on its own counter, and refuses the 31st', async () => {
    const c = await connect('bob');
    // Ten join sessions carry the thirty submissions (three each).
    const sessionTokens: string[] = [];
    for (let i = 0; i < 10; i++) sessionTokens.push(await join(c));
    for (let i = 0; i < 30; i++) assert.equal((await submit(c, sessionTokens[Math.floor(i / 3)]!, i)).isError, false, `submission ${i + 1}`);
    const extra = await join(c); // the 11th join session: 11 of 30
    const over = await submit(c, extra, 31);
    assertRateLimited(over, 'submit_media_block_rate', 30);
    assert.equal(upstream.joinSessions.get(extra)?.submissions, 0, 'the refused submission never reached PoolParty');

    for (let i = 11; i < 30; i++) await join(c);
    assertRateLimited(await call(c, 'create_join_session', { channelSlug: 'main' }), 'create_join_session_rate', 30);

    // Another agent's grant has its own counts.
    const carol = await connect('carol');
    assert.equal((await submit(carol, await join(carol))).isError, false);
  });

  test('lists every PoolParty tool and denies all but the two seed tools by default deny, pool_block and claim_test_pol included', async () => {
    const c = await connect('carol');
    const { tools } = await c.client.listTools();
    assert.deepEqual(
      tools.map((t) => t.name).sort(),
      POOLPARTY_TOOLS.map((t) => t.name).sort(),
    );
    const before = new Map(upstream.calls);
    for (const t of POOLPARTY_TOOLS.filter((x) => x.name !== 'create_join_session' && x.name !== 'submit_media_block')) {
      const r = await call(c, t.name, { walletAddress: '0x0000000000000000000000000000000000000001', blockId: 'b1', amount: '1' });
      assert.equal(r.isError, true, t.name);
      assert.match(r.text, /rule \(default deny\)/, t.name);
      assert.equal(upstream.calls.get(t.name) ?? 0, before.get(t.name) ?? 0, `${t.name} never reached PoolParty`);
    }
  });
});
