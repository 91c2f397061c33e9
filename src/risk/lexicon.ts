// The words and phrases the classifier recognises, each with what it speaks for. Kept as data so
// the rules in classify.ts stay short and every reason can quote the entry that produced it.
// Entries are general English and API vocabulary, never names of particular tools.
import type { Category } from './types.js';

type Acting = Exclude<Category, 'Unknown'>;

/** Verbs whose meaning does not depend on the object or the server. */
export const VERBS: Readonly<Record<string, Acting>> = Object.freeze({
  // Read: return information, change nothing of consequence.
  get: 'Read', list: 'Read', read: 'Read', search: 'Read', find: 'Read', fetch: 'Read', query: 'Read',
  describe: 'Read', show: 'Read', view: 'Read', retrieve: 'Read', lookup: 'Read', look: 'Read', check: 'Read',
  count: 'Read', inspect: 'Read', explain: 'Read', analyze: 'Read', analyse: 'Read', preview: 'Read',
  estimate: 'Read', validate: 'Read', verify: 'Read', resolve: 'Read', extract: 'Read', scrape: 'Read',
  crawl: 'Read', map: 'Read', browse: 'Read', monitor: 'Read', watch: 'Read', track: 'Read', compare: 'Read',
  calculate: 'Read', compute: 'Read', summarize: 'Read', summarise: 'Read', whoami: 'Read', ping: 'Read',
  echo: 'Read', wait: 'Read', poll: 'Read', diff: 'Read', export: 'Read', generate: 'Read', screenshot: 'Read',
  snapshot: 'Read', capture: 'Read', aggregate: 'Read', research: 'Read', discover: 'Read', identify: 'Read',
  print: 'Read', render: 'Read', convert: 'Read', parse: 'Read', translate: 'Read', format: 'Read',
  lint: 'Read', audit: 'Read', profile: 'Read', trace: 'Read', rank: 'Read', rerank: 'Read', scan: 'Read',
  detect: 'Read', measure: 'Read', review: 'Read', recommend: 'Read', suggest: 'Read', plan: 'Read',
  report: 'Read', tail: 'Read', grep: 'Read', locate: 'Read', geocode: 'Read', sample: 'Read',
  observe: 'Read', collect: 'Read', test: 'Read', learn: 'Read', see: 'Read', obtain: 'Read', download: 'Read',
  understand: 'Read', evaluate: 'Read', assess: 'Read', debug: 'Read', diagnose: 'Read', screen: 'Read',
  examine: 'Read', study: 'Read', determine: 'Read', return: 'Read', take: 'Read', handle: 'Write',
  // Write: create or change state that stays, within the system the tool manages.
  create: 'Write', add: 'Write', update: 'Write', set: 'Write', put: 'Write', post: 'Write', edit: 'Write',
  modify: 'Write', change: 'Write', patch: 'Write', upsert: 'Write', insert: 'Write', write: 'Write',
  save: 'Write', upload: 'Write', rename: 'Write', move: 'Write', copy: 'Write', assign: 'Write',
  unassign: 'Write', attach: 'Write', detach: 'Write', link: 'Write', unlink: 'Write', tag: 'Write',
  untag: 'Write', label: 'Write', archive: 'Write', unarchive: 'Write', restore: 'Write', enable: 'Write',
  disable: 'Write', toggle: 'Write', pause: 'Write', mute: 'Write', unmute: 'Write', schedule: 'Write',
  register: 'Write', invite: 'Write', follow: 'Write', unfollow: 'Write', like: 'Write', unlike: 'Write',
  bookmark: 'Write', block: 'Write', unblock: 'Write', comment: 'Write', reply: 'Write', react: 'Write',
  send: 'Write', publish: 'Write', push: 'Write', commit: 'Write', merge: 'Write', fork: 'Write',
  close: 'Write', lock: 'Write', unlock: 'Write', star: 'Write', unstar: 'Write', subscribe: 'Write',
  unsubscribe: 'Write', configure: 'Write', import: 'Write', append: 'Write', mark: 'Write',
  acknowledge: 'Write', ack: 'Write', reject: 'Write', accept: 'Write', respond: 'Write', submit: 'Write',
  replay: 'Write', resend: 'Write', notify: 'Write', share: 'Write', grant: 'Write', provision: 'Write',
  allocate: 'Write', release: 'Write', reserve: 'Write', login: 'Write', logout: 'Write', disconnect: 'Write',
  resize: 'Write', emulate: 'Write', clear: 'Write', stop: 'Write', cancel: 'Write', renew: 'Write',
  draft: 'Write', reconnect: 'Write', scale: 'Write', manage: 'Write', store: 'Write', replace: 'Write',
  duplicate: 'Write', clone: 'Write', sync: 'Write', refresh: 'Write', invalidate: 'Write', rotate: 'Write',
  activate: 'Write', deactivate: 'Write', freeze: 'Write', unfreeze: 'Write', transition: 'Write',
  reorder: 'Write', pin: 'Write', unpin: 'Write', vote: 'Write', rate: 'Write', complete: 'Write',
  init: 'Write', initialize: 'Write', setup: 'Write', ingest: 'Write', hide: 'Write', highlight: 'Write',
  remember: 'Write', retweet: 'Write', tweet: 'Write', message: 'Write', email: 'Write', dm: 'Write',
  annotate: 'Write', increment: 'Write', decrement: 'Write', record: 'Write', revise: 'Write', adjust: 'Write',
  expose: 'Write', unexpose: 'Write', confirm: 'Write', approve: 'Write', rebase: 'Write', revert: 'Write',
  prepare: 'Write', book: 'Write', new: 'Write', open: 'Write',
  connect: 'Write', forward: 'Write', mount: 'Write', unmount: 'Write', resume: 'Write', reset: 'Write',
  // Execute: run code or processes, drive a live environment, kick off jobs with effects elsewhere.
  run: 'Execute', exec: 'Execute', execute: 'Execute', eval: 'Execute', invoke: 'Execute', trigger: 'Execute',
  start: 'Execute', launch: 'Execute', spawn: 'Execute', deploy: 'Execute', build: 'Execute',
  install: 'Execute', rerun: 'Execute', restart: 'Execute', reboot: 'Execute', apply: 'Execute',
  rollout: 'Execute', rollback: 'Execute', promote: 'Execute', interact: 'Execute', act: 'Execute',
  kill: 'Execute', terminate: 'Execute', perform: 'Execute', automate: 'Execute', compile: 'Execute',
  migrate: 'Execute', upgrade: 'Execute', downgrade: 'Execute', drain: 'Execute', cordon: 'Execute',
  uncordon: 'Execute', dispatch: 'Execute', navigate: 'Execute', click: 'Execute', tap: 'Execute',
  press: 'Execute', fill: 'Execute', hover: 'Execute', drag: 'Execute', swipe: 'Execute', scroll: 'Execute',
  redeploy: 'Execute', shell: 'Execute', ssh: 'Execute',
  // Destructive: remove stored data or resources for good.
  delete: 'Destructive', drop: 'Destructive', destroy: 'Destructive', purge: 'Destructive',
  wipe: 'Destructive', erase: 'Destructive', truncate: 'Destructive', uninstall: 'Destructive',
  revoke: 'Destructive', cleanup: 'Destructive', nuke: 'Destructive', discard: 'Destructive',
  obliterate: 'Destructive', shred: 'Destructive', expunge: 'Destructive', deprovision: 'Destructive',
  trash: 'Destructive', remove: 'Destructive',
  // Financial: move money or value, or create or change what someone pays.
  pay: 'Financial', charge: 'Financial', refund: 'Financial', withdraw: 'Financial', deposit: 'Financial',
  swap: 'Financial', stake: 'Financial', unstake: 'Financial', bridge: 'Financial', buy: 'Financial',
  sell: 'Financial', purchase: 'Financial', trade: 'Financial', bid: 'Financial', borrow: 'Financial',
  lend: 'Financial', repay: 'Financial', topup: 'Financial', bill: 'Financial', debit: 'Financial',
  tip: 'Financial', donate: 'Financial', settle: 'Financial', payout: 'Financial', fund: 'Financial',
  redeem: 'Financial', liquidate: 'Financial', invoice: 'Financial', transfer: 'Financial',
  claim: 'Financial', mint: 'Financial', credit: 'Financial', checkout: 'Financial', unwrap: 'Financial',
  wrap: 'Financial',
});

