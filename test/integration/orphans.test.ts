/**
 * No orphans, ever: even a gateway killed with SIGKILL, which can run no cleanup of its own, leaves
 * no stdio server behind, not even one that ignores stdin closing and SIGTERM and has a child.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { connectHttp } from '../helpers/clients.js';
import { tempDir } from '../helpers/fs.js';
import { yamlValue } from '../helpers/gateway.js';
import { isAlive, REPO_ROOT } from '../helpers/processes.js';

const FIXTURE = path.join(REPO_ROOT, 'dist/test/fixtures/stdio-server.js');
const BIN = path.join(REPO_ROOT, 'bin/policylayer.js');

async function gone(pid: number, withinMs: number): Promise<boolean> {
  const until = Date.now() + withinMs;
  while (Date.now() < until) {
    if (!isAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !isAlive(pid);
}

test('a gateway killed with SIGKILL leaves no stubborn stdio server and no grandchild behind', async () => {
  const tmp = tempDir();
  const config = path.join(tmp.path, 'gateway.yaml');
  writeFileSync(
    config,
    `listen: 127.0.0.1:0
servers:
  stubborn:
    command: ${yamlValue([process.execPath, FIXTURE, '--stubborn'])}
    policy: { version: "1", default: allow }
`,
  );
  const gateway = spawn(process.execPath, [BIN, 'serve', '-c', config], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, POLICYLAYER_LOG_LEVEL: 'silent' },
  });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      gateway.stdout!.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        const m = /PolicyLayer listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      gateway.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
    });
    const client = await connectHttp(`${url}/mcp/stubborn`);
    const result = await client.client.callTool({ name: 'pids', arguments: {} });
    const pids = JSON.parse((result.content as Array<{ text: string }>)[0]!.text) as { pid: number; grandchild: number };
    assert.ok(isAlive(pids.pid) && isAlive(pids.grandchild));

    gateway.kill('SIGKILL');
    // The reaper's grace between SIGTERM and SIGKILL is 2 s.
    assert.equal(await gone(pids.pid, 8000), true, 'the server is gone');
    assert.equal(await gone(pids.grandchild, 8000), true, 'its child is gone');
    await client.close().catch(() => {});
  } finally {
    gateway.kill('SIGKILL');
    tmp.remove();
  }
});
