import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from './helpers.js';

const json = (body: unknown) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

describe('identity endpoints', () => {
  let s: Stack;
  beforeAll(async () => {
    // Grace window off: these tests are about strict rotation (test/refresh-race.test.ts covers the window).
    s = await startStack({
      identity: {
        refreshGrace: 0,
      },
    });
  });
  afterAll(() => s.close());

  const refresh = (token: string) => fetch(`${s.pc.gatewayUrl}/auth/refresh`, json({ refresh_token: token }));
  const orders = (access: string) =>
    fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${access}` } });

  it('login returns an OAuth token response, not cacheable', async () => {
    const res = await fetch(
      `${s.pc.gatewayUrl}/auth/login`,
      json({ username: 'VICTOR', password: s.users.viewer.password }),
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = await res.json();
    expect(body).toEqual({
      access_token: expect.any(String),
      token_type: 'Bearer',
      expires_in: 600,
      refresh_token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
    });
  });

  it('wrong password and unknown user get the same answer', async () => {
    const wrong = await s.login(s.users.viewer.username, 'not-the-password');
    const unknown = await s.login('nobody-here', 'not-the-password');
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(wrong.body.error).toMatchObject({
      code: 'invalid_credentials',
      message: 'The username or password is incorrect.',
    });
    expect({ ...(unknown.body.error as object), requestId: '' }).toEqual({
      ...(wrong.body.error as object),
      requestId: '',
    });
  });

  it('rejects malformed login bodies with 400/415 and a reason', async () => {
    const bad = await fetch(`${s.pc.gatewayUrl}/auth/login`, json({ username: 'x' }));
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatchObject({
      code: 'invalid_body',
      message: expect.stringContaining('password'),
    });
    const notJson = await fetch(`${s.pc.gatewayUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{',
    });
    expect(notJson.status).toBe(400);
    const form = await fetch(`${s.pc.gatewayUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'a',
    });
    expect(form.status).toBe(415);
    const huge = await fetch(
      `${s.pc.gatewayUrl}/auth/login`,
      json({ username: 'x', password: 'y'.repeat(20_000) }),
    );
    expect(huge.status).toBe(413);
    // GET is the browser sign-in page (test/browser-session.test.ts); other methods are refused.
    const put = await fetch(`${s.pc.gatewayUrl}/auth/login`, { method: 'PUT' });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('POST, GET, HEAD');
  });

  it('refresh rotates; the old refresh token is refused afterwards and its reuse revokes the session', async () => {
    const first = await s.login(s.users.viewer.username, s.users.viewer.password);
    const r1 = await refresh(first.body.refresh_token as string);
    expect(r1.status).toBe(200);
    const second = await r1.json();
    expect(second.refresh_token).not.toBe(first.body.refresh_token);
    expect((await orders(second.access_token)).status).toBe(200);

    // The spent token is refused ...
    const replay = await refresh(first.body.refresh_token as string);
    expect(replay.status).toBe(400);
    expect((await replay.json()).error.code).toBe('invalid_grant');
    // ... and its reuse ended the whole session: the successor and the access tokens are dead too.
    expect((await refresh(second.refresh_token)).status).toBe(400);
    const dead = await orders(second.access_token);
    expect(dead.status).toBe(401);
    expect((await dead.json()).error.code).toBe('session_revoked');
  });

  it('an unknown refresh token is invalid_grant', async () => {
    const res = await refresh('A'.repeat(43));
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe('invalid_grant');
  });

  it('logout makes the access token useless at the gateway and the refresh token too', async () => {
    const { body } = await s.login(s.users.viewer.username, s.users.viewer.password);
    const access = body.access_token as string;
    expect((await orders(access)).status).toBe(200);
    const out = await fetch(`${s.pc.gatewayUrl}/auth/logout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${access}` },
    });
    expect(out.status).toBe(204);
    expect(out.headers.get('x-frame-options')).toBe('DENY');
    const after = await orders(access);
    expect(after.status).toBe(401);
    expect((await after.json()).error.code).toBe('session_revoked');
    expect((await refresh(body.refresh_token as string)).status).toBe(400);
    // Other sessions of the same user are untouched.
    const other = await s.login(s.users.viewer.username, s.users.viewer.password);
    expect((await orders(other.body.access_token as string)).status).toBe(200);
  });

  it('logout without a valid token is 401', async () => {
    const res = await fetch(`${s.pc.gatewayUrl}/auth/logout`, { method: 'POST' });
    expect(res.status).toBe(401);
  });

  it('stores passwords as argon2id and refresh tokens only as hashes', async () => {
    const user = await s.pc.core.store.users.findByUsername('victor');
    expect(user?.passwordHash).toMatch(/^\$argon2id\$v=19\$m=1024,t=1,p=1\$/);
    const { body } = await s.login(s.users.viewer.username, s.users.viewer.password);
    const db = new Database(`${s.dataDir}/portcullis.db`, { readonly: true });
    try {
      const rows = db.prepare('SELECT hash FROM refresh_tokens').all() as Array<{ hash: string }>;
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.some((r) => r.hash === body.refresh_token)).toBe(false);
    } finally {
      db.close();
    }
  });
});

describe('login timing: unknown user costs the same as a wrong password', () => {
  it('medians are within a factor of two (OWASP argon2id parameters)', async () => {
    const s = await startStack({
      identity: {
        issuer: 'http://portcullis.test',
        passwordHash: { memoryCost: 19_456, timeCost: 2, parallelism: 1 },
        // Timing only: no back-off in the way of the repeated failures.
        lockout: { freeAttempts: 100, lockAfter: 1000, ipFreeAttempts: 1000 },
      },
    });
    try {
      const time = async (username: string) => {
        const t0 = performance.now();
        const r = await s.login(username, 'wrong-password-123');
        expect(r.status).toBe(401);
        return performance.now() - t0;
      };
      const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
      await time('warmup');
      const wrong: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 7; i++) {
        wrong.push(await time(s.users.viewer.username));
        unknown.push(await time(`ghost-${i}`));
      }
      const ratio = median(unknown) / median(wrong);
      expect(ratio).toBeGreaterThan(0.5);
      expect(ratio).toBeLessThan(2);
    } finally {
      await s.close();
    }
  });
});
