import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from './helpers.js';

/** Refresh-token families: concurrent duplicates within the grace window vs reuse after it. */
describe('refresh grace window (truly concurrent requests)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({
      identity: {
        refreshGrace: '400ms',
      },
    });
  });
  afterAll(() => s.close());

  const refresh = async (token: string) => {
    const res = await fetch(`${s.pc.gatewayUrl}/auth/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: token }),
    });
    return { status: res.status, body: await res.json() };
  };
  const get = (token: string) =>
    fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${token}` } }).then(
      (r) => r.status,
    );

  it('eight simultaneous refreshes of one token all get the same successor, and the session lives on', async () => {
    const login = (await s.login(s.users.viewer.username, s.users.viewer.password)).body;
    const results = await Promise.all(
      Array.from({ length: 8 }, () => refresh(login.refresh_token as string)),
    );
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(200));
    const successors = new Set(results.map((r) => r.body.refresh_token));
    expect(successors.size).toBe(1);
    expect(results.every((r) => typeof r.body.access_token === 'string')).toBe(true);
    const [successor] = [...successors] as string[];
    expect(await get(results[0]?.body.access_token)).toBe(200);
    // The chain goes on from the shared successor.
    const next = await refresh(successor as string);
    expect(next.status).toBe(200);
    expect(await get(next.body.access_token)).toBe(200);
  });

  it('the same token after the grace window is reuse: the whole family is revoked (critical event)', async () => {
    const login = (await s.login(s.users.viewer.username, s.users.viewer.password)).body;
    const first = await refresh(login.refresh_token as string);
    expect(first.status).toBe(200);
    await new Promise((r) => setTimeout(r, 500));
    const replay = await refresh(login.refresh_token as string);
    expect(replay).toMatchObject({ status: 400, body: { error: { code: 'invalid_grant' } } });
    // Every token of the family is dead: the successor and the access token.
    expect((await refresh(first.body.refresh_token)).status).toBe(400);
    expect(await get(first.body.access_token)).toBe(401);
    await s.pc.core.audit.flush();
    const reused = [];
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'auth.refresh.reused') reused.push(JSON.parse(r.data));
    expect(reused).toMatchObject([{ action: 'session_revoked', severity: 'critical' }]);
  });

  it('once the successor has been used, the old token is reuse even inside the window', async () => {
    const login = (await s.login(s.users.viewer.username, s.users.viewer.password)).body;
    const a = await refresh(login.refresh_token as string);
    const b = await refresh(a.body.refresh_token);
    expect(b.status).toBe(200);
    expect((await refresh(login.refresh_token as string)).status).toBe(400);
    expect(await get(b.body.access_token)).toBe(401);
  });
});
