import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyLog } from '../src/audit/index.js';
import { type Stack, startStack } from './helpers.js';

/**
 * The audit log fails for real: a trigger makes SQLite refuse every insert into audit_log (as a full
 * disk would), from another connection, while the gateway serves.
 */
describe('when the audit log cannot be written', () => {
  let s: Stack;
  let token: string;
  beforeAll(async () => {
    s = await startStack({ audit: { decisions: 'batched', flushInterval: '10ms', spoolLimit: 5 } });
    token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
  });
  afterAll(() => s.close());

  const db = () => new Database(`${s.dataDir}/portcullis.db`);
  const call = () =>
    fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${token}` } });
  const metric = async (name: string) => {
    const text = await (await fetch(`${s.pc.adminUrl}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 'NaN');
  };

  it('absorbs a short stall in a bounded spool, then refuses (503) instead of serving unrecorded', async () => {
    const conn = db();
    conn.exec(
      `CREATE TRIGGER audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;`,
    );
    conn.close();

    const allowed: string[] = [];
    let refused = 0;
    const before = s.upstream.received.length;
    for (let i = 0; i < 12; i++) {
      const res = await call();
      if (res.status === 200) allowed.push(res.headers.get('x-request-id') as string);
      else {
        expect(res.status).toBe(503);
        expect((await res.json()).error.code).toBe('store_unavailable');
        refused += 1;
      }
      await new Promise((r) => setTimeout(r, 15));
    }
    expect(allowed.length).toBeLessThanOrEqual(5);
    expect(refused).toBeGreaterThanOrEqual(7);
    expect(s.upstream.received.length - before).toBe(allowed.length);
    // Durable identity events fail closed too.
    expect((await s.login(s.users.viewer.username, s.users.viewer.password)).status).toBe(503);
    expect(await metric('portcullis_audit_pending_records')).toBe(5);
    expect(await metric('portcullis_audit_failures_total{reason="spool_full"}')).toBeGreaterThan(0);
    expect(await metric('portcullis_audit_failures_total{reason="append_failed"}')).toBeGreaterThan(0);

    // The store recovers: the spool drains by itself, nothing accepted was lost, the log verifies.
    const fix = db();
    fix.exec('DROP TRIGGER audit_full');
    fix.close();
    for (let i = 0; i < 100 && (await metric('portcullis_audit_pending_records')) > 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(await metric('portcullis_audit_pending_records')).toBe(0);
    expect((await call()).status).toBe(200);
    await s.pc.core.audit.flush();
    const logged = new Set<string>();
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'gateway.decision') logged.add(JSON.parse(r.data).requestId);
    expect(allowed.filter((id) => !logged.has(id))).toEqual([]);
    expect(
      await verifyLog(s.pc.core.store.audit.scan(), await s.pc.core.store.audit.checkpoints()),
    ).toMatchObject({ ok: true });
  });
});

describe('failing open, per event class', () => {
  it('with decisions set to fail open, requests keep flowing (records dropped and counted) while logins still fail closed', async () => {
    const s = await startStack({
      audit: { decisions: 'batched', flushInterval: '10ms', spoolLimit: 3, failOpen: { decisions: true } },
    });
    try {
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      const conn = new Database(`${s.dataDir}/portcullis.db`);
      conn.exec(
        `CREATE TRIGGER audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;`,
      );
      conn.close();
      for (let i = 0; i < 8; i++) {
        const res = await fetch(`${s.pc.gatewayUrl}/api/orders`, {
          headers: { authorization: `Bearer ${token}` },
        });
        expect(res.status).toBe(200);
        await new Promise((r) => setTimeout(r, 15));
      }
      expect((await s.login(s.users.viewer.username, s.users.viewer.password)).status).toBe(503);
      const text = await (await fetch(`${s.pc.adminUrl}/metrics`)).text();
      expect(
        Number(/portcullis_audit_failures_total\{reason="spool_full"\} (\d+)/.exec(text)?.[1]),
      ).toBeGreaterThan(0);
      const fix = new Database(`${s.dataDir}/portcullis.db`);
      fix.exec('DROP TRIGGER audit_full');
      fix.close();
    } finally {
      await s.close();
    }
  });
});
