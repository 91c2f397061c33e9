/**
 * Small helpers shared by the safety, supervision, run and legacy-SSE integration tests: where the
 * real servers live, a logger whose output a test can read, raw HTTP against the gateway, and
 * process checks that read /proc (Linux) so a test can prove no process was left behind.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { request } from 'undici';
import type { Logger } from '../../src/telemetry/logger.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (dist/test/helpers → three levels up). */
export const ROOT = path.resolve(here, '../../..');
const require = createRequire(path.join(ROOT, 'package.json'));

function binOf(pkg: string): string {
  return path.join(path.dirname(require.resolve(`${pkg}/package.json`)), 'dist/index.js');
}

export const EVERYTHING_BIN = binOf('@modelcontextprotocol/server-everything');
export const MEMORY_BIN = binOf('@modelcontextprotocol/server-memory');
export const POLICYLAYER_BIN = path.join(ROOT, 'bin/policylayer.js');
export const STDIO_FIXTURE = path.join(ROOT, 'dist/test/fixtures/stdio-server.js');

/** A logger at `level` whose JSON lines are kept in `lines`, for assertions on what was logged. */
export function captureLogger(level = 'trace'): { logger: Logger; lines: Array<Record<string, unknown>>; text(): string } {
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      raw.push(chunk.toString('utf8'));
      cb();
    },
  });
  const logger = pino({ level, base: undefined }, sink) as unknown as Logger;
  return {
    logger,
    get lines() {
      return raw
        .join('')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    text: () => raw.join(''),
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: any;
}

/** One HTTP request with full control of the headers (Host included), answered as text and JSON. */
export async function raw(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Readable | null } = {},
): Promise<RawResponse> {
  const res = await request(url, {
    method: (init.method ?? 'POST') as 'POST',
    headers: init.headers ?? {},
    body: init.body ?? null,
  });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

export const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' } as const;
export const PROTOCOL_VERSION = '2025-06-18';

/** Opens a session the way a client does (initialize, then notifications/initialized); returns its id. */
export async function openSession(endpoint: string): Promise<string> {
  const init = await raw(endpoint, {
    headers: { ...MCP_HEADERS },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'policylayer-test', version: '0' } },
    }),
  });
  if (init.status !== 200) throw new Error(`initialize answered ${init.status}: ${init.text}`);
  const sid = init.headers['mcp-session-id'];
  if (typeof sid !== 'string') throw new Error('initialize answered without an Mcp-Session-Id');
  const ack = await raw(endpoint, {
    headers: sessionHeaders(sid),
    body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
  });
  if (ack.status !== 202) throw new Error(`notifications/initialized answered ${ack.status}`);
  return sid;
}

export function sessionHeaders(sid: string): Record<string, string> {
  return { ...MCP_HEADERS, 'mcp-session-id': sid, 'mcp-protocol-version': PROTOCOL_VERSION };
}

/** Reads the one JSON-RPC answer of a POST, whether it came as JSON or as an SSE stream. */
export function answerOf(res: RawResponse): any {
  if (res.json !== undefined) return res.json;
  const events = res.text
    .split('\n')
    .filter((l) => l.startsWith('data:'))
    .map((l) => JSON.parse(l.slice(5).trim()) as Record<string, unknown>);
  return events.find((e) => 'result' in e || 'error' in e);
}

export { isAlive } from './processes.js';

/** A gateway's children, told apart: the servers it runs, and the reaper that outlives it to end them. */
export function childrenByKind(pid: number): { servers: number[]; reapers: number[] } {
  const children = childrenOf(pid);
  const isReaper = (p: number) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('reaper-main');
    } catch {
      return false;
    }
  };
  return { servers: children.filter((p) => !isReaper(p)), reapers: children.filter(isReaper) };
}

/** Direct children of `pid`, from /proc. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Polls `check` every 25 ms until it returns true or `ms` pass; returns its last answer. */
export async function waitFor(check: () => boolean, ms = 3000): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (check()) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** SIGKILLs a process group, ignoring one that is already gone (after-hook clean-up). */
export function killGroup(pid: number | undefined | null): void {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
