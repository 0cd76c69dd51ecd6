import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from '../src/cli/index.js';
import { createLogger } from '../src/core/index.js';
import {
  createJoinToken,
  parseCertificates,
  verifySvid,
  WorkloadAgent,
  type WorkloadCa,
} from '../src/workload/index.js';
import { captureIO, type Stack, testConfig } from './helpers.js';
import { startStackWithCa } from './pki.js';

const ID = 'spiffe://prod.test/ns/ledger/sa/api';
const DAY = 86_400_000;

/**
 * CA rotation: the next root is published in the bundle before it signs anything, takes over signing at
 * its time (workload SVIDs, the workload API's own certificate), and the old root stays in the bundle
 * until what it signed has expired — with workloads renewing through it all.
 */
describe('CA rotation (real TLS to the workload API)', () => {
  let s: Stack;
  let ca: WorkloadCa;
  let dir: string;
  let cleanup: () => void;
  let agent: WorkloadAgent;
  let cfg: string;

  beforeAll(async () => {
    ({ s, ca, dir, cleanup } = await startStackWithCa({
      workload: { listen: { host: '127.0.0.1', port: 0 }, svidTtl: '1h' },
    }));
    cfg = join(dir, 'cli.yaml');
    writeFileSync(
      cfg,
      stringify(
        testConfig(join(dir, 'data'), s.upstream.url, { identity: { dataKeyFile: join(dir, 'data.key') } }),
      ),
    );
    agent = new WorkloadAgent({
      workloadApi: s.pc.workloadUrl as string,
      bundlePem: ca.roots.map((r) => r.toString('pem')).join('\n'),
      spiffeId: ID,
      joinToken: await createJoinToken(s.pc.core.store, ca, ID, 600_000),
      outDir: join(dir, 'ledger'),
      log: createLogger({ level: 'silent' }),
    });
    await agent.start();
  });
  afterAll(async () => {
    await agent?.stop();
    await s?.close();
    cleanup?.();
  });

  /** The SPIFFE bundle document the workload API serves (TLS, trusting the published roots). */
  const bundleDoc = () =>
    new Promise<{ keys: unknown[]; spiffe_sequence: number }>((resolve, reject) => {
      const req = request(
        `${s.pc.workloadUrl}/v1/bundle`,
        {
          ca: readFileSync(join(dir, 'data', 'ca', 'bundle.pem'), 'utf8'),
          checkServerIdentity: () => undefined,
        },
        (res) => {
          let text = '';
          res.on('data', (c) => {
            text += c;
          });
          res.on('end', () => resolve(JSON.parse(text)));
        },
      );
      req.on('error', reject);
      req.end();
    });
  const bundleRoots = () => parseCertificates(readFileSync(join(dir, 'data', 'ca', 'bundle.pem'), 'utf8'));
  const chainOf = () => parseCertificates(agent.current?.chain as string);

  it('publishes the next root ahead, switches signing at its time, and retires the old root after the retention', async () => {
    const oldRoot = ca.roots[0];
    const firstChain = chainOf();
    expect((await verifySvid(firstChain, [oldRoot as never])).spiffeId).toBe(ID);
    expect(await bundleDoc()).toMatchObject({ spiffe_sequence: 1, keys: [expect.anything()] });

    // Too soon: workloads would not all have the new root before it signs.
    const soon = captureIO({ stdin: Readable.from(['another long root passphrase\n']) });
    expect(
      await runCli(['ca', 'rotate', '--passphrase-stdin', '--activate-in', '5m', '--config', cfg], soon.io),
    ).toBe(2);
    expect(soon.err()).toMatch(/at least the SVID TTL/);
    // Prepare the next generation (CLI, passphrase on stdin): in the bundle now, signing in two hours.
    const io = captureIO({ stdin: Readable.from(['another long root passphrase\n']) });
    expect(
      await runCli(['ca', 'rotate', '--passphrase-stdin', '--activate-in', '2h', '--config', cfg], io.io),
    ).toBe(0);
    expect(io.out()).toMatch(/generation 1 prepared: in the trust bundle now \(sequence 2\)/);
    const published = bundleRoots();
    expect(published).toHaveLength(2);
    const doc = await bundleDoc();
    expect(doc.spiffe_sequence).toBe(2);
    expect(doc.keys).toHaveLength(2);
    const newRoot = published.find((r) => r.serialNumber !== oldRoot?.serialNumber);
    expect(newRoot).toBeDefined();

    // Before its time the old intermediate still signs; the renewed SVID's bundle carries both roots.
    await agent.renew();
    expect((await verifySvid(chainOf(), [oldRoot as never])).spiffeId).toBe(ID);
    await expect(verifySvid(chainOf(), [newRoot as never])).rejects.toThrow();
    expect(parseCertificates(agent.current?.bundle as string)).toHaveLength(2);
    expect((await s.pc.maintainCa()).changed).toBe(false);

    // Its time has come (the server checks every minute; here we ask for the check two hours ahead).
    const promoted = await s.pc.maintainCa(Date.now() + 2 * 3_600_000 + 1_000);
    expect(promoted).toEqual({ changed: true, promoted: 1 });
    await agent.renew(); // over mTLS to the API, whose own certificate now comes from the new CA
    expect((await verifySvid(chainOf(), [newRoot as never])).spiffeId).toBe(ID);
    await expect(verifySvid(chainOf(), [oldRoot as never])).rejects.toThrow();
    // What the old CA signed is still valid: its root stays in the bundle.
    expect(bundleRoots()).toHaveLength(2);
    expect((await verifySvid(firstChain, bundleRoots())).spiffeId).toBe(ID);

    // After the retention (longer than anything it signed lives) the old root leaves the bundle.
    const later = await s.pc.maintainCa(Date.now() + 2 * 3_600_000 + 32 * DAY);
    expect(later.changed).toBe(true);
    expect(bundleRoots().map((r) => r.serialNumber)).toEqual([newRoot?.serialNumber]);
    const status = captureIO();
    expect(await runCli(['ca', 'status', '--config', cfg], status.io)).toBe(0);
    expect(JSON.parse(status.out())).toMatchObject({ active: 1, retired: [], sequence: 4 });
    // Audit: prepared, rotated, bundle changes.
    await s.pc.core.audit.flush();
    const types: string[] = [];
    for await (const r of s.pc.core.store.audit.scan()) if (r.type.startsWith('ca.')) types.push(r.type);
    expect(types).toEqual(
      expect.arrayContaining(['ca.rotation_prepared', 'ca.rotated', 'ca.bundle_changed']),
    );
  });
});
