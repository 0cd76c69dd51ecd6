import 'reflect-metadata';
import { createHash, randomBytes, randomUUID, type webcrypto } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from '../src/cli/index.js';
import { manualClock } from '../src/core/index.js';
import { compareVersions, judgePosture } from '../src/devices/index.js';
import { SecretBox } from '../src/identity/index.js';
import { initCa, parseCertificates, verifySvid, WorkloadCa } from '../src/workload/index.js';
import { captureIO, type Stack, startStack, type TestOverrides, tempDir, testConfig } from './helpers.js';
import { keyAndCsr, svidFor } from './pki.js';

type KeyLike = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

/** A DPoP proof (RFC 9449) by `key`, whose public JWK travels in the header; any claim can be overridden. */
async function dpopProof(
  key: KeyLike,
  jwk: JWK,
  claims: { htm: string; htu: string; token: string; iat?: number; jti?: string },
  header: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT({
    htm: claims.htm,
    htu: claims.htu,
    ath: createHash('sha256').update(claims.token).digest('base64url'),
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk, ...header })
    .setIssuedAt(claims.iat)
    .setJti(claims.jti ?? randomUUID())
    .sign(key);
}

/** A posture report signed with the device's key. */
function postureReport(
  key: KeyLike | webcrypto.CryptoKey,
  device: string,
  iatSec: number,
  over: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT({
    device,
    os: { name: 'macos', version: '14.5' },
    diskEncrypted: true,
    screenLock: true,
    firewall: true,
    agentVersion: '1.4.0',
    lastPatch: '2026-11-20',
    ...over,
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'posture+jwt' })
    .setIssuedAt(iatSec)
    .sign(key as KeyLike);
}

