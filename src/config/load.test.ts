import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, ErrorCodes } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import { evaluate } from '../policy/index.js';
import { interpolate, loadGatewayConfig, parseGatewayConfig, parseHostPort } from './index.js';

const SEED_POLICY = `{
  "version": "1",
  "default": "deny",
  "tools": {
    "create_session": {
      "limits": [ { "counter": "create_session_rate", "window": "minute", "max": 10, "scope": "grant" } ]
    }
  }
}
`;

const ALLOW_ALL = '{ version: "1", default: allow }';

/** A throwaway folder holding the given files; removed after `fn`. */
function withFiles(files: Record<string, string>, fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'pl-config-'));
  try {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(join(dir, name, '..'), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function failure(fn: () => unknown): { code: ErrorCode; issues: string[]; message: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return { code: err.code, issues: err.issues, message: err.message };
  }
  assert.fail('expected a ConfigError');
}

function parse(text: string, env: Record<string, string> = {}) {
  return parseGatewayConfig(text, 'gateway.yaml', env, '/srv/pl');
}

test('loads the documented example with policies resolved against the config folder', () => {
  withFiles(
    {
      'gateway.yaml': `listen: 127.0.0.1:4100
admin: 127.0.0.1:4101
store: sqlite:./data/policylayer.db
counters: memory
auth: { required: false }
limits: { max_body_bytes: 4194304 }
allowed_hosts: [ "localhost", "127.0.0.1", "[::1]" ]
session_idle_timeout: 30m
shutdown_grace: 10s
servers:
  piloty:
    command: [ "uvx", "piloty" ]
    env: { TERM: xterm }
    policy: policies/piloty.json
    timeout: 60s
  poolparty:
    url: https://www.poolparty.io/api/mcp
    transport: streamable-http
    headers: { Authorization: "Bearer \${POOLPARTY_API_KEY}" }
    policy: policies/poolparty.json
`,
      'policies/piloty.json': SEED_POLICY,
      'policies/poolparty.json': SEED_POLICY.replaceAll('create_session', 'create_join_session'),
    },
    (dir) => {
      const c = loadGatewayConfig(join(dir, 'gateway.yaml'), { POOLPARTY_API_KEY: 'pp-secret-key' });
      assert.deepEqual(c.listen, { host: '127.0.0.1', port: 4100 });
      assert.deepEqual(c.admin, { host: '127.0.0.1', port: 4101 });
      // The store file, like every path in the config, is relative to the config's folder.
      assert.equal(c.store, `sqlite:${join(dir, 'data/policylayer.db')}`);
      assert.deepEqual(c.counters, { url: 'memory', onStoreError: 'deny', refundToolErrors: true });
      assert.deepEqual(c.auth, { required: false });
      assert.equal(c.maxBodyBytes, 4_194_304);
      assert.equal(c.sessionIdleTimeoutMs, 30 * 60_000);
      assert.equal(c.shutdownGraceMs, 10_000);
      assert.deepEqual([...c.servers.keys()], ['piloty', 'poolparty']);

      const piloty = c.servers.get('piloty');
      assert.equal(piloty?.kind, 'stdio');
      assert.deepEqual(piloty?.command, ['uvx', 'piloty']);
      assert.deepEqual(piloty?.env, { TERM: 'xterm' });
      assert.equal(piloty?.timeoutMs, 60_000);
      assert.equal(piloty?.policy.source, join(dir, 'policies/piloty.json'));
      assert.equal(evaluate({ tool: 'create_session', args: {} }, piloty!.policy).effect, 'allow');

      const poolparty = c.servers.get('poolparty');
      assert.equal(poolparty?.kind, 'http');
      assert.equal(poolparty?.url, 'https://www.poolparty.io/api/mcp');
      assert.equal(poolparty?.transport, 'streamable-http');
      assert.deepEqual(poolparty?.headers, { Authorization: 'Bearer pp-secret-key' });
      assert.equal(evaluate({ tool: 'create_join_session', args: {} }, poolparty!.policy).effect, 'allow');
    },
  );
});

test('applies every default when only servers is given', () => {
  const c = parse(`servers:\n  s: { command: server, policy: ${ALLOW_ALL} }\n`);
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 4100 });
  assert.equal(c.admin, undefined);
  assert.equal(c.store, 'sqlite:/srv/pl/data/policylayer.db');
  assert.deepEqual(c.counters, { url: 'memory', onStoreError: 'deny', refundToolErrors: true });
  assert.deepEqual(c.auth, { required: false });
  assert.equal(c.maxBodyBytes, 4 * 1024 * 1024);
  assert.deepEqual(c.allowedHosts, ['localhost', '127.0.0.1', '[::1]']);
  assert.deepEqual(c.allowedOrigins, ['localhost', '127.0.0.1', '[::1]']);
  assert.equal(c.sessionIdleTimeoutMs, 1_800_000);
  assert.equal(c.shutdownGraceMs, 10_000);
  assert.equal(c.servers.get('s')?.timeoutMs, 60_000);
  assert.equal(c.servers.get('s')?.cwd, undefined);
  assert.equal(c.source, 'gateway.yaml');
});

