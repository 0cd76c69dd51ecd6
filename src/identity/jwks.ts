import { createPublicKey, type KeyObject } from 'node:crypto';
import type { JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import { type Clock, systemClock } from '../core/index.js';
import { discoverJwksUri, type FetchLimits, fetchJson } from './jwks-fetch.js';
import { inspectJwk, KeyRefused, PRIVATE_MEMBERS, type PublicKeyAlg, type UsableKey } from './key-hygiene.js';
import { TokenVerificationError } from './token-error.js';

const MIN_REFRESH_MS = 5 * 60_000;
const MAX_REFRESH_MS = 24 * 3_600_000;
const DEFAULT_REFRESH_MS = 3_600_000;
const MAX_KEYS = 100;

/** A key that a key set did not take, and why. */
export interface DroppedKey {
  index: number;
  kid: string | undefined;
  reason: KeyRefused;
}

/** A key set that published private key material: refused whole. `leaked` are its public halves. */
export class JwksRefused extends Error {
  readonly leaked: readonly KeyObject[];
  constructor(message: string, leaked: readonly KeyObject[]) {
    super(message);
    this.name = 'JwksRefused';
    this.leaked = leaked;
  }
}

const jwksDocument = z.looseObject({
  keys: z.array(z.looseObject({ kty: z.string() })).max(MAX_KEYS),
});

/**
 * Parses a JWKS document and runs {@link inspectJwk} on every key. Keys that fail are returned in
 * `dropped` (the caller decides: a startup error for a local file, a warning for a fetched set); a
 * set in which any key carries private members is refused whole ({@link JwksRefused}): its publisher
 * is leaking keys, and none of that set's keys should be trusted on its word.
 *
 * @example
 * const { keys, dropped } = parseJwks(JSON.parse(text), ['RS256']);
 */
export function parseJwks(
  doc: unknown,
  algorithms: readonly PublicKeyAlg[],
): { keys: UsableKey[]; dropped: DroppedKey[] } {
  const parsed = jwksDocument.safeParse(doc);
  if (!parsed.success) throw new Error(`not a JWKS (an object with up to ${MAX_KEYS} keys)`);
  const jwks = parsed.data.keys;
  const leaking = jwks.filter((k) => PRIVATE_MEMBERS.some((m) => k[m] !== undefined));
  if (leaking.length > 0) {
    const names = leaking.map((k) => (typeof k.kid === 'string' ? k.kid : `#${jwks.indexOf(k)}`));
    throw new JwksRefused(`the key set contains private key material (keys ${names.join(', ')})`, [
      ...leaking.flatMap((k) => publicHalf(k)),
    ]);
  }
  const keys: UsableKey[] = [];
  const dropped: DroppedKey[] = [];
  jwks.forEach((jwk, index) => {
    try {
      keys.push(inspectJwk(jwk, algorithms));
    } catch (err) {
      const reason = err instanceof KeyRefused ? err : new KeyRefused('unsafe', (err as Error).message);
      dropped.push({ index, kid: typeof jwk.kid === 'string' ? jwk.kid : undefined, reason });
    }
  });
  return { keys, dropped };
}

function publicHalf(jwk: Record<string, unknown>): KeyObject[] {
  const { kty, crv, x, y, n, e } = jwk;
  try {
    return [
      createPublicKey({ key: { kty, crv, x, y, n, e } as import('node:crypto').JsonWebKey, format: 'jwk' }),
    ];
  } catch {
    return [];
  }
}

/**
 * The key for a token header among `keys`: the token's algorithm (one algorithm per key) and, when the
 * token names a `kid`, that `kid`. More than one match (a token without `kid` and several keys for its
 * algorithm) is refused, never tried in turn. Returns `undefined` when none matches.
 */
export function selectKey(
  keys: readonly UsableKey[],
  header: { alg?: string | undefined; kid?: string | undefined },
): KeyObject | undefined {
  const matches = keys.filter(
    (k) => k.alg === header.alg && (header.kid === undefined || k.kid === header.kid),
  );
  if (matches.length > 1)
    throw new TokenVerificationError('unknown_key', 'more than one trusted key matches the token');
  return matches[0]?.key;
}

const noKey = () => new TokenVerificationError('unknown_key', 'no trusted key matches the token');

/** A jose key resolver over a fixed list of checked keys (a local JWKS file). */
export function localKeyResolver(keys: readonly UsableKey[]): JWTVerifyGetKey {
  return async (header) => {
    const key = selectKey(keys, header);
    if (!key) throw noKey();
    return key;
  };
}

/** Where a remote key set comes from, and how it is fetched and cached. */
export interface RemoteKeySetOptions {
  /** The issuer (`iss`) the keys belong to; a discovery document must name exactly this issuer. */
  issuer: string;
  algorithms: readonly PublicKeyAlg[];
  /** The key set's URL, or an OpenID discovery document's URL whose `jwks_uri` is used. */
  source: { jwksUrl: URL } | { discoveryUrl: URL };
  /** Allow http:// URLs (loopback tests and labs only). */
  allowInsecure?: boolean;
  /** Least time between two fetches triggered by unknown keys; default 30 s. */
  cooldownMs?: number;
  /** Per fetch (headers and body); default 5 s. */
  timeoutMs?: number;
  /** Largest document accepted; default 512 KiB. */
  maxBytes?: number;
  clock?: Clock;
  log?: { warn(obj: object, msg: string): void };
}

/**
 * An external issuer's key set fetched over https (directly or through OpenID discovery), checked key
 * by key ({@link inspectJwk}: weak, malformed or foreign keys are dropped with a warning; a set with no
 * usable key, or one leaking private keys, is a failed fetch), and kept in memory.
 *
 * - Refreshed in the background after `Cache-Control: max-age` bounded to [5 min, 24 h] (default 1 h).
 * - A token whose `kid` is unknown triggers at most one fetch per cooldown; concurrent callers share
 *   one in-flight fetch. A token naming a known `kid` with another algorithm triggers none.
 * - A failed fetch keeps the known keys; only tokens needing a key we do not have are refused.
 * - Only `kid` and `alg` of the token's header are read: `jku`, `x5u`, `x5c` and `jwk` are never
 *   followed (token hygiene refuses tokens that carry them).
 *
 * @example
 * const keys = new RemoteKeySet({ issuer, algorithms: ['RS256'], source: { discoveryUrl: discoveryUrlOf(issuer) } });
 * const claims = await verifyToken(token, keys.getKey, { issuer, audience, algorithms: ['RS256'] });
 * keys.stop();
 */
export class RemoteKeySet {
  readonly #o: RemoteKeySetOptions;
  readonly #limits: FetchLimits;
  readonly #clock: Clock;
  readonly #cooldownMs: number;
  #keys: readonly UsableKey[] = [];
  #loaded = false;
  #jwksUri: URL | undefined;
  #inFlight: Promise<void> | undefined;
  #lastAttempt = Number.NEGATIVE_INFINITY;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #users = 1;

  constructor(options: RemoteKeySetOptions) {
    this.#o = options;
    this.#limits = {
      timeoutMs: options.timeoutMs ?? 5000,
      maxBytes: options.maxBytes ?? 512 * 1024,
      allowInsecure: options.allowInsecure ?? false,
    };
    this.#clock = options.clock ?? systemClock;
    this.#cooldownMs = options.cooldownMs ?? 30_000;
    if ('jwksUrl' in options.source) this.#jwksUri = options.source.jwksUrl;
  }

  /** The jose key resolver (bound; pass it to `verifyToken`). */
  readonly getKey: JWTVerifyGetKey = async (header) => {
    const known = this.#match(header);
    if (known) return known;
    // A known kid asked for with another algorithm is not a rotation: no fetch for it.
    if (this.#loaded && header.kid !== undefined && this.#keys.some((k) => k.kid === header.kid))
      throw noKey();
    if (this.#inFlight) await this.#inFlight.catch(() => undefined);
    else if (this.#clock.now() - this.#lastAttempt >= this.#cooldownMs)
      await this.refresh().catch(() => undefined);
    const fresh = this.#match(header);
    if (fresh) return fresh;
    if (!this.#loaded)
      throw new TokenVerificationError('keys_unavailable', 'the key set could not be fetched');
    throw noKey();
  };

  /** Key ids currently trusted (for diagnostics and tests). */
  get kids(): (string | undefined)[] {
    return this.#keys.map((k) => k.kid);
  }

  /** Fetches the key set now (or joins the fetch in flight); rejects if it failed (known keys stay). */
  refresh(): Promise<void> {
    if (this.#inFlight) return this.#inFlight;
    this.#lastAttempt = this.#clock.now();
    const run = this.#load().finally(() => {
      this.#inFlight = undefined;
    });
    this.#inFlight = run;
    return run;
  }

  /** One more authenticator uses this key set (a reload that kept the issuer's config): see {@link release}. */
  retain(): this {
    this.#users += 1;
    return this;
  }

  /** One user fewer; the last one stops the background refresh. */
  release(): void {
    this.#users -= 1;
    if (this.#users <= 0) this.stop();
  }

  /** Stops background refreshes (the keys stay usable). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #match(header: { alg?: string | undefined; kid?: string | undefined }): KeyObject | undefined {
    return selectKey(this.#keys, header);
  }

  async #load(): Promise<void> {
    const where = { issuer: this.#o.issuer };
    try {
      if (!this.#jwksUri && 'discoveryUrl' in this.#o.source)
        this.#jwksUri = await discoverJwksUri(this.#o.source.discoveryUrl, this.#o.issuer, this.#limits);
      const url = this.#jwksUri as URL;
      const { body, maxAgeSec } = await fetchJson(url, this.#limits);
      const { keys, dropped } = parseJwks(body, this.#o.algorithms);
      for (const d of dropped)
        if (d.reason.kind === 'unsafe')
          this.#o.log?.warn(
            { ...where, jwks: url.href, kid: d.kid, index: d.index, reason: d.reason.message },
            'jwks: key dropped',
          );
      if (keys.length === 0)
        throw new Error(`${url.href}: no usable key for ${this.#o.algorithms.join(', ')}`);
      this.#keys = keys;
      this.#loaded = true;
      this.#failures = 0;
      const ms = maxAgeSec === undefined ? DEFAULT_REFRESH_MS : maxAgeSec * 1000;
      this.#schedule(Math.min(MAX_REFRESH_MS, Math.max(MIN_REFRESH_MS, ms)));
    } catch (err) {
      if (err instanceof JwksRefused)
        this.#keys = this.#keys.filter((k) => !err.leaked.some((l) => l.equals(k.key)));
      // The jwks_uri may have moved: the next attempt reads the discovery document again.
      if ('discoveryUrl' in this.#o.source) this.#jwksUri = undefined;
      this.#failures += 1;
      this.#o.log?.warn({ ...where, err: (err as Error).message }, 'jwks: fetch failed; known keys stay');
      this.#schedule(Math.min(DEFAULT_REFRESH_MS, 60_000 * 2 ** Math.min(this.#failures - 1, 6)));
      throw err;
    }
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.refresh().catch(() => undefined), ms);
    this.#timer.unref();
  }
}
