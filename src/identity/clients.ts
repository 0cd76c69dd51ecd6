import { createHash, timingSafeEqual } from 'node:crypto';
import { createLocalJWKSet, decodeJwt, type JSONWebKeySet } from 'jose';
import type { AuditWriter } from '../audit/index.js';
import { type Clock, PortcullisError, randomToken, sha256b64url } from '../core/index.js';
import type { ServiceAccountRecord, Store } from '../store/index.js';
import type { TokenService } from './tokens.js';
import { TokenVerificationError, verifyToken } from './verify-token.js';

/** How a client proved who it is at the token, introspection or revocation endpoint. */
export type ClientAuth =
  | { method: 'client_secret_basic' | 'client_secret_post'; clientId: string; secret: string }
  | { method: 'private_key_jwt'; clientId: string | undefined; assertion: string }
  | { method: 'none'; clientId: string | undefined };

/** An OAuth 2.0 error (RFC 6749 §5.2), answered as `{error, error_description}`. */
export class OAuthError extends Error {
  constructor(
    readonly error:
      | 'invalid_request'
      | 'invalid_client'
      | 'invalid_grant'
      | 'unauthorized_client'
      | 'unsupported_grant_type'
      | 'invalid_scope'
      | 'invalid_target',
    readonly description: string,
    readonly status = error === 'invalid_client' ? 401 : 400,
  ) {
    super(description);
    this.name = 'OAuthError';
  }
}

export interface ClientServiceOptions {
  store: Store;
  tokens: TokenService;
  audit: AuditWriter;
  clock: Clock;
  issuer: string;
  /** The token endpoint's URL: the `aud` a client assertion must carry (or the issuer). */
  tokenEndpoint: string;
  /** Audience of our own access tokens (the default audience of service tokens). */
  defaultAudience: string;
  /** Lifetime of service tokens (default 5 minutes). */
  serviceTokenTtlSec: number;
}

export interface NewServiceAccount {
  name: string;
  scopes: readonly string[];
  roles?: readonly string[];
  audiences?: readonly string[];
  spiffeId?: string;
  /** Public keys for private_key_jwt; without them a client secret is generated. */
  jwks?: JSONWebKeySet;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const SCOPE = /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/; // RFC 6749 §3.3 scope-token
const MAX_ASSERTION_SEC = 300;
const DUMMY_HASH = createHash('sha256').update('portcullis-no-such-client').digest();

const sha256 = (s: string) => createHash('sha256').update(s).digest();

/**
 * Service accounts: machine identities that get short, audience-bound access tokens with the OAuth 2.0
 * client credentials grant, authenticated by a client secret (stored as its SHA-256: it is 256 random
 * bits, so a slow hash buys nothing) or by `private_key_jwt` (RFC 7523: signature with the account's
 * registered key, `iss` = `sub` = client id, `aud` = our token endpoint or issuer, at most 5 minutes,
 * single-use `jti`). Also introspection (RFC 7662) and revocation (RFC 7009).
 */
export class ClientService {
  readonly #o: ClientServiceOptions;

  constructor(options: ClientServiceOptions) {
    this.#o = options;
  }

