import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, Agent as HttpsAgent, request } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/core/index.js';
import { createJoinToken, WorkloadAgent, type WorkloadCa } from '../src/workload/index.js';
import type { Stack } from './helpers.js';
import { startStackWithCa, svidFor } from './pki.js';

const GATEWAY_ID = 'spiffe://prod.test/portcullis/gateway';

/**
 * The gateway's own SVID rotates under live traffic: an agent renews it every ~2 s (4 s SVIDs); the
 * gateway serves each new certificate to new handshakes and presents it to its mTLS upstream, without a
 * restart and without a single failed request.
 */
describe('SVID rotation under live traffic (real TLS both ways)', () => {
  let s: Stack;
  let ca: WorkloadCa;
  let bundle: string;
  let cleanup: () => void;
  let dir: string;
  let upstream: ReturnType<typeof createServer>;
  const upstreamSerials = new Set<string>();
  let agent: WorkloadAgent;

  beforeAll(async () => {
    ({ s, ca, bundle, dir, cleanup } = await startStackWithCa(async (authority, dir) => {
      const gwDir = join(dir, 'gateway-svid');
      mkdirSync(gwDir, { recursive: true });
      // The first SVID, until the agent replaces it.
      const first = await svidFor(authority, GATEWAY_ID, 4_000);
      writeFileSync(join(gwDir, 'svid.pem'), first.cert, { mode: 0o600 });
      writeFileSync(join(gwDir, 'svid.key'), first.key, { mode: 0o600 });
      const roots = authority.roots.map((r) => r.toString('pem')).join('\n');
      writeFileSync(join(gwDir, 'bundle.pem'), roots, { mode: 0o600 });
      // The upstream: HTTPS with its own SVID, accepting only clients with an SVID from our CA.
      const app = await svidFor(authority, 'spiffe://prod.test/ns/app', 3_600_000);
      upstream = createServer(
        { cert: app.cert, key: app.key, ca: roots, requestCert: true, rejectUnauthorized: true },
        (req, res) => {
          const peer = (req.socket as TLSSocket).getPeerCertificate();
          upstreamSerials.add(peer.serialNumber);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"ok":true}');
        },
      );
      await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
      const port = (upstream.address() as { port: number }).port;
      return {
        gateway: {
          listen: { host: '127.0.0.1', port: 0 },
          tls: { certFile: join(gwDir, 'svid.pem'), keyFile: join(gwDir, 'svid.key') },
        },
        workload: { listen: { host: '127.0.0.1', port: 0 }, svidTtl: '4s' },
        upstreams: {
          app: {
            url: `https://127.0.0.1:${port}`,
            timeout: '5s',
            mtls: {
              spiffeId: 'spiffe://prod.test/ns/app',
              bundleFile: join(gwDir, 'bundle.pem'),
              certFile: join(gwDir, 'svid.pem'),
              keyFile: join(gwDir, 'svid.key'),
            },
          },
        },
      };
    }));
    agent = new WorkloadAgent({
      workloadApi: s.pc.workloadUrl as string,
      bundlePem: bundle,
      spiffeId: GATEWAY_ID,
      joinToken: await createJoinToken(s.pc.core.store, ca, GATEWAY_ID, 600_000),
      outDir: join(dir, 'gateway-svid'),
      log: createLogger({ level: 'silent' }),
    });
    await agent.start();
  });
  afterAll(async () => {
    await agent?.stop();
    await s?.close();
    await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
    cleanup?.();
  });

  it('serves every request while the certificate rotates: new handshakes get the new SVID, the upstream sees the new client SVID', async () => {
    const url = new URL(s.pc.gatewayUrl);
    const keepAlive = new HttpsAgent({ keepAlive: true, maxSockets: 2 });
    const get = (path: string, headers: Record<string, string>, fresh: boolean, body?: string) =>
      new Promise<{ status: number; serial: string; body: string }>((resolve, reject) => {
        const req = request(
          {
            host: url.hostname,
            port: url.port,
            path,
            method: body ? 'POST' : 'GET',
            headers: body ? { ...headers, 'content-type': 'application/json' } : headers,
            ca: bundle,
            agent: fresh ? false : keepAlive,
            // The gateway is checked by its SPIFFE ID, exactly.
            checkServerIdentity: (_h, cert) =>
              cert.subjectaltname === `URI:${GATEWAY_ID}` ? undefined : new Error(cert.subjectaltname),
          },
          (res) => {
            const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
            let text = '';
            res.on('data', (c) => {
              text += c;
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, serial, body: text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const login = await get(
      '/auth/login',
      {},
      true,
      JSON.stringify({ username: s.users.viewer.username, password: s.users.viewer.password }),
    );
    const token = (JSON.parse(login.body) as { access_token: string }).access_token;
    const auth = { authorization: `Bearer ${token}` };

    const statuses = new Map<number, number>();
    const errors: string[] = [];
    const serverSerials = new Set<string>();
    const end = Date.now() + 7_000; // bounded: stops itself
    let n = 0;
    while (Date.now() < end) {
      const batch = await Promise.allSettled([
        get('/api/orders', auth, true),
        get('/api/orders', auth, false),
        get('/api/orders', auth, false),
      ]);
      for (const r of batch) {
        n++;
        if (r.status === 'rejected') errors.push(String(r.reason));
        else {
          statuses.set(r.value.status, (statuses.get(r.value.status) ?? 0) + 1);
          serverSerials.add(r.value.serial);
        }
      }
    }
    keepAlive.destroy();
    expect(errors).toEqual([]);
    expect([...statuses.keys()]).toEqual([200]);
    expect(n).toBeGreaterThan(100);
    // The first SVID plus at least two renewals were served to clients and presented to the upstream.
    expect(serverSerials.size).toBeGreaterThanOrEqual(3);
    expect(upstreamSerials.size).toBeGreaterThanOrEqual(3);
  });
});
