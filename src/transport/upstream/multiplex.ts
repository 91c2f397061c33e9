/**
 * Lets many independent clients share one upstream session: their request ids and progress tokens
 * would collide there, so each is replaced by a gateway-unique one and restored on the way back.
 */
import { withId, type JsonRpcId, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from '../../util/jsonrpc.js';
import type { CallHandlers, ServerMessage, UpstreamSession } from './types.js';

export class MultiplexedSession {
  readonly inner: UpstreamSession;
  private next = 1;
  private readonly prefix: string;
  /** Gateway id → the call's own id, for cancellation and for answers to the caller. */
  private readonly calls = new Map<string, { id: JsonRpcId; token: unknown }>();

  constructor(inner: UpstreamSession, prefix = 'pl') {
    this.inner = inner;
    this.prefix = prefix;
  }

  get initializeResult(): Record<string, unknown> {
    return this.inner.initializeResult;
  }

  /** Sends `req` under a fresh id; returns that id so the caller can cancel it. */
  call(req: JsonRpcRequest, handlers: CallHandlers): string {
    const gid = `${this.prefix}-${this.next++}`;
    const meta = req.params?._meta as Record<string, unknown> | undefined;
    const token = meta?.progressToken;
    let params = req.params;
    if (token !== undefined) params = { ...params, _meta: { ...meta, progressToken: gid } };
    const out: JsonRpcRequest = { jsonrpc: '2.0', id: gid, method: req.method };
    if (params !== undefined) out.params = params;
    this.calls.set(gid, { id: req.id, token });
    this.inner.call(out, undefined, {
      onRelated: (m: ServerMessage) => {
        const msg = m.message;
        if ('method' in msg && msg.method === 'notifications/progress' && msg.params?.progressToken === gid) {
          handlers.onRelated({ message: { ...msg, params: { ...msg.params, progressToken: token } } });
          return;
        }
        handlers.onRelated(m);
      },
      onResponse: (msg: JsonRpcResponse) => {
        this.calls.delete(gid);
        handlers.onResponse(withId(msg, req.id), undefined);
      },
    });
    return gid;
  }

  cancel(gid: string, reason: string): void {
    if (!this.calls.delete(gid)) return;
    const n: JsonRpcNotification = { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: gid, reason } };
    this.inner.send(n, undefined);
  }
}
