import path from 'node:path';
import { Gateway } from '../gateway/gateway.js';
import { createMemoryStore } from '../limits/store/memory.js';
import { createLimiter } from '../main.js';
import { logConversionWarnings, watchPolicies } from '../gateway/reload.js';
import { loadPolicyFile } from '../policy/index.js';
import { createLogger } from '../telemetry/logger.js';
import { StdioListener } from '../transport/downstream/stdio.js';
import { StdioUpstream } from '../transport/upstream/stdio.js';
import { parseDuration } from '../util/duration.js';
import { parse } from './args.js';
import type { Command } from './index.js';

export const runCommand: Command = {
  summary: 'wrap a local stdio MCP server: the client spawns this instead of the server',
  usage: `Usage: policylayer run --policy <policy.json> [--name <server>] [--timeout 60s] -- <command> [args...]

Speaks MCP on stdin/stdout to the client and runs <command> as the governed
server. Logs go to stderr.

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
    });
    if (!values.policy) throw new Error("missing --policy <policy.json>\nSee 'policylayer run --help'.");
    if (command.length === 0) throw new Error("missing the server command after --\nSee 'policylayer run --help'.");
    const policy = loadPolicyFile(values.policy);
    const logger = createLogger({ level: values['log-level'] ?? 'warn' });
    const name = values.name ?? path.basename(command[command.length - 1] ?? 'server');
    const timeoutMs = values.timeout ? parseDuration(values.timeout) : 60_000;
    // stdio is single-user and local by construction: the client that spawned us is the only caller.
    logger.warn({ server: name }, 'stdio mode: no authentication (the client that started this process is the only caller)');
    // One local client: its counters live and die with this process.
    const limiter = createLimiter(createMemoryStore(), { onStoreError: 'deny' }, logger);
    const gateway = new Gateway({ logger, sessionIdleTimeoutMs: 365 * 24 * 3600_000, limiter });
    logConversionWarnings(logger, name, policy);
    const upstream = new StdioUpstream({ name, command, timeoutMs, logger });
    const server = { name, upstream, policy };
    gateway.addServer(server);
    void gateway.start();
    const stopWatching = watchPolicies(gateway, logger);
    const listener = new StdioListener(gateway, server, process.stdout, logger);
    const stop = () => {
      stopWatching();
      return gateway.shutdown(5000);
    };
    process.once('SIGTERM', () => void stop().then(() => process.exit(0)));
    process.once('SIGINT', () => void stop().then(() => process.exit(0)));
    await listener.attach(process.stdin);
    await stop();
    return 0;
  },
};
