/**
 * The stdout sink: each record as one JSON line on a writable stream (process.stdout by default),
 * for containers whose log collector reads stdout. A batch is one write; the promise resolves once
 * the stream has taken it and, if its buffer is full, has drained, so a slow reader slows the
 * writer's lane (which queues and, past its bound, blocks or drops) instead of growing memory here.
 *
 * Durability is the reader's: "written" means handed to the stream. In stdio mode (`policylayer
 * run`) stdout carries MCP messages, so the gateway must not configure this sink there.
 */
import { once } from 'node:events';
import type { AuditRecord } from '../event.js';
import type { AuditSink } from '../sink.js';
import { jsonLines } from './jsonl.js';

export interface StdoutSinkOptions {
  /** Default process.stdout. */
  readonly out?: NodeJS.WritableStream;
  /** Default `stdout`. */
  readonly name?: string;
}

export class StdoutSink implements AuditSink {
  readonly name: string;
  private readonly out: NodeJS.WritableStream;
  private closed = false;

  constructor(o: StdoutSinkOptions = {}) {
    this.out = o.out ?? process.stdout;
    this.name = o.name ?? 'stdout';
  }

  async write(records: readonly AuditRecord[]): Promise<void> {
    if (this.closed) throw new Error(`audit sink ${this.name} is closed`);
    if (records.length === 0) return;
    const text = await jsonLines(records);
    let accepted = true;
    // The callback reports the write's own failure (EPIPE, a destroyed stream), which 'drain' never would.
    const flushed = new Promise<void>((resolve, reject) => {
      accepted = this.out.write(text, (err?: Error | null) => (err ? reject(err) : resolve()));
    });
    // Handled here so a failure while waiting for 'drain' is not reported as unhandled; awaited below.
    flushed.catch(() => undefined);
    if (!accepted) await drained(this.out);
    await flushed;
  }

  /** The stream stays open: process.stdout belongs to the process, not to the sink. */
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** Resolves on 'drain'; rejects if the stream fails or closes first. */
async function drained(out: NodeJS.WritableStream): Promise<void> {
  const ac = new AbortController();
  try {
    await Promise.race([
      once(out, 'drain', { signal: ac.signal }),
      once(out, 'close', { signal: ac.signal }).then(() => {
        throw new Error('the audit output stream closed before it drained');
      }),
    ]);
  } finally {
    // Removes the listener still waiting, so one per batch does not pile up on the stream.
    ac.abort();
  }
}
