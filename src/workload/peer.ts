import { createHash } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type * as x509 from '@peculiar/x509';
import { type Clock, PortcullisError, type Principal, type UserId } from '../core/index.js';
import { parseCertificates, SvidError, verifySvid } from './svid.js';

/** The issuer id routes list (`routes[].issuers: [spiffe]`) to accept workloads' X.509-SVIDs. */
export const SPIFFE_ISSUER_ID = 'spiffe';
const CACHE_MAX = 10_000;

/**
 * Authenticates a workload by the X.509-SVID it presented as TLS client certificate, with the same
 * `verifySvid` as `portcullis svid verify`: chain to the trust bundle, SPIFFE leaf rules, trust domain,
 * validity now. The result is cached per leaf certificate until it expires, so a keep-alive connection
 * pays once. The principal is a `service` named by its SPIFFE ID, for microsegmentation rules.
 */
export class SpiffePeerAuthenticator {
  readonly #roots: x509.X509Certificate[];
  readonly #trustDomain: string | undefined;
  readonly #clock: Clock;
  readonly #cache = new Map<string, { principal: Principal; notAfter: number }>();

  constructor(bundlePem: string, trustDomain: string | undefined, clock: Clock) {
    this.#roots = parseCertificates(bundlePem);
    if (this.#roots.length === 0) throw new Error('the client CA bundle holds no certificate');
    this.#trustDomain = trustDomain;
    this.#clock = clock;
  }

  /** The workload behind this TLS connection, or undefined when it presented no certificate. */
  async authenticate(socket: TLSSocket): Promise<Principal | undefined> {
    if (typeof socket.getPeerCertificate !== 'function') return undefined;
    const peer = socket.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: unknown } | undefined;
    if (!peer?.raw) return undefined;
    const key = createHash('sha256').update(peer.raw).digest('base64');
    const now = this.#clock.now();
    const hit = this.#cache.get(key);
    if (hit && now <= hit.notAfter) return hit.principal;
    const { X509Certificate } = await import('@peculiar/x509');
    const chain: x509.X509Certificate[] = [];
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
    if (this.#cache.size >= CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value as string);
    this.#cache.set(key, { principal, notAfter: notAfter.getTime() });
    return principal;
  }
}
