import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';
import { writeSecretFile } from '../core/index.js';
import type { SecretBox } from '../identity/index.js';
import { parseSpiffeId } from './spiffe-id.js';
import { parseCertificates, pemBlocks } from './svid.js';
import { loadX509, x509 } from './x509.js';

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
 * A fresh ECDSA P-256 key and a PKCS#10 CSR signed by it (the CA only takes the CSR's key), with the
 * key as PKCS#8 PEM for TLS: what a workload, the agent and the workload API itself send for an SVID.
 */
export async function newKeyAndCsr(
  commonName: string,
): Promise<{ keys: CryptoKeyPair; csr: string; keyPem: string }> {
  await loadX509();
  const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${commonName}`,
    keys,
    signingAlgorithm: SIGN,
  });
  return { keys, csr: csr.toString('pem'), keyPem: await pkcs8Pem(keys.privateKey) };
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
  await loadX509();
  const td = parseSpiffeId(`spiffe://${options.trustDomain}`).trustDomain;
  const files = caFiles(options.dir);
  if (existsSync(files.rootCert)) throw new Error(`${files.rootCert} exists: the CA is already initialised`);
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  const root = await writeGeneration(files, td, options.passphrase, options.box, options.now ?? Date.now());
  writeSecretFile(files.bundle, root.toString('pem'));
  return files;
}

/** A root + intermediate pair written to `files` (root key encrypted with the passphrase, intermediate key sealed). */
async function writeGeneration(
  files: Omit<CaFiles, 'bundle'>,
  td: string,
  passphrase: string,
  box: SecretBox,
  now: number,
): Promise<X509.X509Certificate> {
  if (passphrase.length < 12) throw new Error('the root key passphrase must be at least 12 characters');
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
    passphrase,
  }) as string;
  writeSecretFile(files.rootKey, rootKeyPem);
  writeSecretFile(
    files.intermediateKey,
    `${box.seal(await pkcs8Pem(interKeys.privateKey), 'ca-intermediate-key')}\n`,
  );
  writeSecretFile(files.rootCert, root.toString('pem'));
  writeSecretFile(files.intermediateCert, intermediate.toString('pem'));
  return root;
}

/**
 * Rotation state (`ca/rotation.json`): which generation signs (`active`: `0` is the CA `ca init` made,
 * in the folder itself; later ones live in `ca/generations/<n>/`), the prepared next one and when it
 * starts signing, the retired roots kept in the bundle until what they signed has expired, and the
 * bundle's sequence number.
 */
interface RotationState {
  active: number;
  next?: { generation: number; activatesAt: number };
  retired: Array<{ generation: number; until: number }>;
  sequence: number;
}

const stateFile = (dir: string) => join(dir, 'rotation.json');

function readState(dir: string): RotationState {
  const f = stateFile(dir);
  if (!existsSync(f)) return { active: 0, retired: [], sequence: 1 };
  return JSON.parse(readFileSync(f, 'utf8')) as RotationState;
}

function generationFiles(dir: string, generation: number): Omit<CaFiles, 'bundle'> {
  const base = generation === 0 ? dir : join(dir, 'generations', String(generation));
  const f = caFiles(base);
  return {
    rootCert: f.rootCert,
    rootKey: f.rootKey,
    intermediateCert: f.intermediateCert,
    intermediateKey: f.intermediateKey,
  };
}

/** Every root the bundle publishes: the active one, the next one (ahead of its first signature), the retired ones still needed. */
function publishedRoots(dir: string, st: RotationState): X509.X509Certificate[] {
  const gens = [st.active, ...(st.next ? [st.next.generation] : []), ...st.retired.map((r) => r.generation)];
  return gens.flatMap((g) => parseCertificates(readFileSync(generationFiles(dir, g).rootCert, 'utf8')));
}

function writeState(dir: string, st: RotationState): void {
  writeSecretFile(
    join(dir, 'bundle.pem'),
    publishedRoots(dir, st)
      .map((r) => r.toString('pem'))
      .join('\n'),
  );
  writeSecretFile(stateFile(dir), `${JSON.stringify(st, null, 2)}\n`);
}

/**
 * CA rotation, step 1 (`portcullis ca rotate`): a new root + intermediate, published in the bundle now
 * and signing only from `activatesAt` — so every relying party has the new root well before the first
 * certificate it signed arrives. The new root key is encrypted with `passphrase` (move it offline too).
 */
