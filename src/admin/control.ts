/**
 * The control plane's operations: grants, servers registered at run time, policy versions and
 * admin credentials, each validated the same way whoever asks (the admin HTTP API or the CLI on
 * the host), and each write recorded in the admin audit stream with who did it and the state
 * before and after. Nothing here speaks HTTP; the API and the CLI adapt it.
 */
import { readFileSync } from 'node:fs';
import type { Env, ServerConfig } from '../config/index.js';
import { loadServerDefinition } from '../config/index.js';
import { SERVER_NAME_PATTERN } from '../config/schema.js';
import { ApprovalService } from '../approvals/service.js';
import { ConfigError, ErrorCodes, PolicyLayerError } from '../errors.js';
import { hashToken, newAdminToken, newToken } from '../identity/tokens.js';
import { parsePolicy } from '../policy/index.js';
import type { CompiledPolicy } from '../policy/types.js';
import type {
  AdminCredentialRecord,
  AdminEvent,
  AdminEventQuery,
  AdminRole,
  ApprovalChange,
  ApprovalRecord,
  ApprovalStatus,
  ControlStore,
  GrantRecord,
  PolicyVersion,
  StoredServer,
} from '../store/store.js';
import { ADMIN_ROLES, APPROVAL_STATUSES, StoreConflictError } from '../store/store.js';

/** Who is acting: an admin credential's label (or `oidc:<subject>`, `cli:<user>`) and its role. */
export interface Actor {
  readonly name: string;
  readonly role: AdminRole;
}

/** Labels of grants and admin credentials: what an operator can type and read in a log line. */
export const LABEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const LABEL_RULE = 'letters, digits, ".", "_" and "-", starting with a letter or digit, at most 64';

/** What every API answer and audit event shows in place of a credential. */
export const MASK = '[redacted]';

export interface ControlPlaneOptions {
  readonly store: ControlStore;
  /** The servers of gateway.yaml: listed and governed, but defined by the file, so never removed here. */
  readonly configServers: ReadonlyMap<string, ServerConfig>;
  /** Values to mask wherever a config server's definition is shown (gateway.yaml's `secretValues`). */
  readonly configSecrets?: readonly string[];
  /** Resolves `${VAR}` references of a server being added, to check it can start; default process.env. */
  readonly env?: Env;
  /** Where relative paths of added servers (cwd, secret files) resolve; default the working directory. */
  readonly baseDir?: string;
  readonly now?: () => number;
  /**
   * Whether a grant's servers must be known (in gateway.yaml or stored); default true. Off only
   * for the CLI given a store without a config, which cannot tell what gateway.yaml holds.
   */
  readonly checkServers?: boolean;
  /**
   * Decides approvals, waking the held call: the gateway's own service (which wakes a call it
   * holds at once and tells the other replicas), or the CLI's (which tells them through Redis when
   * the counters use it). Default: a service over `store` alone, whose decisions the holding
   * replica finds at its next poll of the store.
   */
  readonly approvals?: ApprovalService;
}

/** An approval as the admin API and the CLI show it (times in ISO 8601, the arguments parsed). */
export interface ApprovalView {
  readonly id: string;
  readonly status: ApprovalStatus;
  readonly grantId: string | null;
  readonly grantLabel: string | null;
  readonly server: string;
  readonly tool: string;
  /** Exactly what will be forwarded if approved. */
  readonly arguments: unknown;
  readonly argumentsDigest: string;
  readonly policyVersion: string;
  readonly rule: string;
  readonly reason: string;
  readonly via: readonly string[];
  readonly requestedAt: string;
  readonly expiresAt: string;
  readonly decidedAt: string | null;
  readonly decidedBy: string | null;
  readonly comment: string | null;
  readonly executedAt: string | null;
  readonly heldBy: string | null;
}

export interface ApprovalListQuery {
  readonly status?: string | undefined;
  readonly limit?: number | undefined;
  readonly cursor?: string | undefined;
}

export interface GrantView {
  readonly id: string;
  readonly label: string;
  readonly servers: readonly string[];
  /** Servers on which the grant has its own policy. */
  readonly ownPolicies: readonly string[];
  readonly state: 'active' | 'revoked' | 'expired';
  readonly createdAt: string;
  readonly expiresAt: string | null;
  readonly revokedAt: string | null;
}

