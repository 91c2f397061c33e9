/**
 * Which channels ask a person to decide a held call, from the rule's `approval.via` and what this
 * gateway and this client can do. The result is recorded as the approval's `via`, so the record
 * says how the person was actually asked.
 *
 * - `dashboard` is always there: the admin API and the CLI can decide every approval, whatever
 *   `via` says (it is the operator's way out when every other channel is silent).
 * - `webhook` when webhooks are configured and the rule's `via` names `webhook` or says nothing:
 *   a gateway with webhooks posts every approval unless a rule opts out (`via: dashboard`, or a
 *   list without `webhook`).
 * - `elicitation` only when the rule names it (it lets the calling user approve their own
 *   agent's call, which the policy must choose) and the client can be asked (it declared the form
 *   mode of `elicitation` at initialize, on a session of its own).
 */
import type { ApprovalChannel } from '../policy/types.js';

/** What can carry the question for one held call. */
export interface AvailableChannels {
  /** The gateway has webhooks configured (`approvals.webhooks`). */
  readonly webhook: boolean;
  /** The calling client can be sent `elicitation/create` on the held call's stream. */
  readonly elicitation: boolean;
}

/** The channels that ask a person about one held call; `dashboard` first, always. */
export function approvalChannels(via: readonly ApprovalChannel[] | undefined, available: AvailableChannels): ApprovalChannel[] {
  const channels: ApprovalChannel[] = ['dashboard'];
  if (available.webhook && (via === undefined || via.includes('webhook'))) channels.push('webhook');
  if (available.elicitation && via?.includes('elicitation') === true) channels.push('elicitation');
  return channels;
}

/** The first session-era revision with elicitation (2025-06-18); revisions are dates, so they compare as text. */
const FIRST_ELICITATION_VERSION = '2025-06-18';

/**
 * Whether a client that declared `capabilities` at initialize, on a session of `protocolVersion`,
 * can be asked a form question: `elicitation: {}` (form, the only mode before 2025-11-25) or
 * `elicitation: { form: {} }`; a client declaring only `{ url: {} }` cannot.
 */
export function canElicitForm(capabilities: Readonly<Record<string, unknown>> | undefined, protocolVersion: string): boolean {
  if (protocolVersion < FIRST_ELICITATION_VERSION) return false;
  const e = capabilities?.elicitation;
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return false;
  const modes = e as Record<string, unknown>;
  return modes.form !== undefined || modes.url === undefined;
}
