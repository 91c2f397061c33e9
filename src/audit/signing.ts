/**
 * The audit signing key, and what it signs: the checkpoints retention leaves.
 *
 * A checkpoint stands in for the records retention deleted from the start of a stream, and
 * verification trusts it: it starts the stream right after it. Anyone who can write to the
 * database could otherwise delete the first records of a stream and write a matching checkpoint,
 * and the log would verify. So the gateway signs each checkpoint it writes with an Ed25519 key
 * that lives outside the database (`audit.signing_key`, a PKCS#8 PEM file readable only by the
 * gateway), and verification accepts a checkpoint only with a valid signature of a key it was
 * told to trust. What a signature says: this gateway pruned the stream up to here, and the
 * records it pruned chained from the previous signed checkpoint (or the stream's start): a
 * prune signs off only over records that follow it (prunableRecords), so a hole made by hand
 * is never signed over.
 *
 * What is signed is the checkpoint's every field, as a domain-separated canonical text
 * (checkpointSigningText): a signature over a checkpoint cannot be taken for a signature over
 * anything else this key may one day sign, and changing any field by SQL breaks it.
 *
 * A key is named by its fingerprint: the first 16 hex digits of the SHA-256 of its public key
 * (SPKI, DER). Each checkpoint carries the fingerprint of the key that signed it (`key_id`), so
 * a verifier given several public keys (gateways that each have their own, a key replaced) knows
 * which one to check with, and says which key signed a checkpoint it does not trust.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { AuditConfig } from '../config/index.js';
import type { Logger } from '../telemetry/logger.js';
import { canonicalJson } from '../util/canonical-json.js';
import { GENESIS_HASH } from './event.js';

/** Put before the canonical JSON of a checkpoint: what the signature is over, and in which version of that text. */
export const CHECKPOINT_SIGNING_DOMAIN = 'policylayer-audit-checkpoint-v1\n';

/**
 * An audit signing key pair. A plain object of KeyObjects, so it can be posted to the SQLite
 * sink's writer thread as it is.
 */
export interface AuditSigningKey {
  /** The fingerprint: the first 16 hex digits of the SHA-256 of the public key (SPKI, DER). */
  readonly keyId: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

/** The fields of a checkpoint that its signature covers: all of them. */
export interface CheckpointContent {
  readonly stream: string;
  /** seq of the last pruned record. */
  readonly seq: number;
  /** hash of the last pruned record. */
  readonly hash: string;
  /** `at` of the last pruned record (ms since the epoch). */
  readonly at: number;
  /** When the prune that wrote the checkpoint ran (ms since the epoch). */
  readonly prunedAt: number;
}

/** A checkpoint with its signature as stored: `keyId` and `signature` are null for an unsigned one. */
export interface SignedCheckpoint extends CheckpointContent {
  /** The fingerprint of the key that signed it. */
  readonly keyId: string | null;
  /** The Ed25519 signature of checkpointSigningText, base64. */
  readonly signature: string | null;
}

/** The fingerprint of `key` (either half: a private key's public half is taken). */
export function keyFingerprint(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** `key`'s public half as SPKI PEM: what an auditor is given. */
export function publicKeyPem(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ type: 'spki', format: 'pem' }) as string;
}

/** What a checkpoint's signature is over. */
export function checkpointSigningText(cp: CheckpointContent): string {
  return CHECKPOINT_SIGNING_DOMAIN + canonicalJson({ stream: cp.stream, seq: cp.seq, hash: cp.hash, at: cp.at, prunedAt: cp.prunedAt });
}

/** `cp` signed by `key`: the columns key_id and signature. */
export function signCheckpoint(key: Pick<AuditSigningKey, 'keyId' | 'privateKey'>, cp: CheckpointContent): { keyId: string; signature: string } {
  return { keyId: key.keyId, signature: sign(null, Buffer.from(checkpointSigningText(cp), 'utf8'), key.privateKey).toString('base64') };
}