export interface NewGrantInput {
  readonly label: string;
  readonly servers: readonly string[];
  /** Milliseconds from now; or give `expiresAt`. */
  readonly expiresInMs?: number | undefined;
  readonly expiresAt?: number | undefined;
  /** Policy text by server: the grant's own policy there. */
  readonly policies?: Readonly<Record<string, string>> | undefined;
}

export interface ServerView {
  readonly name: string;
  /** `config`: defined in gateway.yaml; `store`: added through the admin API or CLI. */
  readonly source: 'config' | 'store';
  readonly kind: 'stdio' | 'http';
  /** The definition with every credential masked. */
  readonly definition: Readonly<Record<string, unknown>>;
  readonly policy: PolicyInfo;
  readonly createdAt: string | null;
}

export interface PolicyInfo {
  /** `store`: a stored version is in force; `file` or `inline`: gateway.yaml's policy is. */
  readonly source: 'store' | 'file' | 'inline';
  /** The stored version in force, or null when gateway.yaml's policy is. */
  readonly version: number | null;
  /** The policy's content hash, as decisions and denials name it. */
  readonly hash: string;
  /** The policy file, for `file`. */
  readonly path?: string;
}

export interface PolicyView extends PolicyInfo {
  readonly server: string;
  readonly text: string;
}

export interface PolicyVersionView {
  readonly server: string;
  readonly version: number;
  readonly hash: string;
  readonly createdAt: string;
  readonly actor: string;
  readonly note: string | null;
  /** Present when one version is asked for. */
  readonly text?: string;
}

export interface AdminCredentialView {
  readonly id: string;
  readonly label: string;
  readonly role: AdminRole;
  readonly createdAt: string;
  readonly revokedAt: string | null;
}

export class ControlPlane {
  readonly store: ControlStore;
  private readonly opts: ControlPlaneOptions;
  private readonly now: () => number;
  private readonly approvals: ApprovalService;

  constructor(opts: ControlPlaneOptions) {
    this.opts = opts;
    this.store = opts.store;
    this.now = opts.now ?? Date.now;
    this.approvals = opts.approvals ?? new ApprovalService({ store: opts.store, clock: this.now, pollIntervalMs: 0 });
  }

  // --- grants ---

  async listGrants(): Promise<GrantView[]> {
    return (await this.store.listGrants()).map((g) => this.grantView(g));
  }

  async getGrant(idOrLabel: string): Promise<GrantView> {
    return this.grantView(await this.grant(idOrLabel));
  }

  /** Creates a grant; the token is in the answer and nowhere else, ever. */
  async createGrant(actor: Actor, input: NewGrantInput): Promise<{ grant: GrantView; token: string }> {
    if (typeof input.label !== 'string' || !LABEL_PATTERN.test(input.label)) invalid(`label: expected ${LABEL_RULE}`);
    if (!Array.isArray(input.servers) || input.servers.length === 0 || !input.servers.every((s) => typeof s === 'string')) {
      invalid('servers: expected a non-empty array of server names');
    }
    const servers = [...new Set(input.servers)];
    if (this.opts.checkServers !== false) {
      const known = await this.serverNames();
      const unknown = servers.filter((s) => !known.has(s));
      if (unknown.length > 0) invalid(`servers: no server named ${unknown.map((s) => `'${s}'`).join(', ')}`);
    }
    const policies: Record<string, string> = {};
    for (const [server, text] of Object.entries(input.policies ?? {})) {
      if (!servers.includes(server)) invalid(`policies: '${server}' is not one of the grant's servers`);
      if (typeof text !== 'string') invalid(`policies.${server}: expected the policy text`);
      checkPolicy(text, `policies.${server}`);
      policies[server] = text;
    }
    const now = this.now();
    let expiresAt: number | null = null;
    if (input.expiresAt !== undefined && input.expiresInMs !== undefined) invalid('give expiresAt or expiresIn, not both');
    if (input.expiresInMs !== undefined) {
      if (!Number.isInteger(input.expiresInMs) || input.expiresInMs <= 0) invalid('expiresIn: expected a positive duration');
      expiresAt = now + input.expiresInMs;
    } else if (input.expiresAt !== undefined) {
      if (!Number.isInteger(input.expiresAt) || input.expiresAt <= now) invalid('expiresAt: expected a time in the future');
      expiresAt = input.expiresAt;
    }
    const token = newToken();
    let grant: GrantRecord;
    try {
      grant = await this.store.createGrant({ label: input.label, servers, policies, expiresAt }, hashToken(token), now);
    } catch (err) {
      if (err instanceof StoreConflictError) conflict(`a grant labelled '${input.label}' exists already`);
      throw err;
    }
    const view = this.grantView(grant);
    await this.record(actor, 'grant.create', `grant:${grant.label}`, null, view);
    return { grant: view, token };
  }

