import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from './helpers.js';

/** The account administration API on the gateway listener: admins only, every action audited. */
describe('admin API (/_portcullis/admin)', () => {
  let s: Stack;
  let admin: string;
  let viewer: string;
  beforeAll(async () => {
    s = await startStack({
      identity: {
        adminRequireMfa: false,
      },
    });
    admin = (await s.login(s.users.admin.username, s.users.admin.password)).body.access_token as string;
    viewer = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
  });
  afterAll(() => s.close());

  const call = async (method: string, path: string, token?: string, body?: unknown) => {
    const res = await fetch(`${s.pc.gatewayUrl}/_portcullis/admin${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: await res.json() };
  };

  it('lists and shows users; refuses anonymous callers and non-admins', async () => {
    const list = await call('GET', '/users', admin);
    expect(list.status).toBe(200);
    expect(list.body.users.map((u: { username: string }) => u.username).sort()).toEqual(
      [s.users.admin.username, s.users.viewer.username].sort(),
    );
    const one = await call('GET', `/users/${s.users.viewer.username}`, admin);
    expect(one.body).toMatchObject({
      username: s.users.viewer.username,
      status: 'active',
      roles: ['viewer'],
      mfa: [],
    });
    expect(one.body.passwordHash).toBeUndefined();
    expect((await call('GET', '/users')).status).toBe(401);
    expect((await call('GET', '/users', viewer)).body.error.code).toBe('forbidden');
    expect((await call('GET', '/users/nobody', admin)).status).toBe(404);
    expect((await call('DELETE', '/users', admin)).status).toBe(405);
  });

  it('suspends (sessions end at once), activates, lists and revokes sessions, unlocks, resets MFA — each audited with the actor', async () => {
    const u = s.users.viewer.username;
    expect(
      (await call('GET', `/users/${u}/sessions`, admin)).body.sessions.some(
        (x: { active: boolean }) => x.active,
      ),
    ).toBe(true);
    expect((await call('POST', `/users/${u}/suspend`, admin)).body.status).toBe('suspended');
    expect(
      (await fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${viewer}` } }))
        .status,
    ).toBe(401);
    expect((await call('POST', `/users/${u}/activate`, admin)).body.status).toBe('active');
    const again = (await s.login(u, s.users.viewer.password)).body.access_token as string;
    expect((await call('POST', `/users/${u}/sessions/revoke`, admin, { all: true })).body).toEqual({
      revoked: 1,
    });
    expect(
      (await fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${again}` } }))
        .status,
    ).toBe(401);
    expect((await call('POST', `/users/${u}/unlock`, admin)).status).toBe(200);
    expect((await call('POST', `/users/${u}/reset-mfa`, admin)).status).toBe(200);
    expect((await call('GET', '/service-accounts', admin)).body).toEqual({ serviceAccounts: [] });
    await s.pc.core.audit.flush();
    const actions: { actor: string; action: string }[] = [];
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'admin.action') actions.push(JSON.parse(r.data));
    const adminId = (await s.pc.core.store.users.findByUsername(s.users.admin.username))?.id;
    expect(actions.map((a) => [a.actor, a.action])).toEqual(
      ['suspend', 'activate', 'sessions.revoke', 'unlock', 'reset-mfa'].map((a) => [adminId, a]),
    );
  });

  it('by default the admin API needs a multi-factor sign-in', async () => {
    const strict = await startStack();
    try {
      const token = (await strict.login(strict.users.admin.username, strict.users.admin.password)).body
        .access_token as string;
      const res = await fetch(`${strict.pc.gatewayUrl}/_portcullis/admin/users`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(401);
      expect((await res.json()).error.code).toBe('step_up_required');
      expect(res.headers.get('www-authenticate')).toContain('acr_values="aal2"');
    } finally {
      await strict.close();
    }
  });
});
