/**
 * The records the sink tests write: a varied traffic of one or two streams, the same for every
 * sink, so that each sink is held to the same round trip, queries and tamper findings.
 */
import { generateKeyPairSync } from 'node:crypto';
import { chain, type AuditDecision, type AuditEventInput, type AuditRecord } from '../event.js';
import { keyFingerprint, type AuditSigningKey } from '../signing.js';
import type { AuditStore } from '../store.js';

export const T0 = 1_700_000_000_000;
export const A = '3f2a9c1d-5b7e-4f0a-9d2c-8e1f6a4b3c21';
export const B = 'b81c04e2-7a19-4c55-a0d3-2f9e6b7c8d10';

const DECISIONS: AuditDecision[] = ['allow', 'deny', 'rate_limited', 'allow', 'hidden'];

/** Event `i` of a varied traffic: several decisions, grants, tools and servers, nulls where a kind has none. */
export function event(i: number, at = T0 + i * 1_000): AuditEventInput {
  const decision = DECISIONS[i % DECISIONS.length]!;
  const allowed = decision === 'allow';
  return {
    at,
    requestId: String(i),
    grantId: `grant-${i % 3}`,
    grantLabel: `agent ${i % 3}`,
    session: i % 4 === 0 ? null : `session-${i % 2}`,
    server: i % 2 === 0 ? 'crm' : 'github',
    method: 'tools/call',
    tool: ['search', 'update_contact', 'delete_contact'][i % 3]!,
    decision,
    rule: allowed ? '/tools/search' : '/tools/update_contact/deny_if/0',
    reason: allowed ? null : 'outside business hours',
    policyVersion: 'sha256:0123456789abcdef',
    arguments: { keys: ['id', 'name'], sha256: 'cd'.repeat(32) },
    upstreamStatus: allowed ? 'ok' : null,
    latencyMs: allowed ? 2.5 + i : null,
    resultBytes: allowed ? 200 + i : null,
    error: null,
  };
}

/** Records 1..n of `stream`, chained; `at` of record k is T0 + k s unless `at` says otherwise. */
export function streamOf(stream: string, n: number, at: (k: number) => number = (k) => T0 + k * 1_000): AuditRecord[] {
  const out: AuditRecord[] = [];
  for (let k = 1; k <= n; k++) out.push(chain(stream, out[out.length - 1], event(k, at(k))));
  return out;
}

/** Every record of `sink`, in its iteration order. */
export async function allRecords(sink: Pick<AuditStore, 'iterate'>): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for await (const r of sink.iterate()) out.push(r);
  return out;
}

/** A new Ed25519 audit signing key. */
export function newSigningKey(): AuditSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { keyId: keyFingerprint(publicKey), privateKey, publicKey };
}
