import { hash, type KeyObject } from 'node:crypto';
import { isAbsolute, resolve } from 'node:path';
import { decodeJwt, type JWTVerifyGetKey } from 'jose';
import { type ExternalIssuerConfig, OWN_ISSUER_ID } from '../config/index.js';
import { type Clock, PortcullisError, type Principal, ROLE_NAME, type UserId } from '../core/index.js';
import { loadJwksFile, loadPublicKeyFile } from './issuer-keys.js';
import { localKeyResolver, RemoteKeySet } from './jwks.js';
import { discoveryUrlOf } from './jwks-fetch.js';
import type { PublicKeyAlg } from './key-hygiene.js';
import { INVALID_TOKEN_CHALLENGE, type TokenService, type VerifiedBearer } from './tokens.js';
import { type TokenFailure, TokenVerificationError, verifyToken } from './verify-token.js';

/** Seconds of clock skew tolerated on `exp`/`nbf`, the same as the verifier's. */
const LEEWAY_SEC = 5;

interface ExternalIssuer {
  readonly id: string;
  readonly config: ExternalIssuerConfig;
  readonly keys: JWTVerifyGetKey | KeyObject;
  /** The algorithms tokens may use: the configured ones, or the one a PEM key is pinned to. */
  readonly algorithms: readonly PublicKeyAlg[];
  readonly remote: RemoteKeySet | undefined;
}

interface CacheEntry extends VerifiedBearer {}

export interface BearerAuthenticatorOptions {
  own: TokenService;
  ownIssuer: string;
  issuers: Readonly<Record<string, ExternalIssuerConfig>>;
  /** Folder that relative key file paths are resolved against (the config file's). */
  baseDir: string;
  clock: Clock;
  /** Entries in the verified-token cache; 0 disables it. */
  cacheSize: number;
  /** Told of every cache lookup (for metrics): a verified token, a miss, or a token refused before. */
  onLookup?: (result: 'hit' | 'miss' | 'refused') => void;
  /** Where dropped keys and failed key set fetches are reported. */
  log?: { warn(obj: object, msg: string): void };
  /**
   * The authenticator this one replaces (a reload): an external issuer whose config did not change keeps
   * its fetched key set, so a reload never forgets keys (nor depends on the IdP being reachable then).
   */
  previous?: BearerAuthenticator | undefined;
}

const invalid = (detail: string, cause?: unknown) =>
  new PortcullisError('invalid_token', { detail, cause, headers: INVALID_TOKEN_CHALLENGE });

/** How long a refused token is answered from memory, and how many are remembered at most. */
const REFUSED_TTL_MS = 60_000;
const MAX_REFUSED = 10_000;
/** Most groups an external token may carry (as many as a policy question may name). */
const MAX_GROUPS = 256;
/** Verification failures that the same token, keys and config would meet again. */
const LASTING_FAILURES: ReadonlySet<TokenFailure> = new Set([
  'malformed',
  'algorithm_not_allowed',
  'bad_signature',
  'expired',
  'claim_invalid',
]);
/** Refusals `#verify` makes itself, before any key is involved: the same on every try. */
const MALFORMED = 'malformed token';
const UNKNOWN_ISSUER = 'unknown token issuer';
const LASTING_DETAILS: ReadonlySet<string> = new Set([MALFORMED, UNKNOWN_ISSUER]);

/**
 * A validly signed token refused for the shape of its claims (roles, groups, cnf): its claims cannot
 * change, and this authenticator's config does not (a reload builds another), so the refusal is a
 * lasting `claim_invalid` failure like jose's claim checks.
 */
const claimShapeRefusal = (detail: string): PortcullisError =>
  invalid(detail, new TokenVerificationError('claim_invalid', detail));

/** Whether a refusal from `#verify` would be the same on the next try (see `#refused`). */
function isLastingRefusal(err: unknown): err is PortcullisError & { detail: string } {
  if (!(err instanceof PortcullisError) || err.code !== 'invalid_token' || err.detail === undefined)
    return false;
  if (LASTING_DETAILS.has(err.detail)) return true;
  return err.cause instanceof TokenVerificationError && LASTING_FAILURES.has(err.cause.failure);
}

