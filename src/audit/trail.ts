/**
 * The gateway's side of the audit log: turns what the pipeline knows about a request into
 * events and hands them to the writer.
 *
 * A refused request (`deny`, `hidden`, `rate_limited`, `invalid_arguments`) gets one record. A
 * forwarded request (`allow`, `shadow_deny`) gets an outcome record when its answer leaves the
 * gateway: the decision, rule and request id with the upstream status, the latency, the size of
 * the result and the error. A forwarded request that is still running a flush interval after it
 * was forwarded also gets a decision record then (`upstreamStatus: forwarded`), so a call the
 * gateway dies during, or one that runs for an hour, is in the log soon after it started. Most
 * calls answer sooner and cost one record, not two: recording is most of the audit log's cost
 * on the call path, and the crash-loss bound of `async` mode (a flush interval) is unchanged.
 *
 * With `durability: strict` the decision record of every forwarded request is written at once
 * and is durable (written by every sink or fsync'ed to its spill file) before the request goes
 * upstream; refusals and outcomes are recorded like in `async` mode, since nothing waits on them.
 */
import { performance } from 'node:perf_hooks';
import type { AuditDecision, AuditEventInput, ArgumentsMode } from './event.js';
import { auditArguments } from './arguments.js';

/** What the trail records through: the audit thread (thread.ts), or an AuditWriter of its own. */
export interface EventRecorder {
  record(event: AuditEventInput): unknown;
  recordDurable(event: AuditEventInput): Promise<void>;
  readonly full: boolean;
  whenRoom(): Promise<void>;
}

export interface AuditTrailOptions {
  readonly writer: EventRecorder;
  /**
   * What is kept of arguments. Undefined: the writer decides, and is handed them as the client sent
   * them (the audit thread derives them, off the event loop).
   */
  readonly arguments: ArgumentsMode | undefined;
  readonly durability: 'async' | 'strict';
  /**
   * How long a forwarded call's decision record may wait for its outcome to be written with it
   * (`async` only): the writer's flush interval, so a crash loses no more than it would anyway.
   */
  readonly holdMs?: number;
  /** `block` (the writer's default): a forwarded call waits while a sink's queue is full. */
  readonly onFull?: 'block' | 'drop';
  /** ms since the epoch; injectable for tests. */
  readonly now?: () => number;
}

/** Who made a request, where, and what it asked for: what every record of the request repeats. */
export interface AuditRequest {
  readonly requestId: string | number | null;
  readonly grantId: string | null;
  readonly grantLabel: string | null;
  /** Null for stateless requests, which belong to no session of their own. */
  readonly session: string | null;
  readonly server: string;
  readonly method: string;
  readonly tool: string | null;
  /** The request's arguments (`tools/call`, `prompts/get`), undefined when it has none. */
  readonly args: unknown;
  readonly policyVersion: string | null;
}

/** How a forwarded request ended, as `upstreamStatus` says it. */
export type UpstreamStatus = 'ok' | 'tool_error' | 'error' | 'cancelled' | 'detached';

export class AuditTrail {
  readonly strict: boolean;
  /** Forwarded calls whose decision record is held back, in the order they were forwarded. */
  private readonly held = new Set<CallAudit>();
  private holdTimer: NodeJS.Timeout | undefined;
  private readonly holdMs: number;
  private readonly block: boolean;
  private readonly writer: EventRecorder;
  private readonly mode: ArgumentsMode | undefined;
  private readonly now: () => number;

  constructor(o: AuditTrailOptions) {
    this.writer = o.writer;
    this.mode = o.arguments;
    this.strict = o.durability === 'strict';
    this.block = (o.onFull ?? 'block') === 'block';
    this.holdMs = Math.max(1, o.holdMs ?? 20);
    this.now = o.now ?? Date.now;
  }

  /** Starts the audit of one request; its records are written through the returned object. */
  begin(req: AuditRequest): CallAudit {
    return new CallAudit(this, req, this.now(), performance.now());
  }

  /** @internal */
  write(event: AuditEventInput, durable: boolean): Promise<void> | undefined {
    if (durable) return this.writer.recordDurable(event);
    this.writer.record(event);
    return undefined;
  }

  /** @internal A forwarded call's decision record waits for its outcome, up to `holdMs`. */
  hold(call: CallAudit): void {
    this.held.add(call);
    if (this.holdTimer === undefined) {
      this.holdTimer = setTimeout(() => this.releaseHeld(false), this.holdMs);
      this.holdTimer.unref();
    }
  }

  /** @internal */
  unhold(call: CallAudit): boolean {
    return this.held.delete(call);
  }

  /**
   * Writes the decision records of held calls that have waited `holdMs` (all of them with `all`,
   * before the log closes with calls still running).
   */
  releaseHeld(all: boolean): void {
    if (this.holdTimer !== undefined) clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    const cutoff = performance.now() - this.holdMs;
    for (const call of this.held) {
      // Held in the order forwarded: the first one young enough to keep waiting ends the sweep.
      if (!all && call.forwardedAt > cutoff) break;
      this.held.delete(call);
      call.recordForwarded();
    }
    if (this.held.size > 0 && !all) {
      this.holdTimer = setTimeout(() => this.releaseHeld(false), this.holdMs);
      this.holdTimer.unref();
    }
  }

