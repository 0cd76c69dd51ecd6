import { createPrivateKey, createPublicKey } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { parseSpiffeId } from './spiffe-id.js';
import { x509 } from './x509.js';

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
      | 'unsupported_critical_extension'
      | 'extended_key_usage'
      | 'malformed_certificate'
      | 'weak_key'
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
  chain: X509.X509Certificate[];
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
export function parseCertificates(text: string): X509.X509Certificate[] {
  // Read outside the try: a library not loaded yet is a programming error, not a certificate that fails to parse.
  const { X509Certificate } = x509;
  const certs: X509.X509Certificate[] = [];
  for (const b of pemBlocks(text)) {
    if (b.label !== 'CERTIFICATE') continue;
    try {
      certs.push(new X509Certificate(b.der));
    } catch (err) {
      throw new SvidError('parse', `a certificate does not parse: ${(err as Error).message}`);
    }
  }
  return certs;
}

function uriSans(cert: X509.X509Certificate): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return [];
  return san.names.items.filter((n) => n.type === 'url').map((n) => n.value);
}

function isCa(cert: X509.X509Certificate): { ca: boolean; pathLength: number | undefined } {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  return { ca: bc?.ca === true, pathLength: bc?.pathLength };
}

function keyUsage(cert: X509.X509Certificate): number | undefined {
  return cert.getExtension(x509.KeyUsagesExtension)?.usages;
}

/**
 * The X.509-SVID leaf rules of the SPIFFE X509-SVID specification (§4, §5): exactly one URI SAN, a valid
 * SPIFFE ID; `cA` false; key usage present with `digitalSignature` and without `keyCertSign`/`cRLSign`.
 * Returns the SPIFFE ID.
 */
export function checkLeaf(leaf: X509.X509Certificate): string {
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
  if (ku === undefined || (ku & x509.KeyUsageFlags.digitalSignature) === 0)
    throw new SvidError('leaf_key_usage', 'the leaf key usage must include digitalSignature');
  if ((ku & x509.KeyUsageFlags.keyCertSign) !== 0)
    throw new SvidError('leaf_key_usage', 'the leaf key usage must not include keyCertSign');
  if ((ku & x509.KeyUsageFlags.cRLSign) !== 0)
    throw new SvidError('leaf_key_usage', 'the leaf key usage must not include cRLSign');
  return id;
}