  /** Creates an account; returns it and, when it has no keys, its client secret (shown once). */
  async create(
    input: NewServiceAccount,
  ): Promise<{ account: ServiceAccountRecord; secret: string | undefined }> {
    const name = input.name.toLowerCase();
    if (!NAME.test(name))
      throw new PortcullisError('invalid_body', {
        message: 'a service account name is 1–63 of a-z 0-9 . _ -',
      });
    const bad = input.scopes.find((s) => !SCOPE.test(s));
    if (bad !== undefined) throw new PortcullisError('invalid_body', { message: `invalid scope "${bad}"` });
    if (input.spiffeId !== undefined && !/^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)+$/.test(input.spiffeId))
      throw new PortcullisError('invalid_body', { message: 'spiffeId must be spiffe://trust-domain/path' });
    if (await this.#o.store.serviceAccounts.findByName(name))
      throw new PortcullisError('invalid_body', { message: `service account ${name} already exists` });
    const secret = input.jwks ? undefined : randomToken(32);
    const account: ServiceAccountRecord = {
      id: name,
      name,
      secretHash: secret ? sha256b64url(secret) : null,
      jwks: input.jwks ? publicKeys(input.jwks) : null,
      scopes: [...new Set(input.scopes)],
      roles: [...new Set(input.roles ?? [])],
      audiences: [...new Set(input.audiences ?? [this.#o.defaultAudience])],
      spiffeId: input.spiffeId ?? null,
      status: 'active',
      createdAt: this.#o.clock.now(),
    };
    await this.#o.store.serviceAccounts.create(account);
    await this.#audit('identity.service_account.created', {
      clientId: name,
      scopes: account.scopes,
      method: secret ? 'secret' : 'private_key_jwt',
    });
    return { account, secret };
  }

  /** New credentials: a new secret, or new public keys (the old ones stop working at once). */
  async rotate(name: string, jwks?: JSONWebKeySet): Promise<string | undefined> {
    const account = await this.#o.store.serviceAccounts.findByName(name.toLowerCase());
    if (!account) throw new PortcullisError('invalid_body', { message: `no service account ${name}` });
    const secret = jwks ? undefined : randomToken(32);
    await this.#o.store.serviceAccounts.update(account.id, {
      secretHash: secret ? sha256b64url(secret) : null,
      jwks: jwks ? publicKeys(jwks) : null,
    });
    await this.#audit('identity.service_account.rotated', {
      clientId: account.id,
      method: secret ? 'secret' : 'private_key_jwt',
    });
    return secret;
  }

  /** Checks the client's credentials; the account, or `invalid_client`. */
  async authenticate(auth: ClientAuth): Promise<ServiceAccountRecord> {
    if (auth.method === 'none') throw new OAuthError('invalid_client', 'client authentication is required');
    if (auth.method === 'private_key_jwt') return this.#byAssertion(auth.assertion, auth.clientId);
    const account = await this.#o.store.serviceAccounts.get(auth.clientId);
    // Compare against a dummy for unknown clients too: the same work either way.
    const want = account?.secretHash ? Buffer.from(account.secretHash, 'base64url') : DUMMY_HASH;
    const ok = timingSafeEqual(sha256(auth.secret), want.length === 32 ? want : DUMMY_HASH);
    if (!account?.secretHash || !ok) throw new OAuthError('invalid_client', 'unknown client or wrong secret');
    if (account.status !== 'active') throw new OAuthError('invalid_client', 'the client is suspended');
    return account;
  }

  /** The client credentials grant: a token for the asked scopes (a subset of the granted ones) and audience. */
  async clientCredentials(
    auth: ClientAuth,
    params: { scope?: string | undefined; audience?: string | undefined },
    meta: { ip: string; requestId: string },
  ): Promise<{ access_token: string; token_type: 'Bearer'; expires_in: number; scope: string }> {
    let account: ServiceAccountRecord;
    try {
      account = await this.authenticate(auth);
    } catch (err) {
      await this.#audit('auth.client.failed', {
        clientId: auth.clientId ?? null,
        method: auth.method,
        reason: (err as Error).message,
        ...meta,
      });
      throw err;
    }
    const asked =
      params.scope === undefined ? account.scopes : [...new Set(params.scope.split(' ').filter(Boolean))];
    const notGranted = asked.filter((s) => !account.scopes.includes(s));
    if (notGranted.length > 0)
      throw new OAuthError('invalid_scope', `scope not granted: ${notGranted.join(' ')}`);
    const audience = params.audience ?? account.audiences[0] ?? this.#o.defaultAudience;
    if (!account.audiences.includes(audience))
      throw new OAuthError('invalid_target', `audience not allowed: ${audience}`);
    const token = await this.#o.tokens.issueServiceToken({
      clientId: account.id,
      scopes: asked,
      roles: account.roles,
      audience,
      ttlSec: this.#o.serviceTokenTtlSec,
      spiffeId: account.spiffeId,
    });
    await this.#audit('auth.client.token_issued', {
      clientId: account.id,
      scope: asked,
      audience,
      method: auth.method,
      ...meta,
    });
    return {
      access_token: token,
      token_type: 'Bearer',
      expires_in: this.#o.serviceTokenTtlSec,
      scope: asked.join(' '),
    };
  }

  list(): Promise<ServiceAccountRecord[]> {
    return this.#o.store.serviceAccounts.list();
  }

  /** Whether a service account may still use its tokens (checked on every request, like a session). */
  async isActive(clientId: string): Promise<boolean> {
    const account = await this.#o.store.serviceAccounts.get(clientId);
    return account?.status === 'active';
  }

  async #byAssertion(assertion: string, claimedId: string | undefined): Promise<ServiceAccountRecord> {
    let iss: unknown;
    try {
      iss = decodeJwt(assertion).iss;
    } catch {
      throw new OAuthError('invalid_client', 'client_assertion is not a JWT');
    }
    if (typeof iss !== 'string' || (claimedId !== undefined && claimedId !== iss))
      throw new OAuthError('invalid_client', 'client_assertion iss does not name the client');
    const account = await this.#o.store.serviceAccounts.get(iss);
    if (!account?.jwks) throw new OAuthError('invalid_client', 'unknown client or no registered keys');
    if (account.status !== 'active') throw new OAuthError('invalid_client', 'the client is suspended');
    const now = this.#o.clock.now();
    let claims: Awaited<ReturnType<typeof verifyToken>>;
    try {
      claims = await verifyToken(assertion, createLocalJWKSet({ keys: account.jwks as never[] }), {
        issuer: account.id,
        audience: null,
        algorithms: ['ES256', 'EdDSA'],
        requiredClaims: ['sub', 'aud', 'jti', 'iat'],
        maxLifetimeSec: MAX_ASSERTION_SEC,
        currentDate: new Date(now),
      });
    } catch (err) {
      const why = err instanceof TokenVerificationError ? err.message : 'invalid client_assertion';
      throw new OAuthError('invalid_client', `client_assertion refused: ${why}`);
    }
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (claims.sub !== account.id)
      throw new OAuthError('invalid_client', 'client_assertion sub must equal iss');
    if (!aud.some((a) => a === this.#o.tokenEndpoint || a === this.#o.issuer))
      throw new OAuthError('invalid_client', 'client_assertion aud must be the token endpoint or the issuer');
    const exp = (claims.exp ?? 0) * 1000;
    if (exp - now > MAX_ASSERTION_SEC * 1000 + 5_000)
      throw new OAuthError('invalid_client', 'client_assertion expires too far ahead (at most 5 minutes)');
    // Single use: a jti is remembered until the assertion expires.
    // Kept past `exp` by the verifier's clock tolerance, so no replay slips in after the record is pruned.
    if (
      !(await this.#o.store.serviceAccounts.rememberAssertion(
        account.id,
        String(claims.jti),
        exp + 10_000,
        now,
      ))
    )
      throw new OAuthError('invalid_client', 'client_assertion replayed (jti already used)');
    return account;
  }

  async #audit(type: string, data: Record<string, unknown>): Promise<void> {
    await this.#o.audit.write({ type, data }, 'durable');
  }
}

/** Keeps only public members of each JWK; refuses private keys and symmetric keys. */
function publicKeys(jwks: JSONWebKeySet): Record<string, unknown>[] {
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0)
    throw new PortcullisError('invalid_body', { message: 'a JWKS with at least one key' });
  return jwks.keys.map((k) => {
    if (k.kty === 'oct' || 'd' in k)
      throw new PortcullisError('invalid_body', { message: 'register public keys only (no "d", no "oct")' });
    if (!((k.kty === 'EC' && k.crv === 'P-256') || (k.kty === 'OKP' && k.crv === 'Ed25519')))
      throw new PortcullisError('invalid_body', {
        message: 'keys must be EC P-256 (ES256) or Ed25519 (EdDSA)',
      });
    const { kty, crv, x, y, kid, alg, use } = k as Record<string, unknown>;
    return Object.fromEntries(
      Object.entries({ kty, crv, x, y, kid, alg, use }).filter(([, v]) => v !== undefined),
    );
  });
}
