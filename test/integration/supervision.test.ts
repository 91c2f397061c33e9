/**
 * Supervision of stdio upstreams: crashes fail calls in flight at once and the process comes back
 * after a backoff; stderr reaches the gateway's log; shutdown escalates from closing stdin to
 * SIGTERM to SIGKILL of the whole process group; a missing command and a silent server both reach
 * the client as clear errors. The upstream is test/fixtures/stdio-server.ts, the one server here
 * that can be told to crash, hang or ignore signals.
 */
import { afterEach, describe, it } from 'node:test';
import { Socket } from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { STDIO_FIXTURE, captureLogger, isAlive, killGroup, waitFor } from '../helpers/safety-helpers.js';
import { StdioUpstream } from '../../src/transport/upstream/stdio.js';
import { StdioListener } from '../../src/transport/downstream/stdio.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { createLimiter } from '../../src/main.js';
import { createMemoryStore } from '../../src/limits/store/memory.js';
import { compilePolicy } from '../../src/policy/compile.js';
import type { JsonRpcResponse } from '../../src/util/jsonrpc.js';
import { textOf } from '../helpers/clients.js';
import { groupAndSession } from '../helpers/processes.js';

const ALLOW_ALL = { version: '1', default: 'allow' };

function fixtureConfig(opts: { timeout?: string; command?: string[] } = {}): string {
  return `
servers:
  fixture:
    command: ${yamlValue(opts.command ?? [process.execPath, STDIO_FIXTURE])}
    timeout: ${opts.timeout ?? '20s'}
    policy: ${yamlValue(ALLOW_ALL)}
`;
}

