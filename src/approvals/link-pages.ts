/**
 * The pages behind the approve and deny links of approval webhooks (links.ts), served on the
 * gateway's main listener at `/approvals/<id>/approve` and `/approvals/<id>/deny`, outside the
 * grant bearer authentication: the link's token is the credential.
 *
 * Safe against link unfurlers and prefetchers (Slack, Teams, mail scanners and browsers fetch a
 * link as soon as it is posted or hovered): a GET never decides. It shows a small page with the
 * call's summary and a form; only the form's POST, carrying the token, decides. Deny asks for a
 * reason, which the agent reads. The page is never cached, never framed (a page of another site
 * cannot trick a click on it), sends no Referer (the token is in its URL), and loads nothing.
 *
 * The approver recorded is `link:<webhook name>` (the webhook the link was sent to; its name is
 * `approvals.webhooks[].name`, else the URL's host). The person is whoever held the link; a
 * comment on the page is the place to sign.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApprovalChange, ApprovalRecord } from '../store/store.js';
import type { ApprovalLinks, LinkAction } from './links.js';
import { shownArguments, type WebhookArgumentsMode } from './webhook.js';

/** What the pages need of the approval service (approvals/service.ts). */
export interface LinkDecider {
  get(id: string): Promise<ApprovalRecord | undefined>;
  approve(id: string, by: string, comment?: string | null): Promise<ApprovalChange>;
  deny(id: string, by: string, reason: string): Promise<ApprovalChange>;
  expireDue(): Promise<unknown>;
}

export interface LinkPagesOptions {
  readonly links: ApprovalLinks;
  readonly approvals: LinkDecider;
  readonly argumentsMode: WebhookArgumentsMode;
  readonly log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  /** Whole ms since the epoch; default Date.now. */
  readonly clock?: () => number;
}

/** The path prefix of the link pages. */
export const LINK_PREFIX = '/approvals/';
const ROUTE = /^\/approvals\/([0-9A-Za-z-]{1,64})\/(approve|deny)$/;
const MAX_FORM_BYTES = 16 * 1024;
const MAX_TEXT = 1_000;

export class ApprovalLinkPages {
  private readonly opts: LinkPagesOptions;
  private readonly clock: () => number;

  constructor(opts: LinkPagesOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? Date.now;
  }

