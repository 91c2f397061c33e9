/**
 * A catalogue tool's page: what the tool does, its risk verdict with the reasons, the rule
 * recommended for it as a whole policy.json, the attack patterns that abuse its kind of access,
 * and a policy for each way to control it (deny, rate-limit, require approval). Pure: the caller
 * reads the tool from the store or the shipped catalogue; this only composes, and renders the
 * page as Markdown or plain text.
 */
import { attacksOn } from '../attacks/patterns.js';
import type { PolicyDocument, ToolRuleDocument } from '../policy/index.js';
import { DEFAULT_RECOMMEND, buildRecommendedPolicy, topReasons } from '../risk/index.js';
import type { Category, Classification, Flag, Reason, SignalSource, ToolDefinition } from '../risk/index.js';
import type { CatalogTarget } from '../store/store.js';

/** The server a page is about, as the catalogue knows it. */
export interface PageServer {
  /** What `catalog show` takes: `everything`. */
  readonly key: string;
  /** `store`: scanned here; `shipped`: from the catalogue that comes with PolicyLayer. */
  readonly source: 'store' | 'shipped';
  /** serverInfo.name. */
  readonly name: string;
  /** What people call it: the name it was scanned under, its title, or its name. */
  readonly displayName: string;
  readonly version: string | null;
  /** The npm package (`name@version`) a shipped entry was scanned from. */
  readonly package: string | null;
  readonly target: CatalogTarget;
}

/** The tool, as the catalogue keeps it. */
export interface PageTool {
  readonly definition: Readonly<Record<string, unknown>>;
  readonly definitionHash: string;
  readonly classification: Classification;
  readonly classifierVersion: number;
  /** ms since the epoch; null when not known (a shipped entry knows only when it was scanned). */
  readonly firstSeen: number | null;
  readonly lastSeen: number | null;
  readonly removedAt: number | null;
}

export interface PageReason {
  readonly source: SignalSource;
  /** Where the evidence was read, in words: `the tool's name`, `the server's description`. */
  readonly from: string;
  readonly text: string;
  readonly category?: Category;
  readonly flag?: Flag;
  readonly severity?: string;
}

export interface PageAttack {
  readonly id: string;
  readonly name: string;
  readonly summary: string;
  /** Why it applies to this tool: `Execute tools`, `flag egress_sink`, `any tool a server lists`. */
  readonly because: string;
}

export interface PageControl {
  /** What the rule does, in a sentence or two. */
  readonly text: string;
  /** A whole policy.json holding just this rule. */
  readonly policy: PolicyDocument;
}

export interface ToolPage {
  readonly server: PageServer;
  readonly tool: string;
  readonly title: string | null;
  /** `High Risk`. */
  readonly verdict: string;
  readonly category: Category;
  readonly severity: Classification['severity'];
  readonly confidence: number;
  readonly flags: readonly Flag[];
  /** The description as the server gives it; empty when it gives none. */
  readonly description: string;
  /** What it does: the description, or, without one, what the classifier read from elsewhere. */
  readonly whatItDoes: string;
  readonly whatItDoesFrom: 'description' | 'classifier';
  /** What its category means it can do: `can trigger actions or run processes`. */
  readonly categoryMeaning: string;
  /** The deciding reason first, then the one that set the severity, then the rest. */
  readonly reasons: readonly PageReason[];
  readonly recommendation: {
    /** What the rule does and why, in a sentence. */
    readonly summary: string;
    /** Destructive tools are hidden rather than given a rule. */
    readonly hide: boolean;
    /** `{"version":"1","default":"deny","tools":{…}}` with this tool's rule alone. */
    readonly policy: PolicyDocument;
  };
  readonly attackPatterns: readonly PageAttack[];
  readonly controls: {
    readonly deny: PageControl;
    readonly rateLimit: PageControl;
    readonly requireApproval: PageControl;
  };
  /** Things to know before using the snippets (a name a policy would read as a glob). */
  readonly notes: readonly string[];
  readonly definition: Readonly<Record<string, unknown>>;
  readonly definitionHash: string;
  readonly classifierVersion: number;
  /** ISO 8601, or null when not known. */
  readonly firstSeen: string | null;
  readonly lastSeen: string | null;
  /** When a scan stopped listing the tool; null while it is listed. */
  readonly removedAt: string | null;
}

