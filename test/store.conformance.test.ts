import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chainHash, GENESIS_HASH, verifyLog } from '../src/audit/index.js';
import { newSessionId, newUserId, type SessionId, type UserId } from '../src/core/index.js';
import { openSqliteStore, type Store } from '../src/store/index.js';
import { type Stack, startStack, tempDir } from './helpers.js';

/**
 * The store contract, as one suite every adapter must pass. SQLite runs it now; PostgreSQL and Redis
 * adapters will be added to `ADAPTERS`.
 */
const ADAPTERS: Array<[string, (dir: string) => Store]> = [
  ['sqlite', (dir) => openSqliteStore(join(dir, 'p.db'))],
];

describe.each(ADAPTERS)('store conformance: %s', (_name, open) => {
  let t: ReturnType<typeof tempDir>;
  let store: Store;
  beforeEach(() => {
    t = tempDir();
    store = open(t.dir);
  });
  afterEach(async () => {
    await store.close();
    t.cleanup();
  });

  const user = (username: string) => ({
    id: newUserId(),
    username,
    passwordHash: '$argon2id$x',
    roles: ['viewer'],
    status: 'active' as const,
    createdAt: 1,
  });
  const session = (userId: UserId, id: SessionId = newSessionId()) => ({
    id,
    userId,
    amr: ['pwd'],
    createdAt: 10,
    expiresAt: 1_000,
    revokedAt: null,
  });

  it('users: create, find, list, count; duplicate usernames conflict', async () => {
    const u = user('ann');
    await store.users.create(u);
    expect(await store.users.get(u.id)).toEqual(u);
    expect(await store.users.findByUsername('ann')).toEqual(u);
    expect(await store.users.findByUsername('bob')).toBeUndefined();
    await expect(store.users.create({ ...user('ann') })).rejects.toMatchObject({ code: 'conflict' });
    expect(await store.users.count()).toBe(1);
    expect((await store.users.list()).map((x) => x.username)).toEqual(['ann']);
  });

  it('sessions: rotate, detect reuse (revoking the family), refuse inactive and unknown', async () => {
    const u = user('ann');
    await store.users.create(u);
    const s = session(u.id);
    await store.sessions.create(s, 'h1');
    expect(await store.sessions.rotateRefresh('h1', 'h2', 20)).toMatchObject({
      kind: 'rotated',
      session: { id: s.id },
    });
    expect(await store.sessions.rotateRefresh('h2', 'h3', 30)).toMatchObject({ kind: 'rotated' });
    expect(await store.sessions.rotateRefresh('h1', 'h4', 40)).toMatchObject({
      kind: 'reused',
      session: { revokedAt: 40 },
    });
    expect((await store.sessions.get(s.id))?.revokedAt).toBe(40);
    expect(await store.sessions.rotateRefresh('h3', 'h5', 50)).toMatchObject({ kind: 'inactive' });
    expect(await store.sessions.rotateRefresh('nope', 'h6', 50)).toEqual({ kind: 'unknown' });

    const expiring = session(u.id);
    await store.sessions.create(expiring, 'e1');
    expect(await store.sessions.rotateRefresh('e1', 'e2', 1_000)).toMatchObject({ kind: 'inactive' });
  });

  it('sessions: revoke is idempotent', async () => {
    const u = user('ann');
    await store.users.create(u);
    const s = session(u.id);
    await store.sessions.create(s, 'r1');
    expect(await store.sessions.revoke(s.id, 5)).toBe(true);
    expect(await store.sessions.revoke(s.id, 6)).toBe(false);
    expect((await store.sessions.get(s.id))?.revokedAt).toBe(5);
  });

  it('audit: two writers on one database keep one valid chain', async () => {
    const other = open(t.dir);
    try {
      for (let i = 0; i < 10; i++) {
        const w = i % 2 === 0 ? store : other;
        await w.audit.append(
          [
            { ts: i, type: 't', data: `{"i":${i}}` },
            { ts: i, type: 't', data: `{"j":${i}}` },
          ],
          chainHash,
          GENESIS_HASH,
        );
      }
    } finally {
      await other.close();
    }
    expect(await store.audit.count()).toBe(20);
    expect(await verifyLog(store.audit.scan(), [])).toMatchObject({ ok: true, count: 20 });
  });
});

describe('fail closed', () => {
  let s: Stack;
  beforeEach(async () => {
    s = await startStack();
  });
  afterEach(() => s.close());

  it('a store that is down means deny (503 store_unavailable), never allow', async () => {
    const { body } = await s.login(s.users.viewer.username, s.users.viewer.password);
    const call = () =>
      fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${body.access_token}` } });
    expect((await call()).status).toBe(200);
    const before = s.upstream.received.length;
    await s.pc.core.store.close();
    const res = await call();
    expect(res.status).toBe(503);
    expect((await res.json()).error.code).toBe('store_unavailable');
    expect(s.upstream.received.length).toBe(before);
    const login = await s.login(s.users.viewer.username, s.users.viewer.password);
    expect(login.status).toBe(503);
    expect((await fetch(`${s.pc.adminUrl}/readyz`)).status).toBe(503);
    expect(await (await fetch(`${s.pc.adminUrl}/metrics`)).text()).toMatch(
      /portcullis_store_unavailable_total [1-9]/,
    );
  });
});
