import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket, connect as tlsConnect } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { SecretBox } from '../src/identity/index.js';
import { initCa, parseCertificates, SpiffePeerAuthenticator, WorkloadCa } from '../src/workload/index.js';
import { captureIO, rawRequest, type Stack, startStack, tempDir } from './helpers.js';
import { svidFor } from './pki.js';

x509.cryptoProvider.set(webcrypto as never);
const subtle = webcrypto.subtle;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;

/** Service → gateway over mTLS: the caller is its SPIFFE ID, and microsegmentation rules decide. */
describe('workloads authenticate to the gateway with their X.509-SVID (real TLS)', () => {
  let s: Stack;
  let ca: WorkloadCa;
  let bundle: string;
  let cleanup: () => void;
  let denylist: string;
  let bundleFile: string;
  let cleanupDir: string;
  beforeAll(async () => {
    const t = tempDir();
    cleanup = t.cleanup;
    cleanupDir = t.dir;
    const box = new SecretBox(Buffer.alloc(32, 5));
    await initCa({
      dir: join(t.dir, 'ca'),
      trustDomain: 'prod.test',
      passphrase: 'a long root passphrase',
      box,
    });
    ca = await WorkloadCa.load(join(t.dir, 'ca'), box);
    bundle = ca.roots.map((r) => r.toString('pem')).join('\n');
    const server = await svidFor(ca, 'spiffe://prod.test/portcullis/gateway');
    writeFileSync(join(t.dir, 'gw.crt'), server.cert);
    writeFileSync(join(t.dir, 'gw.key'), server.key);
    writeFileSync(join(t.dir, 'bundle.pem'), bundle);
    denylist = join(t.dir, 'denylist.txt');
    writeFileSync(denylist, '# emergency revocations\n');
    bundleFile = join(t.dir, 'bundle.pem');
    s = await startStack({
      workload: { denylistFile: denylist },
      gateway: {
        listen: { host: '127.0.0.1', port: 0 },
        tls: {
          certFile: join(t.dir, 'gw.crt'),
          keyFile: join(t.dir, 'gw.key'),
          clientCaFile: join(t.dir, 'bundle.pem'),
          clientTrustDomain: 'prod.test',
          redirectHttp: { host: '127.0.0.1', port: 0 },
        },
      },
      routes: [
        { id: 'charges', path: '/charges', methods: ['GET', 'POST'], upstream: 'app', issuers: ['spiffe'] },
        { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
      ],
      policy: {
        rules: [
          // Billing may create charges, and nothing else; anything not allowed is denied (and logged).
          {
            id: 'billing-creates-charges',
            services: ['spiffe://prod.test/ns/billing/sa/*'],
            routes: ['charges'],
            methods: ['POST'],
          },
          { id: 'read-orders', routes: ['orders'], roles: ['viewer'] },
        ],
      },
    });
  });
  afterAll(async () => {
    await s?.close();
    cleanup?.();
  });

  const call = (
    method: string,
    path: string,
    client?: { cert: string; key: string },
    headers: Record<string, string> = {},
  ) =>
    new Promise<{ status: number }>((resolve, reject) => {
      const url = new URL(s.pc.gatewayUrl);
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          path,
          method,
          ca: bundle,
          headers,
          ...(client ?? {}),
          // The server is checked by its SPIFFE ID, exactly (not a host name).
          checkServerIdentity: (_host, cert) => {
            const uris = (cert.subjectaltname ?? '').split(', ').filter((n) => n.startsWith('URI:'));
            return uris.length === 1 && uris[0] === 'URI:spiffe://prod.test/portcullis/gateway'
              ? undefined
              : new Error(`unexpected server identity ${cert.subjectaltname}`);
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
        },
      );
      req.on('error', reject);
      req.end();
    });

  it('lets billing POST /charges, and nothing else; other services are denied; no certificate is a 401', async () => {
    expect(s.pc.gatewayUrl).toMatch(/^https:/);
    const billing = await svidFor(ca, 'spiffe://prod.test/ns/billing/sa/worker');
    const reports = await svidFor(ca, 'spiffe://prod.test/ns/reports/sa/worker');
    expect((await call('POST', '/charges', billing)).status).toBe(200);
    const forwarded = String(s.upstream.received.at(-1)?.headers['x-portcullis-assertion']);
    const assertion = JSON.parse(Buffer.from(forwarded.split('.')[1] as string, 'base64url').toString());
    expect(assertion).toMatchObject({
      sub: 'spiffe://prod.test/ns/billing/sa/worker',
      rules: ['billing-creates-charges'],
    });
    expect((await call('GET', '/charges', billing)).status).toBe(403);
    expect((await call('POST', '/charges', reports)).status).toBe(403);
    expect((await call('POST', '/charges')).status).toBe(401);
    await s.pc.core.audit.flush();
    const denials: Record<string, unknown>[] = [];
    for await (const r of s.pc.core.store.audit.scan()) {
      const d = JSON.parse(r.data);
      if (r.type === 'gateway.decision' && d.route === 'charges' && d.outcome === 'deny') denials.push(d);
    }
    expect(denials.map((d) => [d.method, d.sub])).toEqual([
      ['GET', 'spiffe://prod.test/ns/billing/sa/worker'],
      ['POST', 'spiffe://prod.test/ns/reports/sa/worker'],
      ['POST', null],
    ]);
  });

  it('a serial on the denylist is refused on its next request (file re-read on change), and by svid verify', async () => {
    const billing = await svidFor(ca, 'spiffe://prod.test/ns/billing/sa/worker');
    expect((await call('POST', '/charges', billing)).status).toBe(200);
    const serial = (parseCertificates(billing.cert)[0] as x509.X509Certificate).serialNumber;
    // Colon-separated upper case, as `openssl x509 -serial` users may paste it.
    const pasted = (serial.toUpperCase().match(/.{1,2}/g) ?? []).join(':');
    writeFileSync(denylist, `# emergency revocations\n${pasted}  # stolen laptop, ticket 42\n`);
    let status = 0;
    for (let i = 0; i < 60 && status !== 401; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await call('POST', '/charges', billing)).status;
    }
    expect(status).toBe(401);
    // Another SVID for the same workload (a new serial) is fine.
    expect(
      (await call('POST', '/charges', await svidFor(ca, 'spiffe://prod.test/ns/billing/sa/worker'))).status,
    ).toBe(200);
    const certFile = join(cleanupDir, 'billing.pem');
    writeFileSync(certFile, billing.cert);
    const io = captureIO();
    expect(
      await runCli(['svid', 'verify', certFile, '--bundle', bundleFile, '--denylist', denylist], io.io),
    ).toBe(1);
    expect(io.out()).toMatch(/^refused \(revoked\)/);
    writeFileSync(denylist, 'not a serial\n');
    await new Promise((r) => setTimeout(r, 1500));
    // A broken denylist keeps the running one (the reload fails and says so).
    expect((await call('POST', '/charges', billing)).status).toBe(401);
  });

  it('a client resuming its TLS session after a reload is still recognized (no resumption with client certificates)', async () => {
    const billing = await svidFor(ca, 'spiffe://prod.test/ns/billing/sa/worker');
    // One request per connection, with the TLS session of the previous connection offered for resumption.
    const once = (version: 'TLSv1.2' | 'TLSv1.3', session?: Buffer) =>
      new Promise<{ status: number; reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
        const url = new URL(s.pc.gatewayUrl);
        let saved: Buffer | undefined;
        const socket = tlsConnect({
          host: url.hostname,
          port: Number(url.port),
          ca: bundle,
          ...billing,
          ...(session ? { session } : {}),
          maxVersion: version,
          checkServerIdentity: () => undefined,
        });
        socket.on('session', (sess: Buffer) => {
          saved = sess;
        });
        let data = '';
        socket.on('secureConnect', () =>
          socket.write(
            'POST /charges HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
          ),
        );
        socket.on('data', (d) => {
          data += d.toString('latin1');
        });
        socket.on('end', () =>
          resolve({ status: Number(data.split(' ')[1]), reused: socket.isSessionReused(), session: saved }),
        );
        socket.on('error', reject);
      });
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      const first = await once(version);
      expect(first.status).toBe(200);
      // A reload (here: the denylist file changed) builds a new authenticator with an empty cache.
      writeFileSync(denylist, `# emergency revocations, reviewed ${Date.now()}\n`);
      await new Promise((r) => setTimeout(r, 1_600));
      const second = await once(version, first.session);
      // A resumed session shows the server only the leaf, not the chain it was verified with: the
      // gateway does not resume sessions on a listener that verifies client certificates.
      expect(second.reused).toBe(false);
      expect(second.status).toBe(200);
    }
  });

  it('remembers a refused client certificate: the next connection with it costs no chain verification', async () => {
    const { dir, cleanup: c } = tempDir();
    const box = new SecretBox(Buffer.alloc(32, 7));
    await initCa({ dir, trustDomain: 'prod.test', passphrase: 'a third long passphrase', box });
    const forged = await svidFor(await WorkloadCa.load(dir, box), 'spiffe://prod.test/ns/billing/sa/worker');
    c();
    const server = await svidFor(ca, 'spiffe://prod.test/portcullis/gateway');
    const auth = new SpiffePeerAuthenticator(bundle, 'prod.test', { now: () => Date.now() });
    const outcomes: Array<[string, number]> = [];
    const tlsServer = createTlsServer({
      ...server,
      ca: bundle,
      requestCert: true,
      rejectUnauthorized: false,
    });
    tlsServer.on('secureConnection', (socket: TLSSocket) => {
      // Count how often the whole chain is read (what precedes the ASN.1 and signature work).
      let chainReads = 0;
      const read = socket.getPeerCertificate.bind(socket);
      socket.getPeerCertificate = ((detailed?: boolean) => {
        if (detailed) chainReads += 1;
        return read(detailed as true);
      }) as typeof socket.getPeerCertificate;
      auth.peer(socket).then(
        () => outcomes.push(['accepted', chainReads]),
        (err: { code?: string }) => outcomes.push([err.code ?? 'error', chainReads]),
      );
      socket.end();
    });
    await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
    const port = (tlsServer.address() as { port: number }).port;
    try {
      for (let i = 0; i < 2; i++) {
        await new Promise<void>((resolve, reject) => {
          const client = tlsConnect({
            host: '127.0.0.1',
            port,
            ca: bundle,
            ...forged,
            checkServerIdentity: () => undefined,
          });
          client.on('error', reject);
          client.on('close', () => resolve());
          client.resume();
        });
        for (let w = 0; w < 100 && outcomes.length <= i; w++) await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      tlsServer.close();
    }
    expect(outcomes).toEqual([
      ['unauthenticated', 1],
      ['unauthenticated', 0],
    ]);
  });

  it('the plain-HTTP listener only redirects (308, method kept) to the same host and target over HTTPS', async () => {
    const before = s.upstream.received.length;
    const port = new URL(s.pc.gatewayUrl).port;
    const r = await rawRequest(
      s.pc.redirectUrl as string,
      'POST /charges?x=1 HTTP/1.1\r\nHost: Billing.Example:80\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
    );
    expect(r.status).toBe(308);
    expect(r.headers.location).toBe(`https://billing.example:${port}/charges?x=1`);
    const bad = await rawRequest(
      s.pc.redirectUrl as string,
      'GET /x HTTP/1.1\r\nHost: evil.example/path?\r\nConnection: close\r\n\r\n',
    );
    expect(bad.status).toBe(400);
    expect(s.upstream.received.length).toBe(before);
  });

  it('refuses an SVID from another CA, and does not take an SVID where the route wants bearer tokens', async () => {
    const { dir, cleanup: c } = tempDir();
    try {
      const box = new SecretBox(Buffer.alloc(32, 6));
      await initCa({ dir, trustDomain: 'prod.test', passphrase: 'another long passphrase', box });
      const rogue = await WorkloadCa.load(dir, box);
      const forged = await svidFor(rogue, 'spiffe://prod.test/ns/billing/sa/worker');
      expect((await call('POST', '/charges', forged)).status).toBe(401);
    } finally {
      c();
    }
    const billing = await svidFor(ca, 'spiffe://prod.test/ns/billing/sa/worker');
    expect((await call('GET', '/api/orders', billing)).status).toBe(401);
  });
});

