import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Checkpointer,
  chainHash,
  consistencyProof,
  emptyRoot,
  GENESIS_HASH,
  type Hash,
  inclusionProof,
  leafHash,
  loadCheckpointSigner,
  nodeHash,
  openCheckpoint,
  parseVerifierKey,
  RootAccumulator,
  treeRoot,
  verifyConsistency,
  verifyInclusion,
  verifyLog,
} from '../src/audit/index.js';
import { createLogger, manualClock } from '../src/core/index.js';
import { openSqliteStore } from '../src/store/index.js';
import { type Stack, startStack, tempDir } from './helpers.js';

const hex = (h: Hash) => h.toString('hex');
const unhex = (s: string) => Buffer.from(s, 'hex');

/** The reference tree of RFC 6962 implementations (certificate-transparency-go's merkle tests). */
const CT_LEAVES = [
  '',
  '00',
  '10',
  '2021',
  '3031',
  '40414243',
  '5051525354555657',
  '606162636465666768696a6b6c6d6e6f',
].map((h) => leafHash(unhex(h)));
const CT_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];

/** MTH straight from the RFC's recursive definition, for cross-checking. */
function naiveRoot(leaves: readonly Hash[]): Hash {
  if (leaves.length === 0) return emptyRoot();
  if (leaves.length === 1) return leaves[0] as Hash;
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(naiveRoot(leaves.slice(0, k)), naiveRoot(leaves.slice(k)));
}

