import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { defineConfig } from '../src/config/index.js';
import { manualClock } from '../src/core/index.js';
import {
  BearerAuthenticator,
  inspectJwk,
  loadJwksFile,
  loadPublicKeyFile,
  parseJwks,
  RemoteKeySet,
  type RemoteKeySetOptions,
  type TokenService,
  TokenVerificationError,
  verifyToken,
} from '../src/identity/index.js';
import type { PublicKeyAlg } from '../src/identity/key-hygiene.js';
import { startStack, tempDir, testConfig } from './helpers.js';

/** A loopback OpenID Provider: discovery + JWKS, with request counters and knobs. */
interface FakeIdp {
  url: string;
  issuer: string;
  hits: { discovery: number; jwks: number; other: number };
  /** What /jwks answers: a document, or an HTTP status to fail with. */
  jwks: { keys: unknown[] } | number;
  /** The discovery document's `issuer` (default: the real one). */
  docIssuer: string | undefined;
  cacheControl: string | undefined;
  /** Milliseconds /jwks waits before answering. */
  delayMs: number;
  close(): Promise<void>;
}

async function startIdp(): Promise<FakeIdp> {
  const idp = {
    hits: { discovery: 0, jwks: 0, other: 0 },
    jwks: { keys: [] as unknown[] } as FakeIdp['jwks'],
    docIssuer: undefined as string | undefined,
    cacheControl: undefined as string | undefined,
    delayMs: 0,
  } as FakeIdp;
  const server: Server = createServer((req, res) => {
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    if (req.url === '/realms/acme/.well-known/openid-configuration') {
      idp.hits.discovery += 1;
      send(200, {
        issuer: idp.docIssuer ?? idp.issuer,
        jwks_uri: `${idp.url}/realms/acme/jwks`,
        id_token_signing_alg_values_supported: ['RS256'],
      });
    } else if (req.url === '/realms/acme/jwks') {
      idp.hits.jwks += 1;
      const { jwks } = idp;
      setTimeout(() => {
        if (typeof jwks === 'number') send(jwks, { error: 'down' });
        else send(200, jwks, idp.cacheControl ? { 'cache-control': idp.cacheControl } : {});
      }, idp.delayMs);
    } else {
      idp.hits.other += 1;
      send(404, {});
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  idp.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  idp.issuer = `${idp.url}/realms/acme`;
  idp.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return idp;
}

type Alg = PublicKeyAlg;
interface TestKey {
  kid: string;
  alg: Alg;
  privateKey: KeyObject;
  jwk: Record<string, unknown>;
}

function makeKey(
  kid: string,
  alg: Alg,
  opts: { bits?: number; e?: number; withAlg?: boolean } = {},
): TestKey {
  const pair =
    alg === 'RS256' || alg === 'PS256'
      ? generateKeyPairSync('rsa', { modulusLength: opts.bits ?? 2048, publicExponent: opts.e ?? 65537 })
      : alg === 'EdDSA'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('ec', { namedCurve: alg === 'ES256' ? 'P-256' : 'P-384' });
  const jwk = {
    ...pair.publicKey.export({ format: 'jwk' }),
    kid,
    use: 'sig',
    ...(opts.withAlg === false ? {} : { alg }),
  };
  return { kid, alg, privateKey: pair.privateKey, jwk };
}

const AUD = 'orders-api';
const NOW = Date.UTC(2026, 10, 23, 12, 0, 0);

function sign(
  idp: FakeIdp,
  key: Pick<TestKey, 'privateKey' | 'alg'> & { kid?: string | undefined },
  header: Record<string, unknown> = {},
  alg: Alg = key.alg,
) {
  const now = Math.floor(NOW / 1000);
  return new SignJWT({ roles: ['reader'] })
    .setProtectedHeader({ alg, typ: 'JWT', ...(key.kid === undefined ? {} : { kid: key.kid }), ...header })
    .setIssuer(idp.issuer)
    .setAudience(AUD)
    .setSubject('user-1')
    .setIssuedAt(now)
    .setExpirationTime(now + 600)
    .sign(key.privateKey);
}

describe('external issuers: JWKS fetching, caching and key hygiene', () => {
  let idp: FakeIdp;
  const clock = manualClock(NOW);
  const sets: RemoteKeySet[] = [];
  const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
  const log = {
    warn: (obj: object, msg: string) => warnings.push({ obj: obj as Record<string, unknown>, msg }),
  };

  const keySet = (algorithms: Alg[], extra: Partial<RemoteKeySetOptions> = {}) => {
    const set = new RemoteKeySet({
      issuer: idp.issuer,
      algorithms,
      source: { discoveryUrl: new URL(`${idp.issuer}/.well-known/openid-configuration`) },
      allowInsecure: true,
      cooldownMs: 30_000,
      clock,
      log,
      ...extra,
    });
    sets.push(set);
    return set;
  };
  const verify = (token: string, set: RemoteKeySet, algorithms: Alg[]) =>
    verifyToken(token, set.getKey, {
      issuer: idp.issuer,
      audience: AUD,
      algorithms,
      currentDate: new Date(clock.now()),
    });
  const failure = async (p: Promise<unknown>) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TokenVerificationError);
    return (err as TokenVerificationError).failure;
  };
  const reset = (jwks: FakeIdp['jwks']) => {
    idp.jwks = jwks;
    idp.hits.discovery = 0;
    idp.hits.jwks = 0;
    idp.hits.other = 0;
    idp.docIssuer = undefined;
    idp.cacheControl = undefined;
    idp.delayMs = 0;
    warnings.length = 0;
  };

  beforeAll(async () => {
    idp = await startIdp();
  });
  afterEach(() => {
    for (const s of sets.splice(0)) s.stop();
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    await idp.close();
  });

  it('finds the key set through discovery and verifies an RS256 token from a 2048-bit key', async () => {
    const k = makeKey('rs-1', 'RS256');
    reset({ keys: [k.jwk] });
    const set = keySet(['RS256']);
    const claims = await verify(await sign(idp, k), set, ['RS256']);
    expect(claims).toMatchObject({ sub: 'user-1', iss: idp.issuer });
    expect(idp.hits).toEqual({ discovery: 1, jwks: 1, other: 0 });
    // Verified again from memory: no more requests.
    await verify(await sign(idp, k), set, ['RS256']);
    expect(idp.hits).toEqual({ discovery: 1, jwks: 1, other: 0 });
  });

  it('refuses a discovery document that names another issuer (and never fetches its keys)', async () => {
    const k = makeKey('rs-1', 'RS256');
    reset({ keys: [k.jwk] });
    idp.docIssuer = `${idp.issuer}/`; // one trailing slash is another issuer
    const set = keySet(['RS256']);
    await expect(set.refresh()).rejects.toThrow(/issuer .* is not/);
    expect(idp.hits.jwks).toBe(0);
    clock.advance(31_000);
    expect(await failure(verify(await sign(idp, k), set, ['RS256']))).toBe('keys_unavailable');
    expect(idp.hits).toEqual({ discovery: 2, jwks: 0, other: 0 });
    expect(warnings.some((w) => /fetch failed/.test(w.msg))).toBe(true);
  });

  it('an unknown kid triggers exactly one refetch per cooldown, and picks up a key rotated in at the IdP', async () => {
    const k1 = makeKey('k1', 'ES256');
    const k2 = makeKey('k2', 'ES256');
    const k3 = makeKey('k3', 'ES256');
    reset({ keys: [k1.jwk] });
    const set = keySet(['ES256']);
    await verify(await sign(idp, k1), set, ['ES256']);
    expect(idp.hits.jwks).toBe(1);

    // The IdP rotates k2 in: the first token signed by it causes one refetch and is accepted.
    idp.jwks = { keys: [k1.jwk, k2.jwk] };
    clock.advance(31_000);
    await verify(await sign(idp, k2), set, ['ES256']);
    expect(idp.hits.jwks).toBe(2);
    expect(set.kids).toEqual(['k1', 'k2']);

    // A second unknown kid inside the cooldown: refused, and no request reaches the IdP.
    idp.jwks = { keys: [k1.jwk, k2.jwk, k3.jwk] };
    clock.advance(10_000);
    expect(await failure(verify(await sign(idp, k3), set, ['ES256']))).toBe('unknown_key');
    expect(await failure(verify(await sign(idp, { ...k3, kid: 'nope' }), set, ['ES256']))).toBe(
      'unknown_key',
    );
    expect(idp.hits.jwks).toBe(2);

    // After the cooldown, one more refetch, which finds k3.
    clock.advance(21_000);
    await verify(await sign(idp, k3), set, ['ES256']);
    expect(idp.hits.jwks).toBe(3);
    expect(idp.hits.discovery).toBe(1);
  });

  it('20 concurrent tokens with unknown kids share one fetch', async () => {
    const k1 = makeKey('c1', 'ES256');
    const k2 = makeKey('c2', 'ES256');
    reset({ keys: [k1.jwk] });
    const set = keySet(['ES256']);
    await set.refresh();
    expect(idp.hits.jwks).toBe(1);
    idp.jwks = { keys: [k1.jwk, k2.jwk] };
    idp.delayMs = 50;
    clock.advance(31_000);
    const tokens = await Promise.all(
      Array.from({ length: 20 }, (_, i) => sign(idp, i % 2 ? k2 : { ...k2, kid: `unknown-${i}` })),
    );
    const results = await Promise.allSettled(tokens.map((t) => verify(t, set, ['ES256'])));
    expect(idp.hits.jwks).toBe(2);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10); // the c2 ones
  });

  it('keeps serving the known keys when a refetch fails; only unknown kids are refused', async () => {
    const k1 = makeKey('f1', 'EdDSA');
    const k2 = makeKey('f2', 'EdDSA');
    reset({ keys: [k1.jwk] });
    const set = keySet(['EdDSA']);
    await verify(await sign(idp, k1), set, ['EdDSA']);
    idp.jwks = 503;
    clock.advance(31_000);
    await expect(set.refresh()).rejects.toThrow(/HTTP 503/);
    expect(await failure(verify(await sign(idp, k2), set, ['EdDSA']))).toBe('unknown_key');
    await verify(await sign(idp, k1), set, ['EdDSA']); // still good
    expect(set.kids).toEqual(['f1']);
    // A key set that is not JSON, or has no usable key, is a failed fetch too.
    idp.jwks = { keys: [makeKey('es', 'ES256').jwk] };
    clock.advance(31_000);
    await expect(set.refresh()).rejects.toThrow(/no usable key/);
    await verify(await sign(idp, k1), set, ['EdDSA']);
  });

  it('drops a 1024-bit RSA key and one with e = 3, with a warning; the rest of the set stays', async () => {
    const good = makeKey('rsa-good', 'RS256');
    const small = makeKey('rsa-1024', 'RS256', { bits: 1024 });
    const e3 = makeKey('rsa-e3', 'RS256', { e: 3 });
    reset({ keys: [small.jwk, e3.jwk, good.jwk] });
    const set = keySet(['RS256']);
    await set.refresh();
    expect(set.kids).toEqual(['rsa-good']);
    const dropped = warnings.filter((w) => w.msg === 'jwks: key dropped');
    expect(dropped.map((w) => [w.obj.kid, w.obj.reason])).toEqual([
      ['rsa-1024', 'RSA modulus of 1024 bits is below 2048'],
      ['rsa-e3', 'RSA public exponent 3 is not an odd number in [65537, 2^256)'],
    ]);
    // jose can sign with the e = 3 key (2048 bits); the token is still refused: the key is not trusted.
    expect(await failure(verify(await sign(idp, e3), set, ['RS256']))).toBe('unknown_key');
    await verify(await sign(idp, good), set, ['RS256']);
  });

  it('refuses Ed25519 keys of small order, non-canonical or off the curve', () => {
    // The eight points of order dividing 8 (as listed by libsodium's ge25519_has_small_order and
    // Wycheproof's EdDSA vectors), and the non-canonical spellings y = p, p + 1.
    const hex = [
      '0000000000000000000000000000000000000000000000000000000000000000',
      '0000000000000000000000000000000000000000000000000000000000000080',
      '0100000000000000000000000000000000000000000000000000000000000000',
      '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
      '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85',
      'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
      'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa',
      'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      '0100000000000000000000000000000000000000000000000000000000000080',
    ];
    for (const h of hex) {
      const x = Buffer.from(h, 'hex').toString('base64url');
      expect(() => inspectJwk({ kty: 'OKP', crv: 'Ed25519', x }, ['EdDSA']), h).toThrow(
        /small order|not canonically encoded/,
      );
    }
    // y = 2 is not the y of any curve point (x² would not be a square).
    const offCurve = Buffer.alloc(32);
    offCurve[0] = 2;
    expect(() =>
      inspectJwk({ kty: 'OKP', crv: 'Ed25519', x: offCurve.toString('base64url') }, ['EdDSA']),
    ).toThrow(/not on the curve/);
    const onCurve = Buffer.alloc(32);
    onCurve[0] = 3; // y = 3 is (its x² is a square)
    expect(inspectJwk({ kty: 'OKP', crv: 'Ed25519', x: onCurve.toString('base64url') }, ['EdDSA']).alg).toBe(
      'EdDSA',
    );
    // A real key passes, and is pinned to EdDSA.
    expect(inspectJwk(makeKey('ed', 'EdDSA').jwk, ['EdDSA', 'ES256']).alg).toBe('EdDSA');
  });

  it('drops a small-order Ed25519 key from a fetched set', async () => {
    const good = makeKey('ed-good', 'EdDSA');
    const zero = { kty: 'OKP', crv: 'Ed25519', kid: 'ed-zero', x: Buffer.alloc(32).toString('base64url') };
    reset({ keys: [zero, good.jwk] });
    const set = keySet(['EdDSA']);
    await set.refresh();
    expect(set.kids).toEqual(['ed-good']);
    expect(warnings.find((w) => w.obj.kid === 'ed-zero')?.obj.reason).toBe('Ed25519 point has small order');
  });

  it('refuses EC points off the curve and curves that do not match the algorithm', () => {
    const { jwk } = makeKey('p256', 'ES256');
    const y = Buffer.from(jwk.y as string, 'base64url');
    y[31] = (y[31] as number) ^ 1;
    expect(() => inspectJwk({ ...jwk, y: y.toString('base64url') }, ['ES256'])).toThrow(/not a valid EC/);
    expect(() => inspectJwk({ ...jwk, alg: 'ES384' }, ['ES384'])).toThrow(
      /curve P-256 cannot be used with ES384/,
    );
  });

  it('uses a key only with its own algorithm: an ES256 key does not verify an ES384 token', async () => {
    const es256 = makeKey('shared', 'ES256');
    const es384 = makeKey('shared', 'ES384'); // same kid, another key the IdP does not publish
    reset({ keys: [es256.jwk] });
    const set = keySet(['ES256', 'ES384']);
    await set.refresh();
    expect(await failure(verify(await sign(idp, es384), set, ['ES256', 'ES384']))).toBe('unknown_key');
    // A known kid asked for with another algorithm is not a rotation: no refetch.
    clock.advance(31_000);
    expect(await failure(verify(await sign(idp, es384), set, ['ES256', 'ES384']))).toBe('unknown_key');
    expect(idp.hits.jwks).toBe(1);
    await verify(await sign(idp, es256), set, ['ES256', 'ES384']);
    // ES384 works with a P-384 key that says so.
    const p384 = makeKey('p384', 'ES384');
    idp.jwks = { keys: [es256.jwk, p384.jwk] };
    await verify(await sign(idp, p384), set, ['ES256', 'ES384']);
  });

  it('a key without alg is used only with the one algorithm its type implies', () => {
    const rsa = makeKey('r', 'RS256', { withAlg: false }).jwk;
    expect(inspectJwk(rsa, ['RS256', 'ES256']).alg).toBe('RS256');
    expect(inspectJwk(rsa, ['PS256']).alg).toBe('PS256');
    expect(() => inspectJwk(rsa, ['RS256', 'PS256'])).toThrow(/ambiguous/);
    expect(() => inspectJwk(rsa, ['ES256'])).toThrow(/no RSA algorithm/);
    expect(inspectJwk(makeKey('e', 'ES384', { withAlg: false }).jwk, ['ES256', 'ES384']).alg).toBe('ES384');
    expect(() => inspectJwk({ ...rsa, use: 'enc' }, ['RS256'])).toThrow(/"use"/);
    expect(() => inspectJwk({ ...rsa, key_ops: ['encrypt'] }, ['RS256'])).toThrow(/key_ops/);
    expect(() => inspectJwk({ ...rsa, alg: 'HS256' }, ['RS256'])).toThrow(/not one of/);
    // `use: enc` keys (common in IdP key sets) are skipped quietly, not reported as unsafe.
    const { keys, dropped } = parseJwks({ keys: [{ ...rsa, use: 'enc', alg: 'RSA-OAEP' }, rsa] }, ['RS256']);
    expect(keys).toHaveLength(1);
    expect(dropped.map((d) => d.reason.kind)).toEqual(['unused']);
  });

  it('refuses a key set that publishes private key material, and stops trusting that key', async () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pub = { ...pair.publicKey.export({ format: 'jwk' }), kid: 'leaky', alg: 'ES256' };
    const priv = { ...pair.privateKey.export({ format: 'jwk' }), kid: 'leaky', alg: 'ES256' };
    const other = makeKey('fine', 'ES256');
    expect(() => parseJwks({ keys: [other.jwk, priv] }, ['ES256'])).toThrow(
      /private key material \(keys leaky\)/,
    );
    expect(() => inspectJwk(priv, ['ES256'])).toThrow(/private key material \("d"\)/);

    reset({ keys: [pub, other.jwk] });
    const set = keySet(['ES256']);
    await set.refresh();
    expect(set.kids).toEqual(['leaky', 'fine']);
    idp.jwks = { keys: [priv, other.jwk] };
    clock.advance(31_000);
    await expect(set.refresh()).rejects.toThrow(/private key material/);
    expect(set.kids).toEqual(['fine']); // the leaked key is no longer trusted; the others stay
    const leakedToken = await sign(idp, { privateKey: pair.privateKey, alg: 'ES256', kid: 'leaky' });
    expect(await failure(verify(leakedToken, set, ['ES256']))).toBe('unknown_key');
  });

  it('never follows jku, x5u, x5c or an embedded jwk: such tokens are refused before any key lookup', async () => {
    const k = makeKey('h1', 'ES256');
    reset({ keys: [k.jwk] });
    const set = keySet(['ES256']);
    const headers: Record<string, unknown>[] = [
      { jku: `${idp.url}/attacker/jwks` },
      { x5u: `${idp.url}/attacker/cert.pem` },
      { x5c: ['MIIB'] },
      { jwk: { kty: 'EC', crv: 'P-256', x: k.jwk.x, y: k.jwk.y } },
    ];
    for (const header of headers) {
      const token = await sign(idp, k, header);
      const err = await verify(token, set, ['ES256']).catch((e: unknown) => e);
      expect(err).toMatchObject({
        failure: 'malformed',
        message: expect.stringMatching(/header member .* is not accepted/),
      });
    }
    expect(idp.hits).toEqual({ discovery: 0, jwks: 0, other: 0 });
  });

  it('bounds the background refresh by Cache-Control max-age to [5 min, 24 h], default 1 h', async () => {
    const k = makeKey('cc', 'ES256');
    const delays = async (cacheControl: string | undefined) => {
      reset({ keys: [k.jwk] });
      idp.cacheControl = cacheControl;
      const spy = vi.spyOn(globalThis, 'setTimeout');
      const set = keySet(['ES256']);
      await set.refresh();
      // Our refresh timer (not the HTTP client's own timers).
      const ms = spy.mock.calls.filter((c) => String(c[0]).includes('refresh')).map((c) => c[1]);
      spy.mockRestore();
      set.stop();
      return ms;
    };
    expect(await delays(undefined)).toEqual([3_600_000]);
    expect(await delays('public, max-age=60')).toEqual([300_000]);
    expect(await delays('max-age=7200')).toEqual([7_200_000]);
    expect(await delays('max-age=9999999')).toEqual([86_400_000]);
    expect(await delays('no-store')).toEqual([300_000]);
  });

  it('refuses http URLs unless allowInsecure, and oversized documents', async () => {
    const k = makeKey('big', 'ES256');
    reset({ keys: [k.jwk, { kty: 'oct', kid: 'x'.repeat(2000) }] });
    await expect(keySet(['ES256'], { allowInsecure: false }).refresh()).rejects.toThrow(/https is required/);
    expect(idp.hits).toEqual({ discovery: 0, jwks: 0, other: 0 });
    await expect(keySet(['ES256'], { maxBytes: 1000 }).refresh()).rejects.toThrow(/more than 1000 bytes/);
    expect(idp.hits).toEqual({ discovery: 1, jwks: 1, other: 0 });
  });
});

