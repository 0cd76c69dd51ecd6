import { createPublicKey, hash } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type * as X509 from '@peculiar/x509';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { type Clock, PortcullisError, type Principal, type UserId } from '../core/index.js';
import { parseCertificates, SvidError, verifySvid } from './svid.js';
import { loadX509 } from './x509.js';

/** The issuer id routes list (`routes[].issuers: [spiffe]`) to accept workloads' X.509-SVIDs. */
export const SPIFFE_ISSUER_ID = 'spiffe';
const CACHE_MAX = 10_000;
/** How long a refused client certificate is refused from memory (validity can change with time). */
const REFUSED_TTL_MS = 60_000;

/**
 * Authenticates a workload by the X.509-SVID it presented as TLS client certificate, with the same
 * `verifySvid` as `portcullis svid verify`: chain to the trust bundle, SPIFFE leaf rules, trust domain,
 * validity now. The result is cached per leaf certificate until it expires, so a keep-alive connection
 * pays once. The principal is a `service` named by its SPIFFE ID, for microsegmentation rules.
 */
export class SpiffePeerAuthenticator {
  readonly #roots: X509.X509Certificate[];
  readonly #trustDomain: string | undefined;
  readonly #clock: Clock;
  readonly #cache = new Map<string, VerifiedPeer>();
  /** Certificates refused lately (by leaf hash), bounded; a reload (new bundle or denylist) starts empty. */
  readonly #refused = new Map<string, { error: PortcullisError; until: number }>();
  /** Per connection: its certificate does not change, so a keep-alive connection is checked once. */
  readonly #bySocket = new WeakMap<object, VerifiedPeer | PortcullisError | null>();

  readonly #denied: ReadonlySet<string> | undefined;

