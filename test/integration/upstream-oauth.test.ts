/**
 * Upstream OAuth client credentials end to end: a real gateway, a real SDK client, a local token
 * endpoint and a local Streamable HTTP MCP server that serves only bearers the token endpoint
 * issued. The gateway gets, caches, renews and sends the token; it never sends it to another
 * server, never forwards the client's own token, and never logs a secret or a token.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { startLegacySseServer, startRecordingServer, type FixtureHttpServer } from '../fixtures/http-servers.js';
import { connectHttp, textOf, type V1Connection } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { hashToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import { createLogger } from '../../src/telemetry/logger.js';

const ALLOW_ALL = yamlValue({ version: '1', default: 'allow' });

// Secrets with characters that need form-urlencoding before Basic authentication.
const POOL_SECRET = 'pool-secret:with+odd/chars é';
const SHORT_SECRET = 'short-lived-secret-0123';
const LEGACY_SECRET = 'legacy-secret-4567';
const FILED_SECRET = 'filed-secret-from-a-file';
const FILED_API_KEY = 'api-key-from-a-file-89';
const WRONG_SECRET = 'not-the-right-secret-42';

interface TokenRequest {
  clientId: string | undefined;
  method: 'basic' | 'post';
  form: URLSearchParams;
}

/** A token endpoint (client credentials grant) on 127.0.0.1 with a fixed set of clients. */
class AuthServer {
  readonly clients = new Map<string, { secret: string; expiresIn: number }>();
  readonly requests: TokenRequest[] = [];
  /** Issued token → client id. */
  readonly issued = new Map<string, string>();
  private server: Server | undefined;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.url = `http://127.0.0.1:${await listen(this.server)}/token`;
  }

  fetches(clientId: string): number {
    return this.requests.filter((r) => r.clientId === clientId).length;
  }

  tokensOf(clientId: string): string[] {
    return [...this.issued].filter(([, c]) => c === clientId).map(([t]) => t);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const form = new URLSearchParams(await readBody(req));
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    let id: string | undefined;
    let secret: string | undefined;
    if (basic !== undefined) {
      const pair = Buffer.from(basic, 'base64').toString('utf8');
      const at = pair.indexOf(':');
      const decode = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
      id = decode(pair.slice(0, at));
      secret = decode(pair.slice(at + 1));
    } else {
      id = form.get('client_id') ?? undefined;
      secret = form.get('client_secret') ?? undefined;
    }
    this.requests.push({ clientId: id, method: basic !== undefined ? 'basic' : 'post', form });
    const client = id === undefined ? undefined : this.clients.get(id);
    res.setHeader('content-type', 'application/json');
    if (form.get('grant_type') !== 'client_credentials') {
      res.writeHead(400).end(JSON.stringify({ error: 'unsupported_grant_type' }));
      return;
    }
    if (client === undefined || client.secret !== secret) {
      res.writeHead(401).end(JSON.stringify({ error: 'invalid_client', error_description: 'client authentication failed' }));
      return;
    }
    const token = `at-${randomUUID()}`;
    this.issued.set(token, id!);
    res.writeHead(200, { 'cache-control': 'no-store' }).end(JSON.stringify({ access_token: token, token_type: 'Bearer', expires_in: client.expiresIn }));
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}

interface SeenRequest {
  path: string;
  method: string;
  authorization: string | undefined;
  apiKey: string | undefined;
  /** The JSON-RPC method of a POST. */
  rpcMethod: string | undefined;
  status: number;
}

/** A Streamable HTTP MCP server (an `echo` tool) that serves only bearers `auth` issued and not revoked. */
class ResourceServer {
  readonly seen: SeenRequest[] = [];
  readonly revoked = new Set<string>();
  /** Paths on which every token is refused for tools/call (only, so that no other request of the session races with it). */
  readonly refuseCalls = new Set<string>();
  private readonly transports = new Map<string, StreamableHTTPServerTransport>();
  private server: Server | undefined;
  url = '';

