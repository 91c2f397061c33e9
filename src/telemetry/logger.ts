/**
 * The gateway's log: JSON lines on stderr (stdout carries MCP messages in stdio mode, so the log
 * never goes there). Upstream credentials are never passed to the logger in the first place; the
 * redact list is a second line of defence for header objects that reach it by mistake.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  const level = options.level ?? process.env.POLICYLAYER_LOG_LEVEL ?? 'info';
  return pino(
    {
      level,
      name: options.name ?? 'policylayer',
      base: undefined,
      redact: {
        paths: ['headers.authorization', 'headers.Authorization', 'headers.cookie', '*.headers.authorization', '*.headers.Authorization'],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
}

/** A logger that writes nothing, for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
