// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { writeSecretFile } from '../core/index.js';
import type { SecretBox } from '../identity/index.js';
import { parseSpiffeId } from './spiffe-id.js';
import { parseCertificates, pemBlocks } from './svid.js';

x509.cryptoProvider.set(webcrypto as never);

const subtle = webcrypto.subtle;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
/** Backdating of NotBefore, for clocks a little behind ours. */
const BACKDATE_MS = 30_000;

/** What `ca init` writes: the root (its key encrypted with a passphrase, to be taken offline) and the intermediate that signs. */
export interface CaFiles {
  rootCert: string;
  /** PKCS#8 PEM encrypted with the passphrase (AES-256-CBC, scrypt-free PBES2 from OpenSSL). */
  rootKey: string;
  intermediateCert: string;
  /** The intermediate's key sealed with the data key (AES-256-GCM). */
  intermediateKey: string;
  /** The trust bundle: the root, PEM. */
  bundle: string;
}

export function caFiles(dir: string): CaFiles {
  return {
    rootCert: join(dir, 'root.crt'),
    rootKey: join(dir, 'root.key.pem'),
    intermediateCert: join(dir, 'intermediate.crt'),
    intermediateKey: join(dir, 'intermediate.key.sealed'),
    bundle: join(dir, 'bundle.pem'),
  };
}

const serial = () => {
  const b = randomBytes(16);
  b[0] = (b[0] as number) & 0x7f; // positive
  return b.toString('hex');
};

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await subtle.exportKey('pkcs8', key));
  return x509.PemConverter.encode(
    der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength) as ArrayBuffer,
    'PRIVATE KEY',
  );
}

/**
 * Creates the internal CA for a trust domain: a root (ECDSA P-256, cA, path length 1, 10 years) whose key
 * is written encrypted with `passphrase` — so it can be moved offline — and an intermediate (path length
 * 0, 1 year) that signs X.509-SVIDs, its key sealed with the data key. Refuses to overwrite.
 */
export async function initCa(options: {
  dir: string;
  trustDomain: string;
  passphrase: string;
  box: SecretBox;
  now?: number;
}): Promise<CaFiles> {
  const td = parseSpiffeId(`spiffe://${options.trustDomain}`).trustDomain;
  if (options.passphrase.length < 12)
    throw new Error('the root key passphrase must be at least 12 characters');
  const files = caFiles(options.dir);
  if (existsSync(files.rootCert)) throw new Error(`${files.rootCert} exists: the CA is already initialised`);
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const now = options.now ?? Date.now();
  const rootKeys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=Portcullis root CA, O=${td}`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + 3650 * DAY),
    keys: rootKeys,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${td}` }]),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const interKeys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const intermediate = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=Portcullis intermediate CA, O=${td}`,
    issuer: root.subject,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + 365 * DAY),
    publicKey: interKeys.publicKey,
    signingKey: rootKeys.privateKey,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${td}` }]),
      await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });
  const rootKeyPem = createPrivateKey({ key: await pkcs8Pem(rootKeys.privateKey), format: 'pem' }).export({
    type: 'pkcs8',
    format: 'pem',
    cipher: 'aes-256-cbc',
    passphrase: options.passphrase,
  }) as string;
  writeSecretFile(files.rootKey, rootKeyPem);
  writeSecretFile(
    files.intermediateKey,
    `${options.box.seal(await pkcs8Pem(interKeys.privateKey), 'ca-intermediate-key')}\n`,
  );
  writeSecretFile(files.rootCert, root.toString('pem'));
  writeSecretFile(files.intermediateCert, intermediate.toString('pem'));
  writeSecretFile(files.bundle, root.toString('pem'));
  return files;
}

/** The CA that signs: the intermediate certificate and key, and the bundle's roots. */
export class WorkloadCa {
  private constructor(
    readonly trustDomain: string,
    readonly intermediate: x509.X509Certificate,
    readonly roots: x509.X509Certificate[],
    private readonly key: CryptoKey,
  ) {}

  static async load(dir: string, box: SecretBox): Promise<WorkloadCa> {
    const files = caFiles(dir);
    if (!existsSync(files.intermediateCert)) throw new Error(`no CA in ${dir}: run portcullis ca init`);
    const intermediate = parseCertificates(
      readFileSync(files.intermediateCert, 'utf8'),
    )[0] as x509.X509Certificate;
    const roots = parseCertificates(readFileSync(files.bundle, 'utf8'));
    const pem = box.open(readFileSync(files.intermediateKey, 'utf8').trim(), 'ca-intermediate-key');
    const der = pemBlocks(pem)[0]?.der as ArrayBuffer;
    const key = await subtle.importKey('pkcs8', der, EC, false, ['sign']);
    const san = intermediate.getExtension(x509.SubjectAlternativeNameExtension);
    const td = parseSpiffeId(san?.names.items.find((n) => n.type === 'url')?.value ?? '').trustDomain;
    return new WorkloadCa(td, intermediate, roots, key);
  }

  /**
   * An X.509-SVID for `spiffeId` from a PKCS#10 CSR: the CSR's signature is checked and only its public
   * key is used — the subject and SAN are the CA's decision (exactly one URI SAN, the SPIFFE ID), never
   * copied from the CSR. `cA` false; key usage digitalSignature (critical); EKU serverAuth + clientAuth;
   * NotBefore backdated 30 s; NotAfter at most `ttlMs` ahead and never after the intermediate's.
   */
  async issue(
    csrPem: string,
    spiffeId: string,
    ttlMs: number,
    now = Date.now(),
  ): Promise<{ certificate: string; chain: string; notAfter: Date }> {
    const id = parseSpiffeId(spiffeId);
    if (id.trustDomain !== this.trustDomain)
      throw new Error(`${spiffeId} is not in this CA's trust domain (${this.trustDomain})`);
    if (id.path === '') throw new Error('an X.509-SVID needs a SPIFFE ID with a path');
    const block = pemBlocks(csrPem).find((b) => b.label === 'CERTIFICATE REQUEST');
    if (!block) throw new Error('not a PEM certificate request (CSR)');
    const csr = new x509.Pkcs10CertificateRequest(block.der);
    if (!(await csr.verify())) throw new Error('the CSR signature does not verify');
    const notAfter = new Date(Math.min(now + ttlMs, this.intermediate.notAfter.getTime()));
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `O=SPIFFE`,
      issuer: this.intermediate.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter,
      publicKey: csr.publicKey,
      signingKey: this.key,
      signingAlgorithm: SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.toString() }], true),
        await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.intermediate.publicKey),
      ],
    });
    const certificate = leaf.toString('pem');
    return { certificate, chain: `${certificate}\n${this.intermediate.toString('pem')}\n`, notAfter };
  }
}
