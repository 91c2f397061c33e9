/**
 * Human approval: a call whose decision is `require_approval` is held open while a person decides,
 * and released (forwarded once), refused or expired according to that decision.
 *
 * The design, and why:
 *
 * - **The store is the truth; everything else is a hint.** A held call is a row in the control
 *   store's `approvals` table (store.ts: createApproval … findRemembered). Every change of status
 *   is one conditional UPDATE from the status it leaves, so two approvers clicking at once, two
 *   replicas, or an approver racing the expiry timer cannot both win: exactly one write changes
 *   the row, and every other caller is shown what that one wrote. Only the winner emits the audit
 *   event of the change (`onEvent`), so each change is reported once in the whole cluster.
 *
 * - **Binding.** An approval is for one call: the grant, server, tool, policy version, and the
 *   SHA-256 of the arguments' canonical JSON (util/canonical-json.ts, keys sorted at every depth,
 *   so key order does not make two calls differ). The held call keeps its approval's id and only
 *   a decision on that id releases it, so approving call A never releases call B. A held call is
 *   forwarded only after `markExecuted` moves its approval from approved to executed, which
 *   succeeds once: an approval is single use. `approval.remember` re-admits an identical call
 *   (same five parts) whose approval was approved and executed within the window, without asking
 *   again; any difference is a different call and asks.
 *
 * - **Channels.** Who is asked is worked out before the request (channels.ts) and recorded as the
 *   approval's `via`; the asking happens around this service, which only holds and decides:
 *   webhooks are posted from `onEvent('requested')` and `onSettled` (webhook.ts, wired by
 *   main.ts), their links decide through `approve`/`deny` (link-pages.ts), and elicitation is the
 *   gateway's own request to the client, answered through `approve`/`deny` too (gateway.ts).
 *
 * - **Waking the held call.** A decision made through this service (admin API, CLI, webhook
 *   links, elicitation) wakes a call this process holds at once. For a call held by another replica, the decider
 *   publishes the approval's id through an ApprovalNotifier, and the holder, hearing it, reads
 *   the record back from the store; the message carries no decision, so a forged or replayed one
 *   releases nothing. Notifiers: in-process (notifier/local.ts, one gateway) and Redis pub/sub
 *   (notifier/redis.ts). We chose Redis pub/sub over PostgreSQL LISTEN/NOTIFY because a
 *   multi-replica deployment already runs Redis for its counters, it needs no dedicated database
 *   connection per replica, and it works the same whether the store is PostgreSQL or a shared
 *   SQLite file. Pub/sub is at-most-once (a message published while a subscriber reconnects is
 *   lost), so every replica also polls the store for the approvals it holds (`pollIntervalMs`,
 *   default 5 s): a missed message delays a wake-up by at most one poll, never loses it. Polling
 *   alone would work too, but would make every approval wait up to a poll interval and cost every
 *   replica a query per held call per interval; with the notifier, the poll can be slow.
 *
 * - **Expiry.** Each held call arms a timer for its approval's expiresAt (`approval.timeout`,
 *   default 10 minutes); when it fires, the service sweeps (`expireApprovals(now)`), which also
 *   ends approvals whose holder died without cancelling them. Every poll sweeps too. A decision
 *   that arrives at or after expiresAt loses, and the store marks the approval expired instead.
 *   Times come from the injected clock (whole ms), so tests control them exactly; replicas' clocks
 *   are assumed to agree to well within a timeout.
 *
 * - **Cancellation and restarts.** The client's cancellation (the AbortSignal given to `wait`)
 *   cancels the approval in the store, so no one approves a call nobody waits for; if a person
 *   decided first, the decision stands and is what `wait` returns. `close()` cancels the approvals
 *   this service still holds. A process that dies holds nothing: its approvals stay pending, which
 *   is true (no one decided), until a sweep by any replica expires them. An approval approved but
 *   never executed (its caller vanished in between) stays approved, executedAt null: also true.
 */
