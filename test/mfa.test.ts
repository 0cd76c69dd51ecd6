import { join } from 'node:path';
import Database from 'better-sqlite3';
import { HOTP, Secret, TOTP } from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineConfig } from '../src/config/index.js';
import { createLogger, manualClock } from '../src/core/index.js';
import { matchTotp } from '../src/identity/totp.js';
import { type RunningPortcullis, startPortcullis } from '../src/index.js';
import { startRecordingUpstream, tempDir, testConfig } from './helpers.js';

/** RFC 4226 Appendix D: HOTP values for the ASCII secret "12345678901234567890", counters 0–9. */
const RFC4226 = [
  '755224',
  '287082',
  '359152',
  '969429',
  '338314',
  '254676',
  '287922',
  '162583',
  '399871',
  '520489',
];

/** RFC 6238 Appendix B: time (s) → 8-digit TOTP for SHA1, SHA256, SHA512 (seeds of 20, 32, 64 bytes). */
const RFC6238: [number, string, string, string][] = [
  [59, '94287082', '46119246', '90693936'],
  [1111111109, '07081804', '68084774', '25091201'],
  [1111111111, '14050471', '67062674', '99943326'],
  [1234567890, '89005924', '91819424', '93441116'],
  [2000000000, '69279037', '90698825', '38618901'],
  [20000000000, '65353130', '77737706', '47863826'],
];
const SEED = {
  SHA1: '12345678901234567890',
  SHA256: '12345678901234567890123456789012',
  SHA512: '1234567890123456789012345678901234567890123456789012345678901234',
};

describe('OTP test vectors', () => {
  it('RFC 4226 Appendix D (HOTP)', () => {
    const hotp = new HOTP({ secret: Secret.fromLatin1(SEED.SHA1), digits: 6, algorithm: 'SHA1' });
    expect(RFC4226.map((_, counter) => hotp.generate({ counter }))).toEqual(RFC4226);
  });

  it('RFC 6238 Appendix B (TOTP, SHA1/SHA256/SHA512, 8 digits), and our 6-digit check on the SHA1 ones', () => {
    for (const [t, sha1, sha256, sha512] of RFC6238) {
      const gen = (algorithm: keyof typeof SEED) =>
        new TOTP({ secret: Secret.fromLatin1(SEED[algorithm]), digits: 8, period: 30, algorithm }).generate({
          timestamp: t * 1000,
        });
      expect([gen('SHA1'), gen('SHA256'), gen('SHA512')]).toEqual([sha1, sha256, sha512]);
      // A 6-digit code is the 8-digit value mod 10^6: matchTotp accepts it at its own step, ±1.
      const b32 = Secret.fromLatin1(SEED.SHA1).base32;
      const step = Math.floor(t / 30);
      expect(matchTotp(b32, sha1.slice(2), t * 1000)).toBe(step);
      expect(matchTotp(b32, sha1.slice(2), t * 1000 + 30_000)).toBe(step);
      expect(matchTotp(b32, sha1.slice(2), t * 1000 - 30_000)).toBe(step);
      expect(matchTotp(b32, sha1.slice(2), t * 1000 + 60_000)).toBeUndefined();
    }
  });
});

