/**
 * The MCP attack patterns PolicyLayer knows by name: data only. Each has a stable id (what links,
 * the catalogue's tool pages and, later, the attack database's checks and policies refer to), a
 * name, a one-line summary, and the kinds of tool access it abuses, in the risk classifier's own
 * terms (categories and flags, see docs/risk.md), so a tool's page can list the patterns that
 * abuse exactly what that tool can do.
 *
 * Ids are never renamed or reused: add a pattern, or retire one by leaving it here unused.
 */
import type { Category, Flag } from '../risk/types.js';

export interface AttackPattern {
  /** Stable, lowercase, hyphenated: `rug-pull`. */
  readonly id: string;
  readonly name: string;
  /** One line: what the attacker does and what it gets them. */
  readonly summary: string;
  /** What access it abuses: a tool of one of these categories, or with one of these flags. */
  readonly abuses: {
    readonly categories: readonly Category[];
    readonly flags: readonly Flag[];
    /**
     * It works through the definition a server lists rather than through what the tool does, so
     * every tool, whatever its category, is a way in.
     */
    readonly anyTool: boolean;
  };
}

export const ATTACK_PATTERNS: readonly AttackPattern[] = deepFreeze([
  {
    id: 'tool-poisoning',
    name: 'Tool poisoning',
    summary: "Instructions hidden in a tool's description or input schema steer the agent into actions the user never asked for.",
    abuses: { categories: [], flags: [], anyTool: true },
  },
  {
    id: 'rug-pull',
    name: 'Rug pull (definition change)',
    summary: 'A server changes a tool\'s definition after it was reviewed and trusted, turning an approved tool into a malicious one.',
    abuses: { categories: [], flags: [], anyTool: true },
  },
  {
    id: 'tool-shadowing',
    name: 'Tool shadowing',
    summary: "One server's tool takes another server's tool name, or describes how the other must be used, to intercept or redirect its calls.",
    abuses: { categories: [], flags: [], anyTool: true },
  },
  {
    id: 'data-exfiltration',
    name: 'Data exfiltration via egress sinks',
    summary: 'Private data the agent can read is sent out through a tool that posts, mails, uploads or fetches a URL the attacker chose.',
    abuses: { categories: [], flags: ['egress_sink', 'private_data'], anyTool: false },
  },
  {
    id: 'prompt-injection',
    name: 'Prompt injection via untrusted content',
    summary: 'Text someone else wrote (a web page, an email, an issue) reaches the agent through a tool result and is obeyed as instructions.',
    abuses: { categories: [], flags: ['untrusted_content'], anyTool: false },
  },
  {
    id: 'command-injection',
    name: 'Command injection',
    summary: 'Arguments the agent was talked into carry shell commands, code or SQL that the tool runs as given.',
    abuses: { categories: ['Execute'], flags: [], anyTool: false },
  },
  {
    id: 'credential-theft',
    name: 'Credential theft',
    summary: 'The agent is led to read keys, tokens or passwords (environment, config files, secret stores) and hand them over.',
    abuses: { categories: ['Execute'], flags: ['credential'], anyTool: false },
  },
  {
    id: 'runaway-loop',
    name: 'Runaway loops and resource exhaustion',
    summary: 'An agent stuck in a loop, or pushed into one, calls a tool hundreds of times: bulk changes, spawned processes, API bills.',
    abuses: { categories: ['Write', 'Execute', 'Financial', 'Destructive', 'Unknown'], flags: [], anyTool: false },
  },
  {
    id: 'unauthorised-transaction',
    name: 'Unauthorised financial transactions',
    summary: 'The agent is led to pay, transfer, trade or refund without a person agreeing to that amount or that recipient.',
    abuses: { categories: ['Financial'], flags: [], anyTool: false },
  },
  {
    id: 'destructive-bulk-operation',
    name: 'Destructive bulk operations',
    summary: 'One call, mistaken or induced, deletes or overwrites data for good: records, files, a database, an account.',
    abuses: { categories: ['Destructive'], flags: [], anyTool: false },
  },
  {
    id: 'path-traversal',
    name: 'Path traversal',
    summary: 'A path such as ../../.ssh/id_rsa, or a symlink, takes a file tool outside the folder it was meant to stay in.',
    abuses: { categories: [], flags: ['filesystem'], anyTool: false },
  },
]);

/** The pattern with this id, or undefined. */
export function attackPattern(id: string): AttackPattern | undefined {
  return ATTACK_PATTERNS.find((p) => p.id === id);
}

/** Why a pattern applies to a tool: the category or flag it abuses, or every tool. */
export interface AttackMatch {
  readonly pattern: AttackPattern;
  readonly because: { readonly category: Category } | { readonly flag: Flag } | { readonly anyTool: true };
}

/**
 * The patterns that abuse the access a tool of `category` with `flags` gives an agent: those
 * matching its category or a flag first (in the table's order), then those that work through any
 * tool's definition.
 */
export function attacksOn(category: Category, flags: readonly Flag[]): AttackMatch[] {
  const specific: AttackMatch[] = [];
  const general: AttackMatch[] = [];
  for (const pattern of ATTACK_PATTERNS) {
    const flag = pattern.abuses.flags.find((f) => flags.includes(f));
    if (pattern.abuses.categories.includes(category)) specific.push({ pattern, because: { category } });
    else if (flag !== undefined) specific.push({ pattern, because: { flag } });
    else if (pattern.abuses.anyTool) general.push({ pattern, because: { anyTool: true } });
  }
  return [...specific, ...general];
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}
