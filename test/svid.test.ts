// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { createPrivateKey, webcrypto } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecretBox } from '../src/identity/index.js';
import {
  caFiles,
  initCa,
  parseCertificates,
  parseDenylist,
  parseSpiffeId,
  parseSvid,
  SvidError,
  verifySvid,
  WorkloadCa,
} from '../src/workload/index.js';
import { tempDir } from './helpers.js';

x509.cryptoProvider.set(webcrypto as never);
const subtle = webcrypto.subtle;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

describe('SPIFFE IDs (SPIFFE-ID spec §2)', () => {
  it('accepts valid IDs and names the rule an invalid one breaks', () => {
    expect(parseSpiffeId('spiffe://prod.example/ns/billing/sa/worker')).toMatchObject({
      trustDomain: 'prod.example',
      path: '/ns/billing/sa/worker',
    });
    expect(parseSpiffeId('spiffe://td').path).toBe('');
    const bad: [string, RegExp][] = [
      ['SPIFFE://td/x', /scheme/],
      ['https://td/x', /scheme/],
      ['spiffe:///x', /trust domain is empty/],
      ['spiffe://TD/x', /trust domain/],
      ['spiffe://td:8080/x', /trust domain/],
      ['spiffe://user@td/x', /trust domain/],
      ['spiffe://td/x/', /trailing slash/],
      ['spiffe://td//x', /empty path segment/],
      ['spiffe://td/./x', /"\." and "\.\."/],
      ['spiffe://td/../x', /"\." and "\.\."/],
      ['spiffe://td/x%20y', /path segments/],
      ['spiffe://td/x?q=1', /query/],
      ['spiffe://td/x#f', /fragment/],
      [`spiffe://td/${'a'.repeat(2050)}`, /2048/],
    ];
    for (const [id, why] of bad) expect(() => parseSpiffeId(id), id).toThrow(why);
  });
});

