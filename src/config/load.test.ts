import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
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
  assert.equal(c.busyPollUs, 300);
  assert.equal(c.servers.get('s')?.timeoutMs, 60_000);
  assert.equal(c.servers.get('s')?.cwd, undefined);
  assert.equal(c.source, 'gateway.yaml');
});

test('reads busy_poll_us as whole microseconds, 0 turning polling off, and refuses more than a tenth of a second', () => {
  assert.equal(parse(`busy_poll_us: 0\nservers:\n  s: { command: server, policy: ${ALLOW_ALL} }\n`).busyPollUs, 0);
  assert.equal(parse(`busy_poll_us: 150\nservers:\n  s: { command: server, policy: ${ALLOW_ALL} }\n`).busyPollUs, 150);
  const f = failure(() => parse(`busy_poll_us: 250000\nservers:\n  s: { command: server, policy: ${ALLOW_ALL} }\n`));
  assert.deepEqual(f.issues, ['gateway.yaml: /busy_poll_us: expected at most 100000 µs (0.1 s) (line 1:15)']);
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
    parse(`telemetry: { traces: [] }
auth: { required: false, mode: jwt }
servers:
  s:
    comand: x
    policy: ${ALLOW_ALL}
`),
  );
  assert.equal(f.code, ErrorCodes.CONFIG_INVALID);
  assert.deepEqual(f.issues, [
    'gateway.yaml: /telemetry: unknown field; expected one of: listen, admin, store, counters, auth, limits, audit, allowed_hosts, allowed_origins, approvals, session_idle_timeout, shutdown_grace, busy_poll_us, servers (line 1:1)',
    'gateway.yaml: /auth/mode: unknown field; expected one of: required, oidc (line 2:26)',
    'gateway.yaml: /servers/s/comand: unknown field; expected one of: command, args, env, cwd, isolation, url, transport, headers, oauth, policy, timeout (line 5:5)',
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
busy_poll_us: -5
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
    'gateway.yaml: /busy_poll_us: expected a whole number of microseconds, 0 to turn polling off (line 9:15)',
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
  assert.deepEqual(interpolate('a${E}b', { E: '' }), { value: 'ab', missing: [], invalid: [], unreadable: [], substituted: [''] });
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

// --- auth.oidc ---

const OIDC_SERVERS = `servers:\n  s: { command: x, policy: ${ALLOW_ALL} }\n`;
const issuerKeys = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pemOf = (k: KeyObject) => k.export({ type: 'spki', format: 'pem' }).toString();

test('reads auth.oidc with a public_key_file relative to the config folder, applying every default', () => {
  const pem = pemOf(issuerKeys().publicKey);
  withFiles({ 'keys/issuer.pem': pem }, (dir) => {
    const yaml = `auth:
  required: true
  oidc: { issuer: "https://id.example.com/", audience: "https://gateway.example.com", public_key_file: ./keys/issuer.pem }
${OIDC_SERVERS}`;
    const c = parseGatewayConfig(yaml, 'gateway.yaml', {}, dir);
    assert.deepEqual(c.auth, {
      required: true,
      oidc: {
        issuer: 'https://id.example.com/',
        audience: 'https://gateway.example.com',
        publicKey: { file: join(dir, 'keys/issuer.pem'), kind: 'spki', pem: pem.trim() },
        algorithms: ['RS256', 'ES256', 'EdDSA'],
        clockToleranceMs: 30_000,
        grantClaim: 'sub',
        groupsClaim: 'groups',
        grantsByGroup: {},
        rolesByGroup: {},
      },
    });
  });
});

test('reads auth.oidc with a jwks_url and every mapping set', () => {
  const c = parse(`auth:
  required: true
  oidc:
    issuer: https://id.example.com/
    audience: https://gateway.example.com
    jwks_url: https://id.example.com/.well-known/jwks.json
    algorithms: [ ES256, ES256, PS256 ]
    clock_tolerance: 5s
    grant_claim: client_id
    groups_claim: roles
    grants_by_group: { ci: ci-runner }
    roles_by_group: { platform-admins: admin, security: policy_manager, eng: viewer }
${OIDC_SERVERS}`);
  assert.deepEqual(c.auth.oidc, {
    issuer: 'https://id.example.com/',
    audience: 'https://gateway.example.com',
    jwksUrl: 'https://id.example.com/.well-known/jwks.json',
    algorithms: ['ES256', 'PS256'],
    clockToleranceMs: 5000,
    grantClaim: 'client_id',
    groupsClaim: 'roles',
    grantsByGroup: { ci: 'ci-runner' },
    rolesByGroup: { 'platform-admins': 'admin', security: 'policy_manager', eng: 'viewer' },
  });
  // A JWKS on a loopback address may use plain http (a local issuer, tests).
  assert.equal(parse(`auth: { required: true, oidc: { issuer: i, audience: a, jwks_url: "http://127.0.0.1:8080/jwks" } }\n${OIDC_SERVERS}`).auth.oidc?.jwksUrl, 'http://127.0.0.1:8080/jwks');
});

test('requires issuer, audience and exactly one of jwks_url or public_key_file', () => {
  assert.deepEqual(failure(() => parse(`auth:\n  required: true\n  oidc: { jwks_url: "https://id.example.com/jwks" }\n${OIDC_SERVERS}`)).issues, [
    "gateway.yaml: /auth/oidc/issuer: required field is missing; expected the issuer identifier, exactly as in its tokens' iss (e.g. \"https://id.example.com/\") (line 3:9)",
    "gateway.yaml: /auth/oidc/audience: required field is missing; expected the gateway's own identifier, as the issuer puts it in aud (line 3:9)",
  ]);
  assert.deepEqual(failure(() => parse(`auth:\n  required: true\n  oidc: { issuer: i, audience: a }\n${OIDC_SERVERS}`)).issues, [
    "gateway.yaml: /auth/oidc: expected jwks_url or public_key_file: where the issuer's public keys are (line 3:9)",
  ]);
  assert.deepEqual(
    failure(() => parse(`auth:\n  required: true\n  oidc: { issuer: i, audience: a, jwks_url: "https://x.example/jwks", public_key_file: k.pem }\n${OIDC_SERVERS}`)).issues,
    ['gateway.yaml: /auth/oidc/public_key_file: use jwks_url or public_key_file, not both (line 3:88)'],
  );
});

test('refuses none, HS* and unknown algorithms, naming the asymmetric ones', () => {
  const f = failure(() => parse(`auth:\n  required: true\n  oidc: { issuer: i, audience: a, jwks_url: "https://x.example/jwks", algorithms: [ RS256, none, HS256, XY1 ] }\n${OIDC_SERVERS}`));
  const list = 'RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, Ed25519';
  assert.deepEqual(f.issues, [
    `gateway.yaml: /auth/oidc/algorithms/1: none means an unsigned token and is never accepted; expected an asymmetric JWS algorithm: ${list} (line 3:92)`,
    `gateway.yaml: /auth/oidc/algorithms/2: HS* algorithms use a shared secret, never accepted with a public key; expected an asymmetric JWS algorithm: ${list} (line 3:98)`,
    `gateway.yaml: /auth/oidc/algorithms/3: expected an asymmetric JWS algorithm: ${list} (line 3:105)`,
  ]);
  assert.deepEqual(failure(() => parse(`auth:\n  required: true\n  oidc: { issuer: i, audience: a, jwks_url: "https://x.example/jwks", algorithms: [] }\n${OIDC_SERVERS}`)).issues, [
    'gateway.yaml: /auth/oidc/algorithms: expected at least one algorithm (line 3:83)',
  ]);
});

test('reports a plain-http JWKS off loopback, a long clock tolerance, bad mappings and unknown keys with their lines', () => {
  const f = failure(() =>
    parse(`auth:
  required: true
  oidc:
    issuer: i
    audience: a
    jwks_url: http://id.example.com/jwks
    clock_tolerance: 1h
    grants_by_group: { ci: "ci runner" }
    roles_by_group: { eng: root }
    scopes: [ mcp ]
${OIDC_SERVERS}`),
  );
  assert.deepEqual(f.issues, [
    'gateway.yaml: /auth/oidc/jwks_url: expected an https:// URL (http:// only on a loopback address) (line 6:15)',
    'gateway.yaml: /auth/oidc/clock_tolerance: expected at most 5m: more would keep expired tokens working (line 7:22)',
    'gateway.yaml: /auth/oidc/grants_by_group/ci: expected a grant label: letters, digits, ., _ and -, starting with a letter or digit (line 8:28)',
    'gateway.yaml: /auth/oidc/roles_by_group/eng: expected admin|policy_manager|viewer (line 9:28)',
    'gateway.yaml: /auth/oidc/scopes: unknown field; expected one of: issuer, audience, jwks_url, public_key_file, algorithms, clock_tolerance, grant_claim, groups_claim, grants_by_group, roles_by_group (line 10:5)',
  ]);
});

test('refuses auth.oidc without auth.required: true, where no token would be checked', () => {
  assert.deepEqual(failure(() => parse(`auth: { oidc: { issuer: i, audience: a, jwks_url: "https://x.example/jwks" } }\n${OIDC_SERVERS}`)).issues, [
    'gateway.yaml: /auth/oidc: applies only with required: true (line 1:15)',
  ]);
});

test('answers a missing key file with CONFIG_UNREADABLE and a wrong one with CONFIG_INVALID, naming the file', () => {
  const keys = issuerKeys();
  const yaml = (file: string, algorithms = '[ ES256 ]') =>
    `auth:\n  required: true\n  oidc: { issuer: i, audience: a, public_key_file: ${file}, algorithms: ${algorithms} }\n${OIDC_SERVERS}`;
  withFiles(
    {
      'private.pem': keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      'public.pem': pemOf(keys.publicKey),
      'secret.jwk': JSON.stringify({ kty: 'oct', k: 'c2VjcmV0' }),
    },
    (dir) => {
      const load = (file: string, algorithms?: string) => failure(() => parseGatewayConfig(yaml(file, algorithms), 'gateway.yaml', {}, dir));
      const missing = load('keys/none.pem');
      assert.equal(missing.code, ErrorCodes.CONFIG_UNREADABLE);
      assert.deepEqual(missing.issues, [`gateway.yaml: /auth/oidc/public_key_file: cannot read the key file ${join(dir, 'keys/none.pem')}: no such file (line 3:52)`]);
      const priv = load('private.pem');
      assert.equal(priv.code, ErrorCodes.CONFIG_INVALID);
      assert.match(priv.issues[0] ?? '', new RegExp(`/auth/oidc/public_key_file: the key file ${join(dir, 'private.pem')}: this is a private key`));
      assert.match(load('secret.jwk').issues[0] ?? '', /the key file .*secret\.jwk: the key is a symmetric \(oct\) key/);
      assert.match(load('public.pem', '[ RS256 ]').issues[0] ?? '', /public\.pem: it holds an EC key on prime256v1, which none of the algorithms RS256 can verify with/);
    },
  );
});

test('resolves ${file:PATH} against the config folder in headers, env, url and oauth, dropping one trailing newline', () => {
  withFiles(
    {
      'secrets/api-key': 'key-from-file-123\n',
      'secrets/client': 'client-secret-456\r\n',
      'secrets/two-newlines': 'ends-with-newline\n\n',
      'secrets/host': 'api.example',
    },
    (dir) => {
      const c = parseGatewayConfig(
        `servers:
  remote:
    url: "https://\${file:secrets/host}/mcp"
    headers: { X-Api-Key: "\${file:secrets/api-key}", X-Literal: "$\${file:secrets/api-key}" }
    policy: ${ALLOW_ALL}
  oauthed:
    url: https://api.example/mcp
    oauth:
      token_url: https://auth.example/oauth/token
      client_id: policylayer
      client_secret: \${file:./secrets/client}
    policy: ${ALLOW_ALL}
  local:
    command: x
    env: { TOKEN: "\${file:${join(dir, 'secrets/two-newlines')}}" }
    policy: ${ALLOW_ALL}
`,
        'gateway.yaml',
        {},
        dir,
      );
      assert.equal(c.servers.get('remote')?.url, 'https://api.example/mcp');
      assert.deepEqual(c.servers.get('remote')?.headers, { 'X-Api-Key': 'key-from-file-123', 'X-Literal': '${file:secrets/api-key}' });
      assert.equal(c.servers.get('oauthed')?.oauth?.clientSecret, 'client-secret-456');
      assert.deepEqual(c.servers.get('local')?.env, { TOKEN: 'ends-with-newline\n' });
      for (const s of ['key-from-file-123', 'client-secret-456', 'ends-with-newline\n', 'api.example']) assert.ok(c.secretValues.includes(s), s);
    },
  );
});

test('answers a missing or unreadable secret file with CONFIG_UNREADABLE naming the location and the file, never a content', () => {
  withFiles({ 'secrets/dir/placeholder': 'x', 'secrets/ok': 'readable-secret-value' }, (dir) => {
    const f = failure(() =>
      parseGatewayConfig(
        `servers:
  remote:
    url: https://api.example/mcp
    headers: { Authorization: "Bearer \${file:secrets/missing}", X-Ok: "\${file:secrets/ok}" }
    policy: ${ALLOW_ALL}
  other:
    url: https://api.example/mcp
    oauth: { token_url: "https://auth.example/t", client_id: a, client_secret: "\${file:/nonexistent/secret}" }
    env: { X: "\${file:secrets/dir}" }
    policy: ${ALLOW_ALL}
`,
        'gateway.yaml',
        {},
        dir,
      ),
    );
    assert.equal(f.code, ErrorCodes.CONFIG_UNREADABLE);
    assert.deepEqual(f.issues, [
      `gateway.yaml: /servers/remote/headers/Authorization: cannot read the secret file ${join(dir, 'secrets/missing')}: no such file (line 4:31)`,
      'gateway.yaml: /servers/other/oauth/client_secret: cannot read the secret file /nonexistent/secret: no such file (line 8:80)',
      `gateway.yaml: /servers/other/env/X: cannot read the secret file ${join(dir, 'secrets/dir')}: is a directory, not a file (line 9:15)`,
    ]);
    assert.doesNotMatch(f.message, /readable-secret-value/);
  });
});

test('reports a missing variable before a missing secret file, both at once', () => {
  const f = failure(() => parse(`servers:\n  s:\n    url: https://x.example\n    headers: { A: "\${NOPE}", B: "\${file:/nonexistent/b}" }\n    policy: ${ALLOW_ALL}\n`));
  assert.equal(f.code, ErrorCodes.CONFIG_ENV_MISSING);
  assert.equal(f.issues.length, 2);
});

test('refuses ${file:…} outside a server\'s credentials, and an empty path', () => {
  const f = failure(() =>
    parse(`store: "sqlite:\${file:/etc/hostname}"\nservers:\n  s:\n    url: https://x.example\n    headers: { A: "\${file:}" }\n    policy: ${ALLOW_ALL}\n`),
  );
  assert.equal(f.code, ErrorCodes.CONFIG_INVALID);
  assert.deepEqual(f.issues, [
    "gateway.yaml: /store: ${file:…} references are allowed only in a server's url, headers, env and oauth, and in approvals' webhooks and link_secret (line 1:8)",
    'gateway.yaml: /servers/s/headers/A: invalid ${file:…} reference; expected ${file:PATH} (line 5:19)',
  ]);
});

test('interpolate reads ${file:…} only through the reader it is given', () => {
  const read = (p: string) => (p === 'k' ? { text: 'v\n' } : { error: `cannot read ${p}` });
  assert.deepEqual(interpolate('a${file:k}b${file:x}', {}, read), { value: 'avb', missing: [], invalid: [], unreadable: ['cannot read x'], substituted: ['v'] });
  assert.equal(interpolate('${file:k}', {}).invalid.length, 1);
});

test('normalises oauth with client_secret_basic as the default and records the client secret and substituted values as secrets', () => {
  const c = parse(
    `servers:
  poolparty:
    url: https://www.poolparty.io/api/mcp
    oauth:
      token_url: "https://auth.poolparty.io/oauth/token?tenant=\${TENANT}"
      client_id: policylayer
      client_secret: \${POOLPARTY_CLIENT_SECRET}
      scope: "media.read payments.write"
      audience: https://www.poolparty.io/api
    headers: { X-Trace: on }
    policy: ${ALLOW_ALL}
  literal:
    url: http://127.0.0.1:9/mcp
    oauth: { token_url: "http://localhost:9/token", client_id: 42, client_secret: 1234567, auth_method: client_secret_post }
    policy: ${ALLOW_ALL}
`,
    { POOLPARTY_CLIENT_SECRET: 'pp-client-secret', TENANT: 'tenant-xyz' },
  );
  assert.deepEqual(c.servers.get('poolparty')?.oauth, {
    tokenUrl: 'https://auth.poolparty.io/oauth/token?tenant=tenant-xyz',
    clientId: 'policylayer',
    clientSecret: 'pp-client-secret',
    scope: 'media.read payments.write',
    audience: 'https://www.poolparty.io/api',
    authMethod: 'client_secret_basic',
  });
  assert.deepEqual(c.servers.get('literal')?.oauth, { tokenUrl: 'http://localhost:9/token', clientId: '42', clientSecret: '1234567', authMethod: 'client_secret_post' });
  for (const s of ['pp-client-secret', 'tenant-xyz', '1234567']) assert.ok(c.secretValues.includes(s), s);
  assert.ok(!c.secretValues.includes('policylayer'), 'the client id is not a secret');
});

test('refuses oauth on a command server, beside an Authorization header, with a plain-http remote token_url, or malformed', () => {
  const f = failure(() =>
    parse(`servers:
  local:
    command: x
    oauth: { token_url: "https://auth.example/t", client_id: a, client_secret: b }
    policy: ${ALLOW_ALL}
  both:
    url: https://api.example/mcp
    headers: { authorization: "Bearer static" }
    oauth: { token_url: "https://auth.example/t", client_id: a, client_secret: b }
    policy: ${ALLOW_ALL}
  insecure:
    url: https://api.example/mcp
    oauth: { token_url: "http://auth.example/t", client_id: a, client_secret: "", auth_method: client_secret_jwt, grant: x }
    policy: ${ALLOW_ALL}
`),
  );
  assert.equal(f.code, ErrorCodes.CONFIG_INVALID);
  assert.deepEqual(f.issues, [
    'gateway.yaml: /servers/local/oauth: applies only to url servers (line 4:12)',
    'gateway.yaml: /servers/both/headers/authorization: oauth sets the Authorization header: remove this header or the oauth block (line 8:31)',
    'gateway.yaml: /servers/insecure/oauth/token_url: expected an https:// URL (http:// only on a loopback host), without credentials or fragment (line 13:25)',
    'gateway.yaml: /servers/insecure/oauth/client_secret: expected a non-empty client secret (line 13:79)',
    'gateway.yaml: /servers/insecure/oauth/auth_method: expected client_secret_basic|client_secret_post (line 13:96)',
    'gateway.yaml: /servers/insecure/oauth/grant: unknown field; expected one of: token_url, client_id, client_secret, scope, audience, auth_method (line 13:115)',
  ]);
});

test('turns the audit log on by default: a SQLite file and a spill folder beside the config', () => {
  const c = parseGatewayConfig(`servers:\n  s:\n    url: https://x.example\n    policy: ${ALLOW_ALL}\n`, 'gateway.yaml', {}, '/srv/pl');
  assert.deepEqual(c.audit, {
    sinks: ['sqlite:/srv/pl/data/audit.db'],
    arguments: 'keys',
    durability: 'async',
    flushIntervalMs: 20,
    batchSize: 500,
    maxQueue: 100_000,
    onFull: 'block',
    spillDir: '/srv/pl/data/audit-spill',
    signingKey: '/srv/pl/data/audit-signing.key',
    signingKeyNamed: false,
  });
});

test('reads every audit setting, with file sinks relative to the config folder and a database password kept secret', () => {
  const c = parseGatewayConfig(
    `audit:
  sinks: [ "sqlite:logs/a.db", "jsonl:/var/log/pl/a.jsonl", stdout, "postgres://pl:hunter2secret@db/audit" ]
  arguments: redacted
  durability: strict
  retention: 30d
  flush_interval: 5ms
  batch_size: 1000
  max_queue: 5000
  on_full: drop
  spill_dir: spill
  signing_key: keys/audit.key
servers:
  s:
    url: https://x.example
    policy: ${ALLOW_ALL}
`,
    'gateway.yaml',
    {},
    '/srv/pl',
  );
  assert.deepEqual(c.audit, {
    sinks: ['sqlite:/srv/pl/logs/a.db', 'jsonl:/var/log/pl/a.jsonl', 'stdout', 'postgres://pl:hunter2secret@db/audit'],
    arguments: 'redacted',
    durability: 'strict',
    retentionMs: 30 * 86_400_000,
    flushIntervalMs: 5,
    batchSize: 1000,
    maxQueue: 5000,
    onFull: 'drop',
    spillDir: '/srv/pl/spill',
    signingKey: '/srv/pl/keys/audit.key',
    signingKeyNamed: true,
  });
  assert.ok(c.secretValues.includes('hunter2secret'));
});

test('puts the audit signing key beside the spill folder unless audit.signing_key names one', () => {
  const config = (audit: string) => parseGatewayConfig(`audit:\n${audit}servers:\n  s:\n    url: https://x.example\n    policy: ${ALLOW_ALL}\n`, 'gateway.yaml', {}, '/srv/pl');
  assert.equal(config('  retention: 30d\n').audit.signingKey, '/srv/pl/data/audit-signing.key');
  assert.equal(config('  spill_dir: /var/lib/pl/spill\n').audit.signingKey, '/var/lib/pl/audit-signing.key');
  const named = config('  signing_key: /etc/pl/audit.key\n').audit;
  assert.deepEqual([named.signingKey, named.signingKeyNamed], ['/etc/pl/audit.key', true]);
});

test('an empty list of audit sinks turns the audit log off', () => {
  const c = parseGatewayConfig(`audit: { sinks: [] }\nservers:\n  s:\n    url: https://x.example\n    policy: ${ALLOW_ALL}\n`, 'gateway.yaml', {});
  assert.deepEqual(c.audit.sinks, []);
});

test('reports bad audit settings with their paths and lines', () => {
  const f = failure(() =>
    parseGatewayConfig(
      `audit:
  sinks: [ "mysql://db/x", "stdout", "stdout" ]
  arguments: everything
  durability: eventually
  retention: 0s
  signing_key: ""
  colour: blue
servers:
  s:
    url: https://x.example
    policy: ${ALLOW_ALL}
`,
      'gateway.yaml',
      {},
    ),
  );
  assert.equal(f.code, ErrorCodes.CONFIG_INVALID);
  const text = f.issues.join('\n');
  assert.match(text, /\/audit\/sinks\/0: expected sqlite:<path>, postgres:\/\/…, jsonl:<path> or stdout \(line 2/);
  assert.match(text, /\/audit\/sinks: a sink is listed twice/);
  assert.match(text, /\/audit\/arguments: expected keys\|redacted\|full \(line 3/);
  assert.match(text, /\/audit\/durability: expected async\|strict \(line 4/);
  assert.match(text, /\/audit\/retention: expected a duration above zero/);
  assert.match(text, /\/audit\/signing_key: expected the path of an Ed25519 private key file \(PKCS#8 PEM\) \(line 6/);
  assert.match(text, /colour/);
  const notText = failure(() => parseGatewayConfig(`audit: { signing_key: 42 }\nservers:\n  s:\n    url: https://x.example\n    policy: ${ALLOW_ALL}\n`, 'gateway.yaml', {}));
  assert.match(notText.issues.join('\n'), /\/audit\/signing_key: expected the path of an Ed25519 private key file/);
});

const APPROVAL_SERVERS = `servers:\n  s: { command: x, policy: ${ALLOW_ALL} }\n`;

test('reads approvals webhooks, public_url, link_secret, link_ttl and arguments, naming each webhook by its host unless named', () => {
  const c = parse(
    `approvals:
  public_url: https://gw.example.com/
  link_secret: \${LINK_SECRET}
  link_ttl: 15m
  arguments: keys
  webhooks:
    - url: https://hooks.slack.com/services/T0/B0/\${SLACK_PATH}
      secret: \${HOOK_SECRET}
    - url: https://approvals.internal/hook
      secret: another-secret-0123456789
      name: ops
      headers: { X-Api-Key: "\${RECEIVER_KEY}" }
${APPROVAL_SERVERS}`,
    { LINK_SECRET: 'l'.repeat(40), SLACK_PATH: 'slack-path-secret', HOOK_SECRET: 'hook-secret-0123456789', RECEIVER_KEY: 'receiver-key-1' },
  );
  assert.deepEqual(c.approvals, {
    pollIntervalMs: 5_000,
    progressIntervalMs: 10_000,
    publicUrl: 'https://gw.example.com',
    linkSecret: 'l'.repeat(40),
    linkTtlMs: 900_000,
    arguments: 'keys',
    webhooks: [
      { name: 'hooks.slack.com', url: 'https://hooks.slack.com/services/T0/B0/slack-path-secret', secret: 'hook-secret-0123456789' },
      { name: 'ops', url: 'https://approvals.internal/hook', secret: 'another-secret-0123456789', headers: { 'X-Api-Key': 'receiver-key-1' } },
    ],
  });
  // A webhook's URL can be the credential itself (Slack's is): all of it is kept out of logs.
  for (const s of ['https://hooks.slack.com/services/T0/B0/slack-path-secret', 'slack-path-secret', 'hook-secret-0123456789', 'another-secret-0123456789', 'receiver-key-1', 'l'.repeat(40)]) {
    assert.ok(c.secretValues.includes(s), s);
  }
});

test('has no webhooks by default', () => {
  const c = parse(APPROVAL_SERVERS);
  assert.deepEqual(c.approvals, { pollIntervalMs: 5_000, progressIntervalMs: 10_000, webhooks: [] });
});

test('requires public_url with webhooks, a long enough secret, and a name of its own for each webhook', () => {
  const { issues } = failure(() =>
    parse(`approvals:
  public_url: https://gw.example.com
  webhooks:
    - { url: "https://a.example/1", secret: short }
    - { url: "ftp://b.example/3", secret: 0123456789abcdef }
${APPROVAL_SERVERS}`),
  );
  assert.deepEqual(issues, [
    'gateway.yaml: /approvals/webhooks/0/secret: expected a secret of at least 16 characters (e.g. ${APPROVAL_WEBHOOK_SECRET}; openssl rand -hex 32 makes one) (line 4:45)',
    'gateway.yaml: /approvals/webhooks/1/url: expected an http:// or https:// URL (line 5:14)',
  ]);
  const missing = failure(() =>
    parse(`approvals:
  webhooks:
    - { url: "https://a.example/1", secret: 0123456789abcdef }
    - { url: "https://a.example/2", secret: 0123456789abcdef }
${APPROVAL_SERVERS}`),
  );
  assert.deepEqual(missing.issues, [
    "gateway.yaml: /approvals/webhooks: public_url is required when webhooks are set: each webhook carries approve and deny links to <public_url>/approvals/…, so it must be the gateway's externally reachable base URL, e.g. https://gateway.example.com (line 3:5)",
    "gateway.yaml: /approvals/webhooks/1: another webhook is named 'a.example' (a name defaults to the URL's host): give each its own name (line 4:7)",
  ]);
  const bad = failure(() => parse(`approvals: { public_url: "https://gw.example.com/?x=1", link_secret: short, arguments: full }\n${APPROVAL_SERVERS}`));
  assert.equal(bad.issues.length, 3);
  assert.match(bad.issues[0]!, /\/approvals\/public_url: expected the http:\/\/ or https:\/\/ base URL/);
  assert.match(bad.issues[1]!, /\/approvals\/link_secret: expected a secret of at least 32 characters/);
  assert.match(bad.issues[2]!, /\/approvals\/arguments: expected keys\|redacted \(webhooks never carry full arguments\)/);
});