async function connect(gw: TestGateway): Promise<Client> {
  const client = new Client({ name: 'policylayer-test', version: '0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(gw.endpoint('fixture'))));
  return client;
}

function upstreamOf(gw: TestGateway): StdioUpstream {
  return gw.gateway.servers.get('fixture')!.upstream as StdioUpstream;
}


/** Settles a promise into its error (or null), so a rejection is never left unhandled while the test waits. */
function outcome(p: Promise<unknown>): Promise<Error | null> {
  return p.then(
    () => null,
    (err: Error) => err,
  );
}

describe('supervision of a stdio upstream', () => {
  const gateways: TestGateway[] = [];
  const pids: number[] = [];

  async function start(yaml: string, logger?: ReturnType<typeof captureLogger>): Promise<TestGateway> {
    const gw = await startTestGateway(yaml, logger ? { logger: logger.logger } : {});
    gateways.push(gw);
    return gw;
  }

  afterEach(async () => {
    for (const gw of gateways.splice(0)) await gw.stop();
    for (const pid of pids.splice(0)) killGroup(pid);
  });

  it('fails a call in flight at once with a clear error when the server crashes, and later calls in the same session reach the restarted server', async () => {
    const gw = await start(fixtureConfig({ timeout: '20s' }));
    const client = await connect(gw);
    const before = upstreamOf(gw).pid!;
    pids.push(before);

    const sleeping = outcome(client.callTool({ name: 'sleep', arguments: { ms: 15_000 } }));
    assert.ok(await waitFor(() => [...gw.gateway.sessions.values()].some((s) => s.inflight > 0)));
    const t0 = Date.now();
    const crashed = outcome(client.callTool({ name: 'crash', arguments: { code: 3 } }));

    const err = await sleeping;
    assert.ok(err, 'the call in flight failed');
    assert.match(err.message, /upstream server 'fixture' exited with code 3 while the call was in flight/);
    assert.ok(Date.now() - t0 < 5000, 'it failed at the crash, not at the 20 s timeout');
    assert.match((await crashed)?.message ?? '', /exited with code 3/);

    const echoed = await client.callTool({ name: 'echo', arguments: { text: 'after the crash' } });
    assert.equal(textOf(echoed), 'after the crash');
    const after = upstreamOf(gw).pid!;
    pids.push(after);
    assert.notEqual(after, before, 'a new process answered');
    assert.equal(isAlive(before), false);
    await client.close();
  });

  it('restarts a server that keeps crashing after a backoff that doubles', async () => {
    const log = captureLogger('info');
    const gw = await start(fixtureConfig(), log);
    const client = await connect(gw);
    const elapsed: number[] = [];
    for (let i = 0; i < 2; i++) {
      pids.push(upstreamOf(gw).pid!);
      assert.ok(await outcome(client.callTool({ name: 'crash', arguments: {} })));
      const t0 = Date.now();
      assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: `round ${i}` } })), `round ${i}`);
      elapsed.push(Date.now() - t0);
    }
    pids.push(upstreamOf(gw).pid!);
    const delays = log.lines.filter((l) => l.msg === 'restarting upstream process after backoff').map((l) => l.delayMs);
    assert.deepEqual(delays, [250, 500]);
    assert.ok(elapsed[1]! >= 450, `the second restart waited its backoff (${elapsed[1]} ms)`);
    assert.ok(log.lines.some((l) => l.msg === 'upstream process exited with code 3' && l.server === 'fixture'));
    await client.close();
  });

  it("writes each line the server prints on stderr to the gateway's log, tagged with the server", async () => {
    const log = captureLogger('info');
    const gw = await start(fixtureConfig(), log);
    const client = await connect(gw);
    pids.push(upstreamOf(gw).pid!);
    await client.callTool({ name: 'stderr', arguments: { text: 'fixture says: disk is 91% full' } });
    const found = await waitFor(() => log.lines.some((l) => l.msg === 'fixture says: disk is 91% full'));
    assert.ok(found, 'the line reached the log');
    const line = log.lines.find((l) => l.msg === 'fixture says: disk is 91% full')!;
    assert.equal(line.server, 'fixture');
    assert.equal(line.stream, 'stderr');
    assert.ok(log.lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('fixture: stdio server started pid=')));
    await client.close();
  });

  it('answers an initialize with a clear error at once when the server command does not exist', async () => {
    const gw = await start(fixtureConfig({ command: ['/nonexistent/policylayer-no-such-server', '--stdio'], timeout: '10s' }));
    const t0 = Date.now();
    const err = await outcome(connect(gw));
    assert.ok(err, 'initialize failed');
    assert.match(err.message, /fixture/);
    assert.match(err.message, /could not be started.*ENOENT/);
    assert.ok(Date.now() - t0 < 5000, `the error came at once, not at the 10 s timeout (${Date.now() - t0} ms)`);
  });

  it('lets a call that keeps reporting progress run past the timeout, each report starting the timeout anew', async () => {
    const gw = await start(fixtureConfig({ timeout: '1s' }));
    const client = await connect(gw);
    pids.push(upstreamOf(gw).pid!);
    const t0 = Date.now();
    // 2.4 s in all, never more than 0.4 s without a report.
    const result = await client.callTool({ name: 'progress', arguments: { steps: 6, stepMs: 400 } }, undefined, { onprogress: () => {}, timeout: 30_000 });
    assert.equal(textOf(result), 'done after 6 steps');
    assert.ok(Date.now() - t0 >= 2000, 'the call outlived the 1 s timeout');
  });

  it('answers a call the server never answers with a timeout error after the configured timeout', async () => {
    const gw = await start(fixtureConfig({ timeout: '1s' }));
    const client = await connect(gw);
    pids.push(upstreamOf(gw).pid!);
    const t0 = Date.now();
    const err = await outcome(client.callTool({ name: 'hang', arguments: {} }));
    assert.ok(err);
    assert.match(err.message, /upstream server 'fixture' did not answer within 1000 ms/);
    assert.ok(Date.now() - t0 >= 900);
    // The server itself is fine: the next call is answered.
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'still here' } })), 'still here');
    await client.close();
  });
});

async function pidsOf(up: StdioUpstream): Promise<{ pid: number; grandchild: number }> {
  const session = await up.open(
    { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '0' } } },
    '2025-06-18',
  );
  const answer = await new Promise<JsonRpcResponse>((resolve) =>
    session.call({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'pids', arguments: {} } }, undefined, {
      onRelated: () => {},
      onResponse: (m) => resolve(m),
    }),
  );
  return JSON.parse(textOf(answer.result)) as { pid: number; grandchild: number };
}

