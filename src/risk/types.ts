// The risk classifier's contract: what it reads (a tool definition as a server lists it, and
// what is known of that server) and what it answers (a Classification with its reasons).

export const CATEGORIES = ['Read', 'Write', 'Execute', 'Financial', 'Destructive', 'Unknown'] as const;
export type Category = (typeof CATEGORIES)[number];

export const SEVERITIES = ['Low', 'Medium', 'High', 'Critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export const FLAGS = ['private_data', 'untrusted_content', 'egress_sink', 'credential', 'filesystem'] as const;
export type Flag = (typeof FLAGS)[number];

/** MCP tool annotations (spec 2025-03-26 and later). All are hints; see how they are treated in docs/risk.md. */
export interface ToolAnnotations {
  readonly title?: string;
  readonly readOnlyHint?: boolean;
  readonly destructiveHint?: boolean;
  readonly idempotentHint?: boolean;
  readonly openWorldHint?: boolean;
}

/** A tool as `tools/list` returns it. Only the fields the classifier reads are typed. */
export interface ToolDefinition {
  readonly name: string;
  readonly title?: string;
  readonly description?: string;
  readonly inputSchema?: unknown;
  readonly annotations?: ToolAnnotations;
}

/** What is known of the server that lists the tool. */
export interface ServerContext {
  /** The server's name (serverInfo.title or name, or the gateway's name for it). */
  readonly name?: string;
  /** The server's own description of itself (serverInfo.description, package or catalogue text). */
  readonly description?: string;
  /** The `instructions` of its initialize result. */
  readonly instructions?: string;
  /**
   * Marked trusted by the operator. Only then may the server's annotations lower a verdict
   * (MCP spec: clients must consider annotations untrusted unless they come from a trusted server).
   */
  readonly trusted?: boolean;
  /** Every tool the server lists (the classified one may be among them): the sibling-tools signal. */
  readonly tools?: readonly ToolDefinition[];
}

/** Where a reason's evidence was read. */
export type SignalSource = 'name' | 'description' | 'parameter' | 'annotation' | 'server' | 'siblings';

export interface Reason {
  readonly source: SignalSource;
  /** The evidence in words, naming the signal: `name verb "delete"`, `parameter "amount" (number)`. */
  readonly text: string;
  /** The category this evidence speaks for, when it speaks for one. */
  readonly category?: Category;
  /** The flag this evidence sets, when it sets one. */
  readonly flag?: Flag;
  /** The severity this evidence raises the verdict to, when it raises it. */
  readonly severity?: Severity;
}

export interface Classification {
  readonly tool: string;
  readonly category: Category;
  /** Unknown is reported as High until a person reviews the tool. */
  readonly severity: Severity;
  /** 0–1: how clearly the signals agree. 0 for Unknown. */
  readonly confidence: number;
  readonly flags: readonly Flag[];
  /** Every signal that was used, the deciding ones first. */
  readonly reasons: readonly Reason[];
  /** `sha256:` of the canonical JSON of everything the verdict was computed from (the cache key). */
  readonly hash: string;
}