describe('local key files get the same hygiene at load', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  it('a weak key in a JWKS file is a startup error naming the file and the kid', async () => {
    const file = join(t.dir, 'jwks.json');
    writeFileSync(
      file,
      JSON.stringify({ keys: [makeKey('ok', 'RS256').jwk, makeKey('weak-e', 'RS256', { e: 3 }).jwk] }),
    );
    expect(() => loadJwksFile('issuers.idp.jwksFile', file, ['RS256'])).toThrow(
      `issuers.idp.jwksFile ${file}: key "weak-e" (#1): RSA public exponent 3 is not an odd number in [65537, 2^256)`,
    );
    await expect(
      BearerAuthenticator.create({
        own: {} as TokenService,
        ownIssuer: 'http://portcullis.test',
        issuers: {
          idp: {
            issuer: 'https://idp.test/',
            audience: 'x',
            jwksFile: 'jwks.json',
            allowInsecure: false,
            jwksCooldown: 30_000,
            algorithms: ['RS256'],
            rolesClaim: 'roles',
            groupsClaim: 'groups',
            claims: [],
          },
        },
        baseDir: t.dir,
        clock: manualClock(NOW),
        cacheSize: 0,
      }),
    ).rejects.toThrow(/issuers\.idp\.jwksFile .*jwks\.json: key "weak-e"/);
    writeFileSync(file, JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }] }));
    expect(() => loadJwksFile('issuers.idp.jwksFile', file, ['ES256'])).toThrow(
      /key #0: not a valid EC public key/,
    );
  });

  it('a reload that cannot build its authenticator gives back the key sets it took from the running one', async () => {
    const remote = {
      issuer: 'https://idp.test/',
      audience: 'x',
      jwksUrl: 'https://idp.test/jwks',
      allowInsecure: false,
      jwksCooldown: 30_000,
      algorithms: ['RS256' as const],
      rolesClaim: 'roles',
      groupsClaim: 'groups',
      claims: [],
    };
    const options = {
      own: {} as TokenService,
      ownIssuer: 'http://portcullis.test',
      baseDir: t.dir,
      clock: manualClock(NOW),
      cacheSize: 0,
    };
    const running = await BearerAuthenticator.create({ ...options, issuers: { idp: remote } });
    // The unchanged issuer's key set is taken over, then a second issuer's file is missing: no authenticator.
    await expect(
      BearerAuthenticator.create({
        ...options,
        previous: running,
        issuers: {
          idp: remote,
          other: { ...remote, issuer: 'https://other.test/', jwksFile: 'missing.json' },
        },
      }),
    ).rejects.toThrow(/missing\.json/);
    const stop = vi.spyOn(RemoteKeySet.prototype, 'stop');
    // The running authenticator is later replaced or closed: its key set is no longer used by anyone.
    running.close();
    expect(stop).toHaveBeenCalledTimes(1);
    stop.mockRestore();
  });

  it('a weak PEM key is a startup error; a sound one is pinned to the one algorithm it implies', () => {
    const file = join(t.dir, 'idp.pem');
    const pem = (k: KeyObject) => k.export({ type: 'spki', format: 'pem' }) as string;
    writeFileSync(file, pem(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey));
    expect(() => loadPublicKeyFile('issuers.idp.publicKeyFile', file, ['RS256'])).toThrow(
      `issuers.idp.publicKeyFile ${file}: RSA modulus of 1024 bits is below 2048`,
    );
    writeFileSync(file, pem(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey));
    expect(loadPublicKeyFile('issuers.idp.publicKeyFile', file, ['ES256', 'ES384']).alg).toBe('ES384');
    expect(() => loadPublicKeyFile('issuers.idp.publicKeyFile', file, ['ES256'])).toThrow(
      /implies ES384, which is not configured/,
    );
  });
});

