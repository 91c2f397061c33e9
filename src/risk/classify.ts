// The risk classifier: a tool definition (and what is known of its server) → category,
// severity, confidence, flags and the reasons for each. Pure and deterministic: no I/O, no
// clock, no randomness; the same definition on the same server always gets the same answer,
// which is what lets answers be cached by the hash of what they were computed from.
import { createHash } from 'node:crypto';
import { canonicalJson } from '../util/canonical-json.js';
import { CREDENTIAL_NOUNS, EXEC_ENV_NOUNS, EXEC_OBJECTS, LOW_WRITE_VERBS, META_HEADS, PHRASES, REPORT_NOUNS } from './lexicon.js';
import { TRAIT_MEANING, serverProfile } from './profile.js';
import type { ServerProfile, Trait } from './profile.js';
import { collectParams, execEnv, moneyWord, nameVerbs, primaryNameVerb, resolveVerb, riskRank } from './signals.js';
import type { Acting, Param, VerbEnv } from './signals.js';
import { descriptionLead, flat, nameWords, textWords } from './text.js';
import { SEVERITIES } from './types.js';
import type { Category, Classification, Flag, Reason, ServerContext, Severity, ToolDefinition } from './types.js';

/** Bumped whenever a rule changes, so stored verdicts keyed by hash are not reused across versions. */
export const CLASSIFIER_VERSION = 2;

const W = {
  nameVerb: 3,
  leadVerb: 2,
  bodyVerb: 0.75,
  reportNoun: 1.5,
  execParam: 2.5,
  codeParam: 2,
  sqlParam: 1.5,
  moneyParams: 2,
  keyParams: 1.5,
} as const;

interface Work {
  readonly votes: Map<Acting, number>;
  readonly reasons: Reason[];
}

function vote(w: Work, category: Acting, weight: number, reason: Omit<Reason, 'category'>): void {
  w.votes.set(category, (w.votes.get(category) ?? 0) + weight);
  w.reasons.push({ ...reason, category });
}

/** The first words of `s`, cut at a word boundary. */
const clip = (s: string, max: number): string => (s.length <= max ? s : s.slice(0, s.lastIndexOf(' ', max) > 0 ? s.lastIndexOf(' ', max) : max) + ' …');
const quote = (s: string, max = 60): string => JSON.stringify(s.length > max ? s.slice(0, max - 1) + '…' : s);

const EXEC_PARAM = /^(?:command|commands|cmd|cmds|shellcommand|script|bash|shell|commandline|argv)$/;
const CODE_PARAM = /^(?:code|function|expression|js|javascript|python|source|snippet|program)$/;
const SQL_PARAM = /^(?:sql|query|statement|statements|sqlquery|command)$/;
const AMOUNT_PARAM = /^(?:amount|amountusd|amountcents|unitamount|amountoff|value|price|quantity|qty|size|notional)$/;
const MONEY_COMPANION = /^(?:currency|currencycode|to|toaddress|recipient|recipients|address|side|symbol|destination|token|tokenaddress|payee|receiver|wallet|account|accountid|from)$/;
const SECRET_PARAM = /(?:privatekey|mnemonic|seedphrase|secret|password|passphrase|apikey|accesstoken|authtoken|credential|connectionstring|secretkey|bearer)/;
const PATH_PARAM = /^(?:path|paths|filepath|filepaths|filename|file|files|savepath|outputdir|outputpath|targetpath|directory|dir|sourcepath|destinationpath|destpath|rootdir|workspaceroot|source|destination|outputfile|localpath|filename)$/;
const URL_PARAM = /^(?:url|urls|uri|link|endpoint|webhookurl|webhook|href|website|baseurl|callbackurl|redirecturl)$/;
const MESSAGE_PARAM = /^(?:text|body|message|content|subject|htmlbody|html|comment|note|tweet|tweets|caption)$/;
const RECIPIENT_PARAM = /^(?:to|cc|bcc|recipient|recipients|channel|channelid|email|emails|username|userid|phone|chatid|threadid|destination|webhookurl)$/;

