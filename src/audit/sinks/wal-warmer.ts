/**
 * Keeps the stretch of a SQLite WAL file that the next commits will write in the page cache, for
 * a file whose records the event loop writes (sqlite-loop.ts); the audit thread runs it.
 *
 * Why: a WAL frame is a page and a 24-byte header, so nearly every frame covers file pages only in
 * part, and where such a page is no longer cached the kernel reads it back from disk before the
 * write goes on, with the event loop waiting in pwrite(). Once a checkpoint has started the WAL
 * over, the writer overwrites the file from its start, pages it wrote a few seconds before; a
 * system short of memory, or one that pages out file pages it sees as idle (writing a page does not
 * count as using it), may have dropped them by then. On this project's benchmark host, which does
 * the latter, the loop waited for 54 and 67 such reads in two runs of 40 s at 16,000 records a
 * second, and for 1 to 16 with the read-ahead (docs/benchmarks.md). Read by the audit thread a
 * little ahead of where the next frame goes, the pages are cached when the loop writes them, and a
 * read that has to go to disk holds the audit thread instead. The stretch is read again each time,
 * not once: read once, 400 ms ahead, a run still had the loop read back 17 pages within one step,
 * as the host pages out many at a time. Read again every WARM_WAL_EVERY_MS (thread-worker.ts), at
 * some 45 µs a MiB when they are cached, they are at most that old when written.
 *
 * Where the next frame goes comes from the WAL index (the `-shm` file SQLite maps into every
 * connection to the database). Its header, laid out in SQLite's documentation of the WAL format
 * (walformat.html), holds in the host's byte order the page size and mxFrame, the number of valid
 * frames: the next frame starts at 32 + mxFrame × (24 + page size). Its salt changes when a writer
 * starts the WAL over. A read that catches the header half-written only misplaces one stretch of
 * read-ahead, which is all this does: it changes nothing in either file.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';

/**
 * How far ahead of the next frame the WAL is read: four times what was written since the last
 * read, within these bounds (at 16,000 records a second the WAL grows some 10 MiB a second).
 */
export const WARM_AHEAD = { minBytes: 256 * 1024, maxBytes: 4 * 2 ** 20, perWritten: 4 } as const;

const WAL_HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;
/** The wal-index header's fields used here, by byte offset (walformat.html, "WAL-Index Header Format"). */
const INDEX = { isInit: 12, pageSize: 14, mxFrame: 16, salt: 32, bytes: 48 } as const;
const READ_CHUNK_BYTES = 256 * 1024;
/** The WAL index is in the host's byte order. */
const LITTLE_ENDIAN = endianness() === 'LE';

/** Where the next frame goes, and up to where the WAL is now read ahead of it (no further than the file's end). */
export interface WalWarmth {
  readonly next: number;
  readonly warmTo: number;
}

export class WalWarmer {
  private wal: number | undefined;
  private index: number | undefined;
  private readonly header = Buffer.alloc(INDEX.bytes);
  private readonly chunk = Buffer.alloc(READ_CHUNK_BYTES);
  /** What the last call found: the WAL's salt (another salt: the WAL was started over) and where its next frame went. */
  private last: { salt: number; next: number } | undefined;
  /** The salt of a WAL that a checkpoint emptied, until a writer starts it over. */
  private startingOverFrom: number | undefined;

  /** `dbFile`: the database's path; its WAL and WAL index are beside it. */
  constructor(private readonly dbFile: string) {}

  /**
   * Reads the WAL from where the next frame goes to some way past it (WARM_AHEAD). Nothing when
   * nothing was written since the last call, and undefined while the file has no WAL in use.
   */
  warm(): WalWarmth | undefined {
    const at = this.nextFrame();
    if (at === undefined) return undefined;
    if (this.startingOverFrom !== undefined && at.salt !== this.startingOverFrom) this.startingOverFrom = undefined;
    // After a checkpoint that emptied the WAL, the next commit writes from the start of the file.
    const next = this.startingOverFrom !== undefined ? WAL_HEADER_BYTES : at.next;
    const last = this.last;
    this.last = { salt: at.salt, next };
    if (last !== undefined && last.salt === at.salt && last.next === next) return { next, warmTo: next };
    const written = last !== undefined && last.salt === at.salt ? next - last.next : next;
    return { next, warmTo: this.readAhead(next, written) };
  }

  /**
   * A checkpoint has copied the whole WAL into the database and made sure the next writer starts
   * it over: reads the file's start now, for that writer.
   */
  startingOver(): WalWarmth | undefined {
    const at = this.nextFrame();
    if (at === undefined) return undefined;
    this.startingOverFrom = at.salt;
    this.last = { salt: at.salt, next: WAL_HEADER_BYTES };
    return { next: WAL_HEADER_BYTES, warmTo: this.readAhead(WAL_HEADER_BYTES, at.next) };
  }

  close(): void {
    for (const fd of [this.wal, this.index]) if (fd !== undefined) closeSync(fd);
    this.wal = this.index = undefined;
  }

  /** Reads the WAL from `next` on, as far as WARM_AHEAD says for `written` bytes (to its end at most); returns where it stopped. */
  private readAhead(next: number, written: number): number {
    const wal = this.wal!;
    const end = next + Math.min(WARM_AHEAD.maxBytes, Math.max(WARM_AHEAD.minBytes, WARM_AHEAD.perWritten * written));
    let at = next;
    while (at < end) {
      const got = readSync(wal, this.chunk, 0, Math.min(READ_CHUNK_BYTES, end - at), at);
      if (got === 0) break;
      at += got;
    }
    return at;
  }

  /** From the WAL index: the byte offset of the next frame, and the WAL's salt. */
  private nextFrame(): { next: number; salt: number } | undefined {
    if (!this.open()) return undefined;
    if (readSync(this.index!, this.header, 0, INDEX.bytes, 0) < INDEX.bytes) return undefined;
    const h = this.header;
    if (h[INDEX.isInit] === 0) return undefined;
    const u32 = (at: number) => (LITTLE_ENDIAN ? h.readUInt32LE(at) : h.readUInt32BE(at));
    const u16 = LITTLE_ENDIAN ? h.readUInt16LE(INDEX.pageSize) : h.readUInt16BE(INDEX.pageSize);
    // A page size of 65,536 does not fit in 16 bits: the header keeps it as 1.
    const pageSize = u16 === 1 ? 65_536 : u16;
    if (pageSize < 512) return undefined;
    return { next: WAL_HEADER_BYTES + u32(INDEX.mxFrame) * (FRAME_HEADER_BYTES + pageSize), salt: u32(INDEX.salt) };
  }

  /**
   * Opens the WAL and its index if they exist, and again if they were deleted since (the last
   * connection to close a database removes its WAL): whether both are open.
   */
  private open(): boolean {
    if (this.wal !== undefined && fstatSync(this.wal).nlink === 0) this.close();
    if (this.wal === undefined) {
      try {
        this.index = openSync(`${this.dbFile}-shm`, 'r');
        this.wal = openSync(`${this.dbFile}-wal`, 'r');
      } catch {
        // Not there yet: no commit since the file was opened.
        this.close();
        return false;
      }
    }
    return true;
  }
}
