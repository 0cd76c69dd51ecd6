import { createPublicKey, type KeyObject } from 'node:crypto';

/** Public-key JWS algorithms an external issuer may be configured with (never `none`, never HS*). */
export type PublicKeyAlg = 'ES256' | 'ES384' | 'EdDSA' | 'RS256' | 'PS256';

/** A verification key that passed {@link inspectJwk}: usable with exactly one algorithm. */
export interface UsableKey {
  readonly kid: string | undefined;
  readonly alg: PublicKeyAlg;
  readonly key: KeyObject;
}

/**
 * Why a key was not taken. `unsafe`: the key is weak, malformed or leaks private material (a startup
 * error in a local file, a logged warning in a fetched set). `unused`: a sound key that is simply not
 * for us (an encryption key, an algorithm this issuer is not configured with).
 */
export class KeyRefused extends Error {
  readonly kind: 'unsafe' | 'unused';
  constructor(kind: 'unsafe' | 'unused', reason: string) {
    super(reason);
    this.name = 'KeyRefused';
    this.kind = kind;
  }
}

/** JWK members that only a private or symmetric key has: never in a public key set. */
export const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

const RSA_ALGS: readonly PublicKeyAlg[] = ['RS256', 'PS256'];
/** What each algorithm needs: the JWK `kty`, and for EC/OKP the curve (JWK name and Node's name). */
const NEEDS: Record<PublicKeyAlg, { kty: string; crv?: string; nodeCurve?: string }> = {
  RS256: { kty: 'RSA' },
  PS256: { kty: 'RSA' },
  ES256: { kty: 'EC', crv: 'P-256', nodeCurve: 'prime256v1' },
  ES384: { kty: 'EC', crv: 'P-384', nodeCurve: 'secp384r1' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
};
const MIN_RSA_BITS = 2048;
/** Verification cost grows with the square of the modulus; 16384 bits is also Go's ceiling. */
const MAX_RSA_BITS = 16_384;

const unsafe = (reason: string) => new KeyRefused('unsafe', reason);
const unused = (reason: string) => new KeyRefused('unused', reason);

/**
 * Checks one JWK from an issuer's key set and imports it (Node crypto), or throws {@link KeyRefused}:
 * no private members; `use` is `sig` and `key_ops` includes `verify` when present; one algorithm per
 * key — its `alg`, or else the single configured algorithm its type implies (an RSA key without `alg`
 * only when exactly one RSA algorithm is configured); RSA modulus 2048–16384 bits, odd, with
 * 65537 ≤ e < 2^256 and e odd (NIST SP 800-56B); EC points on the curve (Node refuses them at import)
 * and the curve the algorithm's; Ed25519 points canonical, on the curve and not of small order.
 *
 * @example
 * const { alg, key } = inspectJwk(jwk, ['RS256']); // alg 'RS256', key a public KeyObject
 */
export function inspectJwk(jwk: unknown, algorithms: readonly PublicKeyAlg[]): UsableKey {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw unsafe('not a JSON object');
  const j = jwk as Record<string, unknown>;
  for (const m of PRIVATE_MEMBERS)
    if (j[m] !== undefined) throw unsafe(`contains private key material ("${m}")`);
  if (j.kid !== undefined && (typeof j.kid !== 'string' || j.kid === '' || j.kid.length > 256))
    throw unsafe('"kid" must be a non-empty string');
  if (j.use !== undefined && j.use !== 'sig') throw unused(`"use" is ${JSON.stringify(j.use)}, not "sig"`);
  if (j.key_ops !== undefined && !(Array.isArray(j.key_ops) && j.key_ops.includes('verify')))
    throw unused('"key_ops" does not include "verify"');
  const alg = algorithmFor(j, algorithms);
  const needs = NEEDS[alg];
  if (j.kty !== needs.kty) throw unsafe(`"kty" ${String(j.kty)} cannot be used with ${alg}`);
  if (needs.crv !== undefined && j.crv !== needs.crv)
    throw unsafe(`curve ${String(j.crv)} cannot be used with ${alg}`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: publicMembers(j), format: 'jwk' });
  } catch (err) {
    throw unsafe(`not a valid ${needs.kty} public key (${(err as Error).message})`);
  }
  if (key.type !== 'public') throw unsafe('not a public key');
  if (needs.kty === 'RSA') checkRsa(key, j.n);
  else if (needs.kty === 'EC' && key.asymmetricKeyDetails?.namedCurve !== needs.nodeCurve)
    throw unsafe(`curve does not match ${alg}`);
  else if (needs.kty === 'OKP') checkEd25519(key, j.x);
  return { kid: j.kid as string | undefined, alg, key };
}