describe('stopping a stdio upstream', () => {
  let up: StdioUpstream | undefined;
  const pids: number[] = [];

  afterEach(async () => {
    await up?.close();
    for (const pid of pids.splice(0)) killGroup(pid);
  });

  it("runs the server and what it starts in a process group of their own, inside the gateway's session as a server a client starts would be", { skip: process.platform !== 'linux' ? 'reads /proc' : false }, async () => {
    up = new StdioUpstream({ name: 'grouped', command: [process.execPath, STDIO_FIXTURE, '--grandchild'], timeoutMs: 10_000, logger: captureLogger('info').logger });
    await up.start();
    const { pid, grandchild } = await pidsOf(up);
    pids.push(pid, grandchild);
    assert.equal(pid, up.pid);
    assert.equal(groupAndSession(pid).pgid, pid, 'the server leads its group');
    assert.equal(groupAndSession(grandchild).pgid, pid, "the server's child is in that group");
    assert.equal(groupAndSession(pid).sid, groupAndSession(process.pid).sid, "the gateway's session: on Linux a session of its own would also be a CPU group of its own");
  });

  it('also kills what a server left in its process group when the server itself exits on stdin close', async () => {
    up = new StdioUpstream({
      name: 'orphaning',
      command: [process.execPath, STDIO_FIXTURE, '--grandchild'],
      timeoutMs: 10_000,
      logger: captureLogger('info').logger,
      killGraceMs: 2000,
    });
    await up.start();
    const { pid, grandchild } = await pidsOf(up);
    pids.push(pid, grandchild);
    assert.ok(isAlive(grandchild));
    const t0 = Date.now();
    await up.close();
    assert.ok(Date.now() - t0 < 1500, 'the server exited on stdin close, before any grace ran out');
    assert.ok(await waitFor(() => !isAlive(pid), 2000), `server pid ${pid} is gone`);
    assert.ok(await waitFor(() => !isAlive(grandchild), 2000), `grandchild pid ${grandchild} is gone`);
  });

  it('closes stdin, then sends SIGTERM, then SIGKILL to the process group, so a stubborn server and its grandchild are both gone', async () => {
    const log = captureLogger('info');
    up = new StdioUpstream({
      name: 'stubborn',
      command: [process.execPath, STDIO_FIXTURE, '--stubborn'],
      timeoutMs: 10_000,
      logger: log.logger,
      killGraceMs: 300,
    });
    await up.start();
    const { pid, grandchild } = await pidsOf(up);
    pids.push(pid, grandchild);
    assert.equal(pid, up.pid);
    assert.ok(isAlive(pid) && isAlive(grandchild));

    const t0 = Date.now();
    await up.close();
    assert.ok(Date.now() - t0 >= 600, 'it waited a grace period after stdin and after SIGTERM');
    assert.ok(await waitFor(() => !isAlive(pid), 2000), `server pid ${pid} is gone`);
    assert.ok(await waitFor(() => !isAlive(grandchild), 2000), `grandchild pid ${grandchild} is gone`);

    const msgs = log.lines.map((l) => String(l.msg));
    const stdinClosed = msgs.findIndex((m) => m.includes('stdin closed, staying up'));
    const sigterm = msgs.findIndex((m) => m.includes('got SIGTERM, ignoring it'));
    assert.ok(stdinClosed >= 0, 'stdin was closed first');
    assert.ok(sigterm > stdinClosed, 'SIGTERM came after stdin was closed');
  });
});

/** How many socket writes (the server's stdin is a socket) `fn` makes, run synchronously. */
function socketWrites(fn: () => void): number {
  const write = Socket.prototype.write;
  let writes = 0;
  Socket.prototype.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
    writes++;
    return write.apply(this, args);
  } as Socket['write'];
  try {
    fn();
  } finally {
    Socket.prototype.write = write;
  }
  return writes;
}

/**
 * A stdio MCP server in a few lines, for what the fixture server cannot show: it answers
 * initialize, tools/list with one tool (`echo`), and each tools/call with the text `text`, an
 * expression of the request `m` and of `requests`, all the requests of the read that held it.
 * Each answer goes after `delayMs` (an expression too), in a write of its own; or, with
 * `delayMs: 'together'`, the answers to the requests of one read go at once in a single write.
 * `callLine`, when given, is an expression for the whole text of a tools/call's answer instead.
 */