const MEANING: Readonly<Record<Category, string>> = {
  Read: 'can read data without changing anything',
  Write: 'can create or modify data',
  Execute: 'can trigger actions or run processes (commands, code, sessions, a live browser or device)',
  Financial: 'can move money or value',
  Destructive: 'can delete or overwrite data for good',
  Unknown: 'does something no signal makes clear',
};

const FROM: Readonly<Record<SignalSource, string>> = {
  name: "the tool's name",
  description: 'its description',
  parameter: 'its parameters',
  annotation: 'its annotations',
  server: "the server's description",
  siblings: "the server's other tools",
};

/** Calls a minute the rate-limit snippet allows, by category: what `scan` recommends where it limits, more for reads. */
function perMinute(category: Category): number {
  if (category === 'Write') return DEFAULT_RECOMMEND.writePerMinute;
  if (category === 'Read') return 60;
  return DEFAULT_RECOMMEND.executePerMinute;
}

const policyOf = (tool: string, rule: ToolRuleDocument): PolicyDocument => ({ version: '1', default: 'deny', tools: { [tool]: rule } }) as PolicyDocument;

/** Builds the page of one tool of one server. */
export function toolPage(server: PageServer, tool: PageTool): ToolPage {
  const c = tool.classification;
  const name = c.tool;
  const def = tool.definition as ToolDefinition & Record<string, unknown>;
  const description = typeof def.description === 'string' ? def.description.trim() : '';
  const reasons = topReasons(c).map((r) => pageReason(r));
  const recommended = buildRecommendedPolicy([{ classification: c, tool: def }]);
  const rec = recommended.recommendations[0]!;
  const glob = /[*?]/.test(name);
  const notes: string[] = [];
  if (glob) {
    notes.push(`the name ${JSON.stringify(name)} contains * or ?, which a policy reads as a glob: a rule under this key would match other tools too, so the recommended policy leaves it out (default: deny refuses it)`);
  }
  const max = perMinute(c.category);
  return {
    server,
    tool: name,
    title: typeof def.title === 'string' ? def.title : typeof def.annotations?.title === 'string' ? def.annotations.title : null,
    verdict: `${c.severity} Risk`,
    category: c.category,
    severity: c.severity,
    confidence: c.confidence,
    flags: c.flags,
    description,
    whatItDoes: description !== '' ? description : explainWithoutDescription(name, c, server),
    whatItDoesFrom: description !== '' ? 'description' : 'classifier',
    categoryMeaning: MEANING[c.category],
    reasons,
    recommendation: {
      summary: sentence(rec.why),
      hide: rec.hide,
      policy: recommended.document,
    },
    attackPatterns: attacksOn(c.category, c.flags).map((m) => ({
      id: m.pattern.id,
      name: m.pattern.name,
      summary: m.pattern.summary,
      because: 'category' in m.because ? `${m.because.category} tools` : 'flag' in m.because ? `flag ${m.because.flag}` : 'any tool a server lists',
    })),
    controls: {
      deny: {
        text: `The call never reaches ${server.displayName}: the agent gets a tool result saying it was blocked by policy, with your reason. With default: deny, leaving ${name} out of the policy refuses it too (without your reason); listing it under hide also removes it from tools/list.`,
        policy: policyOf(name, { action: 'deny', reason: `${name} is not available to agents here` }),
      },
      rateLimit: {
        text: `At most ${max} calls a minute per grant (agent identity); the next is refused with the time to retry. scope: session counts per session, server counts every caller together, args.<name> counts per argument value.`,
        policy: policyOf(name, { limits: [{ counter: `${name}_rate`, window: 'minute', max, scope: 'grant' }] }),
      },
      requireApproval: {
        text: `Each call waits for a person to approve it (dashboard, CLI, webhook, or the user's own client); approved, exactly that call is forwarded once; unanswered, it is refused after the timeout.`,
        policy: policyOf(name, { action: 'require_approval', reason: `a person approves each call to ${name}`, approval: { timeout: DEFAULT_RECOMMEND.approvalTimeout } }),
      },
    },
    notes,
    definition: tool.definition,
    definitionHash: tool.definitionHash,
    classifierVersion: tool.classifierVersion,
    firstSeen: iso(tool.firstSeen),
    lastSeen: iso(tool.lastSeen),
    removedAt: iso(tool.removedAt),
  };
}

