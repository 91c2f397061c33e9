/**
 * What the tests of the audit log as the gateway runs it (its thread, its loop recorder) share:
 * an event as the trail hands it over, a config of the default SQLite sink in a temporary folder,
 * and reading a file's records back.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { AuditConfig } from '../config/index.js';
import type { AuditEventInput, AuditRecord } from './event.js';
import { openSqliteAuditSink } from './sinks/sqlite.js';

export const T0 = Date.UTC(2026, 10, 22, 12, 0, 0);

/** Event `i`, its arguments as the client sent them (a secret among them unless `args` says otherwise). */
export const event = (i: number, args: unknown = { path: `/tmp/file-${i}`, token: 'sk_live_abcdefghijklmnop' }): AuditEventInput => ({
  at: T0 + i,
  requestId: String(i),
  grantId: 'g1',
  grantLabel: 'alice',
  session: 'sess-1',
  server: 'files',
  method: 'tools/call',
  tool: 'read_file',
  decision: 'allow',
  rule: '/tools/read_file',
  reason: null,
  policyVersion: 'v1',
  arguments: args,
  upstreamStatus: 'ok',
  latencyMs: 3,
  resultBytes: 120,
  error: null,
});

/** A temporary folder, removed after the test. */
export async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'pl-audit-log-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The audit log's defaults, its SQLite file in `dir`, a flush every 10 ms. */
export function config(dir: string, over: Partial<AuditConfig> = {}): AuditConfig {
  return {
    sinks: [`sqlite:${path.join(dir, 'audit.db')}`],
    arguments: 'keys',
    durability: 'async',
    flushIntervalMs: 10,
    batchSize: 500,
    maxQueue: 100_000,
    onFull: 'block',
    spillDir: path.join(dir, 'spill'),
    ...over,
  };
}

/** Every record of the SQLite file, in its iteration order. */
export async function readBack(file: string): Promise<AuditRecord[]> {
  const sink = openSqliteAuditSink(file);
  try {
    const out: AuditRecord[] = [];
    for await (const r of sink.iterate()) out.push(r);
    return out;
  } finally {
    await sink.close();
  }
}
