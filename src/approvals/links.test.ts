import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ApprovalLinks, linkKeyFromSecret, linkKeyFromStored, newStoredLinkKey } from './links.js';

const T0 = Date.UTC(2026, 10, 22, 10, 0, 0);
const MINUTE = 60_000;
const APPROVAL = { id: '5f0c9e2a-1111-4222-8333-444455556666', requestedAt: T0, expiresAt: T0 + 10 * MINUTE };

function links(now = T0, opts: { ttlMs?: number; key?: Buffer } = {}) {
  const clock = { now };
  const l = new ApprovalLinks({ key: opts.key ?? linkKeyFromSecret('a link secret of at least thirty-two characters'), publicUrl: 'https://gw.example.com/', ttlMs: opts.ttlMs, clock: () => clock.now });
  return { l, clock };
}

function tokenOf(url: string): string {
  return new URL(url).searchParams.get('t')!;
}

describe('approval links', () => {
  it('points at <public_url>/approvals/<id>/approve and /deny, each with its own token, valid until the approval expires', () => {
    const { l } = links();
    const made = l.linksFor(APPROVAL, 'slack-ops');
    assert.match(made.approve, /^https:\/\/gw\.example\.com\/approvals\/5f0c9e2a-1111-4222-8333-444455556666\/approve\?t=\d+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
    assert.match(made.deny, /\/approvals\/5f0c9e2a-1111-4222-8333-444455556666\/deny\?t=/);
    assert.equal(made.expiresAt, APPROVAL.expiresAt);
    assert.deepEqual(l.verify(APPROVAL.id, 'approve', tokenOf(made.approve)), { ok: true, channel: 'slack-ops', expiresAt: APPROVAL.expiresAt });
    assert.deepEqual(l.verify(APPROVAL.id, 'deny', tokenOf(made.deny)), { ok: true, channel: 'slack-ops', expiresAt: APPROVAL.expiresAt });
  });

  it('refuses a token used for another action or another approval', () => {
    const { l } = links();
    const made = l.linksFor(APPROVAL, 'slack-ops');
    assert.deepEqual(l.verify(APPROVAL.id, 'deny', tokenOf(made.approve)), { ok: false, why: 'invalid' });
    assert.deepEqual(l.verify('5f0c9e2a-1111-4222-8333-444455556667', 'approve', tokenOf(made.approve)), { ok: false, why: 'invalid' });
  });

  it('accepts one spelling of a MAC only: a last character that differs in the bits base64url drops is refused', () => {
    const { l } = links();
    const token = tokenOf(l.linksFor(APPROVAL, 'slack-ops').approve);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    // 43 characters hold 258 bits of a 256-bit MAC: the last one's two low bits are dropped when decoded.
    const last = alphabet.indexOf(token.at(-1)!);
    for (let low = 0; low < 4; low++) {
      const other = alphabet[(last & ~3) | low]!;
      if (other === token.at(-1)) continue;
      assert.deepEqual(l.verify(APPROVAL.id, 'approve', token.slice(0, -1) + other), { ok: false, why: 'invalid' }, `ending in ${other}`);
    }
  });

  it('refuses a tampered token as invalid, even one whose only change is a later expiry or another channel', () => {
    const { l } = links();
    const [exp, channel, mac] = tokenOf(l.linksFor(APPROVAL, 'slack-ops').approve).split('.') as [string, string, string];
    const flip = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    for (const bad of [
      `${Number(exp) + 3600}.${channel}.${mac}`,
      `${exp}.${Buffer.from('other-hook').toString('base64url')}.${mac}`,
      `${exp}.${channel}.${flip(mac)}`,
      `${exp}.${channel}`,
      '',
      'garbage',
    ]) {
      assert.deepEqual(l.verify(APPROVAL.id, 'approve', bad), { ok: false, why: 'invalid' }, bad);
    }
    assert.deepEqual(l.verify(APPROVAL.id, 'approve', undefined), { ok: false, why: 'invalid' });
  });

  it('refuses a link made under another key', () => {
    const a = links().l;
    const b = links(T0, { key: linkKeyFromStored(newStoredLinkKey()) }).l;
    assert.deepEqual(b.verify(APPROVAL.id, 'approve', tokenOf(a.linksFor(APPROVAL, 'x').approve)), { ok: false, why: 'invalid' });
  });

  it('calls a genuine link expired from its expiry on, and link_ttl sets that expiry from the request', () => {
    const { l, clock } = links();
    const token = tokenOf(l.linksFor(APPROVAL, 'x').approve);
    clock.now = APPROVAL.expiresAt - 1;
    assert.equal(l.verify(APPROVAL.id, 'approve', token).ok, true);
    clock.now = APPROVAL.expiresAt;
    assert.deepEqual(l.verify(APPROVAL.id, 'approve', token), { ok: false, why: 'expired' });

    const short = links(T0, { ttlMs: 2 * MINUTE });
    const made = short.l.linksFor(APPROVAL, 'x');
    assert.equal(made.expiresAt, T0 + 2 * MINUTE);
    short.clock.now = T0 + 2 * MINUTE;
    assert.deepEqual(short.l.verify(APPROVAL.id, 'approve', tokenOf(made.approve)), { ok: false, why: 'expired' });
  });

  it('makes stored keys of 32 random bytes, and refuses keys too short to sign with', () => {
    assert.equal(linkKeyFromStored(newStoredLinkKey()).length, 32);
    assert.notEqual(newStoredLinkKey(), newStoredLinkKey());
    assert.throws(() => linkKeyFromStored('c2hvcnQ'), /too short/);
    assert.throws(() => new ApprovalLinks({ key: Buffer.alloc(16), publicUrl: 'https://x' }), /at least 32 bytes/);
  });
});
