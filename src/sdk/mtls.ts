import type { PeerCertificate, TLSSocket } from 'node:tls';
import { checkLeaf } from '../workload/svid.js';
import { x509 } from '../workload/x509.js';
// The SDK's checks are synchronous (TLS callbacks): the library loads with this module (the gateway
// never imports it).
import '../workload/x509-eager.js';
import type { AgentSvid } from './agent-client.js';

/** Which SPIFFE IDs a peer may have: one exactly, a list, or a predicate. */
export type SpiffeIdMatcher = string | readonly string[] | ((id: string) => boolean);

const allows = (m: SpiffeIdMatcher, id: string) =>
  typeof m === 'string' ? m === id : typeof m === 'function' ? m(id) : m.includes(id);

/** The SPIFFE ID of a certificate as Node hands it over (the SPIFFE leaf rules on the raw DER), or an error. */
function idOf(cert: PeerCertificate): string {
  return checkLeaf(new x509.X509Certificate(new Uint8Array(cert.raw)));
}

/**
 * TLS options for calling another service over mTLS with this workload's SVID (from `fetchX509Svid`):
 * our certificate and key, the trust bundle as the only CAs, and the server checked by its SPIFFE ID —
 * never by host name, never the first of several URI SANs. For `https.request`, `tls.connect` or
 * undici's `connect`.
 *
 * @example
 * const svid = await fetchX509Svid('/run/portcullis/agent.sock');
 * https.request('https://billing:8443/charges', { ...mtlsClientOptions(svid, 'spiffe://prod/ns/billing/sa/api') })
 */
export function mtlsClientOptions(svid: AgentSvid, server: SpiffeIdMatcher) {
  return {
    cert: svid.svid,
    key: svid.key,
    ca: svid.bundle,
    minVersion: 'TLSv1.2' as const,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      try {
        const id = idOf(cert);
        return allows(server, id) ? undefined : new Error(`server is ${id}, which is not allowed`);
      } catch (err) {
        return new Error(`server certificate is not an X.509-SVID: ${(err as Error).message}`);
      }
    },
  };
}

/**
 * TLS options for serving over mTLS with this workload's SVID: clients must present a certificate that
 * chains to the bundle (checked by OpenSSL); check who they are per request with {@link peerSpiffeId}.
 */
export function mtlsServerOptions(svid: AgentSvid) {
  return {
    cert: svid.svid,
    key: svid.key,
    ca: svid.bundle,
    minVersion: 'TLSv1.2' as const,
    requestCert: true,
    rejectUnauthorized: true,
  };
}

/**
 * The calling workload's SPIFFE ID on a server socket set up with {@link mtlsServerOptions}, when it is
 * one of `allowed`; undefined otherwise (answer 403).
 */
export function peerSpiffeId(socket: TLSSocket, allowed: SpiffeIdMatcher): string | undefined {
  if (!socket.authorized) return undefined;
  try {
    const id = idOf(socket.getPeerCertificate());
    return allows(allowed, id) ? id : undefined;
  } catch {
    return undefined;
  }
}
