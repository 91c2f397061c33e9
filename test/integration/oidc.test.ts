/**
 * JWT bearer tokens end to end: a gateway with `auth.oidc` whose issuer publishes its keys on a
 * local JWKS server, a real SDK client presenting a JWT, and the token attack suite. Every refused
 * request gets 401/403 with the challenge, and nothing of it reaches the upstream server.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { base64url, exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import { textOf } from '../helpers/clients.js';
import { tempDir, type TempDir } from '../helpers/fs.js';
import { startTestGateway, yamlValue, type TestGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/net.js';
import { REPO_ROOT, tappedCommand, toolCallsIn } from '../helpers/processes.js';
import { MCP_HEADERS, PROTOCOL_VERSION, raw, sessionHeaders } from '../helpers/safety-helpers.js';
import { hashToken, newToken } from '../../src/identity/tokens.js';
import { openControlStore } from '../../src/main.js';
import type { ControlStore } from '../../src/store/store.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const ISSUER = 'https://id.example.com/';
const AUDIENCE = 'https://gateway.example.com/';
const ALLOW = { version: '1', default: 'allow' };

const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'agent', version: '0' } },
});
// Refused requests ask for this tool, which nothing legitimate calls: the tap shows whether any got through.
const FORBIDDEN_CALL = JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'create_session', arguments: {} } });

interface Issuer {
  key: { privateKey: CryptoKey; publicKey: CryptoKey };
  jwks: { keys: JWK[] };
  publicPem: string;
  /** A JWT from this issuer for the gateway, valid for five minutes, signed with kid k1. */
  mint(claims: JWTPayload, opts?: { kid?: string; key?: CryptoKey; alg?: string }): Promise<string>;
}

