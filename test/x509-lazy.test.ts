// @peculiar/x509 is the largest library Portcullis imports; the gateway loads it only when its config
// checks certificates (src/workload/x509.ts). This file imports nothing that loads it statically: the
// CA and certificates of the second test come from dynamic imports, then a fresh module graph.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { x509Loaded } from '../src/workload/x509.js';
import { startStack, tempDir } from './helpers.js';

describe('@peculiar/x509 loads only when the config uses certificates', () => {
  it('a gateway with no certificates in its config serves login and a proxied request without loading it', async () => {
    expect(x509Loaded()).toBe(false);
    const s = await startStack();
    try {
      const login = await s.login(s.users.viewer.username, s.users.viewer.password);
      expect(login.status).toBe(200);
      const res = await fetch(`${s.pc.gatewayUrl}/api/orders`, {
        headers: { authorization: `Bearer ${login.body.access_token}` },
      });
      expect(res.status).toBe(200);
      expect(x509Loaded()).toBe(false);
    } finally {
      await s.close();
    }
  });

  it('a gateway with a client-certificate listener loads it while building, before it reads the bundle', async () => {
    const t = tempDir();
    try {
      // A CA and the gateway's server certificate (this loads the library in this module graph).
      const { initCa, WorkloadCa } = await import('../src/workload/ca.js');
      const { SecretBox } = await import('../src/identity/index.js');
      const { svidFor } = await import('./pki.js');
      const box = new SecretBox(Buffer.alloc(32, 7));
      await initCa({
        dir: join(t.dir, 'ca'),
        trustDomain: 'lazy.test',
        passphrase: 'a long root passphrase',
        box,
      });
      const ca = await WorkloadCa.load(join(t.dir, 'ca'), box);
      const server = await svidFor(ca, 'spiffe://lazy.test/portcullis/gateway');
      writeFileSync(join(t.dir, 'gw.crt'), server.cert);
      writeFileSync(join(t.dir, 'gw.key'), server.key);
      writeFileSync(join(t.dir, 'bundle.pem'), ca.roots.map((r) => r.toString('pem')).join('\n'));
      expect(x509Loaded()).toBe(true);

      // A fresh module graph: Portcullis's own modules start again with the library not loaded.
      vi.resetModules();
      const fresh = await import('../src/workload/x509.js');
      const helpers = await import('./helpers.js');
      expect(fresh.x509Loaded()).toBe(false);
      const s = await helpers.startStack({
        gateway: {
          listen: { host: '127.0.0.1', port: 0 },
          tls: {
            certFile: join(t.dir, 'gw.crt'),
            keyFile: join(t.dir, 'gw.key'),
            clientCaFile: join(t.dir, 'bundle.pem'),
            clientTrustDomain: 'lazy.test',
          },
        },
      });
      try {
        expect(fresh.x509Loaded()).toBe(true);
        expect(s.pc.gatewayUrl).toMatch(/^https:/);
      } finally {
        await s.close();
      }
    } finally {
      t.cleanup();
    }
  });

  it('a gateway whose data folder holds a CA loads it for the CA maintenance, which can then promote a generation', async () => {
    const t = tempDir();
    try {
      const { initCa, prepareCaRotation } = await import('../src/workload/ca.js');
      const { SecretBox } = await import('../src/identity/index.js');
      const box = new SecretBox(Buffer.alloc(32, 9));
      const dir = join(t.dir, 'ca');
      await initCa({ dir, trustDomain: 'lazy.test', passphrase: 'a long root passphrase', box });
      await prepareCaRotation({
        dir,
        passphrase: 'another long root passphrase',
        box,
        activateInMs: 3_600_000,
      });

      vi.resetModules();
      const fresh = await import('../src/workload/x509.js');
      const helpers = await import('./helpers.js');
      expect(fresh.x509Loaded()).toBe(false);
      const s = await helpers.startStack({ dataDir: t.dir });
      try {
        expect(fresh.x509Loaded()).toBe(true);
        // Promotion rewrites the trust bundle from the roots' certificates.
        expect(await s.pc.maintainCa(Date.now() + 3_600_000 + 1_000)).toEqual({ changed: true, promoted: 1 });
      } finally {
        await s.close();
      }
    } finally {
      t.cleanup();
    }
  });

  it("the SDK's synchronous mTLS helpers load it with their module, for the services that import them", async () => {
    vi.resetModules();
    const fresh = await import('../src/workload/x509.js');
    expect(fresh.x509Loaded()).toBe(false);
    await import('../src/sdk/mtls.js');
    expect(fresh.x509Loaded()).toBe(true);
  });

  it('reading the library before loading it is a clear error, not a certificate refusal', async () => {
    vi.resetModules();
    const fresh = await import('../src/workload/x509.js');
    expect(() => fresh.x509.X509Certificate).toThrow(
      /not loaded \(reading X509Certificate\): call loadX509\(\) first/,
    );
    const lib = await fresh.loadX509();
    expect(fresh.x509.X509Certificate).toBe(lib.X509Certificate);
    expect(await fresh.loadX509()).toBe(lib);
  });
});