function pageReason(r: Reason): PageReason {
  return {
    source: r.source,
    from: FROM[r.source],
    text: r.text,
    ...(r.category !== undefined ? { category: r.category } : {}),
    ...(r.flag !== undefined ? { flag: r.flag } : {}),
    ...(r.severity !== undefined ? { severity: r.severity } : {}),
  };
}

/**
 * What a tool without a description does, from the signals that decided its category: "Although
 * the description is empty, the tool's name and the server's description make clear what it
 * does: …". Unknown says that nothing does.
 */
function explainWithoutDescription(name: string, c: Classification, server: PageServer): string {
  if (c.category === 'Unknown') {
    return `${name} has no description, and neither its name, its parameters nor ${server.displayName}'s other tools say what it does. Until a person reviews it, treat it as ${c.severity} risk and hold each call for approval.`;
  }
  const deciding = c.reasons.filter((r) => r.category === c.category);
  const context = c.reasons.filter((r) => r.category === undefined && r.flag === undefined && r.severity === undefined && (r.source === 'server' || r.source === 'siblings'));
  let evidence = deciding.map((r) => r.text).join('; ');
  for (const r of context) {
    // `server description: "terminal": server runs terminal sessions`: where it was read, then what
    // it means; the meaning is often in the deciding reason already, and is not said twice.
    const at = r.text.indexOf(': server ');
    const where = at > 0 ? r.text.slice(0, at) : r.text;
    const meaning = at > 0 ? r.text.slice(at + 2) : '';
    evidence += meaning !== '' && evidence.includes(meaning) ? ` (${where})` : `${evidence === '' ? '' : '; '}${r.text}`;
  }
  const used = [...deciding, ...context];
  const sources: string[] = [];
  if (used.some((r) => r.source === 'name' || r.text.startsWith('name '))) sources.push('its name');
  if (used.some((r) => r.source === 'parameter')) sources.push('its parameters');
  if (used.some((r) => r.source === 'annotation')) sources.push('its annotations');
  if (used.some((r) => r.source === 'server' || r.source === 'siblings')) sources.push('the server context');
  const plural = sources.length > 1 || sources[0] === 'its parameters' || sources[0] === 'its annotations';
  return (
    `Although the description is empty, ${listText(sources)} make${plural ? '' : 's'} clear what ${name} does: ${evidence}. ` +
    `That makes it ${an(c.category)} tool on ${server.displayName}: it ${MEANING[c.category]}.`
  );
}

/** `an Execute`, `a Write`. */
function an(word: string): string {
  return `${/^[AEIOU]/i.test(word) ? 'an' : 'a'} ${word}`;
}

