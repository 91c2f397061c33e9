// Reading a tool definition into the signals the classifier weighs: the verbs of its name and
// description, its parameters, its annotations. Every signal carries the words a reason quotes.
import {
  CONTEXTUAL_VERBS,
  CRYPTO_NOUNS,
  EXEC_ENV_NOUNS,
  HTTP_METHODS,
  MONEY_NOUNS,
  NOUNABLE_VERBS,
  MONEY_NOUNS_NEEDING_CONTEXT,
  OBSERVING_NOUNS,
  VERBS,
} from './lexicon.js';
import type { ServerProfile, Trait } from './profile.js';
import { verbBase } from './text.js';
import type { Category } from './types.js';

export type Acting = Exclude<Category, 'Unknown'>;

/** From least to most risky: when one name or sentence offers several verbs, the riskier counts. */
export const RISK_ORDER: readonly Acting[] = ['Read', 'Write', 'Execute', 'Destructive', 'Financial'];
export const riskRank = (c: Acting): number => RISK_ORDER.indexOf(c);

export interface Param {
  /** Dotted path below the arguments object: `amount`, `params.command`. */
  readonly path: string;
  /** The property's own name, lower-cased, separators removed: `privatekey`, `toaddress`. */
  readonly key: string;
  readonly name: string;
  readonly type: string;
  readonly description: string;
  /** Listed in its parent schema's `required`. */
  readonly required: boolean;
}

/** Properties of an input schema, descending into object-valued properties (two levels). */
export function collectParams(schema: unknown, prefix = '', depth = 0, out: Param[] = []): Param[] {
  if (typeof schema !== 'object' || schema === null || depth > 2) return out;
  const props = (schema as { properties?: unknown }).properties;
  if (typeof props !== 'object' || props === null) return out;
  const req = (schema as { required?: unknown }).required;
  const required = new Set(Array.isArray(req) ? req.filter((x): x is string => typeof x === 'string') : []);
  for (const [name, raw] of Object.entries(props as Record<string, unknown>)) {
    const p = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
    const path = prefix ? `${prefix}.${name}` : name;
    out.push({
      path,
      name,
      key: name.toLowerCase().replace(/[^a-z0-9]/g, ''),
      type: schemaType(p),
      description: typeof p.description === 'string' ? p.description : '',
      required: required.has(name),
    });
    collectParams(p, path, depth + 1, out);
    // An array of objects (`edits: [{ path, content }]`) describes its items the same way.
    if (typeof p.items === 'object' && p.items !== null) collectParams(p.items, `${path}[*]`, depth + 1, out);
  }
  return out;
}

function schemaType(p: Record<string, unknown>): string {
  const t = p.type;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) return t.filter((x) => x !== 'null').join('|');
  for (const k of ['anyOf', 'oneOf'] as const) {
    const alts = p[k];
    if (Array.isArray(alts)) {
      const types = alts.map((a) => (typeof a === 'object' && a !== null ? schemaType(a as Record<string, unknown>) : '')).filter((x) => x && x !== 'null');
      if (types.length > 0) return [...new Set(types)].join('|');
    }
  }
  if (p.properties) return 'object';
  return 'any';
}

/** What a verb's meaning may depend on. */
export interface VerbEnv {
  readonly profile: ServerProfile;
  /** The whole description, flattened. */
  readonly description: string;
  /** The description's opening words after its verb. */
  readonly leadRest: readonly string[];
  readonly params: readonly Param[];
}

export interface VerbHit {
  readonly word: string;
  readonly category: Acting;
  /** Why a contextual verb read as it did, for the reason text. */
  readonly because?: string;
  /** The server trait the reading relied on, named among the reasons. */
  readonly trait?: Trait;
}

const hasAny = (words: readonly string[], set: ReadonlySet<string>): string | undefined => words.find((w) => set.has(w));
const hasTrait = (env: VerbEnv, ...traits: Trait[]): Trait | undefined => traits.find((t) => env.profile.traits.has(t));

/** What, sent to a terminal, is typed into it or acts on what runs in it. */
const TERMINAL_INPUTS = new Set([
  'input', 'keystrokes', 'keys', 'key', 'command', 'commands', 'text', 'line', 'password', 'passphrase',
  'control', 'ctrl', 'signal', 'interrupt', 'eof',
]);

/** The first money word among `words`, and the server trait it needed to mean money, if any. */
export function moneyWord(words: readonly string[], env: VerbEnv): { word: string; trait?: Trait } | undefined {
  const moneyServer = hasTrait(env, 'payments', 'crypto', 'trading');
  for (const w of words) {
    if (MONEY_NOUNS.has(w) && !MONEY_NOUNS_NEEDING_CONTEXT.has(w)) return { word: w };
    if (MONEY_NOUNS.has(w) && moneyServer) return { word: w, trait: moneyServer };
    if (CRYPTO_NOUNS.has(w) && hasTrait(env, 'crypto')) return { word: w, trait: 'crypto' };
  }
  return undefined;
}

/**
 * The category of `word` used as a verb, given the words after it (`following`), every word
 * of the name or clause (`around`), and the server. Undefined when the word is not a verb.
 */
