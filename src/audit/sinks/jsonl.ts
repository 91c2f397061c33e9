/**
 * The JSON Lines file sink: one record per line, the record object as is (`JSON.stringify`), appended
 * to a file and fsync'ed once per batch.
 *
 * Rotation: before a batch that would take the current file past `maxBytes`, the files shift
 * up one place and a new current file starts, logrotate style:
 *
 *   audit.jsonl     the current file, written to
 *   audit.jsonl.1   the most recently rotated file
 *   audit.jsonl.2   the one before it
 *   …
 *   audit.jsonl.N   the oldest kept (N = `maxFiles`); what would become N+1 is deleted
 *
 * A batch never spans two files, so a rotated file always ends on a whole batch; a batch bigger
 * than `maxBytes` gets a file of its own. `maxFiles: 0` keeps no rotated file at all. Reading back
 * (`iterate`) goes from the highest number down to the current file: the records in the order
 * they were written, so a verifier can walk the hash chain across files.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { AuditRecord } from '../event.js';
import type { AuditSink } from '../sink.js';
import { ignoreMissing, syncDir } from '../files.js';

export interface JsonlSinkOptions {
  /** The current file, e.g. `/var/log/policylayer/audit.jsonl`; its folder is created if missing. */
  readonly path: string;
  /** Rotate before the file would pass this many bytes. Default 100 MiB. */
  readonly maxBytes?: number;
  /** Rotated files kept beside the current one. Default 10. */
  readonly maxFiles?: number;
}

export const JSONL_DEFAULTS = { maxBytes: 100 * 1024 * 1024, maxFiles: 10 } as const;

/**
 * Longest stretch of synchronous serialising before giving the event loop a turn. A batch of 500
 * typical records is ~300 KB of JSON, a few milliseconds of JSON.stringify on a slow machine:
 * too long to hold up requests in one piece.
 */
export const SLICE_MS = 0.5;

/** Lets the event loop run pending I/O and timers before the rest of a long piece of work. */
export const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The records as JSON Lines (one `JSON.stringify` line each), serialised in slices of about SLICE_MS. */
export async function jsonLines(records: readonly AuditRecord[]): Promise<Buffer> {
  let text = '';
  let sliceStart = performance.now();
  for (let i = 0; i < records.length; i++) {
    text += JSON.stringify(records[i]) + '\n';
    // The clock is read every 16 records: cheap next to the serialising, fine-grained enough.
    if ((i & 15) === 15 && performance.now() - sliceStart > SLICE_MS) {
      await yieldToLoop();
      sliceStart = performance.now();
    }
  }
  return Buffer.from(text, 'utf8');
}

export class JsonlFileSink implements AuditSink {
  readonly name: string;
  readonly path: string;
  private readonly maxBytes: number;
  private readonly maxFiles: number;
  private fh: FileHandle | undefined;
  private size = 0;
  /** Writes run one after another even if a caller does not wait (the writer does). */
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(o: JsonlSinkOptions) {
    this.path = path.resolve(o.path);
    this.name = `jsonl:${this.path}`;
    this.maxBytes = o.maxBytes ?? JSONL_DEFAULTS.maxBytes;
    this.maxFiles = o.maxFiles ?? JSONL_DEFAULTS.maxFiles;
    if (!(this.maxBytes > 0)) throw new Error(`jsonl audit sink: maxBytes must be positive, not ${this.maxBytes}`);
    if (!Number.isInteger(this.maxFiles) || this.maxFiles < 0) throw new Error(`jsonl audit sink: maxFiles must be a whole number >= 0, not ${this.maxFiles}`);
  }

  write(records: readonly AuditRecord[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`audit sink ${this.name} is closed`));
    if (records.length === 0) return Promise.resolve();
    const run = this.tail.then(() => this.append(records));
    this.tail = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  /**
   * Every record in the current file and the rotated ones, oldest first. Files are read as they
   * are when reached; call it on a sink that is not rotating (closed, or idle) for an exact view.
   * A line that is not JSON throws, naming the file and line: a damaged log must not pass for a
   * shorter one.
   */
  async *iterate(): AsyncGenerator<AuditRecord> {
    for (const file of await this.files()) {
      const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
      let n = 0;
      try {
        for await (const line of lines) {
          n++;
          if (line.trim().length === 0) continue;
          let record: AuditRecord;
          try {
            record = JSON.parse(line) as AuditRecord;
          } catch {
            throw new Error(`${file}:${n}: not a JSON line`);
          }
          yield record;
        }
      } catch (err) {
        // A file rotated away between listing and reading has moved on; the listing is stale.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      } finally {
        lines.close();
      }
    }
  }

  /** The log's files, oldest first: rotated ones by number, highest first, then the current file. */
  async files(): Promise<string[]> {
    const dir = path.dirname(this.path);
    const base = path.basename(this.path);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    // Numbers past maxFiles are included: they are left when maxFiles was lowered, and still hold records.
    const rotated = names
      .map((n) => (n.startsWith(`${base}.`) ? /^\d+$/.exec(n.slice(base.length + 1)) : null))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[0]))
      .filter((k) => k > 0)
      .sort((a, b) => b - a);
    const out = rotated.map((k) => `${this.path}.${k}`);
    if (names.includes(base)) out.push(this.path);
    return out;
  }

  private async append(records: readonly AuditRecord[]): Promise<void> {
    const buf = await jsonLines(records);
    let fh = await this.handle();
    if (this.size > 0 && this.size + buf.length > this.maxBytes) {
      await this.rotate();
      fh = await this.handle();
    }
    try {
      await fh.appendFile(buf);
      await fh.sync();
    } catch (err) {
      // Cut a half-written batch off, so a retry of the whole batch does not leave a prefix of it
      // twice (or a torn line) in the file. If even that fails, the prefix stays: the caller sees
      // a duplicate in verification, never a gap.
      await fh.truncate(this.size).catch(() => undefined);
      throw err;
    }
    this.size += buf.length;
  }

  private async handle(): Promise<FileHandle> {
    if (this.fh !== undefined) return this.fh;
    await mkdir(path.dirname(this.path), { recursive: true });
    const fh = await open(this.path, 'a');
    try {
      this.size = (await fh.stat()).size;
    } catch (err) {
      await fh.close();
      throw err;
    }
    this.fh = fh;
    return fh;
  }

  /** Shifts every file up one number, dropping the oldest past maxFiles; the next write opens a new current file. */
  private async rotate(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    this.size = 0;
    await fh?.close();
    if (this.maxFiles === 0) {
      await unlink(this.path).catch(ignoreMissing);
    } else {
      await unlink(`${this.path}.${this.maxFiles}`).catch(ignoreMissing);
      for (let k = this.maxFiles - 1; k >= 1; k--) {
        await rename(`${this.path}.${k}`, `${this.path}.${k + 1}`).catch(ignoreMissing);
      }
      await rename(this.path, `${this.path}.1`).catch(ignoreMissing);
    }
    await syncDir(path.dirname(this.path));
  }
}