  /** Revokes every token of the grant at once (every gateway stops accepting them within a second). */
  async revokeGrant(actor: Actor, idOrLabel: string): Promise<GrantView> {
    const before = await this.grant(idOrLabel);
    await this.store.revokeGrant(before.id, this.now());
    const after = await this.grant(before.id);
    await this.record(actor, 'grant.revoke', `grant:${before.label}`, this.grantView(before), this.grantView(after));
    return this.grantView(after);
  }

  /** A new token for the grant; the old one keeps working for `graceMs` (0: stops now). */
  async rotateGrant(actor: Actor, idOrLabel: string, graceMs: number): Promise<{ grant: GrantView; token: string; oldTokenValidUntil: string }> {
    if (!Number.isInteger(graceMs) || graceMs < 0) invalid('grace: expected a duration of zero or more');
    const grant = await this.grant(idOrLabel);
    if (grant.revokedAt !== null) conflict(`the grant '${grant.label}' is revoked: create a new one`);
    const now = this.now();
    const token = newToken();
    if (!(await this.store.rotateToken(grant.id, hashToken(token), now, now + graceMs))) conflict(`the grant '${grant.label}' cannot be rotated`);
    const until = new Date(now + graceMs).toISOString();
    await this.record(actor, 'grant.rotate', `grant:${grant.label}`, { oldTokenValidUntil: null }, { oldTokenValidUntil: until });
    return { grant: this.grantView(grant), token, oldTokenValidUntil: until };
  }

  // --- servers ---