import { createHash, randomUUID } from 'node:crypto';
import { DEFAULT_APPROVAL_TIMEOUT_MS } from '../policy/compile.js';
import type { ApprovalSpec } from '../policy/types.js';
import type { ApprovalCallKey, ApprovalChange, ApprovalQuery, ApprovalRecord, ControlStore } from '../store/store.js';
import { canonicalJson } from '../util/canonical-json.js';
import type { ApprovalNotifier } from './notifier.js';

/** How long a call waits for a person when its rule has no `approval.timeout` (the policy's default). */
export { DEFAULT_APPROVAL_TIMEOUT_MS };
/** How often a replica reads back the approvals it holds and sweeps expired ones. */
export const DEFAULT_POLL_INTERVAL_MS = 5_000;
/** The cancellation reason when the client gives none. */
export const CLIENT_CANCELLED = 'the client cancelled the call';
/** The cancellation reason of the approvals a closing service still holds. */
export const GATEWAY_CLOSED = 'the gateway holding the call shut down';

// setTimeout's longest delay; a longer timeout re-arms when it fires.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The call to hold, as the gateway knows it when its decision is `require_approval`. */
export interface ApprovalCall {
  /** The caller's grant id and label; null for both without authentication. */
  readonly grantId: string | null;
  readonly grantLabel: string | null;
  readonly server: string;
  readonly tool: string;
  /** The call's `arguments` (absent is taken as `{}`). */
  readonly arguments: unknown;
  readonly policyVersion: string;
  /** The deciding rule's JSON pointer. */
  readonly rule: string;
  /** The decision's reason: why a person must decide. */
  readonly reason: string;
  /**
   * The channels the person is asked through (approvals/channels.ts works them out); default the
   * rule's `approval.via`, else `dashboard`.
   */
  readonly via?: readonly string[];
}

/** What a held call learns when its wait ends. */
export type ApprovalOutcome =
  | {
      readonly status: 'approved';
      readonly approval: ApprovalRecord;
      /** Who approved (for a remembered approval: who approved the earlier call). */
      readonly by: string;
      readonly comment: string | null;
      /** True when an earlier approval of the identical call admitted it (`approval.remember`). */
      readonly remembered: boolean;
    }
  | { readonly status: 'denied'; readonly approval: ApprovalRecord; readonly by: string; readonly reason: string | null }
  | { readonly status: 'expired'; readonly approval: ApprovalRecord }
  | { readonly status: 'cancelled'; readonly approval: ApprovalRecord; readonly reason: string | null };

/** One change, reported by the one replica that made it (for the audit log). */
export interface ApprovalEvent {
  readonly type: 'requested' | 'approved' | 'denied' | 'expired' | 'cancelled' | 'executed' | 'remembered';
  /** The record after the change; for `remembered`, the earlier approval that admitted the call. */
  readonly approval: ApprovalRecord;
}

/** A held call's approval. */
export interface ApprovalHandle {
  /** As requested, or the remembered approval that admits the call. */
  readonly approval: ApprovalRecord;
  readonly remembered: boolean;
  /**
   * Resolves when a person decides, the approval expires, or it is cancelled. Aborting `signal`
   * cancels the approval (the abort's reason, when a string, is recorded as the reason); if a
   * decision was made first, that decision is the outcome. Every call returns the same outcome.
   */
  wait(signal?: AbortSignal): Promise<ApprovalOutcome>;
  /**
   * Claims the single use of an approved approval, just before the call is forwarded: true once,
   * false ever after (and for an approval that is not approved). A remembered approval admits
   * the call without a claim, so true.
   */
  markExecuted(): Promise<boolean>;
}

