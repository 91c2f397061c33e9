/**
 * The floor under any Node.js MCP gateway: an HTTP proxy that does nothing but forward each POST
 * to the upstream through a keep-alive undici Pool and copy the answer back (no parsing, no
 * policy, no sessions of its own). Measured beside the gateway, it separates what the gateway's
 * own work costs from what one more process and two more loopback hops cost on the machine.
 *
 * Usage: node dist/bench/null-proxy.js <upstream url>   (binds 127.0.0.1; prints `listening <url>`)
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';

const target = new URL(process.argv[2] ?? '');
const pool = new Pool(target.origin, { keepAliveTimeout: 120_000 });
const FORWARDED = ['content-type', 'accept', 'mcp-session-id', 'mcp-protocol-version'];

const server = createServer({ keepAliveTimeout: 120_000 }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const headers: Record<string, string> = {};
    for (const h of FORWARDED) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    pool.request({ path: target.pathname, method: req.method as 'POST', headers, body: req.method === 'GET' ? null : body }).then(
      async (up) => {
        const out = Buffer.from(await up.body.arrayBuffer());
        const h: Record<string, string> = { 'content-length': String(out.length) };
        for (const name of ['content-type', 'mcp-session-id']) {
          const v = up.headers[name];
          if (typeof v === 'string') h[name] = v;
        }
        res.writeHead(up.statusCode, h);
        res.end(out);
      },
      (err: Error) => {
        res.writeHead(502).end(err.message);
      },
    );
  });
});

server.listen(0, '127.0.0.1', () => {
  const a = server.address() as AddressInfo;
  process.stdout.write(`listening http://127.0.0.1:${a.port}${target.pathname}\n`);
});

const stop = () => {
  server.close();
  server.closeAllConnections();
  void pool.destroy();
  process.exit(0);
};
process.stdin.on('end', stop).on('error', stop).resume();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