/**
 * Verbs whose category depends on what follows or on the server; the classifier resolves them
 * (see `contextualVerb` in classify.ts). Listed here so a reason can say why it looked further.
 */
export const CONTEXTUAL_VERBS = new Set([
  'type', 'select', 'open', 'new', 'remove', 'reset', 'start', 'stop', 'close', 'transfer', 'claim', 'mint',
  'credit', 'post', 'upload', 'drop', 'terminate', 'kill', 'resume', 'evaluate', 'confirm', 'send', 'download',
  'generate', 'record', 'clear', 'fill', 'charge', 'fund', 'bill', 'wrap', 'map', 'connect', 'test', 'screen',
  'write', 'handle', 'reverse',
]);

/**
 * Verbs that are as often nouns (`firecrawl_monitor_create`, `crawl_status`): when a name holds
 * one of these and a later verb, the later verb is the action.
 */
export const NOUNABLE_VERBS = new Set([
  'monitor', 'search', 'interact', 'crawl', 'record', 'map', 'trace', 'test', 'export', 'import', 'report',
  'review', 'profile', 'comment', 'message', 'email', 'tag', 'label', 'link', 'draft', 'schedule', 'order',
  'transfer', 'charge', 'deposit', 'credit', 'bookmark', 'like', 'block', 'snapshot', 'screenshot', 'capture',
  'sample', 'plan', 'query', 'request', 'vote', 'rate', 'share', 'fund', 'tweet', 'stake', 'bid', 'trade',
  'sync', 'build', 'check', 'diff', 'echo', 'format', 'scan', 'audit', 'invoice', 'refund', 'payout', 'store',
  'watch', 'post', 'set', 'view', 'claim', 'reply', 'star', 'pin', 'lock', 'release', 'backup', 'restore',
]);

