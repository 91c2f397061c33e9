/**
 * The admin listener, when `admin:` gives it its own address: the admin API, /metrics and
 * /healthz, and nothing of MCP. Operators can then keep it on a private network while the MCP
 * listener faces agents.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Metrics } from '../telemetry/metrics.js';
import type { Logger } from '../telemetry/logger.js';
import { checkHostAndOrigin, type OriginPolicy } from '../transport/downstream/origin.js';
import { ADMIN_API_PREFIX as ADMIN_PREFIX, listenOn, urlOf } from '../transport/downstream/http.js';
import type { AdminApi } from './api.js';

export interface AdminListenerOptions {
  readonly host: string;
  readonly port: number;
  readonly api: AdminApi;
  readonly origins: OriginPolicy;
  readonly logger: Logger;
  readonly metrics?: Metrics | undefined;
  readonly isDraining?: () => boolean;
}

export class AdminListener {
  private readonly server: Server;
  private readonly opts: AdminListenerOptions;

  constructor(opts: AdminListenerOptions) {
    this.opts = opts;
    this.server = createServer((req, res) => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const path = q >= 0 ? url.slice(0, q) : url;
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(body));
      };
      if (path === ADMIN_PREFIX || path.startsWith(`${ADMIN_PREFIX}/`)) {
        void opts.api.handle(req, res, path, q >= 0 ? url.slice(q + 1) : '');
        return;
      }
      if (path === '/healthz') {
        const draining = opts.isDraining?.() === true;
        json(draining ? 503 : 200, { status: draining ? 'draining' : 'ok' });
        return;
      }
      if (path === '/metrics' && opts.metrics !== undefined) {
        const metrics = opts.metrics;
        try {
          checkHostAndOrigin(req, opts.origins);
        } catch (err) {
          json(403, { error: (err as Error).message });
          return;
        }
        metrics.text().then(
          (text) => {
            res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
            res.end(text);
          },
          (err: unknown) => {
            opts.logger.error({ err: (err as Error).message }, 'metrics failed');
            json(500, { error: 'metrics failed' });
          },
        );
        return;
      }
      json(404, { error: `not found: this is the admin listener (${ADMIN_PREFIX}, /metrics, /healthz); MCP endpoints are on the other address` });
    });
  }

  listen(): Promise<AddressInfo> {
    return listenOn(this.server, this.opts.host, this.opts.port);
  }

  get url(): string {
    return urlOf(this.server);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
