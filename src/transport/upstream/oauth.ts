/**
 * OAuth 2.0 client credentials (RFC 6749 section 4.4) for a remote upstream: the gateway is the
 * OAuth client, asks the server's authorization server for an access token and sends it as
 * `Authorization: Bearer` to that server only. Neither the client secret nor a token is ever
 * logged or put in an error message.
 */
import { Agent, request } from 'undici';
import type { Dispatcher } from 'undici';
import type { Logger } from '../../telemetry/logger.js';

export interface OAuthClientCredentials {
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  scope?: string | undefined;
  /** Sent as the `audience` form parameter (Auth0, Okta and others want it). */
  audience?: string | undefined;
  authMethod: 'client_secret_basic' | 'client_secret_post';
}

/** Access tokens for one upstream server, as the HTTP transports use them. */
export interface UpstreamTokenSource {
  /** A token to send now: the cached one, or one fetched now (concurrent callers share one fetch). */
  token(): Promise<string>;
  /** The cached token while it is fresh, without waiting: the hot path of a call needs no promise. */
  current(): string | undefined;
  /** The upstream refused `token` (HTTP 401): it is dropped, unless a newer one already replaced it. */
  invalidate(token: string): void;
  /** `text` without the client secret or any token this source handed out. */
  redact(text: string): string;
}

export interface OAuthTokenSourceOptions extends OAuthClientCredentials {
  /** The upstream server's name, for messages. */
  server: string;
  /** How long one token request may take, connection included. */
  timeoutMs: number;
  logger?: Logger | undefined;
  /** The clock, in milliseconds; injected by tests. */
  now?: (() => number) | undefined;
  /**
   * How long before its `expires_in` a token is replaced, so a request does not leave with a token
   * that expires on its way (default 30 s, at most half the token's lifetime).
   */
  marginMs?: number | undefined;
}

/** Why no token could be had; the message names the server, the token URL and the OAuth error code. */
export class OAuthTokenError extends Error {
  /** The `error` code of the token endpoint's answer (RFC 6749 section 5.2), when it gave one. */
  readonly oauthError: string | undefined;
  constructor(message: string, oauthError?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OAuthTokenError';
    this.oauthError = oauthError;
  }
}

const DEFAULT_MARGIN_MS = 30_000;
/** A token answer is a few hundred bytes; a body far larger is not one. */
const MAX_ANSWER_BYTES = 64 * 1024;
/** Tokens handed out recently, redacted from upstream error bodies that may quote them. */
const REMEMBERED_TOKENS = 4;
// RFC 6749 section 5.2: error codes and descriptions are printable ASCII without `"` and `\`.
const ERROR_CODE = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,100}$/;

// Token requests have their own dispatcher, so that no interceptor set on the global one (a redirect
// follower, a proxy) ever sees the client secret. Idle sockets do not keep the process alive.
const tokenAgent = new Agent({ keepAliveTimeout: 10_000 });

interface Cached {
  token: string;
  /** Clock time after which the token is not used for new requests; undefined: until refused. */
  staleAt: number | undefined;
}

export class OAuthTokenSource implements UpstreamTokenSource {
  private readonly opts: OAuthTokenSourceOptions;
  private readonly now: () => number;
  private readonly marginMs: number;
  /** The token URL as messages show it: without its query, which may carry a credential. */
  private readonly shownUrl: string;
  private cached: Cached | undefined;
  private inflight: Promise<string> | undefined;
  private readonly issued: string[] = [];

  constructor(opts: OAuthTokenSourceOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.marginMs = opts.marginMs ?? DEFAULT_MARGIN_MS;
    const u = new URL(opts.tokenUrl);
    this.shownUrl = u.origin + u.pathname;
  }

  current(): string | undefined {
    const c = this.cached;
    if (c === undefined) return undefined;
    return c.staleAt === undefined || this.now() < c.staleAt ? c.token : undefined;
  }

  token(): Promise<string> {
    const fresh = this.current();
    if (fresh !== undefined) return Promise.resolve(fresh);
    if (this.inflight === undefined) {
      const p = this.fetch();
      this.inflight = p;
      const done = () => {
        if (this.inflight === p) this.inflight = undefined;
      };
      p.then(done, done);
    }
    return this.inflight;
  }

  invalidate(token: string): void {
    if (this.cached?.token === token) this.cached = undefined;
  }

  redact(text: string): string {
    let out = text;
    for (const s of [this.opts.clientSecret, ...this.issued]) {
      if (s.length >= 4 && out.includes(s)) out = out.split(s).join('[redacted]');
    }
    return out;
  }

  private fail(why: string, oauthError?: string, cause?: unknown): OAuthTokenError {
    const message = `upstream server '${this.opts.server}': cannot get an OAuth access token from ${this.shownUrl}: ${why}`;
    this.opts.logger?.warn({ server: this.opts.server, tokenUrl: this.shownUrl, oauthError, err: why }, 'OAuth token request failed');
    return new OAuthTokenError(message, oauthError, cause === undefined ? undefined : { cause });
  }

