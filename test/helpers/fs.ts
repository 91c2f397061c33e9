/** Temporary folders and files for integration tests, removed by the returned cleanup. */
import { mkdtempSync, rmSync, writeFileSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface TempDir {
  /** Absolute, with symlinks resolved (macOS /var → /private/var), so servers that compare paths agree. */
  path: string;
  /** Writes `text` (or JSON of a value) to a file inside the folder; returns its absolute path. */
  write(name: string, content: string | object): string;
  remove(): void;
}

export function tempDir(prefix = 'policylayer-test-'): TempDir {
  const dir = realpathSync(mkdtempSync(path.join(tmpdir(), prefix)));
  return {
    path: dir,
    write(name, content) {
      const file = path.join(dir, name);
      writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
      return file;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
