import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, ErrorCodes } from '../errors.js';
import { evaluate, loadPolicyFile, parsePolicy } from './index.js';

// Verbatim from the seed pages: the format users already copy must keep loading.
const SEED = `{
  "version": "1",
  "default": "deny",
  "tools": {
    "create_session": {
      "limits": [
        {
          "counter": "create_session_rate",
          "window": "minute",
          "max": 10,
          "scope": "grant"
        }
      ]
    }
  }
}
`;

const EXTENDED = `{ "version": "1", "default": "deny",
  "hide": ["delete_account", "admin_*"],
  "all_tools": { "limits": [ { "counter": "calls", "window": "minute", "max": 120, "scope": "grant" } ] },
  "tools": {
    "create_session": { "limits": [ { "counter": "create_session_rate", "window": "minute", "max": 10, "scope": "grant" } ] },
    "delete_*": { "action": "deny", "reason": "destructive tools are off in this deployment" },
    "read_file": {}
  } }`;

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.issues;
  }
  assert.fail('expected a ConfigError');
}

function policyWithLimit(limit: string): string {
  return `{ "version": "1", "default": "deny", "tools": { "t": { "limits": [ ${limit} ] } } }`;
}

test('loads the seed policy unchanged and rate-limits create_session per grant', () => {
  const p = parsePolicy(SEED, 'policy.json');
  const d = evaluate({ tool: 'create_session', args: {} }, p);
  assert.equal(d.effect, 'allow');
  assert.equal(d.rule, '/tools/create_session');
  assert.deepEqual(d.limits, [
    { counter: 'create_session_rate', kind: 'rolling', windowMs: 60_000, max: 10, scope: 'grant', pointer: '/tools/create_session/limits/0' },
  ]);
  assert.equal(evaluate({ tool: 'run_command', args: {} }, p).effect, 'deny');
});

test('loads the other seed policies (create_join_session, submit_media_block) unchanged', () => {
  for (const tool of ['create_join_session', 'submit_media_block']) {
    const text = SEED.replaceAll('create_session', tool).replace('"max": 10', '"max": 30');
    const d = evaluate({ tool, args: {} }, parsePolicy(text, 'policy.json'));
    assert.equal(d.effect, 'allow');
    assert.equal(d.limits[0]?.counter, `${tool}_rate`);
    assert.equal(d.limits[0]?.max, 30);
  }
});

test('loads the extended format with hide, all_tools and globbed rules', () => {
  const p = parsePolicy(EXTENDED, 'policy.json');
  assert.equal(p.defaultAction, 'deny');
  assert.equal(p.exact.size, 2);
  assert.equal(p.globs.length, 1);
  assert.deepEqual([...p.hiddenNames], ['delete_account']);
  assert.equal(p.allToolsLimits[0]?.pointer, '/all_tools/limits/0');
});

test('reads the same policy written as YAML', () => {
  const yaml = `version: "1"
default: deny
hide: [delete_account, "admin_*"]
all_tools:
  limits:
    - { counter: calls, window: minute, max: 120, scope: grant }
tools:
  create_session:
    limits:
      - { counter: create_session_rate, window: minute, max: 10, scope: grant }
  "delete_*": { action: deny, reason: destructive tools are off in this deployment }
  read_file: {}
`;
  const fromYaml = parsePolicy(yaml, 'policy.yaml');
  const fromJson = parsePolicy(EXTENDED, 'policy.json');
  assert.equal(fromYaml.version, fromJson.version);
  assert.deepEqual(evaluate({ tool: 'delete_user', args: {} }, fromYaml), evaluate({ tool: 'delete_user', args: {} }, fromJson));
});

test('accepts version as the number 1 and reason as on_deny', () => {
  const p = parsePolicy('{ "version": 1, "default": "allow", "tools": { "x": { "action": "deny", "on_deny": "no x" } } }', 'p.json');
  assert.equal(evaluate({ tool: 'x', args: null }, p).reason, 'no x');
});

test('accepts a $schema key so editors can validate the file', () => {
  parsePolicy('{ "$schema": "https://policylayer.dev/schema/policy.schema.json", "version": "1", "default": "deny" }', 'p.json');
});

test('normalises every window form to milliseconds', () => {
  const cases: [string, number][] = [
    ['"second"', 1_000],
    ['"minute"', 60_000],
    ['"hour"', 3_600_000],
    ['"day"', 86_400_000],
    ['"90s"', 90_000],
    ['"5m"', 300_000],
    ['"1h"', 3_600_000],
    ['"1d"', 86_400_000],
    ['"250ms"', 250],
    ['60', 60_000],
  ];
  for (const [window, ms] of cases) {
    const p = parsePolicy(policyWithLimit(`{ "counter": "c", "window": ${window}, "max": 1, "scope": "grant" }`), 'p.json');
    assert.equal(evaluate({ tool: 't', args: {} }, p).limits[0]?.windowMs, ms, window);
  }
});

