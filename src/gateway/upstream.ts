import 'reflect-metadata';
import { createPrivateKey, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { X509Certificate } from '@peculiar/x509';
import { Pool } from 'undici';
import type { UpstreamConfig } from '../config/index.js';
import type { SigningKey } from '../identity/index.js';
import { checkLeaf, parseSpiffeId } from '../workload/index.js';
import { type AssertionSigner, createAssertionSigner } from './assertion.js';

/** An upstream at run time: its keep-alive connection pool and what the assertion needs. */
export interface Upstream {
  readonly name: string;
  readonly audience: string;
  readonly passAuthorization: boolean;
  readonly timeoutMs: number;
  readonly pool: Pool;
  readonly assertion: AssertionSigner;
}

export interface AssertionSettings {
  issuer: string;
  ttlSec: number;
  key: SigningKey;
  /** Folder that relative mTLS file paths are resolved against. */
  baseDir?: string;
  /** Certificate serials refused (emergency revocation), lower-case hex. */
  deniedSerials?: ReadonlySet<string>;
}

/**
 * undici `connect` options for an mTLS upstream: the gateway's SVID as client certificate, the bundle as
 * the only trust anchors, and the server's identity checked by its SPIFFE ID, exactly.
 */
function mtlsConnect(m: NonNullable<UpstreamConfig['mtls']>, baseDir: string, denied?: ReadonlySet<string>) {
  const read = (f: string) => readFileSync(isAbsolute(f) ? f : resolve(baseDir, f), 'utf8');
  const expected = parseSpiffeId(m.spiffeId).toString();
  const cert = read(m.certFile);
  const key = read(m.keyFile);
  // An agent replaces key and certificate one after the other: never build a pool on a mismatched pair.
  if (!new NodeX509Certificate(cert).checkPrivateKey(createPrivateKey(key)))
    throw new Error(`upstream mTLS: ${m.keyFile} does not belong to the certificate in ${m.certFile}`);
  return {
    ca: read(m.bundleFile),
    cert,
    key,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      try {
        // The SPIFFE leaf rules (exactly one URI SAN, a valid ID, not a CA, digitalSignature) on the raw DER.
        const leaf = new X509Certificate(new Uint8Array(cert.raw));
        const id = checkLeaf(leaf);
        // Every certificate the server presented, intermediates too, against the denylist.
        const seen = new Set<unknown>();
        for (
          let c: PeerCertificate | undefined = cert;
          c && !seen.has(c);
          c = (c as { issuerCertificate?: PeerCertificate }).issuerCertificate
        ) {
          seen.add(c);
          if (denied?.has(c.serialNumber.toLowerCase().replace(/^0+(?=.)/, '')))
            return new Error(`upstream certificate ${c.serialNumber} is on the denylist`);
        }
        return id === expected ? undefined : new Error(`upstream is ${id}, expected ${expected}`);
      } catch (err) {
        return new Error(`upstream certificate is not an X.509-SVID: ${(err as Error).message}`);
      }
    },
  };
}

/** One undici keep-alive pool per upstream, created at load. */
export function createUpstreams(
  configs: Readonly<Record<string, UpstreamConfig>>,
  assertion: AssertionSettings,
): Map<string, Upstream> {
  const out = new Map<string, Upstream>();
  for (const [name, c] of Object.entries(configs)) {
    const origin = new URL(c.url).origin;
    out.set(name, {
      name,
      audience: c.audience ?? name,
      passAuthorization: c.passAuthorization,
      timeoutMs: c.timeout,
      assertion: createAssertionSigner(name, c, assertion.issuer, assertion.ttlSec, assertion.key),
      pool: new Pool(origin, {
        connections: c.connections,
        keepAliveTimeout: 30_000,
        headersTimeout: c.timeout,
        bodyTimeout: c.timeout,
        connectTimeout: Math.min(c.timeout, 10_000),
        ...(c.mtls
          ? { connect: mtlsConnect(c.mtls, assertion.baseDir ?? process.cwd(), assertion.deniedSerials) }
          : {}),
      }),
    });
  }
  return out;
}

export async function closeUpstreams(upstreams: Map<string, Upstream>): Promise<void> {
  await Promise.all([...upstreams.values()].map((u) => u.pool.close().catch(() => u.pool.destroy())));
}
