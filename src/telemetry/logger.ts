/**
 * The gateway's log: JSON lines on stderr (stdout carries MCP messages in stdio mode, so the log
 * never goes there). Upstream credentials are never passed to the logger in the first place; the
 * redact list is a second line of defence for header objects that reach it by mistake.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string | undefined;
  name?: string;
  /**
   * Values that must never be written (credentials from the config): any string containing one is
   * rewritten before it is logged, wherever it appears: a message, a field, a child's stderr line.
   */
  secrets?: readonly string[];
  /** Where lines go; stderr by default. */
  destination?: NodeJS.WritableStream;
}

/** Replaces every occurrence of a secret in strings anywhere inside `value` (objects and arrays are copied). */
export function scrub(value: unknown, secrets: readonly string[], depth = 0): unknown {
  if (typeof value === 'string') {
    let out = value;
    for (const s of secrets) if (out.includes(s)) out = out.split(s).join('[redacted]');
    return out;
  }
  if (depth > 6 || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map((v) => scrub(v, secrets, depth + 1));
  if (value instanceof Error) return scrub({ message: value.message, stack: value.stack }, secrets, depth + 1);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = scrub(v, secrets, depth + 1);
  return out;
}

/** Secret lists of loggers made by createLogger, so secrets learned later can join them. */
const secretLists = new WeakMap<Logger, string[]>();

// Very short values would redact ordinary words; the config loader keeps them out of errors the same way.
const MIN_SECRET_LENGTH = 4;

/**
 * Adds values `logger` (and its children) must redact from now on: credentials of a server
 * registered while the gateway runs. A logger not made by createLogger is left alone.
 */
export function addLoggerSecrets(logger: Logger, values: Iterable<string>): void {
  const list = secretLists.get(logger);
  if (list === undefined) return;
  for (const v of values) if (v.length >= MIN_SECRET_LENGTH && !list.includes(v)) list.push(v);
  // Longest first, so a secret containing another is redacted whole.
  list.sort((a, b) => b.length - a.length);
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.POLICYLAYER_LOG_LEVEL ?? 'info';
  const secrets = (options.secrets ?? []).filter((s) => s.length >= MIN_SECRET_LENGTH);
  const logger = pino(
    {
      level,
      name: options.name ?? 'policylayer',
      base: undefined,
      hooks: {
        logMethod(args, method) {
          if (secrets.length === 0) return method.apply(this, args);
          method.apply(this, args.map((a) => scrub(a, secrets)) as Parameters<typeof method>);
        },
      },
      redact: {
        paths: ['headers.authorization', 'headers.Authorization', 'headers.cookie', '*.headers.authorization', '*.headers.Authorization'],
        censor: '[redacted]',
      },
    },
    options.destination ?? pino.destination({ fd: 2, sync: false }),
  );
  secretLists.set(logger, secrets);
  return logger;
}

/** A logger that writes nothing, for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