/** Classifies one tool. Prefer RiskClassifier, which caches by definition hash. */
export function classifyTool(tool: ToolDefinition, server: ServerContext = {}): Classification {
  return classifyWithProfile(tool, serverProfile(server));
}

// The canonical text of a large input schema is the costliest step of a cache lookup; a tool
// object is hashed once however often it is looked up.
const toolHashes = new WeakMap<ToolDefinition, string>();

/**
 * The cache key: `sha256:` of the canonical JSON of the definition (name, title, description,
 * inputSchema, annotations), the server profile it was read with, and the classifier version.
 */
export function definitionHash(tool: ToolDefinition, profile: ServerProfile): string {
  let th = toolHashes.get(tool);
  if (th === undefined) {
    const def = { name: tool.name, title: tool.title, description: tool.description, inputSchema: tool.inputSchema, annotations: tool.annotations };
    th = createHash('sha256').update(canonicalJson(def)).digest('hex');
    toolHashes.set(tool, th);
  }
  return 'sha256:' + createHash('sha256').update(`${CLASSIFIER_VERSION}\n${th}\n${profile.hash}`).digest('hex');
}

export function classifyWithProfile(tool: ToolDefinition, profile: ServerProfile, hash = definitionHash(tool, profile)): Classification {
  const description = tool.description ?? '';
  const desc = flat(description);
  const words = nameWords(tool.name);
  const lead = descriptionLead(description);
  const leadWords = textWords(lead);
  const params = collectParams(tool.inputSchema);
  const w: Work = { votes: new Map(), reasons: [] };
  const env: VerbEnv = { profile, description: desc, leadRest: leadWords.slice(1), params };

  // Server traits a reading relied on; their evidence is named among the reasons.
  const used = new Set<Trait>();

  // 1. The name's verb.
  const nVerbs = nameVerbs(words, env);
  const primary = primaryNameVerb(words, nVerbs);
  if (primary) {
    const h = primary.hit;
    if (h.trait) used.add(h.trait);
    const extra = [h.because, primary.note].filter(Boolean).join('; ');
    vote(w, h.category, W.nameVerb, { source: 'name', text: `name verb "${h.word}"${extra ? ` (${extra})` : ''}` });
  } else {
    const noun = words.find((x) => REPORT_NOUNS.has(x));
    if (noun) vote(w, 'Read', W.reportNoun, { source: 'name', text: `name noun "${noun}" (reports something)` });
  }

  // 2. The description's opening verb (or verbs: "Read or replace", "Create or update").
  const leadHit = leadVerb(lead, leadWords, env);
  if (leadHit) {
    if (leadHit.trait) used.add(leadHit.trait);
    vote(w, leadHit.category, W.leadVerb, {
      source: 'description',
      text: `description: ${quote(clip(lead, 48))}${leadHit.because ? ` (${leadHit.because})` : ''}`,
    });
  } else if (!primary) {
    // No verb up front: the first verb that opens a later sentence or follows "to".
    const body = bodyVerb(desc, env);
    if (body) vote(w, body.category, W.bodyVerb, { source: 'description', text: `description verb "${body.word}"` });
  }

  // 3. Phrases anywhere in the description.
  const strong: { category: Acting; label: string; mode: 'any' | 'mutating' }[] = [];
  for (const p of PHRASES) {
    if (p.re.test(desc)) {
      vote(w, p.category, p.weight, { source: 'description', text: `description: "${p.label}"` });
      if (p.override) strong.push({ category: p.category, label: p.label, mode: p.override });
    }
  }

  // 4. Parameters.
  const mutatingSoFar = [...w.votes.keys()].some((c) => c !== 'Read');
  paramVotes(params, desc, mutatingSoFar, w);

  // 5. Decide.
  let category: Category = 'Unknown';
  let deciding: string | undefined;
  const ranked = [...w.votes.entries()].sort((a, b) => b[1] - a[1] || riskRank(b[0]) - riskRank(a[0]));
  if (ranked.length > 0) category = ranked[0]![0];

  // A phrase that says money moves, or data is destroyed for good, outweighs the verb that
  // names the call: "register a domain (requires a USDC payment)" pays.
  for (const s of strong) {
    if (s.mode === 'mutating' && (category === 'Read' || category === 'Unknown')) continue;
    if (category === 'Unknown' || riskRank(s.category) > riskRank(category as Acting)) {
      category = s.category;
      deciding = `description: "${s.label}" outweighs the verb`;
    }
  }

  // An action whose object is money is Financial: create_refund, update_subscription, set_leverage.
  // The verb's own votes then speak for the verdict too (confidence), since they agree on acting.
  let compatible = 0;
  if (category === 'Write' || category === 'Execute' || category === 'Financial') {
    const m = moneyObject(words, leadWords, params, env);
    if (m) {
      if (category !== 'Financial') deciding = m.text;
      category = 'Financial';
      compatible = (w.votes.get('Write') ?? 0) + (w.votes.get('Execute') ?? 0);
      if (m.trait) used.add(m.trait);
      w.reasons.push({ source: m.source, text: m.text, category: 'Financial' });
    }
  }

  // Starting an execution environment is executing: create_session on a terminal server.
  // So is creating or changing code that then runs: a Worker script, a migration.
  if (category === 'Write') {
    const e = execEnvironment(words, leadWords, env) ?? execObject(words, leadWords, env);
    if (e) {
      for (const t of e.traits ?? []) used.add(t);
      category = 'Execute';
      deciding = e.text;
      compatible = w.votes.get('Write') ?? 0;
      w.reasons.push({ source: e.source, text: e.text, category: 'Execute' });
    }
  }

  // 6. Annotations: they may raise risk; they lower it only on a server the operator trusts.
  const a = tool.annotations ?? {};
  if (a.destructiveHint === true && a.readOnlyHint !== true && category === 'Read') {
    category = 'Write';
    deciding = 'annotation destructiveHint: the server says the tool changes things';
    w.reasons.push({ source: 'annotation', text: 'annotation destructiveHint raises a read-looking tool to Write', category: 'Write' });
  }
  if (profile.trusted) {
    if (a.readOnlyHint === true && category !== 'Read') {
      w.reasons.push({ source: 'annotation', text: `annotation readOnlyHint from a trusted server lowers ${category} to Read`, category: 'Read' });
      category = 'Read';
      deciding = 'annotation readOnlyHint (trusted server)';
    } else if (a.destructiveHint === false && category === 'Destructive') {
      w.reasons.push({ source: 'annotation', text: 'annotation destructiveHint=false from a trusted server lowers Destructive to Write', category: 'Write' });
      category = 'Write';
      deciding = 'annotation destructiveHint=false (trusted server)';
    }
  } else if (a.readOnlyHint === true && category !== 'Read' && category !== 'Unknown') {
    w.reasons.push({ source: 'annotation', text: 'annotation readOnlyHint ignored: the server is not marked trusted, and annotations lower risk only for trusted servers' });
  }

  // 7. Flags, severity, confidence.
  const flags = flagsOf(tool, category, words, desc, params, profile, w.reasons);
  const verb = primary?.hit.word ?? leadHit?.word;
  const severity = severityOf(category, tool, words, verb, desc, params, flags, w.reasons);
  const confidence = confidenceOf(category, w.votes, primary !== undefined, deciding !== undefined, compatible);

  // Server context that shaped the reading is named too.
  for (const t of used) {
    const ev = profile.evidence.get(t);
    if (ev) w.reasons.push({ source: ev.startsWith('sibling') ? 'siblings' : 'server', text: `${ev}: server ${TRAIT_MEANING[t]}` });
  }

  const decidingFirst = orderReasons(w.reasons, category);
  return Object.freeze({
    tool: tool.name,
    category,
    severity,
    confidence,
    flags: Object.freeze(flags),
    reasons: Object.freeze(decidingFirst.map((r) => Object.freeze(r))),
    hash,
  });
}

