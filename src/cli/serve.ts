import { loadGatewayConfig } from '../config/index.js';
import { startGateway } from '../main.js';
import { createLogger } from '../telemetry/logger.js';
import { parse } from './args.js';
import type { Command } from './index.js';

export const serveCommand: Command = {
  summary: 'start the gateway from a gateway.yaml',
  usage: `Usage: policylayer serve -c <gateway.yaml> [--log-level info]

Starts the MCP endpoints (/mcp/<server>) for every server in the config.
SIGTERM or SIGINT drains calls in flight, then stops.

Example:
  policylayer serve -c examples/quickstart/gateway.yaml
`,
  async run(argv) {
    const { values } = parse('serve', argv, {
      config: { type: 'string', short: 'c' },
      'log-level': { type: 'string' },
    });
    if (!values.config) throw new Error("missing -c <gateway.yaml>\nSee 'policylayer serve --help'.");
    const config = loadGatewayConfig(values.config);
    const logger = createLogger({ level: values['log-level'], secrets: config.secretValues });
    const running = await startGateway(config, logger);
    const lines = [`PolicyLayer listening on ${running.url}`, '', 'MCP endpoints:'];
    for (const name of config.servers.keys()) lines.push(`  ${name.padEnd(14)} ${running.url}/mcp/${encodeURIComponent(name)}`);
    const first = [...config.servers.keys()][0]!;
    // Where the record of every decision goes, so the operator knows what `policylayer audit` reads.
    lines.push('', running.audit === undefined ? 'Audit log: off (audit.sinks: [])' : `Audit log: ${running.audit.sinkNames.join(', ')}`);
    lines.push(
      '',
      'Point an MCP client at an endpoint, e.g. in .mcp.json (Claude Code) or .cursor/mcp.json:',
      JSON.stringify({ mcpServers: { [first]: { type: 'http', url: `${running.url}/mcp/${encodeURIComponent(first)}` } } }, null, 2),
      '',
    );
    process.stdout.write(lines.join('\n') + '\n');
    logger.info({ url: running.url, servers: [...config.servers.keys()] }, 'listening');
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        logger.info({ signal }, 'shutting down: draining calls in flight');
        running.stop().then(resolve, resolve);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      // An orchestrator that started us with a pipe on stdin (tests, supervisors) stops us by closing it.
      if (!process.stdin.isTTY && process.env.POLICYLAYER_EXIT_ON_STDIN_CLOSE === '1') {
        process.stdin.on('end', () => stop('stdin closed')).resume();
      }
    });
    logger.flush?.();
    return 0;
  },
};