/** Whether `cp.signature` is a valid signature of `cp` by `publicKey` (the caller matches cp.keyId to the key). */
export function checkpointSignatureValid(publicKey: KeyObject, cp: SignedCheckpoint): boolean {
  if (typeof cp.signature !== 'string') return false;
  try {
    return verify(null, Buffer.from(checkpointSigningText(cp), 'utf8'), publicKey, Buffer.from(cp.signature, 'base64'));
  } catch {
    // A signature of the wrong form (by SQL) is a signature that does not match.
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Pruning: how far a prune may sign off

/** Where a stream's chain stands before a prune step: its last signed checkpoint, or its start. */
export interface PruneAnchor {
  readonly seq: number;
  readonly hash: string;
  /** What it is, in words, for the reason a prune stops at the record after it. */
  readonly what: string;
}

/**
 * Where a prune continues a stream from: its checkpoint (`existing`), if `key` signed it and the
 * signature holds, or the stream's start if it has none. A string says why the stream must not be pruned
 * further: its checkpoint is unsigned, signed by another key, or was changed; extending it would
 * sign off on whatever it stands for.
 */
export function pruneAnchor(existing: SignedCheckpoint | undefined, key: Pick<AuditSigningKey, 'keyId' | 'publicKey'>): PruneAnchor | string {
  if (existing === undefined) return { seq: 0, hash: GENESIS_HASH, what: 'the start of the stream' };
  const what = `its checkpoint (record ${existing.seq}, pruned)`;
  if (existing.keyId === null || existing.signature === null) return `${what} is not signed`;
  if (existing.keyId !== key.keyId) return `${what} is signed by key ${existing.keyId}, not by this gateway's audit signing key ${key.keyId}`;
  if (!checkpointSignatureValid(key.publicKey, existing)) return `${what} does not match its signature: it was changed after it was signed`;
  return { seq: existing.seq, hash: existing.hash, what };
}

/** What a prune step reads of a record: its place in the chain and its time. */
export interface PruneRow {
  readonly seq: number;
  readonly at: number;
  readonly hash: string;
  readonly prevHash: string;
}

/**
 * The records of `rows` (a stream's first records, in seq order) that a prune may delete and sign
 * off: the prefix written before `before` that chains from `anchor`, each record numbered one past
 * the one before and carrying its hash. `last` is the last of them; `held` says why the prune
 * stops before the cut (a record that does not follow the one before: records removed or changed
 * by hand, which verification reports and a signed checkpoint must not paper over).
 *
 * Only the links are checked, not each record's content hash: a record changed in place without
 * its hash changing is deleted by the prune all the same, and hashing every pruned record again
 * would cost the writer minutes an hour at full rate.
 */
export function prunableRecords<R extends PruneRow>(anchor: PruneAnchor, rows: readonly R[], before: number): { last: R | undefined; held: string | undefined } {
  let last: R | undefined;
  let seq = anchor.seq;
  let hash = anchor.hash;
  let what = anchor.what;
  for (const row of rows) {
    if (row.at >= before) break;
    if (row.seq !== seq + 1 || row.prevHash !== hash) {
      return { last, held: `record ${row.seq} does not follow ${what}` };
    }
    last = row;
    seq = row.seq;
    hash = row.hash;
    what = `record ${row.seq}`;
  }
  return { last, held: undefined };
}

// ---------------------------------------------------------------------------------------------
// Key files

/**
 * The audit signing key `config` names: `audit.signing_key`, or the default file beside the spill
 * folder. A file that exists must be an Ed25519 private key, or the start fails naming it. A named
 * file must exist: a key the operator chose and lost must not be silently replaced by a new one,
 * under which the old checkpoints no longer verify. The default file is created when retention
 * needs it (mode 0600), and the new key's fingerprint logged. Without retention nothing is
 * created, but an existing key is loaded, so that the admin API can verify the checkpoints an
 * earlier run left.
 */
export function openSigningKey(config: Pick<AuditConfig, 'signingKey' | 'signingKeyNamed' | 'retentionMs'>, log: Logger): AuditSigningKey | undefined {
  const file = config.signingKey;
  if (file === undefined) {
    if (config.retentionMs !== undefined) throw new Error('audit.retention needs a key to sign its checkpoints with, and this audit config names no signing key file');
    return undefined;
  }
  if (config.signingKeyNamed === true && !existsSync(file)) {
    throw new Error(
      `audit.signing_key ${file}: no such file; create one with \`openssl genpkey -algorithm ed25519 -out ${file}\` (mode 0600), or leave audit.signing_key out and the gateway makes one`,
    );
  }
  if (config.retentionMs === undefined) return existsSync(file) ? readSigningKey(file) : undefined;
  const { key, created } = loadOrCreateSigningKey(file);
  if (created) {
    log.info(
      { file, fingerprint: key.keyId },
      `audit signing key ${key.keyId} created: it signs retention's checkpoints; give its public half (\`policylayer audit public-key\`) to whoever verifies the log`,
    );
  }
  return key;
}

/** The key pair in a PKCS#8 PEM private key file; throws naming the file when it cannot be read or is not an Ed25519 private key. */
export function readSigningKey(file: string): AuditSigningKey {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`audit signing key ${file}: cannot read it: ${describe(err)}`, { cause: err });
  }
  return parseSigningKey(text, file);
}