/**
 * Authenticates bearer tokens for the gateway: our own access tokens and those of configured external
 * issuers, each verified by `jose` with that issuer's pinned algorithms, `iss` and `aud`.
 *
 * A token's signature is verified once; the verified claims are cached under the SHA-256 of the token
 * (so the cache holds no usable bearer token). On every request — cached or not — the token's
 * `exp`/`nbf` are checked against the clock and the route's accepted issuers are enforced; the caller
 * then checks our own tokens' sessions. The cache is bounded (oldest entries evicted first).
 *
 * @example
 * const auth = await BearerAuthenticator.create({ own: tokens, ownIssuer, issuers: config.issuers, baseDir, clock, cacheSize: 10_000 });
 * const principal = await auth.authenticate(token, new Set(['portcullis']));
 */
export class BearerAuthenticator {
  readonly #o: BearerAuthenticatorOptions;
  readonly #byIss: ReadonlyMap<string, ExternalIssuer>;
  readonly #cache = new Map<string, CacheEntry>();
  /**
   * Tokens refused for a reason that holds as long as the configuration does (bad signature, wrong
   * audience or issuer, expired, malformed, unknown issuer, validly signed claims of the wrong shape),
   * under the same SHA-256 key, for {@link REFUSED_TTL_MS}: a client retrying a bad token costs a map
   * lookup instead of a signature verification (the 401 path is also what an attacker can make us do at
   * will). Failures that can change — an unknown key id (the issuer's key set may be refreshed), keys
   * unavailable, a token not yet valid, an issuer not accepted on this route — are never remembered. A
   * reload builds a new authenticator, so a changed issuer config starts from an empty list.
   */
  readonly #refused = new Map<string, { detail: string; until: number }>();

  private constructor(options: BearerAuthenticatorOptions, byIss: Map<string, ExternalIssuer>) {
    this.#o = options;
    this.#byIss = byIss;
  }

  static async create(options: BearerAuthenticatorOptions): Promise<BearerAuthenticator> {
    const byIss = new Map<string, ExternalIssuer>();
    try {
      BearerAuthenticator.#addIssuers(options, byIss);
    } catch (err) {
      // A config that cannot be built gives back the key sets it took (kept ones stay the previous one's).
      for (const issuer of byIss.values()) issuer.remote?.release();
      throw err;
    }
    return new BearerAuthenticator(options, byIss);
  }

