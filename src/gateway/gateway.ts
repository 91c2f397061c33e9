/**
 * The pipeline every client message passes through, independent of the transport it came on.
 * Transports adapt bytes to calls of `initialize`, `call`, `send` and `listen`; they never decide.
 */
import { randomUUID } from 'node:crypto';
import type { ApprovalCall, ApprovalHandle, ApprovalOutcome } from '../approvals/service.js';
import { GATEWAY_CLOSED } from '../approvals/service.js';
import { approvalChannels, canElicitForm } from '../approvals/channels.js';
import { redact } from '../audit/arguments.js';
import type { ApprovalRecord } from '../store/store.js';
import type { Logger } from '../telemetry/logger.js';
import type { CallOutcome, Metrics } from '../telemetry/metrics.js';
import { ErrorCodes, JsonRpcErrors, PolicyLayerError } from '../errors.js';
import type { LimitOutcome, Limiter, Ticket } from '../limits/limiter.js';
import { evaluate, visibleTools, type ApprovalSpec, type CompiledPolicy, type Decision } from '../policy/index.js';
import {
  errorResponse,
  outcomeOf,
  resultResponse,
  type JsonRpcId,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from '../util/jsonrpc.js';
import { answeredBy, type CallHandlers, type CallOptions, type ListenHandle, type ServerMessage, type Upstream, type UpstreamSession } from '../transport/upstream/types.js';
import { keepsEveryKey } from '../util/raw-id.js';
import { durationText } from '../util/duration.js';
import type { AuditTrail, CallAudit } from '../audit/trail.js';
import { negotiateSessionVersion } from './protocol.js';
import { ArgumentValidator } from './validate.js';

export interface ServerRuntime {
  readonly name: string;
  readonly upstream: Upstream;
  /** Swapped whole on reload; each call reads it once, so it sees one policy or the other. */
  policy: CompiledPolicy;
  /** Tool names the upstream has listed, so a reload can tell whether the visible set changed. */
  knownTools?: Set<string>;
  /** Validators of the tools' own input schemas, learned from tools/list answers (created on first use). */
  validator?: ArgumentValidator;
  /**
   * The stored policy version in force, when the policy comes from the control store (set by the
   * admin API or CLI) rather than from gateway.yaml; then edits of the file no longer apply.
   */
  storedPolicyVersion?: number;
}

/** An allowed tools/call on its way upstream: what the later checks (schema, limits) need. */
interface AllowedCall {
  readonly session: Session;
  readonly req: JsonRpcRequest;
  readonly raw: string | undefined;
  readonly reply: CallHandlers;
  readonly options: CallOptions | undefined;
  readonly tool: string;
  readonly args: unknown;
  readonly decision: Decision;
  readonly audit: CallAudit | undefined;
  /**
   * Set once a person approved the held call (or an earlier approval admitted it): claims the
   * approval's single use just before the call goes upstream (ApprovalHandle.markExecuted).
   */
  readonly claim?: () => Promise<boolean>;
}

/**
 * What the gateway needs of the approval service (approvals/service.ts): holding one call, and
 * deciding it when the calling user answers the gateway's own question in their client
 * (`approval.via: elicitation`).
 */
export interface ApprovalRequester {
  request(call: ApprovalCall, spec?: ApprovalSpec): Promise<ApprovalHandle>;
  approve(id: string, by: string, comment?: string | null): Promise<{ readonly ok: boolean }>;
  deny(id: string, by: string, reason: string): Promise<{ readonly ok: boolean }>;
}

/** The reason a held call is denied with when its user declines the gateway's question in their client. */
export const DECLINED_IN_CLIENT = 'declined by the user in their client';

/** Why a require_approval call is refused by a gateway that has no approval service. */
export const APPROVALS_UNAVAILABLE =
  'this call needs human approval, and this gateway cannot hold calls for approval: it has no control store (serve it with `policylayer serve`)';

/** How often a held call whose request carries a progressToken is sent a progress notification. */
export const DEFAULT_APPROVAL_PROGRESS_MS = 10_000;

/** The cancellation reason of a held call whose client connection closed. */
export const CLIENT_GONE = "the client's connection closed";

/** The cancellation reason of a held call whose session the client closed (or that expired). */
export const SESSION_CLOSED = 'the client closed its session';

/** The grant of every caller while authentication is off. */
export const ANONYMOUS_GRANT = 'anonymous';

/** The rule a refusal by argument validation names: the tool's own input schema, not a policy entry. */
export const INPUT_SCHEMA_RULE = '(input schema)';

/** Cancelled request ids a session remembers for the audit log before it forgets them all. */
const MAX_CANCELLED_REMEMBERED = 1_000;

/** Most pages the gateway follows when it lists a server's tools itself. */
const MAX_LIST_PAGES = 100;

export class Session {
  readonly id: string;
  readonly server: ServerRuntime;
  readonly upstream: UpstreamSession;
  readonly protocolVersion: string;
  lastSeen: number;
  /** Calls of this session in flight: shutdown waits for them, idle expiry skips sessions that have any. */
  inflight = 0;
  /** The client's stream for server messages outside calls (HTTP GET), if it opened one. */
  listener: ListenHandle | undefined;
  /** Writes a message of the gateway's own to that stream (tools/list_changed after a policy reload). */
  toClient: ((m: ServerMessage) => void) | undefined;
  closed = false;
  /** The agent identity calling through this session: the `grant` scope of limits. */
  grant = ANONYMOUS_GRANT;
  /** The grant's label, for the audit log; null while authentication is off. */
  grantLabel: string | null = null;
  /** The grant's own policy on this server, when it has one; else the server's applies. */
  policy: CompiledPolicy | undefined;
  /**
   * Calls of this session holding limits, by request id: told when the client itself ends the
   * call (cancels it, or closes the session), which must not give its counts back.
   */
  readonly endedByClient = new Map<JsonRpcId, () => void>();
  /**
   * Request ids the client cancelled, kept only while the audit log is on, until the call's
   * outcome is recorded (as `cancelled`); bounded, since a client may cancel ids it never used.
   */
  readonly cancelledByClient = new Set<JsonRpcId>();
  /**
   * Calls of this session held for human approval, by request id: the client's
   * notifications/cancelled for one, or the session closing, aborts its wait (and withdraws its
   * approval). Stateless clients share one session and may reuse ids: theirs are not kept here.
   */
  readonly held = new Map<JsonRpcId, AbortController>();
  /**
   * True for the one session all stateless clients share: it is no client's own session, so its
   * `session`-scoped limits count per grant instead.
   */
  shared = false;
  /** What the client declared at initialize (`params.capabilities`): whether it can be asked (elicitation). */
  clientCapabilities: Readonly<Record<string, unknown>> = {};
  /**
   * The gateway's own requests to the client awaiting its answer, by request id (the question of
   * a held call, `elicitation/create`): the answer is taken here and never forwarded upstream.
   */
  readonly asked = new Map<string, (answer: JsonRpcResponse) => void>();

  constructor(id: string, server: ServerRuntime, upstream: UpstreamSession, protocolVersion: string, now: number) {
    this.id = id;
    this.server = server;
    this.upstream = upstream;
    this.protocolVersion = protocolVersion;
    this.lastSeen = now;
  }
}

export interface GatewayOptions {
  logger: Logger;
  sessionIdleTimeoutMs: number;
  /** Reserves the limits of allowed calls (memory or Redis store, chosen by the composition root). */
  limiter: Limiter;
  /** Whether a tool result with `isError: true` gives its limits back, like a failed call (default true). */
  refundToolErrors?: boolean;
  /** Counts every tools/call by outcome, when given. */
  metrics?: Metrics;
  /** Records every decision and forwarded request, when the audit log is on. */
  audit?: AuditTrail;
  /**
   * Holds require_approval calls for a person's decision (the approval service over the control
   * store). Without it such calls are refused with `approvalsUnavailable`.
   */
  approvals?: ApprovalRequester | undefined;
  /** Why require_approval calls are refused without `approvals`; default APPROVALS_UNAVAILABLE. */
  approvalsUnavailable?: string;
  /** How often a held call with a progressToken gets a progress notification; default 10 s. */
  approvalProgressMs?: number;
  /** Webhooks are configured (`approvals.webhooks`): approvals whose rule's `via` allows it are posted to them. */
  approvalWebhooks?: boolean;
  /** Injected for exact expiry tests. */
  now?: () => number;
}

/** The text an agent reads when a policy refuses its call. */
export function denialText(tool: string, d: Pick<Decision, 'rule' | 'reason' | 'policyVersion'>): string {
  // Generated reasons already name their rule; saying it twice only makes the text harder to read.
  const rule = d.reason.endsWith(`(rule ${d.rule})`) ? '' : `rule ${d.rule}, `;
  return `Blocked by PolicyLayer policy: the call to '${tool}' was refused. Reason: ${d.reason} (${rule}policy ${d.policyVersion}).`;
}

/** The isError result of a refusal; a limit's refusal also says when to retry, for agents that read structure. */
function refusalResult(tool: string, d: Pick<Decision, 'rule' | 'reason' | 'policyVersion'>, retryAfterSeconds?: number): Record<string, unknown> {
  const result: Record<string, unknown> = { content: [{ type: 'text', text: denialText(tool, d) }], isError: true };
  if (retryAfterSeconds !== undefined) result._meta = { 'policylayer/retryAfterSeconds': retryAfterSeconds };
  return result;
}

export class Gateway {
  readonly servers = new Map<string, ServerRuntime>();
  readonly sessions = new Map<string, Session>();
  private readonly log: Logger;
  private readonly opts: GatewayOptions;
  private readonly now: () => number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private draining = false;
  private inflightTotal = 0;
  private drainWaiters: Array<() => void> = [];
  private listSeq = 0;
  /** The waits of every call held for approval: shutdown ends them (GATEWAY_CLOSED). */
  private readonly holds = new Set<AbortController>();

  constructor(opts: GatewayOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
  }

  addServer(server: ServerRuntime): void {
    this.servers.set(server.name, server);
  }

  /**
   * Removes a server while the gateway runs: new requests to it get "unknown server" at once,
   * its sessions are closed (calls in flight fail with the upstream's own "closed" error) and
   * its upstream is stopped. False if there is no such server.
   */
  async removeServer(name: string): Promise<boolean> {
    const server = this.servers.get(name);
    if (server === undefined) return false;
    this.servers.delete(name);
    const sessions = [...this.sessions.values()].filter((s) => s.server === server);
    await Promise.allSettled(sessions.map((s) => this.closeSession(s)));
    await server.upstream.close().catch(() => {});
    this.log.info({ server: name, sessionsClosed: sessions.length }, 'server removed');
    return true;
  }

  /** Starts the upstreams that run before any client (stdio processes) and the idle-session sweep. */
  async start(): Promise<void> {
    const results = await Promise.allSettled([...this.servers.values()].map((s) => s.upstream.start()));
    results.forEach((r, i) => {
      if (r.status === 'rejected') {
        const name = [...this.servers.keys()][i];
        this.log.warn({ server: name, err: (r.reason as Error).message }, 'upstream not ready at start; will keep trying');
      }
    });
    const every = Math.max(1000, Math.min(60_000, Math.floor(this.opts.sessionIdleTimeoutMs / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
  }

  /** The gateway's metrics, served at /metrics, if it counts them. */
  get metrics(): Metrics | undefined {
    return this.opts.metrics;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  server(name: string): ServerRuntime {
    const s = this.servers.get(name);
    if (!s) throw new PolicyLayerError(ErrorCodes.UNKNOWN_SERVER, `no server named '${name}' is registered`);
    return s;
  }

  session(id: string, server: ServerRuntime): Session {
    const s = this.sessions.get(id);
    // A session id is only valid on the endpoint that created it.
    if (!s || s.closed || s.server !== server) {
      throw new PolicyLayerError(ErrorCodes.UNKNOWN_SESSION, 'unknown or expired session: start a new one with initialize');
    }
    if (s.upstream.gone) {
      void this.closeSession(s);
      throw new PolicyLayerError(ErrorCodes.UNKNOWN_SESSION, `upstream server '${server.name}' ended this session: start a new one with initialize`);
    }
    s.lastSeen = this.now();
    return s;
  }

  /** Handles a client's initialize: opens the upstream side and returns the new session with its answer. */
  async initialize(server: ServerRuntime, req: JsonRpcRequest): Promise<{ session: Session; response: JsonRpcResponse }> {
    if (this.draining) throw new PolicyLayerError(ErrorCodes.SHUTTING_DOWN, 'the gateway is shutting down');
    const version = negotiateSessionVersion(req.params?.protocolVersion);
    let upstream: UpstreamSession;
    try {
      upstream = await server.upstream.open(req, version);
    } catch (err) {
      const rpc = (err as { rpc?: JsonRpcResponse }).rpc;
      if (rpc) throw Object.assign(new PolicyLayerError(ErrorCodes.UPSTREAM_PROTOCOL, rpc.error?.message ?? 'initialize refused'), { rpc });
      throw new PolicyLayerError(ErrorCodes.UPSTREAM_UNAVAILABLE, (err as Error).message, undefined, { cause: err });
    }
    const result = announcesToolChanges(upstream.initializeResult);
    const negotiated = typeof result.protocolVersion === 'string' ? result.protocolVersion : version;
    const session = new Session(randomUUID(), server, upstream, negotiated, this.now());
    const caps = req.params?.capabilities;
    if (typeof caps === 'object' && caps !== null && !Array.isArray(caps)) session.clientCapabilities = caps as Record<string, unknown>;
    this.sessions.set(session.id, session);
    this.log.debug({ server: server.name, session: session.id }, 'session opened');
    return { session, response: resultResponse(req.id, result) };
  }

  /**
   * Governs and forwards one client request. The answer and anything related to the call reach
   * `reply`; this never throws.
   */
  call(session: Session, req: JsonRpcRequest, raw: string | undefined, reply: CallHandlers, options?: CallOptions): void {
    if (this.draining) {
      reply.onResponse(errorResponse(req.id, JsonRpcErrors.UPSTREAM_ERROR, 'the gateway is shutting down'), undefined);
      return;
    }
    // The original bytes go upstream only when they mean exactly what the policy read: with a key
    // repeated, parsers disagree on which one wins (JavaScript keeps the last, some the first), so
    // such a request is re-serialised from the parsed message the policy was evaluated on.
    if (raw !== undefined && !keepsEveryKey(raw, req)) raw = undefined;
    const policy = options?.policy ?? session.policy ?? session.server.policy;
    const audit = this.opts.audit !== undefined && req.method !== 'ping' ? this.beginAudit(session, req, options, policy) : undefined;
    let handlers = reply;
    if (req.method === 'tools/call') {
      const name = req.params?.name;
      if (typeof name !== 'string') {
        audit?.refused('deny', null, 'tools/call without a string "name"');
        reply.onResponse(errorResponse(req.id, JsonRpcErrors.INVALID_PARAMS, 'tools/call needs a string "name"'), undefined);
        return;
      }
      const args: unknown = req.params?.arguments ?? {};
      const decision = evaluate({ tool: name, args }, policy);
      if (decision.effect !== 'allow' && !decision.enforced) {
        // Shadow mode: what the rule would have done is recorded, and the call goes through. A
        // shadowed require_approval holds nothing: it is recorded as the refusal it could become
        // (no one approving in time), and its limits apply as an allowed call's would.
        const wouldHold = decision.effect === 'require_approval';
        this.log.info(
          { server: session.server.name, tool: name, rule: decision.rule, wouldBe: decision.effect, reason: decision.reason },
          wouldHold ? 'shadow: the policy would have held this call for human approval' : 'shadow: the policy would have refused this call',
        );
        this.count(session, 'shadow_refused');
        audit?.shadowed(decision.rule, wouldHold ? `would have been held for human approval: ${decision.reason}` : decision.reason);
      } else if (decision.effect === 'hidden') {
        // Exactly what a server answers for a tool it does not have: the agent learns nothing more.
        this.count(session, 'hidden');
        audit?.refused('hidden', decision.rule, decision.reason);
        reply.onResponse(errorResponse(req.id, JsonRpcErrors.INVALID_PARAMS, `Unknown tool: ${name}`), undefined);
        return;
      } else if (decision.effect === 'deny') {
        this.log.info({ server: session.server.name, tool: name, rule: decision.rule }, 'call denied by policy');
        this.count(session, 'denied');
        audit?.refused('deny', decision.rule, decision.reason);
        reply.onResponse(resultResponse(req.id, refusalResult(name, decision)), undefined);
        return;
      } else if (decision.effect === 'allow') {
        audit?.allowedBy(decision.rule, decision.reason);
      }
      // An enforced require_approval is recorded when the call is held: after its arguments pass,
      // so that no person is asked about a call the server would reject anyway.
      if (decision.validateArguments === true) {
        const validator = this.validatorFor(session.server);
        if (!decision.enforced) {
          // Shadowed calls go through whatever their arguments; a known schema still says what would have happened.
          const problem = validator.check(name, args);
          if (problem !== undefined) {
            this.log.info(
              { server: session.server.name, tool: name, rule: INPUT_SCHEMA_RULE, wouldBe: 'deny', reason: problem },
              'shadow: the arguments would have been refused',
            );
            this.count(session, 'shadow_refused');
            audit?.shadowed(INPUT_SCHEMA_RULE, problem);
          }
        } else if (validator.needsListing(name)) {
          this.listThenCheck({ session, req, raw, reply, options, tool: name, args, decision, audit });
          return;
        } else {
          const problem = validator.check(name, args);
          if (problem !== undefined) {
            this.refuseArguments(session, req, reply, name, problem, policy.version, audit);
            return;
          }
        }
      }
      if (decision.effect !== 'allow' || decision.limits.length > 0) {
        this.proceed({ session, req, raw, reply, options, tool: name, args, decision, audit });
        return;
      }
      // The common case, without an object per call: allowed, nothing to reserve.
      this.count(session, 'allowed');
    } else if (req.method === 'tools/list') {
      handlers = answeredBy(reply, (msg, rawResponse) => {
        rememberTools(session.server, msg);
        this.learnTools(session.server, msg, req.params?.cursor === undefined);
        const filtered = filterToolsList(msg, policy);
        reply.onResponse(filtered, filtered === msg ? rawResponse : undefined);
      });
    }
    this.track(session, req, raw, handlers, options, audit);
  }

  /** The audit of one request: who, where, what, under which policy version. */
  private beginAudit(session: Session, req: JsonRpcRequest, options: CallOptions | undefined, policy: CompiledPolicy): CallAudit {
    const params = req.params;
    const grant = options?.grant ?? session.grant;
    const isTool = req.method === 'tools/call';
    return this.opts.audit!.begin({
      requestId: req.id,
      grantId: grant === ANONYMOUS_GRANT ? null : grant,
      grantLabel: options?.grantLabel ?? session.grantLabel,
      session: session.shared ? null : session.id,
      server: session.server.name,
      method: req.method,
      tool: isTool && typeof params?.name === 'string' ? params.name : null,
      // tools/call and prompts/get carry arguments; a prompt's are as telling as a tool's.
      args: isTool ? (params?.arguments ?? {}) : req.method === 'prompts/get' ? params?.arguments : undefined,
      policyVersion: policy.version,
    });
  }

  private validatorFor(server: ServerRuntime): ArgumentValidator {
    return (server.validator ??= new ArgumentValidator({ logger: this.log, server: server.name, now: this.now }));
  }

  /** Feeds a tools/list answer to the server's validators; `firstPage` when the request had no cursor. */
  private learnTools(server: ServerRuntime, msg: JsonRpcResponse, firstPage: boolean): void {
    const result = msg.result as { tools?: unknown; nextCursor?: unknown } | undefined;
    if (!Array.isArray(result?.tools)) return;
    this.validatorFor(server).learn(result.tools, firstPage && result.nextCursor === undefined);
  }

  private refuseArguments(
    session: Session,
    req: JsonRpcRequest,
    reply: CallHandlers,
    tool: string,
    reason: string,
    policyVersion: string,
    audit: CallAudit | undefined,
  ): void {
    const d = { rule: INPUT_SCHEMA_RULE, reason, policyVersion };
    audit?.refused('invalid_arguments', INPUT_SCHEMA_RULE, reason, policyVersion);
    this.log.info({ server: session.server.name, tool, rule: INPUT_SCHEMA_RULE, reason }, 'call refused: arguments do not match the tool’s input schema');
    this.count(session, 'invalid_arguments');
    reply.onResponse(resultResponse(req.id, refusalResult(tool, d)), undefined);
  }

  /**
   * Reserves the call's limits (all of them or none), then forwards it; the reservation is
   * settled with the answer: kept for a success, given back for a failure.
   */
  private admit(call: AllowedCall): void {
    const { session, req, reply, decision } = call;
    const grant = call.options?.grant ?? session.grant;
    const ctx = { server: session.server.name, grant, session: session.shared ? undefined : session.id, args: call.args };
    const outcome = this.opts.limiter.reserve(decision.limits, ctx);
    if (outcome instanceof Promise) {
      session.inflight++;
      void outcome.then((o) => {
        session.inflight--;
        if (this.draining || session.closed) {
          if (o.ok) this.opts.limiter.settle(o.ticket, true);
          call.audit?.refused('deny', null, 'the gateway is shutting down');
          reply.onResponse(errorResponse(req.id, JsonRpcErrors.UPSTREAM_ERROR, 'the gateway is shutting down'), undefined);
          return;
        }
        this.afterLimits(o, call);
      });
    } else {
      this.afterLimits(outcome, call);
    }
  }

  private afterLimits(o: LimitOutcome, call: AllowedCall): void {
    const { session, req, reply, tool, decision, audit } = call;
    if (o.ok) {
      this.count(session, 'allowed');
      this.forward(call, this.settling(call, o.ticket), o.ticket);
      return;
    }
    const log = { server: session.server.name, tool, rule: o.rule, reason: o.reason };
    if (!decision.enforced) {
      // Shadow mode: the refusal is recorded and the call goes through, uncounted.
      this.log.info({ ...log, wouldBe: 'deny' }, 'shadow: a limit would have refused this call');
      this.count(session, 'shadow_refused');
      this.count(session, 'allowed');
      audit?.shadowed(o.rule, o.reason);
      this.forward(call, reply, undefined);
      return;
    }
    this.log.info(log, 'call refused by a limit');
    this.count(session, 'limited');
    audit?.refused('rate_limited', o.rule, o.reason);
    const d = { rule: o.rule, reason: o.reason, policyVersion: decision.policyVersion };
    reply.onResponse(resultResponse(req.id, refusalResult(tool, d, o.retryAfterSeconds)), undefined);
  }

  /**
   * A tools/call whose arguments passed goes on: held for a person's decision when its decision
   * is an enforced require_approval (and no approval admitted it yet), then its limits are
   * reserved, then it is forwarded. Limits come after the approval on purpose: a reservation held
   * for the minutes a person takes would count a call that may never happen in windows it may
   * never run in, and hold in-flight slots idle; so an approved call can still be refused by a
   * limit (its approval then stays approved and unused, and the agent is told when to retry).
   */
  private proceed(call: AllowedCall): void {
    const { session, req, reply, decision, audit } = call;
    if (decision.effect === 'require_approval' && decision.enforced && call.claim === undefined) {
      this.hold(call);
      return;
    }
    if (call.claim !== undefined && (this.draining || session.closed)) {
      audit?.refused('deny', null, 'the gateway is shutting down');
      reply.onResponse(errorResponse(req.id, JsonRpcErrors.UPSTREAM_ERROR, 'the gateway is shutting down'), undefined);
      return;
    }
    if (decision.limits.length > 0) {
      this.admit(call);
      return;
    }
    this.count(session, 'allowed');
    this.forward(call, reply, undefined);
  }

  /**
   * Forwards the call. A call released by an approval first claims the approval's single use
   * (approved → executed, which succeeds once in the whole cluster); if the claim fails, the call
   * is not forwarded and its reservation is given back.
   */
  private forward(call: AllowedCall, handlers: CallHandlers, ticket: Ticket | undefined): void {
    const { session, req, raw, options, tool, decision, audit, claim } = call;
    if (claim === undefined) {
      this.track(session, req, raw, handlers, options, audit);
      return;
    }
    this.enter(session);
    claim().then(
      (ok) => (ok ? undefined : 'its approval was already used: an approval admits exactly one call'),
      (err: unknown) => `its approval could not be claimed in the control store (${(err as Error).message}), so it was not forwarded`,
    ).then((problem) => {
      this.leave(session);
      if (problem === undefined) {
        this.track(session, req, raw, handlers, options, audit);
        return;
      }
      if (ticket !== undefined) this.opts.limiter.settle(ticket, true);
      this.log.warn({ server: session.server.name, tool, problem }, 'approved call not forwarded');
      audit?.refused('deny', decision.rule, problem);
      call.reply.onResponse(resultResponse(req.id, refusalResult(tool, { ...decision, reason: problem })), undefined);
    });
  }

  /**
   * Holds an enforced require_approval call open while a person decides (approvals/service.ts),
   * then forwards it (approved), or answers with an isError result that says who or what refused
   * it and why (denied, expired, withdrawn). While it waits, a request that carries a
   * progressToken gets `notifications/progress` with the client's own token every
   * `approvalProgressMs`, so the client's request timeout does not fire; the client's
   * `notifications/cancelled`, its connection or session closing, or the gateway shutting down
   * ends the wait and withdraws the approval (a decision made first stands).
   */
  private hold(call: AllowedCall): void {
    const { session, req, reply, options, tool, args, decision, audit } = call;
    const approvals = this.opts.approvals;
    if (approvals === undefined) {
      const reason = this.opts.approvalsUnavailable ?? APPROVALS_UNAVAILABLE;
      this.log.warn({ server: session.server.name, tool, rule: decision.rule }, 'call refused: it needs human approval, which this gateway cannot hold calls for');
      this.count(session, 'denied');
      audit?.refused('deny', decision.rule, reason);
      reply.onResponse(resultResponse(req.id, refusalResult(tool, { ...decision, reason })), undefined);
      return;
    }
    const server = session.server.name;
    const grant = options?.grant ?? session.grant;
    const waiting = new AbortController();
    let progressTimer: NodeJS.Timeout | undefined;
    const cancel = (why: string) => {
      clearInterval(progressTimer);
      if (!waiting.signal.aborted) waiting.abort(why);
    };
    // Stateless clients end a call by closing its stream (options.signal); others send
    // notifications/cancelled (Gateway.send) or close the connection the answer would go on.
    const keyed = !session.shared && !session.held.has(req.id);
    if (keyed) session.held.set(req.id, waiting);
    const onSignal = () => cancel(CLIENT_GONE);
    options?.signal?.addEventListener('abort', onSignal, { once: true });
    if (options?.signal?.aborted === true) onSignal();
    const unwatch = reply.watchClientGone?.(() => cancel(CLIENT_GONE));
    this.holds.add(waiting);
    this.enter(session);
    const done = () => {
      endQuestion?.();
      clearInterval(progressTimer);
      if (keyed && session.held.get(req.id) === waiting) session.held.delete(req.id);
      options?.signal?.removeEventListener('abort', onSignal);
      unwatch?.();
      this.holds.delete(waiting);
      this.leave(session);
    };
    const refuse = (outcome: CallOutcome, decisionName: 'deny' | 'denied_by_approver' | 'expired', reason: string, text: string, approval?: ApprovalOutcome) => {
      this.count(session, outcome);
      audit?.refused(decisionName, decision.rule, reason);
      const result: Record<string, unknown> = { content: [{ type: 'text', text }], isError: true };
      if (approval !== undefined) result._meta = { 'policylayer/approval': approvalMeta(approval) };
      reply.onResponse(resultResponse(req.id, result), undefined);
    };
    const wanted = decision.approval?.via;
    const via = approvalChannels(wanted, {
      webhook: this.opts.approvalWebhooks === true,
      // Only a client's own session can be sent a request (stateless clients share one session).
      elicitation: !session.shared && canElicitForm(session.clientCapabilities, session.protocolVersion),
    });
    for (const channel of wanted ?? []) {
      if (channel === 'dashboard' || via.includes(channel)) continue;
      this.log.info(
        { server, tool, rule: decision.rule, channel },
        channel === 'webhook'
          ? 'the rule asks for approval by webhook, and no approvals.webhooks are configured: the call waits for the admin API or the CLI'
          : 'the rule asks for approval by elicitation, and this client cannot be asked (it declared no elicitation form capability, or shares a stateless session): the call waits for the other channels',
      );
    }
    const asked: ApprovalCall = {
      grantId: grant === ANONYMOUS_GRANT ? null : grant,
      grantLabel: options?.grantLabel ?? session.grantLabel,
      server,
      tool,
      arguments: args,
      policyVersion: decision.policyVersion,
      rule: decision.rule,
      reason: decision.reason,
      via,
    };
    // Ends the gateway's question in the client, if it is still open, when the wait ends.
    let endQuestion: (() => void) | undefined;
    const where = `rule ${decision.rule}, policy ${decision.policyVersion}`;
    void (async () => {
      let handle: ApprovalHandle;
      try {
        handle = await approvals.request(asked, decision.approval);
      } catch (err) {
        done();
        const problem = `this call needs human approval, and the approval could not be requested: ${(err as Error).message}`;
        this.log.error({ server, tool, err: (err as Error).message }, 'call refused: its approval could not be requested');
        refuse('denied', 'deny', problem, denialText(tool, { ...decision, reason: problem }));
        return;
      }
      const approval = handle.approval;
      if (handle.remembered) {
        done();
        const within = decision.approval?.rememberMs === undefined ? '' : ` within ${durationText(decision.approval.rememberMs)}`;
        audit?.decided('approved', decision.rule, `approved by ${approval.decidedBy ?? 'unknown'} (approval ${approval.id}), remembered: the identical call was approved${within}`, false);
        this.log.info({ server, tool, approval: approval.id }, 'call admitted by an earlier approval of the identical call (approval.remember)');
        this.proceed({ ...call, claim: handle.markExecuted });
        return;
      }
      const timeout = durationText(approval.expiresAt - approval.requestedAt);
      audit?.decided('approval_requested', decision.rule, `waiting for approval ${approval.id} (timeout ${timeout}): ${decision.reason}`);
      this.log.info({ server, tool, approval: approval.id, expiresAt: new Date(approval.expiresAt).toISOString() }, 'call held for human approval');
      const token = progressTokenOf(req);
      if (token !== undefined && !waiting.signal.aborted) {
        let progress = 0;
        const message = `waiting for a person to approve the call to '${tool}' (approval ${approval.id}; expires ${new Date(approval.expiresAt).toISOString()})`;
        const tell = () => reply.onRelated({ message: { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: token, progress: ++progress, message } } });
        tell();
        progressTimer = setInterval(tell, this.opts.approvalProgressMs ?? DEFAULT_APPROVAL_PROGRESS_MS);
        progressTimer.unref();
      }
      if (approval.via.includes('elicitation') && !waiting.signal.aborted) {
        endQuestion = this.askInClient(session, reply, approval, args, approvals);
      }
      const outcome = await handle.wait(waiting.signal);
      done();
      const id = `approval ${approval.id}`;
      switch (outcome.status) {
        case 'approved':
          audit?.decided('approved', decision.rule, `approved by ${outcome.by} (${id})${outcome.comment ? `: ${outcome.comment}` : ''}`);
          this.log.info({ server, tool, approval: approval.id, by: outcome.by }, 'held call approved: forwarding it');
          this.proceed({ ...call, claim: handle.markExecuted });
          return;
        case 'denied': {
          const reason = outcome.reason ?? 'no reason given';
          this.log.info({ server, tool, approval: approval.id, by: outcome.by }, 'held call denied by a person');
          refuse(
            'denied_by_approver',
            'denied_by_approver',
            `denied by ${outcome.by} (${id}): ${reason}`,
            `Blocked by PolicyLayer: ${outcome.by} denied the call to '${tool}' when asked to approve it. Reason: ${reason} (${id}, ${where}).`,
            outcome,
          );
          return;
        }
        case 'expired':
          this.log.info({ server, tool, approval: approval.id }, 'held call expired: no one decided in time');
          refuse(
            'approval_expired',
            'expired',
            `no one decided within ${timeout} (${id})`,
            `Blocked by PolicyLayer: the call to '${tool}' needs a person's approval (${decision.reason}), and no one decided within ${timeout}, so it was not made (${id}, ${where}).`,
            outcome,
          );
          return;
        case 'cancelled': {
          const why = outcome.reason ?? 'withdrawn';
          this.log.info({ server, tool, approval: approval.id, reason: why }, 'held call withdrawn before anyone decided');
          this.count(session, 'approval_cancelled');
          audit?.finished('cancelled', null, `withdrawn before anyone decided (${id}): ${why}`);
          const result = {
            content: [{ type: 'text', text: `The call to '${tool}' was not made: it was withdrawn before anyone approved it (${why}; ${id}).` }],
            isError: true,
            _meta: { 'policylayer/approval': approvalMeta(outcome) },
          };
          reply.onResponse(resultResponse(req.id, result), undefined);
          return;
        }
      }
    })();
  }

  /**
   * `approval.via: elicitation`: asks the calling user, in their own client, whether to allow the
   * held call (`elicitation/create` on the call's stream, answered by a POST of the client that
   * Gateway.send takes). Accepted with `approve: true`, the approval is approved as
   * `elicitation:<grant label>`; declined, cancelled or `approve: false`, denied with
   * DECLINED_IN_CLIENT (and the user's comment). The other channels stay open meanwhile: the first
   * decision wins, and a client that answers with an error, or never, leaves the approval to them.
   * Returns what ends the question: if it is still open when the wait ends, the client is told the
   * request is cancelled (before the call's answer, on the same stream).
   */
  private askInClient(session: Session, reply: CallHandlers, approval: ApprovalRecord, args: unknown, approvals: ApprovalRequester): () => void {
    const id = `policylayer-approval-${approval.id}`;
    const by = `elicitation:${approval.grantLabel ?? ANONYMOUS_GRANT}`;
    const where = { server: approval.server, tool: approval.tool, approval: approval.id };
    let open = true;
    const answered = (answer: JsonRpcResponse) => {
      open = false;
      const result = answer.result as { action?: unknown; content?: { approve?: unknown; comment?: unknown } } | undefined;
      if (answer.error !== undefined || result === undefined) {
        this.log.info({ ...where, error: answer.error?.message }, 'the client could not ask its user; the approval waits for its other channels');
        return;
      }
      const comment = typeof result.content?.comment === 'string' && result.content.comment.trim() !== '' ? result.content.comment.trim().slice(0, 1_000) : null;
      const approve = result.action === 'accept' && result.content?.approve === true;
      if (!approve && result.action !== 'accept' && result.action !== 'decline' && result.action !== 'cancel') {
        this.log.info({ ...where }, 'the client answered the approval question with no action; the approval waits for its other channels');
        return;
      }
      const decided = approve
        ? approvals.approve(approval.id, by, comment)
        : approvals.deny(approval.id, by, comment === null ? DECLINED_IN_CLIENT : `${DECLINED_IN_CLIENT}: ${comment}`);
      decided.then(
        (change) => {
          if (!change.ok) this.log.info({ ...where, by }, 'the user answered in their client after the approval was settled: their answer changes nothing');
        },
        (err: unknown) => this.log.warn({ ...where, by, err: (err as Error).message }, "the user's answer in their client could not be recorded; the approval waits for its other channels"),
      );
    };
    session.asked.set(id, answered);
    const agent = approval.grantLabel === null ? 'your agent' : `'${approval.grantLabel}'`;
    let shown = JSON.stringify(redact(args ?? {}));
    if (shown.length > 1_000) shown = `${shown.slice(0, 999)}…`;
    const message =
      `Allow ${agent} to call '${approval.tool}' on '${approval.server}' with ${shown}? ` +
      `Reason: ${approval.reason} (PolicyLayer approval ${approval.id}; expires ${new Date(approval.expiresAt).toISOString()})`;
    reply.onRelated({
      message: {
        jsonrpc: '2.0',
        id,
        method: 'elicitation/create',
        params: {
          // `mode` came with 2025-11-25; earlier revisions have only this one.
          ...(session.protocolVersion >= '2025-11-25' ? { mode: 'form' } : {}),
          message,
          requestedSchema: {
            type: 'object',
            properties: {
              approve: { type: 'boolean', title: 'Allow this call', description: `Allow the call to '${approval.tool}' on '${approval.server}'`, default: false },
              comment: { type: 'string', title: 'Comment', description: 'Optional: recorded with your decision', maxLength: 1_000 },
            },
            required: ['approve'],
          },
        },
      },
    });
    this.log.info({ ...where }, 'asking the calling user to approve the call in their client (elicitation)');
    return () => {
      if (session.asked.get(id) === answered) session.asked.delete(id);
      if (!open) return;
      open = false;
      reply.onRelated({ message: { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'the approval was settled' } } });
    };
  }

  /** A call of the session is in flight (held, claimed or upstream): shutdown waits for it, idle expiry skips its session. */
  private enter(session: Session): void {
    session.inflight++;
    this.inflightTotal++;
  }

  private leave(session: Session): void {
    session.inflight--;
    this.inflightTotal--;
    session.lastSeen = this.now();
    if (this.inflightTotal === 0 && this.drainWaiters.length > 0) {
      for (const w of this.drainWaiters.splice(0)) w();
    }
  }

  private count(session: Session, outcome: CallOutcome): void {
    this.opts.metrics?.call(session.server.name, outcome);
  }

  /**
   * Wraps the call's handlers so its answer settles its reservation: a call that failed (the
   * upstream crashed or was unreachable, answered an error, or, unless configured otherwise, a
   * result with `isError`) gives its counts back. A call the client ended itself (cancelled, or
   * its session or stream closed) keeps them: the server may have acted already, and a refund
   * would let an agent undo its own usage.
   */
  private settling(call: AllowedCall, ticket: Ticket | undefined): CallHandlers {
    const { session, req, reply, options } = call;
    if (ticket === undefined) return reply;
    const refundToolErrors = this.opts.refundToolErrors ?? true;
    let settled = false;
    let clientEnded = false;
    const end = () => (clientEnded = true);
    // Stateless clients share one session and may reuse ids; they end a call by closing its
    // stream, which aborts `options.signal`.
    if (!session.shared) session.endedByClient.set(req.id, end);
    const settle = (failed: boolean) => {
      if (settled) return;
      settled = true;
      if (session.endedByClient.get(req.id) === end) session.endedByClient.delete(req.id);
      this.opts.limiter.settle(ticket, failed && !clientEnded && options?.signal?.aborted !== true);
    };
    return answeredBy(
      reply,
      (msg, rawResponse) => {
        const outcome = outcomeOf(msg);
        settle(outcome === 'error' || (refundToolErrors && outcome === 'tool_error'));
        reply.onResponse(msg, rawResponse);
      },
      reply.onStreamEnd
        ? (lastEventId) => {
            const handedOver = reply.onStreamEnd!(lastEventId);
            // The client takes the stream over: the outcome is no longer the gateway's to see, so
            // the call counts as made.
            if (handedOver) settle(false);
            return handedOver;
          }
        : undefined,
    );
  }

  /**
   * The tool's schema is not known yet (the client called before listing): the gateway lists the
   * server's tools itself, once for all the calls waiting, then checks. A listing that fails lets
   * the call through unchecked rather than blocking every call on a broken upstream list.
   */
  private listThenCheck(call: AllowedCall): void {
    const { session, req, reply, tool, args, decision, audit } = call;
    const validator = this.validatorFor(session.server);
    void validator
      .listOnce(() => this.listTools(session, validator))
      .then(() => {
        if (this.draining || session.closed) {
          audit?.refused('deny', null, 'the gateway is shutting down');
          reply.onResponse(errorResponse(req.id, JsonRpcErrors.UPSTREAM_ERROR, 'the gateway is shutting down'), undefined);
          return;
        }
        const problem = validator.check(tool, args);
        if (problem !== undefined) this.refuseArguments(session, req, reply, tool, problem, decision.policyVersion, audit);
        else this.proceed(call);
      });
  }

  /** Lists every page of the server's tools through `session` and teaches `validator`; rejects on failure. */
  private listTools(session: Session, validator: ArgumentValidator): Promise<void> {
    return new Promise((resolve, reject) => {
      const page = (cursor: string | undefined, n: number): void => {
        const req: JsonRpcRequest = { jsonrpc: '2.0', id: `policylayer-tools-list-${++this.listSeq}`, method: 'tools/list' };
        if (cursor !== undefined) req.params = { cursor };
        session.upstream.call(req, undefined, {
          onRelated: () => {},
          onResponse: (msg) => {
            const result = msg.result as { tools?: unknown; nextCursor?: unknown } | undefined;
            if (msg.error !== undefined || !Array.isArray(result?.tools)) {
              reject(new Error(msg.error?.message ?? 'tools/list answered without a tools array'));
              return;
            }
            rememberTools(session.server, msg);
            const next = result.nextCursor;
            const more = typeof next === 'string' && next !== '' && n + 1 < MAX_LIST_PAGES;
            validator.learn(result.tools, !more);
            if (more) page(next, n + 1);
            else resolve();
          },
        });
      };
      page(undefined, 0);
    });
  }

  private track(session: Session, req: JsonRpcRequest, raw: string | undefined, reply: CallHandlers, options?: CallOptions, audit?: CallAudit): void {
    this.enter(session);
    let done = false;
    const finish = () => {
      if (done) return false;
      done = true;
      this.leave(session);
      return true;
    };
    const handlers = answeredBy(
      reply,
      (msg, rawResponse) => {
        if (!finish()) return;
        // The client's answer first: recording it is the gateway's business, not the caller's wait.
        reply.onResponse(msg, rawResponse);
        if (audit !== undefined) auditOutcome(audit, msg, rawResponse, session, req.id, options);
      },
      reply.onStreamEnd
        ? (lastEventId) => {
            // The client resumes the stream itself: the call is no longer the gateway's to wait for.
            const handedOver = reply.onStreamEnd!(lastEventId);
            if (handedOver && finish()) audit?.finished('detached', null, null);
            return handedOver;
          }
        : undefined,
    );
    const durable = audit?.forwarding();
    if (durable === undefined) {
      session.upstream.call(req, raw, handlers, options);
      return;
    }
    // Strict audit: the call goes upstream only once its record is durable, and not at all if it cannot be made so.
    durable.then(
      () => {
        if (done) return;
        if (session.closed || this.draining) {
          handlers.onResponse(errorResponse(req.id, JsonRpcErrors.UPSTREAM_ERROR, 'the gateway is shutting down'), undefined);
          return;
        }
        session.upstream.call(req, raw, handlers, options);
      },
      (err: unknown) => {
        this.log.error({ server: session.server.name, method: req.method, err: (err as Error).message }, 'audit record not durable: the call was not forwarded');
        handlers.onResponse(
          errorResponse(req.id, JsonRpcErrors.UPSTREAM_ERROR, 'the audit log could not record this call, so it was not forwarded (audit.durability: strict)'),
          undefined,
        );
      },
    );
  }

  /** Client notifications and answers to server requests go through unchanged. */
  send(session: Session, msg: JsonRpcNotification | JsonRpcResponse, raw: string | undefined): void {
    if (!('method' in msg) && typeof msg.id === 'string' && session.asked.size > 0) {
      // The answer to a question of the gateway's own (a held call's elicitation): not the server's to see.
      const answered = session.asked.get(msg.id);
      if (answered !== undefined) {
        session.asked.delete(msg.id);
        answered(msg);
        return;
      }
    }
    if ('method' in msg && msg.method === 'notifications/cancelled') {
      const id = msg.params?.requestId as JsonRpcId | undefined;
      const held = id === undefined ? undefined : session.held.get(id);
      if (held !== undefined) {
        // The call never reached the server: the cancellation is the gateway's alone to act on.
        const why = msg.params?.reason;
        held.abort(typeof why === 'string' && why !== '' ? `the client cancelled the call: ${why.slice(0, 200)}` : 'the client cancelled the call');
        return;
      }
      if (id !== undefined) {
        session.endedByClient.get(id)?.();
        if (this.opts.audit !== undefined && session.inflight > 0) {
          if (session.cancelledByClient.size >= MAX_CANCELLED_REMEMBERED) session.cancelledByClient.clear();
          session.cancelledByClient.add(id);
        }
      }
    }
    session.upstream.send(msg, raw);
  }

  /**
   * Opens a stream of server messages for the session: the messages that belong to no call or,
   * with `lastEventId`, the rest of an earlier stream the client is resuming.
   */
  async listen(session: Session, onMessage: (m: ServerMessage) => void, lastEventId?: string): Promise<ListenHandle | undefined> {
    const handle = await session.upstream.listen(onMessage, lastEventId);
    if (!handle || lastEventId !== undefined) return handle;
    session.toClient = onMessage;
    return {
      close: () => {
        if (session.toClient === onMessage) session.toClient = undefined;
        handle.close();
      },
      onEnd: handle.onEnd ? (fn) => handle.onEnd!(fn) : undefined,
    };
  }

  /** Tells every client of `server` with an open stream that its tool list changed. */
  notifyToolsChanged(server: ServerRuntime): number {
    let told = 0;
    for (const s of this.sessions.values()) {
      if (s.server !== server || !s.toClient) continue;
      s.toClient({ message: { jsonrpc: '2.0', method: 'notifications/tools/list_changed' } });
      told++;
    }
    return told;
  }

  async closeSession(session: Session): Promise<void> {
    if (session.closed) return;
    session.closed = true;
    for (const end of session.endedByClient.values()) end();
    for (const held of session.held.values()) held.abort(SESSION_CLOSED);
    this.sessions.delete(session.id);
    session.listener?.close();
    await session.upstream.close();
    this.log.debug({ session: session.id }, 'session closed');
  }

  private sweep(): void {
    const cutoff = this.now() - this.opts.sessionIdleTimeoutMs;
    for (const s of this.sessions.values()) {
      if (s.inflight === 0 && s.lastSeen < cutoff) void this.closeSession(s);
    }
  }

  /** Stops taking calls, waits up to `graceMs` for those in flight, then closes sessions and upstreams. */
  async shutdown(graceMs: number): Promise<void> {
    this.draining = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    // Calls held for approval end now (their approvals withdrawn), rather than at the grace's end.
    for (const held of this.holds) held.abort(GATEWAY_CLOSED);
    if (this.inflightTotal > 0) {
      await Promise.race([
        new Promise<void>((r) => this.drainWaiters.push(r)),
        new Promise<void>((r) => setTimeout(r, graceMs).unref()),
      ]);
    }
    await Promise.allSettled([...this.sessions.values()].map((s) => this.closeSession(s)));
    await Promise.allSettled([...this.servers.values()].map((s) => s.upstream.close()));
    await this.opts.limiter.store.close().catch(() => {});
  }
}

/**
 * A policy reload can change the visible tool set, so the gateway says it may announce that
 * (`tools.listChanged`), even for a server whose own tool list never changes.
 */
function announcesToolChanges(result: Record<string, unknown>): Record<string, unknown> {
  const caps = result.capabilities as { tools?: Record<string, unknown> } | undefined;
  if (!caps?.tools || caps.tools.listChanged === true) return result;
  return { ...result, capabilities: { ...caps, tools: { ...caps.tools, listChanged: true } } };
}

function rememberTools(server: ServerRuntime, msg: JsonRpcResponse): void {
  const tools = (msg.result as { tools?: Array<{ name?: unknown }> } | undefined)?.tools;
  if (!Array.isArray(tools)) return;
  const known = (server.knownTools ??= new Set());
  for (const t of tools) if (typeof t?.name === 'string') known.add(t.name);
}

/** The outcome record of a forwarded request, from the answer that is leaving for the client. */
function auditOutcome(audit: CallAudit, msg: JsonRpcResponse, raw: string | undefined, session: Session, id: JsonRpcId, options: CallOptions | undefined): void {
  // A call the client ended (cancelled, closed its stream or session) ends with whatever error the
  // upstream side made of that; the record says who ended it.
  const cancelled = options?.signal?.aborted === true || session.closed || session.cancelledByClient.delete(id);
  const bytes = Buffer.byteLength(raw ?? JSON.stringify(msg));
  const outcome = outcomeOf(msg);
  if (outcome === 'error') audit.finished(cancelled ? 'cancelled' : 'error', bytes, msg.error?.message ?? null);
  else audit.finished(outcome, bytes, null);
}

/** The client's progress token of a request, when it sent one (`params._meta.progressToken`). */
function progressTokenOf(req: JsonRpcRequest): string | number | undefined {
  const token = (req.params?._meta as { progressToken?: unknown } | undefined)?.progressToken;
  return typeof token === 'string' || typeof token === 'number' ? token : undefined;
}

/** What a refused held call's result says of its approval, for agents that read structure. */
function approvalMeta(outcome: ApprovalOutcome): Record<string, unknown> {
  const a = outcome.approval;
  return { id: a.id, status: a.status, decidedBy: a.decidedBy, expiresAt: new Date(a.expiresAt).toISOString() };
}

/** Removes hidden tools from a tools/list answer; returns the same object when nothing is hidden. */
export function filterToolsList(msg: JsonRpcResponse, policy: CompiledPolicy): JsonRpcResponse {
  const result = msg.result as { tools?: Array<{ name: string }> } | undefined;
  // A policy in shadow mode hides nothing: it only records what it would have done.
  if (!result || !Array.isArray(result.tools) || policy.shadow) return msg;
  const visible = visibleTools(policy, result.tools);
  if (visible.length === result.tools.length) return msg;
  return { ...msg, result: { ...result, tools: visible } };
}