  async listServers(): Promise<ServerView[]> {
    const stored = await this.store.listServers();
    const versions = await this.store.latestPolicyVersions();
    const views: ServerView[] = [];
    for (const s of this.opts.configServers.values()) views.push(await this.configServerView(s, versions.get(s.name)));
    for (const s of stored) {
      if (this.opts.configServers.has(s.name)) continue;
      views.push(await this.storedServerView(s, versions.get(s.name)));
    }
    return views.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async getServer(name: string): Promise<ServerView> {
    const config = this.opts.configServers.get(name);
    if (config !== undefined) return this.configServerView(config, (await this.store.getPolicyVersion(name))?.version);
    const stored = await this.store.getServer(name);
    if (stored === undefined) notFound(`no server named '${name}'`);
    return this.storedServerView(stored, (await this.store.getPolicyVersion(name))?.version);
  }

  /**
   * Registers a server while gateways run. The definition is gateway.yaml's server object
   * without `policy`; it is checked by the same schema, and its `${VAR}` references must resolve
   * here, so a server that could not start is refused now rather than failing later. It is
   * stored with its references, not their values; the policy becomes its version 1.
   */
  async addServer(actor: Actor, name: string, definition: unknown, policyText: string): Promise<ServerView> {
    if (typeof name !== 'string' || !SERVER_NAME_PATTERN.test(name)) invalid('name: expected letters, digits, _ and -, starting with a letter or digit');
    if (!isRecord(definition)) invalid('definition: expected a server object with command or url');
    if (typeof policyText !== 'string') invalid('policy: expected a policy');
    if (this.opts.configServers.has(name)) conflict(`a server named '${name}' is defined in gateway.yaml`);
    const policy = checkPolicy(policyText, 'policy');
    try {
      loadServerDefinition(name, definition, policy, this.opts.env ?? process.env, this.opts.baseDir ?? process.cwd());
    } catch (err) {
      if (err instanceof ConfigError) invalid('definition: the server is not valid', err.issues);
      throw err;
    }
    const now = this.now();
    let stored: StoredServer;
    try {
      stored = await this.store.createServer(name, definition, now);
    } catch (err) {
      if (err instanceof StoreConflictError) conflict(`a server named '${name}' exists already`);
      throw err;
    }
    const version = await this.store.addPolicyVersion(name, { text: policyText, actor: actor.name, note: 'server added' }, now);
    const view = await this.storedServerView(stored, version.version);
    await this.record(actor, 'server.add', `server:${name}`, null, view);
    return view;
  }

  /** Removes a server added at run time; gateways close its sessions and stop it within a second. */
  async removeServer(actor: Actor, name: string): Promise<void> {
    if (this.opts.configServers.has(name)) conflict(`the server '${name}' is defined in gateway.yaml: remove it there`);
    const before = await this.getServer(name);
    await this.store.deleteServer(name);
    await this.record(actor, 'server.remove', `server:${name}`, before, null);
  }

  // --- policies ---

  /** The policy in force for the server, with its text. */
  async getPolicy(server: string): Promise<PolicyView> {
    const stored = await this.store.getPolicyVersion(server);
    if (stored !== undefined && (await this.serverNames()).has(server)) {
      return { server, ...this.storedPolicyInfo(stored), text: stored.text };
    }
    const config = this.opts.configServers.get(server);
    if (config === undefined) notFound(`no server named '${server}'`);
    return { server, ...configPolicyInfo(config.policy), text: configPolicyText(config.policy) };
  }

  async listPolicyVersions(server: string): Promise<PolicyVersionView[]> {
    await this.requireServer(server);
    return (await this.store.listPolicyVersions(server)).map((v) => this.versionView(v, false));
  }

  async getPolicyVersion(server: string, version: number): Promise<PolicyVersionView> {
    await this.requireServer(server);
    const v = Number.isInteger(version) ? await this.store.getPolicyVersion(server, version) : undefined;
    if (v === undefined) notFound(`the server '${server}' has no policy version ${version}`);
    return this.versionView(v, true);
  }

  /** Stores a new policy version for the server; every gateway puts it in force within a second. */
  async putPolicy(actor: Actor, server: string, text: string, note?: string | null): Promise<PolicyView> {
    await this.requireServer(server);
    if (typeof text !== 'string') invalid('policy: expected a policy');
    if (note !== undefined && note !== null && typeof note !== 'string') invalid('note: expected a string');
    checkPolicy(text, 'policy');
    return this.storePolicy(actor, 'policy.update', server, text, note ?? null);
  }

  /** Puts an earlier version back in force, as a new version (history is never rewritten). */
  async rollbackPolicy(actor: Actor, server: string, version: number): Promise<PolicyView> {
    const target = await this.getPolicyVersion(server, version);
    return this.storePolicy(actor, 'policy.rollback', server, target.text!, `rollback to version ${version}`);
  }

  /**
   * For a server of gateway.yaml: forgets its stored versions, so its policy file (or inline
   * policy) is in force again and edits of the file apply again.
   */
  async resetPolicy(actor: Actor, server: string): Promise<PolicyView> {
    if (!this.opts.configServers.has(server)) {
      await this.requireServer(server);
      conflict(`the server '${server}' was added at run time: its policy lives only in the store`);
    }
    const before = await this.getPolicy(server);
    await this.store.deletePolicyVersions(server);
    const after = await this.getPolicy(server);
    await this.record(actor, 'policy.reset', `server:${server}`, before, after);
    return after;
  }

  // --- admin credentials and the admin audit stream ---

  async listAdmins(): Promise<AdminCredentialView[]> {
    return (await this.store.listAdminCredentials()).map(adminView);
  }

  async createAdmin(actor: Actor, label: string, role: string): Promise<{ admin: AdminCredentialView; token: string }> {
    if (typeof label !== 'string' || !LABEL_PATTERN.test(label)) invalid(`label: expected ${LABEL_RULE}`);
    if (!(ADMIN_ROLES as readonly string[]).includes(role)) invalid(`role: expected ${ADMIN_ROLES.join('|')}`);
    const token = newAdminToken();
    let record: AdminCredentialRecord;
    try {
      record = await this.store.createAdminCredential({ label, role: role as AdminRole }, hashToken(token), this.now());
    } catch (err) {
      if (err instanceof StoreConflictError) conflict(`an admin credential labelled '${label}' exists already`);
      throw err;
    }
    const view = adminView(record);
    await this.record(actor, 'admin.create', `admin:${label}`, null, view);
    return { admin: view, token };
  }

  async revokeAdmin(actor: Actor, idOrLabel: string): Promise<AdminCredentialView> {
    const all = await this.store.listAdminCredentials();
    const before = all.find((a) => a.id === idOrLabel) ?? all.find((a) => a.label === idOrLabel);
    if (before === undefined) notFound(`no admin credential '${idOrLabel}'`);
    await this.store.revokeAdminCredential(before.id, this.now());
    const after = (await this.store.listAdminCredentials()).find((a) => a.id === before.id)!;
    await this.record(actor, 'admin.revoke', `admin:${before.label}`, adminView(before), adminView(after));
    return adminView(after);
  }

  async adminEvents(query: AdminEventQuery = {}): Promise<AdminEvent[]> {
    return this.store.listAdminEvents(query);
  }

  // --- human approvals ---
  //
  // Reads sweep expired approvals first (the same sweep every gateway runs on its poll), so a
  // record read here is never `pending` past its expiry, even with no gateway running.

  /** Approvals newest first; `next` is the cursor of the following page, null on the last. */
  async listApprovals(query: ApprovalListQuery = {}): Promise<{ approvals: ApprovalView[]; next: string | null }> {
    const { status, cursor } = query;
    if (status !== undefined && !APPROVAL_STATUSES.includes(status as ApprovalStatus)) invalid(`status: expected one of ${APPROVAL_STATUSES.join(', ')}`);
    const limit = query.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) invalid('limit: expected a whole number from 1 to 1000');
    await this.approvals.expireDue();
    // One more than the page, to tell whether another page follows (the store's largest page is
    // 1000: a page of 1000 always names a next cursor, which may lead to an empty page).
    const records = await this.approvals.list({
      ...(status !== undefined ? { status: status as ApprovalStatus } : {}),
      ...(cursor !== undefined ? { cursor } : {}),
      limit: Math.min(limit + 1, 1000),
    });
    const page = records.slice(0, limit);
    return { approvals: page.map(approvalView), next: records.length > limit || page.length === 1000 ? page[page.length - 1]!.id : null };
  }

