/** File-system steps the audit writer and the JSON Lines sink share. */
import { open } from 'node:fs/promises';

/**
 * Fsyncs a folder, so renames and new files in it survive a crash with their data. Best effort:
 * not every platform can fsync a folder (Windows cannot); the files themselves are still synced.
 */
export async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    /* best effort */
  }
}

/** For `.catch()`: a file that is already gone is what the caller wanted; anything else is not. */
export function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}