function checkSigner(cert: X509.X509Certificate, below: number): void {
  const { ca, pathLength } = isCa(cert);
  if (!ca)
    throw new SvidError(
      'signer_not_ca',
      `signing certificate ${cert.subject || '(no subject)'} is not a CA (cA=false)`,
    );
  const ku = keyUsage(cert);
  if (ku !== undefined && (ku & x509.KeyUsageFlags.keyCertSign) === 0)
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

function checkTime(cert: X509.X509Certificate, at: Date, what: string): void {
  if (at < cert.notBefore)
    throw new SvidError('not_yet_valid', `${what} is not valid before ${cert.notBefore.toISOString()}`);
  if (at > cert.notAfter) throw new SvidError('expired', `${what} expired at ${cert.notAfter.toISOString()}`);
}

async function signedBy(cert: X509.X509Certificate, issuer: X509.X509Certificate): Promise<boolean> {
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
export async function parseSvid(pem: string): Promise<{ spiffeId: string; chain: X509.X509Certificate[] }> {
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
 * Reads a serial denylist: one hex serial per line (colons allowed, case ignored), `#` comments and
 * blank lines skipped. A line that is not a serial is an error naming the line.
 */
/** A serial as denylists key it: its magnitude in lower-case hex, colons and leading zeros dropped. */
export const serialKey = (hex: string): string =>
  hex
    .replace(/:/g, '')
    .toLowerCase()
    .replace(/^0+(?=.)/, '');

export function parseDenylist(text: string, file = 'denylist'): Set<string> {
  const out = new Set<string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const hex = serialKey(line);
    if (!/^[0-9a-f]{1,40}$/.test(hex)) throw new Error(`${file}:${i + 1}: not a certificate serial: ${line}`);
    out.add(hex);
  });
  return out;
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
export async function verifySvid(
  chain: readonly X509.X509Certificate[],
  roots: readonly X509.X509Certificate[],
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
  const path = await verifyPath(leaf, chain.slice(1), roots, {
    at,
    ...(options.deniedSerials ? { deniedSerials: options.deniedSerials } : {}),
  });
  return { spiffeId, trustDomain: td, chain: path, notAfter: leaf.notAfter };
}

/** Extensions this validator understands; any other extension marked critical makes a certificate unusable (RFC 5280 §4.2). */
const UNDERSTOOD_CRITICAL = new Set([
  '2.5.29.19', // basicConstraints
  '2.5.29.15', // keyUsage
  '2.5.29.37', // extKeyUsage
  '2.5.29.17', // subjectAltName
]);
const ANY_EKU = '2.5.29.37.0';
export const EKU = { serverAuth: '1.3.6.1.5.5.7.3.1', clientAuth: '1.3.6.1.5.5.7.3.2' } as const;

const NAME_CONSTRAINTS = '2.5.29.30';
const AKI = '2.5.29.35';
const SKI = '2.5.29.14';
const ALLOWED_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

/**
 * The structural rules every certificate in a path must follow (RFC 5280, and the Web PKI's sharper
 * reading where the two differ): v3 (extensions present), each extension once, no critical extension
 * this validator does not process, no name constraints at all (not processed here, so refused rather
 * than ignored), a positive serial of at most 20 octets, AKI/SKI never critical, an AKI on every
 * certificate not self-issued, and a sound key (RSA ≥ 2048 bits and a multiple of 8, EC P-256/384/521,
 * Ed25519).
 */
function checkStructure(cert: X509.X509Certificate, what: string, anchor = false): void {
  if (cert.extensions.length === 0)
    throw new SvidError('malformed_certificate', `${what} has no extensions (a v1 certificate)`);
  const seen = new Set<string>();
  for (const e of cert.extensions) {
    if (seen.has(e.type)) throw new SvidError('malformed_certificate', `${what} repeats extension ${e.type}`);
    seen.add(e.type);
    if (e.type === NAME_CONSTRAINTS)
      throw new SvidError(
        'unsupported_critical_extension',
        `${what} carries name constraints, which this validator does not process`,
      );
    if (e.critical && (e.type === AKI || e.type === SKI))
      throw new SvidError(
        'malformed_certificate',
        `${what} marks ${e.type === AKI ? 'AKI' : 'SKI'} critical`,
      );
    if (e.critical && !UNDERSTOOD_CRITICAL.has(e.type))
      throw new SvidError(
        'unsupported_critical_extension',
        `${what} has a critical extension this validator does not process (${e.type})`,
      );
  }
  // A trust anchor is its name and key: whoever else may have signed it, it needs no AKI.
  if (!anchor && cert.subject !== cert.issuer && !seen.has(AKI))
    throw new SvidError('malformed_certificate', `${what} has no authority key identifier`);
  // The serial as its magnitude in hex (the DER sign octet is not kept by the parser).
  const serialHex = cert.serialNumber.toLowerCase().replace(/^0+/, '');
  if (serialHex === '' || serialHex.length > 40)
    throw new SvidError(
      'malformed_certificate',
      `${what} has a serial that is zero or longer than 20 octets`,
    );
  let details: { modulusLength?: number; namedCurve?: string } | undefined;
  let type: string | undefined;
  try {
    const k = createPublicKey({ key: Buffer.from(cert.publicKey.rawData), format: 'der', type: 'spki' });
    type = k.asymmetricKeyType;
    details = k.asymmetricKeyDetails as typeof details;
  } catch {
    throw new SvidError('weak_key', `${what} has a public key this validator does not accept`);
  }
  const bits = details?.modulusLength ?? 0;
  const ok =
    (type === 'rsa' && bits >= 2048 && bits % 8 === 0) ||
    (type === 'ec' && ALLOWED_CURVES.has(details?.namedCurve ?? '')) ||
    type === 'ed25519';
  if (!ok)
    throw new SvidError('weak_key', `${what} has a ${type ?? 'unknown'} key this validator does not accept`);
}

/** Rules for a certificate that signs others: a named CA whose basic constraints are critical and which has an SKI. */
function checkCaStructure(cert: X509.X509Certificate, what: string): void {
  if (cert.subject === '') throw new SvidError('signer_not_ca', `${what} has an empty subject`);
  if (!cert.extensions.some((e) => e.type === '2.5.29.19' && e.critical))
    throw new SvidError('signer_not_ca', `${what}: basic constraints must be critical in a CA certificate`);
  if (!cert.extensions.some((e) => e.type === SKI))
    throw new SvidError('malformed_certificate', `${what} has no subject key identifier`);
}

/**
 * A self-issued trust anchor's AKI, when it has one, names its own key and nothing else (no issuer name and serial,
 * which would tie the root to a certificate that is not there).
 */
function checkRootAki(root: X509.X509Certificate, what: string): void {
  const aki = root.getExtension(x509.AuthorityKeyIdentifierExtension);
  // Only a self-issued root names itself; an intermediate trusted as an anchor names its issuer.
  if (!aki || root.subject !== root.issuer) return;
  const ski = root.getExtension(x509.SubjectKeyIdentifierExtension);
  if (!aki.keyId || aki.certId || !ski || aki.keyId.toLowerCase() !== ski.keyId.toLowerCase())
    throw new SvidError(
      'malformed_certificate',
      `${what}: its authority key identifier does not name its own key`,
    );
}

/** An end-entity certificate is not a CA and does not sign certificates. */
function checkEndEntity(cert: X509.X509Certificate, what: string): void {
  if (isCa(cert).ca) throw new SvidError('leaf_is_ca', `${what} is a CA (cA=true), not an end entity`);
  const ku = keyUsage(cert);
  if (ku !== undefined && (ku & x509.KeyUsageFlags.keyCertSign) !== 0)
    throw new SvidError('leaf_key_usage', `${what} key usage includes keyCertSign without being a CA`);
}

function checkEku(cert: X509.X509Certificate, required: string | undefined, what: string): void {
  if (required === undefined) return;
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku) return;
  const usages = eku.usages.map(String);
  if (!usages.includes(required) && !usages.includes(ANY_EKU))
    throw new SvidError('extended_key_usage', `${what} is not valid for ${required}`);
}

const sameCa = (a: X509.X509Certificate, b: X509.X509Certificate) =>
  a === b ||
  (a.subject === b.subject && Buffer.from(a.publicKey.rawData).equals(Buffer.from(b.publicKey.rawData)));

/**
 * RFC 5280 path validation from a leaf to a trust anchor, the part of {@link verifySvid} that does not
 * depend on SPIFFE: every signature, every certificate valid at `at`, each signer a CA with
 * keyCertSign within its path length, no unprocessed critical extension, the required extended key
 * usage (when asked) on the leaf and on intermediates that constrain it, no denylisted serial. Paths
 * are built depth-first with backtracking (several candidate issuers, cross-signed CAs), bounded in
 * depth and in signature checks so that pathological inputs end quickly. Returns the path, leaf first.
 */
export async function verifyPath(
  leaf: X509.X509Certificate,
  intermediates: readonly X509.X509Certificate[],
  roots: readonly X509.X509Certificate[],
  options: { at?: Date; deniedSerials?: ReadonlySet<string>; requiredEku?: string; maxDepth?: number } = {},
): Promise<X509.X509Certificate[]> {
  const at = options.at ?? new Date();
  const denied = options.deniedSerials;
  const maxDepth = Math.min(options.maxDepth ?? 8, 8);
  let budget = 256;
  let failure: SvidError | undefined;
  const fail = (e: unknown) => {
    if (e instanceof SvidError) failure = e;
    else throw e;
  };
  const signed = async (cert: X509.X509Certificate, issuer: X509.X509Certificate) => {
    if (cert.issuer !== issuer.subject) return false;
    if (--budget < 0) throw new SvidError('path_length', 'too many candidate issuers: path building gave up');
    return signedBy(cert, issuer);
  };
  checkStructure(leaf, 'the leaf');
  checkEndEntity(leaf, 'the leaf');
  checkEku(leaf, options.requiredEku, 'the leaf');
  // Path length counts the intermediates below a signer, self-issued ones excepted (RFC 5280 §6.1.4 l).
  const below = (path: readonly X509.X509Certificate[]) =>
    path.slice(1).filter((c) => c.subject !== c.issuer).length;
  const walk = async (
    current: X509.X509Certificate,
    path: X509.X509Certificate[],
    depth: number,
  ): Promise<X509.X509Certificate[] | undefined> => {
    try {
      if (denied?.has(serialKey(current.serialNumber)))
        throw new SvidError('revoked', `certificate serial ${current.serialNumber} is on the denylist`);
      checkTime(current, at, depth === 0 ? 'the leaf' : `intermediate ${current.subject}`);
    } catch (e) {
      fail(e);
      return undefined;
    }
    // A trusted root that signed `current` ends the chain.
    for (const root of roots) {
      if (!(await signed(current, root))) continue;
      try {
        checkSigner(root, below(path));
        checkStructure(root, `root ${root.subject}`, true);
        checkCaStructure(root, `root ${root.subject}`);
        checkRootAki(root, `root ${root.subject}`);
        checkTime(root, at, `root ${root.subject}`);
        return [...path, root];
      } catch (e) {
        fail(e);
      }
    }
    if (depth + 1 >= maxDepth) {
      fail(new SvidError('path_length', `chain longer than ${maxDepth} certificates`));
      return undefined;
    }
    let found = false;
    for (const c of intermediates) {
      // Loop detection (RFC 4158 §5.2): a CA (subject and key) appears at most once in a path, whatever
      // cross-signed copy of it is offered.
      if (path.some((p) => sameCa(p, c)) || !(await signed(current, c))) continue;
      found = true;
      try {
        checkSigner(c, below(path));
        checkStructure(c, `intermediate ${c.subject}`);
        checkCaStructure(c, `intermediate ${c.subject}`);
        checkEku(c, options.requiredEku, `intermediate ${c.subject}`);
      } catch (e) {
        fail(e);
        continue;
      }
      const done = await walk(c, [...path, c], depth + 1);
      if (done) return done;
    }
    if (!found && failure === undefined) {
      const issuerPresent = [...intermediates, ...roots].some((c) => c.subject === current.issuer);
      failure = issuerPresent
        ? new SvidError(
            'bad_signature',
            `${depth === 0 ? 'the leaf' : current.subject}: signature does not verify with its issuer's key`,
          )
        : new SvidError(
            'untrusted',
            `no trusted issuer for ${depth === 0 ? 'the leaf' : current.subject} (issuer ${current.issuer || '(empty)'})`,
          );
    }
    return undefined;
  };
  const path = await walk(leaf, [leaf], 0);
  if (path) return path;
  throw failure ?? new SvidError('untrusted', 'no path to a trusted root');
}