function orderReasons(reasons: readonly Reason[], category: Category): Reason[] {
  const rank = (r: Reason): number => (r.category === category ? 0 : r.category !== undefined ? 2 : r.flag || r.severity ? 1 : 3);
  return reasons.map((r, i) => ({ r, i })).sort((x, y) => rank(x.r) - rank(y.r) || x.i - y.i).map((x) => x.r);
}

function leadVerb(lead: string, leadWords: readonly string[], env: VerbEnv): (ReturnType<typeof resolveVerb> & object) | undefined {
  const first = leadWords[0];
  if (first === undefined) return undefined;
  const hit = resolveVerb(first, leadWords.slice(1), leadWords.slice(0, 12), env);
  if (!hit) return undefined;
  // Alternatives in the opening run count as the riskiest: "read or replace the clipboard",
  // "list, create, close, or select a tab", "create or update a file".
  const run = lead.match(/^[a-z]+(?:(?:\s*,\s*(?:or\s+|and\s+)?|\s+(?:or|and)\s+)[a-z]+)*/)?.[0] ?? first;
  const alts = run.split(/\s*,\s*(?:or\s+|and\s+)?|\s+(?:or|and)\s+/).slice(1);
  let best = hit;
  const rest = leadWords.slice(alts.length + 1);
  for (const a of alts) {
    const h = resolveVerb(a, rest, leadWords.slice(0, 12), env);
    if (!h) break;
    if (riskRank(h.category) > riskRank(best.category)) best = h;
  }
  return best;
}

