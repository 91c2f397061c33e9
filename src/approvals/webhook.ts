/**
 * Approval webhooks: when a call is held for a person, a JSON body is POSTed to every configured
 * URL, signed with the webhook's secret, carrying the call, signed approve and deny links back to
 * the gateway (links.ts), and a Slack-compatible `text` (mrkdwn), so a Slack incoming webhook
 * shows it as it is. When the wait ends, `approval.decided` follows.
 *
 * Signature: `X-PolicyLayer-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
 * with `X-PolicyLayer-Timestamp: <unix seconds>`. The timestamp is inside the MAC, so a receiver
 * that refuses timestamps older than its replay window (we suggest 5 minutes) refuses a captured
 * request replayed later; `X-PolicyLayer-Delivery` (one UUID per event and URL, the same on
 * every retry) lets it drop a retry it already handled. `verifyWebhookSignature` is the recipe.
 *
 * Delivery is off the call path: `requested` and `decided` return at once; each URL is tried with
 * a short timeout (5 s) and retried after 1 s and 4 s on a network failure, a timeout, 429 or a 5xx
 * (another 4xx will not get better by asking again). A failure is logged with the webhook's name
 * and host, never its URL (a Slack webhook URL is itself a credential) or its secret, and the
 * held call goes on waiting for the other channels: a webhook never decides and never blocks.
 *
 * Arguments: as the audit log keeps them (`audit.arguments`), but never `full`: `keys` shows the
 * argument names and the SHA-256, otherwise secrets are masked (`redacted`); `approvals.arguments`
 * chooses otherwise. A person approving from a chat message sees what they approve, and the chat
 * never stores a credential.
 */
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { auditArguments } from '../audit/arguments.js';
import type { ApprovalRecord } from '../store/store.js';
import type { ApprovalLinks } from './links.js';

/** How much of the call's arguments a webhook (and a link's page) shows. */
export type WebhookArgumentsMode = 'keys' | 'redacted';

/** One configured webhook (`approvals.webhooks[i]`). */
export interface WebhookTarget {
  /** How logs and the approver (`link:<name>`) name it: `name`, else the URL's host. */
  readonly name: string;
  readonly url: string;
  readonly secret: string;
  /** Extra request headers (an API key of the receiver, say). */
  readonly headers?: Readonly<Record<string, string>> | undefined;
}

export type WebhookEvent = 'approval.requested' | 'approval.decided';

/** The header names, as sent (HTTP header names are case-insensitive). */
export const SIGNATURE_HEADER = 'X-PolicyLayer-Signature';
export const TIMESTAMP_HEADER = 'X-PolicyLayer-Timestamp';
export const EVENT_HEADER = 'X-PolicyLayer-Event';
export const DELIVERY_HEADER = 'X-PolicyLayer-Delivery';
/** The replay window we suggest to receivers, and the one verifyWebhookSignature applies by default. */
export const DEFAULT_REPLAY_WINDOW_SECONDS = 300;
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 5_000;
export const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [1_000, 4_000];

/** `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the value of X-PolicyLayer-Signature. */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/**
 * A receiver's check, and the recipe docs/approvals.md gives: the signature must be the HMAC of
 * `<timestamp>.<raw body>` (the bytes as received, before any JSON parsing) under the shared
 * secret, compared in constant time, and the timestamp within `windowSeconds` of `nowMs`.
 */
