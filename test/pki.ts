import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { newKeyAndCsr, type WorkloadCa } from '../src/workload/index.js';

x509.cryptoProvider.set(webcrypto as never);

/** A fresh P-256 key pair, its CSR (PEM) and the private key as PKCS#8 PEM, for SVID and device tests. */
export const keyAndCsr = () => newKeyAndCsr('w');

/** An X.509-SVID for `id` from `ca`: the chain (leaf + intermediate) and the key, PEM. */
export async function svidFor(
  ca: WorkloadCa,
  id: string,
  ttlMs = 3_600_000,
): Promise<{ cert: string; key: string }> {
  const { csr, keyPem } = await keyAndCsr();
  const { chain } = await ca.issue(csr, id, ttlMs);
  return { cert: chain, key: keyPem };
}

/**
 * A stack whose data directory already holds an internal CA (trust domain `prod.test`), sealed with a
 * data key made beforehand — so the workload API (and device certificates) can start with the stack.
 */
export async function startStackWithCa(
  overrides:
    | import('./helpers.js').TestOverrides
    | ((ca: WorkloadCa, dir: string) => Promise<import('./helpers.js').TestOverrides>) = {},
  options: { clock?: import('../src/core/index.js').Clock } = {},
): Promise<{
  s: import('./helpers.js').Stack;
  ca: WorkloadCa;
  bundle: string;
  dir: string;
  cleanup: () => void;
}> {
  const { randomBytes } = await import('node:crypto');
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { SecretBox } = await import('../src/identity/index.js');
  const { initCa, WorkloadCa: Ca } = await import('../src/workload/index.js');
  const { startStack, tempDir } = await import('./helpers.js');
  const t = tempDir();
  const dataDir = join(t.dir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const dataKey = randomBytes(32);
  const dataKeyFile = join(t.dir, 'data.key');
  writeFileSync(dataKeyFile, `${dataKey.toString('base64url')}\n`, { mode: 0o600 });
  await initCa({
    dir: join(dataDir, 'ca'),
    trustDomain: 'prod.test',
    passphrase: 'a long root passphrase',
    box: new SecretBox(dataKey),
  });
  const ca = await Ca.load(join(dataDir, 'ca'), new SecretBox(dataKey));
  const o = typeof overrides === 'function' ? await overrides(ca, t.dir) : overrides;
  const s = await startStack(
    { ...o, dataDir, identity: { ...o.identity, dataKeyFile } } as never,
    undefined,
    options,
  );
  return { s, ca, bundle: ca.roots.map((r) => r.toString('pem')).join('\n'), dir: t.dir, cleanup: t.cleanup };
}