test('carries scope, increment and increment_from into the limit spec', () => {
  const p = parsePolicy(
    policyWithLimit(
      '{ "counter": "spend", "window": "day", "max": 1000000, "scope": "args.account.id", "increment_from": "args.amount" },' +
        '{ "counter": "weighted", "window": "hour", "max": 100, "scope": "session", "increment": 2.5 },' +
        '{ "counter": "all", "window": "hour", "max": 100, "scope": "server" }',
    ),
    'p.json',
  );
  const [a, b, c] = evaluate({ tool: 't', args: {} }, p).limits;
  assert.deepEqual(a, { counter: 'spend', kind: 'rolling', windowMs: 86_400_000, max: 1_000_000, scope: 'args.account.id', incrementFrom: 'args.amount', pointer: '/tools/t/limits/0' });
  assert.deepEqual(b, { counter: 'weighted', kind: 'rolling', windowMs: 3_600_000, max: 100, scope: 'session', increment: 2.5, pointer: '/tools/t/limits/1' });
  assert.equal(c?.scope, 'server');
  assert.equal(Object.hasOwn(c ?? {}, 'increment'), false);
});

test('reports a bad window with the file, JSON pointer and line:column of the value', () => {
  const text = SEED.replace('"minute"', '"fortnight"');
  assert.deepEqual(issuesOf(() => parsePolicy(text, 'policy.json')), [
    'policy.json: /tools/create_session/limits/0/window: expected second|minute|hour|day or a duration like "90s" (line 9:21)',
  ]);
});

test('collects every problem in the file into one error, in file order', () => {
  const text = `{ "version": "2", "default": "maybe",
  "tools": {
    "x": { "limits": [ { "counter": "", "window": "0s", "max": 0, "scope": "team" } ] },
    "y": { "action": "block" }
  },
  "extra": true }`;
  assert.deepEqual(issuesOf(() => parsePolicy(text, 'policy.json')), [
    'policy.json: /version: expected "1" (line 1:14)',
    'policy.json: /default: expected allow|deny (line 1:30)',
    'policy.json: /tools/x/limits/0/counter: expected a counter name (a non-empty string) (line 3:37)',
    'policy.json: /tools/x/limits/0/window: expected a duration longer than zero and shorter than 100 years (line 3:51)',
    'policy.json: /tools/x/limits/0/max: expected a positive integer (line 3:64)',
    'policy.json: /tools/x/limits/0/scope: expected grant|session|server or args.<path> (line 3:76)',
    'policy.json: /tools/y/action: expected allow|deny|require_approval (line 4:22)',
    'policy.json: /extra: unknown field; expected one of: $schema, version, description, default, hide, shadow, all_tools, tools (line 6:3)',
  ]);
});

test('loads require, deny_if and approval on a tool rule', () => {
  const text = `version: "1"
default: deny
tools:
  create_charge:
    require: [ { path: args.currency, op: in, value: [usd] } ]
    deny_if: []
    approval: { timeout: 10m }
`;
  const d = evaluate({ tool: 'create_charge', args: { currency: 'usd' } }, parsePolicy(text, 'policy.yaml'));
  assert.equal(d.effect, 'allow');
  assert.equal(d.approval?.timeoutMs, 600_000);
});

test('reports a missing required field at the object that lacks it', () => {
  assert.deepEqual(issuesOf(() => parsePolicy('{ "version": "1",\n  "tools": { "t": { "limits": [ { "counter": "c", "window": "day", "scope": "grant" } ] } } }', 'p.json')), [
    'p.json: /default: required field is missing; expected allow|deny (line 1:1)',
    'p.json: /tools/t/limits/0/max: required field is missing; expected max (a positive integer), or max_in_flight (line 2:33)',
  ]);
});

test('rejects reason with on_deny, and increment with increment_from', () => {
  const both = '{ "version": "1", "default": "deny", "tools": { "t": { "reason": "a", "on_deny": "b" } } }';
  assert.deepEqual(issuesOf(() => parsePolicy(both, 'p.json')), ['p.json: /tools/t/on_deny: use reason or on_deny, not both (line 1:82)']);
  const inc = policyWithLimit('{ "counter": "c", "window": "day", "max": 5, "scope": "grant", "increment": 1, "increment_from": "args.n" }');
  assert.deepEqual(issuesOf(() => parsePolicy(inc, 'p.json')), [
    'p.json: /tools/t/limits/0/increment_from: use increment or increment_from, not both (line 1:165)',
  ]);
});

