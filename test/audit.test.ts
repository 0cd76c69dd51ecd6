import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  canonicalJson,
  chainHash,
  entryBytes,
  GENESIS_HASH,
  leafHash,
  loadCheckpointSigner,
  openCheckpoint,
  parseVerifierKey,
  verifyConsistency,
  verifyInclusion,
  verifyLog,
} from '../src/audit/index.js';
import { runCli } from '../src/cli/index.js';
import { loadConfigFile } from '../src/config/index.js';
import { createLogger } from '../src/core/index.js';
import { checkpointKeyFile, checkpointOrigin, startPortcullis } from '../src/portcullis.js';
import { type AuditRecord, openSqliteStore } from '../src/store/index.js';
import { captureIO, startRecordingUpstream, tempDir, writeConfigFile } from './helpers.js';

describe('canonical JSON (RFC 8785)', () => {
  it('sorts members by UTF-16 code units and serializes numbers the ECMAScript way', () => {
    // RFC 8785 §3.2.3 sorting example (keys only) and number forms from §3.2.2.3.
    const sorted = canonicalJson({
      '\u20ac': 'Euro Sign',
      '\r': 'Carriage Return',
      '\ufb33': 'Hebrew Letter Dalet With Dagesh',
      '1': 'One',
      '\ud83d\ude00': 'Emoji: Grinning Face',
      '\u0080': 'Control',
      '\u00f6': 'Latin Small Letter O With Diaeresis',
    });
    const keyOrder = [...sorted.matchAll(/"((?:[^"\\]|\\.)*)":/g)].map((m) => JSON.parse(`"${m[1]}"`));
    expect(keyOrder).toEqual(['\r', '1', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33']);
    expect(
      canonicalJson({
        numbers: [Number('333333333.33333329'), 1e30, 4.5, 2e-3, 0.000000000000000000000000001, -0],
      }),
    ).toBe('{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27,0]}');
    expect(canonicalJson({ b: [1, { d: null, c: 'x' }], a: true, u: undefined })).toBe(
      '{"a":true,"b":[1,{"c":"x","d":null}]}',
    );
    expect(() => canonicalJson({ x: Number.NaN })).toThrow();
  });

  it('gives the same bytes whether or not the value is already in canonical order', () => {
    // In order: serialized natively. Each variant below breaks the order (or the JSON types) at a
    // different depth and must come out exactly as the sorting serializer writes it.
    const inOrder = {
      a: 1,
      b: [true, null, undefined, { c: 'x', d: [{ e: -0, f: 1e21 }] }],
      g: undefined,
      h: { i: '\u2028\ud800', j: 'é"\\' },
    };
    // U+2028 stays as is, a lone surrogate is escaped (both as ECMAScript's JSON.stringify does).
    const expected =
      '{"a":1,"b":[true,null,null,{"c":"x","d":[{"e":0,"f":1e+21}]}],"h":{"i":"\u2028\\ud800","j":"é\\"\\\\"}}';
    expect(canonicalJson(inOrder)).toBe(expected);
    expect(canonicalJson({ h: inOrder.h, b: inOrder.b, a: 1 })).toBe(expected);
    expect(canonicalJson({ a: [{ d: [{ f: 2, e: 1 }] }] })).toBe('{"a":[{"d":[{"e":1,"f":2}]}]}');
    // Integer-like names come first in the engine's own order, not in code-unit order.
    expect(canonicalJson({ '10': 'ten', '9': 'nine', a: 0 })).toBe('{"10":"ten","9":"nine","a":0}');
    // Non-JSON values in an otherwise ordered object are refused, not turned into null or dropped.
    expect(() => canonicalJson({ a: 1, b: Number.POSITIVE_INFINITY })).toThrow(/non-finite/);
    expect(() => canonicalJson({ a: [10n] })).toThrow(/bigint/);
    expect(() => canonicalJson({ a: () => 1 })).toThrow(/function/);
    expect(() => canonicalJson(undefined)).toThrow(/undefined/);
    // No toJSON: a Date is an object without own members here, exactly as before.
    expect(canonicalJson({ a: new Date(0) })).toBe('{"a":{}}');
    const noProto = Object.assign(Object.create(null) as Record<string, unknown>, { y: 2, x: 1 });
    expect(canonicalJson(noProto)).toBe('{"x":1,"y":2}');
  });
});

describe('hash chain', () => {
  const build = (n: number): AuditRecord[] => {
    const out: AuditRecord[] = [];
    let prev = GENESIS_HASH;
    for (let seq = 1; seq <= n; seq++) {
      const r = { seq, ts: 1_700_000_000_000 + seq, type: 't', data: canonicalJson({ seq }) };
      const hash = chainHash(prev, r);
      out.push({ ...r, prevHash: prev, hash });
      prev = hash;
    }
    return out;
  };

  it('verifies an intact chain and an empty one', async () => {
    expect(await verifyLog(build(5), [])).toMatchObject({ ok: true, count: 5 });
    expect(await verifyLog([], [])).toMatchObject({ ok: true, count: 0, head: GENESIS_HASH });
  });

  it('names an edited, removed, re-ordered or re-linked record', async () => {
    const edited = build(5);
    edited[2] = { ...(edited[2] as AuditRecord), data: '{"seq":99}' };
    expect(await verifyLog(edited, [])).toMatchObject({
      ok: false,
      badSeq: 3,
      reason: expect.stringContaining('altered'),
    });

    const removed = build(5).filter((r) => r.seq !== 2);
    expect(await verifyLog(removed, [])).toMatchObject({
      ok: false,
      badSeq: 2,
      reason: expect.stringContaining('missing'),
    });

    const swapped = build(5);
    [swapped[1], swapped[2]] = [swapped[2] as AuditRecord, swapped[1] as AuditRecord];
    expect(await verifyLog(swapped, [])).toMatchObject({ ok: false, badSeq: 2 });

    // Removing a record and renumbering the rest still breaks the link.
    const renumbered = build(5)
      .filter((r) => r.seq !== 3)
      .map((r) => (r.seq > 3 ? { ...r, seq: r.seq - 1 } : r));
    expect(await verifyLog(renumbered, [])).toMatchObject({
      ok: false,
      badSeq: 3,
      reason: expect.stringContaining('does not link'),
    });
  });
});

describe('portcullis audit verify (CLI, real SQLite file)', () => {
  let t: ReturnType<typeof tempDir>;
  let configFile: string;
  let dbFile: string;

  beforeEach(async () => {
    t = tempDir();
    const upstream = await startRecordingUpstream();
    configFile = await writeConfigFile(t.dir, upstream.url, {
      audit: {
        decisions: 'batched',
        flushInterval: '10ms',
        checkpoint: { anchorFile: './anchor/checkpoints.jsonl' },
      },
    });
    const loaded = loadConfigFile(configFile);
    dbFile = join(loaded.dataDir, 'portcullis.db');
    const pc = await startPortcullis(loaded, { log: createLogger({ level: 'silent' }) });
    await pc.core.identity.createUser({ username: 'vera', password: 'vera-password-1', roles: ['viewer'] });
    const login = await fetch(`${pc.gatewayUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'vera', password: 'vera-password-1' }),
    });
    const { access_token } = await login.json();
    // Five key records (access token, assertion, data, checkpoint, HMAC), the user, the login and three
    // decisions: ten records, the second checkpoint at size 10.
    for (const path of ['/api/admin/x', '/api/orders/1', '/nope']) {
      await fetch(`${pc.gatewayUrl}${path}`, { headers: { authorization: `Bearer ${access_token}` } });
    }
    await pc.close();
    await upstream.close();
  });
  afterEach(() => t.cleanup());

  const verify = async () => {
    const c = captureIO();
    const code = await runCli(['audit', 'verify', '--config', configFile], c.io);
    return { code, out: c.out() };
  };

  it('passes on a fresh log holding every decision and identity event', async () => {
    const { code, out } = await verify();
    expect(code).toBe(0);
    expect(out).toMatch(
      /^audit log intact: 10 records, 2 signed checkpoints \(stored and anchored copies\) verified, root [0-9a-f]{64}, chain head [0-9a-f]{64}\n$/,
    );
    const db = new Database(dbFile, { readonly: true });
    const types = db.prepare('SELECT type, data FROM audit_log ORDER BY seq').all() as Array<{
      type: string;
      data: string;
    }>;
    db.close();
    expect(types.map((r) => r.type)).toEqual([
      'keys.generated',
      'keys.generated',
      'keys.generated',
      'keys.generated',
      'keys.generated',
      'identity.user.created',
      'auth.login.succeeded',
      'gateway.decision',
      'gateway.decision',
      'gateway.decision',
    ]);
    const decisions = types.filter((r) => r.type === 'gateway.decision').map((r) => JSON.parse(r.data));
    expect(decisions.map((d) => [d.path, d.outcome, d.status ?? 200])).toEqual([
      ['/api/admin/x', 'deny', 403],
      ['/api/orders/1', 'allow', 200],
      ['/nope', 'deny', 404],
    ]);
    expect(types.some((r) => r.data.includes('vera-password-1'))).toBe(false);
    // Sensitive fields are keyed HMACs: no client IP or username in clear, but findable with the key.
    expect(types.some((r) => r.data.includes('127.0.0.1"') && !r.data.includes('"host":"127.0.0.1"'))).toBe(
      false,
    );
    expect(types.some((r) => r.data.includes('"vera"'))).toBe(false);
    const hashed = captureIO();
    expect(await runCli(['audit', 'hash', '127.0.0.1', '--config', configFile], hashed.io)).toBe(0);
    const ipHash = hashed.out().trim();
    expect(ipHash).toMatch(/^hmac-sha256:[A-Za-z0-9_-]{43}$/);
    expect(decisions.every((d) => d.ip === ipHash)).toBe(true);
    const byIp = captureIO();
    expect(await runCli(['audit', 'tail', '--filter', `ip=${ipHash}`, '--config', configFile], byIp.io)).toBe(
      0,
    );
    expect(byIp.out().trim().split('\n')).toHaveLength(4); // the login and three decisions
  });

  it('fails and names the record after a row is edited in the database file', async () => {
    const db = new Database(dbFile);
    db.prepare(`UPDATE audit_log SET data = replace(data, '"deny"', '"allow"') WHERE seq = 8`).run();
    db.close();
    const { code, out } = await verify();
    expect(code).toBe(1);
    expect(out).toContain('audit log BROKEN at record 8: record 8 was altered');
  });

  it('fails and names the record after a row is deleted', async () => {
    const db = new Database(dbFile);
    db.prepare('DELETE FROM audit_log WHERE seq = 7').run();
    db.close();
    const { code, out } = await verify();
    expect(code).toBe(1);
    expect(out).toContain('audit log BROKEN at record 7: record 7 is missing');
  });

  it('fails when a row is deleted and the rest renumbered to hide the gap', async () => {
    const db = new Database(dbFile);
    db.prepare('DELETE FROM audit_log WHERE seq = 6').run();
    db.prepare('UPDATE audit_log SET seq = seq - 1 WHERE seq > 6').run();
    db.close();
    const { code, out } = await verify();
    expect(code).toBe(1);
    expect(out).toContain('BROKEN at record 6');
  });

  it('fails when the newest records are cut off (truncation below a signed checkpoint)', async () => {
    const db = new Database(dbFile);
    db.prepare('DELETE FROM audit_log WHERE seq > 8').run();
    db.close();
    const { code, out } = await verify();
    expect(code).toBe(1);
    expect(out).toContain('log has 8 records but a checkpoint covers 10 (truncated or rolled back)');
  });

  it('fails when history is rewritten with a re-computed, internally valid chain', async () => {
    const db = new Database(dbFile);
    const rows = db.prepare('SELECT * FROM audit_log ORDER BY seq').all() as Array<{
      seq: number;
      ts: number;
      type: string;
      data: string;
      prev_hash: string;
      hash: string;
    }>;
    let prev = GENESIS_HASH;
    const update = db.prepare('UPDATE audit_log SET data = ?, prev_hash = ?, hash = ? WHERE seq = ?');
    for (const r of rows) {
      const data = r.seq === 8 ? r.data.replace('"deny"', '"allow"') : r.data;
      const hash = chainHash(prev, { seq: r.seq, ts: r.ts, type: r.type, data });
      update.run(data, prev, hash, r.seq);
      prev = hash;
    }
    db.close();
    const { code, out } = await verify();
    expect(code).toBe(1);
    expect(out).toContain('checkpoint at size 10 does not match the log (history rewritten)');
  });

  it('fails on a forged checkpoint (root swapped, signature no longer matches)', async () => {
    const db = new Database(dbFile);
    const cp = db.prepare('SELECT size, root, note FROM audit_checkpoints').get() as {
      size: number;
      root: string;
      note: string;
    };
    const forgedRoot = Buffer.alloc(32, 7);
    const lines = cp.note.split('\n');
    lines[2] = forgedRoot.toString('base64');
    db.prepare('UPDATE audit_checkpoints SET root = ?, note = ? WHERE size = ?').run(
      forgedRoot.toString('hex'),
      lines.join('\n'),
      cp.size,
    );
    db.close();
    const { code, out } = await verify();
    expect(code).toBe(1);
    expect(out).toContain(
      'two different checkpoints for size 10 (stored vs anchored): history was rewritten',
    );
    // With the stored root left alone, only the note's signature gives it away.
    const db2 = new Database(dbFile);
    db2.prepare('UPDATE audit_checkpoints SET root = ? WHERE size = ?').run(cp.root, cp.size);
    db2.close();
    const again = await verify();
    expect(again.code).toBe(1);
    expect(again.out).toMatch(
      /checkpoint at size 10: checkpoint: (signature does not verify|note does not match)/,
    );
  });

  it('catches a database rolled back together with its checkpoints, through the anchored copies', async () => {
    const snapshot = `${dbFile}.snapshot`;
    copyFileSync(dbFile, snapshot);
    const upstream = await startRecordingUpstream();
    const pc = await startPortcullis(loadConfigFile(configFile), { log: createLogger({ level: 'silent' }) });
    await fetch(`${pc.gatewayUrl}/nope`);
    await fetch(`${pc.gatewayUrl}/nope/again`);
    await pc.close();
    await upstream.close();
    expect((await verify()).code).toBe(0);
    copyFileSync(snapshot, dbFile); // the database, checkpoints included, as it was before
    rmSync(`${dbFile}-wal`, { force: true });
    rmSync(`${dbFile}-shm`, { force: true });
    const { code, out } = await verify();
    expect(code).toBe(1);
    expect(out).toMatch(/log has 10 records but a checkpoint covers \d+ \(truncated or rolled back\)/);
    // Without the anchor, the rolled-back database is self-consistent: that is what anchoring is for.
    const c = captureIO();
    expect(
      await runCli(
        ['audit', 'verify', '--anchor', join(t.dir, 'no-such-anchor.jsonl'), '--config', configFile],
        c.io,
      ),
    ).toBe(0);
    expect(
      readFileSync(join(t.dir, 'anchor', 'checkpoints.jsonl'), 'utf8')
        .trim()
        .split('\n').length,
    ).toBe(2);
  });

  it('audit tail and export print records as JSON lines, filtered; tail --follow prints new ones', async () => {
    const lines = (out: string) =>
      out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
    const t2 = captureIO();
    expect(await runCli(['audit', 'tail', '-n', '2', '--config', configFile], t2.io)).toBe(0);
    expect(lines(t2.out()).map((r) => r.seq)).toEqual([9, 10]);
    const denies = captureIO();
    expect(
      await runCli(
        ['audit', 'tail', '--filter', 'type=gateway.*', '--filter', 'outcome=deny', '--config', configFile],
        denies.io,
      ),
    ).toBe(0);
    expect(lines(denies.out()).map((r) => [r.data.path, r.data.status])).toEqual([
      ['/api/admin/x', 403],
      ['/nope', 404],
    ]);
    const exp = captureIO();
    expect(
      await runCli(['audit', 'export', '--since', '8', '--format', 'jsonl', '--config', configFile], exp.io),
    ).toBe(0);
    expect(lines(exp.out()).map((r) => r.seq)).toEqual([8, 9, 10]);
    expect(lines(exp.out())[0]).toMatchObject({
      type: 'gateway.decision',
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    const future = captureIO();
    expect(
      await runCli(['audit', 'export', '--since', '2999-01-01T00:00:00Z', '--config', configFile], future.io),
    ).toBe(0);
    expect(future.out()).toBe('');
    expect(await runCli(['audit', 'export', '--format', 'csv', '--config', configFile], captureIO().io)).toBe(
      2,
    );

    const controller = new AbortController();
    const follow = captureIO({ signal: controller.signal });
    const running = runCli(
      ['audit', 'tail', '-n', '0', '--follow', '--poll-ms', '20', '--config', configFile],
      follow.io,
    );
    await new Promise((r) => setTimeout(r, 60));
    const store = openSqliteStore(dbFile);
    await store.audit.append(
      [{ ts: Date.now(), type: 'admin.test', data: '{"hello":"world"}' }],
      chainHash,
      GENESIS_HASH,
    );
    await store.close();
    for (let i = 0; i < 50 && !follow.out().includes('hello'); i++)
      await new Promise((r) => setTimeout(r, 20));
    controller.abort();
    expect(await running).toBe(0);
    expect(lines(follow.out())).toEqual([
      { seq: 11, time: expect.any(String), type: 'admin.test', data: { hello: 'world' } },
    ]);
  });

  it('audit prove prints an inclusion proof that verifies offline against the signed checkpoint', async () => {
    const c = captureIO();
    expect(await runCli(['audit', 'prove', '8', '--config', configFile], c.io)).toBe(0);
    const bundle = JSON.parse(c.out());
    expect(bundle).toMatchObject({
      leafIndex: 7,
      treeSize: 10,
      record: { seq: 8, type: 'gateway.decision' },
    });
    const key = parseVerifierKey(verifierKeyOf(configFile));
    const cp = openCheckpoint(bundle.checkpoint, key);
    expect(cp.size).toBe(10);
    const leaf = leafHash(entryBytes({ ...bundle.record, data: canonicalJson(bundle.record.data) }));
    expect(leaf.toString('hex')).toBe(bundle.leafHash);
    const proof = bundle.proof.map((h: string) => Buffer.from(h, 'hex'));
    expect(verifyInclusion(leaf, 7, 10, proof, cp.root)).toBe(true);
    expect(verifyInclusion(leaf, 6, 10, proof, cp.root)).toBe(false);

    const cons = captureIO();
    expect(
      await runCli(['audit', 'prove', '--consistency', '2', '10', '--config', configFile], cons.io),
    ).toBe(0);
    const cb = JSON.parse(cons.out());
    expect(
      verifyConsistency(
        2,
        10,
        Buffer.from(cb.first.root, 'hex'),
        cp.root,
        cb.proof.map((h: string) => Buffer.from(h, 'hex')),
      ),
    ).toBe(true);
    expect(await runCli(['audit', 'prove', '99', '--config', configFile], captureIO().io)).toBe(2);
  });
});

/** The C2SP verifier key of a config's checkpoint key (what an auditor would be given). */
function verifierKeyOf(configFile: string): string {
  const loaded = loadConfigFile(configFile);
  return loadCheckpointSigner(checkpointKeyFile(loaded), checkpointOrigin(loaded.config)).verifierKey;
}

describe('gateway decision record', () => {
  it('is built in canonical member order, so the audit writer serializes it natively', async () => {
    const { decisionRecord } = await import('../src/gateway/decision-record.js');
    const { PortcullisError } = await import('../src/core/index.js');
    const ctx = {
      req: { url: '/x' },
      host: 'api.example.com',
      ip: '192.0.2.1',
      method: 'GET',
      requestId: 'req-1',
      target: { path: '/x', query: '' },
      route: { id: 'r' },
      principal: { id: 'alice', sessionId: 's1' },
      device: { id: 'd1' },
      decision: { outcome: 'allow', reason: 'allowed by rule a', ruleIds: ['a'] },
      risk: {
        score: 25,
        signals: [
          { name: 'request_velocity', weight: 20, evidence: { perMinute: 900 } },
          { name: 'no_mfa', weight: 5, evidence: { amr: [] } },
          { name: 'failure_velocity', weight: 30, evidence: { ip: '192.0.2.1', perMinute: 12 } },
        ],
      },
    } as unknown as Parameters<typeof decisionRecord>[0];
    for (const error of [undefined, new PortcullisError('forbidden')]) {
      const record = decisionRecord(ctx, error);
      expect(canonicalJson(record)).toBe(JSON.stringify(record));
      expect(JSON.stringify(record)).toContain(
        '"signals":[{"evidence":{"perMinute":900},"name":"request_velocity"',
      );
    }
  });
});