  /** Answers a request whose path starts with `/approvals/`. Never throws. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, query: string): Promise<void> {
    try {
      await this.route(req, res, path, query);
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'approval link page failed');
      if (!res.headersSent) page(res, 500, 'Something went wrong', '<p>The gateway could not read or record this approval. Try again in a moment.</p>');
      else res.end();
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, path: string, query: string): Promise<void> {
    const m = ROUTE.exec(path);
    if (m === null) {
      page(res, 404, 'Not found', '<p>There is no page here.</p>');
      return;
    }
    const id = m[1]!;
    const action = m[2] as LinkAction;
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'POST') {
      res.setHeader('allow', 'GET, HEAD, POST');
      page(res, 405, 'Method not allowed', '<p>Open the link in a browser.</p>');
      return;
    }
    const form = req.method === 'POST' ? await readForm(req) : new URLSearchParams();
    if (form === undefined) {
      page(res, 413, 'Too large', '<p>The form was too large.</p>');
      return;
    }
    // The form carries the token too; the query's is the link's own.
    const token = form.get('t') ?? new URLSearchParams(query).get('t') ?? undefined;
    const check = this.opts.links.verify(id, action, token);
    if (!check.ok) {
      this.opts.log.info({ approval: id, action, why: check.why }, 'approval link refused');
      const text =
        check.why === 'expired'
          ? '<p>This link has expired. The approval can still be decided, while it is pending, through the admin API or <code>policylayer approvals</code>.</p>'
          : '<p>This link is not valid: it was changed, or it was not made by this gateway.</p>';
      page(res, 403, check.why === 'expired' ? 'Link expired' : 'Invalid link', text);
      return;
    }
    await this.opts.approvals.expireDue();
    const approval = await this.opts.approvals.get(id);
    if (approval === undefined) {
      page(res, 404, 'No such approval', '<p>This gateway has no record of this approval.</p>');
      return;
    }
    if (req.method !== 'POST') {
      if (approval.status !== 'pending') {
        page(res, 200, 'Already decided', `${settledText(approval)}${this.summary(approval)}`);
        return;
      }
      page(res, 200, action === 'approve' ? 'Approve this call?' : 'Deny this call?', `${this.summary(approval)}${formOf(action, token!)}`);
      return;
    }
    const by = `link:${check.channel}`;
    let change: ApprovalChange;
    if (action === 'approve') {
      const comment = (form.get('comment') ?? '').trim().slice(0, MAX_TEXT);
      change = await this.opts.approvals.approve(id, by, comment === '' ? null : comment);
    } else {
      const reason = (form.get('reason') ?? '').trim().slice(0, MAX_TEXT);
      if (reason === '') {
        page(res, 400, 'Deny this call?', `<p class="problem">A denial says why: the agent reads the reason.</p>${this.summary(approval)}${formOf('deny', token!)}`);
        return;
      }
      change = await this.opts.approvals.deny(id, by, reason);
    }
    const record = change.approval ?? approval;
    if (!change.ok) {
      page(res, 409, 'Already decided', `${settledText(record)}${this.summary(record)}`);
      return;
    }
    this.opts.log.info({ approval: id, action, by }, action === 'approve' ? 'approval approved through a webhook link' : 'approval denied through a webhook link');
    const done =
      action === 'approve'
        ? `<p class="ok">Approved. The call to <b>${esc(record.tool)}</b> is forwarded to <b>${esc(record.server)}</b>, once.</p>`
        : `<p class="ok">Denied. The agent reads your reason: “${esc(record.comment ?? '')}”.</p>`;
    page(res, 200, action === 'approve' ? 'Approved' : 'Denied', `${done}${this.summary(record)}`);
  }

  private summary(a: ApprovalRecord): string {
    const args = JSON.stringify(shownArguments(a, this.opts.argumentsMode), null, 2);
    const left = a.expiresAt - this.clock();
    const expires = a.status === 'pending' && left > 0 ? `${new Date(a.expiresAt).toISOString()} (in ${Math.ceil(left / 60_000)} min)` : new Date(a.expiresAt).toISOString();
    const rows: Array<[string, string]> = [
      ['Agent (grant)', esc(a.grantLabel ?? 'anonymous (authentication is off)')],
      ['Server', `<code>${esc(a.server)}</code>`],
      ['Tool', `<code>${esc(a.tool)}</code>`],
      [this.opts.argumentsMode === 'keys' ? 'Arguments (names and SHA-256)' : 'Arguments', `<pre>${esc(args)}</pre>`],
      ['Why a person decides', esc(a.reason)],
      ['Rule', `<code>${esc(a.rule)}</code> (policy <code>${esc(a.policyVersion)}</code>)`],
      ['Requested', new Date(a.requestedAt).toISOString()],
      ['Expires', expires],
      ['Approval', `<code>${esc(a.id)}</code>`],
    ];
    return `<dl>${rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join('')}</dl>`;
  }
}

function formOf(action: LinkAction, token: string): string {
  const field =
    action === 'approve'
      ? `<label for="comment">Comment (optional, recorded with the decision)</label><textarea id="comment" name="comment" maxlength="${MAX_TEXT}" rows="2"></textarea>`
      : `<label for="reason">Reason (required; the agent reads it)</label><textarea id="reason" name="reason" maxlength="${MAX_TEXT}" rows="3" required></textarea>`;
  // action="" posts to this page's own URL, so the form works behind a proxy that serves the
  // gateway under a path prefix.
  return `<form method="post" action=""><input type="hidden" name="t" value="${esc(token)}">${field}<button type="submit" class="${action}">${action === 'approve' ? 'Approve the call' : 'Deny the call'}</button></form><p class="note">Opening this page decided nothing: only the button does.</p>`;
}

function settledText(a: ApprovalRecord): string {
  const at = a.decidedAt === null ? '' : ` at ${new Date(a.decidedAt).toISOString()}`;
  switch (a.status) {
    case 'approved':
    case 'executed':
      return `<p class="problem">This approval was already decided: approved by <b>${esc(a.decidedBy ?? 'someone')}</b>${at}.</p>`;
    case 'denied':
      return `<p class="problem">This approval was already decided: denied by <b>${esc(a.decidedBy ?? 'someone')}</b>${at} (${esc(a.comment ?? '')}).</p>`;
    case 'expired':
      return `<p class="problem">This approval expired${at}: no one decided in time, and the call was not made.</p>`;
    case 'cancelled':
      return `<p class="problem">This call was withdrawn${at} before anyone decided (${esc(a.comment ?? 'its caller went away')}).</p>`;
    default:
      return '';
  }
}

const STYLE =
  'body{font:15px/1.45 system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}' +
  'dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{color:#555}dd{margin:0}' +
  'pre{margin:0;white-space:pre-wrap;word-break:break-word;background:#f4f4f5;padding:.4rem;border-radius:4px}' +
  'label{display:block;margin-top:1rem}textarea{width:100%;box-sizing:border-box}' +
  'button{margin-top:.8rem;padding:.5rem 1.2rem;font-size:1rem;border:0;border-radius:4px;color:#fff;cursor:pointer}' +
  '.approve{background:#1a7f37}.deny{background:#cf222e}.problem{color:#9a3412}.ok{color:#1a7f37}.note{color:#666;font-size:.85rem}';

function page(res: ServerResponse, status: number, title: string, body: string): void {
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex"><title>${esc(title)} · PolicyLayer</title><style>${STYLE}</style></head><body><h1>${esc(title)}</h1>${body}<p class="note">PolicyLayer approval</p></body></html>`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
    // No script, no outside resource; forms post only to this gateway; no framing (clickjacking).
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'x-content-type-options': 'nosniff',
    'x-robots-tag': 'noindex, nofollow',
  });
  res.end(html);
}

/** The urlencoded form of a POST, or undefined when it is larger than a form of these pages can be. */
function readForm(req: IncomingMessage): Promise<URLSearchParams | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > MAX_FORM_BYTES) {
        over = true;
        chunks.length = 0;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(over ? undefined : new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}
