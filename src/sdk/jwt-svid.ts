import type { JWTVerifyGetKey } from 'jose';
import { type KeySource, keyResolver, verifyToken } from '../identity/index.js';
import { parseSpiffeId } from '../workload/spiffe-id.js';

export const JWT_SVID_TYP = 'JWT';
/** JWT-SVIDs live at most this long (seconds). */
export const JWT_SVID_MAX_LIFETIME_SEC = 300;

/**
 * Remembers JWT-SVID `jti`s until their tokens expire, so a receiver refuses a replay within the
 * token's lifetime (bounded: the oldest entries go first past `max`).
 */
export class JtiReplayCache {
  readonly #seen = new Map<string, number>();
  constructor(private readonly max = 100_000) {}

  /** False when `jti` was already seen and its token has not expired. */
  remember(jti: string, expiresAtMs: number, nowMs: number): boolean {
    const prev = this.#seen.get(jti);
    if (prev !== undefined && prev > nowMs) return false;
    if (this.#seen.size >= this.max) {
      for (const [k, exp] of this.#seen) {
        if (exp <= nowMs || this.#seen.size >= this.max) this.#seen.delete(k);
        if (this.#seen.size < this.max) break;
      }
    }
    this.#seen.set(jti, expiresAtMs);
    return true;
  }
}

export interface VerifiedJwtSvid {
  spiffeId: string;
  audience: string;
  jti: string;
  expiresAt: number;
}

/**
 * Verifies a JWT-SVID for a receiving service: ES256 with the issuer's JWKS, exactly one audience equal to
 * ours, `sub` a SPIFFE ID (in `trustDomain` if given), at most 5 minutes of lifetime, and a `jti` not seen
 * before within its lifetime (pass the same cache to every call). Throws with the reason.
 *
 * @example
 * const cache = new JtiReplayCache();
 * const { spiffeId } = await verifyJwtSvid(token, { keys: new URL('https://gw/.well-known/jwks.json'), issuer, audience: 'orders', replay: cache });
 */
export async function verifyJwtSvid(
  token: string,
  options: {
    keys: KeySource | JWTVerifyGetKey;
    issuer: string;
    audience: string;
    replay: JtiReplayCache;
    trustDomain?: string;
    now?: number;
  },
): Promise<VerifiedJwtSvid> {
  const now = options.now ?? Date.now();
  const claims = await verifyToken(
    token,
    typeof options.keys === 'function' ? options.keys : keyResolver(options.keys),
    {
      issuer: options.issuer,
      audience: options.audience,
      algorithms: ['ES256'],
      typ: JWT_SVID_TYP,
      requiredClaims: ['sub', 'jti', 'iat'],
      maxLifetimeSec: JWT_SVID_MAX_LIFETIME_SEC,
      currentDate: new Date(now),
    },
  );
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (aud.length !== 1) throw new Error('a JWT-SVID for us must carry exactly one audience');
  const id = parseSpiffeId(String(claims.sub));
  if (options.trustDomain !== undefined && id.trustDomain !== options.trustDomain)
    throw new Error(`JWT-SVID from trust domain ${id.trustDomain}, expected ${options.trustDomain}`);
  const expiresAt = (claims.exp ?? 0) * 1000;
  if (!options.replay.remember(String(claims.jti), expiresAt, now))
    throw new Error('JWT-SVID replayed (jti already used)');
  return { spiffeId: id.toString(), audience: options.audience, jti: String(claims.jti), expiresAt };
}