export function resolveVerb(word: string, following: readonly string[], around: readonly string[], env: VerbEnv): VerbHit | undefined {
  const base = VERBS[word] !== undefined || CONTEXTUAL_VERBS.has(word) ? word : verbBase(word).find((b) => VERBS[b] !== undefined || CONTEXTUAL_VERBS.has(b));
  if (base === undefined) return undefined;
  const next = following.slice(0, 4);
  const live = hasTrait(env, 'browser', 'device');
  switch (base) {
    case 'type':
      if (live) return { word, category: 'Execute', because: `the server ${live === 'browser' ? 'drives a browser' : 'drives a device'}`, trait: live };
      if (next.some((w) => w === 'text' || w === 'keys')) return { word, category: 'Execute', because: 'types text' };
      return undefined;
    case 'select': {
      const o = next.find((w) => w === 'option' || w === 'options' || w === 'dropdown');
      if (o) return { word, category: 'Execute', because: `selects an ${o} on a live page` };
      const t = next.find((w) => ['page', 'tab', 'context', 'frame', 'window', 'project', 'device', 'account', 'workspace'].includes(w));
      if (t) return { word, category: 'Read', because: `chooses which ${t} later calls use` };
      if (live) return { word, category: 'Execute', because: 'selects on a live page', trait: live };
      return { word, category: 'Read' };
    }
    case 'generate': {
      const t = following.slice(0, 7).find((w) => ['link', 'links', 'url', 'urls', 'token', 'tokens', 'key', 'keys', 'password', 'session', 'secret', 'invite'].includes(w));
      return t ? { word, category: 'Write', because: `mints a ${t}` } : { word, category: 'Read' };
    }
    case 'open':
    case 'new': {
      const target = next.find((w) => ['url', 'page', 'tab', 'window', 'app', 'browser', 'link', 'form'].includes(w));
      if (target) return { word, category: 'Execute', because: `opens a ${target}` };
      const env2 = hasAny(next, EXEC_ENV_NOUNS);
      if (env2 && execEnv(env2, env)) return { word, category: 'Execute', because: `starts a ${env2}`, ...(env2 === 'session' ? { trait: hasTrait(env, 'terminal', 'browser', 'device')! } : {}) };
      return { word, category: base === 'open' ? 'Read' : 'Write' };
    }
    case 'start':
    case 'stop': {
      const seen = hasAny(around, OBSERVING_NOUNS);
      if (seen) return { word, category: 'Read', because: `${base}s observing (${seen})` };
      return { word, category: base === 'start' ? 'Execute' : 'Write' };
    }
    case 'remove': {
      // "Remove X from Y" detaches; "Remove X" on its own deletes it.
      if (/\bremoves? (?:\S+ ){0,5}from\b/.test(env.description) && !/\bpermanently\b/.test(env.description)) return { word, category: 'Write', because: 'removes something from a parent, which remains' };
      return { word, category: 'Destructive' };
    }
    case 'reset':
      if (/\b(?:lost|wipe[sd]?|erase[sd]?|cannot be undone|discard(?:s|ed)?)\b/.test(env.description)) return { word, category: 'Destructive', because: 'the description says data is lost' };
      return { word, category: 'Write' };
    case 'drop':
      if (live) return { word, category: 'Execute', because: 'drops onto a live page', trait: live };
      return { word, category: 'Destructive' };
    case 'upload':
      if (live) return { word, category: 'Execute', because: 'uploads through a live page', trait: live };
      return { word, category: 'Write' };
    case 'evaluate': {
      const code = next.find((w) => ['script', 'javascript', 'js', 'expression', 'code', 'function'].includes(w)) ?? (/\bjavascript\b/.test(env.description) ? 'javascript' : undefined);
      return code ? { word, category: 'Execute', because: `evaluates ${code}` } : { word, category: 'Read' };
    }
    case 'handle':
      if (live) return { word, category: 'Execute', because: 'answers a dialog on a live page', trait: live };
      return { word, category: 'Write' };
    case 'write':
    case 'send': {
      // Input typed into a running terminal runs whatever it says: a password is typed and
      // entered like any line, control keys and signals interrupt, suspend or end what runs.
      const input = next.find((w) => TERMINAL_INPUTS.has(w));
      const proc = around.find((w) => ['pty', 'tty', 'terminal', 'repl', 'shell', 'console', 'stdin'].includes(w));
      if ((input && (proc || hasTrait(env, 'terminal'))) || (base === 'write' && proc)) {
        return { word, category: 'Execute', because: `sends ${input ?? 'input'} to a running ${proc ?? 'terminal'}`, ...(proc ? {} : { trait: 'terminal' as const }) };
      }
      if (base === 'write') return { word, category: 'Write' };
      return moneyVerb(base, word, next, around, env);
    }
    case 'transfer':
    case 'claim':
    case 'mint':
    case 'credit':
    case 'wrap':
    case 'confirm':
      return moneyVerb(base, word, next, around, env);
    case 'download': {
      const p = env.params.find((x) => /^(?:savepath|outputdir|targetpath|outputpath|destination|destpath|downloadpath|savedir|filepath|path)$/.test(x.key));
      return p ? { word, category: 'Write', because: `saves to the local path in "${p.name}"` } : { word, category: 'Read' };
    }
    case 'reverse': {
      // "reverse a transaction" acts; "reverse_geocode" only qualifies a noun.
      const t = next.find((w) => ['transaction', 'transactions', 'payment', 'charge', 'transfer', 'entry', 'entries', 'order'].includes(w));
      return t ? { word, category: 'Write', because: `reverses a ${t}` } : undefined;
    }
    case 'kill':
    case 'terminate': {
      // Ending a session (the agent's own terminal or browser session) closes it, as `close`
      // does; ending a process, an app or a query stops something running.
      const object = (following.length > 0 ? following : env.leadRest).slice(0, 4);
      const session = object.some((w) => w === 'session' || w === 'sessions');
      if (session && !object.some((w) => ['process', 'processes', 'pid', 'app', 'query', 'pod', 'job'].includes(w))) {
        return { word, category: 'Write', because: 'ends a session' };
      }
      return { word, category: 'Execute' };
    }
    default: {
      const c = VERBS[base];
      return c === undefined ? undefined : { word, category: c };
    }
  }
}

