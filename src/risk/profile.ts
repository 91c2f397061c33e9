// What a server is about, read from its own description and from its tools taken together.
// A tool's words often mean one thing on one server and another elsewhere: `create_session`
// on a terminal server starts a shell; `transfer` on a wallet server moves tokens. The profile
// is computed once per server and shared by its tools.
import { createHash } from 'node:crypto';
import { canonicalJson } from '../util/canonical-json.js';
import { flat } from './text.js';
import type { ServerContext, ToolDefinition } from './types.js';

export const TRAITS = ['terminal', 'browser', 'device', 'payments', 'crypto', 'trading', 'database'] as const;
export type Trait = (typeof TRAITS)[number];

const TRAIT_PATTERNS: Readonly<Record<Trait, RegExp>> = {
  terminal: /\b(?:terminal|shell|pty|tty|repl|command line|bash|zsh|powershell|interactive process|long-running commands?)\b/,
  browser: /\b(?:browser|web ?page|playwright|puppeteer|chromium|chrome|devtools|stagehand|dom element)\b/,
  device: /\b(?:mobile device|android|ios|simulator|emulator|device screen|physical device|on the device|mobile app)\b/,
  payments: /\b(?:payments?|invoices?|refunds?|subscriptions?|checkouts?|billing|payouts?|charges?|prices?)\b/,
  crypto: /\b(?:wallets?|blockchain|on-?chain|erc-?20|erc-?721|nfts?|private ?key|smart contracts?|evm|web3|defi|solana|ethereum|usdc|x402)\b/,
  trading: /\b(?:exchanges?|order ?book|tickers?|futures|trading|leverage|ohlcv|market orders?|perpetual)\b/,
  database: /\b(?:sql|database|postgres(?:ql)?|mysql|mongodb|sqlite|collections?|tables?)\b/,
};

/** What the words mean to a person reading a reason. */
export const TRAIT_MEANING: Readonly<Record<Trait, string>> = {
  terminal: 'runs terminal sessions',
  browser: 'drives a live browser',
  device: 'drives a live device',
  payments: 'moves money (payments, billing)',
  crypto: 'holds a wallet or signs chain transactions',
  trading: 'trades on an exchange',
  database: 'runs a database',
};

export interface ServerProfile {
  readonly traits: ReadonlySet<Trait>;
  /** Per trait, where it was read: the server's own text, or the sibling tools that show it. */
  readonly evidence: ReadonlyMap<Trait, string>;
  /** `sha256:` of what the profile was computed from. */
  readonly hash: string;
  readonly trusted: boolean;
}

function toolText(t: ToolDefinition): string {
  // The first two sentences are what a tool is; the rest is usage advice that mentions other tools.
  const d = (t.description ?? '').split(/(?<=[.!?])\s+/).slice(0, 2).join(' ');
  return flat(`${t.name.replace(/[_\-.]+/g, ' ')} ${t.title ?? ''} ${d}`);
}

/** Builds the profile of a server from its context. Pure and deterministic. */
export function serverProfile(server: ServerContext = {}): ServerProfile {
  const own = flat(`${server.name ?? ''} ${server.description ?? ''} ${server.instructions ?? ''}`);
  const tools = server.tools ?? [];
  const texts = tools.map(toolText);
  const traits = new Set<Trait>();
  const evidence = new Map<Trait, string>();
  for (const trait of TRAITS) {
    const re = TRAIT_PATTERNS[trait];
    const m = own.match(re);
    if (m) {
      traits.add(trait);
      evidence.set(trait, `server description: "${m[0]}"`);
      continue;
    }
    const hits = tools.filter((_, i) => re.test(texts[i] ?? ''));
    // Two tools, and at least a tenth of them, so one stray mention does not colour a server.
    if (hits.length >= 2 && hits.length * 10 >= tools.length) {
      traits.add(trait);
      const names = hits.slice(0, 3).map((t) => t.name).join(', ');
      evidence.set(trait, `sibling tools: ${names}${hits.length > 3 ? `, … (${hits.length})` : ''}`);
    }
  }
  const basis = {
    name: server.name ?? '',
    description: server.description ?? '',
    instructions: server.instructions ?? '',
    trusted: server.trusted === true,
    tools: texts,
  };
  const hash = 'sha256:' + createHash('sha256').update(canonicalJson(basis)).digest('hex');
  return { traits, evidence, hash, trusted: server.trusted === true };
}
