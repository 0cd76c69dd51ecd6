import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { manualClock } from '../src/core/index.js';
import { captureIO, type Stack, startStack, tempDir, writeConfigFile } from './helpers.js';

/** Sessions: idle timeout, the user's own list, revoking one or all, suspension (real gateway). */
describe('sessions', () => {
  const clock = manualClock(Date.UTC(2026, 11, 1, 9, 0, 0));
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(
      {
        identity: {
          accessTokenTtl: '5m',
          sessionIdleTimeout: '30m',
        },
      },
      undefined,
      { clock },
    );
  });
  afterAll(() => s.close());

  const login = async (ua: string) => {
    const res = await fetch(`${s.pc.gatewayUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': ua },
      body: JSON.stringify({ username: s.users.viewer.username, password: s.users.viewer.password }),
    });
    return (await res.json()) as { access_token: string; refresh_token: string };
  };
  const refresh = async (token: string, ua = 'phone/1') =>
    fetch(`${s.pc.gatewayUrl}/auth/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': ua },
      body: JSON.stringify({ refresh_token: token }),
    });
  const get = (token: string) =>
    fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${token}` } }).then(
      (r) => r.status,
    );
  const post = (path: string, token: string, body: unknown) =>
    fetch(`${s.pc.gatewayUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });

  it('an idle session ends: no refresh for longer than sessionIdleTimeout', async () => {
    const t = await login('laptop/1');
    clock.advance(20 * 60_000);
    const r1 = await refresh(t.refresh_token);
    expect(r1.status).toBe(200);
    const t2 = (await r1.json()) as { access_token: string; refresh_token: string };
    clock.advance(31 * 60_000);
    expect((await refresh(t2.refresh_token)).status).toBe(400);
    // The session is over at the gateway too (its last token would have expired anyway).
    expect(await get(t2.access_token)).toBe(401);
  });

  it("lists the caller's sessions with device, address and last seen; revokes one, then all", async () => {
    const a = await login('laptop/2');
    clock.advance(60_000);
    const b = await login('phone/2');
    const list = await (
      await fetch(`${s.pc.gatewayUrl}/auth/sessions`, {
        headers: { authorization: `Bearer ${b.access_token}` },
      })
    ).json();
    const active = list.sessions.filter((x: { active: boolean }) => x.active);
    expect(active.map((x: { userAgent: string; current: boolean }) => [x.userAgent, x.current])).toEqual([
      ['phone/2', true],
      ['laptop/2', false],
    ]);
    expect(active[0]).toMatchObject({ ip: '127.0.0.1', acr: 'aal1', amr: ['pwd'] });

    const laptop = active[1].id as string;
    expect(
      await (await post('/auth/sessions/revoke', b.access_token, { session_id: laptop })).json(),
    ).toEqual({ revoked: 1 });
    expect(await get(a.access_token)).toBe(401);
    expect(await get(b.access_token)).toBe(200);
    // Someone else's session id is not yours to revoke.
    const other = await s.login(s.users.admin.username, s.users.admin.password);
    const otherSid = JSON.parse(
      Buffer.from((other.body.access_token as string).split('.')[1] as string, 'base64url').toString(),
    ).sid;
    expect(
      await (await post('/auth/sessions/revoke', b.access_token, { session_id: otherSid })).json(),
    ).toEqual({ revoked: 0 });
    expect(await get(other.body.access_token as string)).toBe(200);

    const c = await login('tablet/2');
    const all = await (await post('/auth/sessions/revoke', c.access_token, { all: true })).json();
    expect(all.revoked).toBeGreaterThanOrEqual(2);
    expect(await get(b.access_token)).toBe(401);
    expect(await get(c.access_token)).toBe(401);
  });

  it('suspending a user ends every session at once and refuses new logins', async () => {
    const t = await login('desk/3');
    expect(await get(t.access_token)).toBe(200);
    const viewer = await s.pc.core.store.users.findByUsername(s.users.viewer.username);
    await s.pc.core.identity.suspend(viewer?.id as never);
    expect(await get(t.access_token)).toBe(401);
    expect((await s.login(s.users.viewer.username, s.users.viewer.password)).status).toBe(401);
    await s.pc.core.identity.activate(viewer?.id as never);
    expect((await s.login(s.users.viewer.username, s.users.viewer.password)).status).toBe(200);
  });
});