test('rejects non-positive integer windows, bad argument paths, empty hide entries and empty tool names', () => {
  const text = `{ "version": "1", "default": "deny", "hide": [""],
  "tools": { "t": { "limits": [ { "counter": "c", "window": -5, "max": 1, "scope": "args.", "increment_from": "amount" } ] } } }`;
  assert.deepEqual(issuesOf(() => parsePolicy(text, 'p.json')), [
    'p.json: /hide/0: expected a tool name or glob (line 1:47)',
    'p.json: /tools/t/limits/0/window: expected second|minute|hour|day or a duration like "90s" (line 2:61)',
    'p.json: /tools/t/limits/0/scope: expected grant|session|server or args.<path> (line 2:84)',
    'p.json: /tools/t/limits/0/increment_from: expected args.<path>, e.g. "args.amount" (line 2:111)',
  ]);
  assert.deepEqual(issuesOf(() => parsePolicy('{ "version": "1", "default": "deny", "tools": { "": {} } }', 'p.json')), [
    'p.json: /tools/: expected a tool name or glob (a non-empty string) (line 1:49)',
  ]);
});

test('reports syntax errors with line and column, duplicate keys included', () => {
  const [first] = issuesOf(() => parsePolicy('{ "version": "1",\n  "default": "deny",\n  "default": "allow" }', 'p.json'));
  assert.equal(first, 'p.json: syntax error: Map keys must be unique (line 3:3)');
  const [unclosed] = issuesOf(() => parsePolicy('{ "version": "1", ', 'p.json'));
  assert.match(unclosed ?? '', /^p\.json: syntax error: .+ \(line 1:\d+\)$/);
});

test('reports an empty file as not being a policy', () => {
  assert.deepEqual(issuesOf(() => parsePolicy('', 'p.json')), ['p.json: expected a policy object with version and default']);
  assert.deepEqual(issuesOf(() => parsePolicy('[]', 'p.json')), ['p.json: expected a policy object with version and default (line 1:1)']);
});

test('loads a policy file from disk, byte-order mark and all, and names it as the source', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pl-policy-'));
  try {
    const file = join(dir, 'policy.json');
    writeFileSync(file, '\uFEFF' + SEED);
    const p = loadPolicyFile(file);
    assert.equal(p.source, file);
    assert.equal(evaluate({ tool: 'create_session', args: {} }, p).effect, 'allow');
    writeFileSync(file, SEED.replace('"grant"', '"everyone"'));
    assert.deepEqual(issuesOf(() => loadPolicyFile(file)), [
      `${file}: /tools/create_session/limits/0/scope: expected grant|session|server or args.<path> (line 11:20)`,
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('answers a missing policy file with CONFIG_UNREADABLE naming the file', () => {
  try {
    loadPolicyFile('/nonexistent/policy.json');
    assert.fail('expected an error');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, ErrorCodes.CONFIG_UNREADABLE);
    assert.equal(err.message, '/nonexistent/policy.json: cannot read: no such file');
  }
});

test('compiles calendar-aligned windows and concurrency limits into the limit spec', () => {
  const p = parsePolicy(
    JSON.stringify({
      version: '1',
      default: 'deny',
      tools: {
        t: {
          limits: [
            { counter: 'daily', window: 'day', align: 'calendar', max: 5, scope: 'grant' },
            { counter: 'busy', max_in_flight: 2, scope: 'session' },
          ],
        },
      },
    }),
    'p.json',
  );
  const [daily, busy] = evaluate({ tool: 't', args: {} }, p).limits;
  assert.deepEqual(daily, { counter: 'daily', kind: 'calendar', windowMs: 86_400_000, max: 5, scope: 'grant', pointer: '/tools/t/limits/0' });
  assert.deepEqual(busy, { counter: 'busy', kind: 'in_flight', windowMs: 0, max: 2, scope: 'session', pointer: '/tools/t/limits/1' });
});

test('refuses a concurrency limit that also has a window, max or increment, and a rate limit without window or max', () => {
  const text = `{"version":"1","default":"deny","tools":{"t":{"limits":[
{"counter":"a","max_in_flight":2,"window":"minute","scope":"grant"},
{"counter":"b","max_in_flight":2,"increment_from":"args.n","scope":"grant"},
{"counter":"c","scope":"grant"}]}}}`;
  assert.throws(
    () => parsePolicy(text, 'p.json'),
    (err: Error) => {
      assert.deepEqual(err.message.split('\n'), [
        'p.json: /tools/t/limits/0/window: a max_in_flight limit takes no window (line 2:43)',
        'p.json: /tools/t/limits/1/increment_from: a max_in_flight limit takes no increment_from (line 3:51)',
        'p.json: /tools/t/limits/2/window: required field is missing; expected a window (second|minute|hour|day or a duration), or max_in_flight (line 4:1)',
        'p.json: /tools/t/limits/2/max: required field is missing; expected max (a positive integer), or max_in_flight (line 4:1)',
      ]);
      return true;
    },
  );
});