function bodyVerb(desc: string, env: VerbEnv): ReturnType<typeof resolveVerb> {
  const sentences = desc.split(/(?<=[.!?:])\s+/).slice(0, 4);
  for (const s of sentences) {
    const lead = textWords(descriptionLead(s));
    const h = lead[0] ? resolveVerb(lead[0], lead.slice(1), lead.slice(0, 12), env) : undefined;
    if (h) return h;
    const to = s.match(/\bto ([a-z]+)\b/);
    if (to) {
      const h2 = resolveVerb(to[1]!, [], [], env);
      if (h2) return h2;
    }
  }
  return undefined;
}

function paramVotes(all: readonly Param[], desc: string, mutating: boolean, w: Work): void {
  // Top-level arguments, or those of a single wrapping object (`params.command`); options deep
  // inside a request describe something else.
  const params = all.filter((p) => !p.path.includes('[') && p.path.split('.').length <= 2);
  const readOnlyText = /\bread-?only\b/.test(desc);
  const exec = params.find((p) => EXEC_PARAM.test(p.key) && /string|array/.test(p.type) && p.key !== 'command');
  const command = params.find((p) => p.key === 'command' && /string|array/.test(p.type));
  if (exec) vote(w, 'Execute', W.execParam, { source: 'parameter', text: `parameter "${exec.path}" (${exec.type}) takes a command or script` });
  else if (command && !/\bsql\b/.test(desc)) vote(w, 'Execute', W.execParam, { source: 'parameter', text: `parameter "${command.path}" (${command.type}) takes a command` });
  const code = params.find((p) => CODE_PARAM.test(p.key) && p.type.includes('string'));
  if (code && /\b(?:javascript|python|typescript|code snippet|script|evaluate|execute|run)\b/.test(desc)) {
    vote(w, 'Execute', W.codeParam, { source: 'parameter', text: `parameter "${code.path}" (${code.type}) takes code to run` });
  }
  const sql = params.find((p) => SQL_PARAM.test(p.key) && p.type.includes('string'));
  if (sql && /\bsql\b|\bstatement\b|\bpsql\b/.test(desc) && !readOnlyText) {
    vote(w, 'Execute', W.sqlParam, { source: 'parameter', text: `parameter "${sql.path}" (${sql.type}) takes SQL` });
  }
  if (mutating) {
    const amount = params.find((p) => AMOUNT_PARAM.test(p.key) && /number|integer|string/.test(p.type) && !/\b(?:percent|quantity of items|page)\b/.test(p.description.toLowerCase()));
    const companion = params.find((p) => MONEY_COMPANION.test(p.key));
    if (amount && companion && amount.key !== 'value' && amount.key !== 'size' && amount.key !== 'quantity') {
      vote(w, 'Financial', W.moneyParams, { source: 'parameter', text: `parameters "${amount.path}" (${amount.type}) and "${companion.path}": an amount sent somewhere` });
    }
    const key = params.find((p) => /^(?:privatekey|mnemonic|seedphrase|secretkey)$/.test(p.key));
    const dest = params.find((p) => /^(?:to|toaddress|recipient|amount|spenderaddress|destination)$/.test(p.key));
    if (key && dest) vote(w, 'Financial', W.keyParams, { source: 'parameter', text: `parameters "${key.path}" and "${dest.path}": signs a transaction with a private key` });
  }
}

