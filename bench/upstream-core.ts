/**
 * What the benchmark's upstream servers answer, shared by the HTTP and the stdio one. Kept to a
 * few object allocations per call so that, through the gateway, the gateway's own cost dominates.
 */

export const PROTOCOL_VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'];
export const BENCH_PROTOCOL_VERSION = '2025-06-18';

/** `echo` is the measured tool; the other two exist so the policy's `hide` and deny rules have something to act on. */
export const TOOLS = [
  {
    name: 'echo',
    description: 'Returns its text argument.',
    inputSchema: { type: 'object', properties: { text: { type: 'string' } } },
  },
  { name: 'admin_reset', description: 'Hidden by the benchmark policy.', inputSchema: { type: 'object' } },
  { name: 'delete_everything', description: 'Denied by the benchmark policy.', inputSchema: { type: 'object' } },
];

export interface Incoming {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: { name?: unknown; arguments?: { text?: unknown }; protocolVersion?: unknown };
  result?: unknown;
  error?: unknown;
}

/**
 * The JSON text of the answer to `msg`, or undefined when it needs none (a notification, or a
 * client's answer to a server request).
 */
export function answer(msg: Incoming): string | undefined {
  if (typeof msg.method !== 'string' || msg.id === undefined) return undefined;
  const id = msg.id;
  switch (msg.method) {
    case 'tools/call': {
      const name = msg.params?.name;
      if (name === 'echo') {
        const text = msg.params?.arguments?.text;
        return JSON.stringify({
          jsonrpc: '2.0',
          id,
          result: { content: [{ type: 'text', text: typeof text === 'string' ? text : '' }] },
        });
      }
      if (name === 'admin_reset' || name === 'delete_everything') {
        // Reaching this means the gateway let a call through that its policy refuses.
        return JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'upstream reached' }] } });
      }
      return JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32602, message: `Unknown tool: ${String(name)}` } });
    }
    case 'initialize': {
      const requested = msg.params?.protocolVersion;
      const protocolVersion = typeof requested === 'string' && PROTOCOL_VERSIONS.includes(requested) ? requested : BENCH_PROTOCOL_VERSION;
      return JSON.stringify({
        jsonrpc: '2.0',
        id,
        result: { protocolVersion, capabilities: { tools: {} }, serverInfo: { name: 'policylayer-bench-upstream', version: '1.0.0' } },
      });
    }
    case 'tools/list':
      return JSON.stringify({ jsonrpc: '2.0', id, result: { tools: TOOLS } });
    case 'ping':
      return JSON.stringify({ jsonrpc: '2.0', id, result: {} });
    default:
      return JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32601, message: `Method not found: ${msg.method}` } });
  }
}
