export { interpolate, loadGatewayConfig, loadServerDefinition, parseGatewayConfig, toAuditConfig } from './load.js';
export type { ApprovalsConfig, AuditConfig, CountersConfig, Env, GatewayConfig, ServerConfig, WebhookConfig } from './load.js';
export {
  DEFAULT_ALLOWED_HOSTS,
  AuditSchema,
  DEFAULT_AUDIT_SINK,
  DEFAULT_BUSY_POLL_US,
  MAX_BUSY_POLL_US,
  DEFAULT_ALLOWED_ORIGINS,
  DEFAULT_LISTEN,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_STORE,
  GatewayConfigSchema,
  parseHostPort,
} from './schema.js';
export type { GatewayConfigDocument, HostPort } from './schema.js';
export { parseDuration } from '../util/duration.js';