/** The one algorithm a key is used with: its own `alg`, or the one its type implies among `algorithms`. */
function algorithmFor(j: Record<string, unknown>, algorithms: readonly PublicKeyAlg[]): PublicKeyAlg {
  if (j.alg !== undefined) {
    if (typeof j.alg !== 'string') throw unsafe('"alg" must be a string');
    if (!(algorithms as readonly string[]).includes(j.alg))
      throw unused(`"alg" ${j.alg} is not one of this issuer's algorithms`);
    return j.alg as PublicKeyAlg;
  }
  if (j.kty === 'RSA') {
    const rsa = algorithms.filter((a) => RSA_ALGS.includes(a));
    if (rsa.length === 1) return rsa[0] as PublicKeyAlg;
    throw unused(
      rsa.length === 0
        ? 'an RSA key, and no RSA algorithm is configured'
        : 'an RSA key without "alg" while both RS256 and PS256 are configured (ambiguous)',
    );
  }
  const implied = (Object.keys(NEEDS) as PublicKeyAlg[]).find(
    (a) => NEEDS[a].kty === j.kty && NEEDS[a].crv !== undefined && NEEDS[a].crv === j.crv,
  );
  if (implied === undefined) throw unused(`unsupported key type ${String(j.kty)}/${String(j.crv)}`);
  if (!algorithms.includes(implied)) throw unused(`the key type implies ${implied}, which is not configured`);
  return implied;
}

/** Only the members that define the public key (what Node imports; nothing else rides along). */
function publicMembers(j: Record<string, unknown>): import('node:crypto').JsonWebKey {
  const pick = (...names: string[]) =>
    Object.fromEntries(names.filter((n) => j[n] !== undefined).map((n) => [n, j[n]]));
  if (j.kty === 'RSA') return pick('kty', 'n', 'e');
  if (j.kty === 'EC') return pick('kty', 'crv', 'x', 'y');
  return pick('kty', 'crv', 'x');
}

function checkRsa(key: KeyObject, n: unknown): void {
  const details = key.asymmetricKeyDetails;
  const bits = details?.modulusLength ?? 0;
  const e = details?.publicExponent ?? 0n;
  if (bits < MIN_RSA_BITS) throw unsafe(`RSA modulus of ${bits} bits is below ${MIN_RSA_BITS}`);
  if (bits > MAX_RSA_BITS) throw unsafe(`RSA modulus of ${bits} bits is above ${MAX_RSA_BITS}`);
  if (e < 65_537n || e >= 1n << 256n || e % 2n === 0n)
    throw unsafe(`RSA public exponent ${e} is not an odd number in [65537, 2^256)`);
  const last = Buffer.from(String(n), 'base64url').at(-1) ?? 0;
  if (last % 2 === 0) throw unsafe('RSA modulus is even');
}

// Ed25519: p = 2^255 − 19, d = −121665/121666.
const P = (1n << 255n) - 19n;
const D = ((P - 121_665n) * modPow(121_666n, P - 2n)) % P;
/**
 * The y-coordinates (sign bit of x cleared) of the eight points of order dividing 8: 0 (two points
 * of order 4), 1 (the identity), p − 1 (order 2) and two y values of the four points of order 8. The
 * same list as libsodium's `ge25519_has_small_order` (its non-canonical spellings p and p + 1 are
 * refused here as non-canonical).
 */
const SMALL_ORDER_Y = new Set([
  0n,
  1n,
  P - 1n,
  0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826n,
  0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n,
]);

function checkEd25519(key: KeyObject, x: unknown): void {
  if (key.asymmetricKeyType !== 'ed25519') throw unsafe('not an Ed25519 key');
  const bytes = Buffer.from(String(x), 'base64url');
  if (bytes.length !== 32) throw unsafe('Ed25519 key is not 32 bytes');
  const sign = (bytes[31] as number) >> 7;
  const y = BigInt(`0x${Buffer.from(bytes).reverse().toString('hex')}`) & ((1n << 255n) - 1n);
  if (y >= P) throw unsafe('Ed25519 point is not canonically encoded');
  if (SMALL_ORDER_Y.has(y)) throw unsafe('Ed25519 point has small order');
  // x² = (y² − 1) / (d·y² + 1): on the curve iff that is a square mod p (Euler's criterion).
  const y2 = (y * y) % P;
  const x2 = (((y2 - 1n + P) % P) * modPow((D * y2 + 1n) % P, P - 2n)) % P;
  if (x2 !== 0n && modPow(x2, (P - 1n) / 2n) !== 1n) throw unsafe('Ed25519 point is not on the curve');
  if (x2 === 0n && sign === 1) throw unsafe('Ed25519 point is not canonically encoded');
}

function modPow(base: bigint, exp: bigint): bigint {
  let result = 1n;
  let b = ((base % P) + P) % P;
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return result;
}