function tinyServer(name: string, text: string, delayMs = '0', callLine?: string): string[] {
  const together = delayMs === 'together';
  const script = `
    let rest = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
      const lines = (rest + chunk).split('\\n');
      rest = lines.pop();
      const requests = lines.filter((l) => l.trim() !== '').map((l) => JSON.parse(l)).filter((m) => m.id !== undefined);
      const out = [];
      for (const m of requests) {
        const result = m.method === 'initialize'
          ? { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: ${JSON.stringify(name)}, version: '0' } }
          : m.method === 'tools/list'
            ? { tools: [{ name: 'echo', inputSchema: { type: 'object' } }] }
            : { content: [{ type: 'text', text: ${text} }] };
        const line = (${callLine === undefined ? '' : `m.method === 'tools/call' ? ${callLine} : `}JSON.stringify({ jsonrpc: '2.0', id: m.id, result })) + '\\n';
        ${together ? 'out.push(line);' : `setTimeout(() => process.stdout.write(line), ${delayMs});`}
      }
      ${together ? "if (out.length > 0) process.stdout.write(out.join(''));" : ''}
    });`;
  return [process.execPath, '-e', script];
}

describe('writing to a stdio upstream', () => {
  let up: StdioUpstream | undefined;

  afterEach(async () => {
    await up?.close();
  });

  it('sends the requests made within one batch in a single write, where each would otherwise be a write of its own', async () => {
    // A server that answers each call with how many requests came in the read that held it.
    const command = tinyServer('reads', 'String(requests.length)');
    up = new StdioUpstream({ name: 'reads', command, timeoutMs: 5000, logger: captureLogger().logger });
    const session = await up.open(
      { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '0' } } },
      '2025-06-18',
    );
    const calls = (first: number): Array<Promise<JsonRpcResponse>> =>
      [0, 1, 2, 3, 4].map(
        (i) =>
          new Promise((resolve) =>
            session.call({ jsonrpc: '2.0', id: first + i, method: 'tools/call', params: { name: 'count', arguments: {} } }, undefined, {
              onRelated: () => {},
              onResponse: resolve,
            }),
          ),
      );
    let batched: Array<Promise<JsonRpcResponse>> = [];
    const batchedWrites = socketWrites(() => up!.batch(() => (batched = calls(1))));
    assert.equal(batchedWrites, 1);
    const counts = (await Promise.all(batched)).map((a) => textOf(a.result));
    assert.deepEqual(counts, ['5', '5', '5', '5', '5'], 'the server read all five requests at once');

    let single: Array<Promise<JsonRpcResponse>> = [];
    assert.equal(socketWrites(() => (single = calls(6))), 5);
    assert.equal((await Promise.all(single)).length, 5);
  });

  it("sends a client's id to the server as it is, unless another call in flight has it, and answers each client with its own id", async () => {
    // A server that answers each call with the id it saw.
    const command = tinyServer('ids', 'JSON.stringify(m.id)');
    up = new StdioUpstream({ name: 'ids', command, timeoutMs: 5000, logger: captureLogger().logger });
    const init = { jsonrpc: '2.0' as const, id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '0' } } };
    const a = await up.open(init, '2025-06-18');
    const b = await up.open(init, '2025-06-18');
    const call = (session: typeof a, id: string | number) =>
      new Promise<JsonRpcResponse>((resolve) =>
        session.call({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'id', arguments: {} } }, `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"method":"tools/call","params":{"name":"id","arguments":{}}}`, {
          onRelated: () => {},
          onResponse: resolve,
        }),
      );
    // Both clients use id 7, and a third call uses the string "7": three calls in flight at once.
    const [first, second, third] = await Promise.all([call(a, 7), call(b, 7), call(a, '7')]);
    assert.equal(first.id, 7);
    assert.equal(second.id, 7);
    assert.equal(third.id, '7');
    assert.equal(textOf(first.result), '7', "the first went with the client's own id");
    assert.equal(textOf(third.result), '"7"', 'the string id is another id, and went as it is');
    const seen = JSON.parse(textOf(second.result)) as unknown;
    assert.equal(typeof seen, 'number');
    assert.notEqual(seen, 7, "the second, whose id was in flight, went with one of the gateway's");
  });

  it('drops the late answer of a call that timed out, and gives no new call its id until that answer came', async () => {
    // A server that answers a call to 'slow' only after 600 ms, and each call with the id it saw.
    const command = tinyServer('late', 'JSON.stringify(m.id)', "m.params && m.params.name === 'slow' ? 600 : 0");
    up = new StdioUpstream({ name: 'late', command, timeoutMs: 200, logger: captureLogger().logger });
    const session = await up.open(
      { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '0' } } },
      '2025-06-18',
    );
    const call = (name: string) =>
      new Promise<JsonRpcResponse>((resolve) =>
        session.call({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name, arguments: {} } }, undefined, { onRelated: () => {}, onResponse: resolve }),
      );
    const timedOut = await call('slow');
    assert.match(timedOut.error?.message ?? '', /did not answer within 200 ms/);
    // The server may still answer the id 7 it was given: the next call 7 goes with another id.
    const meanwhile = await call('fast');
    assert.equal(meanwhile.id, 7);
    assert.notEqual(JSON.parse(textOf(meanwhile.result)), 7);
    // Once the late answer has come (and been dropped), 7 is free again.
    await new Promise((resolve) => setTimeout(resolve, 700));
    const after = await call('fast');
    assert.equal(textOf(after.result), '7');
  });
});