function moneyObject(words: readonly string[], leadWords: readonly string[], params: readonly Param[], env: VerbEnv): { text: string; source: Reason['source']; trait?: Trait } | undefined {
  // "discount group": a money word qualifying another noun names something else.
  const plain = (ws: readonly string[]): string[] => ws.filter((_, i) => !ws.slice(i + 1).some((x) => META_HEADS.has(x)));
  const inName = moneyWord(plain(words), env);
  if (inName) return { text: `name noun "${inName.word}": the object is money`, source: 'name', ...(inName.trait ? { trait: inName.trait } : {}) };
  // The object right after the description's verb: "Creates a refund", "Update a subscription".
  const inLead = moneyWord(plain(objectHead(leadWords)), env);
  if (inLead) return { text: `description object "${inLead.word}": the object is money`, source: 'description', ...(inLead.trait ? { trait: inLead.trait } : {}) };
  // A nested request whose fields are an amount and a currency (a price, a charge).
  const amount = params.find((p) => /^(?:amount|price|unitamount|unitprice|priceamount)$/.test(p.key));
  const currency = params.find((p) => /^(?:currency|currencycode)$/.test(p.key));
  if (amount && currency) return { text: `parameters "${amount.path}" and "${currency.path}": sets an amount of money`, source: 'parameter' };
  return undefined;
}

function execEnvironment(words: readonly string[], leadWords: readonly string[], env: VerbEnv): { source: Reason['source']; text: string; traits?: Trait[] } | undefined {
  const creates = (ws: readonly string[]) => ws.some((x) => ['create', 'creates', 'new', 'open', 'opens', 'spawn', 'spawns', 'start', 'starts', 'launch', 'launches', 'allocate'].includes(x));
  if (creates(words)) {
    const noun = words.find((x) => EXEC_ENV_NOUNS.has(x) && execEnv(x, env));
    if (noun) {
      // A session is an execution environment only because of the server it is on: name that.
      const live = [...env.profile.traits].filter((t) => t === 'terminal' || t === 'browser' || t === 'device');
      const why = noun === 'session' ? `; ${live.map((t) => `server ${TRAIT_MEANING[t]}`).join(', ')}` : '';
      const fromSiblings = noun === 'session' && live.every((t) => env.profile.evidence.get(t)?.startsWith('sibling'));
      return {
        source: noun === 'session' ? (fromSiblings ? 'siblings' : 'server') : 'name',
        text: `name "${words.join('_')}" starts a ${noun}: an execution environment${why}`,
        ...(noun === 'session' ? { traits: live } : {}),
      };
    }
  }
  const head = leadWords.slice(0, 6);
  if (creates(head.slice(0, 1))) {
    const noun = head.find((x) => EXEC_ENV_NOUNS.has(x) && execEnv(x, env));
    if (noun) return { source: 'description', text: `description: starts a ${noun}, an execution environment` };
  }
  return undefined;
}

function objectHead(leadWords: readonly string[]): string[] {
  const object = leadWords.slice(1, 6);
  const stop = object.findIndex((x) => ['for', 'from', 'to', 'in', 'on', 'with', 'by', 'of', 'that', 'which', 'using', 'as', 'into', 'at'].includes(x));
  return stop >= 0 ? object.slice(0, stop) : object;
}