describe('devices: enrolment, mTLS and DPoP proofs, posture, policy, revocation (real TLS)', () => {
  const clock = manualClock(Date.now());
  let s: Stack;
  let bundle: string;
  let cleanup: () => void;
  let overrides: TestOverrides;

  beforeAll(async () => {
    const t = tempDir();
    cleanup = t.cleanup;
    // The data key exists before the stack, so the CA's intermediate key can be sealed with it.
    const dataKey = randomBytes(32);
    const dataKeyFile = join(t.dir, 'data.key');
    writeFileSync(dataKeyFile, `${dataKey.toString('base64url')}\n`, { mode: 0o600 });
    await initCa({
      dir: join(t.dir, 'ca'),
      trustDomain: 'prod.test',
      passphrase: 'a long root passphrase',
      box: new SecretBox(dataKey),
    });
    const ca = await WorkloadCa.load(join(t.dir, 'ca'), new SecretBox(dataKey));
    bundle = ca.roots.map((r) => r.toString('pem')).join('\n');
    const server = await svidFor(ca, 'spiffe://prod.test/portcullis/gateway');
    writeFileSync(join(t.dir, 'gw.crt'), server.cert);
    writeFileSync(join(t.dir, 'gw.key'), server.key);
    writeFileSync(join(t.dir, 'bundle.pem'), bundle);
    overrides = {
      gateway: {
        listen: { host: '127.0.0.1', port: 0 },
        tls: {
          certFile: join(t.dir, 'gw.crt'),
          keyFile: join(t.dir, 'gw.key'),
          clientCaFile: join(t.dir, 'bundle.pem'),
          clientTrustDomain: 'prod.test',
        },
      },
      identity: { dataKeyFile, adminRequireMfa: false },
      devices: {
        caDir: join(t.dir, 'ca'),
        approval: 'admin',
        posture: { maxAge: '24h', rules: { minOsVersion: { macos: '14.0' }, maxPatchAge: '30d' } },
      },
      // The device signals are tested on their own (test/risk.test.ts); here policy decides.
      risk: { weights: { newDevice: 0, untrustedDevice: 0, noncompliantDevice: 0 } },
      routes: [
        { id: 'docs', path: '/api/docs', methods: ['GET'], upstream: 'app' },
        { id: 'payroll', path: '/api/payroll', methods: ['GET', 'POST'], upstream: 'app' },
        { id: 'mac', path: '/api/mac', methods: ['GET'], upstream: 'app' },
        { id: 'svc', path: '/svc', methods: ['GET'], upstream: 'app', issuers: ['spiffe'] },
      ],
      policy: {
        rules: [
          { id: 'docs', routes: ['docs'], roles: ['viewer', 'admin'] },
          {
            id: 'payroll-from-managed-devices',
            routes: ['payroll'],
            roles: ['viewer', 'admin'],
            when: 'device.trusted && device.compliant',
          },
          {
            id: 'mac-only',
            routes: ['mac'],
            roles: ['viewer', 'admin'],
            when: 'device.present && device.posture.os.name == "macos"',
          },
          { id: 'any-service', routes: ['svc'], services: ['spiffe://prod.test/**'] },
        ],
      },
    };
    s = await startStack(overrides, undefined, { clock });
  });
  afterAll(async () => {
    await s?.close();
    cleanup?.();
  });

  /** One HTTPS request to the gateway, optionally with a client certificate. */
  const call = (
    method: string,
    path: string,
    opts: { client?: { cert: string; key: string }; headers?: Record<string, string>; body?: unknown } = {},
  ) =>
    new Promise<{ status: number; body: Record<string, unknown>; headers: Record<string, unknown> }>(
      (resolve, reject) => {
        const url = new URL(s.pc.gatewayUrl);
        const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
        const req = request(
          {
            host: url.hostname,
            port: url.port,
            path,
            method,
            ca: bundle,
            agent: false,
            headers: {
              ...(payload ? { 'content-type': 'application/json' } : {}),
              ...(opts.headers ?? {}),
            },
            ...(opts.client ?? {}),
            checkServerIdentity: () => undefined,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let body: Record<string, unknown> = {};
              try {
                body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
              } catch {
                body = { text };
              }
              resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
            });
          },
        );
        req.on('error', reject);
        req.end(payload);
      },
    );
  const login = async (user = s.users.viewer) => {
    const r = await call('POST', '/auth/login', {
      body: { username: user.username, password: user.password },
    });
    return r.body.access_token as string;
  };
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  const code = (r: { body: Record<string, unknown> }) =>
    (r.body.error as { code?: string } | undefined)?.code;
  const htu = (path: string) => `${s.pc.gatewayUrl}${path}`;
  const decisions = async () => {
    await s.pc.core.audit.flush();
    const out: Record<string, unknown>[] = [];
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'gateway.decision') out.push(JSON.parse(r.data) as Record<string, unknown>);
    return out;
  };
  /** Enrols a key (JWK) as a device, proving possession with a DPoP proof signed by `signer`. */
  const enrolKey = async (token: string, signer: KeyLike, jwk: JWK, name: string, proofJwk = jwk) =>
    call('POST', '/auth/devices', {
      headers: {
        authorization: `DPoP ${token}`,
        dpop: await dpopProof(signer, proofJwk, {
          htm: 'POST',
          htu: htu('/auth/devices'),
          token,
          iat: Math.floor(clock.now() / 1000),
        }),
      },
      body: { name, platform: 'chrome', jwk },
    });
  const approve = async (id: string) => {
    const admin = await login(s.users.admin);
    return call('POST', `/_portcullis/admin/devices/${id}/approve`, { headers: bearer(admin) });
  };

  it('a device enrolled with a CSR gets a device certificate from the CA, proves itself over mTLS, is trusted once approved and compliant once its posture is, and is refused after revocation', async () => {
    const token = await login();
    const { csr, keyPem, keys } = await keyAndCsr();
    const enrol = await call('POST', '/auth/devices', {
      headers: bearer(token),
      body: { name: 'work laptop', platform: 'macos', csr },
    });
    expect(enrol.status).toBe(201);
    const device = enrol.body.device as Record<string, unknown>;
    const id = device.id as string;
    expect(device).toMatchObject({
      status: 'pending',
      trusted: false,
      compliant: false,
      name: 'work laptop',
    });
    // The certificate is an X.509-SVID for spiffe://prod.test/device/<id> that the CA's bundle validates.
    const chain = parseCertificates(enrol.body.chain as string);
    const verified = await verifySvid(chain, parseCertificates(enrol.body.bundle as string), {
      trustDomain: 'prod.test',
    });
    expect(verified.spiffeId).toBe(`spiffe://prod.test/device/${id}`);
    const client = { cert: enrol.body.chain as string, key: keyPem };

    // Pending: the device is known, not trusted; a route that needs a managed device refuses.
    expect((await call('GET', '/api/docs', { client, headers: bearer(token) })).status).toBe(200);
    const pending = await call('GET', '/api/payroll', { client, headers: bearer(token) });
    expect(pending.status).toBe(403);
    expect((await approve(id)).body).toMatchObject({ status: 'active', trusted: true });
    expect((await call('GET', '/api/payroll', { client, headers: bearer(token) })).status).toBe(403);

    // A compliant posture report, signed by the device's own key: now payroll opens.
    const report = await postureReport(keys.privateKey, id, Math.floor(clock.now() / 1000));
    const posted = await call('POST', `/auth/devices/${id}/posture`, {
      headers: bearer(token),
      body: { report },
    });
    expect(posted.status).toBe(200);
    expect(posted.body).toMatchObject({ compliant: true, failures: [] });
    expect((await call('GET', '/api/payroll', { client, headers: bearer(token) })).status).toBe(200);
    expect((await call('GET', '/api/mac', { client, headers: bearer(token) })).status).toBe(200);
    // Without the device, the same user and token are not enough.
    expect((await call('GET', '/api/payroll', { headers: bearer(token) })).status).toBe(403);
    expect((await call('GET', '/api/mac', { headers: bearer(token) })).status).toBe(403);
    const ds = await decisions();
    expect(ds.filter((d) => d.route === 'payroll' && d.outcome === 'allow').map((d) => d.device)).toEqual([
      id,
    ]);
    // The upstream learns it too: the identity assertion names the device (and the risk score).
    const forwarded = s.upstream.received.filter((r) => r.url === '/api/payroll').at(-1);
    const claims = JSON.parse(
      Buffer.from(
        String(forwarded?.headers['x-portcullis-assertion']).split('.')[1] as string,
        'base64url',
      ).toString(),
    );
    expect(claims).toMatchObject({ device: id, acr: 'aal1' });
    expect(typeof claims.risk).toBe('number');

    // A device certificate is never a workload identity of its own.
    const asService = await call('GET', '/svc', { client });
    expect(asService.status).toBe(401);

    // Revoked by its user: refused on its next request, even with a valid token.
    const revoked = await call('POST', `/auth/devices/${id}/revoke`, { headers: bearer(token) });
    expect(revoked.body).toMatchObject({ status: 'revoked' });
    const after = await call('GET', '/api/docs', { client, headers: bearer(token) });
    expect(after.status).toBe(403);
    expect(code(after)).toBe('device_revoked');
    const events: string[] = [];
    for await (const r of s.pc.core.store.audit.scan()) if (r.type.startsWith('device.')) events.push(r.type);
    expect(events).toEqual(['device.enrolled', 'device.approved', 'device.posture', 'device.revoked']);
  });

  it('posture reports: only the device key signs them, they must be fresh and newer than the last, rules name what fails, and they expire', async () => {
    const token = await login();
    const { csr, keys } = await keyAndCsr();
    const other = await keyAndCsr();
    const id = (
      (await call('POST', '/auth/devices', { headers: bearer(token), body: { name: 'd2', csr } })).body
        .device as { id: string }
    ).id;
    const now = Math.floor(clock.now() / 1000);
    const post = (report: string) =>
      call('POST', `/auth/devices/${id}/posture`, { headers: bearer(token), body: { report } });

    const forged = await post(await postureReport(other.keys.privateKey, id, now));
    expect(forged.status).toBe(400);
    expect(code(forged)).toBe('invalid_body');
    expect((await post(await postureReport(keys.privateKey, id, now - 600))).status).toBe(400); // stale
    expect((await post(await postureReport(keys.privateKey, 'another-device', now))).status).toBe(400);
    const old = await post(
      await postureReport(keys.privateKey, id, now, {
        os: { name: 'macos', version: '13.6' },
        diskEncrypted: false,
        lastPatch: '2026-01-01',
      }),
    );
    expect(old.status).toBe(200);
    expect(old.body.compliant).toBe(false);
    expect(old.body.failures).toEqual([
      'diskEncryption: the disk is not encrypted',
      'minOsVersion: macos 13.6 is older than 14.0',
      expect.stringMatching(/^maxPatchAge: last patched \d+ days ago \(2026-01-01\)$/),
    ]);
    // The same report again (or an older one) cannot overwrite what is stored.
    const good = await postureReport(keys.privateKey, id, now + 1);
    expect((await post(good)).body.compliant).toBe(true);
    expect((await post(good)).status).toBe(400);
    expect((await post(await postureReport(keys.privateKey, id, now))).status).toBe(400);
    // Someone else's device is not found.
    const admin = await login(s.users.admin);
    const foreign = await call('POST', `/auth/devices/${id}/posture`, {
      headers: bearer(admin),
      body: { report: good },
    });
    expect(foreign.status).toBe(404);

    // A report counts for 24 h.
    const shown = await call('GET', `/auth/devices/${id}`, { headers: bearer(token) });
    expect(shown.body.compliant).toBe(true);
    clock.advance(25 * 3_600_000);
    const later = await call('GET', `/auth/devices/${id}`, { headers: bearer(await login()) });
    expect(later.body.compliant).toBe(false);
  });

  it('DPoP: a key enrolled as a device signs a proof per request; wrong key, replayed jti, wrong htu/htm/ath, stale iat and private keys are refused', async () => {
    const token = await login();
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const enrol = await enrolKey(token, privateKey, jwk, 'browser');
    expect(enrol.status).toBe(201);
    const id = (enrol.body.device as { id: string }).id;
    expect(enrol.body.certificate).toBeUndefined();
    await approve(id);
    await call('POST', `/auth/devices/${id}/posture`, {
      headers: bearer(token),
      body: { report: await postureReport(privateKey, id, Math.floor(clock.now() / 1000)) },
    });
    const get = async (path: string, proof: string, auth = `DPoP ${token}`) =>
      call('GET', path, { headers: { authorization: auth, dpop: proof } });
    const now = Math.floor(clock.now() / 1000);

    const ok = await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/payroll'), token, iat: now });
    expect((await get('/api/payroll', ok)).status).toBe(200);
    // The Bearer scheme with a proof works the same; no proof → no device → payroll refused.
    const ok2 = await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/payroll'), token, iat: now });
    expect((await get('/api/payroll', ok2, `Bearer ${token}`)).status).toBe(200);
    expect((await call('GET', '/api/payroll', { headers: bearer(token) })).status).toBe(403);

    const refused = async (proof: string, path = '/api/payroll') => {
      const r = await get(path, proof);
      expect(r.status).toBe(401);
      expect(code(r)).toBe('invalid_dpop_proof');
      expect(String(r.headers['www-authenticate'])).toContain('DPoP error="invalid_dpop_proof"');
    };
    await refused(ok); // replayed jti
    const attacker = await generateKeyPair('ES256', { extractable: true });
    // Signed by another key than the one in its header.
    await refused(
      await dpopProof(attacker.privateKey, jwk, { htm: 'GET', htu: htu('/api/payroll'), token, iat: now }),
    );
    await refused(
      await dpopProof(privateKey, jwk, { htm: 'POST', htu: htu('/api/payroll'), token, iat: now }),
    );
    await refused(await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/docs'), token, iat: now }));
    await refused(
      await dpopProof(privateKey, jwk, { htm: 'GET', htu: 'https://evil.test/api/payroll', token, iat: now }),
    );
    await refused(
      await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/payroll'), token: 'other', iat: now }),
    );
    await refused(
      await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/payroll'), token, iat: now - 120 }),
    );
    await refused(
      await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/payroll'), token, iat: now + 60 }),
    );
    await refused(
      await dpopProof(
        privateKey,
        jwk,
        { htm: 'GET', htu: htu('/api/payroll'), token, iat: now },
        { typ: 'JWT' },
      ),
    );
    const priv = await exportJWK(privateKey);
    await refused(
      await dpopProof(privateKey, priv, { htm: 'GET', htu: htu('/api/payroll'), token, iat: now }),
    );
    await refused('not-a-jwt');
    // The DPoP scheme without a proof is refused outright.
    const bare = await call('GET', '/api/docs', { headers: { authorization: `DPoP ${token}` } });
    expect(code(bare)).toBe('invalid_dpop_proof');
    // The query string is not part of htu.
    const q = await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/payroll'), token, iat: now });
    expect((await get('/api/payroll?month=11', q)).status).toBe(200);

    // A valid proof by a key nobody enrolled is simply no device.
    const unknown = await dpopProof(attacker.privateKey, await exportJWK(attacker.publicKey), {
      htm: 'GET',
      htu: htu('/api/payroll'),
      token,
      iat: now,
    });
    expect((await get('/api/payroll', unknown)).status).toBe(403);
    // Another user's device key is refused (the admin presenting the viewer's device).
    const admin = await login(s.users.admin);
    const stolen = await dpopProof(privateKey, jwk, {
      htm: 'GET',
      htu: htu('/api/docs'),
      token: admin,
      iat: now,
    });
    expect((await get('/api/docs', stolen, `DPoP ${admin}`)).status).toBe(403);

    // Revoked by an admin through the CLI, in another process' view of the same store: refused next time.
    const cfg = join(s.dataDir, 'cli.yaml');
    writeFileSync(cfg, stringify(testConfig(s.dataDir, s.upstream.url, overrides)));
    const listed = captureIO();
    expect(
      await runCli(['device', 'list', '--config', cfg, '--user', s.users.viewer.username], listed.io),
    ).toBe(0);
    expect(listed.out()).toContain(id);
    const rev = captureIO();
    expect(await runCli(['device', 'revoke', id, '--config', cfg], rev.io)).toBe(0);
    expect(JSON.parse(rev.out())).toMatchObject({ id, status: 'revoked' });
    const gone = await get(
      '/api/docs',
      await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/docs'), token, iat: now }),
    );
    expect(gone.status).toBe(403);
    expect(code(gone)).toBe('device_revoked');
  });

  it('DPoP-bound sessions: a sign-in with a proof binds the tokens to the key (cnf.jkt); without the key a stolen token or refresh token is useless', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const now = () => Math.floor(clock.now() / 1000);
    const tokenProof = (path: string) =>
      new SignJWT({ htm: 'POST', htu: htu(path) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .setIssuedAt(now())
        .setJti(randomUUID())
        .sign(privateKey);
    const creds = { username: s.users.viewer.username, password: s.users.viewer.password };
    const signIn = await call('POST', '/auth/login', {
      headers: { dpop: await tokenProof('/auth/login') },
      body: creds,
    });
    expect(signIn.status).toBe(200);
    expect(signIn.body.token_type).toBe('DPoP');
    const token = signIn.body.access_token as string;
    const claims = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString('utf8'));
    expect(claims.cnf).toEqual({ jkt: await calculateJwkThumbprint(jwk) });
    // A sign-in proof must not carry ath.
    const withAth = await new SignJWT({ htm: 'POST', htu: htu('/auth/login'), ath: 'x' })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .setIssuedAt(now())
      .setJti(randomUUID())
      .sign(privateKey);
    expect((await call('POST', '/auth/login', { headers: { dpop: withAth }, body: creds })).status).toBe(401);

    // At the gateway: the token alone (stolen) is refused; with a proof by the key it works.
    const stolen = await call('GET', '/api/docs', { headers: bearer(token) });
    expect(stolen.status).toBe(401);
    expect(code(stolen)).toBe('invalid_dpop_proof');
    const attacker = await generateKeyPair('ES256', { extractable: true });
    const attackerJwk = await exportJWK(attacker.publicKey);
    const wrongKey = await dpopProof(attacker.privateKey, attackerJwk, {
      htm: 'GET',
      htu: htu('/api/docs'),
      token,
      iat: now(),
    });
    expect(
      (await call('GET', '/api/docs', { headers: { authorization: `DPoP ${token}`, dpop: wrongKey } }))
        .status,
    ).toBe(401);
    const right = await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/docs'), token, iat: now() });
    expect(
      (await call('GET', '/api/docs', { headers: { authorization: `DPoP ${token}`, dpop: right } })).status,
    ).toBe(200);
    // And at our own endpoints (sessions, devices, userinfo).
    expect((await call('GET', '/auth/sessions', { headers: bearer(token) })).status).toBe(401);
    const sessProof = await dpopProof(privateKey, jwk, {
      htm: 'GET',
      htu: htu('/auth/sessions'),
      token,
      iat: now(),
    });
    expect(
      (await call('GET', '/auth/sessions', { headers: { authorization: `DPoP ${token}`, dpop: sessProof } }))
        .status,
    ).toBe(200);

    // Refresh with a proof by the key: a new bound pair.
    const refreshed = await call('POST', '/auth/refresh', {
      headers: { dpop: await tokenProof('/auth/refresh') },
      body: { refresh_token: signIn.body.refresh_token },
    });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.token_type).toBe('DPoP');
    // The refresh token used without the key: it was taken from the device — the session ends.
    const thief = await call('POST', '/auth/refresh', {
      body: { refresh_token: refreshed.body.refresh_token },
    });
    expect(thief.status).toBe(400);
    expect(code(thief)).toBe('invalid_grant');
    const next = refreshed.body.access_token as string;
    const ended = await call('GET', '/api/docs', {
      headers: {
        authorization: `DPoP ${next}`,
        dpop: await dpopProof(privateKey, jwk, {
          htm: 'GET',
          htu: htu('/api/docs'),
          token: next,
          iat: now(),
        }),
      },
    });
    expect(code(ended)).toBe('session_revoked');
    const unbound: string[] = [];
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'auth.refresh.unbound') unbound.push(r.type);
    expect(unbound).toHaveLength(1);
  });

  it('review regressions: Host tricks, foreign client certificates, failed sign-ins, revocation of bound sessions, no proof upstream', async () => {
    const now = () => Math.floor(clock.now() / 1000);
    const token = await login();
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const id = ((await enrolKey(token, privateKey, jwk, 'k')).body.device as { id: string }).id;
    await approve(id);

    // A proof for GET /api/docs cannot be moved to /api/payroll by smuggling a path into Host.
    const port = new URL(s.pc.gatewayUrl).port;
    const forDocs = await dpopProof(privateKey, jwk, {
      htm: 'GET',
      htu: htu('/api/docs'),
      token,
      iat: now(),
    });
    const moved = await call('GET', '/api/payroll', {
      headers: { authorization: `DPoP ${token}`, dpop: forDocs, host: `127.0.0.1:${port}/api/docs?` },
    });
    // Refused before the proof is even looked at: a Host that is not a plain host[:port] is a 400.
    expect(moved.status).toBe(400);
    expect(code(moved)).toBe('bad_request');

    // The proof is the gateway's: it never reaches the upstream.
    const seen = s.upstream.received.length;
    const ok = await dpopProof(privateKey, jwk, { htm: 'GET', htu: htu('/api/docs'), token, iat: now() });
    expect(
      (await call('GET', '/api/docs', { headers: { authorization: `DPoP ${token}`, dpop: ok } })).status,
    ).toBe(200);
    const forwarded = s.upstream.received.slice(seen);
    expect(forwarded).toHaveLength(1);
    expect(forwarded[0]?.headers.dpop).toBeUndefined();

    // A client certificate that is not one of our SVIDs is no device, and no reason to refuse the token.
    const selfSigned = await keyAndCsr();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'CN=smartcard',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      keys: selfSigned.keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    });
    const foreign = { cert: cert.toString('pem'), key: selfSigned.keyPem };
    expect((await call('GET', '/api/docs', { client: foreign, headers: bearer(token) })).status).toBe(200);

    // A failed sign-in does not spend the proof's jti (anyone can call sign-in; the cache is not theirs).
    const signInProof = await new SignJWT({ htm: 'POST', htu: htu('/auth/login') })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .setIssuedAt(now())
      .setJti(randomUUID())
      .sign(privateKey);
    const wrong = await call('POST', '/auth/login', {
      headers: { dpop: signInProof },
      body: { username: s.users.viewer.username, password: 'not-the-password-123' },
    });
    expect(code(wrong)).toBe('invalid_credentials');
    const bound = await call('POST', '/auth/login', {
      headers: { dpop: signInProof },
      body: { username: s.users.viewer.username, password: s.users.viewer.password },
    });
    expect(bound.body.token_type).toBe('DPoP');
    const boundToken = bound.body.access_token as string;

    // Revoking the device ends the sessions bound to its key: no refresh, no own endpoints.
    const admin = await login(s.users.admin);
    await call('POST', `/_portcullis/admin/devices/${id}/revoke`, { headers: bearer(admin) });
    const sessions = await call('GET', '/auth/sessions', {
      headers: {
        authorization: `DPoP ${boundToken}`,
        dpop: await dpopProof(privateKey, jwk, {
          htm: 'GET',
          htu: htu('/auth/sessions'),
          token: boundToken,
          iat: now(),
        }),
      },
    });
    expect(code(sessions)).toBe('session_revoked');
    const refresh = await call('POST', '/auth/refresh', {
      headers: {
        dpop: await new SignJWT({ htm: 'POST', htu: htu('/auth/refresh') })
          .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
          .setIssuedAt(now())
          .setJti(randomUUID())
          .sign(privateKey),
      },
      body: { refresh_token: bound.body.refresh_token },
    });
    expect(code(refresh)).toBe('invalid_grant');
  });

  it('enrolment: a recent sign-in, a public key only, one device per key; the admin API lists and shows devices', async () => {
    const token = await login();
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const priv = await call('POST', '/auth/devices', {
      headers: bearer(token),
      body: { name: 'x', jwk: await exportJWK(privateKey) },
    });
    expect(priv.status).toBe(400);
    const rsa = await generateKeyPair('RS256', { extractable: true });
    expect(
      (
        await call('POST', '/auth/devices', {
          headers: bearer(token),
          body: { name: 'x', jwk: await exportJWK(rsa.publicKey) },
        })
      ).status,
    ).toBe(400);
    const jwk = await exportJWK(publicKey);
    // The public key alone is not enough (it travels in every DPoP proof): the enroller must hold it.
    const bare = await call('POST', '/auth/devices', { headers: bearer(token), body: { name: 'x', jwk } });
    expect(code(bare)).toBe('invalid_dpop_proof');
    const thief = await generateKeyPair('ES256', { extractable: true });
    const notHers = await enrolKey(token, thief.privateKey, jwk, 'x', await exportJWK(thief.publicKey));
    expect(code(notHers)).toBe('invalid_dpop_proof');
    expect((await enrolKey(token, privateKey, jwk, 'x')).status).toBe(201);
    expect((await enrolKey(token, privateKey, jwk, 'y')).status).toBe(400);
    const garbage = await call('POST', '/auth/devices', {
      headers: bearer(token),
      body: {
        name: 'z',
        csr: `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(120)}\n-----END CERTIFICATE REQUEST-----\n`,
      },
    });
    expect(garbage.status).toBe(400);
    expect((await call('GET', '/auth/devices', { headers: bearer(token) })).status).toBe(200);
    const admin = await login(s.users.admin);
    const list = await call('GET', `/_portcullis/admin/devices?user=${s.users.viewer.username}`, {
      headers: bearer(admin),
    });
    expect(list.status).toBe(200);
    const devices = list.body.devices as { id: string; userId: string }[];
    expect(devices.length).toBeGreaterThanOrEqual(3);
    const one = await call('GET', `/_portcullis/admin/devices/${devices[0]?.id}`, { headers: bearer(admin) });
    expect(one.body.id).toBe(devices[0]?.id);
    expect(one.body).not.toHaveProperty('publicJwk');
    expect((await call('GET', '/_portcullis/admin/devices', { headers: bearer(token) })).status).toBe(403);

    // A token refreshed from an old sign-in is valid, but cannot enrol a device (a thief's token must not).
    const signIn = await call('POST', '/auth/login', {
      body: { username: s.users.viewer.username, password: s.users.viewer.password },
    });
    clock.advance(16 * 60_000);
    const refreshed = await call('POST', '/auth/refresh', {
      body: { refresh_token: signIn.body.refresh_token },
    });
    const late = refreshed.body.access_token as string;
    expect((await call('GET', '/api/docs', { headers: bearer(late) })).status).toBe(200);
    const other = await generateKeyPair('ES256', { extractable: true });
    const stale = await call('POST', '/auth/devices', {
      headers: bearer(late),
      body: { name: 'thief', jwk: await exportJWK(other.publicKey) },
    });
    expect(stale.status).toBe(401);
    expect(code(stale)).toBe('step_up_required');
  });
});