  constructor(private readonly auth: AuthServer) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    this.url = `http://127.0.0.1:${await listen(this.server)}`;
  }

  /** The requests that reached `path`. */
  on(p: string): SeenRequest[] {
    return this.seen.filter((s) => s.path === p);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    const authorization = req.headers.authorization;
    const token = /^Bearer (.+)$/.exec(authorization ?? '')?.[1];
    const text = req.method === 'POST' ? await readBody(req) : '';
    const body = text === '' ? undefined : (JSON.parse(text) as { method?: string });
    const refused = this.refuseCalls.has(p) && body?.method === 'tools/call';
    const ok = token !== undefined && this.auth.issued.has(token) && !this.revoked.has(token) && !refused;
    const apiKey = req.headers['x-api-key'];
    this.seen.push({ path: p, method: req.method ?? '', authorization, apiKey: typeof apiKey === 'string' ? apiKey : undefined, rpcMethod: body?.method, status: ok ? 200 : 401 });
    if (!ok) {
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"', 'content-type': 'text/plain' }).end(`token refused: ${authorization ?? '(none)'}`);
      return;
    }
    const sid = req.headers['mcp-session-id'];
    let transport = typeof sid === 'string' ? this.transports.get(sid) : undefined;
    if (!transport) {
      if (typeof sid === 'string' || req.method !== 'POST') {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'session not found' } }));
        return;
      }
      const created = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void this.transports.set(id, created),
      });
      created.onclose = () => {
        if (created.sessionId !== undefined) this.transports.delete(created.sessionId);
      };
      const mcp = new McpServer({ name: 'oauth-protected', version: '1.0.0' });
      mcp.registerTool('echo', { description: 'Answers with its text.', inputSchema: { text: z.string() } }, async ({ text }) => ({
        content: [{ type: 'text' as const, text }],
      }));
      await mcp.connect(created);
      transport = created;
    }
    await transport.handleRequest(req, res, body);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.transports.values()].map((t) => t.close()));
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** A logger writing JSON lines into memory, without a redaction list: nothing secret may reach it at all. */
function capturingLogger() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  return { logger: createLogger({ level: 'debug', name: 'upstream-oauth-test', destination }), text: () => lines.join('') };
}

function assertNoSecretsIn(text: string, auth: AuthServer, extra: string[] = []): void {
  for (const secret of [POOL_SECRET, SHORT_SECRET, LEGACY_SECRET, FILED_SECRET, FILED_API_KEY, WRONG_SECRET, ...extra]) {
    assert.ok(!text.includes(secret), `the log contains the secret ${secret}`);
  }
  for (const token of auth.issued.keys()) assert.ok(!text.includes(token), 'the log contains an access token');
}

async function callEcho(conn: V1Connection, text: string): Promise<string> {
  return textOf(await conn.client.callTool({ name: 'echo', arguments: { text } }));
}

