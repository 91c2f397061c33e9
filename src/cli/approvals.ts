/**
 * `policylayer approvals`: the calls held for human approval, and a person's decision on them.
 *
 * Two ways to reach them. Like `grants` and `servers`, on the control store itself (`-c
 * gateway.yaml` or `--store`), as `cli:<user>`: the decision is written to the store and announced
 * through Redis when the config's counters use it, so the replica holding the call wakes at once
 * (otherwise it finds the decision at its next poll of the store, `approvals.poll_interval`). Or
 * through a running gateway's admin API (`--url`, with an admin credential in
 * POLICYLAYER_ADMIN_TOKEN), as that credential: from another host, and the gateway wakes the call
 * at once whatever its counters.
 */
import path from 'node:path';
import type { ApprovalListQuery, ApprovalView } from '../admin/control.js';
import { ControlPlane } from '../admin/control.js';
import type { ApprovalNotifier } from '../approvals/notifier.js';
import { ApprovalService } from '../approvals/service.js';
import { loadGatewayConfig } from '../config/index.js';
import { PolicyLayerError } from '../errors.js';
import { createApprovalNotifier, openControlStore } from '../main.js';
import { silentLogger } from '../telemetry/logger.js';
import { durationText } from '../util/duration.js';
import { parse } from './args.js';
import { cliActor, printer } from './control.js';
import type { Command } from './index.js';

export const approvalsCommand: Command = {
  summary: 'list the calls held for human approval, and approve or deny them',
  usage: `Usage: policylayer approvals <list|show|approve|deny> (-c <gateway.yaml> | --url <admin API>) [options]

A call whose policy rule says \`action: require_approval\` is held open while a person decides.
Approved, exactly that call is forwarded, once; denied, the agent reads who denied it and why;
undecided, it expires after the rule's approval.timeout (default 10m).

  list [--status pending|approved|denied|expired|cancelled|executed] [--limit 100] [--cursor <id>]
                                        newest first; the last line names the next page's cursor
  show <id>                             the call (server, tool, arguments), why, and its status
  approve <id> [--comment "<text>"]     the held call is forwarded, once
  deny <id> --reason "<text>"           the agent is told the reason

Where the approvals are:
  -c <gateway.yaml> | --store sqlite:<path>|postgres://…
      the control store, acting as cli:<user>. A decision wakes the held call at once when the
      config's counters use Redis; otherwise the gateway finds it within approvals.poll_interval.
  --url <admin API>   (or POLICYLAYER_ADMIN_URL)
      a running gateway's admin API (http://host:port or …/admin/api), with an admin credential
      of role policy_manager or admin in POLICYLAYER_ADMIN_TOKEN (viewer is enough to list and show).

Options: --format text|json

A decision that comes too late (someone decided first, the approval expired, or the agent
withdrew the call) changes nothing, exits 1 and shows the approval as it stands.

Example:
  policylayer approvals list -c gateway.yaml --status pending
  policylayer approvals deny 5f0c9e2a-… -c gateway.yaml --reason "refunds go through support"
`,
  async run(argv) {
    const [sub, ...rest] = argv;
    const { values, positionals } = parse(
      'approvals',
      rest,
      {
        config: { type: 'string', short: 'c' },
        store: { type: 'string' },
        url: { type: 'string' },
        status: { type: 'string' },
        limit: { type: 'string' },
        cursor: { type: 'string' },
        comment: { type: 'string' },
        reason: { type: 'string' },
        format: { type: 'string' },
      },
      true,
    );
    const format = values.format ?? 'text';
    const out = printer(format);
    const id = () => {
      const v = positionals[0];
      if (v === undefined) throw new Error(`missing the approval id: policylayer approvals ${sub} <id>\nSee 'policylayer approvals --help'.`);
      return v;
    };
    if (!['list', 'show', 'approve', 'deny'].includes(sub ?? '')) {
      throw new Error(`unknown subcommand '${sub ?? ''}': expected list, show, approve or deny\nSee 'policylayer approvals --help'.`);
    }
    if (sub === 'deny' && (values.reason === undefined || values.reason.trim() === '')) {
      throw new Error('deny needs --reason "<text>": the agent reads it');
    }
    let limit: number | undefined;
    if (values.limit !== undefined) {
      if (!/^\d{1,4}$/.test(values.limit) || Number(values.limit) < 1 || Number(values.limit) > 1000) throw new Error('--limit expects a whole number from 1 to 1000');
      limit = Number(values.limit);
    }
    return withApprovals(values, async (approvals) => {
      switch (sub) {
        case 'list': {
          const page = await approvals.list({ status: values.status, limit, cursor: values.cursor });
          const lines = page.approvals.map(listLine);
          if (page.approvals.length === 0) lines.push(values.status === undefined ? 'no approvals' : `no ${values.status} approvals`);
          if (page.next !== null) lines.push(`more: --cursor ${page.next}`);
          out(lines.join('\n') + '\n', page);
          return 0;
        }
        case 'show': {
          const shown = await approvals.get(id());
          out(describe(shown) + '\n', shown);
          return 0;
        }
        case 'approve': {
          const view = await decide(() => approvals.approve(id(), values.comment));
          out(`${describe(view)}\n\nApproved: the held call is forwarded once.\n`, view);
          return 0;
        }
        default: {
          const view = await decide(() => approvals.deny(id(), values.reason!));
          out(`${describe(view)}\n\nDenied: the agent is told who denied the call and why.\n`, view);
          return 0;
        }
      }
    });
  },
};

