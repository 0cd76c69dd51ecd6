#!/usr/bin/env node
// Workload identity costs: X.509-SVID issuance from a CSR, and TLS handshakes per second — raw Node TLS
// (server certificate only) next to mTLS with SVIDs where the server verifies the client's SVID with the
// SPIFFE rules (what the gateway does), both on loopback, one connection per request.
//   npm run build && node bench/micro/workload.mjs [--issue 300] [--handshakes 400]
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as x509 from '@peculiar/x509';
import { systemClock } from '../../dist/core/index.js';
import { SecretBox } from '../../dist/identity/index.js';
import { initCa, newKeyAndCsr, SpiffePeerAuthenticator, WorkloadCa } from '../../dist/workload/index.js';

const { values } = parseArgs({
  options: { issue: { type: 'string', default: '300' }, handshakes: { type: 'string', default: '400' } },
});
x509.cryptoProvider.set(webcrypto);
const dir = mkdtempSync(join(tmpdir(), 'portcullis-workload-bench-'));
const box = new SecretBox(Buffer.alloc(32, 1));
await initCa({ dir, trustDomain: 'bench.test', passphrase: 'bench root passphrase', box });
const ca = await WorkloadCa.load(dir, box);
const bundle = ca.roots.map((r) => r.toString('pem')).join('\n');

async function keyAndCsr() {
  const { csr, keyPem } = await newKeyAndCsr('w');
  return { csr, key: keyPem };
}

// Issuance: CSR verification + leaf signing + PEM.
const csrs = await Promise.all(Array.from({ length: 20 }, keyAndCsr));
const N = Number(values.issue);
const t0 = performance.now();
for (let i = 0; i < N; i++)
  await ca.issue(csrs[i % csrs.length].csr, `spiffe://bench.test/w/${i}`, 3_600_000);
const issuePerSec = N / ((performance.now() - t0) / 1000);

const server = await keyAndCsr();
const serverSvid = await ca.issue(server.csr, 'spiffe://bench.test/server', 3_600_000);
const client = await keyAndCsr();
const clientSvid = await ca.issue(client.csr, 'spiffe://bench.test/client', 3_600_000);
const peers = new SpiffePeerAuthenticator(bundle, 'bench.test', systemClock);

async function handshakes(mtls, count) {
  const srv = createServer(
    {
      cert: serverSvid.chain,
      key: server.key,
      ...(mtls ? { ca: bundle, requestCert: true, rejectUnauthorized: false } : {}),
    },
    (req, res) => {
      if (!mtls) return res.end('ok');
      // A fresh connection per request; the SVID verification itself is cached per certificate (as in the
      // gateway), so what this adds over raw TLS is mostly the client-certificate handshake.
      peers.authenticate(req.socket).then(
        () => res.end('ok'),
        () => {
          res.statusCode = 401;
          res.end();
        },
      );
    },
  );
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const port = srv.address().port;
  const one = () =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path: '/',
          ca: bundle,
          agent: false,
          checkServerIdentity: () => undefined,
          ...(mtls ? { cert: clientSvid.chain, key: client.key } : {}),
        },
        (res) => {
          res.resume();
          res.on('end', () =>
            res.statusCode === 200 ? resolve() : reject(new Error(String(res.statusCode))),
          );
        },
      );
      req.on('error', reject);
      req.end();
    });
  for (let i = 0; i < 20; i++) await one();
  const start = performance.now();
  for (let i = 0; i < count; i++) await one();
  const rate = count / ((performance.now() - start) / 1000);
  srv.close();
  return rate;
}
const H = Number(values.handshakes);
const raw = await handshakes(false, H);
const mutual = await handshakes(true, H);
rmSync(dir, { recursive: true, force: true });
console.log('| measure | value |\n|---|---:|');
console.log(
  `| X.509-SVID issuance from a CSR (verify CSR, sign, PEM) | ${Math.round(issuePerSec).toLocaleString('en-US')} /s |`,
);
console.log(
  `| TLS handshakes, raw Node TLS (server certificate only), sequential | ${Math.round(raw).toLocaleString('en-US')} /s |`,
);
console.log(
  `| mTLS handshakes with SVIDs + SPIFFE peer verification (cached per certificate), sequential | ${Math.round(mutual).toLocaleString('en-US')} /s (${(mutual / raw).toFixed(2)}× raw) |`,
);