describe('a gateway with upstream OAuth client credentials', () => {
  const auth = new AuthServer();
  const rs = new ResourceServer(auth);
  let other: FixtureHttpServer;
  let legacy: FixtureHttpServer;
  let tmp: TempDir;
  let gw: TestGateway;
  const log = capturingLogger();
  const open: V1Connection[] = [];

  async function connect(server: string): Promise<V1Connection> {
    const conn = await connectHttp(gw.endpoint(server));
    open.push(conn);
    return conn;
  }

  before(async () => {
    await auth.start();
    await rs.start();
    other = await startRecordingServer();
    legacy = await startLegacySseServer();
    auth.clients.set('policylayer', { secret: POOL_SECRET, expiresIn: 3600 });
    auth.clients.set('short-lived', { secret: SHORT_SECRET, expiresIn: 2 });
    auth.clients.set('filed-client', { secret: FILED_SECRET, expiresIn: 3600 });
    auth.clients.set('legacy-client', { secret: LEGACY_SECRET, expiresIn: 3600 });
    tmp = tempDir();
    // As an editor or `kubectl create secret` would leave them: with a trailing newline.
    tmp.write('filed-secret.txt', `${FILED_SECRET}\n`);
    tmp.write('api-key.txt', `${FILED_API_KEY}\r\n`);
    gw = await startTestGateway(
      `
servers:
  pool:
    url: ${rs.url}/pool
    oauth:
      token_url: ${auth.url}
      client_id: policylayer
      client_secret: \${POOL_SECRET}
      scope: "media.read payments.write"
      audience: https://www.poolparty.io/api
    policy: ${ALLOW_ALL}
  short:
    url: ${rs.url}/short
    oauth: { token_url: "${auth.url}", client_id: short-lived, client_secret: "\${SHORT_SECRET}" }
    policy: ${ALLOW_ALL}
  filed:
    url: ${rs.url}/filed
    headers: { X-Api-Key: "\${file:api-key.txt}" }
    oauth:
      token_url: ${auth.url}
      client_id: filed-client
      client_secret: \${file:./filed-secret.txt}
      auth_method: client_secret_post
    policy: ${ALLOW_ALL}
  broken:
    url: ${rs.url}/broken
    oauth: { token_url: "${auth.url}", client_id: policylayer, client_secret: "\${WRONG_SECRET}" }
    policy: ${ALLOW_ALL}
  legacy:
    url: ${legacy.url}
    transport: sse
    oauth: { token_url: "${auth.url}", client_id: legacy-client, client_secret: "\${LEGACY_SECRET}" }
    policy: ${ALLOW_ALL}
  other:
    url: ${other.url}
    policy: ${ALLOW_ALL}
`,
      { dir: tmp.path, env: { POOL_SECRET, SHORT_SECRET, LEGACY_SECRET, WRONG_SECRET }, logger: log.logger },
    );
  });

  after(async () => {
    await Promise.allSettled(open.map((c) => c.close()));
    await gw?.stop();
    await Promise.allSettled([rs.close(), auth.close(), other?.close(), legacy?.close()]);
    tmp?.remove();
  });

  test('fetches a token once, with the configured scope and audience, and reuses it across calls and sessions', async () => {
    const first = await connect('pool');
    assert.equal(await callEcho(first, 'one'), 'one');
    assert.equal(await callEcho(first, 'two'), 'two');
    const second = await connect('pool');
    assert.equal(await callEcho(second, 'three'), 'three');
    assert.equal(auth.fetches('policylayer'), 1);
    const request = auth.requests.find((r) => r.clientId === 'policylayer')!;
    assert.equal(request.method, 'basic');
    assert.equal(request.form.get('scope'), 'media.read payments.write');
    assert.equal(request.form.get('audience'), 'https://www.poolparty.io/api');
    const [token] = auth.tokensOf('policylayer');
    assert.ok(rs.on('/pool').length >= 6, 'the sessions reached the upstream');
    for (const r of rs.on('/pool')) assert.equal(r.authorization, `Bearer ${token}`);
  });

  test('fetches a new token once the cached one has expired', async () => {
    const conn = await connect('short');
    assert.equal(await callEcho(conn, 'before'), 'before');
    const fetched = auth.fetches('short-lived');
    assert.ok(fetched >= 1);
    // expires_in is 2 s; the gateway stops using a token when half a short lifetime is left.
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await callEcho(conn, 'after'), 'after');
    assert.equal(auth.fetches('short-lived'), fetched + 1);
    const newest = auth.tokensOf('short-lived').at(-1);
    assert.equal(rs.on('/short').at(-1)?.authorization, `Bearer ${newest}`);
  });

  test('fetches a new token once when the upstream answers 401, and the call succeeds', async () => {
    const conn = await connect('pool');
    assert.equal(await callEcho(conn, 'ok'), 'ok');
    const fetched = auth.fetches('policylayer');
    const refusedCalls = () => rs.on('/pool').filter((r) => r.rpcMethod === 'tools/call' && r.status === 401).length;
    const refusedBefore = refusedCalls();
    for (const t of auth.tokensOf('policylayer')) rs.revoked.add(t);
    assert.equal(await callEcho(conn, 'after revocation'), 'after revocation');
    assert.equal(auth.fetches('policylayer'), fetched + 1);
    assert.equal(refusedCalls(), refusedBefore + 1);
  });

  test('fails the call with a clear error when the upstream refuses the fresh token too, after one refetch only', async () => {
    const conn = await connect('pool');
    const fetched = auth.fetches('policylayer');
    rs.refuseCalls.add('/pool');
    try {
      await assert.rejects(callEcho(conn, 'refused'), /upstream server 'pool' refused the OAuth access token \(HTTP 401\), also a newly fetched one/);
      assert.equal(auth.fetches('policylayer'), fetched + 1);
    } finally {
      rs.refuseCalls.delete('/pool');
    }
    assert.equal(await callEcho(conn, 'recovered'), 'recovered');
  });

  test('a failing token endpoint gives the client an error naming the server, the token URL and the OAuth error', async () => {
    const err = await connect('broken').then(
      () => assert.fail('expected the connection to fail'),
      (e: Error) => e,
    );
    assert.match(err.message, /upstream server 'broken': cannot get an OAuth access token from http:\/\/127\.0\.0\.1:\d+\/token: invalid_client \(client authentication failed\), HTTP 401/);
    assert.ok(!err.message.includes(WRONG_SECRET));
    assert.equal(rs.on('/broken').length, 0, 'nothing reached the upstream without a token');
  });

  test('${file:…} secrets work end to end: the client secret (client_secret_post) and a header', async () => {
    const conn = await connect('filed');
    assert.equal(await callEcho(conn, 'from a file'), 'from a file');
    const request = auth.requests.find((r) => r.clientId === 'filed-client')!;
    assert.equal(request.method, 'post');
    assert.equal(request.form.get('client_secret'), FILED_SECRET);
    assert.ok(rs.on('/filed').length > 0);
    for (const r of rs.on('/filed')) assert.equal(r.apiKey, FILED_API_KEY);
  });

  test('a legacy SSE server gets the bearer on its event stream and on every message', async () => {
    const conn = await connect('legacy');
    assert.equal(await callEcho(conn, 'legacy'), 'legacy');
    const [token] = auth.tokensOf('legacy-client');
    assert.ok(legacy.requests.some((r) => r.method === 'GET') && legacy.requests.some((r) => r.method === 'POST'));
    for (const r of legacy.requests) assert.equal(r.headers.authorization, `Bearer ${token}`);
  });

  test('a token goes only to its own server: never to a server without oauth, nor to one with other credentials', async () => {
    const conn = await connect('other');
    assert.equal(await callEcho(conn, 'elsewhere'), 'elsewhere');
    assert.ok(other.requests.length > 0);
    for (const r of other.requests) assert.equal(r.headers.authorization, undefined);
    const owners: Record<string, string> = { '/pool': 'policylayer', '/short': 'short-lived', '/filed': 'filed-client' };
    for (const r of rs.seen) {
      const token = /^Bearer (.+)$/.exec(r.authorization ?? '')?.[1];
      assert.ok(token !== undefined, `${r.method} ${r.path} carried a bearer`);
      assert.equal(auth.issued.get(token), owners[r.path], `${r.method} ${r.path} carried its own server's token`);
    }
  });

  test('the log never contains a client secret, a secret file, or an access token', () => {
    const text = log.text();
    assert.match(text, /OAuth token request failed/, 'the failure was logged');
    assert.match(text, /fetched an OAuth access token/, 'debug lines were written');
    assertNoSecretsIn(text, auth);
  });
});