describe('portcullis user (admin commands)', () => {
  it('add with email/groups/attributes, show, suspend, activate, unlock, reset-mfa, sessions, revoke', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const config = await writeConfigFile(dir, 'http://127.0.0.1:1');
      const run = async (...args: string[]) => {
        const io = captureIO();
        const code = await runCli(['user', ...args, '--config', config], io.io);
        return { code, out: io.out(), err: io.err() };
      };
      const added = await run(
        'add',
        'erin',
        '--role',
        'viewer',
        '--email',
        'Erin@Example.com',
        '--group',
        'ops',
        '--attr',
        'department=eng',
        '--attr',
        'clearance=3',
      );
      expect(added.code).toBe(0);
      const show = await run('show', 'erin@example.com');
      expect(show.out).toMatch(/username: +erin/);
      expect(show.out).toMatch(/email: +erin@example\.com/);
      expect(show.out).toMatch(/groups: +ops/);
      expect(show.out).toContain('"department":"eng","clearance":3');
      expect(show.out).toMatch(/mfa: +none/);
      expect((await run('suspend', 'erin')).out).toMatch(/suspended erin; 0 session\(s\) ended/);
      expect((await run('show', 'erin')).out).toMatch(/status: +suspended/);
      expect((await run('activate', 'erin')).code).toBe(0);
      expect((await run('unlock', 'erin')).out).toBe('unlocked erin\n');
      expect((await run('reset-mfa', 'erin')).code).toBe(0);
      expect((await run('sessions', 'erin')).out).toBe('no sessions\n');
      expect((await run('revoke', 'erin', '--all')).out).toBe('0 session(s) ended\n');
      expect((await run('revoke', 'erin')).code).toBe(2);
      expect((await run('show', 'nobody')).err).toBe('no user nobody\n');
      const weak = captureIO({ stdin: (await import('node:stream')).Readable.from(['password1234\n']) });
      expect(await runCli(['user', 'add', 'fred', '--password-stdin', '--config', config], weak.io)).toBe(1);
      expect(weak.err()).toMatch(/most common/);
    } finally {
      cleanup();
    }
  });
});

describe('browser mode: the refresh token lives in an HttpOnly cookie', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({
      identity: {
        refreshGrace: '200ms',
      },
    });
  });
  afterAll(() => s.close());

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${s.pc.gatewayUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
  const cookieOf = (res: Response) => res.headers.get('set-cookie') ?? '';

  it('login sets a Secure, HttpOnly, SameSite=Strict cookie scoped to the refresh path; the body has no refresh token', async () => {
    const login = await post('/auth/login', {
      username: s.users.viewer.username,
      password: s.users.viewer.password,
      client: 'browser',
    });
    expect(login.status).toBe(200);
    const body = await login.json();
    expect(body.refresh_token).toBeUndefined();
    expect(body.access_token).toBeTruthy();
    const cookie = cookieOf(login);
    expect(cookie).toMatch(
      /^__Secure-portcullis-rt=[A-Za-z0-9_-]{20,}; Path=\/auth\/refresh; Max-Age=43200; HttpOnly; Secure; SameSite=Strict$/,
    );

    const value = cookie.split(';')[0] as string;
    const refreshed = await post('/auth/refresh', {}, { cookie: value });
    expect(refreshed.status).toBe(200);
    expect((await refreshed.json()).refresh_token).toBeUndefined();
    const next = cookieOf(refreshed).split(';')[0] as string;
    expect(next).not.toBe(value);
    // The spent cookie is a reused refresh token (after the grace window): the session ends.
    await new Promise((r) => setTimeout(r, 300));
    expect((await post('/auth/refresh', {}, { cookie: value })).status).toBe(400);
    expect((await post('/auth/refresh', {}, { cookie: next })).status).toBe(400);
  });

  it('API mode keeps the refresh token in the body and sets no cookie; logout clears the cookie', async () => {
    const login = await post('/auth/login', {
      username: s.users.viewer.username,
      password: s.users.viewer.password,
    });
    expect(cookieOf(login)).toBe('');
    const body = await login.json();
    expect(body.refresh_token).toBeTruthy();
    expect((await post('/auth/refresh', {})).status).toBe(400);
    const out = await fetch(`${s.pc.gatewayUrl}/auth/logout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${body.access_token}` },
    });
    expect(out.status).toBe(204);
    expect(cookieOf(out)).toMatch(/^__Secure-portcullis-rt=; Path=\/auth\/refresh; Max-Age=0;/);
  });
});
