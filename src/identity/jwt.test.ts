import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { base64url, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import { JwtVerifier, looksLikeJwt, parseIssuerKey } from './jwt.js';
import type { IssuerKey, JwtVerification, OidcConfig } from './jwt.js';

const T0 = Date.UTC(2026, 10, 22, 12);
const S0 = T0 / 1000;
const ISSUER = 'https://id.example.com/';
const AUDIENCE = 'https://gateway.example.com';

interface Keys {
  es: { privateKey: CryptoKey; publicKey: CryptoKey };
  rs: { privateKey: CryptoKey; publicKey: CryptoKey };
  esPem: string;
  jwks: { keys: JWK[] };
}
let keys: Keys;

before(async () => {
  const es = await generateKeyPair('ES256', { extractable: true });
  const rs = await generateKeyPair('RS256', { extractable: true });
  keys = {
    es,
    rs,
    esPem: await exportSPKI(es.publicKey),
    jwks: { keys: [{ ...(await exportJWK(es.publicKey)), kid: 'es-1', alg: 'ES256' }, { ...(await exportJWK(rs.publicKey)), kid: 'rs-1', alg: 'RS256' }] },
  };
});

function config(over: Partial<OidcConfig> = {}): OidcConfig {
  return {
    issuer: ISSUER,
    audience: AUDIENCE,
    publicKey: { file: 'issuer.pem', kind: 'spki', pem: keys.esPem },
    algorithms: ['RS256', 'ES256', 'EdDSA'],
    clockToleranceMs: 30_000,
    grantClaim: 'sub',
    groupsClaim: 'groups',
    grantsByGroup: {},
    rolesByGroup: {},
    ...over,
  };
}

const CLAIMS: JWTPayload = { iss: ISSUER, aud: AUDIENCE, sub: 'alice', iat: S0, exp: S0 + 600 };

/** A token signed with the ES256 key (kid es-1) unless told otherwise. */
function mint(claims: JWTPayload = {}, opts: { alg?: string; kid?: string; key?: CryptoKey | Uint8Array } = {}): Promise<string> {
  const alg = opts.alg ?? 'ES256';
  return new SignJWT({ ...CLAIMS, ...claims })
    .setProtectedHeader({ alg, kid: opts.kid ?? (alg === 'RS256' ? 'rs-1' : 'es-1') })
    .sign(opts.key ?? (alg === 'RS256' ? keys.rs.privateKey : keys.es.privateKey));
}

function unsigned(claims: JWTPayload): string {
  const part = (v: unknown) => base64url.encode(JSON.stringify(v));
  return `${part({ alg: 'none', typ: 'JWT' })}.${part({ ...CLAIMS, ...claims })}.`;
}

async function refusal(verifier: JwtVerifier, token: string): Promise<string> {
  const r = await verifier.verify(token);
  assert.equal(r.ok, false, 'expected a refusal');
  return (r as Extract<JwtVerification, { ok: false }>).description;
}

async function accepted(verifier: JwtVerifier, token: string) {
  const r = await verifier.verify(token);
  if (!r.ok) assert.fail(`expected the token to be accepted, got: ${r.description}`);
  return r;
}

test('recognises a compact JWS by its shape, and nothing else', async () => {
  assert.equal(looksLikeJwt(await mint()), true);
  assert.equal(looksLikeJwt(unsigned({})), true);
  for (const t of ['plg_abc', 'hunter2', 'eyJa.b', 'eyJa.b.c.d.e', 'abc.def.ghi', 'eyJ a.b.c']) assert.equal(looksLikeJwt(t), false, t);
});

test('accepts a valid token and reads its subject, groups, grant label, role and expiry', async () => {
  const v = new JwtVerifier(
    config({ grantsByGroup: { ci: 'ci-runner' }, rolesByGroup: { eng: 'viewer', 'platform-admins': 'admin', security: 'policy_manager' } }),
    { now: () => T0 },
  );
  const r = await accepted(v, await mint({ groups: ['eng', 'ci', 'security', 42] }));
  assert.deepEqual(r, {
    ok: true,
    subject: 'alice',
    groups: ['eng', 'ci', 'security'],
    grantLabel: 'alice',
    groupGrantLabel: 'ci-runner',
    role: 'policy_manager',
    expiresAt: (S0 + 600) * 1000,
  });
  // The highest role wins whatever the order of the groups.
  assert.equal((await accepted(v, await mint({ groups: ['platform-admins', 'eng'] }))).role, 'admin');
  assert.equal((await accepted(v, await mint({ groups: ['nobody'] }))).role, undefined);
});

test('reads groups from a space-separated string and the grant from the configured claims', async () => {
  const v = new JwtVerifier(config({ grantClaim: 'grant', groupsClaim: 'roles' }), { now: () => T0 });
  const r = await accepted(v, await mint({ grant: 'ci-runner', roles: ' eng  ops ' }));
  assert.equal(r.grantLabel, 'ci-runner');
  assert.deepEqual(r.groups, ['eng', 'ops']);
  assert.equal((await accepted(v, await mint({ grant: 7 }))).grantLabel, undefined);
});

test('picks the group grant in the order of grants_by_group, not of the token', async () => {
  const v = new JwtVerifier(config({ grantsByGroup: { first: 'grant-a', second: 'grant-b' } }), { now: () => T0 });
  assert.equal((await accepted(v, await mint({ groups: ['second', 'first'] }))).groupGrantLabel, 'grant-a');
});

test('refuses an expired token exactly when exp plus the clock tolerance has passed', async () => {
  let now = T0;
  const v = new JwtVerifier(config(), { now: () => now });
  const token = await mint({ exp: S0 + 60 });
  now = T0 + 60_000 + 29_000;
  await accepted(v, token);
  now = T0 + 60_000 + 30_000;
  assert.match(await refusal(v, token), /has expired/);
  const strict = new JwtVerifier(config({ clockToleranceMs: 0 }), { now: () => T0 + 60_000 });
  assert.match(await refusal(strict, token), /has expired/);
});

test('refuses a token that is not valid yet', async () => {
  const v = new JwtVerifier(config(), { now: () => T0 });
  assert.match(await refusal(v, await mint({ nbf: S0 + 31 })), /not valid yet/);
  await accepted(v, await mint({ nbf: S0 + 30 }));
});

test('refuses another issuer, another audience and an audience list naming more than the gateway', async () => {
  const v = new JwtVerifier(config(), { now: () => T0 });
  assert.match(await refusal(v, await mint({ iss: 'https://id.example.com' })), /not issued by https:\/\/id\.example\.com\//);
  assert.match(await refusal(v, await mint({ aud: 'https://upstream.example.com/mcp' })), /not meant for this gateway/);
  assert.match(await refusal(v, await mint({ aud: [AUDIENCE, 'https://upstream.example.com/mcp'] })), /other audiences/);
  await accepted(v, await mint({ aud: [AUDIENCE] }));
});

test('refuses a token without exp, sub, iss or aud', async () => {
  const v = new JwtVerifier(config(), { now: () => T0 });
  for (const claim of ['exp', 'sub', 'iss', 'aud']) {
    assert.match(await refusal(v, await mint({ [claim]: undefined })), new RegExp(`no ${claim} claim`), claim);
  }
});

test('refuses alg none, HS256 keyed with the public key, and algorithms not configured', async () => {
  const v = new JwtVerifier(config(), { now: () => T0 });
  assert.match(await refusal(v, unsigned({})), /signing algorithm is not accepted/);
  const hs = await mint({}, { alg: 'HS256', key: new TextEncoder().encode(keys.esPem) });
  assert.match(await refusal(v, hs), /signing algorithm is not accepted \(accepted: RS256, ES256, EdDSA\)/);
  const rsOnly = new JwtVerifier(config({ algorithms: ['RS256'] }), { now: () => T0 });
  assert.match(await refusal(rsOnly, await mint()), /signing algorithm is not accepted/);
});

test('refuses a tampered payload or signature', async () => {
  const v = new JwtVerifier(config(), { now: () => T0 });
  const [h, p, s] = (await mint()).split('.') as [string, string, string];
  const forged = base64url.encode(JSON.stringify({ ...CLAIMS, sub: 'admin' }));
  assert.match(await refusal(v, `${h}.${forged}.${s}`), /signature does not verify/);
  const flipped = s.slice(0, 10) + (s[10] === 'A' ? 'B' : 'A') + s.slice(11);
  assert.match(await refusal(v, `${h}.${p}.${flipped}`), /signature does not verify/);
});

test('with a static PEM key, refuses a token whose algorithm does not fit that key', async () => {
  const v = new JwtVerifier(config(), { now: () => T0 });
  assert.match(await refusal(v, await mint({}, { alg: 'RS256' })), /does not fit the issuer's key \(which verifies ES256\)/);
});

test('with a static JWK Set, picks the key by kid and refuses an unknown kid', async () => {
  const v = new JwtVerifier(config({ publicKey: { file: 'jwks.json', kind: 'jwks', jwks: keys.jwks } }), { now: () => T0 });
  await accepted(v, await mint());
  await accepted(v, await mint({}, { alg: 'RS256' }));
  assert.match(await refusal(v, await mint({}, { kid: 'gone' })), /no key of the issuer matches/);
});

describe('a verifier with a jwks_url', () => {
  let down = true;
  let fetches = 0;
  const server = createServer((_req, res) => {
    fetches++;
    if (down) {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(keys.jwks));
  });
  let url: string;
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test('says the keys cannot be fetched while the issuer fails, and works once it answers', async () => {
    const v = new JwtVerifier(config({ jwksUrl: url, publicKey: undefined }), { now: () => T0 });
    const token = await mint();
    const why = await refusal(v, token);
    assert.match(why, /the issuer's keys could not be fetched from http:\/\/127\.0\.0\.1:\d+\/jwks\.json/);
    down = false;
    await accepted(v, token);
    // The set is kept: a second token needs no second fetch.
    const before = fetches;
    await accepted(v, await mint({}, { alg: 'RS256' }));
    assert.equal(fetches, before);
  });

  test('says so when nothing listens at the JWKS address', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const v = new JwtVerifier(config({ jwksUrl: `http://127.0.0.1:${port}/jwks.json`, publicKey: undefined }), { now: () => T0 });
    assert.match(await refusal(v, await mint()), /could not be fetched from .*ECONNREFUSED/);
  });
});

describe('parseIssuerKey', () => {
  const parse = (text: string, algorithms = ['RS256', 'ES256', 'EdDSA']) => parseIssuerKey(text, '/keys/issuer', algorithms);
  const why = (text: string, algorithms?: string[]) => {
    const r = parse(text, algorithms);
    assert.equal(r.ok, false, 'expected the key to be refused');
    return (r as { why: string }).why;
  };

  test('reads a PEM public key, a JWK and a JWK Set', async () => {
    const pem = parse(keys.esPem);
    assert.ok(pem.ok);
    assert.deepEqual(pem.key, { file: '/keys/issuer', kind: 'spki', pem: keys.esPem.trim() } satisfies IssuerKey);
    const one = parse(JSON.stringify(keys.jwks.keys[0]));
    assert.ok(one.ok && one.key.kind === 'jwks' && one.key.jwks.keys.length === 1);
    const set = parse(JSON.stringify(keys.jwks));
    assert.ok(set.ok && set.key.kind === 'jwks' && set.key.jwks.keys.length === 2);
    const ed = await generateKeyPair('EdDSA', { extractable: true });
    assert.ok(parse(await exportSPKI(ed.publicKey)).ok);
  });

  test('refuses a private key, a certificate, a symmetric key and garbage, saying which', async () => {
    assert.match(why(await exportPKCS8(keys.es.privateKey)), /private key: the gateway needs only the issuer's public key/);
    assert.match(why('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'), /certificate: extract its public key/);
    assert.match(why('-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n'), /not a valid PEM public key/);
    assert.match(why(JSON.stringify({ kty: 'oct', k: 'c2VjcmV0' })), /symmetric \(oct\) key/);
    assert.match(why(JSON.stringify(await exportJWK(keys.es.privateKey))), /private key material/);
    assert.match(why(JSON.stringify({ keys: [] })), /has no keys/);
    assert.match(why('hello'), /expected a PEM public key/);
    assert.match(why(JSON.stringify({ kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' })), /not a valid public JWK/);
  });

  test('refuses a key none of the configured algorithms can verify with', async () => {
    assert.match(why(keys.esPem, ['RS256']), /an EC key on prime256v1, which none of the algorithms RS256 can verify with/);
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    assert.match(why(weak), /an RSA key of 1024 bits/);
    // A JWK's own alg narrows what it may verify.
    assert.match(why(JSON.stringify({ ...keys.jwks.keys[1], alg: 'PS256' }), ['RS256']), /none of the algorithms/);
  });
});
