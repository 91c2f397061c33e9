/** Free local ports and small HTTP helpers for integration tests. Everything binds 127.0.0.1. */
import { createServer } from 'node:net';

/** A port that was free on 127.0.0.1 a moment ago (the OS picks it; prefer port 0 where a listener allows). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface RawResponse {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON, or the JSON-RPC messages of an SSE body, or undefined. */
  json: unknown;
  /** JSON-RPC messages carried by an SSE body, in order. */
  events: unknown[];
}

/** POSTs a JSON-RPC body (object or exact text) and reads the whole answer, JSON or SSE. */
export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  const events: unknown[] = [];
  let json: unknown;
  if ((res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    for (const block of text.split(/\r?\n\r?\n/)) {
      const data = block
        .split(/\r?\n/)
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data) events.push(JSON.parse(data));
    }
    json = events.at(-1);
  } else if (text.length > 0) {
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
  }
  return { status: res.status, headers: res.headers, text, json, events };
}