describe('issuer config', () => {
  const base = testConfig('/tmp/unused', 'http://127.0.0.1:1');
  const issuer = (v: Record<string, unknown>) => () =>
    defineConfig({
      ...base,
      issuers: { idp: { issuer: 'https://idp.test/realms/a', audience: 'x', ...v } },
    } as Parameters<typeof defineConfig>[0]);

  it('takes exactly one key source, with a clear message', () => {
    expect(issuer({ discovery: true, jwksUrl: 'https://idp.test/jwks' })).toThrow(
      /give exactly one of publicKeyFile, jwksFile, jwksUrl, discovery \(got jwksUrl, discovery\)/,
    );
    expect(issuer({})).toThrow(/give exactly one of publicKeyFile, jwksFile, jwksUrl, discovery/);
    expect(issuer({ discovery: true, algorithms: ['RS256', 'PS256', 'ES384'] })).not.toThrow();
    expect(issuer({ discovery: 'https://idp.test/.well-known/oauth-authorization-server/a' })).not.toThrow();
  });

  it('requires https unless allowInsecure, and never accepts none or HS*', () => {
    expect(() =>
      defineConfig({
        ...base,
        issuers: { idp: { issuer: 'http://idp.test', audience: 'x', discovery: true } },
      }),
    ).toThrow(/issuers\.idp\.issuer: issuer must be an https URL/);
    expect(issuer({ jwksUrl: 'http://idp.test/jwks' })).toThrow(/jwksUrl must be an https URL/);
    expect(issuer({ jwksUrl: 'http://idp.test/jwks', allowInsecure: true })).not.toThrow();
    expect(issuer({ discovery: true, algorithms: ['HS256'] })).toThrow(/algorithms/);
    expect(issuer({ discovery: true, algorithms: ['none'] })).toThrow(/algorithms/);
  });
});