/** What the subcommands need, from the store or from an admin API. */
interface Approvals {
  list(query: ApprovalListQuery): Promise<{ approvals: ApprovalView[]; next: string | null }>;
  get(id: string): Promise<ApprovalView>;
  approve(id: string, comment: string | undefined): Promise<ApprovalView>;
  deny(id: string, reason: string): Promise<ApprovalView>;
}

/** An approval decided before this decision: the error, with the approval as it stands. */
class DecidedAlready extends Error {
  constructor(
    message: string,
    readonly approval: ApprovalView | undefined,
  ) {
    super(message);
  }
}

/** Runs a decision; one that lost says so with the approval as it stands, and exits 1 (thrown). */
async function decide(fn: () => Promise<ApprovalView>): Promise<ApprovalView> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof DecidedAlready && err.approval !== undefined) throw new Error(`${err.message}; nothing was changed\n\n${describe(err.approval)}`);
    throw err;
  }
}

async function withApprovals<T>(
  values: { config?: string | undefined; store?: string | undefined; url?: string | undefined },
  fn: (approvals: Approvals) => Promise<T>,
): Promise<T> {
  const url = values.url ?? process.env.POLICYLAYER_ADMIN_URL;
  if (url !== undefined && url !== '' && (values.config !== undefined || values.store !== undefined)) {
    throw new Error("give either -c <gateway.yaml> (or --store) or --url <admin API>, not both\nSee 'policylayer approvals --help'.");
  }
  if (values.config === undefined && values.store === undefined) {
    if (url === undefined || url === '') throw new Error("missing -c <gateway.yaml> (or --store), or --url <admin API>\nSee 'policylayer approvals --help'.");
    return fn(overApi(url));
  }
  const config = values.config === undefined ? undefined : loadGatewayConfig(values.config);
  const store = await openControlStore(values.store ?? config!.store);
  let notifier: ApprovalNotifier | undefined;
  try {
    // Redis reaches the replica holding the call at once; an in-process notifier would reach no one.
    if (config !== undefined && config.counters.url !== 'memory') notifier = await createApprovalNotifier(config.counters, silentLogger());
    const control = new ControlPlane({
      store,
      configServers: config?.servers ?? new Map(),
      baseDir: values.config ? path.dirname(path.resolve(values.config)) : process.cwd(),
      approvals: new ApprovalService({ store, pollIntervalMs: 0 }),
    });
    return await fn(overStore(control, notifier));
  } finally {
    await notifier?.close().catch(() => {});
    await store.close();
  }
}

function overStore(control: ControlPlane, notifier: ApprovalNotifier | undefined): Approvals {
  const announce = async (view: ApprovalView) => {
    // A hint to look, never the decision: the holder reads the record back from the store.
    await notifier?.publish(view.id).catch(() => {});
    return view;
  };
  const lost = (err: unknown): never => {
    if (err instanceof PolicyLayerError && err.details?.['approval'] !== undefined) throw new DecidedAlready(err.message, err.details['approval'] as ApprovalView);
    throw err;
  };
  return {
    list: (query) => control.listApprovals(query),
    get: (id) => control.getApproval(id),
    approve: (id, comment) => control.approve(cliActor(), id, comment ?? null).then(announce, lost),
    deny: (id, reason) => control.deny(cliActor(), id, reason).then(announce, lost),
  };
}