  async getApproval(id: string): Promise<ApprovalView> {
    await this.approvals.expireDue();
    return approvalView(await this.approval(id));
  }

  /**
   * Approves the held call `id`, as `actor`: its call is forwarded, once. A decision already made
   * (or an expiry) wins: 409 with the record as it stands.
   */
  async approve(actor: Actor, id: string, comment?: string | null): Promise<ApprovalView> {
    if (comment !== undefined && comment !== null && typeof comment !== 'string') invalid('comment: expected a string');
    await this.approval(id);
    const change = await this.approvals.approve(id, actor.name, comment === '' ? null : (comment ?? null));
    return this.decided(actor, 'approval.approve', change);
  }

  /** Denies the held call `id`, as `actor`, saying why: the agent reads the approver and the reason. */
  async deny(actor: Actor, id: string, reason: unknown): Promise<ApprovalView> {
    if (typeof reason !== 'string' || reason.trim() === '') invalid('reason: a denial says why, and the agent reads it (a non-empty string)');
    await this.approval(id);
    const change = await this.approvals.deny(id, actor.name, reason.trim());
    return this.decided(actor, 'approval.deny', change);
  }

  private async decided(actor: Actor, action: string, change: ApprovalChange): Promise<ApprovalView> {
    const record = change.approval;
    if (record === undefined) notFound('no such approval');
    const view = approvalView(record);
    if (!change.ok) {
      const how =
        record.status === 'expired'
          ? `expired at ${view.expiresAt}, before this decision`
          : record.status === 'cancelled'
            ? `was withdrawn at ${view.decidedAt} (${record.comment ?? 'its caller went away'})`
            : `was already ${record.status === 'executed' ? 'approved' : record.status} by ${record.decidedBy ?? 'someone'} at ${view.decidedAt}`;
      throw new PolicyLayerError(ErrorCodes.CONFLICT, `approval ${record.id} ${how}`, { approval: view });
    }
    const after = { status: record.status, server: record.server, tool: record.tool, grantLabel: record.grantLabel, argumentsDigest: record.argumentsDigest, decidedBy: record.decidedBy, comment: record.comment };
    await this.record(actor, action, `approval:${record.id}`, { status: 'pending' }, after);
    return view;
  }

  private async approval(id: string): Promise<ApprovalRecord> {
    const found = typeof id === 'string' && id !== '' ? await this.approvals.get(id) : undefined;
    if (found === undefined) notFound(`no approval '${id}'`);
    return found;
  }

