// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { parseSpiffeId } from './spiffe-id.js';

x509.cryptoProvider.set(webcrypto as never);

/** Why an X.509-SVID is refused (a stable code, and the sentence that names the rule). */
export class SvidError extends Error {
  constructor(
    readonly code:
      | 'parse'
      | 'no_spiffe_id'
      | 'several_uri_sans'
      | 'bad_spiffe_id'
      | 'leaf_is_ca'
      | 'leaf_key_usage'
      | 'signer_not_ca'
      | 'signer_key_usage'
      | 'untrusted'
      | 'bad_signature'
      | 'expired'
      | 'not_yet_valid'
      | 'trust_domain'
      | 'path_length'
      | 'revoked',
    message: string,
  ) {
    super(message);
    this.name = 'SvidError';
  }
}

export interface VerifiedSvid {
  spiffeId: string;
  trustDomain: string;
  /** Leaf first, then the intermediates and the trusted root used. */
  chain: x509.X509Certificate[];
  notAfter: Date;
}

/** Every PEM block of a file, by label. Anything that is not PEM is a parse error. */
export function pemBlocks(text: string): { label: string; der: ArrayBuffer }[] {
  const out: { label: string; der: ArrayBuffer }[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const der = Buffer.from((m[2] as string).replace(/\s+/g, ''), 'base64');
    out.push({
      label: m[1] as string,
      der: der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength) as ArrayBuffer,
    });
  }
  return out;
}

/** The certificates of a PEM text (a chain, or a bundle), in order. */
export function parseCertificates(text: string): x509.X509Certificate[] {
  const certs: x509.X509Certificate[] = [];
  for (const b of pemBlocks(text)) {
    if (b.label !== 'CERTIFICATE') continue;
    try {
      certs.push(new x509.X509Certificate(b.der));
    } catch (err) {
      throw new SvidError('parse', `a certificate does not parse: ${(err as Error).message}`);
    }
  }
  return certs;
}

const KU = x509.KeyUsageFlags;

function uriSans(cert: x509.X509Certificate): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return [];
  return san.names.items.filter((n) => n.type === 'url').map((n) => n.value);
}

function isCa(cert: x509.X509Certificate): { ca: boolean; pathLength: number | undefined } {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  return { ca: bc?.ca === true, pathLength: bc?.pathLength };
}

function keyUsage(cert: x509.X509Certificate): number | undefined {
  return cert.getExtension(x509.KeyUsagesExtension)?.usages;
}

/**
 * The X.509-SVID leaf rules of the SPIFFE X509-SVID specification (§4, §5): exactly one URI SAN, a valid
 * SPIFFE ID; `cA` false; key usage present with `digitalSignature` and without `keyCertSign`/`cRLSign`.
 * Returns the SPIFFE ID.
 */
export function checkLeaf(leaf: x509.X509Certificate): string {
  const uris = uriSans(leaf);
  if (uris.length === 0) throw new SvidError('no_spiffe_id', 'the leaf has no URI SAN (no SPIFFE ID)');
  if (uris.length > 1)
    throw new SvidError(
      'several_uri_sans',
      `the leaf has ${uris.length} URI SANs; an X.509-SVID has exactly one`,
    );
  let id: string;
  try {
    id = parseSpiffeId(uris[0] as string).toString();
  } catch (err) {
    throw new SvidError('bad_spiffe_id', (err as Error).message);
  }
  if (isCa(leaf).ca)
    throw new SvidError('leaf_is_ca', 'the leaf has cA=true; an X.509-SVID leaf must not be a CA');
  const ku = keyUsage(leaf);
  if (ku === undefined || (ku & KU.digitalSignature) === 0)
    throw new SvidError('leaf_key_usage', 'the leaf key usage must include digitalSignature');
  if ((ku & KU.keyCertSign) !== 0)
    throw new SvidError('leaf_key_usage', 'the leaf key usage must not include keyCertSign');
  if ((ku & KU.cRLSign) !== 0)
    throw new SvidError('leaf_key_usage', 'the leaf key usage must not include cRLSign');
  return id;
}

function checkSigner(cert: x509.X509Certificate, below: number): void {
  const { ca, pathLength } = isCa(cert);
  if (!ca)
    throw new SvidError(
      'signer_not_ca',
      `signing certificate ${cert.subject || '(no subject)'} is not a CA (cA=false)`,
    );
  const ku = keyUsage(cert);
  if (ku !== undefined && (ku & KU.keyCertSign) === 0)
    throw new SvidError(
      'signer_key_usage',
      `signing certificate ${cert.subject || '(no subject)'} lacks keyCertSign`,
    );
  if (pathLength !== undefined && below > pathLength)
    throw new SvidError(
      'path_length',
      `signing certificate ${cert.subject || '(no subject)'} allows ${pathLength} intermediate(s) below it, the chain has ${below}`,
    );
}

function checkTime(cert: x509.X509Certificate, at: Date, what: string): void {
  if (at < cert.notBefore)
    throw new SvidError('not_yet_valid', `${what} is not valid before ${cert.notBefore.toISOString()}`);
  if (at > cert.notAfter) throw new SvidError('expired', `${what} expired at ${cert.notAfter.toISOString()}`);
}

