import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { OAuthTokenError, OAuthTokenSource, sendWithToken, type OAuthTokenSourceOptions, type UpstreamTokenSource } from './oauth.js';

interface Received {
  url: string;
  headers: IncomingMessage['headers'];
  form: URLSearchParams;
}

type Handler = (req: Received, res: ServerResponse) => void;

const SECRET = 'p@ss:w+rd/é secret';

let server: Server;
let base: string;
let received: Received[] = [];
let handler: Handler;

async function listen(s: Server): Promise<string> {
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { url: req.url ?? '', headers: req.headers, form: new URLSearchParams(Buffer.concat(chunks).toString('utf8')) };
      received.push(r);
      handler(r, res);
    });
  });
  base = await listen(server);
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  received = [];
  let n = 0;
  handler = (_req, res) => json(res, 200, { access_token: `token-${++n}`, token_type: 'Bearer', expires_in: 3600 });
});

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function source(extra: Partial<OAuthTokenSourceOptions> = {}): OAuthTokenSource {
  return new OAuthTokenSource({
    server: 'poolparty',
    tokenUrl: `${base}/oauth/token`,
    clientId: 'policylayer',
    clientSecret: SECRET,
    authMethod: 'client_secret_basic',
    timeoutMs: 2000,
    ...extra,
  });
}

