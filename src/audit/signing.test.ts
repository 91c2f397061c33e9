import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, verify } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { createLogger } from '../telemetry/logger.js';
import { GENESIS_HASH } from './event.js';
import {
  checkpointSignatureValid,
  checkpointSigningText,
  keyFingerprint,
  loadOrCreateSigningKey,
  openSigningKey,
  prunableRecords,
  pruneAnchor,
  publicKeyPem,
  readPublicKey,
  readSigningKey,
  signCheckpoint,
  type AuditSigningKey,
} from './signing.js';

const dir = mkdtempSync(path.join(tmpdir(), 'policylayer-audit-signing-'));
let files = 0;
const freshFile = (name = 'audit-signing.key') => path.join(dir, `case-${++files}`, name);
after(() => rmSync(dir, { recursive: true, force: true }));

const T = 1_700_000_000_000;
const content = { stream: '3f2a9c1d-5b7e-4f0a-9d2c-8e1f6a4b3c21', seq: 1200, hash: 'ab'.repeat(32), at: T, prunedAt: T + 86_400_000 };

function newKey(): AuditSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { keyId: keyFingerprint(publicKey), privateKey, publicKey };
}

/** A logger whose lines are kept, parsed. */
function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger({ level: 'info', destination }), lines };
}