  // --- internals ---

  private async storePolicy(actor: Actor, action: string, server: string, text: string, note: string | null): Promise<PolicyView> {
    const before = await this.getPolicy(server);
    await this.store.addPolicyVersion(server, { text, actor: actor.name, note }, this.now());
    const after = await this.getPolicy(server);
    await this.record(actor, action, `server:${server}`, before, after);
    return after;
  }

  private async record(actor: Actor, action: string, target: string, before: unknown, after: unknown): Promise<void> {
    await this.store.appendAdminEvent({ at: this.now(), actor: actor.name, role: actor.role, action, target, before, after });
  }

  private async grant(idOrLabel: string): Promise<GrantRecord> {
    const g = await this.store.getGrant(idOrLabel);
    if (g === undefined) notFound(`no grant '${idOrLabel}'`);
    return g;
  }

  private async serverNames(): Promise<Set<string>> {
    const names = new Set(this.opts.configServers.keys());
    for (const s of await this.store.listServers()) names.add(s.name);
    return names;
  }

  private async requireServer(name: string): Promise<void> {
    if (!(await this.serverNames()).has(name)) notFound(`no server named '${name}'`);
  }

  private grantView(g: GrantRecord): GrantView {
    const now = this.now();
    const state = g.revokedAt !== null ? 'revoked' : g.expiresAt !== null && g.expiresAt <= now ? 'expired' : 'active';
    return {
      id: g.id,
      label: g.label,
      servers: g.servers,
      ownPolicies: Object.keys(g.policies).sort(),
      state,
      createdAt: iso(g.createdAt),
      expiresAt: g.expiresAt === null ? null : iso(g.expiresAt),
      revokedAt: g.revokedAt === null ? null : iso(g.revokedAt),
    };
  }

  private async configServerView(s: ServerConfig, storedVersion: number | undefined): Promise<ServerView> {
    const policy = storedVersion === undefined ? configPolicyInfo(s.policy) : this.storedPolicyInfo((await this.store.getPolicyVersion(s.name))!);
    return { name: s.name, source: 'config', kind: s.kind, definition: maskConfigServer(s, this.opts.configSecrets ?? []), policy, createdAt: null };
  }

  private async storedServerView(s: StoredServer, version: number | undefined): Promise<ServerView> {
    const v = version === undefined ? undefined : await this.store.getPolicyVersion(s.name, version);
    const policy: PolicyInfo = v === undefined ? { source: 'store', version: null, hash: '' } : this.storedPolicyInfo(v);
    const kind = typeof s.definition['url'] === 'string' ? 'http' : 'stdio';
    return { name: s.name, source: 'store', kind, definition: maskDefinition(s.definition), policy, createdAt: iso(s.createdAt) };
  }

  private storedPolicyInfo(v: PolicyVersion): PolicyInfo {
    return { source: 'store', version: v.version, hash: policyHash(v.text) };
  }

  private versionView(v: PolicyVersion, withText: boolean): PolicyVersionView {
    const view: PolicyVersionView = {
      server: v.server,
      version: v.version,
      hash: policyHash(v.text),
      createdAt: iso(v.createdAt),
      actor: v.actor,
      note: v.note,
    };
    return withText ? { ...view, text: v.text } : view;
  }
}

/** The label a stored policy version compiles under: where a denial or `explain` says it came from. */
export function storedPolicySource(server: string, version: number): string {
  return `store:${server}@v${version}`;
}

/** Compiles a stored version's text; stored texts were checked before they were written. */
export function compileStoredPolicy(v: Pick<PolicyVersion, 'server' | 'version' | 'text'>): CompiledPolicy {
  return parsePolicy(v.text, storedPolicySource(v.server, v.version));
}

function policyHash(text: string): string {
  try {
    return parsePolicy(text, 'stored').version;
  } catch {
    // A version this build cannot read (written by a newer one): listed, never put in force.
    return 'unreadable';
  }
}

function configPolicyInfo(p: CompiledPolicy): PolicyInfo {
  return p.source === '<inline>' ? { source: 'inline', version: null, hash: p.version } : { source: 'file', version: null, hash: p.version, path: p.source };
}