async function rejection(p: Promise<unknown>): Promise<OAuthTokenError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof OAuthTokenError, `expected an OAuthTokenError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the token request to fail');
}

function assertNoSecret(text: string): void {
  assert.ok(!text.includes(SECRET), `the secret leaked into: ${text}`);
  assert.ok(!text.includes('p@ss'), `part of the secret leaked into: ${text}`);
}

describe('the token request', () => {
  test('sends client_secret_basic with the id and secret form-urlencoded before base64 (RFC 6749 section 2.3.1)', async () => {
    const token = await source({ clientId: 'my client', scope: 'media.read payments.write', audience: 'https://api.example' }).token();
    assert.equal(token, 'token-1');
    const r = received[0]!;
    assert.equal(r.url, '/oauth/token');
    assert.equal(r.headers['content-type'], 'application/x-www-form-urlencoded');
    assert.equal(r.headers.accept, 'application/json');
    const basic = /^Basic (.+)$/.exec(r.headers.authorization ?? '')?.[1];
    assert.equal(Buffer.from(basic ?? '', 'base64').toString('utf8'), 'my+client:p%40ss%3Aw%2Brd%2F%C3%A9+secret');
    assert.deepEqual([...r.form], [
      ['grant_type', 'client_credentials'],
      ['scope', 'media.read payments.write'],
      ['audience', 'https://api.example'],
    ]);
  });

  test('sends client_secret_post with the id and secret in the form and no Authorization header', async () => {
    await source({ authMethod: 'client_secret_post' }).token();
    const r = received[0]!;
    assert.equal(r.headers.authorization, undefined);
    assert.equal(r.form.get('grant_type'), 'client_credentials');
    assert.equal(r.form.get('client_id'), 'policylayer');
    assert.equal(r.form.get('client_secret'), SECRET);
    assert.equal(r.form.has('scope'), false);
  });
});

describe('the token cache', () => {
  test('reuses the token until expires_in minus the margin, counted from when the request left', async () => {
    let now = 1_000_000;
    const s = source({ now: () => now, marginMs: 30_000 });
    handler = (_r, res) => json(res, 200, { access_token: `token-${received.length}`, token_type: 'bearer', expires_in: 120 });
    assert.equal(await s.token(), 'token-1');
    now += 89_999;
    assert.equal(s.current(), 'token-1');
    assert.equal(await s.token(), 'token-1');
    now += 1;
    assert.equal(s.current(), undefined);
    assert.equal(await s.token(), 'token-2');
    assert.equal(received.length, 2);
  });

  test('keeps at most half of a short lifetime as margin', async () => {
    let now = 0;
    const s = source({ now: () => now });
    handler = (_r, res) => json(res, 200, { access_token: `token-${received.length}`, expires_in: '10' });
    await s.token();
    now = 4_999;
    assert.equal(s.current(), 'token-1');
    now = 5_000;
    assert.equal(await s.token(), 'token-2');
  });

  test('reuses a token without expires_in until the upstream refuses it', async () => {
    let now = 0;
    const s = source({ now: () => now });
    handler = (_r, res) => json(res, 200, { access_token: `token-${received.length}` });
    await s.token();
    now = 365 * 24 * 3600_000;
    assert.equal(await s.token(), 'token-1');
    s.invalidate('token-1');
    assert.equal(await s.token(), 'token-2');
  });

  test('shares one fetch among concurrent callers', async () => {
    const s = source();
    handler = (_r, res) => setTimeout(() => json(res, 200, { access_token: 'shared', expires_in: 60 }), 50);
    const tokens = await Promise.all(Array.from({ length: 8 }, () => s.token()));
    assert.deepEqual(new Set(tokens), new Set(['shared']));
    assert.equal(received.length, 1);
  });

  test('drops a refused token only while it is the current one, so concurrent refusals cause one refetch', async () => {
    const s = source();
    await s.token();
    s.invalidate('token-1');
    assert.equal(await s.token(), 'token-2');
    s.invalidate('token-1');
    assert.equal(await s.token(), 'token-2');
    assert.equal(received.length, 2);
  });

  test('does not cache a failure: the next caller asks again', async () => {
    const s = source();
    handler = (_r, res) => json(res, 503, { error: 'temporarily_unavailable' });
    await rejection(s.token());
    handler = (_r, res) => json(res, 200, { access_token: 'recovered' });
    assert.equal(await s.token(), 'recovered');
  });
});

describe('token endpoint errors', () => {
  test('an OAuth error answer names the server, the token URL and the error code, never the secret', async () => {
    handler = (_r, res) => json(res, 401, { error: 'invalid_client', error_description: `client secret ${SECRET} is wrong` });
    const err = await rejection(source({ tokenUrl: `${base}/oauth/token?api_key=query-secret` }).token());
    assert.equal(err.oauthError, 'invalid_client');
    assert.match(err.message, new RegExp(`^upstream server 'poolparty': cannot get an OAuth access token from ${base}/oauth/token: invalid_client \\(client secret \\[redacted\\] is wrong\\), HTTP 401$`));
    assertNoSecret(err.message);
    assert.ok(!err.message.includes('query-secret'), 'the query of the token URL is not shown');
  });

  test('an HTTP error without an OAuth error gives the status and not the body', async () => {
    handler = (_r, res) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`crashed while checking ${SECRET}`);
    const err = await rejection(source().token());
    assert.match(err.message, /: HTTP 500$/);
    assert.equal(err.oauthError, undefined);
    assertNoSecret(err.message);
  });

  test('an error code that is not RFC 6749 syntax is not quoted', async () => {
    handler = (_r, res) => json(res, 400, { error: 'bad"\ncode' });
    const err = await rejection(source().token());
    assert.match(err.message, /: HTTP 400$/);
  });

  test('an answer without access_token, or with a token_type other than Bearer, is refused', async () => {
    handler = (_r, res) => json(res, 200, { token_type: 'Bearer', expires_in: 60 });
    assert.match((await rejection(source().token())).message, /the answer has no access_token$/);
    handler = (_r, res) => json(res, 200, { access_token: 'abc-token', token_type: 'mac' });
    const err = await rejection(source().token());
    assert.match(err.message, /the token_type is 'mac', not Bearer$/);
    assert.ok(!err.message.includes('abc-token'));
    handler = (_r, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>');
    assert.match((await rejection(source().token())).message, /the answer is not a JSON object \(HTTP 200\)$/);
  });

  test('a token endpoint that does not answer in time fails with the timeout', async () => {
    handler = () => {};
    const started = Date.now();
    const err = await rejection(source({ timeoutMs: 150 }).token());
    assert.match(err.message, /no answer within 150 ms$/);
    assert.ok(Date.now() - started < 2000);
  });

  test('an unreachable token endpoint says so', async () => {
    const closed = createServer();
    const url = await listen(closed);
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const err = await rejection(source({ tokenUrl: `${url}/token` }).token());
    assert.match(err.message, new RegExp(`from ${url}/token: unreachable: `));
  });

  test('a redirect is never followed, so the secret never reaches another origin', async () => {
    const elsewhere: Received[] = [];
    const other = createServer((req, res) => {
      elsewhere.push({ url: req.url ?? '', headers: req.headers, form: new URLSearchParams() });
      json(res, 200, { access_token: 'stolen' });
    });
    const otherUrl = await listen(other);
    try {
      for (const status of [302, 307, 308]) {
        handler = (_r, res) => res.writeHead(status, { location: `${otherUrl}/collect` }).end();
        const err = await rejection(source().token());
        assert.match(err.message, new RegExp(`a redirect \\(HTTP ${status}\\) to ${otherUrl}, which is not followed`));
      }
      assert.equal(elsewhere.length, 0);
    } finally {
      other.closeAllConnections();
      await new Promise<void>((resolve) => other.close(() => resolve()));
    }
  });
});

test('redact removes the client secret and the tokens handed out', async () => {
  const s = source();
  handler = (_r, res) => json(res, 200, { access_token: 'eyJhbGciOi.payload.signature' });
  await s.token();
  assert.equal(s.redact(`got Bearer eyJhbGciOi.payload.signature and ${SECRET}`), 'got Bearer [redacted] and [redacted]');
});

describe('sendWithToken', () => {
  function fakeTokens(): UpstreamTokenSource & { fetched: number; invalidated: string[] } {
    let current: string | undefined;
    const t = {
      fetched: 0,
      invalidated: [] as string[],
      current: () => current,
      token: async () => (current ??= `tok-${++t.fetched}`),
      invalidate: (token: string) => {
        t.invalidated.push(token);
        if (current === token) current = undefined;
      },
      redact: (s: string) => s,
    };
    return t;
  }
  function answer(statusCode: number): { statusCode: number } {
    return { statusCode };
  }
  const refused = (res: { statusCode: number }) => res.statusCode === 401;

  test('sends no Authorization header without a token source', async () => {
    const seen: Record<string, string>[] = [];
    await sendWithToken(undefined, async (auth) => (seen.push(auth), answer(200)), refused);
    assert.deepEqual(seen, [{}]);
  });

  test('retries once with a fresh token after a 401, and returns the second answer whatever it is', async () => {
    const tokens = fakeTokens();
    const seen: string[] = [];
    const statuses = [401, 200];
    const res = await sendWithToken(tokens, async (auth) => (seen.push(auth.authorization!), answer(statuses.shift()!)), refused);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(seen, ['Bearer tok-1', 'Bearer tok-2']);
    assert.deepEqual(tokens.invalidated, ['tok-1']);

    const always = await sendWithToken(tokens, async (auth) => (seen.push(auth.authorization!), answer(401)), refused);
    assert.equal(always.statusCode, 401);
    assert.deepEqual(seen.slice(2), ['Bearer tok-2', 'Bearer tok-3']);
  });
});
