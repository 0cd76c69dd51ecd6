import { randomUUID } from 'node:crypto';
import { errors, type JWTVerifyGetKey, SignJWT } from 'jose';
import { OWN_ISSUER_ID } from '../config/index.js';
import { type Clock, PortcullisError, type Principal, type SessionId, type UserId } from '../core/index.js';
import type { KeyRing } from './keys.js';
import { TokenVerificationError, verifyToken } from './verify-token.js';

export const ACCESS_TOKEN_TYP = 'at+jwt';

/** A verified bearer token: who it vouches for, and its validity window (seconds since epoch). */
export interface VerifiedBearer {
  principal: Principal;
  expiresAt: number;
  notBefore: number;
}

/** The `WWW-Authenticate` challenge of an invalid bearer token (RFC 6750 §3.1). */
export const INVALID_TOKEN_CHALLENGE = {
  'www-authenticate': 'Bearer realm="portcullis", error="invalid_token"',
} as const;

export interface TokenServiceOptions {
  keys: KeyRing;
  issuer: string;
  audience: string;
  accessTokenTtlMs: number;
  clock: Clock;
}

export interface AccessTokenSubject {
  userId: UserId;
  sessionId: SessionId;
  roles: readonly string[];
  amr: readonly string[];
  /** When the user authenticated (ms): the session's start, or its last step-up. */
  authTime: number;
  /** Authentication context class: `aal1` (password) or `aal2` (with a second factor). */
  acr: string;
  groups?: readonly string[];
  /** The user's attributes, for policy (`principal.department`). */
  attributes?: Readonly<Record<string, unknown>>;
  /** Bind the token to this key (RFC 9449 `cnf.jkt`): it is then usable only with DPoP proofs by that key. */
  confirmationJkt?: string | undefined;
}

export interface ServiceTokenSubject {
  clientId: string;
  scopes: readonly string[];
  roles: readonly string[];
  audience: string;
  ttlSec: number;
  spiffeId?: string | null | undefined;
}

/**
 * Mints and verifies access tokens: ES256 JWTs (RFC 9068 `typ: at+jwt`) carrying iss, aud, sub, exp,
 * iat, nbf, jti, sid, roles and amr. Verification accepts only the access-token key, so an identity
 * assertion (signed by the other key) can never be used as an access token.
 */
export class TokenService {
  readonly #opts: TokenServiceOptions;
  readonly #resolver: JWTVerifyGetKey;