describe('RFC 9162 Merkle tree', () => {
  it('matches the reference roots for sizes 0–8', () => {
    for (let n = 0; n <= 8; n++) {
      expect(hex(treeRoot(CT_LEAVES, n)), `size ${n}`).toBe(CT_ROOTS[n]);
      const acc = new RootAccumulator();
      for (const l of CT_LEAVES.slice(0, n)) acc.push(l);
      expect(hex(acc.root())).toBe(CT_ROOTS[n]);
    }
  });

  it('produces the reference inclusion and consistency proofs', () => {
    expect(inclusionProof(CT_LEAVES, 0, 8).map(hex)).toEqual([
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ]);
    expect(consistencyProof(CT_LEAVES, 6, 8).map(hex)).toEqual([
      '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ]);
    expect(consistencyProof(CT_LEAVES, 2, 5).map(hex)).toEqual([
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ]);
  });

  it('every proof of every tree of sizes 0–9 verifies, and none verifies for the wrong index or root', () => {
    const leaves = Array.from({ length: 9 }, (_, i) => leafHash(`entry-${i}`));
    for (let n = 0; n <= 9; n++) {
      const root = treeRoot(leaves, n);
      expect(root.equals(naiveRoot(leaves.slice(0, n)))).toBe(true);
      for (let i = 0; i < n; i++) {
        const proof = inclusionProof(leaves, i, n);
        expect(verifyInclusion(leaves[i] as Hash, i, n, proof, root), `incl ${i}/${n}`).toBe(true);
        if (n > 1) expect(verifyInclusion(leaves[i] as Hash, (i + 1) % n, n, proof, root)).toBe(false);
        // (A wrong size may share the path's shape, e.g. index 0 in sizes 3 and 4: the signed checkpoint binds size and root.)
        expect(verifyInclusion(leaves[i] as Hash, i, n, proof, leafHash('other'))).toBe(false);
      }
      for (let m = 0; m <= n; m++) {
        const proof = consistencyProof(leaves, m, n);
        const r1 = treeRoot(leaves, m);
        expect(verifyConsistency(m, n, r1, root, proof), `cons ${m}->${n}`).toBe(true);
        if (m > 0 && m < n) {
          expect(verifyConsistency(m, n, leafHash('forged'), root, proof)).toBe(false);
          expect(verifyConsistency(m, n, r1, leafHash('forged'), proof)).toBe(false);
        }
      }
    }
  });

  it('random trees: proofs verify; a flipped bit, a dropped or an extra hash does not', () => {
    for (let round = 0; round < 30; round++) {
      const n = 1 + Math.floor(Math.random() * 300);
      const leaves = Array.from({ length: n }, () => leafHash(randomBytes(16)));
      const root = treeRoot(leaves);
      const acc = new RootAccumulator();
      for (const l of leaves) acc.push(l);
      expect(acc.root().equals(root)).toBe(true);
      const i = Math.floor(Math.random() * n);
      const proof = inclusionProof(leaves, i, n);
      expect(verifyInclusion(leaves[i] as Hash, i, n, proof, root)).toBe(true);
      const first = proof[0];
      if (first) {
        const tampered = Buffer.from(first);
        tampered.writeUInt8(tampered.readUInt8(0) ^ 1, 0);
        const flipped = [tampered, ...proof.slice(1)];
        expect(verifyInclusion(leaves[i] as Hash, i, n, flipped, root)).toBe(false);
        expect(verifyInclusion(leaves[i] as Hash, i, n, proof.slice(1), root)).toBe(false);
      }
      expect(verifyInclusion(leaves[i] as Hash, i, n, [...proof, leafHash('x')], root)).toBe(false);
      const m = Math.floor(Math.random() * (n + 1));
      const cproof = consistencyProof(leaves, m, n);
      expect(verifyConsistency(m, n, treeRoot(leaves, m), root, cproof)).toBe(true);
      if (cproof.length > 1)
        expect(verifyConsistency(m, n, treeRoot(leaves, m), root, cproof.slice(0, -1))).toBe(false);
    }
  });

  it('refuses out-of-range proof requests', () => {
    expect(() => inclusionProof(CT_LEAVES, 8, 8)).toThrow(RangeError);
    expect(() => consistencyProof(CT_LEAVES, 5, 4)).toThrow(RangeError);
    expect(verifyInclusion(CT_LEAVES[0] as Hash, 0, 0, [], emptyRoot())).toBe(false);
  });
});

describe('C2SP checkpoints', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  it('signs a tlog-checkpoint note that opens with the verifier key, and refuses any change', () => {
    const signer = loadCheckpointSigner(`${t.dir}/cp.pem`, 'example.test/log');
    const root = treeRoot(CT_LEAVES);
    const cp = signer.sign(8, root);
    const lines = cp.note.split('\n');
    expect(lines.slice(0, 4)).toEqual(['example.test/log', '8', root.toString('base64'), '']);
    expect(lines[4]).toMatch(/^\u2014 example\.test\/log [A-Za-z0-9+/]{91}=$/);
    expect(signer.verifierKey).toMatch(/^example\.test\/log\+[0-9a-f]{8}\+/);
    const key = parseVerifierKey(signer.verifierKey);
    expect(openCheckpoint(cp.note, key)).toMatchObject({ origin: 'example.test/log', size: 8 });

    expect(() => openCheckpoint(cp.note.replace('\n8\n', '\n9\n'), key)).toThrow(/signature does not verify/);
    const other = parseVerifierKey(
      loadCheckpointSigner(`${t.dir}/other.pem`, 'example.test/log').verifierKey,
    );
    expect(() => openCheckpoint(cp.note, other)).toThrow(/no signature/);
    expect(() => openCheckpoint(cp.note, { ...key, name: 'someone.else/log' })).toThrow(/no signature/);
    // The same key file gives the same signer.
    expect(loadCheckpointSigner(`${t.dir}/cp.pem`, 'example.test/log').verifierKey).toBe(signer.verifierKey);
  });
});

describe('checkpoints and proofs on the admin listener', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
    const { body } = await s.login(s.users.viewer.username, s.users.viewer.password);
    for (let i = 0; i < 3; i++) {
      await fetch(`${s.pc.gatewayUrl}/api/orders`, {
        headers: { authorization: `Bearer ${body.access_token}` },
      });
    }
    await s.pc.core.audit.flush();
    await s.pc.core.checkpointer.checkpoint();
  });
  afterAll(() => s.close());

  it('serves the latest signed checkpoint and proofs that verify against it', async () => {
    const noteRes = await fetch(`${s.pc.adminUrl}/audit/checkpoint`);
    expect(noteRes.status).toBe(200);
    const cp = openCheckpoint(await noteRes.text(), parseVerifierKey(s.pc.core.checkpointSigner.verifierKey));
    expect(cp.size).toBe(await s.pc.core.store.audit.count());

    const incl = await (await fetch(`${s.pc.adminUrl}/audit/proof/inclusion?seq=2&size=${cp.size}`)).json();
    expect(verifyInclusion(unhex(incl.leafHash), 1, cp.size, incl.proof.map(unhex), cp.root)).toBe(true);
    const cons = await (
      await fetch(`${s.pc.adminUrl}/audit/proof/consistency?first=1&second=${cp.size}`)
    ).json();
    expect(verifyConsistency(1, cp.size, unhex(cons.first.root), cp.root, cons.proof.map(unhex))).toBe(true);
    expect((await fetch(`${s.pc.adminUrl}/audit/proof/inclusion?seq=999`)).status).toBe(400);
    expect((await fetch(`${s.pc.adminUrl}/audit/proof/inclusion?seq=abc`)).status).toBe(400);
    // Admin only: the public listener does not serve them.
    expect((await fetch(`${s.pc.gatewayUrl}/audit/checkpoint`)).status).toBe(404);
  });

  it('a later checkpoint extends the earlier one (consistency proof between two signed checkpoints)', async () => {
    const first = (await s.pc.core.store.audit.checkpoints()).at(-1);
    await s.login(s.users.admin.username, s.users.admin.password);
    await s.pc.core.checkpointer.checkpoint();
    const second = (await s.pc.core.store.audit.checkpoints()).at(-1);
    if (!first || !second) throw new Error('no checkpoints');
    expect(second.size).toBeGreaterThan(first.size);
    const cons = await (
      await fetch(`${s.pc.adminUrl}/audit/proof/consistency?first=${first.size}&second=${second.size}`)
    ).json();
    expect(
      verifyConsistency(
        first.size,
        second.size,
        unhex(first.root),
        unhex(second.root),
        cons.proof.map(unhex),
      ),
    ).toBe(true);
  });
});