export interface ApprovalServiceOptions {
  readonly store: ControlStore;
  /** How decisions reach the replica holding the call; default none (only this instance's decisions wake its calls, and the poll). */
  readonly notifier?: ApprovalNotifier;
  /** This replica's id, recorded as an approval's `heldBy`; default a new UUID. */
  readonly replicaId?: string;
  /** Whole ms since the epoch; default Date.now. */
  readonly clock?: () => number;
  /** How often held approvals are read back and expired ones swept; default 5,000 ms; 0 turns the poll off. */
  readonly pollIntervalMs?: number;
  /** Told about each change this replica made. Called synchronously; must not throw. */
  readonly onEvent?: (event: ApprovalEvent) => void;
  /** Told about failures the service survives (a notifier down, a poll that failed). */
  readonly onError?: (err: unknown) => void;
  /**
   * Told, once per call this replica holds, how its wait ended: whoever decided, on whichever
   * replica or through the store directly, the holder learns it (at once, or at its next poll).
   * Called synchronously; must not throw. Webhooks post `approval.decided` from here.
   */
  readonly onSettled?: (outcome: ApprovalOutcome) => void;
}

/** The canonical JSON of a call's arguments and the key that binds an approval to the call. */
export function bindCall(call: ApprovalCall): ApprovalCallKey & { readonly arguments: string } {
  const args = canonicalJson(call.arguments ?? {});
  return {
    grantId: call.grantId,
    server: call.server,
    tool: call.tool,
    arguments: args,
    argumentsDigest: createHash('sha256').update(args).digest('hex'),
    policyVersion: call.policyVersion,
  };
}

interface Waiter {
  record: ApprovalRecord;
  timer: NodeJS.Timeout | undefined;
  resolve: (outcome: ApprovalOutcome) => void;
}

/**
 * Holds calls for human approval over a control store (see the header). One per gateway process;
 * call `start()` once before `request()`, and `close()` on shutdown. `approve`, `deny` and `cancel`
 * are what the admin API, the CLI and the other channels call; the held call uses its handle.
 */
export class ApprovalService {
  readonly replicaId: string;
  private readonly store: ControlStore;
  private readonly notifier: ApprovalNotifier | undefined;
  private readonly clock: () => number;
  private readonly pollIntervalMs: number;
  private readonly onEvent: ((event: ApprovalEvent) => void) | undefined;
  private readonly onError: ((err: unknown) => void) | undefined;
  private readonly onSettled: ((outcome: ApprovalOutcome) => void) | undefined;
  /** The calls this replica holds, by approval id, until their outcome is known. */
  private readonly waiters = new Map<string, Waiter>();
  private unsubscribe: (() => void) | undefined;
  private poller: NodeJS.Timeout | undefined;
  private polling = false;
  private closed = false;

  constructor(opts: ApprovalServiceOptions) {
    this.store = opts.store;
    this.notifier = opts.notifier;
    this.replicaId = opts.replicaId ?? randomUUID();
    this.clock = opts.clock ?? Date.now;
    this.pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.onEvent = opts.onEvent;
    this.onError = opts.onError;
    this.onSettled = opts.onSettled;
  }

  /**
   * Listens for decisions made on other replicas and starts the poll. A notifier that cannot
   * subscribe yet is reported to onError, not thrown: the poll covers until it can.
   */
  async start(): Promise<void> {
    if (this.pollIntervalMs > 0 && this.poller === undefined) {
      this.poller = setInterval(() => void this.poll(), this.pollIntervalMs);
      this.poller.unref();
    }
    if (this.notifier !== undefined && this.unsubscribe === undefined) {
      try {
        this.unsubscribe = await this.notifier.subscribe((id) => this.heard(id));
      } catch (err) {
        this.onError?.(err);
      }
    }
  }