/** The key pair in PEM `text` (of `file`, for errors). */
export function parseSigningKey(text: string, file: string): AuditSigningKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: text, format: 'pem' });
  } catch {
    const hint = text.includes('PUBLIC KEY') ? ': it holds a public key, and signing needs the private key' : '';
    throw new Error(`audit signing key ${file} is not an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)${hint}`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new Error(`audit signing key ${file} is an ${privateKey.asymmetricKeyType ?? 'unknown'} key, not an Ed25519 one: make one with \`openssl genpkey -algorithm ed25519\``);
  }
  const publicKey = createPublicKey(privateKey);
  return { keyId: keyFingerprint(publicKey), privateKey, publicKey };
}

/**
 * The key in `file`, or a new one written there (mode 0600, its folder created) when the file
 * does not exist. The new key is written to a file of its own and linked into place, which fails
 * if another process got there first: then that process's key is read, so two gateways starting
 * together never hold different keys for one file, and a crash never leaves half a key.
 */
export function loadOrCreateSigningKey(file: string): { key: AuditSigningKey; created: boolean } {
  try {
    return { key: readSigningKey(file), created: false };
  } catch (err) {
    if (((err as Error).cause as NodeJS.ErrnoException | undefined)?.code !== 'ENOENT') throw err;
  }
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  mkdirSync(path.dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.${Date.now()}.tmp`;
  const fd = openSync(temp, 'wx', 0o600);
  try {
    writeSync(fd, pem);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`audit signing key ${file}: cannot create it: ${describe(err)}`, { cause: err });
    return { key: readSigningKey(file), created: false };
  } finally {
    unlinkSync(temp);
  }
  return { key: readSigningKey(file), created: true };
}

/**
 * A public key to verify with, from a PEM file: a public key (SPKI, what `policylayer audit
 * public-key` prints) or a private key, whose public half is taken. Throws naming the file.
 */
export function readPublicKey(file: string): KeyObject {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`public key ${file}: cannot read it: ${describe(err)}`, { cause: err });
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: text, format: 'pem' });
  } catch {
    throw new Error(`public key ${file} is not a PEM public key (-----BEGIN PUBLIC KEY-----), as \`policylayer audit public-key\` prints`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`public key ${file} is an ${key.asymmetricKeyType ?? 'unknown'} key, not an Ed25519 one`);
  return key;
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT') return 'no such file';
  if (e.code === 'EACCES') return 'permission denied';
  return e.message ?? String(err);
}