function execObject(words: readonly string[], leadWords: readonly string[], env: VerbEnv): { source: Reason['source']; text: string; traits?: Trait[] } | undefined {
  // The head noun decides: a simulation run is code that runs; a simulation run's event is not.
  const nouns = words.filter((x) => !resolveVerb(x, [], [], env));
  const last = nouns[nouns.length - 1];
  if (last && EXEC_OBJECTS.has(last)) return { source: 'name', text: `name noun "${last}": code that runs once written` };
  const head = objectHead(leadWords);
  const lastLead = head[head.length - 1];
  if (lastLead && EXEC_OBJECTS.has(lastLead)) return { source: 'description', text: `description object "${lastLead}": code that runs once written` };
  return undefined;
}

function flagsOf(tool: ToolDefinition, category: Category, words: readonly string[], desc: string, params: readonly Param[], profile: ServerProfile, reasons: Reason[]): Flag[] {
  const flags = new Set<Flag>();
  const add = (f: Flag, source: Reason['source'], text: string): void => {
    if (flags.has(f)) return;
    flags.add(f);
    reasons.push({ source, text, flag: f });
  };
  const mutating = category !== 'Read';
  // filesystem
  const pathP = params.find((p) => PATH_PARAM.test(p.key) && p.type.includes('string') || (PATH_PARAM.test(p.key) && p.type === 'array'));
  if (pathP && (/\bfiles?\b|\bdirector(?:y|ies)\b|\bfolder\b|\blocal\b|\bdisk\b/.test(desc) || /path|file|dir/.test(pathP.key))) {
    add('filesystem', 'parameter', `parameter "${pathP.path}" (${pathP.type}) is a local path`);
  } else if (/\b(?:file ?system|local files?|on disk|the disk)\b/.test(desc)) add('filesystem', 'description', 'description: reads or writes local files');
  // credential
  const secretP = params.find((p) => SECRET_PARAM.test(p.key));
  if (secretP) add('credential', 'parameter', `parameter "${secretP.path}" carries a secret`);
  else {
    const n = words.find((x) => CREDENTIAL_NOUNS.has(x) && !(x.startsWith('token') && profile.traits.has('crypto')));
    if (n && (n !== 'key' && n !== 'keys' ? true : /\b(?:api|secret|publishable|private|access|signing) keys?\b/.test(desc))) {
      add('credential', 'name', `name noun "${n}": handles a credential`);
    } else if (/\b(?:environment variables|connection string|signing secret|access token|api key|private key|password)s?\b/.test(desc) && !mutating) {
      add('credential', 'description', 'description: returns or uses a secret');
    }
  }
  // egress_sink: data leaves through this call.
  const urlP = params.find((p) => URL_PARAM.test(p.key));
  const msgP = params.find((p) => MESSAGE_PARAM.test(p.key));
  const toP = params.find((p) => RECIPIENT_PARAM.test(p.key));
  const sendVerb = words.find((x) => ['send', 'post', 'reply', 'publish', 'tweet', 'retweet', 'email', 'message', 'dm', 'notify', 'share', 'forward', 'upload', 'expose', 'webhook', 'webhooks', 'replay', 'resend', 'invite', 'comment'].includes(x));
  if (mutating && sendVerb && (msgP || toP || urlP || sendVerb === 'upload' || sendVerb === 'expose')) add('egress_sink', 'name', `name verb "${sendVerb}": sends data to others`);
  else if (mutating && urlP && params.some((p) => /^(?:body|method|headers|data|payload)$/.test(p.key))) add('egress_sink', 'parameter', `parameter "${urlP.path}" with a request body: sends data to any URL`);
  else if (mutating && /\b(?:webhook|notification destination|receive event deliveries)\b/.test(desc) && urlP) add('egress_sink', 'parameter', `parameter "${urlP.path}": a destination for account events`);
  else if (category === 'Execute' && urlP && profile.traits.has('browser')) add('egress_sink', 'parameter', `parameter "${urlP.path}": loads any URL`);
  // untrusted_content: what comes back was written by someone else.
  const web = /\b(?:web ?pages?|websites?|the web|urls?|internet|search results|scrape|crawl|tweets?|emails?|messages?|comments?|issues?|snapshot|screenshot|page content|html)\b/.test(desc);
  if (!mutating && (web || urlP)) add('untrusted_content', urlP ? 'parameter' : 'description', urlP ? `parameter "${urlP.path}": returns content from outside` : 'description: returns content others wrote (web, mail, messages)');
  else if (tool.annotations?.openWorldHint === true && !mutating) add('untrusted_content', 'annotation', 'annotation openWorldHint: talks to the open world');
  // private_data: returns what belongs to people or the organisation.
  if (!mutating && /\b(?:emails?|messages?|customers?|users?|contacts?|profiles?|calendars?|events?|documents?|files?|records?|database|transactions?|invoices?|subscriptions?|logs?|conversations?|crm|employees?|accounts?|balances?|payments?|orders?|credentials?|environment variables)\b/.test(desc)) {
    add('private_data', 'description', 'description: returns private data (people, accounts, records)');
  }
  return [...flags].sort();
}