/** Objects that, created or updated, are code that then runs: a Worker script, a migration. */
export const EXEC_OBJECTS = new Set([
  'script', 'scripts', 'worker', 'lambda', 'function', 'functions', 'migration', 'migrations', 'run', 'runs',
  'build', 'builds',
]);

/** Heads that make a money word a mere qualifier: a discount group is not a discount. */
export const META_HEADS = new Set([
  'group', 'groups', 'setting', 'settings', 'template', 'templates', 'category', 'categories', 'folder',
  'folders', 'label', 'labels', 'tag', 'tags', 'type', 'types', 'note', 'notes', 'view', 'views', 'report',
  'reports', 'documentation', 'docs', 'schema', 'schemas',
]);

/** Words that make an HTTP method in a name (`API-post-search`): a later verb is the real action. */
export const HTTP_METHODS = new Set(['get', 'post', 'put', 'patch', 'delete']);

/** Nouns that mean money or value wherever they appear. */
export const MONEY_NOUNS = new Set([
  'payment', 'payments', 'refund', 'refunds', 'invoice', 'invoices', 'subscription', 'subscriptions',
  'price', 'prices', 'pricing', 'coupon', 'coupons', 'discount', 'discounts', 'payout', 'payouts',
  'checkout', 'checkouts', 'wallet', 'nft', 'nfts', 'erc20', 'erc721', 'erc1155', 'usdc', 'usdt',
  'leverage', 'margin', 'futures', 'stake', 'funds', 'money', 'cash', 'bank', 'dispute', 'disputes',
  'adjustment', 'adjustments', 'ledger', 'billing', 'fee', 'fees', 'charge', 'charges', 'debit',
  'transfer', 'withdrawal', 'deposit', 'split', 'splits', 'salary', 'payroll', 'escrow', 'loan',
  'order', 'orders', 'trade', 'trades', 'position', 'positions', 'credits', 'credit', 'balance',
  'transaction', 'transactions',
]);

/** Of MONEY_NOUNS, those that also have ordinary meanings and count only on a money server. */
export const MONEY_NOUNS_NEEDING_CONTEXT = new Set([
  'order', 'orders', 'position', 'positions', 'credits', 'credit', 'split', 'splits', 'margin', 'charge',
  'charges', 'transfer', 'balance', 'fee', 'fees', 'stake', 'deposit', 'trade', 'trades', 'leverage',
  'transaction', 'transactions', 'subscription', 'subscriptions',
]);

/** Nouns that name crypto assets once the server is about chains or wallets. */
export const CRYPTO_NOUNS = new Set([
  'token', 'tokens', 'coin', 'coins', 'eth', 'bnb', 'btc', 'sol', 'matic', 'pol', 'native', 'gas', 'chain',
  'onchain', 'contract', 'pool', 'liquidity', 'airdrop', 'reward', 'rewards', 'staking', 'vault',
]);

/** Nouns that, after a verb like start/stop, mean observing rather than acting. */
export const OBSERVING_NOUNS = new Set([
  'search', 'recording', 'record', 'trace', 'tracing', 'video', 'screencast', 'profile', 'profiling',
  'capture', 'monitoring', 'watch', 'log', 'logs', 'heapsnapshot', 'snapshot', 'screenshot', 'listening',
]);

