/**
 * Signed, expiring approve and deny links, as approval webhooks carry them:
 * `<public_url>/approvals/<id>/approve?t=<token>` (and `/deny`).
 *
 * The token is the credential: whoever holds the link may decide that one approval, that way,
 * until the link expires, and nothing else. It is `<expiry>.<channel>.<mac>`:
 *
 * - `expiry`: whole seconds since the epoch; the link works until then (`approvals.link_ttl`
 *   after the request, by default the approval's own expiry);
 * - `channel`: the webhook the link was sent to (base64url of its name), so the decision records
 *   where it came from (`link:<name>`);
 * - `mac`: base64url HMAC-SHA256, under the gateway's link key, of a version tag, the approval
 *   id, the action, the channel and the expiry. Changing any part (another approval, approve for
 *   deny, a later expiry) breaks the MAC, and a MAC is compared in constant time.
 *
 * The key: derived from `approvals.link_secret` when configured (rotate it, and every
 * outstanding link stops working), else 32 random bytes made by the first gateway and kept in
 * the control store (`gateway_keys`), which every replica reads, so a link made by one replica
 * works on any. Never the webhook secrets: a receiver, who knows its webhook secret, must not be
 * able to make links of its own (for other approvals, or lasting longer).
 *
 * A link works once in effect: the store's conditional decision lets exactly one decision win,
 * and every later use of either link shows who decided.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApprovalRecord } from '../store/store.js';

export type LinkAction = 'approve' | 'deny';

/** The name of the stored link key in the control store (`gateway_keys`). */
export const LINK_KEY_NAME = 'approval-links';

const TAG = 'policylayer approval link v1';
const TOKEN = /^(\d{1,13})\.([A-Za-z0-9_-]{1,400})\.([A-Za-z0-9_-]{43})$/;

/** The link key of `approvals.link_secret`: a fixed-length key, so any secret length works the same. */
export function linkKeyFromSecret(secret: string): Buffer {
  return createHmac('sha256', secret).update('policylayer approval link key').digest();
}

/** A new random link key, as stored in the control store (base64url). */
export function newStoredLinkKey(): string {
  return randomBytes(32).toString('base64url');
}

/** The link key a stored value stands for. */
export function linkKeyFromStored(stored: string): Buffer {
  const key = Buffer.from(stored, 'base64url');
  if (key.length < 32) throw new Error('the stored approval link key is too short: it was not made by PolicyLayer');
  return key;
}

/** What a token says, once its MAC checked. */
export type LinkCheck =
  | { readonly ok: true; readonly channel: string; readonly expiresAt: number }
  | { readonly ok: false; readonly why: 'invalid' | 'expired' };

export interface ApprovalLinksOptions {
  readonly key: Uint8Array;
  /** The gateway's externally reachable base URL (`approvals.public_url`), without a trailing slash. */
  readonly publicUrl: string;
  /** How long a link works after the request; default until the approval expires. */
  readonly ttlMs?: number | undefined;
  /** Whole ms since the epoch; default Date.now. */
  readonly clock?: () => number;
}

export class ApprovalLinks {
  private readonly key: Uint8Array;
  private readonly base: string;
  private readonly ttlMs: number | undefined;
  private readonly clock: () => number;

  constructor(opts: ApprovalLinksOptions) {
    if (opts.key.length < 32) throw new RangeError('an approval link key has at least 32 bytes');
    this.key = opts.key;
    this.base = opts.publicUrl.replace(/\/+$/, '');
    this.ttlMs = opts.ttlMs;
    this.clock = opts.clock ?? Date.now;
  }

  /** When the links of `approval` stop working, in ms (a whole second). */
  expiryOf(approval: Pick<ApprovalRecord, 'requestedAt' | 'expiresAt'>): number {
    const at = this.ttlMs === undefined ? approval.expiresAt : approval.requestedAt + this.ttlMs;
    return Math.ceil(at / 1000) * 1000;
  }

  /** The approve and deny links of `approval`, as sent to the webhook `channel`. */
  linksFor(approval: Pick<ApprovalRecord, 'id' | 'requestedAt' | 'expiresAt'>, channel: string): { approve: string; deny: string; expiresAt: number } {
    const expiresAt = this.expiryOf(approval);
    const link = (action: LinkAction) =>
      `${this.base}/approvals/${encodeURIComponent(approval.id)}/${action}?t=${this.token(approval.id, action, channel, expiresAt)}`;
    return { approve: link('approve'), deny: link('deny'), expiresAt };
  }

  /** The token of one link. */
  token(id: string, action: LinkAction, channel: string, expiresAt: number): string {
    const exp = Math.ceil(expiresAt / 1000);
    const named = Buffer.from(channel, 'utf8').toString('base64url');
    return `${exp}.${named}.${this.mac(id, action, named, exp).toString('base64url')}`;
  }

  /** Checks `token` for deciding approval `id` by `action`: its MAC first (a tampered expiry is invalid, not expired), then its expiry. */
  verify(id: string, action: LinkAction, token: string | undefined): LinkCheck {
    const m = token === undefined ? null : TOKEN.exec(token);
    if (m === null) return { ok: false, why: 'invalid' };
    const exp = Number(m[1]);
    // Compared as text: base64url's last character carries bits that decoding drops, so comparing
    // decoded bytes would take several spellings of one MAC, and a changed token would still pass.
    const given = Buffer.from(m[3]!, 'latin1');
    const wanted = Buffer.from(this.mac(id, action, m[2]!, exp).toString('base64url'), 'latin1');
    if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return { ok: false, why: 'invalid' };
    const expiresAt = exp * 1000;
    if (this.clock() >= expiresAt) return { ok: false, why: 'expired' };
    return { ok: true, channel: Buffer.from(m[2]!, 'base64url').toString('utf8'), expiresAt };
  }

  /** Over the channel as the token carries it (base64url), so no part can contain the separator. */
  private mac(id: string, action: LinkAction, namedChannel: string, exp: number): Buffer {
    return createHmac('sha256', this.key).update(`${TAG}\n${id.replace(/\n/g, '')}\n${action}\n${namedChannel}\n${exp}`).digest();
  }
}
