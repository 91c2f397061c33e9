/**
 * `audit.durability: strict` keeps its promise through the worst end a gateway can have: killed
 * with SIGKILL while calls are streaming through it. Every call the upstream server received (a
 * tap in front of it logs each line it is sent) is in the audit log, because the gateway forwards
 * a call only once its record is durable.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { AuditRecord } from '../../src/audit/event.js';
import { openSqliteAuditSink } from '../../src/audit/sinks/sqlite.js';
import { connectHttp, type V1Connection } from '../helpers/clients.js';
import { tempDir } from '../helpers/fs.js';
import { yamlValue } from '../helpers/gateway.js';
import { REPO_ROOT, startProcess, tappedCommand } from '../helpers/processes.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const BIN = path.join(REPO_ROOT, 'bin/policylayer.js');
const CLIENTS = 8;
/** Calls answered before the kill: enough that the kill lands among calls in every stage. */
const ANSWERED_BEFORE_KILL = 300;

/** The `text` argument of every tools/call the tapped server received. */
function textsReceived(tapLog: string): string[] {
  if (!existsSync(tapLog)) return [];
  return readFileSync(tapLog, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { method?: string; params?: { arguments?: { text?: string } } })
    .filter((m) => m.method === 'tools/call')
    .map((m) => String(m.params?.arguments?.text));
}

test('in strict mode, a gateway killed with SIGKILL under load has every call it forwarded in its audit log', async () => {
  const tmp = tempDir();
  const db = path.join(tmp.path, 'audit.db');
  const tapLog = path.join(tmp.path, 'received.jsonl');
  const config = tmp.write(
    'gateway.yaml',
    `listen: 127.0.0.1:0
audit:
  sinks: ${yamlValue([`sqlite:${db}`])}
  durability: strict
  arguments: full
servers:
  fx:
    command: ${yamlValue(tappedCommand(tapLog, [process.execPath, FIXTURE]))}
    policy: { version: "1", default: allow }
`,
  );
  const started = await startProcess([process.execPath, BIN, 'serve', '-c', config], {
    cwd: tmp.path,
    env: { POLICYLAYER_LOG_LEVEL: 'silent' },
    ready: /PolicyLayer listening on (http:\/\/\S+)/,
  });
  const gateway = started.child;
  const url = started.ready![1]!;
  const clients: V1Connection[] = [];
  try {
    for (let i = 0; i < CLIENTS; i++) clients.push(await connectHttp(`${url}/mcp/fx`));

    let answered = 0;
    let killed = false;
    const load = clients.map(async (c, i) => {
      for (let n = 0; !killed; n++) {
        try {
          await c.client.callTool({ name: 'echo', arguments: { text: `client${i}-call${n}` } });
          answered++;
        } catch {
          return;
        }
      }
    });
    while (answered < ANSWERED_BEFORE_KILL) await new Promise((r) => setTimeout(r, 10));
    gateway.kill('SIGKILL');
    killed = true;
    await Promise.all(load);
    await new Promise<void>((r) => (gateway.exitCode !== null || gateway.signalCode !== null ? r() : gateway.once('exit', () => r())));

    const received = textsReceived(tapLog);
    assert.ok(received.length >= ANSWERED_BEFORE_KILL, `the server received ${received.length} calls`);
    const sink = openSqliteAuditSink(db);
    const forwarded = new Set<string>();
    try {
      const records: AuditRecord[] = [];
      for await (const r of sink.iterate()) records.push(r);
      for (const r of records) {
        if (r.tool === 'echo' && r.upstreamStatus === 'forwarded') forwarded.add((r.arguments as { text: string }).text);
      }
      const verified = await sink.verify();
      assert.equal(verified.ok, true, verified.ok ? '' : verified.message);
    } finally {
      await sink.close();
    }
    const missing = received.filter((t) => !forwarded.has(t));
    assert.deepEqual(missing, [], `${missing.length} of ${received.length} forwarded calls are missing from the audit log`);
  } finally {
    await started.stop(500);
    await Promise.allSettled(clients.map((c) => c.close()));
    tmp.remove();
  }
});