/** Nouns that, with a verb like create/start/open, name an execution environment. */
export const EXEC_ENV_NOUNS = new Set([
  'session', 'terminal', 'shell', 'pty', 'tty', 'process', 'repl', 'sandbox', 'vm', 'container', 'console',
  'dyno', 'pod', 'job', 'pipeline', 'workflow', 'build', 'task', 'agent', 'runner', 'worker',
]);

/** A name without a verb but with one of these nouns reports something: `cache-stats`, `get-env`. */
export const REPORT_NOUNS = new Set([
  'stats', 'statistics', 'info', 'information', 'status', 'details', 'history', 'logs', 'metrics', 'schema',
  'version', 'config', 'elevation', 'directions', 'balance', 'usage', 'summary', 'docs', 'documentation',
  'help', 'health', 'overview', 'whoami', 'me', 'self', 'matrix', 'distance', 'timeline', 'feed',
  'mentions', 'insights', 'analytics', 'report', 'pricing', 'networks', 'env', 'environment', 'time',
  'indexes', 'mappings', 'shards', 'tables', 'activity', 'commands', 'suggestions',
]);

/** Objects whose creation hands out a secret. */
export const CREDENTIAL_NOUNS = new Set([
  'secret', 'secrets', 'credential', 'credentials', 'password', 'passwords', 'apikey', 'dsn', 'dsns',
  'keys', 'key', 'token', 'tokens', 'env', 'passphrase', 'mnemonic', 'privatekey', 'certificate', 'cert',
]);

/** Cheap, reversible or personal-scale writes: the verbs that keep a Write at Low severity. */
export const LOW_WRITE_VERBS = new Set([
  'like', 'unlike', 'bookmark', 'follow', 'unfollow', 'mute', 'unmute', 'react', 'star', 'unstar', 'label',
  'tag', 'untag', 'resize', 'emulate', 'highlight', 'hide', 'toggle', 'acknowledge', 'ack', 'mark', 'draft',
  'pin', 'unpin', 'vote', 'block', 'unblock', 'reconnect', 'disconnect', 'respond', 'reject', 'assign',
  'unassign', 'link', 'unlink',
]);

export interface Phrase {
  readonly re: RegExp;
  readonly category: Acting;
  readonly weight: number;
  /** How a reason quotes it. */
  readonly label: string;
  /**
   * The phrase outweighs the verb that names the call: `any` verdict, or only a `mutating` one
   * (a read that mentions a payment stays a read).
   */
  readonly override?: 'any' | 'mutating';
}