function configPolicyText(p: CompiledPolicy): string {
  if (p.source !== '<inline>') {
    try {
      return readFileSync(p.source, 'utf8');
    } catch {
      // The file went away since it loaded: the policy in force is still the one it held.
    }
  }
  return `${JSON.stringify(p.document, null, 2)}\n`;
}

function checkPolicy(text: string, field: string): CompiledPolicy {
  try {
    return parsePolicy(text, field);
  } catch (err) {
    if (err instanceof ConfigError) invalid(`${field}: the policy is not valid`, err.issues);
    throw err;
  }
}

/** A stored definition as an API may show it: the values of headers, env and OAuth secrets masked. */
export function maskDefinition(d: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...d };
  for (const key of ['headers', 'env'] as const) {
    const map = d[key];
    if (isRecord(map)) out[key] = Object.fromEntries(Object.keys(map).map((k) => [k, MASK]));
  }
  const oauth = d['oauth'];
  if (isRecord(oauth)) out['oauth'] = { ...oauth, ...('client_secret' in oauth ? { client_secret: MASK } : {}) };
  if (typeof d['url'] === 'string') out['url'] = maskUrl(d['url'], []);
  return out;
}

function maskConfigServer(s: ServerConfig, secrets: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (s.kind === 'stdio') {
    out['command'] = s.command?.map((part) => maskText(part, secrets));
    if (s.env !== undefined) out['env'] = Object.fromEntries(Object.keys(s.env).map((k) => [k, MASK]));
    if (s.cwd !== undefined) out['cwd'] = s.cwd;
    if (s.isolation !== undefined) out['isolation'] = s.isolation;
  } else {
    out['url'] = maskUrl(s.url!, secrets);
    out['transport'] = s.transport;
    if (s.headers !== undefined) out['headers'] = Object.fromEntries(Object.keys(s.headers).map((k) => [k, MASK]));
    const oauth = (s as { oauth?: Record<string, unknown> }).oauth;
    if (isRecord(oauth)) out['oauth'] = maskOauth(oauth, secrets);
  }
  out['timeout'] = `${s.timeoutMs / 1000}s`;
  return out;
}

function maskOauth(oauth: Record<string, unknown>, secrets: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(oauth)) {
    if (/secret/i.test(k)) out[k] = MASK;
    else out[k] = typeof v === 'string' ? maskText(v, secrets) : v;
  }
  return out;
}

/** A URL without its password, and without any known secret (an API key in its query). */
function maskUrl(url: string, secrets: readonly string[]): string {
  let shown = url;
  try {
    const u = new URL(url);
    if (u.password !== '') {
      u.password = MASK;
      shown = u.toString();
    }
  } catch {
    // Not a URL yet (a stored one may hold ${…} references): shown as written.
  }
  return maskText(shown, secrets);
}

function maskText(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 4 && out.includes(s)) out = out.split(s).join(MASK);
  return out;
}

function approvalView(a: ApprovalRecord): ApprovalView {
  let args: unknown;
  try {
    args = JSON.parse(a.arguments);
  } catch {
    args = a.arguments;
  }
  return {
    id: a.id,
    status: a.status,
    grantId: a.grantId,
    grantLabel: a.grantLabel,
    server: a.server,
    tool: a.tool,
    arguments: args,
    argumentsDigest: a.argumentsDigest,
    policyVersion: a.policyVersion,
    rule: a.rule,
    reason: a.reason,
    via: a.via,
    requestedAt: iso(a.requestedAt),
    expiresAt: iso(a.expiresAt),
    decidedAt: a.decidedAt === null ? null : iso(a.decidedAt),
    decidedBy: a.decidedBy,
    comment: a.comment,
    executedAt: a.executedAt === null ? null : iso(a.executedAt),
    heldBy: a.heldBy,
  };
}

function adminView(a: AdminCredentialRecord): AdminCredentialView {
  return { id: a.id, label: a.label, role: a.role, createdAt: iso(a.createdAt), revokedAt: a.revokedAt === null ? null : iso(a.revokedAt) };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(message: string, problems?: readonly string[]): never {
  throw new PolicyLayerError(ErrorCodes.INVALID_REQUEST, message, problems === undefined ? undefined : { problems });
}

function notFound(message: string): never {
  throw new PolicyLayerError(ErrorCodes.NOT_FOUND, message);
}

function conflict(message: string): never {
  throw new PolicyLayerError(ErrorCodes.CONFLICT, message);
}
