import type { webcrypto } from 'node:crypto';
import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, decodeProtectedHeader, errors, importJWK, type JWK, jwtVerify } from 'jose';
import { PortcullisError, ReplayCache } from '../core/index.js';
import { checkTokenHygiene } from '../identity/token-hygiene.js';

/** Header members a DPoP proof may carry (RFC 9449 §4.2): the key travels in `jwk`, nothing else. */
const DPOP_HEADER = new Set(['alg', 'typ', 'jwk']);
const ALGORITHMS = ['ES256', 'EdDSA'];
const MAX_PROOF_BYTES = 4096;
const FUTURE_SKEW_SEC = 5;
const MAX_REMEMBERED = 200_000;
const MAX_PER_SUBJECT = 10_000;
const MAX_KEYS = 10_000;

export interface DpopCheck {
  /** The method of the request (`htm`). */
  readonly method: string;
  /** The request URL without query or fragment (`htu`): `https://api.example.com/orders/1`. */
  readonly url: string;
  /**
   * The access token the proof goes with (`ath` = its SHA-256, base64url); undefined at the token
   * endpoints (sign-in, refresh), where a proof carries no `ath`.
   */
  readonly accessToken: string | undefined;
}

export interface VerifiedDpop {
  /** RFC 7638 thumbprint of the proof's key: the device it names. */
  readonly jkt: string;
  readonly jwk: JWK;
  readonly jti: string;
}

/** RFC 9449 §7.1: the error a resource server answers for a bad proof. */
export function dpopError(detail: string): PortcullisError {
  return new PortcullisError('invalid_dpop_proof', {
    detail,
    headers: {
      'www-authenticate': `DPoP error="invalid_dpop_proof", algs="${ALGORITHMS.join(' ')}"`,
    },
  });
}

/**
 * Checks DPoP proofs (RFC 9449): a JWT of `typ: dpop+jwt` signed with the public key in its own `jwk`
 * header (ES256 or EdDSA; a private key there is refused), carrying the request's method (`htm`) and
 * URL (`htu`, compared without query and fragment, scheme and host case-insensitively), a recent `iat`
 * (at most `maxAgeMs` old, a few seconds ahead at most), a `jti` seen only once while the proof could
 * be accepted, and `ath`, the hash of the access token it is sent with. The same strict JWS hygiene as
 * access tokens applies before any cryptography; the signature is `jose`'s.
 */
export class DpopVerifier {
  readonly #maxAgeSec: number;
  readonly #now: () => number;
  /** Spent `jkt:jti`s, until no proof carrying them could still pass the iat window. */
  readonly #replays = new ReplayCache(MAX_REMEMBERED, MAX_PER_SUBJECT);
  /**
   * Imported keys by the proof's header segment: a client sends the same header (alg, typ, jwk) with
   * every proof, so the key is imported and its thumbprint computed once, not per request.
   */
  readonly #keys = new Map<string, { key: webcrypto.CryptoKey; jwk: JWK; jkt: string }>();

  constructor(options: { maxAgeMs: number; now: () => number }) {
    this.#maxAgeSec = Math.ceil(options.maxAgeMs / 1000);
    this.#now = options.now;
  }