  static #addIssuers(options: BearerAuthenticatorOptions, byIss: Map<string, ExternalIssuer>): void {
    for (const [id, config] of Object.entries(options.issuers)) {
      if (config.issuer === options.ownIssuer || byIss.has(config.issuer)) {
        throw new Error(`issuers.${id}: issuer ${config.issuer} is configured twice`);
      }
      const path = (p: string) => (isAbsolute(p) ? p : resolve(options.baseDir, p));
      const { algorithms } = config;
      if (config.publicKeyFile !== undefined) {
        // A PEM key has no `alg`: it is pinned to the one configured algorithm its type implies.
        const k = loadPublicKeyFile(`issuers.${id}.publicKeyFile`, path(config.publicKeyFile), algorithms);
        byIss.set(config.issuer, { id, config, keys: k.key, algorithms: [k.alg], remote: undefined });
      } else if (config.jwksFile !== undefined) {
        const keys = loadJwksFile(`issuers.${id}.jwksFile`, path(config.jwksFile), algorithms);
        byIss.set(config.issuer, { id, config, keys: localKeyResolver(keys), algorithms, remote: undefined });
      } else {
        const source =
          config.jwksUrl !== undefined
            ? { jwksUrl: new URL(config.jwksUrl) }
            : {
                discoveryUrl:
                  config.discovery === true
                    ? discoveryUrlOf(config.issuer)
                    : new URL(String(config.discovery)),
              };
        const kept = options.previous ? options.previous.#keptKeySet(config) : undefined;
        const remote =
          kept?.retain() ??
          new RemoteKeySet({
            issuer: config.issuer,
            algorithms,
            source,
            allowInsecure: config.allowInsecure,
            cooldownMs: config.jwksCooldown,
            clock: options.clock,
            ...(options.log ? { log: options.log } : {}),
          });
        byIss.set(config.issuer, { id, config, keys: remote.getKey, algorithms, remote });
      }
    }
  }

  /** Releases fetched key sets (their refresh stops once no authenticator uses them). */
  close(): void {
    for (const issuer of this.#byIss.values()) issuer.remote?.release();
  }

  /** This authenticator's key set for an issuer configured exactly like `config`, if any. */
  #keptKeySet(config: ExternalIssuerConfig): RemoteKeySet | undefined {
    const mine = this.#byIss.get(config.issuer);
    if (!mine?.remote) return undefined;
    return JSON.stringify(mine.config) === JSON.stringify(config) ? mine.remote : undefined;
  }

  /**
   * The hot path's synchronous half of {@link authenticate}: the principal of a token whose signature
   * was already verified (a valid cache entry) by an external issuer, checked against `accepted` (throws
   * `invalid_token`, as it does for a token refused lately); undefined when the token must be verified
   * or is our own (call `authenticate`).
   */
  cached(token: string, accepted: ReadonlySet<string>): Principal | undefined {
    if (this.#o.cacheSize <= 0) return undefined;
    const key = hash('sha256', token, 'base64');
    const hit = this.#cache.get(key);
    const now = this.#o.clock.now();
    const nowSec = now / 1000;
    if (!hit || nowSec >= hit.expiresAt + LEEWAY_SEC || nowSec < hit.notBefore - LEEWAY_SEC) {
      // A token refused lately is refused here too (one hash, no promise: the 401 path is cheap).
      this.#throwIfRefused(key, now);
      return undefined;
    }
    // Our own tokens go through `authenticate` and then the session check (a store read).
    if (hit.principal.issuer === OWN_ISSUER_ID) return undefined;
    this.#o.onLookup?.('hit');
    if (!accepted.has(hit.principal.issuer)) throw invalid('token issuer is not accepted on this route');
    return hit.principal;
  }

  /** Verifies `token` and returns its principal if its issuer is one of `accepted`; throws `invalid_token`. */
  async authenticate(token: string, accepted: ReadonlySet<string>): Promise<Principal> {
    const now = this.#o.clock.now();
    const nowSec = now / 1000;
    const cacheKey = this.#o.cacheSize > 0 ? hash('sha256', token, 'base64') : '';
    const hit = this.#o.cacheSize > 0 ? this.#cache.get(cacheKey) : undefined;
    let verified: VerifiedBearer;
    if (hit && nowSec < hit.expiresAt + LEEWAY_SEC && nowSec >= hit.notBefore - LEEWAY_SEC) {
      verified = hit;
      this.#o.onLookup?.('hit');
    } else {
      if (this.#o.cacheSize > 0) this.#throwIfRefused(cacheKey, now);
      this.#o.onLookup?.('miss');
      if (hit) this.#cache.delete(cacheKey);
      try {
        verified = await this.#verify(token, accepted);
      } catch (err) {
        if (this.#o.cacheSize > 0 && isLastingRefusal(err)) this.#refuse(cacheKey, err.detail, now);
        throw err;
      }
      if (this.#o.cacheSize > 0) this.#remember(cacheKey, verified);
    }
    if (!accepted.has(verified.principal.issuer)) throw invalid('token issuer is not accepted on this route');
    return verified.principal;
  }

  /** Drops every cached verification (e.g. after a key rotation or an issuer change). */
  clear(): void {
    this.#cache.clear();
  }

  get cacheEntries(): number {
    return this.#cache.size;
  }

  async #verify(token: string, accepted: ReadonlySet<string>): Promise<VerifiedBearer> {
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch (err) {
      throw invalid(MALFORMED, err);
    }
    if (iss === this.#o.ownIssuer) {
      if (!accepted.has(OWN_ISSUER_ID)) throw invalid('token issuer is not accepted on this route');
      return this.#o.own.verifyAccessTokenClaims(token);
    }
    const external = typeof iss === 'string' ? this.#byIss.get(iss) : undefined;
    if (!external) throw invalid(UNKNOWN_ISSUER);
    if (!accepted.has(external.id)) throw invalid('token issuer is not accepted on this route');
    return this.#verifyExternal(token, external);
  }

  async #verifyExternal(token: string, external: ExternalIssuer): Promise<VerifiedBearer> {
    const { config } = external;
    let claims: Awaited<ReturnType<typeof verifyToken>>;
    try {
      claims = await verifyToken(token, external.keys, {
        issuer: config.issuer,
        audience: config.audience,
        algorithms: external.algorithms,
        requiredClaims: ['sub'],
        clockToleranceSec: LEEWAY_SEC,
        currentDate: new Date(this.#o.clock.now()),
      });
    } catch (err) {
      throw invalid(err instanceof TokenVerificationError ? err.message : 'token is invalid', err);
    }
    const { sub, jti, exp, nbf, amr, auth_time, acr, cnf } = claims;
    // A token its issuer bound to a key (RFC 9449 cnf.jkt) is only good with a proof by that key.
    const jkt = (cnf as { jkt?: unknown } | undefined)?.jkt;
    if (cnf !== undefined && (typeof cnf !== 'object' || cnf === null || typeof jkt !== 'string'))
      throw claimShapeRefusal('cnf must be an object with a jkt');
    const rawRoles = claims[config.rolesClaim];
    const roles = typeof rawRoles === 'string' ? rawRoles.split(' ').filter((r) => r !== '') : rawRoles;
    if (typeof sub !== 'string' || sub === '' || !isStringArray(roles))
      throw claimShapeRefusal('claims have the wrong types');
    // Roles from another issuer that are not plain names (commas, spaces, control characters) are
    // dropped: they could not be told apart once copied into a header.
    const plainRoles = roles.filter((r) => ROLE_NAME.test(r));
    // Groups decide rules (a deny rule naming a group too): a claim of another shape refuses the token
    // rather than read as "no groups". Names stay as the issuer wrote them (`/eng/backend`, `Domain
    // Admins`): they are read by policy only, never copied into a header.
    const rawGroups = claims[config.groupsClaim];
    const groups = typeof rawGroups === 'string' ? [rawGroups] : rawGroups;
    if (groups !== undefined && !(isStringArray(groups) && groups.length <= MAX_GROUPS))
      throw claimShapeRefusal(
        `${config.groupsClaim} must be a string or an array of at most ${MAX_GROUPS} strings`,
      );
    let attributes: Record<string, unknown> | undefined;
    for (const name of config.claims) {
      if (!Object.hasOwn(claims, name)) continue;
      attributes ??= {};
      attributes[name] = claims[name];
    }
    return {
      principal: {
        kind: 'user',
        id: sub as UserId,
        issuer: external.id,
        sessionId: undefined,
        roles: plainRoles,
        ...(groups !== undefined && groups.length > 0 ? { groups } : {}),
        ...(attributes ? { attributes } : {}),
        amr: isStringArray(amr) ? amr : [],
        tokenId: typeof jti === 'string' ? jti : '',
        ...(typeof auth_time === 'number' && Number.isFinite(auth_time)
          ? { authTime: auth_time * 1000 }
          : {}),
        ...(typeof acr === 'string' ? { acr } : {}),
        ...(typeof jkt === 'string' ? { confirmationJkt: jkt } : {}),
      },
      expiresAt: exp ?? 0,
      notBefore: nbf ?? 0,
    };
  }

  /** Throws the remembered refusal of the token under `key`, while it is remembered. */
  #throwIfRefused(key: string, now: number): void {
    const refused = this.#refused.get(key);
    if (refused === undefined || now >= refused.until) return;
    this.#o.onLookup?.('refused');
    throw invalid(refused.detail);
  }

  #refuse(key: string, detail: string, now: number): void {
    if (this.#refused.size >= Math.min(this.#o.cacheSize, MAX_REFUSED)) {
      const oldest = this.#refused.keys().next();
      if (!oldest.done) this.#refused.delete(oldest.value);
    }
    this.#refused.set(key, { detail, until: now + REFUSED_TTL_MS });
  }

  #remember(key: string, entry: VerifiedBearer): void {
    if (this.#cache.size >= this.#o.cacheSize) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
    this.#cache.set(key, entry);
  }
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}
