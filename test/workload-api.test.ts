import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SecretBox } from '../src/identity/index.js';
import { createJoinToken, initCa, parseCertificates, verifySvid, WorkloadCa } from '../src/workload/index.js';
import { type Stack, startStack, tempDir } from './helpers.js';
import { keyAndCsr } from './pki.js';

x509.cryptoProvider.set(webcrypto as never);

/** The workload API over real TLS: join-token issuance, renewal with the current SVID as client certificate. */
describe('workload API (TLS on loopback)', () => {
  let s: Stack;
  let ca: WorkloadCa;
  let url: URL;
  let bundle: string;
  let cleanup: () => void;
  let denylist: string;
  beforeAll(async () => {
    const first = await startStack();
    // The CA lives in the data directory; initialise it, then start again with the workload API on.
    await initCa({
      dir: join(first.dataDir, 'ca'),
      trustDomain: 'prod.test',
      passphrase: 'a long root passphrase',
      box: new SecretBox(first.pc.core.keys.dataKey),
    });
    await first.pc.close();
    const { dir, cleanup: c } = tempDir();
    cleanup = c;
    const { cpSync, readdirSync, rmSync } = await import('node:fs');
    cpSync(first.dataDir, dir, { recursive: true });
    // Keys and the CA carry over; the database starts fresh (the stack creates its users again).
    for (const f of readdirSync(dir)) if (f.startsWith('portcullis.db')) rmSync(join(dir, f));
    denylist = join(dir, 'denylist.txt');
    writeFileSync(denylist, '');
    s = await startStack({
      dataDir: dir,
      workload: { listen: { host: '127.0.0.1', port: 0 }, svidTtl: '10m', denylistFile: denylist },
    } as never);
    url = new URL(s.pc.workloadUrl as string);
    ca = await WorkloadCa.load(join(dir, 'ca'), new SecretBox(s.pc.core.keys.dataKey));
    bundle = ca.roots.map((r) => r.toString('pem')).join('\n');
  });
  afterAll(async () => {
    await s?.close();
    cleanup?.();
  });

  const call = (path: string, body: unknown, client?: { cert: string; key: string }) =>
    new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          path,
          method: body === undefined ? 'GET' : 'POST',
          ca: bundle,
          servername: 'localhost',
          checkServerIdentity: () => undefined,
          ...(client ?? {}),
          headers: { 'content-type': 'application/json' },
        },
        (res) => {
          let text = '';
          res.on('data', (c) => {
            text += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
        },
      );
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });

  it('serves the SPIFFE bundle over TLS with its own SVID', async () => {
    const res = await call('/v1/bundle', undefined);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      spiffe_sequence: 1,
      spiffe_refresh_hint: 300,
      keys: [{ kty: 'EC', crv: 'P-256', use: 'x509-svid', x5c: [expect.any(String)] }],
    });
  });

  it('issues a first SVID for a one-time join token (bound to its SPIFFE ID), never twice', async () => {
    const token = await createJoinToken(
      s.pc.core.store,
      ca,
      'spiffe://prod.test/ns/billing/sa/worker',
      60_000,
    );
    const { csr } = await keyAndCsr();
    const res = await call('/v1/svid', { join_token: token, csr });
    expect(res.status).toBe(200);
    expect(res.body.spiffe_id).toBe('spiffe://prod.test/ns/billing/sa/worker');
    const verified = await verifySvid(parseCertificates(res.body.svid as string), ca.roots, {
      trustDomain: 'prod.test',
    });
    expect(verified.spiffeId).toBe('spiffe://prod.test/ns/billing/sa/worker');
    expect((await call('/v1/svid', { join_token: token, csr })).body).toMatchObject({
      error: { code: 'invalid_join_token' },
    });
    expect((await call('/v1/svid', { join_token: 'made-up', csr })).status).toBe(401);
    await expect(createJoinToken(s.pc.core.store, ca, 'spiffe://other.test/x', 60_000)).rejects.toThrow(
      /trust domain/,
    );
  });

  it('renews over mTLS with the current SVID (same ID); refuses without one or with a foreign one', async () => {
    const token = await createJoinToken(s.pc.core.store, ca, 'spiffe://prod.test/ns/reports', 60_000);
    const first = await keyAndCsr();
    const issued = await call('/v1/svid', { join_token: token, csr: first.csr });
    const next = await keyAndCsr();
    const renewed = await call(
      '/v1/svid/renew',
      { csr: next.csr },
      { cert: issued.body.svid as string, key: first.keyPem },
    );
    expect(renewed.status).toBe(200);
    expect(renewed.body.spiffe_id).toBe('spiffe://prod.test/ns/reports');
    const [oldLeaf] = parseCertificates(issued.body.svid as string);
    const [newLeaf] = parseCertificates(renewed.body.svid as string);
    expect(newLeaf?.serialNumber).not.toBe(oldLeaf?.serialNumber);

    expect((await call('/v1/svid/renew', { csr: next.csr })).body).toMatchObject({
      error: { code: 'client_certificate_required' },
    });
    // An SVID from another CA (same trust domain name) is refused.
    const { dir, cleanup: c } = tempDir();
    try {
      const box = new SecretBox(Buffer.alloc(32, 9));
      await initCa({ dir, trustDomain: 'prod.test', passphrase: 'another long passphrase', box });
      const rogue = await WorkloadCa.load(dir, box);
      const forged = await rogue.issue(first.csr, 'spiffe://prod.test/ns/admin', 60_000);
      const refused = await call(
        '/v1/svid/renew',
        { csr: next.csr },
        { cert: forged.chain, key: first.keyPem },
      );
      expect(refused.status).toBe(401);
      expect(refused.body).toMatchObject({ error: { code: 'invalid_svid' } });
    } finally {
      c();
    }
  });

  it('emergency revocation: a serial on the denylist can no longer renew or get JWT-SVIDs', async () => {
    const token = await createJoinToken(s.pc.core.store, ca, 'spiffe://prod.test/ns/stolen', 60_000);
    const k = await keyAndCsr();
    const issued = await call('/v1/svid', { join_token: token, csr: k.csr });
    const client = { cert: issued.body.svid as string, key: k.keyPem };
    expect((await call('/v1/jwt-svid', { audience: 'x' }, client)).status).toBe(200);
    const serial = (parseCertificates(issued.body.svid as string)[0] as x509.X509Certificate).serialNumber;
    writeFileSync(denylist, `${serial}\n`);
    let status = 0;
    for (let i = 0; i < 60 && status !== 401; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await call('/v1/jwt-svid', { audience: 'x' }, client)).status;
    }
    expect(status).toBe(401);
    const renew = await call('/v1/svid/renew', { csr: (await keyAndCsr()).csr }, client);
    expect(renew.body).toMatchObject({ error: { code: 'invalid_svid' } });
    expect(JSON.stringify(renew.body)).toContain('revoked');
  });

  it('a device certificate (…/device/<id>, same CA) is not a workload: no renewal, no JWT-SVID, no join token', async () => {
    const device = await keyAndCsr();
    const { chain } = await ca.issue(device.csr, 'spiffe://prod.test/device/3f1c', 60_000);
    const client = { cert: chain, key: device.keyPem };
    const next = await keyAndCsr();
    const renew = await call('/v1/svid/renew', { csr: next.csr }, client);
    expect(renew.status).toBe(401);
    expect(renew.body).toMatchObject({ error: { code: 'invalid_svid' } });
    const jwt = await call('/v1/jwt-svid', { audience: 'orders' }, client);
    expect(jwt.status).toBe(401);
    await expect(
      createJoinToken(s.pc.core.store, ca, 'spiffe://prod.test/device/3f1c', 60_000),
    ).rejects.toThrow(/device/);
  });

  it("mints JWT-SVIDs for the caller's SPIFFE ID (mTLS); the receiver enforces audience and refuses a replayed jti", async () => {
    const { JtiReplayCache, verifyJwtSvid } = await import('../src/sdk/index.js');
    const token = await createJoinToken(s.pc.core.store, ca, 'spiffe://prod.test/ns/billing', 60_000);
    const k = await keyAndCsr();
    const issued = await call('/v1/svid', { join_token: token, csr: k.csr });
    const client = { cert: issued.body.svid as string, key: k.keyPem };
    const minted = await call('/v1/jwt-svid', { audience: 'orders' }, client);
    expect(minted.status).toBe(200);
    const jwt = minted.body.token as string;
    const header = JSON.parse(Buffer.from(jwt.split('.')[0] as string, 'base64url').toString());
    const claims = JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString());
    expect(header).toMatchObject({ alg: 'ES256', typ: 'JWT', kid: expect.any(String) });
    expect(claims).toMatchObject({
      sub: 'spiffe://prod.test/ns/billing',
      aud: 'orders',
      iss: 'http://portcullis.test',
    });
    expect(claims.exp - claims.iat).toBe(300);

    const jwks = await (await fetch(`${s.pc.gatewayUrl}/.well-known/jwks.json`)).json();
    const replay = new JtiReplayCache();
    const opts = {
      keys: jwks,
      issuer: 'http://portcullis.test',
      audience: 'orders',
      replay,
      trustDomain: 'prod.test',
    };
    expect(await verifyJwtSvid(jwt, opts)).toMatchObject({
      spiffeId: 'spiffe://prod.test/ns/billing',
      audience: 'orders',
    });
    await expect(verifyJwtSvid(jwt, opts)).rejects.toThrow(/replayed/);
    await expect(
      verifyJwtSvid(jwt, { ...opts, audience: 'payments', replay: new JtiReplayCache() }),
    ).rejects.toThrow();
    // Not an access token: the gateway refuses it as a bearer token (typ JWT, not at+jwt).
    expect(
      (await fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${jwt}` } })).status,
    ).toBe(401);
    expect((await call('/v1/jwt-svid', { audience: 'orders' })).status).toBe(401);
  });
});