  constructor(opts: TokenServiceOptions) {
    this.#opts = opts;
    // Any published access-token key (next, current, retiring) verifies, each only with its own algorithm.
    this.#resolver = async (header) => {
      const key = opts.keys.accessTokenKey(header.kid);
      if (!key || key.alg !== header.alg) throw new errors.JWKSNoMatchingKey();
      return key.publicKey;
    };
  }

  get accessTokenTtlSec(): number {
    return Math.floor(this.#opts.accessTokenTtlMs / 1000);
  }

  /**
   * A service account's token (client credentials grant): no session; `client_id`, `scope` and the
   * account's roles (and SPIFFE ID, if it has one); `aud` is the audience it asked for.
   */
  async issueServiceToken(subject: ServiceTokenSubject): Promise<string> {
    const key = this.#opts.keys.accessToken;
    const now = Math.floor(this.#opts.clock.now() / 1000);
    return new SignJWT({
      client_id: subject.clientId,
      scope: subject.scopes.join(' '),
      roles: [...subject.roles],
      ...(subject.spiffeId ? { spiffe_id: subject.spiffeId } : {}),
    })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: ACCESS_TOKEN_TYP })
      .setIssuer(this.#opts.issuer)
      .setAudience(subject.audience)
      .setSubject(subject.clientId)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + subject.ttlSec)
      .setJti(randomUUID())
      .sign(key.privateKey);
  }

  /** Verifies one of our tokens for any audience (introspection): its claims, or undefined. */
  async claimsOf(token: string): Promise<Record<string, unknown> | undefined> {
    try {
      return (await verifyToken(token, this.#resolver, {
        issuer: this.#opts.issuer,
        audience: null,
        algorithms: ['ES256', 'EdDSA'],
        typ: ACCESS_TOKEN_TYP,
        requiredClaims: ['sub', 'jti', 'iat', 'exp'],
        maxLifetimeSec: Math.max(this.accessTokenTtlSec, 3600),
        currentDate: new Date(this.#opts.clock.now()),
      })) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }

  async issueAccessToken(subject: AccessTokenSubject): Promise<string> {
    const key = this.#opts.keys.accessToken;
    const now = Math.floor(this.#opts.clock.now() / 1000);
    return new SignJWT(accessTokenClaims(subject))
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: ACCESS_TOKEN_TYP })
      .setIssuer(this.#opts.issuer)
      .setAudience(this.#opts.audience)
      .setSubject(subject.userId)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + this.accessTokenTtlSec)
      .setJti(randomUUID())
      .sign(key.privateKey);
  }

  /** Verifies an access token and returns the principal it carries; throws `invalid_token`. */
  async verifyAccessToken(token: string): Promise<Principal> {
    return (await this.verifyAccessTokenClaims(token)).principal;
  }

  /** Like {@link verifyAccessToken}, with the token's validity window (seconds) for caches. */
  async verifyAccessTokenClaims(token: string): Promise<VerifiedBearer> {
    let claims: Awaited<ReturnType<typeof verifyToken>>;
    try {
      claims = await verifyToken(token, this.#resolver, {
        issuer: this.#opts.issuer,
        audience: this.#opts.audience,
        algorithms: ['ES256', 'EdDSA'],
        typ: ACCESS_TOKEN_TYP,
        requiredClaims: ['sub', 'jti', 'iat'],
        // Service tokens may live up to 15 minutes (identity.serviceTokenTtl), whatever the user TTL.
        maxLifetimeSec: Math.max(this.accessTokenTtlSec, 900),
        currentDate: new Date(this.#opts.clock.now()),
      });
    } catch (err) {
      const reason = err instanceof TokenVerificationError ? err.message : 'token is invalid';
      throw new PortcullisError('invalid_token', {
        detail: reason,
        cause: err,
        headers: INVALID_TOKEN_CHALLENGE,
      });
    }
    const { sub, roles, jti, exp, nbf, client_id, spiffe_id, cnf } = claims;
    const jkt = (cnf as { jkt?: unknown } | undefined)?.jkt;
    if (cnf !== undefined && (typeof cnf !== 'object' || cnf === null || typeof jkt !== 'string'))
      throw new PortcullisError('invalid_token', {
        detail: 'cnf must be an object with a jkt',
        headers: INVALID_TOKEN_CHALLENGE,
      });
    if (client_id !== undefined) {
      // A service account's token: no session; its account is checked on every request instead.
      if (
        typeof client_id !== 'string' ||
        sub !== client_id ||
        typeof jti !== 'string' ||
        !isStringArray(roles)
      )
        throw new PortcullisError('invalid_token', {
          detail: 'claims have the wrong types',
          headers: INVALID_TOKEN_CHALLENGE,
        });
      return {
        principal: {
          kind: 'service',
          id: client_id as UserId,
          issuer: OWN_ISSUER_ID,
          sessionId: undefined,
          roles,
          amr: [],
          tokenId: jti,
          ...(typeof spiffe_id === 'string' ? { spiffeId: spiffe_id } : {}),
        },
        expiresAt: exp ?? 0,
        notBefore: nbf ?? 0,
      };
    }
    return { principal: userPrincipal(claims), expiresAt: exp ?? 0, notBefore: nbf ?? 0 };
  }

  /**
   * The principal an access token for `subject` would carry once verified, without minting one: what
   * a browser session cookie authenticates as. Built through the same claims, so the two never differ.
   */
  principalFor(subject: AccessTokenSubject, tokenId = ''): Principal {
    return userPrincipal({ ...accessTokenClaims(subject), sub: subject.userId, jti: tokenId });
  }
}

/** The private claims of a user's access token (RFC 9068 + ours): session, roles, how and when signed in. */
function accessTokenClaims(subject: AccessTokenSubject): Record<string, unknown> {
  return {
    sid: subject.sessionId,
    roles: [...subject.roles],
    amr: [...subject.amr],
    auth_time: Math.floor(subject.authTime / 1000),
    acr: subject.acr,
    ...(subject.groups?.length ? { groups: [...subject.groups] } : {}),
    ...(subject.attributes && Object.keys(subject.attributes).length ? { attrs: subject.attributes } : {}),
    ...(subject.confirmationJkt ? { cnf: { jkt: subject.confirmationJkt } } : {}),
  };
}

/** A user's principal from verified access-token claims; claims of the wrong types are `invalid_token`. */
function userPrincipal(claims: Record<string, unknown>): Principal {
  const { sub, sid, roles, amr, jti, auth_time, acr, groups, attrs, cnf } = claims;
  const jkt = (cnf as { jkt?: unknown } | undefined)?.jkt;
  if (
    typeof sub !== 'string' ||
    typeof sid !== 'string' ||
    typeof jti !== 'string' ||
    !isStringArray(roles) ||
    !isStringArray(amr) ||
    (groups !== undefined && !isStringArray(groups)) ||
    (attrs !== undefined && (attrs === null || typeof attrs !== 'object' || Array.isArray(attrs)))
  ) {
    throw new PortcullisError('invalid_token', {
      detail: 'claims have the wrong types',
      headers: INVALID_TOKEN_CHALLENGE,
    });
  }
  return {
    kind: 'user',
    id: sub as UserId,
    issuer: OWN_ISSUER_ID,
    sessionId: sid as SessionId,
    roles,
    amr,
    tokenId: jti,
    ...(typeof auth_time === 'number' ? { authTime: auth_time * 1000 } : {}),
    ...(typeof acr === 'string' ? { acr } : {}),
    ...(groups !== undefined ? { groups } : {}),
    ...(attrs !== undefined ? { attributes: attrs as Record<string, unknown> } : {}),
    ...(typeof jkt === 'string' ? { confirmationJkt: jkt } : {}),
  };
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}