  private async fetch(): Promise<string> {
    const o = this.opts;
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (o.scope !== undefined && o.scope !== '') form.set('scope', o.scope);
    if (o.audience !== undefined && o.audience !== '') form.set('audience', o.audience);
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (o.authMethod === 'client_secret_post') {
      form.set('client_id', o.clientId);
      form.set('client_secret', o.clientSecret);
    } else {
      // RFC 6749 section 2.3.1: id and secret are form-urlencoded before they are joined, so a
      // colon in either cannot be misread; many servers get this wrong only with odd characters.
      const pair = `${formEncode(o.clientId)}:${formEncode(o.clientSecret)}`;
      headers.authorization = `Basic ${Buffer.from(pair, 'utf8').toString('base64')}`;
    }

    const sentAt = this.now();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), o.timeoutMs);
    timer.unref();
    let status: number;
    let location: string | undefined;
    let text: string;
    try {
      // No redirect is followed (the agent has no redirect interceptor): a token endpoint that
      // redirects is refused below, so the secret never goes anywhere but the configured URL.
      const res = await request(o.tokenUrl, { method: 'POST', headers, body: form.toString(), signal: ac.signal, dispatcher: tokenAgent });
      status = res.statusCode;
      const loc = res.headers['location'];
      location = Array.isArray(loc) ? loc[0] : loc;
      text = await readLimited(res.body);
    } catch (err) {
      if (ac.signal.aborted) throw this.fail(`no answer within ${o.timeoutMs} ms`, undefined, err);
      if (err instanceof OAuthTokenError) throw this.fail(err.message);
      throw this.fail(`unreachable: ${(err as Error).message}`, undefined, err);
    } finally {
      clearTimeout(timer);
    }

    if (status >= 300 && status < 400) {
      const where = location === undefined ? '' : ` to ${originOf(location, o.tokenUrl)}`;
      throw this.fail(`it answered with a redirect (HTTP ${status})${where}, which is not followed: configure the final token_url`);
    }
    const body = parseJson(text);
    const oauthError = typeof body?.error === 'string' && ERROR_CODE.test(body.error) ? body.error : undefined;
    if (status < 200 || status >= 300 || body?.error !== undefined) {
      if (oauthError === undefined) throw this.fail(status >= 300 ? `HTTP ${status}` : 'the answer is an error without a valid error code');
      const description = typeof body?.error_description === 'string' ? this.describe(body.error_description) : '';
      throw this.fail(`${oauthError}${description === '' ? '' : ` (${description})`}, HTTP ${status}`, oauthError);
    }
    if (body === undefined) throw this.fail(`the answer is not a JSON object (HTTP ${status})`);
    const token = body.access_token;
    if (typeof token !== 'string' || token === '') throw this.fail('the answer has no access_token');
    const type = body.token_type;
    // RFC 6749 section 7.1: a client must not use a token whose type it does not understand.
    if (type !== undefined && (typeof type !== 'string' || type.toLowerCase() !== 'bearer')) {
      throw this.fail(`the token_type is ${typeof type === 'string' && ERROR_CODE.test(type) ? `'${type}'` : 'not a string'}, not Bearer`);
    }
    const lifetimeMs = expiresInMs(body.expires_in);
    this.remember(token);
    this.cached = {
      token,
      // Counted from when the request left: the server's clock started before the answer arrived.
      staleAt: lifetimeMs === undefined ? undefined : sentAt + lifetimeMs - Math.min(this.marginMs, lifetimeMs / 2),
    };
    o.logger?.debug({ server: o.server, tokenUrl: this.shownUrl, expiresInMs: lifetimeMs ?? null }, 'fetched an OAuth access token');
    return token;
  }

  private remember(token: string): void {
    if (this.issued.includes(token)) return;
    this.issued.unshift(token);
    this.issued.length = Math.min(this.issued.length, REMEMBERED_TOKENS);
  }

  /** An error_description fit for a message: one short line, without the secret. */
  private describe(text: string): string {
    const line = this.redact(text).replace(/[^\x20-\x7e]+/g, ' ').trim();
    return line.length > 200 ? `${line.slice(0, 200)}…` : line;
  }
}

/**
 * Sends a request with the bearer token from `tokens` (no header without them), and once more
 * with a fresh token when the upstream refuses it (`refused` says so, and discards that answer's
 * body): a token may be revoked or expire early. The second answer is returned whatever it is.
 * `send` must be repeatable (a string body).
 */
export async function sendWithToken<R>(
  tokens: UpstreamTokenSource | undefined,
  send: (auth: Record<string, string>) => Promise<R>,
  refused: (res: R) => boolean | Promise<boolean>,
): Promise<R> {
  if (tokens === undefined) return send({});
  const first = await tokens.token();
  const res = await send({ authorization: `Bearer ${first}` });
  if (!(await refused(res))) return res;
  tokens.invalidate(first);
  return send({ authorization: `Bearer ${await tokens.token()}` });
}

/** The message a call gets when its server refused a token twice running. */
export function tokenRefused(server: string): string {
  return `upstream server '${server}' refused the OAuth access token (HTTP 401), also a newly fetched one: check the client's scope, audience and permissions there`;
}

/** application/x-www-form-urlencoded encoding of one value (RFC 6749 appendix B). */
function formEncode(s: string): string {
  return new URLSearchParams([['', s]]).toString().slice(1);
}

async function readLimited(body: Dispatcher.ResponseData['body']): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > MAX_ANSWER_BYTES) {
      body.destroy();
      throw new OAuthTokenError(`the answer is larger than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `expires_in` in milliseconds; some servers send it as a string. Undefined when absent or unusable. */
function expiresInMs(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+(?:\.\d+)?$/.test(v.trim()) ? Number(v) : NaN;
  return Number.isFinite(n) && n >= 0 ? n * 1000 : undefined;
}

function originOf(location: string, base: string): string {
  try {
    return new URL(location, base).origin;
  } catch {
    return 'an invalid location';
  }
}