  /**
   * Holds `call` for a person's decision under the rule's `approval` settings: stores a pending
   * approval (or finds a remembered one) and returns its handle.
   */
  async request(call: ApprovalCall, spec?: ApprovalSpec): Promise<ApprovalHandle> {
    if (this.closed) throw new Error('the approval service is closed');
    const bound = bindCall(call);
    const now = this.clock();
    if (spec?.rememberMs !== undefined) {
      const earlier = await this.store.findRemembered(bound, now - spec.rememberMs);
      if (earlier !== undefined) {
        this.emit('remembered', earlier);
        return rememberedHandle(earlier);
      }
    }
    const record = await this.store.createApproval(
      {
        ...bound,
        grantLabel: call.grantLabel,
        rule: call.rule,
        reason: call.reason,
        via: call.via ?? spec?.via ?? ['dashboard'],
        expiresAt: now + (spec?.timeoutMs ?? DEFAULT_APPROVAL_TIMEOUT_MS),
        heldBy: this.replicaId,
      },
      now,
    );
    let resolve!: (outcome: ApprovalOutcome) => void;
    const outcome = new Promise<ApprovalOutcome>((r) => (resolve = r));
    const waiter: Waiter = { record, timer: undefined, resolve };
    this.waiters.set(record.id, waiter);
    this.arm(waiter);
    this.emit('requested', record);
    return {
      approval: record,
      remembered: false,
      wait: (signal?: AbortSignal) => {
        if (signal !== undefined && this.waiters.get(record.id) === waiter) {
          const onAbort = () => void this.withdraw(waiter, typeof signal.reason === 'string' ? signal.reason : CLIENT_CANCELLED);
          if (signal.aborted) onAbort();
          else {
            signal.addEventListener('abort', onAbort, { once: true });
            void outcome.then(() => signal.removeEventListener('abort', onAbort));
          }
        }
        return outcome;
      },
      markExecuted: async () => {
        const change = await this.store.markExecuted(record.id, this.clock());
        if (change.ok) this.emit('executed', change.approval);
        return change.ok;
      },
    };
  }

  /** A person approves: wins only while the approval is pending and unexpired (see ControlStore.decideApproval). */
  async approve(id: string, by: string, comment?: string | null): Promise<ApprovalChange> {
    checkActor(by);
    const change = await this.store.decideApproval(id, { decision: 'approved', by, comment: comment ?? null, now: this.clock() });
    this.changed(change, 'approved');
    return change;
  }

  /** A person denies, saying why: the held call's result carries the approver and the reason. */
  async deny(id: string, by: string, reason: string): Promise<ApprovalChange> {
    checkActor(by);
    if (typeof reason !== 'string' || reason.trim() === '') throw new TypeError('a denial needs a reason');
    const change = await this.store.decideApproval(id, { decision: 'denied', by, comment: reason, now: this.clock() });
    this.changed(change, 'denied');
    return change;
  }

  /** Withdraws a pending approval, e.g. because the held call's connection died on another path. */
  async cancel(id: string, reason: string): Promise<ApprovalChange> {
    const change = await this.store.cancelApproval(id, reason, this.clock());
    this.changed(change, 'cancelled');
    return change;
  }

  /** Expires every pending approval whose time has come, in any replica's hands, and wakes those held here. */
  async expireDue(): Promise<ApprovalRecord[]> {
    const expired = await this.store.expireApprovals(this.clock());
    for (const record of expired) {
      this.emit('expired', record);
      this.settle(record);
      this.publish(record.id);
    }
    return expired;
  }

  get(id: string): Promise<ApprovalRecord | undefined> {
    return this.store.getApproval(id);
  }

  list(query?: ApprovalQuery): Promise<ApprovalRecord[]> {
    return this.store.listApprovals(query);
  }

  /** How many calls this replica holds. */
  get holding(): number {
    return this.waiters.size;
  }

  /**
   * Stops listening and polling, and cancels the approvals this replica still holds (their calls
   * end with this process), so none stays pending for a person to approve in vain. The store and
   * the notifier stay open: they belong to the caller.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.poller !== undefined) clearInterval(this.poller);
    this.unsubscribe?.();
    await Promise.all([...this.waiters.values()].map((w) => this.withdraw(w, GATEWAY_CLOSED)));
  }

  /** Ends `waiter`'s wait as cancelled, in the store first; a decision that got there first wins. */
  private async withdraw(waiter: Waiter, reason: string): Promise<void> {
    if (this.waiters.get(waiter.record.id) !== waiter) return;
    try {
      this.changed(await this.store.cancelApproval(waiter.record.id, reason, this.clock()), 'cancelled');
    } catch (err) {
      this.onError?.(err);
      // The caller is gone either way: end its wait. The record stays pending until a sweep expires it.
      this.finish(waiter, { status: 'cancelled', approval: waiter.record, reason });
    }
  }

