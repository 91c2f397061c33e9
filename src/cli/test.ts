import path from 'node:path';
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import { checkPolicyValue, compilePolicy, evaluate, loadPolicyFile } from '../policy/index.js';
import type { CompiledPolicy, Decision } from '../policy/index.js';
import { formatProblems, readSource, strictObject, zodProblems } from '../policy/diagnostics.js';
import type { Problem } from '../policy/diagnostics.js';
import { readText, tryReadText } from '../policy/load.js';
import { parse } from './args.js';
import { extraFields, parseFormat, reportInvalid } from './explain.js';
import type { Command } from './index.js';

export const testCommand: Command = {
  summary: 'run a file of fixture calls against a policy and check each expected decision',
  usage: `Usage: policylayer test <tests.yaml> [--format text|json]

A tests file names a policy (a path relative to the tests file, or the policy written
inline as an object) and calls with the decision each must get:

  policy: policy.yaml
  tests:
    - name: reads are allowed
      tool: read_text_file
      args: { path: /tmp/x }
      expect: allow                  # allow | deny | hidden | require_approval
    - name: writes are refused with the reason
      tool: write_file
      expect: deny
      rule: /tools/write_*           # optional: the rule that must fire
      reason_contains: read-only     # optional: text the reason must contain

Prints ok or FAIL for each test and a summary. Exits 0 when every test passes, 1 on any
failure or when the tests file or the policy is invalid.

Example:
  policylayer test examples/filesystem/policy.test.yaml
`,
  async run(argv) {
    const { values, positionals } = parse('test', argv, { format: { type: 'string' } }, true);
    const format = parseFormat('test', values.format);
    if (positionals.length !== 1) {
      throw new Error(`expected exactly one tests file, got ${positionals.length}\nSee 'policylayer test --help'.`);
    }
    const file = positionals[0] as string;
    let suite: LoadedSuite;
    try {
      suite = loadSuite(file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      reportInvalid(format, file, err.issues);
      return 1;
    }
    const results = suite.tests.map((t) => runCase(t, suite.policy));
    const passed = results.filter((r) => r.ok).length;
    const failed = results.length - passed;
    if (format === 'json') {
      const out = { ok: failed === 0, policy: { source: suite.policy.source, version: suite.policy.version }, passed, failed, tests: results };
      process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    } else {
      const lines: string[] = [];
      for (const r of results) {
        lines.push(`${r.ok ? 'ok  ' : 'FAIL'}  ${r.name}`);
        for (const p of r.problems) lines.push(`      ${p}`);
      }
      lines.push(`${passed} passed, ${failed} failed`);
      process.stdout.write(lines.join('\n') + '\n');
    }
    return failed === 0 ? 0 : 1;
  },
};

const EXPECTATIONS = ['allow', 'deny', 'hidden', 'require_approval'] as const;

const nonEmpty = (what: string) => z.string({ error: `expected ${what} (a non-empty string)` }).min(1, { error: `expected ${what} (a non-empty string)` });

const TestCaseSchema = strictObject(
  {
    name: nonEmpty('a test name'),
    tool: nonEmpty('a tool name'),
    args: z.record(z.string(), z.unknown(), { error: 'expected the call arguments as an object' }).optional(),
    expect: z.enum(EXPECTATIONS, { error: 'expected allow|deny|hidden|require_approval' }),
    rule: nonEmpty('a rule pointer such as /tools/write_file or (default deny)').optional(),
    reason_contains: nonEmpty('text the reason must contain').optional(),
  },
  'a test object with name, tool and expect',
);

type TestCase = z.infer<typeof TestCaseSchema>;

const TestsFileSchema = strictObject(
  {
    policy: z.union([z.string().min(1), z.record(z.string(), z.unknown())], {
      error: 'expected a policy file path (relative to this file) or a policy object',
    }),
    tests: z.array(TestCaseSchema, { error: 'expected an array of tests' }).min(1, { error: 'expected at least one test' }),
  },
  'an object with policy and tests',
);

interface LoadedSuite {
  policy: CompiledPolicy;
  tests: TestCase[];
}

/** Reads, validates and resolves a tests file. Throws ConfigError with file, pointer and line. */
function loadSuite(file: string): LoadedSuite {
  const read = readSource(readText(file), file);
  if (read.errors.length > 0) throw new ConfigError([...read.errors]);
  const parsed = TestsFileSchema.safeParse(read.value);
  if (!parsed.success) {
    const problems = zodProblems(parsed.error, read.value).map((p) => nameTest(p, read.value));
    throw new ConfigError(formatProblems(file, read.text, problems));
  }
  const { policy, tests } = parsed.data;
  if (typeof policy === 'string') {
    const policyPath = path.isAbsolute(policy) ? policy : path.join(path.dirname(file), policy);
    // Say where the path was written as well as what is wrong with it: it resolves against this file.
    const readable = tryReadText(policyPath);
    if (!readable.ok) throw new ConfigError(formatProblems(file, read.text, [{ path: ['policy'], message: `cannot read ${policyPath}: ${readable.why}` }]));
    return { policy: loadPolicyFile(policyPath), tests };
  }
  const checked = checkPolicyValue(policy, read.text, ['policy']);
  if (!checked.ok) throw new ConfigError(checked.issues);
  return { policy: compilePolicy(checked.document, file), tests };
}

/** Adds the test's name to a problem inside `tests[i]`, when it has one, beside the index in the pointer. */
function nameTest(p: Problem, value: unknown): Problem {
  if (p.path[0] !== 'tests' || typeof p.path[1] !== 'number' || p.path.length < 2) return p;
  const tests = (value as { tests?: unknown }).tests;
  const name = Array.isArray(tests) ? (tests[p.path[1]] as { name?: unknown } | undefined)?.name : undefined;
  const label = typeof name === 'string' && name !== '' ? `test ${p.path[1]} "${name}"` : `test ${p.path[1]}`;
  return { ...p, message: `${p.message} [${label}]` };
}

interface CaseResult {
  name: string;
  ok: boolean;
  /** One line per expectation that did not hold. */
  problems: string[];
  call: { tool: string; args: Record<string, unknown> };
  expected: { effect: string; rule?: string; reason_contains?: string };
  actual: Decision;
}

function runCase(t: TestCase, policy: CompiledPolicy): CaseResult {
  const args = t.args ?? {};
  const d = evaluate({ tool: t.tool, args }, policy);
  const problems: string[] = [];
  if (d.effect !== t.expect) problems.push(`effect: expected ${t.expect}, got ${d.effect} (rule ${d.rule}: ${d.reason})`);
  if (t.rule !== undefined && d.rule !== t.rule) problems.push(`rule: expected ${t.rule}, got ${d.rule}`);
  if (t.reason_contains !== undefined && !d.reason.includes(t.reason_contains)) {
    problems.push(`reason: expected it to contain ${JSON.stringify(t.reason_contains)}, got ${JSON.stringify(d.reason)}`);
  }
  if (problems.length > 0) {
    for (const [k, v] of extraFields(d)) problems.push(`(${k}: ${typeof v === 'string' ? v : JSON.stringify(v)})`);
  }
  const expected: CaseResult['expected'] = { effect: t.expect };
  if (t.rule !== undefined) expected.rule = t.rule;
  if (t.reason_contains !== undefined) expected.reason_contains = t.reason_contains;
  return { name: t.name, ok: problems.length === 0, problems, call: { tool: t.tool, args }, expected, actual: d };
}