export function verifyWebhookSignature(opts: {
  secret: string;
  body: string;
  timestamp: string | undefined;
  signature: string | undefined;
  nowMs?: number;
  windowSeconds?: number;
}): boolean {
  const { secret, body, timestamp, signature } = opts;
  if (timestamp === undefined || signature === undefined || !/^\d{1,12}$/.test(timestamp)) return false;
  const skew = Math.abs((opts.nowMs ?? Date.now()) / 1000 - Number(timestamp));
  if (skew > (opts.windowSeconds ?? DEFAULT_REPLAY_WINDOW_SECONDS)) return false;
  const wanted = Buffer.from(signWebhook(secret, Number(timestamp), body));
  const given = Buffer.from(signature);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

/** The call's arguments as `mode` shows them (the record keeps them as canonical JSON). */
export function shownArguments(approval: Pick<ApprovalRecord, 'arguments'>, mode: WebhookArgumentsMode): unknown {
  let args: unknown;
  try {
    args = JSON.parse(approval.arguments);
  } catch {
    args = {};
  }
  return auditArguments(args, mode);
}

/** The approval as a webhook body carries it: times in ISO 8601, the arguments as `mode` shows them. */
export function approvalPayload(a: ApprovalRecord, mode: WebhookArgumentsMode): Record<string, unknown> {
  return {
    id: a.id,
    status: a.status,
    grant: a.grantLabel,
    server: a.server,
    tool: a.tool,
    arguments: shownArguments(a, mode),
    argumentsMode: mode,
    argumentsDigest: a.argumentsDigest,
    reason: a.reason,
    rule: a.rule,
    policyVersion: a.policyVersion,
    via: a.via,
    requestedAt: iso(a.requestedAt),
    expiresAt: iso(a.expiresAt),
    decidedAt: a.decidedAt === null ? null : iso(a.decidedAt),
    decidedBy: a.decidedBy,
    comment: a.comment,
  };
}

/** The body of an `approval.requested` POST. */
export function requestedBody(a: ApprovalRecord, mode: WebhookArgumentsMode, links: { approve: string; deny: string; expiresAt: number }): Record<string, unknown> {
  const args = JSON.stringify(shownArguments(a, mode));
  const lines = [
    `*PolicyLayer: approval needed* — ${a.grantLabel === null ? 'an agent' : `*${slack(a.grantLabel)}*`} wants to call \`${slack(a.tool)}\` on \`${slack(a.server)}\``,
    `>Reason: ${slack(a.reason)}`,
    `Arguments${mode === 'keys' ? ' (names and SHA-256 only)' : ''}: \`${slack(truncate(args, 1_500)).replace(/`/g, "'")}\``,
    `Rule \`${slack(a.rule)}\`, policy \`${slack(a.policyVersion)}\`; expires ${iso(a.expiresAt)} (approval ${a.id})`,
    `<${links.approve}|Approve> · <${links.deny}|Deny> (the links open a confirmation page; they work until ${iso(links.expiresAt)})`,
  ];
  return {
    event: 'approval.requested',
    approval: approvalPayload(a, mode),
    links: { approve: links.approve, deny: links.deny, expiresAt: iso(links.expiresAt) },
    text: lines.join('\n'),
  };
}

/** The body of an `approval.decided` POST. */
export function decidedBody(a: ApprovalRecord, mode: WebhookArgumentsMode): Record<string, unknown> {
  const call = `\`${slack(a.tool)}\` on \`${slack(a.server)}\`${a.grantLabel === null ? '' : ` by *${slack(a.grantLabel)}*`}`;
  let what: string;
  switch (a.status) {
    case 'approved':
    case 'executed':
      what = `approved by ${slack(a.decidedBy ?? 'someone')}${a.comment ? `: ${slack(a.comment)}` : ''}`;
      break;
    case 'denied':
      what = `denied by ${slack(a.decidedBy ?? 'someone')}: ${slack(a.comment ?? 'no reason given')}`;
      break;
    case 'expired':
      what = 'expired: no one decided in time';
      break;
    default:
      what = `withdrawn before anyone decided (${slack(a.comment ?? 'the caller went away')})`;
  }
  return {
    event: 'approval.decided',
    approval: approvalPayload(a, mode),
    text: `*PolicyLayer:* the call to ${call} was ${what} (approval ${a.id})`,
  };
}

/** What the webhooks need to report a failure (a pino logger is one). */
export interface WebhookLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export type WebhookFetch = (url: string, init: { method: 'POST'; headers: Record<string, string>; body: string; signal: AbortSignal }) => Promise<{ status: number; text(): Promise<string> }>;

export interface ApprovalWebhooksOptions {
  readonly targets: readonly WebhookTarget[];
  readonly links: ApprovalLinks;
  readonly argumentsMode: WebhookArgumentsMode;
  readonly log: WebhookLog;
  /** Whole ms since the epoch; default Date.now. */
  readonly clock?: () => number;
  /** Default the platform's fetch (undici). */
  readonly fetch?: WebhookFetch;
  readonly timeoutMs?: number;
  /** The waits before each retry; default 1 s, then 4 s. */
  readonly retryDelaysMs?: readonly number[];
}