const down = (s: Severity): Severity => SEVERITIES[Math.max(SEVERITIES.indexOf(s) - 1, 0)]!;

function severityOf(category: Category, tool: ToolDefinition, words: readonly string[], verb: string | undefined, desc: string, params: readonly Param[], flags: readonly Flag[], reasons: Reason[]): Severity {
  const raise = (to: Severity, source: Reason['source'], text: string, from: Severity): Severity => {
    if (SEVERITIES.indexOf(to) <= SEVERITIES.indexOf(from)) return from;
    reasons.push({ source, text, severity: to });
    return to;
  };
  let s: Severity;
  switch (category) {
    case 'Read':
      s = 'Low';
      if (flags.includes('credential') && !params.some((p) => SECRET_PARAM.test(p.key))) s = raise('Medium', 'description', 'returns a credential', s);
      if (/\b(?:all|every) environment variables\b|\bconnection string\b/.test(desc)) s = raise('High', 'description', 'returns secrets in bulk', s);
      break;
    case 'Write': {
      s = 'Medium';
      if (verb !== undefined && LOW_WRITE_VERBS.has(verb) && !flags.includes('egress_sink')) s = 'Low';
      if (flags.includes('egress_sink') && /\b(?:emails?|publicly|public|tweet|post to x|webhook|any url|anyone)\b/.test(desc)) s = raise('High', 'description', 'sends data outside the organisation', s);
      if (/\boverwrit(?:e|es|ing)\b|\bwithout warning\b/.test(desc)) s = raise('High', 'description', 'overwrites without asking', s);
      if (/\b(?:production|offline|maintenance mode|nameservers?|replicas|public url|all exchanges|traffic)\b/.test(desc)) s = raise('High', 'description', 'changes what production or the public sees', s);
      if (words.some((x) => ['secret', 'secrets', 'token', 'credential', 'credentials', 'filter', 'filters'].includes(x))) s = raise('High', 'name', 'creates or changes a credential or a mail rule', s);
      if (tool.annotations?.destructiveHint === true) s = raise('High', 'annotation', 'annotation destructiveHint: may overwrite or remove data', s);
      break;
    }
    case 'Execute':
      s = 'High';
      if (/\barbitrary\b|\brce\b|\bshell\b|\bjavascript\b|\bany (?:kubectl )?command\b|\bexecute (?:a )?(?:shell |terminal )?command/.test(desc) || params.some((p) => EXEC_PARAM.test(p.key) || (CODE_PARAM.test(p.key) && p.type.includes('string') && /\b(?:javascript|python|code)\b/.test(desc)))) {
        s = raise('Critical', 'description', 'runs arbitrary commands or code', s);
      } else if (words.some((x) => ['hover', 'move', 'scroll', 'wheel', 'back', 'resume', 'dialog', 'launch', 'restart', 'feedback', 'tabs', 'forward'].includes(x))) {
        s = down(s);
      }
      break;
    case 'Financial':
      s = 'High';
      if (
        words.some((x) => ['transfer', 'send', 'pay', 'refund', 'withdraw', 'deposit', 'trade', 'order', 'charge', 'debit', 'credit', 'topup', 'purchase', 'buy', 'sell', 'swap', 'bridge', 'launch', 'confirm', 'approve', 'finalize', 'post', 'adjustment', 'contract', 'fetch'].includes(x)) ||
        /\b(?:sends? (?:money|funds|tokens)|paid automatically|refunds?|one-time charge)\b/.test(desc)
      ) {
        s = raise('Critical', 'name', 'money or value leaves an account', s);
      }
      break;
    case 'Destructive':
      s = 'High';
      if (words.some((x) => ['database', 'databases', 'project', 'projects', 'bucket', 'collection', 'namespace', 'many', 'batch', 'bulk', 'all', 'account', 'cluster'].includes(x)) || /\b(?:all|every|entire) (?:documents|records|data|resources|emails)\b|\bmatching (?:the |a )?filter\b/.test(desc)) {
        s = raise('Critical', 'name', 'removes a whole store or many records at once', s);
      }
      break;
    default:
      s = 'High';
      reasons.push({ source: 'name', text: 'no signal says what the tool does: treated as High until a person reviews it', severity: 'High' });
  }
  return s;
}

