import type { KeyObject } from 'node:crypto';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { type TokenFailure, TokenVerificationError } from './token-error.js';
import { checkTokenHygiene } from './token-hygiene.js';

export { type TokenFailure, TokenVerificationError };

/**
 * Algorithms we accept. Never `none`; HS256 only where the caller holds a shared secret (per-upstream
 * identity assertions), never for tokens verified with a public key: the list is explicit per call.
 * Our own tokens are ES256 (default) or EdDSA; RS256, PS256 and ES384 are for external issuers.
 */
export type AllowedAlg = 'ES256' | 'ES384' | 'EdDSA' | 'RS256' | 'PS256' | 'HS256';

export interface VerifyTokenOptions {
  /** Required `iss`; `null` = deliberately not checked (diagnostic tools only). */
  issuer: string | null;
  /** Required `aud`; `null` = deliberately not checked (diagnostic tools only). */
  audience: string | null;
  /** Pinned algorithms; default `['ES256']`. */
  algorithms?: readonly AllowedAlg[];
  /** Required `typ` header (e.g. `at+jwt`); omitted = not checked. */
  typ?: string;
  /** Claims that must be present besides iss/aud/exp. */
  requiredClaims?: readonly string[];
  /** Seconds of clock skew tolerated on exp/nbf/iat; default 5. */
  clockToleranceSec?: number;
  /** Time to verify at (tests, `--at`). */
  currentDate?: Date;
  /** Largest accepted lifetime (exp − iat), seconds; default 24 h. */
  maxLifetimeSec?: number;
  /** Largest accepted token, bytes; default 8 KiB. */
  maxTokenBytes?: number;
}

/** A verification key: a key resolver (JWKS), a public key object, or a shared secret (HS256 only). */
export type VerificationKey = JWTVerifyGetKey | KeyObject | Uint8Array;

/** A key source: a JWKS document, a JWKS URL, or a jose key resolver. */
export type KeySource = JSONWebKeySet | URL | JWTVerifyGetKey;

/** Turns a key source into a resolver once, so it can be reused (and its keys cached) across calls. */
export function keyResolver(source: KeySource): JWTVerifyGetKey {
  if (typeof source === 'function') return source;
  if (source instanceof URL)
    return createRemoteJWKSet(source, { timeoutDuration: 5000, cooldownDuration: 30_000 });
  return createLocalJWKSet(source);
}

/**
 * Verifies a signed JWT: first the structural and claim-type checks of {@link checkTokenHygiene}
 * (RFC 8725), then `jose`: signature with the pinned algorithms, `iss`, `aud`, `exp`/`nbf`, optional
 * `typ`, required claims. Every failure is a {@link TokenVerificationError} with a reason.
 *
 * @example
 * const claims = await verifyToken(token, keyResolver(jwks), { issuer: 'http://127.0.0.1:8080', audience: 'portcullis' });
 */
export async function verifyToken(
  token: string,
  keys: VerificationKey,
  options: VerifyTokenOptions,
): Promise<JWTPayload> {
  const tolerance = options.clockToleranceSec ?? 5;
  checkTokenHygiene(token, {
    maxTokenBytes: options.maxTokenBytes ?? 8192,
    maxLifetimeSec: options.maxLifetimeSec ?? 86_400,
    clockToleranceSec: tolerance,
    nowSec: Math.floor((options.currentDate?.getTime() ?? Date.now()) / 1000),
  });
  try {
    const opts = {
      ...(options.issuer === null ? {} : { issuer: options.issuer }),
      ...(options.audience === null ? {} : { audience: options.audience }),
      algorithms: [...(options.algorithms ?? ['ES256'])],
      requiredClaims: ['exp', ...(options.requiredClaims ?? [])],
      clockTolerance: tolerance,
      ...(options.typ === undefined ? {} : { typ: options.typ }),
      ...(options.currentDate === undefined ? {} : { currentDate: options.currentDate }),
    };
    // Two calls only so TypeScript can pick jose's overload (key resolver vs key); same call at run time.
    const { payload } =
      typeof keys === 'function' ? await jwtVerify(token, keys, opts) : await jwtVerify(token, keys, opts);
    return payload;
  } catch (err) {
    throw toVerificationError(err);
  }
}

function toVerificationError(err: unknown): TokenVerificationError {
  if (err instanceof TokenVerificationError) return err; // from our own key resolvers (jwks.ts)
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return new TokenVerificationError('expired', 'token has expired', { cause: err });
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'nbf' || e.claim === 'iat') {
        return new TokenVerificationError('not_yet_valid', `token is not yet valid (${e.claim})`, {
          cause: err,
        });
      }
      return new TokenVerificationError('claim_invalid', `claim "${e.claim}" is invalid (${e.reason})`, {
        cause: err,
      });
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return new TokenVerificationError('bad_signature', 'signature verification failed', { cause: err });
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return new TokenVerificationError('algorithm_not_allowed', 'token algorithm is not allowed', {
        cause: err,
      });
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return new TokenVerificationError('unknown_key', 'no trusted key matches the token', { cause: err });
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
      return new TokenVerificationError('keys_unavailable', 'the key set could not be fetched', {
        cause: err,
      });
    default:
      if (e.message?.includes('fetch')) {
        return new TokenVerificationError('keys_unavailable', 'the key set could not be fetched', {
          cause: err,
        });
      }
      return new TokenVerificationError('malformed', 'token is malformed', { cause: err });
  }
}