  /** @internal */
  argumentsOf(args: unknown): unknown {
    return this.mode === undefined ? args : auditArguments(args, this.mode);
  }

  /**
   * With `on_full: block`, a promise that resolves once no sink's queue is full any more, while
   * one is: forwarded calls then wait for it, so a sink that cannot keep up slows the traffic it
   * records instead of growing memory without bound. Undefined when there is room.
   */
  room(): Promise<void> | undefined {
    return this.block && this.writer.full ? this.writer.whenRoom() : undefined;
  }
}

/**
 * One request's audit: a decision, then, if the request went upstream, its outcome. The decision
 * may change before the request is forwarded (a shadowed refusal turns `allow` into
 * `shadow_deny`); the first shadowed refusal is the one recorded.
 */
export class CallAudit {
  private decision: AuditDecision = 'allow';
  private rule: string | null = null;
  private reason: string | null = null;
  private readonly at: number;
  private readonly t0: number;
  private args: unknown;
  private argsDone = false;
  private done = false;
  /** performance.now() when the call was forwarded; for the hold. */
  forwardedAt = 0;

  constructor(
    private readonly trail: AuditTrail,
    private readonly req: AuditRequest,
    at: number,
    t0: number,
  ) {
    this.at = at;
    this.t0 = t0;
  }

  /** The rule that allowed the call (a policy pointer), kept unless a shadowed refusal replaces it. */
  allowedBy(rule: string | null, reason: string | null): void {
    if (this.decision !== 'allow') return;
    this.rule = rule;
    this.reason = reason;
  }

  /** A refusal that shadow mode let through: recorded as `shadow_deny` with its rule and reason. */
  shadowed(rule: string, reason: string): void {
    if (this.decision === 'shadow_deny') return;
    this.decision = 'shadow_deny';
    this.rule = rule;
    this.reason = reason;
  }

  /**
   * A decision on the way that does not end the request (human approval): the call is held for a
   * person (`approval_requested`), or a person approved it (`approved`). Written at once unless
   * `record` is false, with no upstream status; the request's later records (a refusal, the
   * forwarded call's outcome) carry this decision, rule and reason until another replaces them.
   */
  decided(decision: AuditDecision, rule: string | null, reason: string | null, record = true): void {
    if (this.done) return;
    this.decision = decision;
    this.rule = rule;
    this.reason = reason;
    if (record) this.trail.write(this.event(decision, rule, reason, undefined, null, null, null), false);
  }

  /** The request was refused: its one record. */
  refused(decision: AuditDecision, rule: string | null, reason: string | null, policyVersion?: string): void {
    if (this.done) return;
    this.done = true;
    this.trail.write(this.event(decision, rule, reason, policyVersion, null, null, null), false);
  }

  /**
   * The request is about to go upstream: its decision record. In strict mode, the returned
   * promise resolves once the record is durable, and rejects if it cannot be made so (the
   * request must then not be forwarded). Also a promise while the log is full and blocking.
   */
  forwarding(): Promise<void> | undefined {
    if (this.trail.strict) return this.trail.write(this.forwardedEvent(), true);
    this.forwardedAt = performance.now();
    this.trail.hold(this);
    return this.trail.room();
  }

  /** @internal The decision record of a forwarded call that is still running. */
  recordForwarded(): void {
    if (!this.done) this.trail.write(this.forwardedEvent(), false);
  }

  /** The answer left the gateway (or the request ended without one): the outcome record. */
  finished(status: UpstreamStatus, resultBytes: number | null, error: string | null): void {
    if (this.done) return;
    this.trail.unhold(this);
    this.done = true;
    this.trail.write(this.event(this.decision, this.rule, this.reason, undefined, status, resultBytes, error), false);
  }

  private forwardedEvent(): AuditEventInput {
    return this.event(this.decision, this.rule, this.reason, undefined, 'forwarded', null, null);
  }

  private event(
    decision: AuditDecision,
    rule: string | null,
    reason: string | null,
    policyVersion: string | undefined,
    upstreamStatus: string | null,
    resultBytes: number | null,
    error: string | null,
  ): AuditEventInput {
    const r = this.req;
    if (!this.argsDone) {
      // Both records of a forwarded call carry the same arguments: derived (hashed, masked) once.
      this.args = this.trail.argumentsOf(r.args);
      this.argsDone = true;
    }
    return {
      at: this.at,
      requestId: r.requestId === null ? null : String(r.requestId),
      grantId: r.grantId,
      grantLabel: r.grantLabel,
      session: r.session,
      server: r.server,
      method: r.method,
      tool: r.tool,
      decision,
      rule,
      reason,
      policyVersion: policyVersion ?? r.policyVersion,
      arguments: this.args,
      upstreamStatus,
      latencyMs: Math.round((performance.now() - this.t0) * 1000) / 1000,
      resultBytes,
      error,
    };
  }
}