const VECTORS = join(import.meta.dirname, '..', '..', 'shared', 'vectors', 'go-spiffe', 'x509svid');
describe.skipIf(!existsSync(VECTORS))('go-spiffe X.509-SVID test data (../shared/vectors/go-spiffe)', () => {
  const read = (...files: string[]) => files.map((f) => readFileSync(join(VECTORS, f), 'utf8')).join('\n');
  it('accepts the good documents and finds their SPIFFE IDs', async () => {
    expect((await parseSvid(read('good-leaf-only.pem', 'key-pkcs8-rsa.pem'))).spiffeId).toBe(
      'spiffe://example.org/workload-1',
    );
    expect(
      (await parseSvid(read('good-leaf-and-intermediate.pem', 'key-pkcs8-ecdsa.pem'))).chain,
    ).toHaveLength(2);
    expect((await parseSvid(read('good-cert-and-key.pem'))).spiffeId).toMatch(/^spiffe:\/\/example\.org\//);
    expect((await parseSvid(read('good-key-and-cert.pem'))).spiffeId).toMatch(/^spiffe:\/\/example\.org\//);
  });
  it('rejects each broken document for the documented reason', async () => {
    const cases: [string[], string][] = [
      [['wrong-leaf-empty-id.pem'], 'no_spiffe_id'],
      [['wrong-leaf-ca-true.pem'], 'leaf_is_ca'],
      [['wrong-leaf-no-digital-signature.pem'], 'leaf_key_usage'],
      [['wrong-leaf-cert-sign.pem'], 'leaf_key_usage'],
      [['wrong-leaf-crl-sign.pem'], 'leaf_key_usage'],
      [['wrong-intermediate-no-ca.pem'], 'signer_not_ca'],
      [['wrong-intermediate-no-key-cert-sign.pem'], 'signer_key_usage'],
      [['good-leaf-and-intermediate.pem', 'key-pkcs8-rsa.pem'], 'parse'],
      [['corrupt-cert.pem'], 'parse'],
      [['good-leaf-only.pem', 'corrupt-key.pem'], 'parse'],
      [['not-pem'], 'parse'],
    ];
    for (const [files, code] of cases) {
      const err = await parseSvid(read(...files)).catch((e: unknown) => e);
      expect(err, files.join('+')).toBeInstanceOf(SvidError);
      expect((err as SvidError).code, files.join('+')).toBe(code);
    }
  });
});

describe('the internal CA: init, issuance from a CSR, verification', () => {
  let dir: string;
  let cleanup: () => void;
  let ca: WorkloadCa;
  const box = new SecretBox(Buffer.alloc(32, 3));
  beforeAll(async () => {
    ({ dir, cleanup } = tempDir());
    await initCa({ dir, trustDomain: 'prod.test', passphrase: 'correct horse battery', box });
    ca = await WorkloadCa.load(dir, box);
  });
  afterAll(() => cleanup());

  /** A CSR that asks for more than it may get: another SPIFFE ID, a DNS name, CA powers. */
  async function greedyCsr(): Promise<{ pem: string; keys: CryptoKeyPair }> {
    const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=admin, O=Evil',
      keys,
      signingAlgorithm: SIGN,
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'url', value: 'spiffe://prod.test/ns/admin' },
          { type: 'dns', value: 'evil.example' },
        ]),
        new x509.BasicConstraintsExtension(true, 5, true),
      ],
    });
    return { pem: csr.toString('pem'), keys };
  }

  it('writes a passphrase-encrypted root key, a sealed intermediate key and the bundle', () => {
    const f = caFiles(dir);
    expect(readFileSync(f.rootKey, 'utf8')).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    expect(() => createPrivateKey({ key: readFileSync(f.rootKey, 'utf8'), format: 'pem' })).toThrow();
    expect(
      createPrivateKey({
        key: readFileSync(f.rootKey, 'utf8'),
        format: 'pem',
        passphrase: 'correct horse battery',
      }).asymmetricKeyType,
    ).toBe('ec');
    expect(readFileSync(f.intermediateKey, 'utf8')).toMatch(/^v1\./);
    const [root] = parseCertificates(readFileSync(f.bundle, 'utf8'));
    expect(root?.getExtension(x509.BasicConstraintsExtension)).toMatchObject({ ca: true, pathLength: 1 });
  });

  it("issues an X.509-SVID whose SAN and subject are the CA's decision, never the CSR's", async () => {
    const { pem } = await greedyCsr();
    const now = Date.now();
    const { chain, notAfter } = await ca.issue(
      pem,
      'spiffe://prod.test/ns/billing/sa/worker',
      3_600_000,
      now,
    );
    const [leaf] = parseCertificates(chain);
    const names = leaf?.getExtension(x509.SubjectAlternativeNameExtension)?.names.items;
    expect(names).toEqual([
      expect.objectContaining({ type: 'url', value: 'spiffe://prod.test/ns/billing/sa/worker' }),
    ]);
    expect(leaf?.subject).toBe('O=SPIFFE');
    expect(leaf?.getExtension(x509.BasicConstraintsExtension)).toMatchObject({ ca: false, critical: true });
    expect(leaf?.getExtension(x509.KeyUsagesExtension)).toMatchObject({
      usages: x509.KeyUsageFlags.digitalSignature,
      critical: true,
    });
    expect(leaf?.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([
      x509.ExtendedKeyUsage.serverAuth,
      x509.ExtendedKeyUsage.clientAuth,
    ]);
    expect(leaf?.notBefore.getTime()).toBeLessThan(now - 1000);
    expect(notAfter.getTime()).toBeLessThanOrEqual(Math.ceil((now + 3_600_000) / 1000) * 1000);
    const verified = await verifySvid(parseCertificates(chain), ca.roots, { trustDomain: 'prod.test' });
    expect(verified).toMatchObject({
      spiffeId: 'spiffe://prod.test/ns/billing/sa/worker',
      trustDomain: 'prod.test',
    });
    expect(verified.chain).toHaveLength(3);
    // Never outliving the issuer: a 5-year request ends with the intermediate.
    const long = await ca.issue(pem, 'spiffe://prod.test/x', 5 * 365 * 86_400_000, now);
    expect(long.notAfter.getTime()).toBe(ca.intermediate.notAfter.getTime());
    await expect(ca.issue(pem, 'spiffe://other.test/x', 60_000)).rejects.toThrow(/trust domain/);
    await expect(ca.issue(pem, 'spiffe://prod.test', 60_000)).rejects.toThrow(/path/);
  });

  it('refuses a CSR whose signature does not verify', async () => {
    const { pem } = await greedyCsr();
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5] = (der[der.length - 5] as number) ^ 0xff;
    const tampered = x509.PemConverter.encode(
      der.buffer.slice(der.byteOffset, der.byteOffset + der.byteLength) as ArrayBuffer,
      'CERTIFICATE REQUEST',
    );
    await expect(ca.issue(tampered, 'spiffe://prod.test/x', 60_000)).rejects.toThrow(
      /signature|parse|invalid/i,
    );
  });

  /** A leaf signed by the intermediate with whatever extensions a test needs (to build the rejections). */
  async function forge(
    extensions: x509.Extension[],
    opts: { notAfter?: Date; signer?: { cert: x509.X509Certificate; key: CryptoKey } } = {},
  ) {
    const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
    const signer = opts.signer ?? { cert: ca.intermediate, key: (ca as unknown as { key: CryptoKey }).key };
    const cert = await x509.X509CertificateGenerator.create({
      subject: 'O=SPIFFE',
      issuer: signer.cert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: opts.notAfter ?? new Date(Date.now() + 3_600_000),
      publicKey: keys.publicKey,
      signingKey: signer.key,
      signingAlgorithm: SIGN,
      // An AKI as any CA writes it (a certificate without one is refused before its other faults).
      extensions: [...extensions, await x509.AuthorityKeyIdentifierExtension.create(signer.cert.publicKey)],
    });
    return [cert, ca.intermediate];
  }
  const ku = (flags: number) => new x509.KeyUsagesExtension(flags, true);
  const san = (...ids: string[]) =>
    new x509.SubjectAlternativeNameExtension(ids.map((value) => ({ type: 'url' as const, value })));
  const reason = (p: Promise<unknown>) =>
    p.then(
      () => 'accepted',
      (e: SvidError) => e.code,
    );

  it('rejects: two URI SANs, a CA leaf, missing or wrong key usage, wrong trust domain, expired, issuer mismatch, denylisted serial', async () => {
    const DS = x509.KeyUsageFlags.digitalSignature;
    const roots = ca.roots;
    expect(
      await reason(
        verifySvid(await forge([san('spiffe://prod.test/a', 'spiffe://prod.test/b'), ku(DS)]), roots),
      ),
    ).toBe('several_uri_sans');
    expect(
      await reason(
        verifySvid(
          await forge([san('spiffe://prod.test/a'), ku(DS), new x509.BasicConstraintsExtension(true)]),
          roots,
        ),
      ),
    ).toBe('leaf_is_ca');
    expect(await reason(verifySvid(await forge([san('spiffe://prod.test/a')]), roots))).toBe(
      'leaf_key_usage',
    );
    expect(
      await reason(
        verifySvid(
          await forge([san('spiffe://prod.test/a'), ku(DS | x509.KeyUsageFlags.keyCertSign)]),
          roots,
        ),
      ),
    ).toBe('leaf_key_usage');
    expect(
      await reason(
        verifySvid(await forge([san('spiffe://prod.test/a'), ku(DS)]), roots, { trustDomain: 'other.test' }),
      ),
    ).toBe('trust_domain');
    expect(
      await reason(
        verifySvid(await forge([san('spiffe://prod.test/a'), ku(DS)]), roots, {
          at: new Date(Date.now() + 2 * 3_600_000),
        }),
      ),
    ).toBe('expired');
    expect(await reason(verifySvid(await forge([san('https://prod.test/a'), ku(DS)]), roots))).toBe(
      'bad_spiffe_id',
    );
    expect(await reason(verifySvid(await forge([ku(DS)]), roots))).toBe('no_spiffe_id');
    // Issued by another CA (same names, other keys): untrusted here.
    const { dir: other, cleanup: c2 } = tempDir();
    try {
      await initCa({ dir: other, trustDomain: 'prod.test', passphrase: 'another long passphrase', box });
      const otherCa = await WorkloadCa.load(other, box);
      const { pem } = await greedyCsr();
      const foreign = await otherCa.issue(pem, 'spiffe://prod.test/a', 60_000);
      expect(await reason(verifySvid(parseCertificates(foreign.chain), roots))).toBe('bad_signature');
      // Without its intermediate, nothing in our bundle even claims to have issued it.
      expect(await reason(verifySvid(parseCertificates(foreign.certificate), roots))).toBe('untrusted');
    } finally {
      c2();
    }
    const { pem } = await greedyCsr();
    const good = parseCertificates((await ca.issue(pem, 'spiffe://prod.test/a', 60_000)).chain);
    // Through the denylist parser, which keeps a serial's magnitude: a serial whose first octet is
    // below 0x10 prints with a leading zero (one issuance in eight), and must match all the same.
    const denied = parseDenylist(`${good[0]?.serialNumber}\n`);
    expect(await reason(verifySvid(good, roots, { deniedSerials: denied }))).toBe('revoked');
    expect(await reason(verifySvid(good, roots))).toBe('accepted');
  });
});