/** Description phrases, tried against the whole description (lower-cased, whitespace collapsed). */
export const PHRASES: readonly Phrase[] = Object.freeze([
  // Destructive
  { re: /\bpermanently (?:delete|remove|destroy|erase|close|purge)s?\b/, category: 'Destructive', weight: 3, label: 'permanently deletes', override: 'mutating' },
  { re: /\b(?:cannot|can ?not|can't) be (?:undone|reversed|recovered)|\birreversibl[ey]\b/, category: 'Destructive', weight: 1.5, label: 'cannot be undone' },
  { re: /\b(?:will be|is|are|gets?) (?:lost|wiped|erased|destroyed)\b/, category: 'Destructive', weight: 2, label: 'data will be lost' },
  { re: /\bdrops? (?:the |a |an )?(?:table|database|collection|index|schema|view)s?\b/, category: 'Destructive', weight: 2.5, label: 'drops a table or database' },
  { re: /\b(?:delete|remove)s? (?:all|every|an entire|the entire)\b/, category: 'Destructive', weight: 2, label: 'deletes everything matching' },
  // Execute
  {
    re: /\b(?:execute|run|evaluate|eval)s? (?:a |an |the |any |arbitrary |raw |custom )?(?:single )?(?:shell |terminal |bash |system |kubectl |javascript |js |python |sql |playwright )?(?:command|script|code|javascript|snippet|expression|statement|program)s?\b/,
    category: 'Execute',
    weight: 3,
    label: 'executes commands or code',
  },
  { re: /\barbitrary (?:code|command|commands|javascript|js|sql|shell|script)\b|\brce\b|remote code execution/, category: 'Execute', weight: 3, label: 'arbitrary code' },
  { re: /\b(?:execute|run)s? (?:a |an |the )?(?:raw )?sql\b|\bsql (?:query|statement|transaction)s? against\b/, category: 'Execute', weight: 2.5, label: 'runs SQL' },
  { re: /\bdeploy(?:s|ing)?\b/, category: 'Execute', weight: 1.5, label: 'deploys' },
  { re: /\btriggers? (?:a |an |the )?(?:new )?(?:ci |circleci )?(?:pipeline|workflow|build|job|run|deployment|rollback)s?\b/, category: 'Execute', weight: 3, label: 'triggers a pipeline or job' },
  { re: /\b(?:in|on|inside) (?:a |the )?(?:live |running )?(?:browser|page|web ?page|device|emulator|simulator|pod|container|sandbox|dyno)\b/, category: 'Execute', weight: 0.5, label: 'acts inside a live environment' },
  { re: /\bautonomous(?:ly)?\b[^.]{0,80}\b(?:interact(?:s|ing)? with|click|fill|act on|complete (?:the |a )?(?:given )?task|perform actions)/, category: 'Execute', weight: 2, label: 'acts autonomously' },
  // Read
  { re: /\brun(?:s)? (?:an? )?(?:inference|prediction|classification)\b|\bchat completions?\b|\b(?:generate|create)s? (?:text )?embeddings\b/, category: 'Read', weight: 3, label: 'asks a model for output' },
  { re: /\bread-?only\b/, category: 'Read', weight: 3, label: 'read-only' },
  { re: /\bwithout (?:creating|applying|billing|changing|modifying|saving|making (?:any )?changes|submitting|sending|charging|executing)\b/, category: 'Read', weight: 3, label: 'without applying it' },
  { re: /\b(?:does not|doesn't|will not|won't|never) (?:modify|change|create|write|alter|mutate|charge|bill)\b/, category: 'Read', weight: 3, label: 'does not modify' },
  { re: /\bdry[- ]?run\b/, category: 'Read', weight: 3, label: 'dry run' },
  // Write
  { re: /\bmodif(?:y|ies) (?:\w+ ){0,2}data\b|\bdata modification\b/, category: 'Write', weight: 2, label: 'modifies data' },
  { re: /\boverwrit(?:e|es|ing)\b/, category: 'Write', weight: 1, label: 'overwrites' },
  // Financial
  { re: /\b(?:send|transfer)s? (?:\w+ ){0,2}(?:money|funds|payment|payments|tokens?|usdc|eth|bnb|crypto|coins?)\b/, category: 'Financial', weight: 3, label: 'transfers funds or tokens', override: 'mutating' },
  { re: /\b(?:paid|pays?) automatically\b|\bpays? (?:\w+ ){0,3}from (?:the |your )?(?:local )?wallet\b|\bpaying (?:\w+ ){0,3}from (?:the |your )?(?:local )?wallet\b/, category: 'Financial', weight: 3, label: 'pays from a wallet', override: 'any' },
  { re: /\brequires? (?:an? )?(?:x402 |usdc |crypto )+payment\b/, category: 'Financial', weight: 2, label: 'requires a payment', override: 'mutating' },
  { re: /\b(?:refund|refunds|refunding)\b(?! \d+ credit)/, category: 'Financial', weight: 1.5, label: 'refunds' },
  { re: /\b(?:charge|bill)s? (?:a |the |your )?(?:customer|card|subscription|one-time|payment method)\b|\bone-time charge\b|\bimmediate billing\b/, category: 'Financial', weight: 3, label: 'charges a customer', override: 'mutating' },
  { re: /\b(?:place|submit|create)s? (?:a |an |the )?(?:market |limit |futures |buy |sell |stop )+orders?\b/, category: 'Financial', weight: 3, label: 'places an order', override: 'mutating' },
  { re: /\bmoves? money\b|\bmoves? funds\b/, category: 'Financial', weight: 3, label: 'moves money', override: 'mutating' },
  { re: /\b(?:withdraw|deposit)s? (?:funds|money|tokens?)\b/, category: 'Financial', weight: 3, label: 'deposits or withdraws funds', override: 'mutating' },
  { re: /\bspend (?:your |the )?(?:erc20 |erc-20 )?tokens\b/, category: 'Financial', weight: 3, label: 'spends tokens', override: 'mutating' },
  { re: /\b(?:launch|deploy|create)s? (?:a |an |the )?(?:new )?(?:erc20 |erc-20 )?token\b(?! for)/, category: 'Financial', weight: 2, label: 'launches a token', override: 'mutating' },
  { re: /\b(?:claim)s? (?:\w+ ){0,2}(?:fees|rewards?|tokens?|airdrops?)\b/, category: 'Financial', weight: 3, label: 'claims fees or rewards', override: 'mutating' },
  { re: /\bbillable\b|\bbilled\b.*\busage\b/, category: 'Financial', weight: 1, label: 'billable usage' },
]);
