import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { WorkloadCa } from '../src/workload/index.js';

x509.cryptoProvider.set(webcrypto as never);
const subtle = webcrypto.subtle;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;

/** A fresh P-256 key pair, its CSR (PEM) and the private key as PKCS#8 PEM, for SVID and device tests. */
export async function keyAndCsr(): Promise<{
  keys: webcrypto.CryptoKeyPair;
  csr: string;
  keyPem: string;
}> {
  const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=w',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  const der = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey));
  return {
    keys,
    csr: csr.toString('pem'),
    keyPem: `-----BEGIN PRIVATE KEY-----\n${der.toString('base64')}\n-----END PRIVATE KEY-----\n`,
  };
}

/** An X.509-SVID for `id` from `ca`: the chain (leaf + intermediate) and the key, PEM. */
export async function svidFor(
  ca: WorkloadCa,
  id: string,
  ttlMs = 3_600_000,
): Promise<{ cert: string; key: string }> {
  const { csr, keyPem } = await keyAndCsr();
  const { chain } = await ca.issue(csr, id, ttlMs);
  return { cert: chain, key: keyPem };
}
