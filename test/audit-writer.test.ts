import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditUnavailableError, AuditWriter, verifyLog } from '../src/audit/index.js';
import { createLogger, systemClock } from '../src/core/index.js';
import { openSqliteStore, type Store } from '../src/store/index.js';
import { tempDir } from './helpers.js';

const log = createLogger({ level: 'silent' });

describe('AuditWriter against a real SQLite store that fails and recovers', () => {
  let t: ReturnType<typeof tempDir>;
  let store: Store;
  let file: string;
  beforeEach(() => {
    t = tempDir();
    file = `${t.dir}/a.db`;
    store = openSqliteStore(file);
  });
  afterEach(async () => {
    await store.close();
    t.cleanup();
  });
  const breakLog = () => {
    const db = new Database(file);
    db.exec(
      `CREATE TRIGGER audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;`,
    );
    db.close();
  };
  const fixLog = () => {
    const db = new Database(file);
    db.exec('DROP TRIGGER audit_full');
    db.close();
  };
  const types = async () => {
    const out: string[] = [];
    for await (const r of store.audit.scan()) out.push(r.type);
    return out;
  };

  it('a durable record reported as failed is never committed later; batched ones are retried', async () => {
    const writer = new AuditWriter({ store: store.audit, clock: systemClock, log, flushIntervalMs: 5 });
    breakLog();
    await writer.write({ type: 'batched.during-outage', data: {} }, 'batched');
    await expect(writer.write({ type: 'login.ok', data: {} }, 'durable')).rejects.toBeInstanceOf(
      AuditUnavailableError,
    );
    fixLog();
    await writer.flush();
    for (let i = 0; i < 60 && writer.pending > 0; i++) await new Promise((r) => setTimeout(r, 50));
    await writer.write({ type: 'after', data: {} }, 'durable');
    expect(await types()).toEqual(['batched.during-outage', 'after']);
    await writer.close();
  });

  it('an observer that throws after a commit does not make the batch commit twice', async () => {
    let calls = 0;
    const writer = new AuditWriter({
      store: store.audit,
      clock: systemClock,
      log,
      flushIntervalMs: 5,
      onCommit: () => {
        calls += 1;
        throw new Error('observer bug');
      },
    });
    await writer.write({ type: 'login.ok', data: {} }, 'durable');
    await writer.write({ type: 'next', data: {} }, 'durable');
    expect(await types()).toEqual(['login.ok', 'next']);
    expect(calls).toBe(2);
    expect(await verifyLog(store.audit.scan(), [])).toMatchObject({ ok: true, count: 2 });
    await writer.close();
  });

  it('keeps committing after a failure handler throws (the flush chain cannot get stuck)', async () => {
    const writer = new AuditWriter({
      store: store.audit,
      clock: systemClock,
      log,
      flushIntervalMs: 5,
      onFailure: () => {
        throw new Error('metrics bug');
      },
    });
    breakLog();
    await expect(writer.write({ type: 'a', data: {} }, 'durable')).rejects.toThrow();
    fixLog();
    await expect(writer.write({ type: 'b', data: {} }, 'durable')).resolves.toBeUndefined();
    expect(await types()).toEqual(['b']);
    await writer.close();
  });
});
