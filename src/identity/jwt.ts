/**
 * JWT bearer tokens from one configured OIDC issuer (`auth.oidc`): signature, issuer, audience
 * and time checks through jose, then the claims that name a grant and an admin role.
 *
 * Only asymmetric algorithms are accepted: the gateway holds the issuer's public key, which can
 * verify but not sign, so a token signed with an HMAC keyed by that (public) key is refused by
 * its algorithm before any key is looked at.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createLocalJWKSet, createRemoteJWKSet, errors, importSPKI, jwtVerify } from 'jose';
import type { CryptoKey, JSONWebKeySet, JWK, JWSHeaderParameters, JWTPayload, JWTVerifyGetKey } from 'jose';
import type { AdminRole } from '../store/store.js';

/** Every algorithm `auth.oidc.algorithms` may name: signatures checked with a public key only. */
export const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
export type OidcAlgorithm = (typeof OIDC_ALGORITHMS)[number];
export const DEFAULT_OIDC_ALGORITHMS: readonly OidcAlgorithm[] = ['RS256', 'ES256', 'EdDSA'];

/** The issuer's key read from `public_key_file` when the config was loaded. */
export type IssuerKey =
  | { readonly file: string; readonly kind: 'spki'; readonly pem: string }
  | { readonly file: string; readonly kind: 'jwks'; readonly jwks: JSONWebKeySet };

/** `auth.oidc`, normalised: exactly one of `jwksUrl` and `publicKey` is set. */
export interface OidcConfig {
  /** Compared with `iss` exactly (a trailing slash matters). */
  readonly issuer: string;
  /** The gateway's own identifier: `aud` must be this and nothing else. */
  readonly audience: string;
  readonly jwksUrl?: string;
  readonly publicKey?: IssuerKey;
  readonly algorithms: readonly OidcAlgorithm[];
  readonly clockToleranceMs: number;
  /** The claim whose value is a grant's label. */
  readonly grantClaim: string;
  /** An array of strings, or one space-separated string. */
  readonly groupsClaim: string;
  /** group → grant label, tried in this order when the grant claim names no grant. */
  readonly grantsByGroup: Readonly<Record<string, string>>;
  readonly rolesByGroup: Readonly<Record<string, AdminRole>>;
}

export type JwtVerification =
  | {
      readonly ok: true;
      readonly subject: string;
      readonly groups: readonly string[];
      /** The grant claim's value, when it is a non-empty string. */
      readonly grantLabel: string | undefined;
      /** The grant the token's groups map to (the first match in `grants_by_group`). */
      readonly groupGrantLabel: string | undefined;
      /** The highest role any of the token's groups maps to. */
      readonly role: AdminRole | undefined;
      /** ms since the epoch. */
      readonly expiresAt: number;
    }
  | { readonly ok: false; readonly description: string };

export interface JwtVerifierOptions {
  readonly now?: () => number;
  /** How long a JWKS fetch may take; default 5 s. */
  readonly jwksTimeoutMs?: number;
}

const ROLE_RANK: Readonly<Record<AdminRole, number>> = { viewer: 1, policy_manager: 2, admin: 3 };

// Compact JWS: header.payload.signature. The signature may be empty so an `alg: none` token
// reaches the verifier and is refused with a reason rather than as "not a token".
const JWT_PATTERN = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Whether `token` has the shape of a compact JWS (says nothing of whether it is valid). */
export function looksLikeJwt(token: string): boolean {
  return token.startsWith('eyJ') && JWT_PATTERN.test(token);
}

/** The issuer's keys could not be had; kept apart so the refusal says so instead of "bad token". */
class KeysUnavailable extends Error {}
/** The token's algorithm is allowed but the static key is of another type. */
class KeyMismatch extends Error {}

export class JwtVerifier {
  readonly config: OidcConfig;
  private readonly now: () => number;
  private readonly keys: JWTVerifyGetKey;

  constructor(config: OidcConfig, opts: JwtVerifierOptions = {}) {
    this.config = config;
    this.now = opts.now ?? Date.now;
    if (config.jwksUrl !== undefined) {
      this.keys = remoteKeys(config.jwksUrl, opts.jwksTimeoutMs ?? 5000);
    } else if (config.publicKey?.kind === 'jwks') {
      this.keys = createLocalJWKSet(config.publicKey.jwks);
    } else if (config.publicKey?.kind === 'spki') {
      this.keys = spkiKeys(config.publicKey.pem);
    } else {
      throw new Error('auth.oidc needs jwks_url or public_key_file');
    }
  }