function overApi(url: string): Approvals {
  const token = process.env.POLICYLAYER_ADMIN_TOKEN;
  if (token === undefined || token === '') throw new Error('--url needs an admin credential in POLICYLAYER_ADMIN_TOKEN (policylayer admins create)');
  const base = url.replace(/\/+$/, '').replace(/(?:\/admin\/api)?$/, '/admin/api');
  const call = async (method: 'GET' | 'POST', p: string, body?: unknown): Promise<unknown> => {
    let res: Response;
    try {
      res = await fetch(`${base}${p}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new Error(`the admin API at ${base} cannot be reached: ${(err as Error).message}`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (res.ok) return json;
    const error = (json as { error?: { message?: string; approval?: ApprovalView } } | undefined)?.error;
    const message = error?.message ?? `HTTP ${res.status}`;
    if (res.status === 409) throw new DecidedAlready(message, error?.approval);
    throw new Error(`${message} (HTTP ${res.status})`);
  };
  const idPath = (id: string) => `/approvals/${encodeURIComponent(id)}`;
  return {
    list: async (q) => {
      const params = new URLSearchParams();
      if (q.status !== undefined) params.set('status', q.status);
      if (q.limit !== undefined) params.set('limit', String(q.limit));
      if (q.cursor !== undefined) params.set('cursor', q.cursor);
      const query = params.toString();
      return (await call('GET', `/approvals${query === '' ? '' : `?${query}`}`)) as { approvals: ApprovalView[]; next: string | null };
    },
    get: async (id) => (await call('GET', idPath(id))) as ApprovalView,
    approve: async (id, comment) => (await call('POST', `${idPath(id)}/approve`, comment === undefined ? {} : { comment })) as ApprovalView,
    deny: async (id, reason) => (await call('POST', `${idPath(id)}/deny`, { reason })) as ApprovalView,
  };
}

/** One line of `list`: id, status, the call, who asked, when. */
function listLine(a: ApprovalView): string {
  const who = a.grantLabel ?? a.grantId ?? '(no grant)';
  return [a.id, a.status.padEnd(9), `${a.server}/${a.tool}`, who, `requested ${a.requestedAt}`, state(a)].join('  ');
}

/** Where an approval stands, in words. */
function state(a: ApprovalView): string {
  switch (a.status) {
    case 'pending': {
      const left = Date.parse(a.expiresAt) - Date.now();
      return left > 0 ? `expires in ${durationText(Math.ceil(left / 1000) * 1000)} (${a.expiresAt})` : `expires ${a.expiresAt}`;
    }
    case 'approved':
      return `approved by ${a.decidedBy} at ${a.decidedAt}; not forwarded (yet)`;
    case 'executed':
      return `approved by ${a.decidedBy} at ${a.decidedAt}; forwarded at ${a.executedAt}`;
    case 'denied':
      return `denied by ${a.decidedBy} at ${a.decidedAt}`;
    case 'expired':
      return `expired at ${a.decidedAt ?? a.expiresAt}: no one decided`;
    case 'cancelled':
      return `withdrawn at ${a.decidedAt}${a.comment === null ? '' : ` (${a.comment})`}`;
  }
}

function describe(a: ApprovalView): string {
  const lines = [
    `approval: ${a.id} (${a.status})`,
    `call:     ${a.server} / ${a.tool} ${JSON.stringify(a.arguments)}`,
    `grant:    ${a.grantLabel ?? a.grantId ?? 'none (authentication off)'}`,
    `why:      ${a.reason}`,
    `rule:     ${a.rule} (policy ${a.policyVersion})`,
    `asked:    ${a.requestedAt} via ${a.via.join(', ')}`,
    `status:   ${state(a)}`,
  ];
  if (a.comment !== null && a.status !== 'cancelled') lines.push(`${a.status === 'denied' ? 'reason' : 'comment'}:${a.status === 'denied' ? '   ' : '  '}${a.comment}`);
  return lines.join('\n');
}