  constructor(
    bundlePem: string,
    trustDomain: string | undefined,
    clock: Clock,
    deniedSerials?: ReadonlySet<string>,
  ) {
    this.#roots = parseCertificates(bundlePem);
    if (this.#roots.length === 0) throw new Error('the client CA bundle holds no certificate');
    this.#trustDomain = trustDomain;
    this.#clock = clock;
    this.#denied = deniedSerials;
  }

  /**
   * The verified SPIFFE ID (and serial) of the certificate this TLS connection presented, or undefined
   * when it presented none; a certificate that fails the SPIFFE rules is a 401. Cached per certificate
   * until it expires, so a keep-alive connection pays once.
   */
  async peer(socket: TLSSocket): Promise<VerifiedPeer | undefined> {
    if (typeof socket.getPeerCertificate !== 'function') return undefined;
    const known = this.#bySocket.get(socket);
    if (known === null) return undefined;
    if (known instanceof PortcullisError) throw known;
    if (known && this.#clock.now() <= known.notAfter) return known;
    try {
      const p = await this.#verifyPeer(socket);
      this.#bySocket.set(socket, p ?? null);
      return p;
    } catch (err) {
      if (err instanceof PortcullisError) this.#bySocket.set(socket, err);
      throw err;
    }
  }

  async #verifyPeer(socket: TLSSocket): Promise<VerifiedPeer | undefined> {
    // The leaf alone for the cache key; the whole chain as objects only when it must be verified. (Not
    // getPeerX509Certificate(): seen on Node 20, getPeerCertificate(true) then gave the leaf without its
    // chain, and every certificate from an intermediate was refused.)
    const leafDer = socket.getPeerCertificate(false)?.raw;
    if (!leafDer) return undefined;
    const key = hash('sha256', leafDer, 'base64');
    const now = this.#clock.now();
    const hit = this.#cache.get(key);
    if (hit && now <= hit.notAfter) return hit;
    // A certificate refused a moment ago is refused again without the (milliseconds of) ASN.1 and
    // signature work: anyone can open connections with a bad certificate at will.
    const refused = this.#refused.get(key);
    if (refused && now < refused.until) throw refused.error;
    try {
      return await this.#verifyChain(socket, key, now);
    } catch (err) {
      if (err instanceof PortcullisError) {
        if (this.#refused.size >= CACHE_MAX)
          this.#refused.delete(this.#refused.keys().next().value as string);
        this.#refused.set(key, { error: err, until: now + REFUSED_TTL_MS });
      }
      throw err;
    }
  }

  async #verifyChain(socket: TLSSocket, key: string, now: number): Promise<VerifiedPeer | undefined> {
    const peer = socket.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: unknown } | undefined;
    if (!peer?.raw) return undefined;
    const { X509Certificate } = await loadX509();
    const chain: X509.X509Certificate[] = [];
    const seen = new Set<unknown>();
    for (
      let c: typeof peer | undefined = peer;
      c?.raw && !seen.has(c);
      c = c.issuerCertificate as typeof peer
    ) {
      seen.add(c);
      chain.push(new X509Certificate(new Uint8Array(c.raw)));
    }
    let spiffeId: string;
    let notAfter: Date;
    try {
      ({ spiffeId, notAfter } = await verifySvid(chain, this.#roots, {
        at: new Date(now),
        ...(this.#trustDomain ? { trustDomain: this.#trustDomain } : {}),
        ...(this.#denied ? { deniedSerials: this.#denied } : {}),
      }));
    } catch (err) {
      throw new PortcullisError('unauthenticated', {
        detail: `client certificate refused: ${err instanceof SvidError ? `${err.code}: ${err.message}` : 'invalid'}`,
      });
    }
    const principal: Principal = {
      kind: 'service',
      id: spiffeId as UserId,
      issuer: SPIFFE_ISSUER_ID,
      sessionId: undefined,
      roles: [],
      amr: ['mtls'],
      tokenId: '',
      spiffeId,
    };
    const leaf = chain[0] as X509.X509Certificate;
    const spki = createPublicKey({ key: Buffer.from(leaf.publicKey.rawData), format: 'der', type: 'spki' });
    const verified = {
      spiffeId,
      serial: leaf.serialNumber.toLowerCase(),
      jkt: await calculateJwkThumbprint(spki.export({ format: 'jwk' }) as JWK, 'sha256'),
      notAfter: notAfter.getTime(),
      principal,
    };
    if (this.#cache.size >= CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value as string);
    this.#cache.set(key, verified);
    return verified;
  }

  /**
   * The workload behind this TLS connection, or undefined when it presented no certificate — or a
   * device certificate (`…/device/<id>`): a device proves which device a user is on, it is never a
   * service principal of its own.
   */
  async authenticate(socket: TLSSocket): Promise<Principal | undefined> {
    const p = await this.peer(socket);
    if (!p || isDeviceId(p.spiffeId)) return undefined;
    return p.principal;
  }
}

/** A device certificate's SPIFFE ID: `spiffe://<td>/device/<id>`. */
export function isDeviceId(spiffeId: string): boolean {
  const slash = spiffeId.indexOf('/', 'spiffe://'.length);
  return slash !== -1 && spiffeId.startsWith('/device/', slash);
}

/**
 * The workload API's own identity (`…/portcullis/workload-api`), which agents trust as the API: the CA
 * issues it to the API itself only — never through a join token or `svid issue`.
 */
export function isReservedId(spiffeId: string): boolean {
  const slash = spiffeId.indexOf('/', 'spiffe://'.length);
  return slash !== -1 && spiffeId.slice(slash) === '/portcullis/workload-api';
}

export interface VerifiedPeer {
  readonly spiffeId: string;
  /** The leaf certificate's serial, lower-case hex. */
  readonly serial: string;
  /** RFC 7638 thumbprint of the leaf's public key (a device is matched by its key, not only its serial). */
  readonly jkt: string;
  /** ms */
  readonly notAfter: number;
  readonly principal: Principal;
}
