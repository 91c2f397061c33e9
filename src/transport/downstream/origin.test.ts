import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { ErrorCodes, PolicyLayerError } from '../../errors.js';
import { DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS } from '../../config/index.js';
import { checkHostAndOrigin, hostName, originPolicy } from './origin.js';

function req(headers: Record<string, string>): IncomingMessage {
  return { headers } as unknown as IncomingMessage;
}

const defaults = originPolicy(DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS);

function forbidden(pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof PolicyLayerError);
    assert.equal(err.code, ErrorCodes.FORBIDDEN_ORIGIN);
    assert.match(err.message, pattern);
    return true;
  };
}

describe('hostName', () => {
  it('strips the port and lowercases', () => {
    assert.equal(hostName('LocalHost:4100'), 'localhost');
    assert.equal(hostName('127.0.0.1'), '127.0.0.1');
    assert.equal(hostName(' gateway.example.com:443 '), 'gateway.example.com');
  });

  it('keeps the brackets of an IPv6 address', () => {
    assert.equal(hostName('[::1]:4100'), '[::1]');
    assert.equal(hostName('[::1]'), '[::1]');
  });
});

describe('checkHostAndOrigin with the default policy', () => {
  it('lets a local Host through on any port when there is no Origin (a non-browser client)', () => {
    for (const host of ['localhost:4100', '127.0.0.1:1', '[::1]:4100', 'LOCALHOST']) {
      assert.doesNotThrow(() => checkHostAndOrigin(req({ host }), defaults), host);
    }
  });

  it('refuses a missing Host header', () => {
    assert.throws(() => checkHostAndOrigin(req({}), defaults), forbidden(/Host/));
  });

  it('refuses a rebound host name, including ones that only start like an allowed host', () => {
    for (const host of ['evil.example:4100', 'localhost.evil.example', '127.0.0.1.nip.io:4100', 'evil@localhost', '[::1']) {
      assert.throws(() => checkHostAndOrigin(req({ host }), defaults), forbidden(/Host/), host);
    }
  });

  it('lets a page on localhost through on any scheme and port', () => {
    for (const origin of ['http://localhost:5173', 'https://localhost', 'HTTP://LOCALHOST:3000', 'http://127.0.0.1:8080', 'http://[::1]:3000']) {
      assert.doesNotThrow(() => checkHostAndOrigin(req({ host: 'localhost:4100', origin }), defaults), origin);
    }
  });

  it('refuses a page on another site even when the Host is local', () => {
    for (const origin of ['https://evil.example', 'http://localhost.evil.example:5173', 'http://127.0.0.1.nip.io']) {
      assert.throws(() => checkHostAndOrigin(req({ host: 'localhost:4100', origin }), defaults), forbidden(/Origin/), origin);
    }
  });

  it("refuses the opaque origin 'null' that sandboxed frames and file pages send", () => {
    assert.throws(() => checkHostAndOrigin(req({ host: '127.0.0.1:4100', origin: 'null' }), defaults), forbidden(/Origin 'null'/));
  });
});

describe('checkHostAndOrigin with configured origins', () => {
  const policy = originPolicy(['gateway.example.com', 'localhost'], ['https://App.Example.com', 'tools.example.org']);

  it('allows a configured public host name and refuses the local ones it was not given', () => {
    assert.doesNotThrow(() => checkHostAndOrigin(req({ host: 'gateway.example.com' }), policy));
    assert.throws(() => checkHostAndOrigin(req({ host: '127.0.0.1:4100' }), policy), forbidden(/Host/));
  });

  it('matches a full origin exactly, scheme and port included', () => {
    assert.doesNotThrow(() => checkHostAndOrigin(req({ host: 'gateway.example.com', origin: 'https://app.example.com' }), policy));
    assert.throws(() => checkHostAndOrigin(req({ host: 'gateway.example.com', origin: 'http://app.example.com' }), policy), forbidden(/Origin/));
    assert.throws(() => checkHostAndOrigin(req({ host: 'gateway.example.com', origin: 'https://app.example.com:8443' }), policy), forbidden(/Origin/));
  });

  it('treats a bare host name as any scheme and port of that host, and of no other', () => {
    assert.doesNotThrow(() => checkHostAndOrigin(req({ host: 'gateway.example.com', origin: 'http://tools.example.org:8080' }), policy));
    assert.throws(() => checkHostAndOrigin(req({ host: 'gateway.example.com', origin: 'https://sub.tools.example.org' }), policy), forbidden(/Origin/));
  });
});
