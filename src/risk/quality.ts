// Measuring the classifier against the labelled set: accuracy overall and per category, the
// confusion matrix, severity agreement, and the one error that must never happen (money or
// destruction filed as a read). Pure: the caller loads the set and chooses the classifier.
import type { LabelledServer, LabelledTool } from './dataset.js';
import { CATEGORIES, SEVERITIES } from './types.js';
import type { Category, Classification } from './types.js';

export interface Miss {
  readonly item: LabelledTool;
  readonly got: Classification;
}

export interface QualityReport {
  readonly servers: number;
  readonly tools: number;
  readonly correct: number;
  readonly accuracy: number;
  /** Per labelled category: how many, how many classified so (recall), and precision. */
  readonly perCategory: Readonly<Record<Category, { n: number; correct: number; recall: number; predicted: number; precision: number }>>;
  /** confusion[label][predicted] */
  readonly confusion: Readonly<Record<Category, Readonly<Record<Category, number>>>>;
  /** Share of tools whose severity equals the label's; and within one step of it. */
  readonly severityExact: number;
  readonly severityWithinOne: number;
  /** Share of tools classified no lower in severity than labelled. */
  readonly severityNotUnder: number;
  /** Financial or Destructive tools the classifier called Read: must be empty. */
  readonly dangerousAsRead: readonly Miss[];
  readonly misses: readonly Miss[];
  /** Classifications per millisecond of the timed run, cache cold. */
  readonly msPerTool: number;
}

const ratio = (a: number, b: number): number => (b === 0 ? 0 : a / b);

export function measure(servers: readonly LabelledServer[], classify: (server: LabelledServer) => Classification[], now: () => number = () => performance.now()): QualityReport {
  const zero = () => Object.fromEntries(CATEGORIES.map((c) => [c, 0])) as Record<Category, number>;
  const confusion = Object.fromEntries(CATEGORIES.map((c) => [c, zero()])) as Record<Category, Record<Category, number>>;
  const misses: Miss[] = [];
  const dangerous: Miss[] = [];
  let n = 0;
  let correct = 0;
  let sevExact = 0;
  let sevNear = 0;
  let sevNotUnder = 0;
  let elapsed = 0;
  for (const s of servers) {
    const t0 = now();
    const got = classify(s);
    elapsed += now() - t0;
    s.tools.forEach((item, i) => {
      const c = got[i]!;
      n++;
      confusion[item.label.category][c.category]++;
      if (c.category === item.label.category) correct++;
      else misses.push({ item, got: c });
      if ((item.label.category === 'Financial' || item.label.category === 'Destructive') && c.category === 'Read') dangerous.push({ item, got: c });
      const d = SEVERITIES.indexOf(c.severity) - SEVERITIES.indexOf(item.label.severity);
      if (d === 0) sevExact++;
      if (Math.abs(d) <= 1) sevNear++;
      if (d >= 0) sevNotUnder++;
    });
  }
  const perCategory = {} as Record<Category, { n: number; correct: number; recall: number; predicted: number; precision: number }>;
  for (const c of CATEGORIES) {
    const row = confusion[c];
    const labelled = CATEGORIES.reduce((a, p) => a + row[p], 0);
    const predicted = CATEGORIES.reduce((a, l) => a + confusion[l][c], 0);
    perCategory[c] = { n: labelled, correct: row[c], recall: ratio(row[c], labelled), predicted, precision: ratio(row[c], predicted) };
  }
  return {
    servers: servers.length,
    tools: n,
    correct,
    accuracy: ratio(correct, n),
    perCategory,
    confusion,
    severityExact: ratio(sevExact, n),
    severityWithinOne: ratio(sevNear, n),
    severityNotUnder: ratio(sevNotUnder, n),
    dangerousAsRead: dangerous,
    misses,
    msPerTool: ratio(elapsed, n),
  };
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;

/** Accuracy lines for a terminal: overall, then per category. */
export function summary(title: string, r: QualityReport): string {
  const lines = [`${title}: ${r.correct}/${r.tools} tools from ${r.servers} servers, accuracy ${pct(r.accuracy)}`];
  for (const c of CATEGORIES) {
    const p = r.perCategory[c];
    if (p.n === 0 && p.predicted === 0) continue;
    lines.push(`  ${c.padEnd(11)} ${String(p.correct).padStart(4)}/${String(p.n).padEnd(4)} recall ${pct(p.recall).padStart(6)}  precision ${pct(p.precision).padStart(6)}`);
  }
  lines.push(`  severity: exact ${pct(r.severityExact)}, within one step ${pct(r.severityWithinOne)}, not under the label ${pct(r.severityNotUnder)}`);
  lines.push(`  Financial or Destructive classified Read: ${r.dangerousAsRead.length}`);
  return lines.join('\n');
}

/** The confusion matrix as a Markdown table: rows are labels, columns verdicts. */
export function confusionTable(r: QualityReport): string {
  const cats = CATEGORIES.filter((c) => r.perCategory[c].n > 0 || r.perCategory[c].predicted > 0);
  const head = `| label ↓ / classified → | ${cats.join(' | ')} | total | recall |`;
  const sep = `|---|${cats.map(() => '---:').join('|')}|---:|---:|`;
  const rows = cats
    .filter((c) => r.perCategory[c].n > 0)
    .map((l) => `| **${l}** | ${cats.map((p) => (l === p ? `**${r.confusion[l][p]}**` : String(r.confusion[l][p] || '·'))).join(' | ')} | ${r.perCategory[l].n} | ${pct(r.perCategory[l].recall)} |`);
  const precision = `| precision | ${cats.map((p) => (r.perCategory[p].predicted ? pct(r.perCategory[p].precision) : '–')).join(' | ')} | | |`;
  return [head, sep, ...rows, precision].join('\n');
}

export function missLine(m: Miss): string {
  const top = m.got.reasons.filter((r) => r.category === m.got.category).slice(0, 2).map((r) => r.text).join('; ');
  return `${m.item.server}/${m.item.tool.name}: labelled ${m.item.label.category} (${m.item.label.why}), classified ${m.got.category} — ${top || m.got.reasons[0]?.text || 'no signal'}`;
}