/** Posts approval events to the configured webhooks (see the header). */
export class ApprovalWebhooks {
  private readonly opts: ApprovalWebhooksOptions;
  private readonly clock: () => number;
  private readonly fetch: WebhookFetch;
  /** Deliveries under way (including their waits between retries). */
  private readonly pending = new Set<Promise<void>>();
  private readonly stop = new AbortController();

  constructor(opts: ApprovalWebhooksOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? Date.now;
    this.fetch = opts.fetch ?? ((url, init) => fetch(url, init));
  }

  /** Posts `approval.requested` for a new approval to every webhook; returns at once. */
  requested(approval: ApprovalRecord): void {
    for (const target of this.opts.targets) {
      const links = this.opts.links.linksFor(approval, target.name);
      this.deliver(target, 'approval.requested', approval.id, JSON.stringify(requestedBody(approval, this.opts.argumentsMode, links)));
    }
  }

  /** Posts `approval.decided` for an approval that left `pending`; returns at once. */
  decided(approval: ApprovalRecord): void {
    const body = JSON.stringify(decidedBody(approval, this.opts.argumentsMode));
    for (const target of this.opts.targets) this.deliver(target, 'approval.decided', approval.id, body);
  }

  /** Resolves once every delivery under way has succeeded or given up (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  /** Waits up to `graceMs` for deliveries under way, then abandons the rest (no more retries). */
  async close(graceMs = 2_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    this.stop.abort();
  }

  private deliver(target: WebhookTarget, event: WebhookEvent, approvalId: string, body: string): void {
    if (this.stop.signal.aborted) return;
    // Started on a later turn of the event loop: nothing of a delivery runs on the caller's.
    const p = new Promise<void>((r) => setImmediate(r)).then(() => this.attempts(target, event, approvalId, body)).catch(() => {});
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private async attempts(target: WebhookTarget, event: WebhookEvent, approvalId: string, body: string): Promise<void> {
    const delivery = randomUUID();
    const delays = this.opts.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
    const where = { webhook: target.name, host: hostOf(target.url), event, approval: approvalId, delivery };
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.attempt(target, event, body, delivery);
      if (outcome.ok) {
        if (attempt > 1) this.opts.log.info({ ...where, attempt }, 'approval webhook delivered after retrying');
        return;
      }
      const last = attempt > delays.length || !outcome.retry || this.stop.signal.aborted;
      this.opts.log.warn(
        { ...where, attempt, problem: outcome.problem },
        last ? 'approval webhook failed: the approval waits for its other channels' : 'approval webhook failed; retrying',
      );
      if (last) return;
      await sleep(delays[attempt - 1]!, this.stop.signal);
      if (this.stop.signal.aborted) return;
    }
  }

  private async attempt(target: WebhookTarget, event: WebhookEvent, body: string, delivery: string): Promise<{ ok: true } | { ok: false; retry: boolean; problem: string }> {
    // Signed at each attempt: a retry after the receiver's replay window still verifies.
    const timestamp = Math.floor(this.clock() / 1000);
    const headers: Record<string, string> = {
      ...target.headers,
      'content-type': 'application/json',
      'user-agent': 'PolicyLayer-Webhook/1',
      [SIGNATURE_HEADER]: signWebhook(target.secret, timestamp, body),
      [TIMESTAMP_HEADER]: String(timestamp),
      [EVENT_HEADER]: event,
      [DELIVERY_HEADER]: delivery,
    };
    const signal = AbortSignal.any([AbortSignal.timeout(this.opts.timeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS), this.stop.signal]);
    try {
      const res = await this.fetch(target.url, { method: 'POST', headers, body, signal });
      // The body is read (and dropped) so the connection can be reused.
      await res.text().catch(() => '');
      if (res.status >= 200 && res.status < 300) return { ok: true };
      return { ok: false, retry: res.status === 429 || res.status >= 500, problem: `the receiver answered HTTP ${res.status}` };
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const problem =
        e.name === 'TimeoutError' ? `no answer within ${this.opts.timeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
      // Never the URL: undici's messages do not carry it, but a cause might.
      return { ok: false, retry: true, problem: scrubUrl(problem, target.url) };
    }
  }
}

/** A webhook's default name: its URL's host. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'webhook';
  }
}

function scrubUrl(text: string, url: string): string {
  return text.split(url).join(hostOf(url));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** Slack mrkdwn escapes exactly these three (https://api.slack.com/reference/surfaces/formatting#escaping). */
function slack(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