describe('a gateway with grants and an upstream with OAuth', () => {
  const auth = new AuthServer();
  const rs = new ResourceServer(auth);
  let tmp: TempDir;
  let gw: TestGateway;
  const log = capturingLogger();

  before(async () => {
    await auth.start();
    await rs.start();
    auth.clients.set('policylayer', { secret: POOL_SECRET, expiresIn: 3600 });
    tmp = tempDir();
    gw = await startTestGateway(
      `
store: sqlite:./control.db
auth: { required: true }
servers:
  pool:
    url: ${rs.url}/pool
    oauth: { token_url: "${auth.url}", client_id: policylayer, client_secret: "\${POOL_SECRET}" }
    policy: ${ALLOW_ALL}
`,
      { dir: tmp.path, env: { POOL_SECRET }, logger: log.logger },
    );
  });

  after(async () => {
    await gw?.stop();
    await Promise.allSettled([rs.close(), auth.close()]);
    tmp?.remove();
  });

  test("the client's own Authorization header (its grant token) never reaches the upstream", async () => {
    const store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    const grantToken = newToken();
    try {
      await store.createGrant({ label: 'agent', servers: ['pool'] }, hashToken(grantToken), Date.now());
    } finally {
      await store.close();
    }
    const conn = await connectHttp(gw.endpoint('pool'), { headers: { authorization: `Bearer ${grantToken}` } });
    try {
      assert.equal(await callEcho(conn, 'with a grant'), 'with a grant');
    } finally {
      await conn.close();
    }
    const [token] = auth.tokensOf('policylayer');
    assert.ok(rs.seen.length > 0);
    for (const r of rs.seen) {
      assert.equal(r.authorization, `Bearer ${token}`);
      assert.equal(r.status, 200);
    }
    assertNoSecretsIn(log.text(), auth, [grantToken]);
  });
});