  /** Checks signature, issuer, audience and times; never rejects. */
  async verify(token: string): Promise<JwtVerification> {
    const c = this.config;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.keys, {
        issuer: c.issuer,
        audience: c.audience,
        algorithms: [...c.algorithms],
        clockTolerance: c.clockToleranceMs / 1000,
        currentDate: new Date(this.now()),
        // A token without exp would never stop working, and one without sub cannot be named in logs.
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (err) {
      return { ok: false, description: this.describe(err) };
    }
    // jose accepts an audience list that merely contains ours; any other audience in it could
    // replay the token here, so only a token meant for the gateway alone passes.
    const aud = payload.aud;
    if (Array.isArray(aud) && (aud.length !== 1 || aud[0] !== c.audience)) {
      return { ok: false, description: `the token names other audiences besides ${c.audience}: only a token for this gateway alone is accepted` };
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') return { ok: false, description: 'the token has no sub claim' };
    const groups = groupsOf(payload[c.groupsClaim]);
    const grantValue = payload[c.grantClaim];
    let role: AdminRole | undefined;
    for (const g of groups) {
      const r = Object.hasOwn(c.rolesByGroup, g) ? c.rolesByGroup[g] : undefined;
      if (r !== undefined && (role === undefined || ROLE_RANK[r] > ROLE_RANK[role])) role = r;
    }
    return {
      ok: true,
      subject: payload.sub,
      groups,
      grantLabel: typeof grantValue === 'string' && grantValue !== '' ? grantValue : undefined,
      groupGrantLabel: Object.entries(c.grantsByGroup).find(([group]) => groups.includes(group))?.[1],
      role,
      expiresAt: (payload.exp as number) * 1000,
    };
  }

  private describe(err: unknown): string {
    const c = this.config;
    if (err instanceof KeysUnavailable || err instanceof KeyMismatch) return err.message;
    if (err instanceof errors.JWTExpired) return 'the token has expired';
    if (err instanceof errors.JWTClaimValidationFailed) {
      if (err.reason === 'missing') return `the token has no ${err.claim} claim`;
      switch (err.claim) {
        case 'iss':
          return `the token was not issued by ${c.issuer}`;
        case 'aud':
          return `the token is not meant for this gateway: its audience must be ${c.audience}`;
        case 'nbf':
          return 'the token is not valid yet (nbf is in the future)';
        default:
          return `the token's ${err.claim} claim is invalid`;
      }
    }
    if (err instanceof errors.JOSEAlgNotAllowed) return `the token's signing algorithm is not accepted (accepted: ${c.algorithms.join(', ')})`;
    if (err instanceof errors.JWSSignatureVerificationFailed) return "the token's signature does not verify";
    if (err instanceof errors.JWKSNoMatchingKey) return "no key of the issuer matches the token's kid and algorithm";
    if (err instanceof errors.JWKSMultipleMatchingKeys) return 'several keys of the issuer match the token: it must name one by kid';
    if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'the token is not a well-formed signed JWT';
    if (err instanceof errors.JOSENotSupported) return "the token's algorithm or key type is not supported";
    return `the token could not be verified (${err instanceof Error ? err.message : String(err)})`;
  }
}

/** The verifier for `auth.oidc`, or undefined when it is not configured. */
export function oidcVerifier(config: OidcConfig | undefined, opts: JwtVerifierOptions = {}): JwtVerifier | undefined {
  return config === undefined ? undefined : new JwtVerifier(config, opts);
}

function remoteKeys(url: string, timeoutMs: number): JWTVerifyGetKey {
  // jose keeps the set for 10 minutes and fetches again on an unknown kid (at most every 30 s);
  // a failed fetch is not remembered, so the next request tries again.
  const remote = createRemoteJWKSet(new URL(url), { timeoutDuration: timeoutMs });
  return async (header: JWSHeaderParameters, token) => {
    try {
      return await remote(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys || err instanceof errors.JOSENotSupported) throw err;
      const why = err instanceof errors.JWKSTimeout ? 'timed out' : causeOf(err);
      throw new KeysUnavailable(`the issuer's keys could not be fetched from ${url} (${why}); try again later`);
    }
  };
}

function causeOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  // undici's "fetch failed" hides the reason (ECONNREFUSED, a DNS failure) in its cause.
  const cause = err.cause;
  const detail = cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : undefined;
  return detail !== undefined ? `${err.message}: ${detail}` : err.message;
}

function spkiKeys(pem: string): JWTVerifyGetKey {
  const fits = keyAlgorithms(createPublicKey(pem));
  const imported = new Map<string, Promise<CryptoKey>>();
  return async (header: JWSHeaderParameters) => {
    const alg = header.alg ?? '';
    if (!fits.includes(alg)) throw new KeyMismatch(`the token's algorithm does not fit the issuer's key (which verifies ${fits.join(', ')})`);
    let key = imported.get(alg);
    if (key === undefined) {
      key = importSPKI(pem, alg);
      imported.set(alg, key);
    }
    return key;
  };
}

function groupsOf(v: unknown): string[] {
  if (typeof v === 'string') return v.split(/\s+/).filter((g) => g !== '');
  if (Array.isArray(v)) return v.filter((g): g is string => typeof g === 'string' && g !== '');
  return [];
}

/** The JWS algorithms a public key can verify (jose refuses RSA keys under 2048 bits). */
function keyAlgorithms(key: KeyObject): string[] {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return (details.modulusLength ?? 0) >= 2048 ? ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] : [];
    case 'rsa-pss':
      return (details.modulusLength ?? 0) >= 2048 ? ['PS256', 'PS384', 'PS512'] : [];
    case 'ec':
      return { prime256v1: ['ES256'], secp384r1: ['ES384'], secp521r1: ['ES512'] }[details.namedCurve ?? ''] ?? [];
    case 'ed25519':
      return ['EdDSA', 'Ed25519'];
    default:
      return [];
  }
}