function listText(items: readonly string[]): string {
  if (items.length <= 1) return items[0] ?? 'its signals';
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

function sentence(s: string): string {
  const t = s.trim();
  return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

// ---------------------------------------------------------------------------------------------
// Rendering

const json = (v: unknown): string => JSON.stringify(v, null, 2);

/** Where a page's server comes from, in a line: `PiloTY 0.2.0 (catalogue key piloty, scanned here)`. */
function serverLine(s: PageServer): string {
  const from = s.source === 'shipped' ? `shipped with PolicyLayer${s.package ? `, scanned from ${s.package}` : ''}` : 'scanned here';
  return `${s.displayName}${s.version ? ` ${s.version}` : ''} (catalogue key ${s.key}, ${from})`;
}

function seenLine(p: ToolPage): string {
  const parts = [`definition ${p.definitionHash}`, `classifier v${p.classifierVersion}`];
  if (p.firstSeen !== null) parts.push(`first seen ${p.firstSeen}`);
  if (p.lastSeen !== null) parts.push(`last seen ${p.lastSeen}`);
  if (p.removedAt !== null) parts.push(`no longer listed since ${p.removedAt}`);
  return parts.join(', ');
}

/** A reason as a line: its text names its signal; what it set (a severity, a flag) goes first. */
function reasonLine(r: PageReason): string {
  if (r.category === undefined && r.severity !== undefined) return `${r.severity}: ${r.text}`;
  if (r.category === undefined && r.flag !== undefined) return `flag ${r.flag}: ${r.text}`;
  return r.text;
}

/** The page as Markdown, headed by the verdict as the seed pages are. */
export function toolPageMarkdown(p: ToolPage): string {
  const out: string[] = [];
  out.push(`# ${p.tool}: ${p.verdict}`, '');
  out.push(`**${p.category}** tool of **${p.server.displayName}**. Severity **${p.severity}**, confidence ${p.confidence.toFixed(2)}${p.flags.length > 0 ? `, flags ${p.flags.map((f) => `\`${f}\``).join(', ')}` : ''}.`, '');
  out.push(`Server: ${serverLine(p.server)}.`, '');
  if (p.removedAt !== null) out.push(`> The server no longer lists this tool (since ${p.removedAt}).`, '');
  out.push('## What it does', '', p.whatItDoes, '', `It is ${an(p.category)} tool, which means it ${p.categoryMeaning}.`, '');
  out.push(`## Why ${p.category}, ${p.severity}`, '');
  for (const r of p.reasons) out.push(`- ${reasonLine(r)}`);
  out.push('', '## Recommended rule', '', p.recommendation.summary, '', '```json', json(p.recommendation.policy), '```', '');
  out.push('## Attack patterns that abuse this access', '');
  for (const a of p.attackPatterns) out.push(`- **${a.name}** (\`${a.id}\`, ${a.because}): ${a.summary}`);
  out.push('', '## How to control it', '');
  const controls: Array<[string, PageControl]> = [
    ['Deny it', p.controls.deny],
    ['Rate-limit it', p.controls.rateLimit],
    ['Require approval', p.controls.requireApproval],
  ];
  for (const [title, c] of controls) out.push(`### ${title}`, '', c.text, '', '```json', json(c.policy), '```', '');
  for (const n of p.notes) out.push(`> Note: ${n}`, '');
  out.push('---', '', `${seenLine(p)}.`, '');
  return out.join('\n');
}

/** The page as plain text for a terminal. */
export function toolPageText(p: ToolPage): string {
  const out: string[] = [];
  const head = (t: string) => out.push('', t.toUpperCase());
  out.push(`${p.tool}: ${p.verdict}, ${p.category}${p.title !== null && p.title !== p.tool ? ` (${p.title})` : ''}`);
  out.push(`server:      ${serverLine(p.server)}`);
  out.push(`verdict:     ${p.category}, ${p.severity}, confidence ${p.confidence.toFixed(2)}${p.flags.length > 0 ? `; flags: ${p.flags.join(', ')}` : ''}`);
  if (p.removedAt !== null) out.push(`removed:     the server no longer lists it (since ${p.removedAt})`);
  head('What it does');
  out.push(p.whatItDoes, `It is ${an(p.category)} tool: it ${p.categoryMeaning}.`);
  head('Why');
  for (const r of p.reasons) out.push(`  - ${reasonLine(r)}`);
  head('Recommended rule');
  out.push(p.recommendation.summary, json(p.recommendation.policy));
  head('Attack patterns that abuse this access');
  for (const a of p.attackPatterns) out.push(`  - ${a.name} [${a.id}] (${a.because}): ${a.summary}`);
  head('How to control it');
  const controls: Array<[string, PageControl]> = [
    ['Deny', p.controls.deny],
    ['Rate-limit', p.controls.rateLimit],
    ['Require approval', p.controls.requireApproval],
  ];
  for (const [title, c] of controls) out.push('', `${title}: ${c.text}`, json(c.policy));
  for (const n of p.notes) out.push('', `note: ${n}`);
  out.push('', seenLine(p));
  return out.join('\n') + '\n';
}