describe('answering a stdio client', () => {
  let gateway: Gateway | undefined;

  afterEach(async () => {
    await gateway?.shutdown(1000);
  });

  /** `policylayer run`'s two halves on `command`: what the test writes to `input` is the client's, `writes` what it reads, write by write. */
  async function wrap(name: string, command: string[]): Promise<{ input: PassThrough; writes: string[] }> {
    const logger = captureLogger().logger;
    gateway = new Gateway({ logger, sessionIdleTimeoutMs: 60_000, limiter: createLimiter(createMemoryStore(), { onStoreError: 'deny' }, logger) });
    const server = {
      name,
      upstream: new StdioUpstream({ name, command, timeoutMs: 5000, logger }),
      policy: compilePolicy({ version: '1', default: 'allow' }, '<test>'),
    };
    gateway.addServer(server);
    const writes: string[] = [];
    const out = new Writable({
      write(chunk: Buffer, _encoding, done) {
        writes.push(chunk.toString('utf8'));
        done();
      },
    });
    const input = new PassThrough();
    void new StdioListener(gateway, server, out, logger).attach(input);
    input.write(`${JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '0' } } })}\n`);
    await waitFor(() => writes.length === 1, 5000);
    // The gateway learns the tools' input schemas from the first list, before the calls.
    input.write(`${JSON.stringify({ jsonrpc: '2.0', id: 100, method: 'tools/list' })}\n`);
    await waitFor(() => writes.length === 2, 5000);
    writes.length = 0;
    return { input, writes };
  }

  const call = (id: number, args: Record<string, unknown> = {}) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: args } });
  const lines = (w: string) => w.split('\n').filter((l) => l !== '');

  it('sends the first of the answers that arrive together at once, and the others in one write after it', async () => {
    // A server that answers all the requests of one read in a single write, saying how many it read.
    const { input, writes } = await wrap('together', tinyServer('together', "'read with ' + requests.length", 'together'));
    // Four calls in one chunk: they reach the server in one write, and their answers come back in one.
    input.write(`${[1, 2, 3, 4].map((id) => call(id)).join('\n')}\n`);
    await waitFor(() => writes.join('').split('\n').length === 5, 5000);
    assert.deepEqual(writes.map(lines).map((ls) => ls.length), [1, 3], 'the first answer alone, then the three others together');
    const answers = writes.flatMap(lines).map((l) => JSON.parse(l) as JsonRpcResponse);
    assert.deepEqual(
      answers.map((a) => a.id),
      [1, 2, 3, 4],
    );
    assert.ok(answers.every((a) => textOf(a.result) === 'read with 4'), 'the server read the four calls at once');
  });

  it('forwards an answer as the server wrote it, its spacing and the order of its members included, and one whose result is not JSON too', async () => {
    // The server writes its answer to a call from the template in the call's arguments, with the id filled in.
    const { input, writes } = await wrap('raw', tinyServer('raw', "''", '0', "m.params.arguments.answer.replace('ID', JSON.stringify(m.id))"));
    const spaced = '{ "result" : { "content" : [ { "type":"text", "text":"a" } ] } , "id" : ID,  "jsonrpc":"2.0" }';
    // Brackets that balance around text no parser accepts: the gateway reads only the envelope.
    const broken = '{"jsonrpc":"2.0","id":ID,"result":{"content":[{"type":"text","text":"b"}],}}';
    input.write(`${call(1, { answer: spaced })}\n`);
    await waitFor(() => writes.length === 1, 5000);
    input.write(`${call(2, { answer: broken })}\n`);
    await waitFor(() => writes.length === 2, 5000);
    assert.deepEqual(writes.map(lines), [[spaced.replace('ID', '1')], [broken.replace('ID', '2')]]);
  });
});