describe('Checkpointer', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  it('signs every N records, and refuses to sign a log that no longer matches its last checkpoint', async () => {
    const file = `${t.dir}/cp.db`;
    const store = openSqliteStore(file);
    const signer = loadCheckpointSigner(`${t.dir}/cp.pem`, 'test/log');
    const errors: string[] = [];
    const log = createLogger({ level: 'silent' });
    log.error = ((obj: unknown, msg?: string) => {
      errors.push(msg ?? String(obj));
    }) as typeof log.error;
    const make = () =>
      new Checkpointer({
        store: store.audit,
        signer,
        clock: manualClock(0),
        log,
        everyRecords: 3,
        intervalMs: 3_600_000,
      });
    const cp = make();
    const append = async (n: number) => {
      const drafts = Array.from({ length: n }, (_, i) => ({ ts: i, type: 't', data: `{"i":${i}}` }));
      const records = await store.audit.append(drafts, chainHash, GENESIS_HASH);
      return records;
    };
    await cp.checkpoint(); // empty log: nothing to sign
    expect(await store.audit.checkpoints()).toEqual([]);
    cp.onCommitted(await append(2));
    await cp.checkpoint();
    cp.onCommitted(await append(3)); // 3 more since the last checkpoint: signs by itself
    await cp.close();
    expect((await store.audit.checkpoints()).map((c) => c.size)).toEqual([2, 5]);

    const db = new Database(file);
    db.prepare(`UPDATE audit_log SET data = '{"i":99}' WHERE seq = 1`).run();
    db.close();
    const fresh = make();
    fresh.onCommitted(await append(1));
    await fresh.checkpoint();
    expect((await store.audit.checkpoints()).map((c) => c.size)).toEqual([2, 5]);
    expect(errors.join()).toContain('no longer matches its last checkpoint');
    await store.close();
  });
});

describe('checkpoint anchor webhook', () => {
  it('POSTs each checkpoint (retrying a failing receiver); the receiver’s copy verifies the log', async () => {
    const received: string[] = [];
    let calls = 0;
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        calls += 1;
        if (calls === 1) return res.writeHead(503).end();
        received.push(body);
        res.writeHead(201).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/anchor`;
    const s = await startStack({
      audit: { decisions: 'batched', flushInterval: '10ms', checkpoint: { anchorWebhook: { url } } },
    });
    try {
      await s.login(s.users.viewer.username, s.users.viewer.password);
      await s.pc.core.checkpointer.checkpoint();
      expect(calls).toBe(2);
      expect(received).toHaveLength(1);
      const anchored = received.map((b) => JSON.parse(b));
      expect(
        openCheckpoint(anchored[0].note, parseVerifierKey(s.pc.core.checkpointSigner.verifierKey)).size,
      ).toBe(anchored[0].size);
      const v = await verifyLog(s.pc.core.store.audit.scan(), [], { anchored });
      expect(v).toMatchObject({ ok: true, checkpointsVerified: 1 });
    } finally {
      await s.close();
      receiver.close();
    }
  });
});