  /**
   * Verifies a proof and spends its jti for `subject` (who is calling: the signed-in user). With
   * `defer`, the jti is not spent yet: the caller spends it with `commit()` once the request succeeded
   * (sign-in endpoints, where anyone may call and a failed attempt must cost the cache nothing).
   */
  async verify(
    proof: string,
    check: DpopCheck,
    options: { subject?: string; defer?: boolean } = {},
  ): Promise<VerifiedDpop & { commit: () => void }> {
    const nowMs = this.#now();
    const nowSec = Math.floor(nowMs / 1000);
    try {
      checkTokenHygiene(proof, {
        maxTokenBytes: MAX_PROOF_BYTES,
        maxLifetimeSec: this.#maxAgeSec,
        clockToleranceSec: FUTURE_SKEW_SEC,
        nowSec,
        headerMembers: DPOP_HEADER,
      });
    } catch (err) {
      throw dpopError(`DPoP proof malformed: ${(err as Error).message}`);
    }
    let payload: Record<string, unknown>;
    let key: { key: webcrypto.CryptoKey; jwk: JWK; jkt: string };
    try {
      key = await this.#keyOf(proof.slice(0, proof.indexOf('.')), proof);
      const r = await jwtVerify(proof, key.key, {
        typ: 'dpop+jwt',
        algorithms: ALGORITHMS,
        currentDate: new Date(nowMs),
      });
      payload = r.payload;
    } catch (err) {
      if (err instanceof PortcullisError) throw err;
      if (err instanceof errors.JOSEError) throw dpopError(`DPoP proof refused: ${err.message}`);
      throw err;
    }
    const { htm, htu, iat, jti, ath } = payload;
    if (typeof jti !== 'string' || jti.length < 8 || jti.length > 256)
      throw dpopError('DPoP proof needs a jti of 8–256 characters');
    if (typeof iat !== 'number') throw dpopError('DPoP proof needs iat');
    if (iat > nowSec + FUTURE_SKEW_SEC) throw dpopError('DPoP proof iat is in the future');
    if (iat < nowSec - this.#maxAgeSec) throw dpopError(`DPoP proof is older than ${this.#maxAgeSec}s`);
    if (htm !== check.method) throw dpopError(`DPoP proof htm ${String(htm)} is not ${check.method}`);
    if (typeof htu !== 'string' || normalizeHtu(htu) !== normalizeHtu(check.url))
      throw dpopError(`DPoP proof htu ${String(htu)} is not ${check.url}`);
    if (check.accessToken === undefined) {
      if (ath !== undefined) throw dpopError('DPoP proof for a token request must not carry ath');
    } else if (ath !== createHash('sha256').update(check.accessToken).digest('base64url'))
      throw dpopError('DPoP proof ath does not match the access token');
    const { jkt, jwk } = key;
    const until = (iat + this.#maxAgeSec + FUTURE_SKEW_SEC) * 1000;
    const commit = () => this.#remember(`${jkt}:${jti}`, until, this.#now(), options.subject ?? jkt);
    if (options.defer) return { jkt, jwk, jti, commit };
    commit();
    return { jkt, jwk, jti, commit: () => undefined };
  }

  /** The public key a proof's `jwk` header carries (a private key, or anything but EC/OKP, is refused). */
  async #keyOf(segment: string, proof: string): Promise<{ key: webcrypto.CryptoKey; jwk: JWK; jkt: string }> {
    const hit = this.#keys.get(segment);
    if (hit) return hit;
    const header = decodeProtectedHeader(proof);
    const jwk = header.jwk as JWK | undefined;
    if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk))
      throw dpopError('DPoP proof has no jwk header');
    if ('d' in jwk || 'p' in jwk || 'k' in jwk) throw dpopError('DPoP proof jwk must be a public key');
    if (jwk.kty !== 'EC' && jwk.kty !== 'OKP') throw dpopError('DPoP proof jwk must be an EC or OKP key');
    if (typeof header.alg !== 'string' || !ALGORITHMS.includes(header.alg))
      throw dpopError(`DPoP proof alg must be one of ${ALGORITHMS.join(', ')}`);
    let key: webcrypto.CryptoKey;
    try {
      key = (await importJWK(jwk, header.alg)) as webcrypto.CryptoKey;
    } catch (err) {
      throw dpopError(`DPoP proof jwk is not a usable key: ${(err as Error).message}`);
    }
    if (key.type !== 'public') throw dpopError('DPoP proof jwk must be a public key');
    const entry = { key, jwk, jkt: await calculateJwkThumbprint(jwk, 'sha256') };
    if (this.#keys.size >= MAX_KEYS) this.#keys.delete(this.#keys.keys().next().value as string);
    this.#keys.set(segment, entry);
    return entry;
  }

  /**
   * A jti is accepted once; remembered until no proof carrying it could pass the iat window. At most
   * {@link MAX_PER_SUBJECT} live proofs per subject (the signed-in user, or the key at sign-in), so one
   * caller cannot fill the cache for everyone; the whole cache refuses rather than forgets (fail closed).
   */
  #remember(key: string, until: number, now: number, subject: string): void {
    const verdict = this.#replays.use(key, subject, until, now);
    if (verdict === 'replay') throw dpopError('DPoP proof replayed (jti already used)');
    if (verdict === 'subject_full') throw dpopError('too many DPoP proofs from this caller in the window');
    if (verdict === 'full') throw dpopError('too many DPoP proofs in flight');
  }
}

/** `htu` compared as RFC 9449 §4.3 says: no query or fragment; scheme and host case-insensitive, default port dropped. */
function normalizeHtu(u: string): string {
  try {
    const url = new URL(u);
    return `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return `invalid:${u}`;
  }
}
