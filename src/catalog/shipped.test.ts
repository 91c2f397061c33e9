import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CLASSIFIER_VERSION, RiskClassifier } from '../risk/index.js';
import { serverContextOf, toolDefinitionHash } from './record.js';
import { SHIPPED_DIR, readShippedCatalog, readShippedFile } from './shipped.js';

const REGENERATE = 'npm run build && node scripts/catalog.mjs';
const shipped = readShippedCatalog();

test('ships the official reference servers that start without credentials, each from a named npm package version', () => {
  const keys = shipped.map((s) => s.key);
  for (const k of ['everything', 'filesystem', 'memory']) assert.ok(keys.includes(k), `catalog/${k}.json is missing from ${SHIPPED_DIR}: run ${REGENERATE}`);
  for (const s of shipped) {
    assert.match(s.package, /^@modelcontextprotocol\/server-[a-z-]+@\d[\w.+-]*$/, s.file);
    assert.equal(s.regenerate, REGENERATE, s.file);
    assert.ok(s.tools.length > 0, `${s.file} lists no tools`);
    assert.ok(!JSON.stringify(s.server.target).includes(tmpdir()), `${s.file} records a path of the machine that scanned it`);
  }
});

test('every shipped definition hash is the hash of the definition stored beside it', () => {
  for (const s of shipped) {
    for (const t of s.tools) assert.equal(t.definitionHash, toolDefinitionHash(t.definition), `${s.key}/${t.name}: the file was edited by hand; run ${REGENERATE}`);
  }
});

test('the shipped verdicts are what the current classifier gives for the stored definitions', () => {
  for (const s of shipped) {
    const stale = `${path.basename(s.file)} was classified by another classifier (or by hand): regenerate the shipped catalogue with ${REGENERATE}`;
    assert.equal(s.classifierVersion, CLASSIFIER_VERSION, stale);
    const context = serverContextOf(s.server, s.tools.map((t) => t.definition));
    const now = new RiskClassifier().classifyServer(context);
    for (const [i, t] of s.tools.entries()) {
      assert.deepEqual(t.classification, JSON.parse(JSON.stringify(now[i])), `${s.key}/${t.name}: ${stale}`);
    }
  }
});

test('refuses a shipped file that is not a catalogue entry, naming the file and the problem', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-shipped-'));
  try {
    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ format: 1, key: 'Bad Key', tools: [] }));
    assert.throws(() => readShippedFile(bad), (err: Error) => err.message.startsWith(`the shipped catalogue file ${bad} is not a catalogue entry: `) && /\/key: /.test(err.message));
    writeFileSync(bad, '{ not json');
    assert.throws(() => readShippedFile(bad), /cannot be read/);
    const good = JSON.parse(JSON.stringify({ ...shipped[0]!, file: undefined }));
    writeFileSync(path.join(dir, 'bad.json'), JSON.stringify(good));
    writeFileSync(path.join(dir, 'copy.json'), JSON.stringify(good));
    assert.throws(() => readShippedCatalog(dir), new RegExp(`two shipped catalogue files use the key '${good.key}'`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an installation without the catalogue folder has an empty shipped catalogue', () => {
  assert.deepEqual(readShippedCatalog(path.join(tmpdir(), 'policylayer-no-such-catalog-dir')), []);
});
