import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineConfig } from '../src/config/index.js';
import { createLogger, manualClock } from '../src/core/index.js';
import { keyResolver } from '../src/identity/index.js';
import { type RunningPortcullis, startPortcullis } from '../src/portcullis.js';
import { verifyAssertion } from '../src/sdk/index.js';
import { startRecordingUpstream, tempDir, testConfig } from './helpers.js';

const HMAC_KEY = `${'k'.repeat(16)}an-upstream-only-secret-0123456789`;
const EXT_ISS = 'https://idp.example.test/';

describe('external issuers, the verified-token cache and HS256 assertions', () => {
  const t = tempDir();
  const clock = manualClock(Date.UTC(2026, 10, 23, 12, 0, 0));
  let pc: RunningPortcullis;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  let idpKey: KeyObject;
  let ownToken: string;

  const extToken = (
    sub: string,
    opts: {
      roles?: unknown;
      exp?: number;
      aud?: string;
      key?: KeyObject;
      cnf?: unknown;
      claims?: Record<string, unknown>;
    } = {},
  ) => {
    const now = Math.floor(clock.now() / 1000);
    return new SignJWT({
      ...opts.claims,
      roles: opts.roles ?? ['reader'],
      ...(opts.cnf !== undefined ? { cnf: opts.cnf } : {}),
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: 'idp-1' })
      .setIssuer(EXT_ISS)
      .setAudience(opts.aud ?? 'orders-api')
      .setSubject(sub)
      .setIssuedAt(now)
      .setExpirationTime(opts.exp ?? now + 600)
      .sign(opts.key ?? idpKey);
  };
  const call = (path: string, token: string) =>
    fetch(`${pc.gatewayUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    idpKey = pair.privateKey;
    writeFileSync(join(t.dir, 'idp.pem'), pair.publicKey.export({ type: 'spki', format: 'pem' }));
    const base = testConfig(join(t.dir, 'data'), upstream.url);
    const loaded = defineConfig(
      {
        ...base,
        issuers: {
          idp: {
            issuer: EXT_ISS,
            audience: 'orders-api',
            publicKeyFile: join(t.dir, 'idp.pem'),
            claims: ['tenant', 'email'],
          },
        },
        upstreams: {
          app: { url: upstream.url },
          hmac: { url: upstream.url, audience: 'hmac-app', assertion: { alg: 'HS256', key: HMAC_KEY } },
        },
        routes: [
          { id: 'partner', path: '/partner/*', upstream: 'app', issuers: ['idp'] },
          { id: 'both', path: '/both/*', upstream: 'hmac', issuers: ['portcullis', 'idp'] },
          { id: 'own', path: '/own/*', upstream: 'app' },
          { id: 'tenant', path: '/tenant/*', upstream: 'app', issuers: ['idp'] },
          { id: 'dept', path: '/dept/*', upstream: 'app', issuers: ['idp'] },
        ],
        policy: {
          rules: [
            { id: 'readers', routes: ['partner', 'both', 'own'], roles: ['reader', 'viewer'] },
            {
              id: 'acme-engineers',
              routes: ['tenant'],
              when: "principal.issuer == 'idp' && principal.tenant == 'acme' && 'eng' in principal.groups && principal.email.endsWith('@acme.test')",
            },
            { id: 'no-contractors', effect: 'deny', routes: ['tenant'], groups: ['contractors'] },
            {
              id: 'sales',
              routes: ['dept'],
              when: "principal.department == 'sales' || principal.issuer != 'idp'",
            },
          ],
        },
      },
      t.dir,
    );
    pc = await startPortcullis(loaded, { log: createLogger({ level: 'silent' }), clock });
    await pc.core.identity.createUser({ username: 'vic', password: 'vic-password-123', roles: ['viewer'] });
    const res = await fetch(`${pc.gatewayUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'vic', password: 'vic-password-123' }),
    });
    ownToken = (await res.json()).access_token;
  });
  afterAll(async () => {
    await pc.close();
    await upstream.close();
    t.cleanup();
  });

  it('accepts an external issuer’s token only on routes that list that issuer', async () => {
    const token = await extToken('partner-1');
    expect((await call('/partner/x', token)).status).toBe(200);
    expect((await call('/both/x', token)).status).toBe(200);
    const own = await call('/own/x', token);
    expect(own.status).toBe(401);
    expect((await own.json()).error.code).toBe('invalid_token');
    // ... and our own tokens only where `portcullis` is listed.
    expect((await call('/partner/x', ownToken)).status).toBe(401);
    expect((await call('/both/x', ownToken)).status).toBe(200);
    expect((await call('/own/x', ownToken)).status).toBe(200);
  });

  it('an external token bound to a key (cnf.jkt) is refused without a DPoP proof by that key', async () => {
    const bound = await call('/partner/x', await extToken('p-bound', { cnf: { jkt: 'A'.repeat(43) } }));
    expect(bound.status).toBe(401);
    expect((await bound.json()).error.code).toBe('invalid_dpop_proof');
    expect((await call('/partner/x', await extToken('p-bad', { cnf: 'x' }))).status).toBe(401);
  });

  it('reads roles from a space-separated claim too', async () => {
    expect((await call('/partner/x', await extToken('p2', { roles: 'auditor reader' }))).status).toBe(200);
    expect((await call('/partner/x', await extToken('p3', { roles: 'auditor' }))).status).toBe(403);
  });

  it('drops external roles that are not plain names, so a role list in a header stays unambiguous', async () => {
    const token = await extToken('p4', { roles: ['user,admin', 'reader', 'a b', 'x\u0000'] });
    expect((await call('/partner/x', token)).status).toBe(200);
    const assertion = upstream.received.at(-1)?.headers['x-portcullis-assertion'] as string;
    expect(JSON.parse(Buffer.from(assertion.split('.')[1] as string, 'base64url').toString()).roles).toEqual([
      'reader',
    ]);
    await expect(
      pc.core.identity.createUser({ username: 'eve', password: 'eve-password-123', roles: ['user,admin'] }),
    ).rejects.toMatchObject({
      code: 'invalid_body',
    });
  });

  it('gives policy the external token’s groups and the claims its issuer lists', async () => {
    const acme = { tenant: 'acme', email: 'ann@acme.test' };
    const status = async (sub: string, claims: Record<string, unknown>) =>
      (await call('/tenant/x', await extToken(sub, { claims }))).status;
    expect(await status('g1', { ...acme, groups: ['eng', '/eng/backend'] })).toBe(200);
    expect(await status('g2', { ...acme, groups: 'eng' })).toBe(200); // one group as a string
    // The condition reads each of them: another tenant, another mail domain, no group, no tenant claim.
    expect(await status('g3', { ...acme, tenant: 'globex', groups: ['eng'] })).toBe(403);
    expect(await status('g4', { ...acme, email: 'ann@globex.test', groups: ['eng'] })).toBe(403);
    expect(await status('g5', acme)).toBe(403);
    expect(await status('g6', { email: acme.email, groups: ['eng'] })).toBe(403);
    // A deny rule naming a group wins over the allow.
    const denied = await call(
      '/tenant/x',
      await extToken('g7', { claims: { ...acme, groups: ['eng', 'contractors'] } }),
    );
    expect(denied.status).toBe(403);
    expect((await denied.json()).error.code).toBe('forbidden');
    // A groups claim of another shape refuses the token: it must not read as "no groups" past a deny rule.
    for (const groups of [[1], { eng: true }, [['eng']], Array.from({ length: 257 }, (_, i) => `g${i}`)]) {
      const res = await call('/tenant/x', await extToken('g8', { claims: { ...acme, groups } }));
      expect(res.status).toBe(401);
      expect((await res.json()).error.code).toBe('invalid_token');
    }
    // A claim the issuer does not list stays out of policy (the `dept` rule reads it: no allow)...
    const listed = await extToken('g9', { claims: { ...acme, groups: ['eng'], department: 'sales' } });
    expect((await call('/tenant/x', listed)).status).toBe(200);
    expect((await call('/dept/x', listed)).status).toBe(403);
    // ... and built-in names come from the principal, whatever the token claims.
    const forged = await extToken('g10', { claims: { ...acme, groups: ['eng'], issuer: 'portcullis' } });
    expect((await call('/dept/x', forged)).status).toBe(403);
    expect((await call('/tenant/x', forged)).status).toBe(200);
  });

  it('refuses external tokens with the wrong key, audience, roles type or an expired lifetime', async () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const now = Math.floor(clock.now() / 1000);
    for (const token of [
      await extToken('p', { key: other }),
      await extToken('p', { aud: 'someone-else' }),
      await extToken('p', { roles: [1, 2] }),
      await extToken('p', { exp: now - 60 }),
    ]) {
      expect((await call('/partner/x', token)).status).toBe(401);
    }
  });

  it('verifies a signature once, then checks expiry on every request from the cache', async () => {
    const token = await extToken('cache-1', { exp: Math.floor(clock.now() / 1000) + 30 });
    const lookups = async () => {
      const m = await pc.core.metrics.tokenCache.get();
      const of = (r: string) => m.values.find((v) => v.labels.result === r)?.value ?? 0;
      return { hit: of('hit'), miss: of('miss') };
    };
    const before = await lookups();
    expect((await call('/partner/a', token)).status).toBe(200);
    expect((await call('/partner/b', token)).status).toBe(200);
    expect((await call('/partner/c', token)).status).toBe(200);
    const after = await lookups();
    expect(after.miss - before.miss).toBe(1);
    expect(after.hit - before.hit).toBe(2);
    clock.advance(40_000); // past exp (+5 s leeway)
    const late = await call('/partner/c', token);
    expect(late.status).toBe(401);
    expect((await late.json()).error.code).toBe('invalid_token');
    clock.advance(-40_000);
  });

  it('remembers a token refused for a lasting reason: the retry costs no signature verification', async () => {
    const lookups = async () => {
      const m = await pc.core.metrics.tokenCache.get();
      const of = (r: string) => m.values.find((v) => v.labels.result === r)?.value ?? 0;
      return { miss: of('miss'), refused: of('refused') };
    };
    const forged = await extToken('forger', {
      key: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
    });
    const before = await lookups();
    for (let i = 0; i < 3; i++) {
      const res = await call('/partner/x', forged);
      expect(res.status).toBe(401);
      expect((await res.json()).error.code).toBe('invalid_token');
    }
    const after = await lookups();
    expect(after.miss - before.miss).toBe(1); // verified (and refused) once
    expect(after.refused - before.refused).toBe(2); // then answered from the list
    // Remembered for a minute only.
    clock.advance(61_000);
    expect((await call('/partner/x', forged)).status).toBe(401);
    expect((await lookups()).miss - after.miss).toBe(1);
    clock.advance(-61_000);
  });

  it('remembers a validly signed token refused for the shape of its claims (groups, roles, cnf)', async () => {
    const lookups = async () => {
      const m = await pc.core.metrics.tokenCache.get();
      const of = (r: string) => m.values.find((v) => v.labels.result === r)?.value ?? 0;
      return { miss: of('miss'), refused: of('refused') };
    };
    const tokens = [
      await extToken('shape-groups', { claims: { groups: [1, 2] } }),
      await extToken('shape-roles', { roles: 42 }),
      await extToken('shape-cnf', { cnf: 'not-an-object' }),
    ];
    const before = await lookups();
    for (const token of tokens)
      for (let i = 0; i < 3; i++) {
        const res = await call('/partner/x', token);
        expect(res.status).toBe(401);
        expect((await res.json()).error.code).toBe('invalid_token');
      }
    const after = await lookups();
    expect(after.miss - before.miss).toBe(3); // each signature verified once…
    expect(after.refused - before.refused).toBe(6); // …then refused from memory
  });

  it('does not remember a token that is merely not yet valid: it is accepted once its nbf has come', async () => {
    const now = Math.floor(clock.now() / 1000);
    const early = await new SignJWT({ roles: ['reader'] })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: 'idp-1' })
      .setIssuer(EXT_ISS)
      .setAudience('orders-api')
      .setSubject('early')
      .setIssuedAt(now)
      .setNotBefore(now + 60)
      .setExpirationTime(now + 600)
      .sign(idpKey);
    expect((await call('/partner/x', early)).status).toBe(401);
    clock.advance(61_000);
    expect((await call('/partner/x', early)).status).toBe(200);
    clock.advance(-61_000);
  });

  it('a cached own token still dies with its session', async () => {
    expect((await call('/own/x', ownToken)).status).toBe(200); // cached now
    const session = (await pc.core.tokens.verifyAccessToken(ownToken)).sessionId;
    if (!session) throw new Error('own token without session');
    await pc.core.store.sessions.revoke(session, clock.now()); // e.g. by another replica or the CLI
    const res = await call('/own/x', ownToken);
    expect(res.status).toBe(401);
    expect((await res.json()).error.code).toBe('session_revoked');
  });

  it('signs HS256 assertions for an upstream with its own key, verifiable with jose and that key only', async () => {
    const token = await extToken('hmac-user');
    expect((await call('/both/thing?q=1', token)).status).toBe(200);
    const seen = upstream.received.at(-1);
    const assertion = seen?.headers['x-portcullis-assertion'] as string;
    expect(JSON.parse(Buffer.from(assertion.split('.')[0] as string, 'base64url').toString())).toEqual({
      alg: 'HS256',
      typ: 'portcullis-assertion+jwt',
    });
    const claims = await verifyAssertion(assertion, new TextEncoder().encode(HMAC_KEY), {
      issuer: 'http://portcullis.test',
      audience: 'hmac-app',
      request: { method: 'GET', target: '/both/thing?q=1' },
      currentDate: new Date(clock.now()),
    });
    expect(claims).toMatchObject({ sub: 'hmac-user', roles: ['reader'], route: 'both' });
    expect(claims.sid).toBeUndefined();
    // Another key, or the public JWKS, does not verify it.
    await expect(
      verifyAssertion(assertion, new TextEncoder().encode(`${HMAC_KEY}x`), {
        issuer: 'http://portcullis.test',
        audience: 'hmac-app',
        currentDate: new Date(clock.now()),
      }),
    ).rejects.toThrow(/signature/);
    await expect(
      verifyAssertion(assertion, keyResolver(pc.core.keys.jwks()), {
        issuer: 'http://portcullis.test',
        audience: 'hmac-app',
        currentDate: new Date(clock.now()),
      }),
    ).rejects.toThrow(/algorithm/);
  });

  it('refuses an HS256 assertion key shorter than 32 bytes at load', () => {
    expect(() =>
      defineConfig({
        ...testConfig(t.dir, 'http://127.0.0.1:1'),
        upstreams: { app: { url: 'http://127.0.0.1:1', assertion: { alg: 'HS256', key: 'short' } } },
      }),
    ).toThrow(/upstreams\.app\.assertion\.key: an HS256 assertion key must be at least 32 bytes/);
  });
});