test('reads listen as host:port, [v6]:port or a bare port, with port 0 for any free port', () => {
  assert.deepEqual(parseHostPort('0.0.0.0:8080'), { host: '0.0.0.0', port: 8080 });
  assert.deepEqual(parseHostPort('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseHostPort('gateway.internal:443'), { host: 'gateway.internal', port: 443 });
  assert.deepEqual(parseHostPort(4100), { host: '127.0.0.1', port: 4100 });
  for (const bad of ['localhost', '1.2.3.4:70000', ':80', 'a b:80', '::1:80', '127.0.0.1:-1', '127.0.0.1:']) {
    assert.equal(parseHostPort(bad), undefined, bad);
  }
  const c = parse(`listen: "[::1]:0"\nservers:\n  s: { command: x, policy: ${ALLOW_ALL} }\n`);
  assert.deepEqual(c.listen, { host: '::1', port: 0 });
});

test('splits a command string on whitespace, appends args and resolves cwd against the config folder', () => {
  const c = parse(`servers:
  fs:
    command: "npx -y  @modelcontextprotocol/server-filesystem"
    args: [ "/tmp/a dir" ]
    cwd: ./work
    env: { DEBUG: 1, VERBOSE: true, NAME: fs }
    policy: ${ALLOW_ALL}
`);
  const fs = c.servers.get('fs');
  assert.deepEqual(fs?.command, ['npx', '-y', '@modelcontextprotocol/server-filesystem', '/tmp/a dir']);
  assert.equal(fs?.cwd, '/srv/pl/work');
  assert.deepEqual(fs?.env, { DEBUG: '1', VERBOSE: 'true', NAME: 'fs' });
});

test('defaults a url server to streamable-http and reads its timeout as a duration', () => {
  const c = parse(`servers:
  a: { url: "http://localhost:9000/mcp", timeout: 5m, policy: ${ALLOW_ALL} }
  b: { url: "https://legacy.example/sse", transport: sse, timeout: 15, policy: ${ALLOW_ALL} }
`);
  assert.equal(c.servers.get('a')?.transport, 'streamable-http');
  assert.equal(c.servers.get('a')?.timeoutMs, 300_000);
  assert.equal(c.servers.get('a')?.headers, undefined);
  assert.equal(c.servers.get('b')?.transport, 'sse');
  assert.equal(c.servers.get('b')?.timeoutMs, 15_000);
});

test('compiles an inline policy, marked as <inline>', () => {
  const c = parse(`servers:
  s:
    command: x
    policy:
      version: "1"
      default: deny
      hide: [ "admin_*" ]
      tools: { read_file: {} }
`);
  const p = c.servers.get('s')!.policy;
  assert.equal(p.source, '<inline>');
  assert.equal(evaluate({ tool: 'read_file', args: {} }, p).effect, 'allow');
  assert.equal(evaluate({ tool: 'admin_x', args: {} }, p).effect, 'hidden');
});

test('reports inline policy errors at their place in gateway.yaml', () => {
  const f = failure(() =>
    parse(`servers:
  s:
    command: x
    policy:
      version: "1"
      default: deny
      tools:
        read_file: { action: allow, deny_when: [] }
`),
  );
  assert.deepEqual(f.issues, [
    'gateway.yaml: /servers/s/policy/tools/read_file/deny_when: unknown field; expected one of: action, reason, on_deny, limits, require, deny_if, approval, shadow, validate_arguments (line 8:37)',
  ]);
});

test("reports a policy file's errors with that file's own name and line", () => {
  withFiles(
    {
      'gateway.yaml': 'servers:\n  piloty: { command: [uvx, piloty], policy: policies/piloty.json }\n',
      'policies/piloty.json': SEED_POLICY.replace('"minute"', '"fortnight"'),
    },
    (dir) => {
      const f = failure(() => loadGatewayConfig(join(dir, 'gateway.yaml'), {}));
      assert.deepEqual(f.issues, [
        `${join(dir, 'policies/piloty.json')}: /tools/create_session/limits/0/window: expected second|minute|hour|day or a duration like "90s" (line 6:65)`,
      ]);
    },
  );
});

test('names the file in error messages relative to the working directory when it lies below it', () => {
  const dir = mkdtempSync(join(process.cwd(), '.tmp-pl-config-'));
  try {
    mkdirSync(join(dir, 'policies'));
    writeFileSync(join(dir, 'policies', 'bad.json'), '{ "version": "1" }');
    const rel = dir.slice(process.cwd().length + 1);
    const f = failure(() => parseGatewayConfig(`servers:\n  s: { command: x, policy: policies/bad.json }\n`, 'gateway.yaml', {}, dir));
    assert.deepEqual(f.issues, [`${rel}/policies/bad.json: /default: required field is missing; expected allow|deny (line 1:1)`]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('answers a missing policy file with CONFIG_UNREADABLE at the line that names it', () => {
  const f = failure(() => parse('servers:\n  s:\n    command: x\n    policy: /nonexistent/p.json\n'));
  assert.equal(f.code, ErrorCodes.CONFIG_UNREADABLE);
  assert.deepEqual(f.issues, ['gateway.yaml: /servers/s/policy: cannot read the policy file /nonexistent/p.json: no such file (line 4:13)']);
});

test('answers a missing config file with CONFIG_UNREADABLE', () => {
  const f = failure(() => loadGatewayConfig('/nonexistent/gateway.yaml', {}));
  assert.equal(f.code, ErrorCodes.CONFIG_UNREADABLE);
  assert.equal(f.message, '/nonexistent/gateway.yaml: cannot read: no such file');
});

test('reports a bad command with file, path and line', () => {
  const text = `# PolicyLayer gateway
listen: 127.0.0.1:4100
store: sqlite:./data/policylayer.db
counters: memory
auth: { required: false }
limits: { max_body_bytes: 4194304 }
session_idle_timeout: 30m
shutdown_grace: 10s

servers:
  piloty:
    command: []
    policy: ${ALLOW_ALL}
`;
  assert.deepEqual(failure(() => parse(text)).issues, [
    'gateway.yaml: /servers/piloty/command: expected a non-empty array of strings (line 12:14)',
  ]);
  // The offending element itself is named.
  assert.deepEqual(failure(() => parse(text.replace('command: []', 'command: [ uvx, 3 ]'))).issues, [
    'gateway.yaml: /servers/piloty/command/1: expected a non-empty array of strings (line 12:21)',
  ]);
  assert.deepEqual(failure(() => parse(text.replace('command: []', 'command: "   "'))).issues, [
    'gateway.yaml: /servers/piloty/command: expected a non-empty array of strings (line 12:14)',
  ]);
});

test('rejects unknown keys at every level, naming the allowed ones', () => {
  const f = failure(() =>
    parse(`audit: { sinks: [] }
auth: { required: false, mode: jwt }
servers:
  s:
    comand: x
    policy: ${ALLOW_ALL}
`),
  );
  assert.equal(f.code, ErrorCodes.CONFIG_INVALID);
  assert.deepEqual(f.issues, [
    'gateway.yaml: /audit: unknown field; expected one of: listen, admin, store, counters, auth, limits, allowed_hosts, allowed_origins, session_idle_timeout, shutdown_grace, servers (line 1:1)',
    'gateway.yaml: /auth/mode: unknown field; expected one of: required (line 2:26)',
    'gateway.yaml: /servers/s/comand: unknown field; expected one of: command, args, env, cwd, isolation, url, transport, headers, policy, timeout (line 5:5)',
    'gateway.yaml: /servers/s: expected command (a local stdio server) or url (a remote server) (line 5:5)',
  ]);
});

test('requires exactly one of command or url, and fields that fit the kind of server', () => {
  const f = failure(() =>
    parse(`servers:
  both: { command: x, url: "https://x.example", policy: ${ALLOW_ALL} }
  stdio: { command: x, headers: { A: b }, transport: sse, policy: ${ALLOW_ALL} }
  remote: { url: "https://x.example", env: { A: b }, cwd: ., args: [], policy: ${ALLOW_ALL} }
  ftp: { url: "ftp://x.example", policy: ${ALLOW_ALL} }
  nopolicy: { command: x }
`),
  );
  assert.deepEqual(f.issues, [
    'gateway.yaml: /servers/both/url: use command or url, not both (line 2:28)',
    'gateway.yaml: /servers/stdio/headers: applies only to url servers (line 3:33)',
    'gateway.yaml: /servers/stdio/transport: applies only to url servers (line 3:54)',
    'gateway.yaml: /servers/remote/env: applies only to command servers (line 4:44)',
    'gateway.yaml: /servers/remote/cwd: applies only to command servers (line 4:59)',
    'gateway.yaml: /servers/remote/args: applies only to command servers (line 4:68)',
    'gateway.yaml: /servers/ftp/url: expected an http:// or https:// URL (line 5:15)',
    'gateway.yaml: /servers/nopolicy/policy: required field is missing; expected a policy file path or an inline policy object (line 6:13)',
  ]);
});

test('requires at least one server, each with a well-formed name', () => {
  assert.deepEqual(failure(() => parse('listen: 127.0.0.1:4100\n')).issues, [
    'gateway.yaml: /servers: required field is missing; expected a map of server names to servers (line 1:1)',
  ]);
  assert.deepEqual(failure(() => parse('servers: {}\n')).issues, ['gateway.yaml: /servers: expected at least one server (line 1:10)']);
  assert.deepEqual(failure(() => parse(`servers:\n  -bad: { command: x, policy: ${ALLOW_ALL} }\n`)).issues, [
    'gateway.yaml: /servers/-bad: expected a server name of letters, digits, _ and -, starting with a letter or digit (line 2:3)',
  ]);
  assert.deepEqual(failure(() => parse('')).issues, ['gateway.yaml: expected a gateway config object with servers']);
});

test('reports bad scalar settings with their lines', () => {
  const f = failure(() =>
    parse(`listen: localhost
admin: "1.2.3.4:99999"
store: mysql://db
counters: memcached://x
auth: { required: "yes" }
limits: { max_body_bytes: 0 }
session_idle_timeout: soon
shutdown_grace: -1
servers:
  s: { command: x, policy: ${ALLOW_ALL} }
`),
  );
  assert.deepEqual(f.issues, [
    'gateway.yaml: /listen: expected host:port, e.g. "127.0.0.1:4100" (port 0 picks a free port) (line 1:9)',
    'gateway.yaml: /admin: expected host:port, e.g. "127.0.0.1:4100" (port 0 picks a free port) (line 2:8)',
    'gateway.yaml: /store: expected sqlite:<path> or postgres://… (line 3:8)',
    'gateway.yaml: /counters: expected memory or redis://host:port (line 4:11)',
    'gateway.yaml: /auth/required: expected true or false (line 5:19)',
    'gateway.yaml: /limits/max_body_bytes: expected a positive integer (line 6:27)',
    'gateway.yaml: /session_idle_timeout: expected a duration like "30s", "5m", "1h" or a number of seconds (line 7:23)',
    'gateway.yaml: /shutdown_grace: expected a duration like "30s", "5m", "1h" or a number of seconds (line 8:17)',
  ]);
});

test('normalises allowed hosts and origins and rejects ones the origin check could never match', () => {
  const c = parse(`allowed_hosts: [ LocalHost, "[::1]", gateway.example ]
allowed_origins: [ "https://App.Example.com", "http://localhost:3000/", "https://x.example:443", localhost ]
servers:
  s: { command: x, policy: ${ALLOW_ALL} }
`);
  assert.deepEqual(c.allowedHosts, ['localhost', '[::1]', 'gateway.example']);
  assert.deepEqual(c.allowedOrigins, ['https://app.example.com', 'http://localhost:3000', 'https://x.example', 'localhost']);
  const f = failure(() =>
    parse(`allowed_hosts: [ "localhost:4100" ]
allowed_origins: [ "https://x.example/path", "*", "file:///x" ]
servers:
  s: { command: x, policy: ${ALLOW_ALL} }
`),
  );
  assert.equal(f.issues.length, 4);
  assert.match(f.issues[0] ?? '', /^gateway\.yaml: \/allowed_hosts\/0: expected a host name without a port .* \(line 1:18\)$/);
  assert.match(f.issues[1] ?? '', /^gateway\.yaml: \/allowed_origins\/0: expected an origin/);
});

test('resolves ${VAR} and ${VAR:-default} from the given env, and $${ as a literal', () => {
  const c = parse(
    `listen: \${HOST:-127.0.0.1}:\${PORT}
servers:
  s:
    url: "\${BASE_URL}/mcp"
    headers:
      Authorization: "Bearer \${TOKEN}"
      X-Tenant: "\${TENANT:-acme}"
      X-Empty: "\${EMPTY:-fallback}"
      X-Literal: "$\${NOT_A_VAR}"
    policy: ${ALLOW_ALL}
`,
    { PORT: '0', BASE_URL: 'https://api.example', TOKEN: 'tok-abcdef', EMPTY: '' },
  );
  assert.deepEqual(c.listen, { host: '127.0.0.1', port: 0 });
  const s = c.servers.get('s');
  assert.equal(s?.url, 'https://api.example/mcp');
  assert.deepEqual(s?.headers, { Authorization: 'Bearer tok-abcdef', 'X-Tenant': 'acme', 'X-Empty': 'fallback', 'X-Literal': '${NOT_A_VAR}' });
});

test('interpolates a plain ${VAR} to an empty value when the variable is set but empty', () => {
  assert.deepEqual(interpolate('a${E}b', { E: '' }), { value: 'ab', missing: [], invalid: [], substituted: [''] });
  assert.equal(interpolate('no references $HOME here', {}).value, 'no references $HOME here');
});

test('reports every missing environment variable with CONFIG_ENV_MISSING, path and line', () => {
  const f = failure(() =>
    parse(`servers:
  poolparty:
    url: https://www.poolparty.io/api/mcp
    headers: { Authorization: "Bearer \${POOLPARTY_API_KEY}" }
    policy: ${ALLOW_ALL}
  piloty:
    command: [ uvx, piloty ]
    env: { API: "\${PILOTY_KEY}", HOME: "\${HOME:-/root}" }
    policy: ${ALLOW_ALL}
`),
  );
  assert.equal(f.code, ErrorCodes.CONFIG_ENV_MISSING);
  assert.deepEqual(f.issues, [
    'gateway.yaml: /servers/poolparty/headers/Authorization: environment variable POOLPARTY_API_KEY is not set (line 4:31)',
    'gateway.yaml: /servers/piloty/env/API: environment variable PILOTY_KEY is not set (line 8:17)',
  ]);
});

test('does not interpolate inline policies, as policy files are never interpolated', () => {
  const c = parse(`servers:
  s:
    command: x
    policy: { version: "1", default: deny, tools: { t: { action: deny, reason: "costs \${AMOUNT}" } } }
`);
  assert.equal(evaluate({ tool: 't', args: {} }, c.servers.get('s')!.policy).reason, 'costs ${AMOUNT}');
});

test('lists header values, env values and substituted credentials as secrets, longest first', () => {
  const c = parse(
    `store: postgres://pl:db-pass-123@db.internal/pl
counters: redis://:redis-pass-456@cache:6379
servers:
  remote:
    url: "https://api.example/mcp?key=\${URL_KEY}"
    headers: { Authorization: "Bearer \${TOKEN}", X-Static: static-header-value }
    policy: ${ALLOW_ALL}
  local:
    command: x
    env: { GITHUB_TOKEN: "\${GH}", TERM: xterm }
    policy: ${ALLOW_ALL}
`,
    { TOKEN: 'tok-abcdef', URL_KEY: 'url-key-789', GH: 'ghp_123456' },
  );
  assert.deepEqual(
    [...c.secretValues].sort(),
    ['Bearer tok-abcdef', 'db-pass-123', 'ghp_123456', 'redis-pass-456', 'static-header-value', 'tok-abcdef', 'url-key-789', 'xterm'].sort(),
  );
  for (let i = 1; i < c.secretValues.length; i++) {
    assert.ok((c.secretValues[i - 1]?.length ?? 0) >= (c.secretValues[i]?.length ?? 0));
  }
});

test('never puts a header value or env value into an error message', () => {
  const secret = 'sk-live-0123456789abcdef';
  const f = failure(() =>
    parse(
      `listen: nowhere
servers:
  remote:
    url: https://api.example/mcp
    headers:
      Authorization: "Bearer \${TOKEN}"
      "bad header": "${secret}"
      X-Ref: "\${not valid} ${secret}"
    policy: { version: "1", default: deny, tools: { "${secret}": { action: nope } } }
`,
      { TOKEN: secret },
    ),
  );
  assert.ok(f.issues.length >= 2);
  assert.doesNotMatch(f.message, new RegExp(secret));
  const g = failure(() => parse(`servers:\n  s:\n    url: "https://x.example"\n    headers: { A: "\${bad ref} ${secret}" }\n    policy: ${ALLOW_ALL}\n`));
  assert.doesNotMatch(g.message, new RegExp(secret));
  assert.deepEqual(g.issues, [
    'gateway.yaml: /servers/s/headers/A: invalid ${…} reference; expected ${NAME} or ${NAME:-default} (line 4:19)',
  ]);
});

test('reports syntax errors in gateway.yaml with line and column', () => {
  const f = failure(() => parse('servers:\n  s: { command: x\n'));
  assert.equal(f.code, ErrorCodes.CONFIG_INVALID);
  assert.match(f.issues[0] ?? '', /^gateway\.yaml: syntax error: .+ \(line \d+:\d+\)$/);
});

test('reports problems in gateway.yaml and in every policy it names in one error', () => {
  withFiles({ 'p.json': '{ "version": "1", "default": "never" }' }, (dir) => {
    const f = failure(() =>
      parseGatewayConfig(`listen: nowhere\nservers:\n  a: { command: x, policy: p.json }\n  b: { command: x, policy: { version: "1" } }\n`, 'gateway.yaml', {}, dir),
    );
    assert.equal(f.issues.length, 3);
    assert.match(f.issues[0] ?? '', /^gateway\.yaml: \/listen: /);
    assert.match(f.issues[1] ?? '', /p\.json: \/default: expected allow\|deny \(line 1:30\)$/);
    assert.equal(f.issues[2], 'gateway.yaml: /servers/b/policy/default: required field is missing; expected allow|deny (line 4:28)');
  });
});

test('reads counters as a URL or as an object with on_store_error and refund_tool_errors', () => {
  const servers = `servers:\n  s: { command: x, policy: ${ALLOW_ALL} }\n`;
  assert.deepEqual(parse(`counters: redis://cache:6379\n${servers}`).counters, {
    url: 'redis://cache:6379',
    onStoreError: 'deny',
    refundToolErrors: true,
  });
  assert.deepEqual(parse(`counters: { url: rediss://cache:6380, on_store_error: allow, refund_tool_errors: false }\n${servers}`).counters, {
    url: 'rediss://cache:6380',
    onStoreError: 'allow',
    refundToolErrors: false,
  });
  assert.deepEqual(parse(`counters: { on_store_error: allow }\n${servers}`).counters, { url: 'memory', onStoreError: 'allow', refundToolErrors: true });
  assert.deepEqual(failure(() => parse(`counters: { url: redis://x, on_store_error: maybe, retries: 3 }\n${servers}`)).issues, [
    'gateway.yaml: /counters/on_store_error: expected deny|allow (line 1:45)',
    'gateway.yaml: /counters/retries: unknown field; expected one of: url, on_store_error, refund_tool_errors (line 1:52)',
  ]);
});