function keyKind(key: KeyObject): string {
  const d = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return `an RSA key of ${d.modulusLength ?? '?'} bits`;
    case 'ec':
      return `an EC key on ${d.namedCurve ?? 'an unknown curve'}`;
    default:
      return `an ${key.asymmetricKeyType ?? 'unknown'} key`;
  }
}

/**
 * Reads the contents of `public_key_file`: a PEM public key (SPKI), a JWK or a JWK Set. Fails
 * with a reason an operator can act on when it is a private key, a certificate, a symmetric key,
 * or a key none of `algorithms` can use.
 */
export function parseIssuerKey(text: string, file: string, algorithms: readonly string[]): { ok: true; key: IssuerKey } | { ok: false; why: string } {
  const trimmed = text.trim();
  const fail = (why: string) => ({ ok: false as const, why });
  const fitting = (keys: { key: KeyObject; alg?: string | undefined }[]) => {
    const usable = keys.some(({ key, alg }) => keyAlgorithms(key).some((a) => algorithms.includes(a) && (alg === undefined || alg === a)));
    if (usable) return undefined;
    const kinds = [...new Set(keys.map(({ key }) => keyKind(key)))].join(', ');
    return `it holds ${kinds}, which none of the algorithms ${algorithms.join(', ')} can verify with (RSA needs at least 2048 bits)`;
  };
  if (trimmed.startsWith('-----BEGIN')) {
    const label = /^-----BEGIN ([A-Z0-9 ]+)-----/.exec(trimmed)?.[1] ?? '';
    if (label.includes('PRIVATE KEY')) return fail('this is a private key: the gateway needs only the issuer\'s public key (openssl pkey -pubout)');
    if (label === 'CERTIFICATE') return fail('this is a certificate: extract its public key (openssl x509 -pubkey -noout)');
    if (label !== 'PUBLIC KEY') return fail(`expected a PEM public key (-----BEGIN PUBLIC KEY-----), not ${label}`);
    let key: KeyObject;
    try {
      key = createPublicKey(trimmed);
    } catch (err) {
      return fail(`not a valid PEM public key (${(err as Error).message})`);
    }
    const misfit = fitting([{ key }]);
    return misfit !== undefined ? fail(misfit) : { ok: true, key: { file, kind: 'spki', pem: trimmed } };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(trimmed);
  } catch {
    return fail('expected a PEM public key (-----BEGIN PUBLIC KEY-----), a JWK or a JWK Set (JSON)');
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  let list: unknown[];
  if (isObject(doc) && Array.isArray(doc['keys'])) list = doc['keys'];
  else if (isObject(doc) && typeof doc['kty'] === 'string') list = [doc];
  else return fail('expected a JWK (an object with kty) or a JWK Set (an object with keys)');
  if (list.length === 0) return fail('the JWK Set has no keys');
  const keys: { key: KeyObject; alg?: string | undefined }[] = [];
  for (const [i, jwk] of list.entries()) {
    const which = list.length === 1 ? 'the key' : `key ${i + 1}`;
    if (!isObject(jwk)) return fail(`${which} is not a JWK object`);
    if (jwk['kty'] === 'oct') return fail(`${which} is a symmetric (oct) key: only public keys are accepted`);
    if ('d' in jwk) return fail(`${which} holds private key material (d): give the gateway the public key only`);
    try {
      keys.push({ key: createPublicKey({ key: jwk as JWK & { kty: string }, format: 'jwk' }), alg: typeof jwk['alg'] === 'string' ? jwk['alg'] : undefined });
    } catch (err) {
      return fail(`${which} is not a valid public JWK (${(err as Error).message})`);
    }
  }
  const misfit = fitting(keys);
  return misfit !== undefined ? fail(misfit) : { ok: true, key: { file, kind: 'jwks', jwks: { keys: list as JWK[] } } };
}
