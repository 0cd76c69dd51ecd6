import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { createLogger } from '../src/core/index.js';
import {
  fetchJwtSvid,
  fetchX509Svid,
  mtlsClientOptions,
  mtlsServerOptions,
  peerSpiffeId,
} from '../src/sdk/index.js';
import {
  type CurrentSvid,
  createJoinToken,
  parseCertificates,
  verifySvid,
  WorkloadAgent,
  type WorkloadCa,
} from '../src/workload/index.js';
import { captureIO, type Stack } from './helpers.js';
import { keyAndCsr, startStackWithCa } from './pki.js';

/** A TCP relay in front of the workload API that a test can switch off and on (a CA outage). */
class Relay {
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  port = 0;
  constructor(private readonly target: number) {}
  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => server.listen(this.port, '127.0.0.1', () => r()));
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }
  async down(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }
}

const log = createLogger({ level: 'silent' });
const until = async (what: () => boolean, ms: number) => {
  for (let t = 0; t < ms / 25 && !what(); t++) await new Promise((r) => setTimeout(r, 25));
  return what();
};

describe('portcullis agent: SVID files, renewal at half-life, CA outage, local SDK socket (real TLS)', () => {
  let s: Stack;
  let ca: WorkloadCa;
  let bundle: string;
  let dir: string;
  let cleanup: () => void;
  let relay: Relay;
  const agents: WorkloadAgent[] = [];
  beforeAll(async () => {
    ({ s, ca, bundle, dir, cleanup } = await startStackWithCa({
      workload: { listen: { host: '127.0.0.1', port: 0 }, svidTtl: '4s' },
    }));
    relay = new Relay(Number(new URL(s.pc.workloadUrl as string).port));
    await relay.up();
  });
  afterAll(async () => {
    for (const a of agents) await a.stop();
    await relay?.down();
    await s?.close();
    cleanup?.();
  });

  const token = (id: string) => createJoinToken(s.pc.core.store, ca, id, 3_600_000, Date.now());
  const agent = (
    id: string,
    out: string,
    extra: Partial<ConstructorParameters<typeof WorkloadAgent>[0]> = {},
  ) => {
    const a = new WorkloadAgent({
      workloadApi: `https://127.0.0.1:${relay.port}`,
      bundlePem: bundle,
      spiffeId: id,
      outDir: join(dir, out),
      log,
      retryBaseMs: 100,
      retryMaxMs: 300,
      ...extra,
    });
    agents.push(a);
    return a;
  };

  it('gets its first SVID with a join token, writes cert, key and bundle (0600), and a restart reuses them', async () => {
    const id = 'spiffe://prod.test/ns/billing/sa/api';
    const joinToken = await token(id);
    const a = agent(id, 'billing', { joinToken, socketPath: join(dir, 'billing.sock') });
    const svid = await a.start();
    expect(svid.spiffeId).toBe(id);
    for (const f of ['svid.pem', 'svid.key', 'bundle.pem'])
      expect(statSync(join(dir, 'billing', f)).mode & 0o777).toBe(0o600);
    const onDisk = parseCertificates(readFileSync(join(dir, 'billing', 'svid.pem'), 'utf8'));
    expect((await verifySvid(onDisk, ca.roots)).spiffeId).toBe(id);

    // The local socket (0600) gives the SDK the same SVID, and JWT-SVIDs through the agent's mTLS.
    expect(statSync(join(dir, 'billing.sock')).mode & 0o777).toBe(0o600);
    const fromSdk = await fetchX509Svid(join(dir, 'billing.sock'));
    expect(fromSdk).toMatchObject({ spiffeId: id, svid: svid.chain, key: svid.key });
    const jwt = await fetchJwtSvid(join(dir, 'billing.sock'), 'payments');
    expect(decodeJwt(jwt.token)).toMatchObject({ sub: id, aud: 'payments' });
    await a.stop();

    // A restarted agent finds the valid SVID on disk and needs no join token (the used one is spent).
    const again = agent(id, 'billing', { joinToken });
    expect((await again.start()).serial).toBe(svid.serial);
    await again.stop();
    const reuse = agent(id, 'billing-copy', { joinToken });
    await expect(reuse.start()).rejects.toThrow(/invalid_join_token/);
  });

  it('the CLI: `portcullis agent` runs until it is stopped, with the join token from a file', async () => {
    const id = 'spiffe://prod.test/ns/cli/sa/x';
    const tokenFile = join(dir, 'join.token');
    writeFileSync(tokenFile, `${await token(id)}\n`, { mode: 0o600 });
    const bundleFile = join(dir, 'cli-bundle.pem');
    writeFileSync(bundleFile, bundle);
    const stop = new AbortController();
    const io = captureIO({ signal: stop.signal, env: { PORTCULLIS_LOG_LEVEL: 'silent' } });
    const run = runCli(
      [
        'agent',
        '--workload-api',
        `https://127.0.0.1:${relay.port}`,
        '--bundle',
        bundleFile,
        '--spiffe-id',
        id,
        '--out',
        join(dir, 'cli'),
        '--join-token-file',
        tokenFile,
      ],
      io.io,
    );
    expect(await until(() => io.out().includes('files in'), 5_000)).toBe(true);
    expect(io.out()).toContain(id);
    stop.abort();
    expect(await run).toBe(0);
    const usage = captureIO();
    expect(await runCli(['agent', '--spiffe-id', id], usage.io)).toBe(2);
  });

  it("service → service through the SDK: mTLS with the agents' SVIDs, each side checking the other by SPIFFE ID", async () => {
    const billingId = 'spiffe://prod.test/ns/billing/sa/payments';
    const ordersId = 'spiffe://prod.test/ns/orders/sa/api';
    const batchId = 'spiffe://prod.test/ns/batch/sa/job';
    const sock = (n: string) => join(dir, `${n}.sock`);
    for (const [id, n] of [
      [billingId, 'sdk-billing'],
      [ordersId, 'sdk-orders'],
      [batchId, 'sdk-batch'],
    ] as const)
      await agent(id, n, { joinToken: await token(id), socketPath: sock(n) }).start();
    const billing = await fetchX509Svid(sock('sdk-billing'));
    const server = createHttpsServer(mtlsServerOptions(billing), (req, res) => {
      const caller = peerSpiffeId(req.socket as TLSSocket, [ordersId]);
      res.writeHead(caller ? 200 : 403).end(caller ?? 'forbidden');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const get = (from: string, expectServer: string) =>
      fetchX509Svid(sock(from)).then(
        (svid) =>
          new Promise<{ status: number; body: string }>((resolve, reject) => {
            const req = httpsRequest(
              {
                host: '127.0.0.1',
                port,
                path: '/charges',
                agent: false,
                ...mtlsClientOptions(svid, expectServer),
              },
              (res) => {
                let body = '';
                res.on('data', (c) => {
                  body += c;
                });
                res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
              },
            );
            req.on('error', reject);
            req.end();
          }),
      );
    try {
      expect(await get('sdk-orders', billingId)).toEqual({ status: 200, body: ordersId });
      expect((await get('sdk-batch', billingId)).status).toBe(403);
      // The client refuses a server that is not the one it meant to call.
      await expect(get('sdk-orders', 'spiffe://prod.test/ns/billing/sa/other')).rejects.toThrow(
        /not allowed/,
      );
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("review regressions: https only, the workload API's own ID is not for join tokens, a mismatched key on disk starts over", async () => {
    expect(
      () =>
        new WorkloadAgent({
          workloadApi: 'http://127.0.0.1:1',
          bundlePem: bundle,
          spiffeId: 'spiffe://prod.test/x',
          outDir: join(dir, 'plain'),
          log,
        }),
    ).toThrow(/https/);
    await expect(token('spiffe://prod.test/portcullis/workload-api')).rejects.toThrow(/own ID/);
    const id = 'spiffe://prod.test/ns/torn/sa/x';
    const first = await agent(id, 'torn', { joinToken: await token(id) }).start();
    // A crash between the key and the certificate writes: the key no longer matches the certificate.
    writeFileSync(join(dir, 'torn', 'svid.key'), (await keyAndCsr()).keyPem, { mode: 0o600 });
    const again = await agent(id, 'torn', { joinToken: await token(id) }).start();
    expect(again.serial).not.toBe(first.serial);
  });

  it('refuses an SVID for another ID than it runs as (the join token decides, the agent checks)', async () => {
    const joinToken = await token('spiffe://prod.test/ns/other/sa/x');
    const a = agent('spiffe://prod.test/ns/billing/sa/api', 'mismatch', { joinToken });
    await expect(a.start()).rejects.toThrow(/issued spiffe:\/\/prod\.test\/ns\/other\/sa\/x/);
  });

  it('renews over mTLS at half-life (with jitter), and through a CA outage by retrying until the CA is back', async () => {
    const id = 'spiffe://prod.test/ns/orders/sa/worker';
    const rotations: CurrentSvid[] = [];
    const a = agent(id, 'orders', { joinToken: await token(id), onRotate: (v) => rotations.push(v) });
    const first = await a.start();
    const issuedAt = Date.now();
    // 4 s SVIDs: renewed after about 2 s (± 10 %), with a new key and serial, files replaced.
    expect(await until(() => rotations.length >= 2, 4_000)).toBe(true);
    const renewed = rotations[1] as CurrentSvid;
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.key).not.toBe(first.key);
    expect(readFileSync(join(dir, 'orders', 'svid.pem'), 'utf8')).toBe(renewed.chain);
    const renewedAfter = renewed.notAfter.getTime() - 4_000 - issuedAt;
    // NotAfter has whole seconds: about 2 s ± 10 %, give or take a second.
    expect(renewedAfter).toBeGreaterThan(800);

    // The CA goes away: renewals fail and are retried; the SVID in use stays valid meanwhile.
    await relay.down();
    const before = rotations.length;
    expect(await until(() => a.state === 'retrying', 4_000)).toBe(true);
    expect(rotations.length).toBe(before);
    await relay.up();
    expect(await until(() => rotations.length > before, 4_000)).toBe(true);
    expect(a.state).toBe('ready');
    await a.stop();
  });

  it('an outage longer than the SVID: the agent says it expired (the CLI exits 1 then)', async () => {
    const id = 'spiffe://prod.test/ns/batch/sa/job';
    let expired = false;
    const a = agent(id, 'batch', {
      joinToken: await token(id),
      onExpired: () => {
        expired = true;
      },
    });
    await a.start();
    await relay.down();
    try {
      expect(await until(() => expired, 7_000)).toBe(true);
      expect(a.state).toBe('expired');
    } finally {
      await relay.up();
    }
  });
});
