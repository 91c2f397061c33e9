// The classifier's measured quality on the labelled set of real MCP tools (test/fixtures/risk/).
// The numbers are printed as test diagnostics; docs/risk.md publishes them (regenerate with
// `node dist/src/risk/report.js --write` after changing a rule or a label).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fixtureDir, loadLabelledSet } from './dataset.js';
import { missLine, summary } from './quality.js';
import { BEGIN, END, measureSplit, renderMarkdown } from './report.js';

const all = loadLabelledSet();
const dev = all.filter((s) => !s.heldOut);
const heldOut = all.filter((s) => s.heldOut);
const tools = (ss: typeof all) => ss.reduce((a, s) => a + s.tools.length, 0);
const labelled = (c: string) => all.reduce((a, s) => a + s.tools.filter((t) => t.label.category === c).length, 0);

test('the labelled set holds at least 400 real tools, every one labelled, with Financial and Destructive tools enough to test their rules', () => {
  assert.ok(tools(all) >= 400, `${tools(all)} tools`);
  assert.ok(labelled('Financial') >= 40, `${labelled('Financial')} Financial`);
  assert.ok(labelled('Destructive') >= 40, `${labelled('Destructive')} Destructive`);
  for (const s of all) {
    assert.match(s.package, /^(@[^/]+\/)?[^@]+@\d+\.\d+\.\d+/, `${s.id}: package@version`);
    for (const t of s.tools) assert.ok(t.label.why.length >= 8, `${s.id}/${t.tool.name}: a justification`);
  }
  const share = tools(heldOut) / tools(all);
  assert.ok(share >= 0.15 && share <= 0.3, `held-out share ${share}`);
});

test('classifies at least 92% of the labelled tools as labelled, and no Financial or Destructive tool as Read', (t) => {
  const r = measureSplit(all);
  const d = measureSplit(dev);
  const h = measureSplit(heldOut);
  for (const line of [summary('all', r), summary('dev (rules tuned on these servers)', d), summary('held-out', h)].join('\n').split('\n')) t.diagnostic(line);
  for (const m of r.misses) t.diagnostic('miss: ' + missLine(m));
  assert.deepEqual(r.dangerousAsRead.map(missLine), []);
  assert.ok(r.accuracy >= 0.92, `overall accuracy ${(r.accuracy * 100).toFixed(1)}% is below 92%`);
});

test('classifies a thousand tools in well under two seconds with the cache cold', () => {
  // Best of three: the machine may be busy with other suites (a typical quiet run is ~0.1 ms).
  const ms = Math.min(...[0, 1, 2].map(() => measureSplit(all).msPerTool));
  assert.ok(ms < 2, `${ms.toFixed(3)} ms per tool`);
});

test('docs/risk.md publishes the numbers the classifier measures now', () => {
  const doc = readFileSync(path.resolve(fixtureDir(), '../../../docs/risk.md'), 'utf8');
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  assert.ok(a >= 0 && b > a, 'docs/risk.md has the generated section markers');
  assert.equal(doc.slice(a, b + END.length), renderMarkdown(all), 'run `node dist/src/risk/report.js --write` and commit docs/risk.md');
});
