import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chainHash, GENESIS_HASH, verifyLog } from '../src/audit/index.js';
import { newSessionId, newUserId, type SessionId, type UserId } from '../src/core/index.js';
import type { UserRecord } from '../src/store/index.js';
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

  const user = (username: string, email: string | null = null): UserRecord => ({
    id: newUserId(),
    username,
    email,
    displayName: null,
    passwordHash: '$argon2id$x',
    roles: ['viewer'],
    groups: [],
    attributes: {},
    status: 'active' as const,
    createdAt: 1,
    lockedUntil: null,
    totpSecret: null,
    totpPending: null,
    totpLastStep: 0,
  });
  const session = (userId: UserId, id: SessionId = newSessionId()) => ({
    id,
    userId,
    amr: ['pwd'],
    createdAt: 10,
    expiresAt: 1_000,
    revokedAt: null,
    authTime: 10,
    acr: 'aal1',
    lastSeenAt: 10,
    ip: '127.0.0.1',
    userAgent: 'test',
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

  it('devices: create, one device per key, list per user newest first, update; posture only moves forward', async () => {
    const ann = user('ann');
    const bob = user('bob');
    await store.users.create(ann);
    await store.users.create(bob);
    const device = (id: string, userId: UserId, jkt: string, createdAt: number) => ({
      id,
      userId,
      name: id,
      platform: null,
      publicJwk: { kty: 'OKP', crv: 'Ed25519', x: jkt },
      jkt,
      certSerial: null,
      certNotAfter: null,
      status: 'pending' as const,
      createdAt,
      approvedAt: null,
      revokedAt: null,
      lastSeenAt: null,
      posture: null,
      postureAt: null,
      compliant: false,
      complianceFailures: [],
    });
    const d1 = device('d1', ann.id, 'k1', 1);
    await store.devices.create(d1);
    await store.devices.create(device('d2', ann.id, 'k2', 2));
    await store.devices.create(device('d3', bob.id, 'k3', 3));
    await expect(store.devices.create(device('d4', bob.id, 'k1', 4))).rejects.toMatchObject({
      code: 'conflict',
    });
    expect(await store.devices.get('d1')).toEqual(d1);
    expect((await store.devices.findByJkt('k3'))?.id).toBe('d3');
    expect(await store.devices.findByJkt('nope')).toBeUndefined();
    expect((await store.devices.list(ann.id)).map((d) => d.id)).toEqual(['d2', 'd1']);
    expect((await store.devices.list()).map((d) => d.id)).toEqual(['d3', 'd2', 'd1']);
    await store.devices.update('d1', { status: 'active', approvedAt: 5, lastSeenAt: 6 });
    expect(await store.devices.get('d1')).toMatchObject({ status: 'active', approvedAt: 5, lastSeenAt: 6 });
    const report = (at: number, compliant: boolean) => ({
      posture: { os: { name: 'linux', version: '6.1' } },
      postureAt: at,
      compliant,
      failures: compliant ? [] : ['screenLock: no screen lock'],
    });
    expect(await store.devices.putPosture('d1', report(100, false))).toBe(true);
    expect(await store.devices.putPosture('d1', report(100, true))).toBe(false);
    expect(await store.devices.putPosture('d1', report(90, true))).toBe(false);
    expect(await store.devices.get('d1')).toMatchObject({
      postureAt: 100,
      compliant: false,
      complianceFailures: ['screenLock: no screen lock'],
      posture: { os: { name: 'linux', version: '6.1' } },
    });
    expect(await store.devices.putPosture('d1', report(101, true))).toBe(true);
    expect(await store.devices.get('d1')).toMatchObject({ compliant: true, complianceFailures: [] });
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

  it('users: find by username or email, update fields, unique emails', async () => {
    const u = {
      ...user('ann', 'ann@example.com'),
      groups: ['g1'],
      attributes: { department: 'eng', clearance: 3 },
    };
    await store.users.create(u);
    expect(await store.users.findByLogin('ann')).toEqual(u);
    expect(await store.users.findByLogin('ann@example.com')).toEqual(u);
    await expect(store.users.create(user('other', 'ann@example.com'))).rejects.toMatchObject({
      code: 'conflict',
    });
    await store.users.update(u.id, {
      status: 'suspended',
      lockedUntil: 99,
      roles: ['admin'],
      attributes: { a: [1] },
    });
    expect(await store.users.get(u.id)).toMatchObject({
      status: 'suspended',
      lockedUntil: 99,
      roles: ['admin'],
      attributes: { a: [1] },
      email: 'ann@example.com',
    });
  });

  it('users: TOTP steps are accepted once and only forward; recovery codes are single use', async () => {
    const u = user('ann');
    await store.users.create(u);
    expect(await store.users.useTotpStep(u.id, 100)).toBe(true);
    expect(await store.users.useTotpStep(u.id, 100)).toBe(false);
    expect(await store.users.useTotpStep(u.id, 99)).toBe(false);
    expect(await store.users.useTotpStep(u.id, 101)).toBe(true);
    await store.users.setRecoveryCodes(u.id, ['a', 'b'], 1);
    expect(await store.users.unusedRecoveryCodes(u.id)).toBe(2);
    expect(await store.users.useRecoveryCode(u.id, 'a', 2)).toBe(true);
    expect(await store.users.useRecoveryCode(u.id, 'a', 3)).toBe(false);
    expect(await store.users.useRecoveryCode(u.id, 'zz', 3)).toBe(false);
    expect(await store.users.unusedRecoveryCodes(u.id)).toBe(1);
    await store.users.setRecoveryCodes(u.id, ['c'], 4);
    expect(await store.users.useRecoveryCode(u.id, 'b', 5)).toBe(false);
  });

  it('sessions: a duplicate refresh within the grace window gets the same successor; outside it, reuse', async () => {
    const u = user('ann');
    await store.users.create(u);
    const s = session(u.id);
    await store.sessions.create(s, 'g1');
    expect(await store.sessions.rotateRefresh('g1', 'g2', 20, 5)).toMatchObject({ kind: 'rotated' });
    expect(await store.sessions.rotateRefresh('g1', 'g2', 24, 5)).toMatchObject({ kind: 'grace' });
    // A different successor for the same token is not a duplicate: reuse.
    const t2 = session(u.id);
    await store.sessions.create(t2, 'k1');
    await store.sessions.rotateRefresh('k1', 'k2', 20, 5);
    expect(await store.sessions.rotateRefresh('k1', 'kX', 21, 5)).toMatchObject({ kind: 'reused' });
    // Too late: reuse, the family is revoked.
    expect(await store.sessions.rotateRefresh('g1', 'g2', 26, 5)).toMatchObject({ kind: 'reused' });
    // After the successor was itself used, the old one is reuse even inside the window.
    const t3 = session(u.id);
    await store.sessions.create(t3, 'm1');
    await store.sessions.rotateRefresh('m1', 'm2', 20, 5);
    await store.sessions.rotateRefresh('m2', 'm3', 21, 5);
    expect(await store.sessions.rotateRefresh('m1', 'm2', 22, 5)).toMatchObject({ kind: 'reused' });
  });

  it('sessions: step-up records the new authentication; MFA challenges are single use', async () => {
    const u = user('ann');
    await store.users.create(u);
    const s = session(u.id);
    await store.sessions.create(s, 's1');
    expect(await store.sessions.stepUp(s.id, { authTime: 500, amr: ['pwd', 'otp'], acr: 'aal2' })).toBe(true);
    expect(await store.sessions.get(s.id)).toMatchObject({ authTime: 500, amr: ['pwd', 'otp'], acr: 'aal2' });
    await store.sessions.revoke(s.id, 600);
    expect(await store.sessions.stepUp(s.id, { authTime: 700, amr: ['pwd'], acr: 'aal2' })).toBe(false);
    await store.mfaChallenges.create({
      hash: 'c',
      userId: u.id,
      createdAt: 1,
      expiresAt: 9,
      attempts: 0,
      usedAt: null,
    });
    expect(await store.mfaChallenges.fail('c')).toBe(1);
    expect(await store.mfaChallenges.get('c')).toMatchObject({ attempts: 1, usedAt: null });
    expect(await store.mfaChallenges.consume('c', 5)).toBe(true);
    expect(await store.mfaChallenges.consume('c', 6)).toBe(false);
  });

  it('sessions: touch, list by user (newest first), revoke all of a user', async () => {
    const u = user('ann');
    await store.users.create(u);
    const a = { ...session(u.id), createdAt: 10 };
    const b = { ...session(u.id), createdAt: 20 };
    await store.sessions.create(a, 'la');
    await store.sessions.create(b, 'lb');
    await store.sessions.touch(a.id, 50, '10.0.0.9', 'curl/8');
    expect(await store.sessions.get(a.id)).toMatchObject({
      lastSeenAt: 50,
      ip: '10.0.0.9',
      userAgent: 'curl/8',
    });
    expect((await store.sessions.listByUser(u.id)).map((s) => s.id)).toEqual([b.id, a.id]);
    expect(await store.sessions.revokeAll(u.id, 60)).toBe(2);
    expect(await store.sessions.revokeAll(u.id, 70)).toBe(0);
    expect((await store.sessions.listByUser(u.id)).every((s) => s.revokedAt === 60)).toBe(true);
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