function confidenceOf(category: Category, votes: ReadonlyMap<Acting, number>, hasNameVerb: boolean, ruled: boolean, compatible: number): number {
  if (category === 'Unknown') return 0;
  let total = 0;
  for (const v of votes.values()) total += v;
  const top = (votes.get(category as Acting) ?? 0) + compatible;
  let second = 0;
  // Votes a rule reconciled with the verdict (a Write of money) are not against it.
  for (const [c, v] of votes) if (c !== category && !(compatible > 0 && (c === 'Write' || c === 'Execute'))) second = Math.max(second, v);
  let c = total > 0 ? 0.5 + (0.5 * Math.max(top - second, 0)) / total : 0.4;
  if (!hasNameVerb) c *= 0.85;
  if (total < 2) c *= 0.75;
  if (ruled) c = Math.max(c, 0.65);
  return Math.round(Math.min(Math.max(c, 0.05), 0.99) * 100) / 100;
}

export interface RiskClassifierOptions {
  /** How many verdicts to keep; the least recently used goes first. Default 10,000. */
  readonly cacheSize?: number;
}

/**
 * Classifies tools, caching each verdict by the hash of the definition and its server context
 * (a repeated tools/list of an unchanged server costs a hash per tool).
 */
export class RiskClassifier {
  private readonly cache = new Map<string, Classification>();
  private readonly profiles = new WeakMap<ServerContext, ServerProfile>();
  private readonly cacheSize: number;
  hits = 0;
  misses = 0;

  constructor(options: RiskClassifierOptions = {}) {
    this.cacheSize = options.cacheSize ?? 10_000;
  }

  classify(tool: ToolDefinition, server: ServerContext = {}): Classification {
    let profile = this.profiles.get(server);
    if (!profile) {
      profile = serverProfile(server);
      this.profiles.set(server, profile);
    }
    return this.classifyProfiled(tool, profile);
  }

  /** Every tool of a server, each read with the others as its siblings. */
  classifyServer(server: ServerContext & { readonly tools: readonly ToolDefinition[] }): Classification[] {
    return server.tools.map((t) => this.classify(t, server));
  }

  private classifyProfiled(tool: ToolDefinition, profile: ServerProfile): Classification {
    const key = definitionHash(tool, profile);
    const hit = this.cache.get(key);
    if (hit) {
      this.hits++;
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    this.misses++;
    const c = classifyWithProfile(tool, profile, key);
    this.cache.set(key, c);
    if (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    return c;
  }
}