async function signedBy(cert: x509.X509Certificate, issuer: x509.X509Certificate): Promise<boolean> {
  if (cert.issuer !== issuer.subject) return false;
  try {
    return await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true });
  } catch {
    return false;
  }
}

/**
 * The structure of an SVID document (what `x509svid.Parse` checks in go-spiffe): a leaf that follows
 * the leaf rules, every other certificate a CA allowed to sign certificates, and — when a private key is
 * given — the key matching the leaf. No trust decision: see {@link verifySvid}.
 */
export async function parseSvid(pem: string): Promise<{ spiffeId: string; chain: x509.X509Certificate[] }> {
  const blocks = pemBlocks(pem);
  if (blocks.length === 0) throw new SvidError('parse', 'no PEM blocks');
  const chain = parseCertificates(pem);
  const leaf = chain[0];
  if (!leaf) throw new SvidError('parse', 'no certificate');
  const spiffeId = checkLeaf(leaf);
  chain.slice(1).forEach((c, i) => {
    checkSigner(c, i);
  });
  const keyBlock = blocks.find((b) => /PRIVATE KEY$/.test(b.label));
  if (keyBlock) {
    let spki: Buffer;
    try {
      spki = createPublicKey(
        createPrivateKey({ key: Buffer.from(keyBlock.der), format: 'der', type: 'pkcs8' }),
      ).export({ type: 'spki', format: 'der' });
    } catch (err) {
      throw new SvidError('parse', `the private key does not parse: ${(err as Error).message}`);
    }
    if (!spki.equals(Buffer.from(leaf.publicKey.rawData)))
      throw new SvidError('parse', 'the private key does not match the leaf certificate');
  }
  return { spiffeId, chain };
}

/**
 * Validates an X.509-SVID chain (leaf first, then intermediates) against a trust bundle of root
 * certificates for one trust domain: the leaf rules above, each signer a CA with keyCertSign and within
 * its path length, every signature, every certificate valid at `at`, a chain ending at a bundle root,
 * the SPIFFE ID in the bundle's trust domain, and no serial on the denylist. The gateway's mTLS peer
 * check and `portcullis svid verify` both call this.
 *
 * @example
 * const { spiffeId } = await verifySvid(parseCertificates(pem), bundle, { trustDomain: 'prod.example' });
 */
/**
 * Reads a serial denylist: one hex serial per line (colons allowed, case ignored), `#` comments and
 * blank lines skipped. A line that is not a serial is an error naming the line.
 */
export function parseDenylist(text: string, file = 'denylist'): Set<string> {
  const out = new Set<string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const hex = line
      .replace(/:/g, '')
      .toLowerCase()
      .replace(/^0+(?=.)/, '');
    if (!/^[0-9a-f]{1,40}$/.test(hex)) throw new Error(`${file}:${i + 1}: not a certificate serial: ${line}`);
    out.add(hex);
  });
  return out;
}

export async function verifySvid(
  chain: readonly x509.X509Certificate[],
  roots: readonly x509.X509Certificate[],
  options: { trustDomain?: string; at?: Date; deniedSerials?: ReadonlySet<string> } = {},
): Promise<VerifiedSvid> {
  const leaf = chain[0];
  if (!leaf) throw new SvidError('parse', 'no certificate');
  const at = options.at ?? new Date();
  const spiffeId = checkLeaf(leaf);
  const td = parseSpiffeId(spiffeId).trustDomain;
  if (options.trustDomain !== undefined && td !== options.trustDomain)
    throw new SvidError(
      'trust_domain',
      `the SPIFFE ID is in trust domain ${td}, the bundle is for ${options.trustDomain}`,
    );
  const denied = options.deniedSerials;
  const path: x509.X509Certificate[] = [leaf];
  let current = leaf;
  const pool = chain.slice(1);
  for (let depth = 0; depth < 8; depth++) {
    if (denied?.has(current.serialNumber.toLowerCase().replace(/^0+(?=.)/, '')))
      throw new SvidError('revoked', `certificate serial ${current.serialNumber} is on the denylist`);
    checkTime(current, at, depth === 0 ? 'the leaf' : `intermediate ${current.subject}`);
    // A trusted root that signed `current` ends the chain.
    for (const root of roots) {
      if (await signedBy(current, root)) {
        checkSigner(root, depth);
        checkTime(root, at, `root ${root.subject}`);
        path.push(root);
        return { spiffeId, trustDomain: td, chain: path, notAfter: leaf.notAfter };
      }
    }
    const next = await (async () => {
      for (const c of pool) if (!path.includes(c) && (await signedBy(current, c))) return c;
      return undefined;
    })();
    if (!next) {
      const issuerPresent = [...pool, ...roots].some((c) => c.subject === current.issuer);
      throw issuerPresent
        ? new SvidError(
            'bad_signature',
            `${depth === 0 ? 'the leaf' : current.subject}: signature does not verify with its issuer's key`,
          )
        : new SvidError(
            'untrusted',
            `no trusted issuer for ${depth === 0 ? 'the leaf' : current.subject} (issuer ${current.issuer || '(empty)'})`,
          );
    }
    checkSigner(next, depth);
    path.push(next);
    current = next;
  }
  throw new SvidError('path_length', 'chain longer than 8 certificates');
}
