// The audit writer while the gateway serves: one Portcullis process serves wrk traffic (its own decision
// records) while, in the same process, extra decision records are written through the same AuditWriter
// as fast as it takes them. Reports entries committed per second and the gateway's req/s meanwhile.
//   npm run build && taskset -c 1 node bench/micro/audit-under-load.mjs [--seconds 10] [--connections 20]
// Needs wrk and taskset (wrk runs on CPU 0). Loopback only; bounded in time; stops everything it starts.
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { defineConfig } from '../../dist/config/index.js';
import { createLogger } from '../../dist/core/index.js';
import { startPortcullis } from '../../dist/portcullis.js';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '10' }, connections: { type: 'string', default: '20' } },
});
const seconds = Number(values.seconds);
const dir = mkdtempSync(join(tmpdir(), 'portcullis-audit-load-'));
const upstream = createServer((_req, res) => res.end('{"ok":true}'));
await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
writeFileSync(join(dir, 'idp.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
const token = await new SignJWT({ roles: ['reader'] })
  .setProtectedHeader({ alg: 'ES256' })
  .setIssuer('https://idp.bench.invalid/')
  .setAudience('bench')
  .setSubject('load')
  .setIssuedAt()
  .setExpirationTime('1h')
  .sign(privateKey);
const pc = await startPortcullis(
  defineConfig(
    {
      dataDir: join(dir, 'data'),
      log: { level: 'silent' },
      gateway: { listen: { host: '127.0.0.1', port: 0 } },
      admin: { listen: { host: '127.0.0.1', port: 0 } },
      identity: { issuer: 'http://127.0.0.1' },
      issuers: {
        idp: { issuer: 'https://idp.bench.invalid/', audience: 'bench', publicKeyFile: join(dir, 'idp.pem') },
      },
      upstreams: {
        app: {
          url: `http://127.0.0.1:${upstream.address().port}`,
          assertion: { alg: 'HS256', key: 'bench-only-shared-upstream-key-0123456789abcdef' },
        },
      },
      routes: [{ id: 'items', path: '/api/items', methods: ['GET'], upstream: 'app', issuers: ['idp'] }],
      policy: { rules: [{ id: 'read', routes: ['items'], roles: ['reader'] }] },
      audit: { decisions: 'batched', flushInterval: '50ms', spoolLimit: 200_000 },
    },
    dir,
  ),
  { log: createLogger({ level: 'silent' }) },
);
try {
  const before = await pc.core.store.audit.count();
  const wrk = spawn(
    'taskset',
    [
      '-c',
      '0',
      'wrk',
      '-t1',
      `-c${values.connections}`,
      `-d${seconds}s`,
      '-H',
      `authorization: Bearer ${token}`,
      `${pc.gatewayUrl}/api/items`,
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let wrkOut = '';
  wrk.stdout.on('data', (c) => {
    wrkOut += c;
  });
  const record = (i) => ({
    requestId: `synthetic-${i}`,
    outcome: 'allow',
    ruleIds: ['read'],
    route: 'items',
    method: 'GET',
    host: 'h',
    path: '/api/items',
    sub: `u${i % 1000}`,
    sid: null,
    ip: '127.0.0.1',
  });
  const t0 = performance.now();
  let i = 0;
  while (performance.now() - t0 < seconds * 1000) {
    // Keep the spool busy but bounded, yielding so the gateway keeps serving on the same event loop.
    if (pc.core.audit.pending < 5_000)
      for (let k = 0; k < 100; k++)
        pc.core.audit.write({ type: 'gateway.decision', data: record(i++) }, 'batched');
    await new Promise((r) => setImmediate(r));
  }
  await pc.core.audit.flush();
  const elapsed = (performance.now() - t0) / 1000;
  await new Promise((r) => wrk.once('exit', r));
  const committed = (await pc.core.store.audit.count()) - before;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(wrkOut)?.[1] ?? 'NaN');
  console.log(
    "| audit entries committed (entries/s) | of which the gateway's own decisions | gateway req/s meanwhile |",
  );
  console.log('|---:|---:|---:|');
  console.log(
    `| ${Math.round(committed / elapsed).toLocaleString('en')} | ${Math.round(rps).toLocaleString('en')} | ${Math.round(rps).toLocaleString('en')} |`,
  );
} finally {
  await pc.close();
  upstream.close();
  rmSync(dir, { recursive: true, force: true });
}