/** Lets pino's asynchronous destination catch up. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('the audit signing key file', () => {
  it('is created with mode 0600 when missing, its folder too, and read back as the same key', () => {
    const file = freshFile();
    const { key, created } = loadOrCreateSigningKey(file);
    assert.equal(created, true);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    const again = loadOrCreateSigningKey(file);
    assert.equal(again.created, false);
    assert.equal(again.key.keyId, key.keyId);
    assert.deepEqual(readdirNames(path.dirname(file)), ['audit-signing.key'], 'no temporary file is left behind');
  });

  it('is named by the first 16 hex digits of the SHA-256 of its public key (SPKI, DER)', () => {
    const key = newKey();
    const expected = createHash('sha256').update(key.publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
    assert.equal(key.keyId, expected);
    assert.equal(keyFingerprint(key.privateKey), expected, 'a private key is named by its public half');
  });

  it('names the file that is not an Ed25519 private key', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['garbage', 'not a key\n', /is not an Ed25519 private key in PKCS#8 PEM/],
      ['public', publicKeyPem(newKey().publicKey), /it holds a public key, and signing needs the private key/],
      ['rsa', generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, /is an rsa key, not an Ed25519 one/],
    ];
    for (const [name, text, why] of cases) {
      const file = freshFile(`${name}.key`);
      mkdirFor(file);
      writeFileSync(file, text);
      assert.throws(() => readSigningKey(file), (err: Error) => err.message.includes(file) && why.test(err.message), name);
      assert.throws(() => loadOrCreateSigningKey(file), (err: Error) => err.message.includes(file), `${name}: an invalid key is never replaced`);
      assert.equal(readFileSync(file, 'utf8'), text);
    }
  });

  it('reads a public key file, what `audit public-key` prints included, or the public half of a private key file', () => {
    const key = newKey();
    const printed = freshFile('printed.pub');
    mkdirFor(printed);
    writeFileSync(printed, `audit signing key ${key.keyId} (fingerprint: …)\n${publicKeyPem(key.publicKey)}`);
    assert.equal(keyFingerprint(readPublicKey(printed)), key.keyId);
    const priv = freshFile('private.key');
    mkdirFor(priv);
    writeFileSync(priv, key.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    assert.equal(keyFingerprint(readPublicKey(priv)), key.keyId);
    const bad = freshFile('bad.pub');
    mkdirFor(bad);
    writeFileSync(bad, 'nothing\n');
    assert.throws(() => readPublicKey(bad), new RegExp(`public key ${escape(bad)} is not a PEM public key`));
    assert.throws(() => readPublicKey(path.join(dir, 'missing.pub')), /public key .*missing\.pub: cannot read it: no such file/);
  });
});

describe('opening the audit signing key the config names', () => {
  it('creates the default key when retention needs it, mode 0600, and logs its fingerprint', async () => {
    const file = freshFile();
    const { logger, lines } = capturingLogger();
    const key = openSigningKey({ signingKey: file, signingKeyNamed: false, retentionMs: 30 * 86_400_000 }, logger);
    assert.ok(key !== undefined);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    await settle();
    const line = lines.find((l) => l.msg !== undefined && String(l.msg).startsWith('audit signing key'));
    assert.ok(line !== undefined, 'an info line about the new key');
    assert.equal(line.level, 30);
    assert.equal(line.fingerprint, key.keyId);
    assert.equal(line.file, file);
  });

  it('does not create a key without retention, but loads one that is there', () => {
    const file = freshFile();
    const { logger } = capturingLogger();
    assert.equal(openSigningKey({ signingKey: file, signingKeyNamed: false }, logger), undefined);
    assert.equal(existsSync(file), false);
    const { key } = loadOrCreateSigningKey(file);
    assert.equal(openSigningKey({ signingKey: file, signingKeyNamed: false }, logger)?.keyId, key.keyId);
  });

  it('refuses to start without the key audit.signing_key names, rather than make another', () => {
    const file = freshFile('named.key');
    const { logger } = capturingLogger();
    assert.throws(
      () => openSigningKey({ signingKey: file, signingKeyNamed: true, retentionMs: 1_000 }, logger),
      new RegExp(`^Error: audit.signing_key ${escape(file)}: no such file; create one with \`openssl genpkey -algorithm ed25519`),
    );
    assert.equal(existsSync(file), false);
  });

  it('fails the start on a key file that is not an Ed25519 private key, naming it, with or without retention', () => {
    const file = freshFile();
    mkdirFor(file);
    writeFileSync(file, 'oops');
    const { logger } = capturingLogger();
    for (const retentionMs of [1_000, undefined]) {
      assert.throws(() => openSigningKey({ signingKey: file, signingKeyNamed: false, retentionMs }, logger), new RegExp(`audit signing key ${escape(file)} is not an Ed25519 private key`));
    }
  });
});

describe('a checkpoint signature', () => {
  it('is over a domain-separated canonical text of every field of the checkpoint', () => {
    assert.equal(
      checkpointSigningText(content),
      `policylayer-audit-checkpoint-v1\n{"at":${T},"hash":"${'ab'.repeat(32)}","prunedAt":${T + 86_400_000},"seq":1200,"stream":"${content.stream}"}`,
    );
    const key = newKey();
    const { keyId, signature } = signCheckpoint(key, content);
    assert.equal(keyId, key.keyId);
    assert.ok(verify(null, Buffer.from(checkpointSigningText(content)), key.publicKey, Buffer.from(signature, 'base64')));
    // The same bytes without the domain are not what was signed.
    assert.equal(verify(null, Buffer.from(checkpointSigningText(content).split('\n')[1]!), key.publicKey, Buffer.from(signature, 'base64')), false);
  });

  it('holds for the checkpoint as signed and fails for any field changed, or another key', () => {
    const key = newKey();
    const cp = { ...content, ...signCheckpoint(key, content) };
    assert.equal(checkpointSignatureValid(key.publicKey, cp), true);
    for (const patch of [{ seq: 1201 }, { hash: 'cd'.repeat(32) }, { at: T + 1 }, { prunedAt: T }, { stream: 'other' }, { signature: null }, { signature: '@@@' }]) {
      assert.equal(checkpointSignatureValid(key.publicKey, { ...cp, ...patch }), false, JSON.stringify(patch));
    }
    assert.equal(checkpointSignatureValid(newKey().publicKey, cp), false);
  });
});

describe('how far a prune may sign off', () => {
  const key = newKey();
  const rows = [1, 2, 3, 4, 5].map((seq) => ({ seq, at: T + seq * 1_000, hash: `${seq}`.repeat(64), prevHash: seq === 1 ? GENESIS_HASH : `${seq - 1}`.repeat(64) }));

  it('starts a stream without a checkpoint at its start, and one with a checkpoint of this key right after it', () => {
    assert.deepEqual(pruneAnchor(undefined, key), { seq: 0, hash: GENESIS_HASH, what: 'the start of the stream' });
    const cp = { ...content, ...signCheckpoint(key, content) };
    assert.deepEqual(pruneAnchor(cp, key), { seq: 1200, hash: content.hash, what: 'its checkpoint (record 1200, pruned)' });
  });

  it('holds a stream whose checkpoint is unsigned, another key\'s, or changed', () => {
    const other = newKey();
    assert.equal(pruneAnchor({ ...content, keyId: null, signature: null }, key), 'its checkpoint (record 1200, pruned) is not signed');
    assert.equal(
      pruneAnchor({ ...content, ...signCheckpoint(other, content) }, key),
      `its checkpoint (record 1200, pruned) is signed by key ${other.keyId}, not by this gateway's audit signing key ${key.keyId}`,
    );
    assert.equal(pruneAnchor({ ...content, ...signCheckpoint(key, content), seq: 1300 }, key), 'its checkpoint (record 1300, pruned) does not match its signature: it was changed after it was signed');
  });

  it('takes the records before the cut that chain from where the stream stands', () => {
    const anchor = pruneAnchor(undefined, key);
    assert.ok(typeof anchor !== 'string');
    assert.deepEqual(prunableRecords(anchor, rows, T + 3_500), { last: rows[2], held: undefined });
    assert.deepEqual(prunableRecords(anchor, rows, T), { last: undefined, held: undefined });
  });

  it('stops before a record that does not follow the one before: a hole made by hand is never signed over', () => {
    const anchor = pruneAnchor(undefined, key);
    assert.ok(typeof anchor !== 'string');
    assert.deepEqual(prunableRecords(anchor, rows.slice(2), T + 10_000), { last: undefined, held: 'record 3 does not follow the start of the stream' });
    assert.deepEqual(prunableRecords(anchor, [rows[0]!, rows[1]!, rows[3]!, rows[4]!], T + 10_000), { last: rows[1], held: 'record 4 does not follow record 2' });
    const swapped = [rows[0]!, { ...rows[1]!, prevHash: 'f'.repeat(64) }];
    assert.deepEqual(prunableRecords(anchor, swapped, T + 10_000), { last: rows[0], held: 'record 2 does not follow record 1' });
  });
});

function mkdirFor(file: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function readdirNames(d: string): string[] {
  return readdirSync(d).sort();
}
