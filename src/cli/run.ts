import path from 'node:path';
import { Gateway } from '../gateway/gateway.js';
import { createMemoryStore } from '../limits/store/memory.js';
import { createLimiter, openAuditLog } from '../main.js';
import { AuditSchema, DEFAULT_BUSY_POLL_US, MAX_BUSY_POLL_US, toAuditConfig } from '../config/index.js';
import { logConversionWarnings, watchPolicies } from '../gateway/reload.js';
import { loadPolicyFile } from '../policy/index.js';
import { createLogger } from '../telemetry/logger.js';
import { StdioListener } from '../transport/downstream/stdio.js';
import { StdioUpstream } from '../transport/upstream/stdio.js';
import { parseDuration } from '../util/duration.js';
import { parse } from './args.js';
import type { AuditConfig } from '../config/index.js';
import type { Command } from './index.js';
import { configureBusyPoll } from '../util/busy-poll.js';

export const runCommand: Command = {
  summary: 'wrap a local stdio MCP server: the client spawns this instead of the server',
  usage: `Usage: policylayer run --policy <policy.json> [--name <server>] [--timeout 60s]
                       [--audit <sink>]... [--audit-arguments keys|redacted|full]
                       [--busy-poll-us 300] -- <command> [args...]

Speaks MCP on stdin/stdout to the client and runs <command> as the governed
server. Logs go to stderr.

--audit records every decision to a sink: sqlite:<path>, jsonl:<path> or
postgres://… (repeat it for several; stdout is taken by MCP). Without it,
nothing is recorded. Records spill next to the first file sink while a sink is
down.

--busy-poll-us: while calls come and go quickly, keep reading for up to this
many microseconds after each message instead of sleeping (0: never); see
docs/configuration.md, busy_poll_us.

Example (.mcp.json for Claude Code, or .cursor/mcp.json):
  { "mcpServers": { "filesystem": { "command": "node", "args": [
      "/path/to/policylayer/bin/policylayer.js", "run", "--policy", "policy.json", "--",
      "npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp/sandbox" ] } } }
`,
  async run(argv) {
    const dash = argv.indexOf('--');
    const own = dash >= 0 ? argv.slice(0, dash) : argv;
    const command = dash >= 0 ? argv.slice(dash + 1) : [];
    const { values } = parse('run', own, {
      policy: { type: 'string', short: 'p' },
      name: { type: 'string' },
      timeout: { type: 'string' },
      'log-level': { type: 'string' },
      audit: { type: 'string', multiple: true },
      'audit-arguments': { type: 'string' },
      'busy-poll-us': { type: 'string' },
    });
    if (!values.policy) throw new Error("missing --policy <policy.json>\nSee 'policylayer run --help'.");
    if (command.length === 0) throw new Error("missing the server command after --\nSee 'policylayer run --help'.");
    const policy = loadPolicyFile(values.policy);
    const logger = createLogger({ level: values['log-level'] ?? 'warn' });
    const name = values.name ?? path.basename(command[command.length - 1] ?? 'server');
    const timeoutMs = values.timeout ? parseDuration(values.timeout) : 60_000;
    const busyPoll = values['busy-poll-us'] ?? String(DEFAULT_BUSY_POLL_US);
    // The same bounds as gateway.yaml's busy_poll_us.
    if (!/^[0-9]{1,6}$/.test(busyPoll) || Number(busyPoll) > MAX_BUSY_POLL_US) {
      throw new Error(`--busy-poll-us: expected a whole number of microseconds from 0 to ${MAX_BUSY_POLL_US}, got '${busyPoll}'`);
    }
    configureBusyPoll(Number(busyPoll));
    // stdio is single-user and local by construction: the client that spawned us is the only caller.
    logger.warn({ server: name }, 'stdio mode: no authentication (the client that started this process is the only caller)');
    // One local client: its counters live and die with this process.
    const limiter = createLimiter(createMemoryStore(), { onStoreError: 'deny' }, logger);
    const audit = await openAuditLog(auditConfig(values.audit ?? [], values['audit-arguments']), logger, { quietWhenOff: true });
    const gateway = new Gateway({
      logger,
      sessionIdleTimeoutMs: 365 * 24 * 3600_000,
      limiter,
      audit: audit?.trail,
      // Pending approvals live in the control store, where an approver (admin API, CLI) finds them;
      // the stdio wrapper has none, so a call that needs a person is refused, saying where to go.
      approvalsUnavailable: STDIO_APPROVALS,
    });
    logConversionWarnings(logger, name, policy);
    const upstream = new StdioUpstream({ name, command, timeoutMs, logger });
    const server = { name, upstream, policy };
    gateway.addServer(server);
    void gateway.start();
    const stopWatching = watchPolicies(gateway, logger);
    const listener = new StdioListener(gateway, server, process.stdout, logger);
    const stop = async () => {
      configureBusyPoll(0);
      stopWatching();
      await gateway.shutdown(5000);
      await audit?.close().catch((err: unknown) => logger.error({ err: (err as Error).message }, 'audit log did not close cleanly'));
    };
    process.once('SIGTERM', () => void stop().then(() => process.exit(0)));
    process.once('SIGINT', () => void stop().then(() => process.exit(0)));
    await listener.attach(process.stdin);
    await stop();
    return 0;
  },
};

/** Why `policylayer run` refuses a call whose decision is require_approval. */
export const STDIO_APPROVALS =
  'this call needs human approval, which `policylayer run` (stdio) cannot ask for: approvals live in the control store of `policylayer serve`; serve this server with it to hold such calls for a person';

/** `audit:` for the stdio wrapper: the sinks of its --audit flags, every other setting at its default. */
function auditConfig(sinks: readonly string[], args: string | undefined): AuditConfig {
  if (sinks.includes('stdout')) throw new Error('--audit stdout: stdout carries the MCP messages in this mode; use jsonl:<path>');
  const parsed = AuditSchema.safeParse({ sinks, arguments: args ?? 'keys' });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`--${issue.path[0] === 'arguments' ? 'audit-arguments' : 'audit'}: ${issue.message}`);
  }
  const firstFile = parsed.data.sinks.find((s) => /^(sqlite|jsonl):/.test(s));
  // Spilled records wait beside the first file sink; with only a database, in the working folder.
  const spillBase = firstFile === undefined ? process.cwd() : path.dirname(path.resolve(firstFile.replace(/^(sqlite|jsonl):/, '')));
  return toAuditConfig({ ...parsed.data, spill_dir: path.join(spillBase, 'audit-spill') }, process.cwd());
}
