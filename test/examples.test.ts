/** Every config and policy in examples/ is what users copy: each must load with the server's own loaders. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { loadGatewayConfig } from '../src/config/index.js';
import { loadPolicyFile } from '../src/policy/index.js';
import { REPO_ROOT } from './helpers/processes.js';

const examples = path.join(REPO_ROOT, 'examples');
const env = { ...process.env, POOLPARTY_API_KEY: 'example-key' };

for (const dir of readdirSync(examples)) {
  for (const file of readdirSync(path.join(examples, dir))) {
    const full = path.join(examples, dir, file);
    if (file === 'gateway.yaml') {
      test(`examples/${dir}/gateway.yaml loads with every server's policy`, () => {
        const config = loadGatewayConfig(full, env);
        assert.ok(config.servers.size > 0);
        for (const s of config.servers.values()) assert.match(s.policy.version, /^sha256:[0-9a-f]{16}$/);
      });
    } else if (/policy\.(json|ya?ml)$/.test(file)) {
      test(`examples/${dir}/${file} loads as a policy`, () => {
        assert.ok(loadPolicyFile(full).version.startsWith('sha256:'));
      });
    }
  }
}

test('the seed rules keep their limits as written: PoolParty 30 a minute per grant, PiloTY 10', () => {
  const poolparty = loadPolicyFile(path.join(examples, 'poolparty/policy.json'));
  const piloty = loadPolicyFile(path.join(examples, 'piloty/policy.json'));
  assert.deepEqual(
    (poolparty.document.tools?.create_join_session?.limits ?? []).map((l) => [l.counter, l.window, l.max, l.scope]),
    [['create_join_session_rate', 'minute', 30, 'grant']],
  );
  assert.deepEqual(
    (piloty.document.tools?.create_session?.limits ?? []).map((l) => [l.counter, l.window, l.max, l.scope]),
    [['create_session_rate', 'minute', 10, 'grant']],
  );
});
