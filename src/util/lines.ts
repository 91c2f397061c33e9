/**
 * Newline-delimited framing (the MCP stdio transport): turns a stream of text chunks into lines.
 * Each complete line, trimmed, is passed on if not empty; a partial line waits for the next chunk.
 */
export function lineSplitter(onLine: (line: string) => void): (chunk: string) => void {
  let rest = '';
  return (chunk: string) => {
    const text = rest.length > 0 ? rest + chunk : chunk;
    let start = 0;
    let nl: number;
    // One slice per line and one for the remainder: a chunk holding many messages stays linear.
    while ((nl = text.indexOf('\n', start)) >= 0) {
      const line = text.slice(start, nl).trim();
      start = nl + 1;
      if (line.length > 0) onLine(line);
    }
    rest = start === 0 ? text : text.slice(start);
  };
}