describe('portcullis ca init / svid issue / svid verify', () => {
  it('initialises the CA, issues an SVID from a CSR, and verifies it (or says exactly why not)', async () => {
    const { runCli } = await import('../src/cli/index.js');
    const { captureIO, writeConfigFile } = await import('./helpers.js');
    const { Readable } = await import('node:stream');
    const { writeFileSync } = await import('node:fs');
    const { dir, cleanup } = tempDir();
    try {
      const config = await writeConfigFile(dir, 'http://127.0.0.1:1');
      const init = captureIO({ stdin: Readable.from(['a long root passphrase\n']) });
      expect(
        await runCli(
          ['ca', 'init', '--trust-domain', 'prod.test', '--passphrase-stdin', '--config', config],
          init.io,
        ),
      ).toBe(0);
      expect(init.out()).toMatch(/CA for spiffe:\/\/prod\.test created/);
      expect(
        await runCli(
          ['ca', 'init', '--trust-domain', 'prod.test', '--passphrase-stdin', '--config', config],
          captureIO({ stdin: Readable.from(['a long root passphrase\n']) }).io,
        ),
      ).toBe(1);

      const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        name: 'CN=w',
        keys,
        signingAlgorithm: SIGN,
      });
      writeFileSync(join(dir, 'w.csr'), csr.toString('pem'));
      const chain = join(dir, 'w.pem');
      const issued = captureIO();
      expect(
        await runCli(
          [
            'svid',
            'issue',
            '--csr',
            join(dir, 'w.csr'),
            '--spiffe-id',
            'spiffe://prod.test/ns/w',
            '--ttl',
            '10m',
            '--out',
            chain,
            '--config',
            config,
          ],
          issued.io,
        ),
      ).toBe(0);
      const bundle = join(dir, 'data', 'ca', 'bundle.pem');
      const ok = captureIO();
      expect(await runCli(['svid', 'verify', chain, '--bundle', bundle], ok.io)).toBe(0);
      expect(ok.out()).toBe('spiffe://prod.test/ns/w\n');
      const late = captureIO();
      expect(
        await runCli(
          [
            'svid',
            'verify',
            chain,
            '--bundle',
            bundle,
            '--at',
            new Date(Date.now() + 3_600_000).toISOString(),
          ],
          late.io,
        ),
      ).toBe(1);
      expect(late.out()).toMatch(/^refused \(expired\): the leaf expired at /);
      const otherTd = captureIO();
      expect(
        await runCli(
          ['svid', 'verify', chain, '--bundle', bundle, '--trust-domain', 'else.test'],
          otherTd.io,
        ),
      ).toBe(1);
      expect(otherTd.out()).toMatch(/^refused \(trust_domain\)/);
    } finally {
      cleanup();
    }
  });
});