describe('gateway → upstream over mTLS, the upstream checked by its SPIFFE ID exactly', () => {
  it("forwards to the expected workload with the gateway's SVID; refuses another ID or a certificate with two URI SANs", async () => {
    const { createServer } = await import('node:https');
    const t = tempDir();
    const box = new SecretBox(Buffer.alloc(32, 7));
    await initCa({
      dir: join(t.dir, 'ca'),
      trustDomain: 'prod.test',
      passphrase: 'a long root passphrase',
      box,
    });
    const ca = await WorkloadCa.load(join(t.dir, 'ca'), box);
    const bundle = ca.roots.map((r) => r.toString('pem')).join('\n');
    writeFileSync(join(t.dir, 'bundle.pem'), bundle);
    const gatewaySvid = await svidFor(ca, 'spiffe://prod.test/portcullis/gateway');
    writeFileSync(join(t.dir, 'gw.crt'), gatewaySvid.cert);
    writeFileSync(join(t.dir, 'gw.key'), gatewaySvid.key);
    // A certificate with two URI SANs, signed by the real intermediate: a naive "first URI" check would pass it.
    const keys = (await subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const twoUris = await x509.X509CertificateGenerator.create({
      subject: 'O=SPIFFE',
      issuer: ca.intermediate.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      publicKey: keys.publicKey,
      signingKey: (ca as unknown as { key: webcrypto.CryptoKey }).key,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'url', value: 'spiffe://prod.test/ns/orders' },
          { type: 'url', value: 'spiffe://prod.test/ns/other' },
        ]),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      ],
    });
    const twoKey = `-----BEGIN PRIVATE KEY-----\n${Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey)).toString('base64')}\n-----END PRIVATE KEY-----\n`;

    const seen: string[] = [];
    const upstream = async (cert: string, key: string) => {
      const server = createServer(
        { cert, key, ca: bundle, requestCert: true, rejectUnauthorized: true },
        (req, res) => {
          seen.push(String((req.socket as import('node:tls').TLSSocket).getPeerCertificate().subjectaltname));
          res.end('{"ok":true}');
        },
      );
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return {
        server,
        url: `https://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`,
      };
    };
    const orders = await svidFor(ca, 'spiffe://prod.test/ns/orders');
    const good = await upstream(orders.cert, orders.key);
    const bad = await upstream(`${twoUris.toString('pem')}\n${ca.intermediate.toString('pem')}`, twoKey);
    const mtls = (spiffeId: string) => ({
      spiffeId,
      bundleFile: join(t.dir, 'bundle.pem'),
      certFile: join(t.dir, 'gw.crt'),
      keyFile: join(t.dir, 'gw.key'),
    });
    const s = await startStack({
      upstreams: {
        app: { url: good.url, mtls: mtls('spiffe://prod.test/ns/orders') },
        wrong: { url: good.url, mtls: mtls('spiffe://prod.test/ns/payments') },
        twouris: { url: bad.url, mtls: mtls('spiffe://prod.test/ns/orders') },
      },
      routes: [
        { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
        { id: 'wrong', path: '/api/wrong', methods: ['GET'], upstream: 'wrong' },
        { id: 'twouris', path: '/api/two', methods: ['GET'], upstream: 'twouris' },
      ],
      policy: { rules: [{ id: 'read', roles: ['viewer'] }] },
    });
    try {
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      const get = (path: string) =>
        fetch(`${s.pc.gatewayUrl}${path}`, { headers: { authorization: `Bearer ${token}` } }).then(
          (r) => r.status,
        );
      expect(await get('/api/orders')).toBe(200);
      expect(seen).toEqual(['URI:spiffe://prod.test/portcullis/gateway']);
      expect(await get('/api/wrong')).toBe(502);
      expect(await get('/api/two')).toBe(502);
      expect(seen).toHaveLength(1);
    } finally {
      await s.close();
      good.server.close();
      bad.server.close();
      t.cleanup();
    }
  });
});
