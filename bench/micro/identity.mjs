// Identity benchmark: login latency (argon2id at the configured cost), refresh throughput (rotation with
// reuse detection, durable audit, real SQLite), and access-token verification with and without the
// verified-token cache.   npm run build && node bench/micro/identity.mjs [--logins 30] [--refreshes 2000]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { defineConfig } from '../../dist/config/index.js';
import { createLogger, systemClock } from '../../dist/core/index.js';
import { BearerAuthenticator } from '../../dist/identity/index.js';
import { openCore } from '../../dist/portcullis.js';

const { values } = parseArgs({
  options: {
    logins: { type: 'string', default: '30' },
    refreshes: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '16' },
    verifies: { type: 'string', default: '2000' },
  },
});
const dir = mkdtempSync(join(tmpdir(), 'portcullis-identity-bench-'));
const pct = (xs, p) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
try {
  const loaded = defineConfig(
    {
      dataDir: dir,
      log: { level: 'silent' },
      // OWASP argon2id defaults: m=19456 KiB, t=2, p=1. The login throttle is opened wide: this measures
      // the cost of a login, not the back-off (which answers a throttled attempt without hashing).
      identity: {
        issuer: 'http://bench.invalid',
        lockout: { freeAttempts: 100, lockAfter: 1000, ipFreeAttempts: 100_000 },
      },
      upstreams: { app: { url: 'http://127.0.0.1:9' } },
      routes: [{ id: 'r', path: '/', upstream: 'app' }],
    },
    dir,
  );
  const core = await openCore(loaded, { log: createLogger({ level: 'silent' }) });
  await core.identity.createUser({ username: 'bench', password: 'bench-password-123', roles: ['viewer'] });
  const meta = { ip: '127.0.0.1', requestId: 'bench' };

  const logins = [];
  let tokens;
  for (let i = 0; i < Number(values.logins); i++) {
    const t0 = performance.now();
    tokens = await core.identity.login('bench', 'bench-password-123', meta);
    logins.push(performance.now() - t0);
  }
  const wrong = [];
  for (let i = 0; i < Number(values.logins); i++) {
    const t0 = performance.now();
    await core.identity
      .login(i % 2 ? 'bench' : `ghost-${i}`, 'wrong-password-123', meta)
      .catch(() => undefined);
    wrong.push(performance.now() - t0);
  }

  const R = Number(values.refreshes);
  const sessions = [];
  for (let i = 0; i < Number(values.concurrency); i++)
    sessions.push(await core.identity.login('bench', 'bench-password-123', meta));
  let done = 0;
  let t0 = performance.now();
  await Promise.all(
    sessions.map(async (first) => {
      let current = first;
      while (done < R) {
        done += 1;
        current = await core.identity.refresh(current.refresh_token, meta);
      }
    }),
  );
  const refreshS = (performance.now() - t0) / 1000;

  const V = Number(values.verifies);
  t0 = performance.now();
  for (let i = 0; i < V; i++) await core.tokens.verifyAccessToken(tokens.access_token);
  const verifyUs = ((performance.now() - t0) * 1000) / V;
  const bearer = await BearerAuthenticator.create({
    own: core.tokens,
    ownIssuer: 'http://bench.invalid',
    issuers: {},
    baseDir: dir,
    clock: systemClock,
    cacheSize: 10_000,
  });
  const accepted = new Set(['portcullis']);
  await bearer.authenticate(tokens.access_token, accepted);
  t0 = performance.now();
  for (let i = 0; i < V * 20; i++) await bearer.authenticate(tokens.access_token, accepted);
  const cachedUs = ((performance.now() - t0) * 1000) / (V * 20);
  await core.close();

  console.log('| measure | value |');
  console.log('|---|---:|');
  console.log(
    `| login, correct password (argon2id m=19456 t=2 p=1), median / p95 | ${pct(logins, 50).toFixed(1)} / ${pct(logins, 95).toFixed(1)} ms |`,
  );
  console.log(
    `| login, wrong password or unknown user, median / p95 | ${pct(wrong, 50).toFixed(1)} / ${pct(wrong, 95).toFixed(1)} ms |`,
  );
  console.log(
    `| refresh (rotate + reuse check + durable audit), ${values.concurrency} in flight | ${Math.round(R / refreshS).toLocaleString('en')} /s |`,
  );
  console.log(`| access-token verification, jose (ES256) | ${verifyUs.toFixed(1)} µs |`);
  console.log(`| access-token verification, verified-token cache hit | ${cachedUs.toFixed(2)} µs |`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