describe('compliance rules', () => {
  const report = {
    device: 'd',
    iat: 1,
    os: { name: 'Windows', version: '10.0.19045' },
    diskEncrypted: true,
    screenLock: true,
    firewall: false,
    agentVersion: '1.9.2',
    lastPatch: '2026-11-01T00:00:00Z',
  };
  const base = { diskEncryption: true, screenLock: true, firewall: false, minOsVersion: {} };
  const now = Date.UTC(2026, 11, 1);

  it('compares dotted versions numerically', () => {
    expect(compareVersions('14.10', '14.9')).toBe(1);
    expect(compareVersions('14', '14.0.0')).toBe(0);
    expect(compareVersions('10.0.19044', '10.0.19045')).toBe(-1);
  });

  it('names every rule that fails; OS names match case-insensitively', () => {
    expect(judgePosture(report, base, now)).toEqual({ compliant: true, failures: [] });
    expect(judgePosture({ ...report, lastPatch: '2027-01-01' }, base, now).failures).toEqual([
      'lastPatch: 2027-01-01 is in the future',
    ]);
    expect(
      judgePosture(
        report,
        {
          ...base,
          firewall: true,
          minOsVersion: { windows: '10.0.22631' },
          minAgentVersion: '1.10',
          maxPatchAge: 14 * 86_400_000,
          allowedOs: ['macos', 'linux'],
        },
        now,
      ).failures,
    ).toEqual([
      'os: Windows is not allowed',
      'firewall: the firewall is off',
      'minOsVersion: Windows 10.0.19045 is older than 10.0.22631',
      'minAgentVersion: agent 1.9.2 is older than 1.10',
      'maxPatchAge: last patched 30 days ago (2026-11-01T00:00:00Z)',
    ]);
  });
});