function moneyVerb(base: string, word: string, next: readonly string[], around: readonly string[], env: VerbEnv): VerbHit {
  const m = moneyWord(next, env) ?? (base === 'send' || base === 'confirm' ? undefined : moneyWord(around, env));
  const moneyServer = hasTrait(env, 'crypto', 'payments', 'trading');
  if (m) return { word, category: 'Financial', because: `the object is money (${m.word})`, ...(m.trait ? { trait: m.trait } : {}) };
  if (base !== 'send' && base !== 'confirm' && moneyServer && (base !== 'credit' || hasTrait(env, 'payments', 'crypto'))) {
    return { word, category: 'Financial', because: `the server ${moneyServer === 'trading' ? 'trades' : 'moves money'}`, trait: moneyServer };
  }
  if (base === 'confirm') return { word, category: 'Read' };
  return { word, category: 'Write' };
}

/** Whether `noun` after create/open/start names an execution environment on this server. */
export function execEnv(noun: string, env: VerbEnv): boolean {
  if (['sandbox', 'vm', 'container', 'pty', 'tty', 'terminal', 'shell', 'repl', 'process', 'dyno', 'console'].includes(noun)) return true;
  if (noun === 'session') return hasTrait(env, 'terminal', 'browser', 'device') !== undefined;
  return false;
}

export interface NameVerb extends VerbHit {
  readonly index: number;
}

/** Every verb in a tool name, in order. */
export function nameVerbs(words: readonly string[], env: VerbEnv): NameVerb[] {
  const out: NameVerb[] = [];
  words.forEach((w, i) => {
    const hit = resolveVerb(w, words.slice(i + 1), words, env);
    // A name word reads as a verb only in its own form ("list_followed_projects" has no "follow").
    if (hit && (VERBS[w] !== undefined || CONTEXTUAL_VERBS.has(w))) out.push({ ...hit, index: i });
  });
  return out;
}

/**
 * The verb a name is about. Usually the first; but an HTTP method before another verb
 * (`API-post-search`) yields to it, a preview of something (`preview_transaction_create`) is
 * a read, and alternatives (`create_or_update`, `get_or_create`) count as the riskier.
 */
export function primaryNameVerb(words: readonly string[], verbs: readonly NameVerb[]): { hit: NameVerb; note?: string } | undefined {
  let first = verbs[0];
  if (!first) return undefined;
  let later = verbs.slice(1);
  // `firecrawl_monitor_create`: "monitor" names the object, "create" the action. A later word
  // that is as often a noun or a qualifier does not take over: in `claim_test_pol` "test"
  // qualifies the token, and "claim" stays the action.
  if (NOUNABLE_VERBS.has(first.word) && later.length > 0 && !NOUNABLE_VERBS.has(later[0]!.word) && !words.includes('or')) {
    const noun = first.word;
    first = later[0]!;
    later = later.slice(1);
    return { hit: first, note: `"${noun}" is the object here` };
  }
  if (['preview', 'estimate', 'simulate', 'validate'].includes(first.word) && later.length > 0) return { hit: first, note: `"${first.word}" of "${later[0]!.word}"` };
  if (HTTP_METHODS.has(first.word) && first.word !== 'get' && first.word !== 'delete' && later.length > 0 && later[0]!.category === 'Read') {
    return { hit: later[0]!, note: `"${first.word}" is the HTTP method` };
  }
  const orAt = words.indexOf('or');
  if (orAt > 0) {
    const around = verbs.filter((v) => v.index === orAt - 1 || v.index === orAt + 1);
    if (around.length === 2) {
      const riskier = riskRank(around[0]!.category) >= riskRank(around[1]!.category) ? around[0]! : around[1]!;
      return { hit: riskier, note: `"${around[0]!.word} or ${around[1]!.word}": the riskier counts` };
    }
  }
  return { hit: first };
}