  /** After a status change through this replica: report it if this call made it, wake a local waiter, tell the others. */
  private changed(change: ApprovalChange, wanted: 'approved' | 'denied' | 'cancelled'): void {
    const record = change.approval;
    if (record === undefined) return;
    if (change.ok) this.emit(wanted, record);
    else if (change.expiredNow) this.emit('expired', record);
    this.settle(record);
    if (change.ok || change.expiredNow) this.publish(record.id);
  }

  private heard(id: string): void {
    if (!this.waiters.has(id)) return;
    this.refresh(id).catch((err: unknown) => this.onError?.(err));
  }

  private async refresh(id: string): Promise<void> {
    const record = await this.store.getApproval(id);
    if (record !== undefined) this.settle(record);
  }

  private async poll(): Promise<void> {
    if (this.polling || this.closed) return;
    this.polling = true;
    try {
      await this.expireDue();
      await Promise.all([...this.waiters.keys()].map((id) => this.refresh(id)));
    } catch (err) {
      this.onError?.(err);
    } finally {
      this.polling = false;
    }
  }

  /** Wakes the local waiter of `record`, if there is one and the record is no longer pending. */
  private settle(record: ApprovalRecord): void {
    const waiter = this.waiters.get(record.id);
    if (waiter === undefined || record.status === 'pending') return;
    this.finish(waiter, outcomeOf(record));
  }

  private finish(waiter: Waiter, outcome: ApprovalOutcome): void {
    if (this.waiters.get(waiter.record.id) !== waiter) return;
    this.waiters.delete(waiter.record.id);
    clearTimeout(waiter.timer);
    waiter.resolve(outcome);
    this.onSettled?.(outcome);
  }

  /** Sets the waiter's timer for its expiry; when it fires early (clock skew, long timeouts) it is set again. */
  private arm(waiter: Waiter, delay = waiter.record.expiresAt - this.clock()): void {
    waiter.timer = setTimeout(() => void this.expireOnTime(waiter), Math.min(Math.max(delay, 0), MAX_TIMER_MS));
  }

  private async expireOnTime(waiter: Waiter): Promise<void> {
    if (this.waiters.get(waiter.record.id) !== waiter) return;
    const left = waiter.record.expiresAt - this.clock();
    if (left > 0) return this.arm(waiter, left);
    try {
      await this.expireDue();
    } catch (err) {
      this.onError?.(err);
    }
    // Still waiting: the sweep failed, or a person's decision is on its way. Look again shortly.
    if (this.waiters.get(waiter.record.id) === waiter) {
      await this.refresh(waiter.record.id).catch((err: unknown) => this.onError?.(err));
      if (this.waiters.get(waiter.record.id) === waiter) this.arm(waiter, 1_000);
    }
  }

  private publish(id: string): void {
    this.notifier?.publish(id).catch((err: unknown) => this.onError?.(err));
  }

  private emit(type: ApprovalEvent['type'], approval: ApprovalRecord): void {
    this.onEvent?.({ type, approval });
  }
}

function checkActor(by: string): void {
  if (typeof by !== 'string' || by.trim() === '') throw new TypeError('a decision names who made it');
}

/** What a settled record means to the held call. */
function outcomeOf(record: ApprovalRecord): ApprovalOutcome {
  switch (record.status) {
    case 'approved':
    case 'executed':
      return { status: 'approved', approval: record, by: record.decidedBy ?? '', comment: record.comment, remembered: false };
    case 'denied':
      return { status: 'denied', approval: record, by: record.decidedBy ?? '', reason: record.comment };
    case 'expired':
      return { status: 'expired', approval: record };
    case 'cancelled':
    case 'pending':
      return { status: 'cancelled', approval: record, reason: record.comment };
  }
}

function rememberedHandle(earlier: ApprovalRecord): ApprovalHandle {
  const outcome: ApprovalOutcome = { status: 'approved', approval: earlier, by: earlier.decidedBy ?? '', comment: earlier.comment, remembered: true };
  return {
    approval: earlier,
    remembered: true,
    wait: () => Promise.resolve(outcome),
    markExecuted: () => Promise.resolve(true),
  };
}
