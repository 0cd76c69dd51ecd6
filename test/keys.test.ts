import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { manualClock } from '../src/core/index.js';
import { KeyRing } from '../src/identity/index.js';
import { captureIO, startStack, tempDir, writeConfigFile } from './helpers.js';

const header = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[0] as string, 'base64url').toString());
const MIN = 60_000;
const DAY = 86_400_000;

describe('access-token signing keys: rotation with overlap', () => {
  it('publishes the next key ahead, switches, keeps the retiring key until its tokens expire, then drops it', async () => {
    const clock = manualClock(Date.UTC(2026, 11, 1));
    const s = await startStack(
      {
        identity: {
          accessTokenTtl: '10m',
        },
      },
      undefined,
      { clock },
    );
    try {
      const jwksKids = async () =>
        ((await (await fetch(`${s.pc.gatewayUrl}/.well-known/jwks.json`)).json()).keys as { kid: string }[])
          .map((k) => k.kid)
          .filter((k) => k !== s.pc.core.keys.assertion.kid);
      const login = async () =>
        (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
      const get = (t: string) =>
        fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${t}` } }).then(
          (r) => r.status,
        );

      const a = await login();
      const k1 = header(a).kid as string;
      expect(header(a)).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
      const k2 = (await s.pc.core.keys.rotate('ES256', MIN)).kid;
      expect(await jwksKids()).toEqual([k1, k2]); // next key published before it signs
      expect(header(await login()).kid).toBe(k1);

      clock.advance(MIN + 1000);
      const b = await login();
      expect(header(b).kid).toBe(k2);
      expect(await get(a)).toBe(200); // signed by the retiring key, still valid
      expect(await get(b)).toBe(200);
      expect(await jwksKids()).toEqual([k1, k2]);
      expect(s.pc.core.keys.list().map((k) => [k.kid, k.state])).toEqual([
        [k1, 'retiring'],
        [k2, 'current'],
      ]);

      clock.advance(12 * MIN); // past A's expiry and the retention (TTL + 1 min)
      await s.pc.maintainKeys();
      expect(await jwksKids()).toEqual([k2]);
      expect(readdirSync(join(s.dataDir, 'keys', 'access-token'))).toEqual([`${k2}.json`]);
      await s.pc.core.audit.flush();
      const types: string[] = [];
      for await (const r of s.pc.core.store.audit.scan()) types.push(r.type);
      expect(types).toContain('keys.retired');
    } finally {
      await s.close();
    }
  });

  it('rotates on schedule: the successor is published publishAhead before rotateEvery, and takes over', async () => {
    const clock = manualClock(Date.UTC(2026, 11, 1));
    const s = await startStack(
      {
        identity: {
          signingKeys: { algorithm: 'ES256', rotateEvery: '30d', publishAhead: '1d' },
        },
      },
      undefined,
      { clock },
    );
    try {
      const [first] = s.pc.core.keys.list();
      clock.advance(28 * DAY);
      await s.pc.maintainKeys();
      expect(s.pc.core.keys.list()).toHaveLength(1);
      clock.advance(DAY + MIN);
      await s.pc.maintainKeys();
      const now = s.pc.core.keys.list();
      expect(now.map((k) => k.state)).toEqual(['current', 'next']);
      expect(now[1]?.activatesAt).toBe(Date.UTC(2026, 11, 1) + 30 * DAY);
      clock.advance(DAY);
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      expect(header(token).kid).toBe(now[1]?.kid);
      expect(header(token).kid).not.toBe(first?.kid);
    } finally {
      await s.close();
    }
  });

  it('signs with EdDSA when configured, and the gateway verifies it', async () => {
    const s = await startStack({
      identity: {
        signingKeys: { algorithm: 'EdDSA' },
      },
    });
    try {
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      expect(header(token)).toMatchObject({ alg: 'EdDSA', kid: expect.any(String) });
      const jwks = await (await fetch(`${s.pc.gatewayUrl}/.well-known/jwks.json`)).json();
      expect(jwks.keys).toContainEqual(
        expect.objectContaining({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', kid: header(token).kid }),
      );
      expect(
        (await fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${token}` } }))
          .status,
      ).toBe(200);
    } finally {
      await s.close();
    }
  });
});

describe('key files', () => {
  it('seals keys written before this version (plain JWK files), keeping their kid', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const keys = join(dir, 'keys');
      mkdirSync(keys, { recursive: true });
      const plain = async () => {
        const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
          format: 'jwk',
        }) as JWK;
        const kid = await calculateJwkThumbprint({ kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y } as JWK);
        return { ...jwk, kid, alg: 'ES256', use: 'sig' };
      };
      const access = await plain();
      const assertion = await plain();
      writeFileSync(join(keys, 'access-token.jwk.json'), JSON.stringify(access), { mode: 0o600 });
      writeFileSync(join(keys, 'assertion.jwk.json'), JSON.stringify(assertion), { mode: 0o600 });
      const ring = await KeyRing.loadOrCreate(keys, { clock: manualClock() });
      expect(ring.accessToken.kid).toBe(access.kid);
      expect(ring.assertion.kid).toBe(assertion.kid);
      expect(existsSync(join(keys, 'access-token.jwk.json'))).toBe(false);
      expect(existsSync(join(keys, 'assertion.jwk.json'))).toBe(false);
      expect(readFileSync(join(keys, 'access-token', `${access.kid}.json`), 'utf8')).not.toContain(
        access.d as string,
      );

      // A different data key cannot open them: a clear error, not a silent new key.
      writeFileSync(join(keys, 'data.key'), `${Buffer.alloc(32, 7).toString('base64url')}\n`, {
        mode: 0o600,
      });
      await expect(KeyRing.loadOrCreate(keys, {})).rejects.toThrow(/cannot decrypt the key/);
    } finally {
      cleanup();
    }
  });

  it('portcullis keys list | rotate', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const config = await writeConfigFile(dir, 'http://127.0.0.1:1');
      const run = async (...args: string[]) => {
        const io = captureIO();
        const code = await runCli(['keys', ...args, '--config', config], io.io);
        return { code, out: io.out() };
      };
      const list = await run('list');
      expect(list.code).toBe(0);
      expect(list.out).toMatch(/^\S{43}\tES256\tcurrent\tsigns from /);
      const rotated = await run('rotate', '--in', '2h', '--alg', 'EdDSA');
      expect(rotated.out).toMatch(/^added EdDSA key \S{43}; it signs from /);
      expect(
        rotated.out
          .trim()
          .split('\n')
          .slice(1)
          .map((l) => l.split('\t')[2]),
      ).toEqual(['current', 'next']);
      expect((await run('rotate', '--alg', 'RS256')).code).toBe(2);
    } finally {
      cleanup();
    }
  });
});
