import { createHash, createPublicKey, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import type { VerifyingKey } from 'http-message-signatures';
import { parseDictionary } from 'structured-headers';
import type { Config } from '../config/index.js';
import { type Clock, PortcullisError, type Principal, ReplayCache, type UserId } from '../core/index.js';
import { readBodyBytes } from './body.js';
import type { RequestContext } from './context.js';

/** http-message-signatures (CommonJS), loaded synchronously with the first signer: most configs have none. */
let library: typeof import('http-message-signatures') | undefined;
const messageSignatures = () =>
  (library ??= createRequire(import.meta.url)(
    'http-message-signatures',
  ) as typeof import('http-message-signatures'));

/** The issuer id of principals authenticated by a message signature. */
export const SIGNATURE_ISSUER_ID = 'signature';
const REQUIRED_FIELDS = ['@method', '@target-uri', 'content-digest'];
const REQUIRED_PARAMS = ['created', 'keyid', 'nonce'];
const DIGESTS: Record<string, string> = { 'sha-256': 'sha256', 'sha-512': 'sha512' };
const MAX_NONCES = 100_000;
const MAX_PER_SIGNER = 25_000;

const refused = (detail: string) => new PortcullisError('invalid_signature', { detail });

interface Signer {
  readonly alg: 'hmac-sha256' | 'ed25519';
  readonly key: VerifyingKey;
  readonly roles: readonly string[];
}

/**
 * RFC 9421 HTTP Message Signatures for webhook routes, verified with the `http-message-signatures`
 * library (the signature base is its; the keys, the policy and the replay cache are ours). A request
 * carries exactly one signature, by a signer the route accepts (HMAC-SHA256 or Ed25519), covering at
 * least `@method`, `@target-uri` and `content-digest`, with `created` (no older than the route's
 * `maxAge`, not in the future), `keyid` and a `nonce` never seen before while the signature could be
 * accepted; the `Content-Digest` (RFC 9530, sha-256 or sha-512) must match the body, which is read
 * whole (within the route's limit) and forwarded as read.
 */
export class MessageSignatureVerifier {
  readonly #signers = new Map<string, Signer>();
  readonly #clock: Clock;
  /** Spent `keyid nonce`s, per signer; kept across reloads (pass the same cache to the next verifier). */
  readonly #nonces: ReplayCache;

  /** A nonce cache for {@link MessageSignatureVerifier}, to keep across reloads. */
  static nonceCache(): ReplayCache {
    return new ReplayCache(MAX_NONCES, MAX_PER_SIGNER);
  }

  constructor(
    signers: Config['messageSigners'],
    baseDir: string,
    clock: Clock,
    nonces: ReplayCache = MessageSignatureVerifier.nonceCache(),
  ) {
    this.#clock = clock;
    this.#nonces = nonces;
    for (const [id, s] of Object.entries(signers)) {
      const material =
        s.alg === 'hmac-sha256'
          ? Buffer.from(s.key, 'utf8')
          : createPublicKey(
              readFileSync(
                isAbsolute(s.publicKeyFile) ? s.publicKeyFile : resolve(baseDir, s.publicKeyFile),
                'utf8',
              ),
            );
      if (s.alg === 'ed25519' && (material as { asymmetricKeyType?: string }).asymmetricKeyType !== 'ed25519')
        throw new Error(`messageSigners.${id}: ${s.publicKeyFile} is not an Ed25519 public key`);
      this.#signers.set(id, {
        alg: s.alg,
        key: { id, algs: [s.alg], verify: messageSignatures().createVerifier(material as never, s.alg) },
        roles: s.roles,
      });
    }
  }

  async verify(ctx: RequestContext, accepted: ReadonlySet<string>, maxAgeMs: number): Promise<Principal> {
    const h = ctx.req.headers;
    const input = h['signature-input'];
    const signature = h.signature;
    if (typeof input !== 'string' || typeof signature !== 'string')
      throw new PortcullisError('unauthenticated', { detail: 'no HTTP message signature' });
    let parsed: ReturnType<typeof parseDictionary>;
    try {
      parsed = parseDictionary(input);
    } catch {
      throw refused('Signature-Input is not a structured dictionary');
    }
    if (parsed.size !== 1) throw refused('exactly one signature per request');
    // The whole Content-Digest field must be covered: `"content-digest";key="x"` covers one member only,
    // and the member we check could then be one nobody signed.
    const [members] = [...parsed.values()][0] as [unknown, unknown];
    const coversDigest =
      Array.isArray(members) &&
      members.some(
        (m: unknown) =>
          Array.isArray(m) &&
          m[0] === 'content-digest' &&
          (m[1] as Map<string, unknown> | undefined)?.size === 0,
      );
    if (!coversDigest) throw refused('the signature must cover the whole content-digest field');
    const target = ctx.target;
    if (!target)
      throw new PortcullisError('internal_error', { detail: 'signature check before canonicalize' });
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(h)) if (v !== undefined) headers[k] = v;
    let used: { keyid: string; nonce: string; created: number } | undefined;
    let ok: boolean | null;
    const now = this.#clock.now();
    try {
      ok = await messageSignatures().httpbis.verifyMessage(
        {
          keyLookup: async (params) => {
            const keyid = String(params.keyid ?? '');
            const signer = accepted.has(keyid) ? this.#signers.get(keyid) : undefined;
            if (!signer) return null;
            used = {
              keyid,
              nonce: String(params.nonce ?? ''),
              created: params.created instanceof Date ? params.created.getTime() : Number.NaN,
            };
            return signer.key;
          },
          requiredParams: REQUIRED_PARAMS,
          requiredFields: REQUIRED_FIELDS,
          maxAge: Math.floor(maxAgeMs / 1000),
          tolerance: 5,
          notAfter: Math.floor(now / 1000) + 5,
        },
        { method: ctx.method, url: `${ctx.scheme}://${ctx.authority}${target.path}${target.query}`, headers },
      );
    } catch (err) {
      throw refused(`signature refused: ${(err as Error).message}`);
    }
    if (ok !== true || !used) throw refused('the signature does not verify with an accepted key');
    const { keyid, nonce, created } = used;
    // The window on our own clock too (the library reads Date.now()).
    if (!Number.isFinite(created) || created > now + 5_000 || now - created > maxAgeMs)
      throw refused('the signature is too old or in the future');
    if (nonce.length < 8 || nonce.length > 128) throw refused('the nonce must be 8 to 128 characters');
    this.#remember(keyid, nonce, Math.max(created, now) + maxAgeMs + 5_000, now);
    await this.#checkDigest(ctx);
    const signer = this.#signers.get(keyid) as Signer;
    return {
      kind: 'service',
      id: `signer:${keyid}` as UserId,
      issuer: SIGNATURE_ISSUER_ID,
      sessionId: undefined,
      roles: signer.roles,
      amr: ['sig'],
      tokenId: nonce,
    };
  }

  /** The body's Content-Digest (covered by the signature) must match what was received. */
  async #checkDigest(ctx: RequestContext): Promise<void> {
    const header = ctx.req.headers['content-digest'];
    if (typeof header !== 'string') throw refused('no Content-Digest');
    let dict: ReturnType<typeof parseDictionary>;
    try {
      dict = parseDictionary(header);
    } catch {
      throw refused('Content-Digest is not a structured dictionary');
    }
    const route = ctx.route;
    const body = await readBodyBytes(ctx.req, route?.maxBodyBytes ?? 1_048_576);
    let checked = false;
    for (const [alg, [value]] of dict) {
      const hash = DIGESTS[alg];
      if (!hash) continue;
      if (!(value instanceof ArrayBuffer)) throw refused(`Content-Digest ${alg} is not a byte sequence`);
      const expected = createHash(hash).update(body).digest();
      const given = Buffer.from(value);
      if (given.length !== expected.length || !timingSafeEqual(given, expected))
        throw refused(`Content-Digest ${alg} does not match the body`);
      checked = true;
    }
    if (!checked) throw refused('Content-Digest has no sha-256 or sha-512');
    ctx.body = body;
  }

  /**
   * A nonce is accepted once per signer while its signature could be; each signer may hold at most
   * {@link MAX_PER_SIGNER} live nonces, so one sender cannot lock out the others.
   */
  #remember(keyid: string, nonce: string, until: number, now: number): void {
    const verdict = this.#nonces.use(`${keyid} ${nonce}`, keyid, until, now);
    if (verdict === 'replay') throw refused('nonce already used (a replay)');
    if (verdict !== 'fresh') throw refused('too many signed requests in flight');
  }
}