async function newIssuer(): Promise<Issuer> {
  const key = await generateKeyPair('ES256', { extractable: true });
  const jwks = { keys: [{ ...(await exportJWK(key.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] };
  return {
    key,
    jwks,
    publicPem: await exportSPKI(key.publicKey),
    mint: (claims, opts = {}) => {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 300, ...claims })
        .setProtectedHeader({ alg: opts.alg ?? 'ES256', kid: opts.kid ?? 'k1', typ: 'JWT' })
        .sign(opts.key ?? key.privateKey);
    },
  };
}

/** A JWKS endpoint on 127.0.0.1 that can be stopped and started again on the same port. */
class JwksServer {
  fetches = 0;
  private server: Server | undefined;
  constructor(
    private readonly jwks: unknown,
    readonly port: number,
  ) {}
  get url(): string {
    return `http://127.0.0.1:${this.port}/.well-known/jwks.json`;
  }
  async start(): Promise<void> {
    const server = createServer((req, res) => {
      this.fetches++;
      if (req.url !== '/.well-known/jwks.json') return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify(this.jwks));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function oidcConfig(jwksUrl: string): string {
  return `
store: sqlite:./control.db
auth:
  required: true
  oidc:
    issuer: ${yamlValue(ISSUER)}
    audience: ${yamlValue(AUDIENCE)}
    jwks_url: ${yamlValue(jwksUrl)}
    algorithms: [ ES256, RS256 ]
    grants_by_group: { ci: ci-runner }
    roles_by_group: { platform: admin, security: policy_manager, eng: viewer }
`;
}

describe('a gateway accepting JWTs from an OIDC issuer', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let store: ControlStore;
  let issuer: Issuer;
  let jwksServer: JwksServer;
  let tap: string;
  let sessionId: string;
  const clients: Client[] = [];

  const endpoint = () => gw.endpoint('fixture');
  async function grant(label: string, servers: string[]) {
    await store.createGrant({ label, servers }, hashToken(newToken()), Date.now());
  }
  async function connect(token: string): Promise<Client> {
    const client = new Client({ name: 'agent', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(endpoint()), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
    await client.connect(transport);
    clients.push(client);
    return client;
  }

  before(async () => {
    tmp = tempDir();
    tap = path.join(tmp.path, 'tap.jsonl');
    issuer = await newIssuer();
    jwksServer = new JwksServer(issuer.jwks, await freePort());
    await jwksServer.start();
    gw = await startTestGateway(
      `${oidcConfig(jwksServer.url)}
servers:
  fixture:
    command: ${yamlValue(tappedCommand(tap, [process.execPath, FIXTURE, '--tools', 'create_session']))}
    policy: ${yamlValue(ALLOW)}
  other:
    command: ${yamlValue([process.execPath, FIXTURE])}
    policy: ${yamlValue(ALLOW)}
`,
      { dir: tmp.path },
    );
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    await grant('alice', ['fixture']);
    await grant('ci-runner', ['fixture']);
    await grant('revoked', ['fixture']);
    await store.revokeGrant('revoked', Date.now());
    await grant('other-only', ['other']);

    // A live session of a valid caller: the refused requests below present its id with their bad
    // token, so a gateway that let one through would run the call.
    const auth = { authorization: `Bearer ${await issuer.mint({ sub: 'alice' })}` };
    const init = await raw(endpoint(), { headers: { ...MCP_HEADERS, ...auth }, body: INITIALIZE });
    assert.equal(init.status, 200, init.text);
    sessionId = String(init.headers['mcp-session-id']);
    const ack = await raw(endpoint(), { headers: { ...sessionHeaders(sessionId), ...auth }, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
    assert.equal(ack.status, 202);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await gw?.stop();
    await store?.close();
    await jwksServer?.stop();
    tmp?.remove();
  });

  test('lists and calls tools for a caller whose JWT names an existing grant', async () => {
    const client = await connect(await issuer.mint({ sub: 'alice' }));
    const { tools } = await client.listTools();
    assert.ok(tools.some((t) => t.name === 'echo'));
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'hello' } })), 'hello');
  });

  test('maps a JWT to a grant through grants_by_group when its subject names no grant', async () => {
    const client = await connect(await issuer.mint({ sub: 'svc-4711', groups: ['ci'] }));
    assert.equal(textOf(await client.callTool({ name: 'echo', arguments: { text: 'from ci' } })), 'from ci');
  });

  test('names the issuer as an authorization server in the protected-resource metadata', async () => {
    const metadata = await raw(`${gw.url}/.well-known/oauth-protected-resource/mcp/fixture`, { method: 'GET' });
    assert.deepEqual(metadata.json.authorization_servers, [ISSUER]);
  });

  test('opens the admin API to a JWT whose groups map to a role, acting as oidc:<subject> with the highest role', async () => {
    const admin = (token: string) => raw(`${gw.running.adminUrl}/whoami`, { method: 'GET', headers: { authorization: `Bearer ${token}` } });
    const who = await admin(await issuer.mint({ sub: 'dana', groups: ['eng', 'security'] }));
    assert.equal(who.status, 200);
    assert.deepEqual(who.json, { actor: 'oidc:dana', role: 'policy_manager' });
    const noRole = await admin(await issuer.mint({ sub: 'erin', groups: ['ci'] }));
    assert.equal(noRole.status, 401);
    assert.match(noRole.json.error.message, /maps to no admin role/);
    const forOthers = await admin(await issuer.mint({ sub: 'dana', groups: ['platform'], aud: 'https://upstream.example.com/mcp' }));
    assert.equal(forOthers.status, 401);
  });

  const now = () => Math.floor(Date.now() / 1000);
  const tamper = (jwt: string) => {
    const [h, p, s] = jwt.split('.') as [string, string, string];
    return `${h}.${p}.${s[0] === 'A' ? 'B' : 'A'}${s.slice(1)}`;
  };
  const refusals: Array<[string, () => Promise<string>, 401 | 403, string, RegExp]> = [
    ['a JWT from another issuer', () => issuer.mint({ sub: 'alice', iss: 'https://evil.example.com/' }), 401, 'invalid_token', /not issued by/],
    [
      'a JWT minted for the upstream server (a passthrough token)',
      () => issuer.mint({ sub: 'alice', aud: 'https://upstream.example.com/mcp' }),
      401,
      'invalid_token',
      /not meant for this gateway/,
    ],
    ['an expired JWT', () => issuer.mint({ sub: 'alice', iat: now() - 600, exp: now() - 120 }), 401, 'invalid_token', /has expired/],
    ['a JWT that is not valid yet', () => issuer.mint({ sub: 'alice', nbf: now() + 600 }), 401, 'invalid_token', /not valid yet/],
    [
      'an unsigned JWT (alg: none)',
      async () => `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${(await issuer.mint({ sub: 'alice' })).split('.')[1]}.`,
      401,
      'invalid_token',
      /signing algorithm is not accepted/,
    ],
    [
      "a JWT signed with HS256 keyed by the issuer's public key",
      () => new SignJWT({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', exp: now() + 300 }).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(new TextEncoder().encode(issuer.publicPem)),
      401,
      'invalid_token',
      /signing algorithm is not accepted/,
    ],
    [
      'a JWT signed by a key the issuer does not publish (unknown kid)',
      async () => issuer.mint({ sub: 'alice' }, { kid: 'rogue', key: (await generateKeyPair('ES256')).privateKey }),
      401,
      'invalid_token',
      /no key of the issuer matches/,
    ],
    ['a JWT with a tampered signature', async () => tamper(await issuer.mint({ sub: 'alice' })), 401, 'invalid_token', /signature does not verify/],
    ['a JWT naming a revoked grant', () => issuer.mint({ sub: 'revoked', groups: ['ci'] }), 401, 'invalid_token', /'revoked' was revoked/],
    ['a JWT naming no grant', () => issuer.mint({ sub: 'mallory' }), 401, 'invalid_token', /names no grant: no grant is labelled 'mallory'/],
    ['a JWT whose grant is not bound to this server', () => issuer.mint({ sub: 'other-only' }), 403, 'insufficient_scope', /'other-only' is not bound to the server 'fixture'/],
  ];
  for (const [what, token, status, error, why] of refusals) {
    test(`refuses ${what} with ${status} ${error} and a challenge saying why`, async () => {
      const res = await raw(endpoint(), { headers: { ...sessionHeaders(sessionId), authorization: `Bearer ${await token()}` }, body: FORBIDDEN_CALL });
      assert.equal(res.status, status, res.text);
      assert.equal(res.json?.error, error);
      assert.match(res.json?.error_description, why);
      const challenge = String(res.headers['www-authenticate']);
      assert.match(challenge, new RegExp(`^Bearer realm="policylayer", resource_metadata="[^"]+", error="${error}", error_description="[^"]+"$`));
    });
  }

  test('lets nothing of a refused request reach the upstream server', () => {
    const calls = toolCallsIn(tap);
    assert.deepEqual(calls, ['echo', 'echo']);
  });

  test('fetched the JWKS once for all of the above: an unknown kid does not make it fetch again at once', () => {
    assert.equal(jwksServer.fetches, 1);
  });
});

describe('a gateway whose issuer JWKS is down', () => {
  let tmp: TempDir;
  let gw: TestGateway;
  let store: ControlStore;
  let issuer: Issuer;
  let jwksServer: JwksServer;
  const post = async () => raw(gw.endpoint('fixture'), { headers: { ...MCP_HEADERS, authorization: `Bearer ${await issuer.mint({ sub: 'alice' })}` }, body: INITIALIZE });

  before(async () => {
    tmp = tempDir();
    issuer = await newIssuer();
    // Nothing listens on the port yet.
    jwksServer = new JwksServer(issuer.jwks, await freePort());
    gw = await startTestGateway(`${oidcConfig(jwksServer.url)}\nservers:\n  fixture:\n    command: ${yamlValue([process.execPath, FIXTURE])}\n    policy: ${yamlValue(ALLOW)}\n`, {
      dir: tmp.path,
    });
    store = await openControlStore(`sqlite:${path.join(tmp.path, 'control.db')}`);
    await store.createGrant({ label: 'alice', servers: ['fixture'] }, hashToken(newToken()), Date.now());
  });

  after(async () => {
    await gw?.stop();
    await store?.close();
    await jwksServer?.stop();
    tmp?.remove();
  });

  test("answers 401 saying the issuer's keys could not be fetched", async () => {
    const res = await post();
    assert.equal(res.status, 401);
    assert.equal(res.json?.error, 'invalid_token');
    assert.match(res.json?.error_description, /^the issuer's keys could not be fetched from http:\/\/127\.0\.0\.1:\d+\/\.well-known\/jwks\.json \(.*ECONNREFUSED\); try again later$/);
    assert.match(String(res.headers['www-authenticate']), /error="invalid_token", error_description="the issuer's keys could not be fetched/);
  });

  test('recovers by itself once the JWKS server is back', async () => {
    await jwksServer.start();
    const res = await post();
    assert.equal(res.status, 200, res.text);
    assert.equal(jwksServer.fetches, 1);
  });

  test('keeps accepting tokens on the keys it has when the JWKS server goes down again', async () => {
    await jwksServer.stop();
    assert.equal((await post()).status, 200);
  });
});