describe('gateway: an external issuer configured by discovery', () => {
  let idp: FakeIdp;
  let stack: Awaited<ReturnType<typeof startStack>>;
  const key = makeKey('kc-1', 'RS256');

  beforeAll(async () => {
    idp = await startIdp();
    idp.jwks = { keys: [key.jwk] };
    stack = await startStack({
      issuers: {
        keycloak: {
          issuer: idp.issuer,
          audience: AUD,
          discovery: true,
          allowInsecure: true,
          algorithms: ['RS256'],
        },
      },
      routes: [{ id: 'partner', path: '/partner/*', upstream: 'app', issuers: ['keycloak'] }],
      policy: { rules: [{ id: 'readers', routes: ['partner'], roles: ['reader'] }] },
    });
  });
  afterAll(async () => {
    await stack.close();
    await idp.close();
  });

  it('authenticates an RS256 token from the discovered key set on a route that accepts that issuer', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = (kid: string) =>
      new SignJWT({ roles: ['reader'] })
        .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid })
        .setIssuer(idp.issuer)
        .setAudience(AUD)
        .setSubject('kc-user')
        .setIssuedAt(now)
        .setExpirationTime(now + 300)
        .sign(key.privateKey);
    const call = async (t: string) =>
      fetch(`${stack.pc.gatewayUrl}/partner/x`, { headers: { authorization: `Bearer ${t}` } });
    const ok = await call(await token('kc-1'));
    expect(ok.status).toBe(200);
    expect(stack.upstream.received.at(-1)?.url).toBe('/partner/x');
    expect(idp.hits).toMatchObject({ discovery: 1, jwks: 1 });
    const bad = await call(await token('kc-unknown'));
    expect(bad.status).toBe(401);
    expect((await bad.json()).error.code).toBe('invalid_token');
    expect(idp.hits.jwks).toBe(1); // an unknown kid right after the first fetch: inside the cooldown
  });

  it('a reload keeps the fetched key set of an unchanged issuer: the IdP may be down at that moment', async () => {
    const overrides = (cooldown: string) => ({
      issuers: {
        keycloak: {
          issuer: idp.issuer,
          audience: AUD,
          discovery: true as const,
          allowInsecure: true,
          algorithms: ['RS256' as const],
          jwksCooldown: cooldown,
        },
      },
      routes: [{ id: 'partner', path: '/partner/*', upstream: 'app', issuers: ['keycloak'] }],
      policy: { rules: [{ id: 'readers', routes: ['partner'], roles: ['reader'] }] },
    });
    const now = Math.floor(Date.now() / 1000);
    const token = (sub: string) =>
      new SignJWT({ roles: ['reader'] })
        .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: 'kc-1' })
        .setIssuer(idp.issuer)
        .setAudience(AUD)
        .setSubject(sub)
        .setIssuedAt(now)
        .setExpirationTime(now + 300)
        .sign(key.privateKey);
    const call = async (t: string) =>
      (await fetch(`${stack.pc.gatewayUrl}/partner/x`, { headers: { authorization: `Bearer ${t}` } })).status;
    expect(await call(await token('before'))).toBe(200);
    idp.jwks = 503;
    const hits = idp.hits.jwks + idp.hits.discovery;
    // Same issuer config (30s is the default cooldown): the new gateway uses the keys already fetched.
    const same = await stack.pc.reload(
      defineConfig(testConfig(stack.dataDir, stack.upstream.url, overrides('30s'))),
    );
    expect(same.ok).toBe(true);
    expect(await call(await token('after-reload'))).toBe(200); // a new token: verified with the kept key
    expect(idp.hits.jwks + idp.hits.discovery).toBe(hits);
    // A changed issuer config starts a key set of its own, which cannot be fetched now: refused.
    expect(
      (await stack.pc.reload(defineConfig(testConfig(stack.dataDir, stack.upstream.url, overrides('45s')))))
        .ok,
    ).toBe(true);
    expect(await call(await token('changed'))).toBe(401);
    idp.jwks = { keys: [key.jwk] };
  });
});
