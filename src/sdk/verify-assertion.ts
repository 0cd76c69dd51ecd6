import type { JWTPayload, JWTVerifyGetKey } from 'jose';
import { constantTimeEqual, sha256b64url } from '../core/index.js';
import { TokenVerificationError, verifyToken } from '../identity/verify-token.js';

export const ASSERTION_TYP = 'portcullis-assertion+jwt';

export interface VerifyAssertionOptions {
  /** The gateway's issuer (config `identity.issuer`). */
  issuer: string;
  /** This upstream's audience (config `upstreams.<name>.audience`, default the upstream's name). */
  audience: string;
  /** The request as this upstream received it: binds the assertion to it. */
  request?: { method: string; target: string };
  /** Largest accepted lifetime (exp − iat), seconds; default 60. */
  maxLifetimeSec?: number;
  currentDate?: Date;
}

/** The identity the gateway asserts for one request. */
export interface VerifiedAssertion extends JWTPayload {
  sub: string;
  sid: string;
  roles: string[];
  amr: string[];
  htm: string;
  tgt: string;
  route: string;
  jti: string;
  /** How the user signed in (`aal1`, `aal2`), when known. */
  acr?: string;
  /** The device the request proved it comes from (device certificate or DPoP key), if any. */
  device?: string;
  /** The request's risk score (0–100), when the risk engine is on. */
  risk?: number;
}

/**
 * For apps behind the gateway: verifies the `x-portcullis-assertion` header — the ES256 signature
 * against the gateway's JWKS (or, for an upstream configured with `assertion: {alg: HS256}`, the HMAC
 * with the key it shares with the gateway, passed as bytes), `typ`, `iss`, `aud`, `exp`, a lifetime of
 * at most 60 s, and (when `request` is given) that it was issued for this exact method and target.
 *
 * @example
 * const keys = keyResolver(new URL('http://127.0.0.1:8080/.well-known/jwks.json'));
 * const who = await verifyAssertion(req.headers['x-portcullis-assertion'], keys, {
 *   issuer: 'http://127.0.0.1:8080', audience: 'orders-api', request: { method: req.method, target: req.url },
 * });
 */
export async function verifyAssertion(
  token: string | undefined,
  keys: JWTVerifyGetKey | Uint8Array,
  options: VerifyAssertionOptions,
): Promise<VerifiedAssertion> {
  if (!token) throw new TokenVerificationError('malformed', 'no identity assertion');
  const claims = await verifyToken(token, keys, {
    issuer: options.issuer,
    audience: options.audience,
    // A shared secret means this upstream's HS256 assertions; a key set means ES256. Never both.
    algorithms: keys instanceof Uint8Array ? ['HS256'] : ['ES256'],
    typ: ASSERTION_TYP,
    requiredClaims: ['sub', 'iat', 'jti', 'htm', 'tgt'],
    maxLifetimeSec: options.maxLifetimeSec ?? 60,
    ...(options.currentDate === undefined ? {} : { currentDate: options.currentDate }),
  });
  const maxLifetime = options.maxLifetimeSec ?? 60;
  if (
    typeof claims.iat !== 'number' ||
    typeof claims.exp !== 'number' ||
    claims.exp - claims.iat > maxLifetime
  ) {
    throw new TokenVerificationError('claim_invalid', `assertion lifetime exceeds ${maxLifetime}s`);
  }
  if (options.request) {
    if (claims.htm !== options.request.method) {
      throw new TokenVerificationError('claim_invalid', 'assertion was issued for another method');
    }
    if (
      typeof claims.tgt !== 'string' ||
      !constantTimeEqual(claims.tgt, sha256b64url(options.request.target))
    ) {
      throw new TokenVerificationError('claim_invalid', 'assertion was issued for another request target');
    }
  }
  return claims as VerifiedAssertion;
}