describe('MFA, step-up and brute-force defence (real gateway, manual clock)', () => {
  const clock = manualClock(Date.UTC(2026, 11, 1, 12, 0, 0));
  let pc: RunningPortcullis;
  let dataDir: string;
  let cleanup: () => void;
  let closeUpstream: () => Promise<void>;
  const password = 'correct-horse-battery-9';
  beforeAll(async () => {
    const t = tempDir();
    dataDir = t.dir;
    cleanup = t.cleanup;
    const upstream = await startRecordingUpstream();
    closeUpstream = upstream.close;
    pc = await startPortcullis(
      defineConfig(
        testConfig(t.dir, upstream.url, {
          identity: {
            lockout: {
              freeAttempts: 2,
              baseDelay: '1s',
              maxDelay: '1m',
              lockAfter: 6,
              lockFor: '10m',
              ipFreeAttempts: 1000,
            },
          },
          routes: [{ id: 'admin', path: '/api/admin/*', methods: ['GET', 'DELETE'], upstream: 'app' }],
          policy: {
            rules: [
              { id: 'read', routes: ['admin'], methods: ['GET'], roles: ['admin'] },
              {
                id: 'delete-mfa',
                routes: ['admin'],
                methods: ['DELETE'],
                roles: ['admin'],
                require: { mfa: true, maxAge: '5m' },
              },
            ],
          },
        }),
      ),
      { log: createLogger({ level: 'silent' }), clock },
    );
    await pc.core.identity.createUser({
      username: 'mia',
      email: 'Mia@Example.com',
      password,
      roles: ['admin'],
    });
    await pc.core.identity.createUser({ username: 'ned', password, roles: ['admin'] });
  });
  afterAll(async () => {
    await pc.close();
    await closeUpstream();
    cleanup();
  });

  const post = async (path: string, body: unknown, token?: string) => {
    const res = await fetch(`${pc.gatewayUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    return { status: res.status, headers: res.headers, body: await res.json() };
  };
  const call = (method: string, path: string, token: string) =>
    fetch(`${pc.gatewayUrl}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  const claims = (jwt: string) =>
    JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString());
  const codeAt = (secret: string, ms: number) =>
    new TOTP({ secret: Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' }).generate({
      timestamp: ms,
    });
  const db = () => new Database(join(dataDir, 'portcullis.db'), { readonly: true });
  const auditTypes = async () => {
    await pc.core.audit.flush();
    const out: { type: string; data: Record<string, unknown> }[] = [];
    for await (const r of pc.core.store.audit.scan()) out.push({ type: r.type, data: JSON.parse(r.data) });
    return out;
  };

  let secret = '';
  let recovery: string[] = [];

  it('enrols TOTP: URI + SVG QR, seed sealed at rest, completed only by a valid code, ten recovery codes', async () => {
    const login = await post('/auth/login', { username: 'MIA@example.com', password });
    expect(login.status).toBe(200);
    const token = login.body.access_token as string;
    expect(claims(token)).toMatchObject({ amr: ['pwd'], acr: 'aal1' });

    const begin = await post('/auth/mfa/totp', {}, token);
    expect(begin.status).toBe(200);
    secret = begin.body.secret;
    expect(begin.body.otpauth_uri).toMatch(/^otpauth:\/\/totp\/Portcullis:mia%40example\.com\?/);
    expect(begin.body.otpauth_uri).toContain(`secret=${secret}`);
    expect(begin.body.qr_svg).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
    const row = db()
      .prepare('SELECT totp_secret, totp_pending FROM users WHERE username = ?')
      .get('mia') as Record<string, string | null>;
    expect(row.totp_secret).toBeNull();
    expect(row.totp_pending).toMatch(/^v1\./);
    expect(row.totp_pending).not.toContain(secret);

    // Not enrolled until a valid code: logins still skip MFA.
    expect((await post('/auth/mfa/totp/confirm', { code: '000000' }, token)).status).toBe(401);
    expect((await post('/auth/login', { username: 'mia', password })).body.access_token).toBeTruthy();

    const confirm = await post('/auth/mfa/totp/confirm', { code: codeAt(secret, clock.now()) }, token);
    expect(confirm.status).toBe(200);
    recovery = confirm.body.recovery_codes;
    expect(recovery).toHaveLength(10);
    expect(new Set(recovery).size).toBe(10);
    const after = db().prepare('SELECT totp_secret FROM users WHERE username = ?').get('mia') as {
      totp_secret: string;
    };
    expect(after.totp_secret).toMatch(/^v1\./);
    expect(after.totp_secret).not.toContain(secret);
    const hashes = db().prepare('SELECT hash FROM recovery_codes').all() as { hash: string }[];
    expect(hashes).toHaveLength(10);
    for (const c of recovery) expect(JSON.stringify(hashes)).not.toContain(c);
  });

  let mfaToken = '';
  it('login with MFA is two steps; a code is never accepted twice; amr/acr say what was used', async () => {
    const first = await post('/auth/login', { username: 'mia', password });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({
      mfa_required: true,
      mfa_methods: ['otp', 'recovery'],
      expires_in: 300,
    });
    expect(first.body.access_token).toBeUndefined();
    // The code used to confirm enrolment (same step) is refused: replay.
    const replay = await post('/auth/mfa', {
      mfa_token: first.body.mfa_token,
      code: codeAt(secret, clock.now()),
    });
    expect(replay).toMatchObject({ status: 401, body: { error: { code: 'invalid_mfa_code' } } });
    clock.advance(30_000);
    const ok = await post('/auth/mfa', {
      mfa_token: first.body.mfa_token,
      code: codeAt(secret, clock.now()),
    });
    expect(ok.status).toBe(200);
    expect(claims(ok.body.access_token)).toMatchObject({ amr: ['pwd', 'otp'], acr: 'aal2' });
    // The challenge is single use.
    clock.advance(30_000);
    expect(
      (await post('/auth/mfa', { mfa_token: first.body.mfa_token, code: codeAt(secret, clock.now()) }))
        .status,
    ).toBe(401);

    const second = await post('/auth/login', { username: 'mia', password });
    mfaToken = second.body.mfa_token;
    const viaRecovery = await post('/auth/mfa', { mfa_token: mfaToken, recovery_code: recovery[0] });
    expect(viaRecovery.status).toBe(200);
    expect(claims(viaRecovery.body.access_token)).toMatchObject({ amr: ['pwd', 'recovery'], acr: 'aal2' });
    const third = await post('/auth/login', { username: 'mia', password });
    expect(
      (await post('/auth/mfa', { mfa_token: third.body.mfa_token, recovery_code: recovery[0] })).status,
    ).toBe(401);

    const events = await auditTypes();
    expect(
      events.filter((e) => e.type === 'auth.mfa.recovery_code_used').map((e) => e.data.remaining),
    ).toEqual([9]);
    expect(events.filter((e) => e.type === 'auth.mfa.failed').map((e) => e.data.reason)).toEqual(
      expect.arrayContaining(['bad_code', 'code_reused', 'challenge_invalid', 'bad_recovery_code']),
    );
  });

  it('refuses a second enrolment; regenerating recovery codes needs a fresh code and voids the old ones', async () => {
    clock.advance(30_000);
    const first = await post('/auth/login', { username: 'mia', password });
    const tokens = await post('/auth/mfa', { mfa_token: first.body.mfa_token, recovery_code: recovery[2] });
    const token = tokens.body.access_token as string;
    expect((await post('/auth/mfa/totp', {}, token)).status).toBe(400);
    expect((await post('/auth/mfa/recovery-codes', { code: '000000' }, token)).status).toBe(401);
    clock.advance(30_000);
    const fresh = await post('/auth/mfa/recovery-codes', { code: codeAt(secret, clock.now()) }, token);
    expect(fresh.status).toBe(200);
    expect(fresh.body.recovery_codes).toHaveLength(10);
    const next = await post('/auth/login', { username: 'mia', password });
    expect(
      (await post('/auth/mfa', { mfa_token: next.body.mfa_token, recovery_code: recovery[3] })).status,
    ).toBe(401);
    const ok = await post('/auth/mfa', {
      mfa_token: next.body.mfa_token,
      recovery_code: fresh.body.recovery_codes[0],
    });
    expect(ok.status).toBe(200);
    recovery = fresh.body.recovery_codes.slice(1);
  });

  it('an MFA challenge expires, and allows only a few wrong codes', async () => {
    const a = await post('/auth/login', { username: 'mia', password });
    clock.advance(301_000);
    expect(
      (await post('/auth/mfa', { mfa_token: a.body.mfa_token, code: codeAt(secret, clock.now()) })).status,
    ).toBe(401);
    const b = await post('/auth/login', { username: 'mia', password });
    for (let i = 0; i < 5; i++) {
      clock.advance(60_000); // past any back-off
      expect((await post('/auth/mfa', { mfa_token: b.body.mfa_token, code: '123456' })).status).toBe(401);
    }
    clock.advance(900_000);
    expect(
      (await post('/auth/mfa', { mfa_token: b.body.mfa_token, code: codeAt(secret, clock.now()) })).status,
    ).toBe(401);
  });

  it('step-up: a policy challenge, then a fresh proof upgrades that session; the proof cannot be replayed on another', async () => {
    clock.advance(900_000); // clear the lock the previous test may have set
    await pc.core.identity.unlock((await pc.core.store.users.findByUsername('mia'))?.id as never);
    const login = await post('/auth/login', { username: 'mia', password });
    clock.advance(30_000);
    const full = await post('/auth/mfa', {
      mfa_token: login.body.mfa_token,
      code: codeAt(secret, clock.now()),
    });
    const tokenA = full.body.access_token as string;
    expect((await call('DELETE', '/api/admin/x', tokenA)).status).toBe(200); // MFA, within 5 minutes

    clock.advance(6 * 60_000); // the sign-in is now 6 minutes old (the access token, 10 min, still valid)
    const stale = await call('DELETE', '/api/admin/x', tokenA);
    expect(stale.status).toBe(401);
    expect(stale.headers.get('www-authenticate')).toContain('max_age=300');

    clock.advance(30_000);
    const code = codeAt(secret, clock.now());
    const up = await post('/auth/step-up', { code }, tokenA);
    expect(up.status).toBe(200);
    expect(up.body.refresh_token).toBeUndefined();
    const upgraded = claims(up.body.access_token);
    expect(upgraded).toMatchObject({
      sid: claims(tokenA).sid,
      amr: ['pwd', 'otp'],
      acr: 'aal2',
      auth_time: Math.floor(clock.now() / 1000),
    });
    expect((await call('DELETE', '/api/admin/x', up.body.access_token)).status).toBe(200);

    // Another session of the same user cannot reuse that proof.
    const other = await post('/auth/mfa', {
      mfa_token: (await post('/auth/login', { username: 'mia', password })).body.mfa_token,
      recovery_code: recovery[1],
    });
    expect((await post('/auth/step-up', { code }, other.body.access_token)).status).toBe(401);
    const events = await auditTypes();
    expect(events.filter((e) => e.type === 'auth.step_up')).toHaveLength(1);
  });

  it('backs off exponentially, then locks temporarily; the same for email and username forms and for unknown users', async () => {
    const attempt = (username: string, pw = 'wrong-password-xyz') =>
      post('/auth/login', { username, password: pw });
    // Two free failures (one by username, one by email: one counter), then a 1 s wait.
    await pc.core.identity.createUser({ username: 'olga', email: 'olga@example.com', password, roles: [] });
    expect((await attempt('olga')).status).toBe(401);
    expect((await attempt('OLGA@example.com')).status).toBe(401);
    expect((await attempt('olga')).status).toBe(401); // third failure: back-off starts after it
    const throttled = await attempt('olga@example.com', password);
    expect(throttled.status).toBe(429);
    expect(throttled.body.error.code).toBe('too_many_attempts');
    expect(throttled.headers.get('retry-after')).toBe('1');
    clock.advance(1_000);
    expect((await attempt('olga')).status).toBe(401); // 4th: wait 2 s
    expect((await attempt('olga')).status).toBe(429);
    clock.advance(2_000);
    expect((await attempt('olga')).status).toBe(401); // 5th: 4 s
    clock.advance(4_000);
    expect((await attempt('olga')).status).toBe(401); // 6th: locked for 10 minutes
    clock.advance(60_000);
    const locked = await attempt('olga', password);
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(500);
    clock.advance(10 * 60_000);
    expect((await attempt('olga', password)).status).toBe(200); // the lock expired by itself

    // An unknown user is throttled exactly the same way.
    const ghost = [];
    for (let i = 0; i < 4; i++) ghost.push((await attempt('ghost')).status);
    expect(ghost).toEqual([401, 401, 401, 429]);

    const events = await auditTypes();
    const olga = await pc.core.store.users.findByUsername('olga');
    // (usernames are stored as keyed HMACs: sensitive field)
    expect(events.filter((e) => e.type === 'auth.lockout').map((e) => e.data.userId)).toEqual([olga?.id]);
    expect(events.filter((e) => e.type === 'auth.login.throttled').length).toBeGreaterThanOrEqual(3);
  });

  it('concurrent guesses cannot all slip past the throttle while the first are being hashed', async () => {
    await pc.core.identity.createUser({ username: 'pia', password, roles: [] });
    const statuses = await Promise.all(
      Array.from({ length: 40 }, () =>
        post('/auth/login', { username: 'pia', password: 'wrong-password-xyz' }).then((r) => r.status),
      ),
    );
    // freeAttempts (2) + 1 may be checked at once; the rest are refused before any hashing.
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(3);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(37);
  });

  it('a right password does not reset the count of wrong MFA codes: guessing codes ends in a lock', async () => {
    clock.advance(3_600_000);
    const mia = await pc.core.store.users.findByUsername('mia');
    await pc.core.identity.unlock(mia?.id as never);
    const results: number[] = [];
    for (let i = 0; i < 8; i++) {
      clock.advance(120_000); // past any back-off
      const first = await post('/auth/login', { username: 'mia', password });
      if (first.status !== 200) {
        results.push(first.status);
        continue;
      }
      results.push((await post('/auth/mfa', { mfa_token: first.body.mfa_token, code: '000000' })).status);
    }
    // lockAfter is 6: the sixth wrong code locks the account, and the next logins are refused.
    expect(results.slice(0, 6)).toEqual([401, 401, 401, 401, 401, 401]);
    expect(results.slice(6)).toEqual([429, 429]);
    expect((await pc.core.store.users.findByUsername('mia'))?.lockedUntil).toBeGreaterThan(clock.now());
    await pc.core.identity.unlock(mia?.id as never);
  });

  it('refuses weak passwords: too short, too long, common, or containing the email local part', async () => {
    const make = (pw: string, email = 'pat.smith@example.com') =>
      pc.core.identity.createUser({
        username: `p${Math.random().toString(36).slice(2)}`,
        email,
        password: pw,
        roles: [],
      });
    await expect(make('short-pw1')).rejects.toMatchObject({
      code: 'weak_password',
      publicMessage: expect.stringContaining('at least 12'),
    });
    await expect(make('x'.repeat(129))).rejects.toMatchObject({ code: 'weak_password' });
    await expect(make('PASSWORD1234')).rejects.toMatchObject({
      publicMessage: expect.stringContaining('most common'),
    });
    await expect(make('my-pat.smith-secret')).rejects.toMatchObject({
      publicMessage: expect.stringContaining('email'),
    });
    await expect(make('a fine long passphrase')).resolves.toMatchObject({ email: 'pat.smith@example.com' });
    // One account per normalized email.
    await expect(make('another fine passphrase', 'PAT.SMITH@EXAMPLE.COM')).rejects.toMatchObject({
      code: 'invalid_body',
    });
  });

  it('re-hashes a password made with other argon2 parameters at the next login', async () => {
    const weak = await (await import('../src/identity/index.js')).PasswordHasher.create({
      memoryCost: 2048,
      timeCost: 1,
      parallelism: 1,
    });
    const user = await pc.core.store.users.findByUsername('ned');
    await pc.core.store.users.update(user?.id as never, { passwordHash: await weak.hash(password) });
    expect((await pc.core.store.users.findByUsername('ned'))?.passwordHash).toContain('m=2048');
    expect((await post('/auth/login', { username: 'ned', password })).status).toBe(200);
    expect((await pc.core.store.users.findByUsername('ned'))?.passwordHash).toContain('m=1024,t=1,p=1');
  });
});
