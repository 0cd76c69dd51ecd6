// Audit log benchmark: batched append throughput (what the gateway's decisions cost the writer) and
// full verification speed (hash chain + Merkle tree + checkpoints) on a real SQLite file.
//   npm run build && node bench/micro/audit.mjs [--records 1000000] [--batch 512] [--durable 20000] [--concurrency 64]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AuditWriter, Checkpointer, loadCheckpointSigner, verifyLog } from '../../dist/audit/index.js';
import { createLogger, systemClock } from '../../dist/core/index.js';
import { openSqliteStore } from '../../dist/store/index.js';

const { values } = parseArgs({
  options: {
    records: { type: 'string', default: '1000000' },
    batch: { type: 'string', default: '512' },
    durable: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '64' },
  },
});
const N = Number(values.records);
const dir = mkdtempSync(join(tmpdir(), 'portcullis-audit-bench-'));
try {
  const store = openSqliteStore(join(dir, 'audit.db'));
  const log = createLogger({ level: 'silent' });
  const signer = loadCheckpointSigner(join(dir, 'cp.pem'), 'bench/audit');
  const checkpointer = new Checkpointer({
    store: store.audit,
    signer,
    clock: systemClock,
    log,
    everyRecords: 100_000,
    intervalMs: 60_000,
  });
  const writer = new AuditWriter({
    store: store.audit,
    clock: systemClock,
    log,
    flushIntervalMs: 50,
    maxBatch: Number(values.batch),
    onCommit: (records) => checkpointer.onCommitted(records),
  });
  const decision = (i) => ({
    requestId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    outcome: i % 7 === 0 ? 'deny' : 'allow',
    ruleIds: ['readers-read-items'],
    reason: 'allowed by rule readers-read-items',
    route: 'items',
    method: 'GET',
    host: '127.0.0.1',
    path: '/api/items',
    sub: `user-${i % 1000}`,
    sid: null,
    ip: '127.0.0.1',
  });
  let t0 = performance.now();
  for (let i = 0; i < N; i++) {
    writer.write({ type: 'gateway.decision', data: decision(i) }, 'batched');
    if (i % 10_000 === 9_999) await new Promise((r) => setImmediate(r)); // let batches commit, as under traffic
  }
  await writer.close();
  await checkpointer.close();
  const appendS = (performance.now() - t0) / 1000;

  // Durable mode: every write waits for its commit; `concurrency` writes in flight are group-committed.
  const durableWriter = new AuditWriter({ store: store.audit, clock: systemClock, log, flushIntervalMs: 50 });
  const D = Number(values.durable);
  let next = 0;
  t0 = performance.now();
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async () => {
      while (next < D) {
        next += 1;
        await durableWriter.write({ type: 'auth.login.succeeded', data: decision(next) }, 'durable');
      }
    }),
  );
  const durableS = (performance.now() - t0) / 1000;
  await durableWriter.close();
  const checkpoints = await store.audit.checkpoints();
  t0 = performance.now();
  const v = await verifyLog(store.audit.scan(), checkpoints, {
    key: { name: signer.keyName, publicKey: signer.publicKey },
  });
  const verifyS = (performance.now() - t0) / 1000;
  if (!v.ok) throw new Error(`verification failed: ${v.reason}`);
  console.log(
    `| records | batched append (entries/s) | durable append, ${values.concurrency} in flight (entries/s) | full verify (s) | checkpoints verified |`,
  );
  console.log(`|---:|---:|---:|---:|---:|`);
  console.log(
    `| ${(N + D).toLocaleString('en')} | ${Math.round(N / appendS).toLocaleString('en')} | ${Math.round(D / durableS).toLocaleString('en')} | ${verifyS.toFixed(1)} | ${v.checkpointsVerified} |`,
  );
  await store.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