export async function prepareCaRotation(options: {
  dir: string;
  passphrase: string;
  box: SecretBox;
  activateInMs: number;
  now?: number;
}): Promise<{ generation: number; activatesAt: Date; sequence: number }> {
  await loadX509();
  const now = options.now ?? Date.now();
  const st = readState(options.dir);
  if (st.next)
    throw new Error(
      `generation ${st.next.generation} is already prepared (activates ${new Date(st.next.activatesAt).toISOString()})`,
    );
  const current = await WorkloadCa.load(options.dir, options.box);
  const generation = Math.max(st.active, ...st.retired.map((r) => r.generation)) + 1;
  const files = generationFiles(options.dir, generation);
  mkdirSync(join(options.dir, 'generations', String(generation)), { recursive: true, mode: 0o700 });
  await writeGeneration(files, current.trustDomain, options.passphrase, options.box, now);
  const next: RotationState = {
    ...st,
    next: { generation, activatesAt: now + options.activateInMs },
    sequence: st.sequence + 1,
  };
  writeState(options.dir, next);
  return { generation, activatesAt: new Date(now + options.activateInMs), sequence: next.sequence };
}

/**
 * CA rotation, step 2 (run by the server every minute): a prepared generation whose time has come
 * starts signing; the one it replaces keeps its root in the bundle for `retainMs` (longer than anything
 * it signed lives); retired roots past that leave the bundle. Returns whether the bundle changed.
 */
export function maintainCa(
  dir: string,
  retainMs: number,
  now = Date.now(),
): { changed: boolean; promoted?: number } {
  if (!existsSync(join(dir, 'intermediate.crt'))) return { changed: false };
  const st = readState(dir);
  let changed = false;
  let promoted: number | undefined;
  if (st.next && st.next.activatesAt <= now) {
    // Never promote a generation that could not sign: all its files must be there.
    const f = generationFiles(dir, st.next.generation);
    const missing = Object.values(f).filter((p) => !existsSync(p));
    if (missing.length > 0)
      throw new Error(`CA generation ${st.next.generation} is incomplete: ${missing.join(', ')}`);
    st.retired.push({ generation: st.active, until: now + retainMs });
    st.active = st.next.generation;
    promoted = st.active;
    delete st.next;
    changed = true;
  }
  const kept = st.retired.filter((r) => r.until > now);
  if (kept.length !== st.retired.length) {
    st.retired = kept;
    changed = true;
  }
  if (changed) {
    st.sequence += 1;
    writeState(dir, st);
  }
  return promoted === undefined ? { changed } : { changed, promoted };
}

/**
 * The CA of a folder, loaded again whenever its rotation state changed (a generation was promoted or
 * prepared): undefined while there is no CA.
 */
export function caLoader(dir: string, box: SecretBox): () => Promise<WorkloadCa | undefined> {
  let cached: { key: string; ca: Promise<WorkloadCa> } | undefined;
  return () => {
    if (!existsSync(caFiles(dir).intermediateCert)) return Promise.resolve(undefined);
    const f = stateFile(dir);
    const key = existsSync(f) ? readFileSync(f, 'utf8') : '';
    if (!cached || cached.key !== key) {
      const ca = WorkloadCa.load(dir, box);
      // A failed load is not remembered: the next call tries again.
      ca.catch(() => {
        if (cached?.ca === ca) cached = undefined;
      });
      cached = { key, ca };
    }
    return cached.ca;
  };
}

/** What `portcullis ca status` shows. */
export function caStatus(dir: string): RotationState & { roots: string[] } {
  const st = readState(dir);
  return { ...st, roots: publishedRoots(dir, st).map((r) => r.serialNumber.toLowerCase()) };
}

/** The CA that signs: the intermediate certificate and key, and the bundle's roots. */
export class WorkloadCa {
  private constructor(
    readonly trustDomain: string,
    readonly intermediate: X509.X509Certificate,
    readonly roots: X509.X509Certificate[],
    private readonly key: CryptoKey,
    /** The bundle's sequence number (`spiffe_sequence`): it grows with every change of the roots. */
    readonly sequence = 1,
  ) {}

  static async load(dir: string, box: SecretBox): Promise<WorkloadCa> {
    await loadX509();
    if (!existsSync(caFiles(dir).intermediateCert))
      throw new Error(`no CA in ${dir}: run portcullis ca init`);
    const st = readState(dir);
    const files = generationFiles(dir, st.active);
    const intermediate = parseCertificates(
      readFileSync(files.intermediateCert, 'utf8'),
    )[0] as X509.X509Certificate;
    const roots = publishedRoots(dir, st);
    const pem = box.open(readFileSync(files.intermediateKey, 'utf8').trim(), 'ca-intermediate-key');
    const der = pemBlocks(pem)[0]?.der as ArrayBuffer;
    const key = await subtle.importKey('pkcs8', der, EC, false, ['sign']);
    const san = intermediate.getExtension(x509.SubjectAlternativeNameExtension);
    const td = parseSpiffeId(san?.names.items.find((n) => n.type === 'url')?.value ?? '').trustDomain;
    return new WorkloadCa(td, intermediate, roots, key, st.sequence);
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
