#!/usr/bin/env node
// Scenario 5 of issue #9: an mTLS route whose callers authenticate with an X.509-SVID (SPIFFE) client
// certificate, Portcullis side by side with nginx (`ssl_verify_client on` against the same CA), plus
// Portcullis with a bearer-token (ES256 JWT) route on the same TLS listener: what mTLS authentication
// costs compared with a JWT over TLS. Standalone; does not use wrk (it has no client certificates).
//
//   node mtls.mjs                 # 2 interleaved rounds, warm-up 3 s, 8 s measured, 50 connections
//   node mtls.mjs --smoke         # 1 round of 1 s runs (warm-up 1 s): for bench/run.mjs
//   options: --rounds N --warmup S --duration S --connections N --only id,id --load-cpu 0 --sut-cpu 1
//            --no-pin --handshakes 100 --max-foreign 10 --quiet-wait 30 --port-base 19320 --out DIR
//            --validate-only (functional checks only, no load)
//
// PKI: the product's own CA. `portcullis ca init` (trust domain bench.test) in a data folder of the run,
// then `portcullis svid issue` for the server (spiffe://bench.test/portcullis/gateway, used by Portcullis
// and nginx alike), the allowed client (spiffe://bench.test/ns/bench/sa/client), a client the policy does
// not allow (spiffe://bench.test/ns/other/sa/client), and, from a second CA of the same trust domain, a
// rogue client. Keys and CSRs come from openssl (P-256).
//
// Load: a Node process (this file with --load) pinned to --load-cpu drives an undici Pool of 50
// keep-alive connections (pipelining 1, one request in flight per connection, closed loop), so each
// connection pays its TLS handshake once, in the warm-up. The gateway and the upstream
// (servers/upstream.mjs) are pinned to --sut-cpu. Gateway CPU µs/request from /proc (utime+stime of its
// process group, lib/proc.mjs), and the load generator's own CPU % of its core (if ~100 %, the load
// generator, not the gateway, is the limit — said in the output).
//
// Everything binds to 127.0.0.1; every process started is stopped by its PID.
import { parseArgs } from 'node:util';
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import os from 'node:os';

const harnessDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(harnessDir, '..', '..');
const TRUST_DOMAIN = 'bench.test';
const SERVER_ID = `spiffe://${TRUST_DOMAIN}/portcullis/gateway`;
const CLIENT_ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client`;
const OTHER_ID = `spiffe://${TRUST_DOMAIN}/ns/other/sa/client`;
const PATH = '/api/items';

// The server is checked by its SPIFFE ID, exactly (one URI SAN), as the product's own tests do.
const checkServerIdentity = (_host, cert) => {
  const uris = (cert.subjectaltname ?? '').split(', ').filter((n) => n.startsWith('URI:'));
  return uris.length === 1 && uris[0] === `URI:${SERVER_ID}` ? undefined : new Error(`unexpected server identity ${cert.subjectaltname}`);
};

// ------------------------------------------------------------------------------------------------
// Load generator (child process): node mtls.mjs --load CONFIG.json
// Prints "MEASURE_START" and "MEASURE_END" lines around the measured window, then "RESULT {json}".
// ------------------------------------------------------------------------------------------------
async function loadMain(cfgFile) {
  const { Pool } = await import('undici');
  const cfg = JSON.parse(readFileSync(cfgFile, 'utf8'));
  const connect = { ca: cfg.ca, checkServerIdentity, ...(cfg.cert ? { cert: cfg.cert, key: cfg.key } : {}) };
  const pool = new Pool(cfg.origin, { connections: cfg.connections, pipelining: 1, connect, keepAliveTimeout: 60_000, headersTimeout: 10_000, bodyTimeout: 10_000 });
  let connects = 0;
  let disconnects = 0;
  pool.on('connect', () => { connects++; });
  pool.on('disconnect', () => { disconnects++; });
  const headers = cfg.headers || {};
  let measuring = false;
  let stop = false;
  const lat = [];
  const statuses = {};
  let errors = 0;
  let sample;
  const loop = async () => {
    while (!stop) {
      const t0 = process.hrtime.bigint();
      try {
        const { statusCode, body } = await pool.request({ path: cfg.path, method: 'GET', headers });
        await body.dump();
        if (measuring && !stop) {
          lat.push(Number(process.hrtime.bigint() - t0) / 1000);
          statuses[statusCode] = (statuses[statusCode] || 0) + 1;
        }
      } catch (err) {
        if (measuring && !stop) { errors++; sample ??= `${err.code || ''} ${err.message}`; }
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  };
  const loops = Array.from({ length: cfg.connections }, loop);
  await new Promise((r) => setTimeout(r, cfg.warmupS * 1000));
  const warmConnects = connects;
  measuring = true;
  const cpu0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  process.stdout.write('MEASURE_START\n');
  await new Promise((r) => setTimeout(r, cfg.durationS * 1000));
  stop = true;
  const wallUs = Number(process.hrtime.bigint() - w0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write('MEASURE_END\n');
  const measureConnects = connects - warmConnects;
  await Promise.allSettled(loops);
  await pool.close().catch(() => {});
  lat.sort((a, b) => a - b);
  const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN);
  const ok = statuses[cfg.expect] || 0;
  process.stdout.write(`RESULT ${JSON.stringify({
    requests: lat.length, ok, statuses, errors, errorSample: sample, wallS: wallUs / 1e6,
    rps: lat.length / (wallUs / 1e6), p50_us: q(0.5), p99_us: q(0.99), max_us: lat.at(-1),
    loadCpuPct: (100 * (cpu.user + cpu.system)) / wallUs, loadUsPerReq: (cpu.user + cpu.system) / Math.max(1, lat.length),
    connectsWarmup: warmConnects, connectsMeasured: measureConnects, disconnects,
  })}\n`);
}

if (process.argv[2] === '--load') {
  await loadMain(process.argv[3]);
  process.exit(0);
}

// ------------------------------------------------------------------------------------------------
// Orchestrator
// ------------------------------------------------------------------------------------------------
const { startProcess, waitPort, stopProcess, stopAll, groupCpuTicks, cpuTimes, cpuDelta, sleep, selfTicks, machineTicks, waitQuiet } = await import('./lib/proc.mjs');
const { makeFixtures } = await import('./lib/fixtures.mjs');
const { ISSUER, AUDIENCE } = await import('./lib/env.mjs');
const { Client } = await import('undici');

const { values: o } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    'validate-only': { type: 'boolean', default: false },
    rounds: { type: 'string' },
    warmup: { type: 'string' },
    duration: { type: 'string' },
    connections: { type: 'string', default: '50' },
    only: { type: 'string' },
    'load-cpu': { type: 'string', default: '0' },
    'sut-cpu': { type: 'string', default: '1' },
    'no-pin': { type: 'boolean', default: false },
    handshakes: { type: 'string' },
    'max-foreign': { type: 'string', default: '10' },
    'quiet-wait': { type: 'string' },
    'port-base': { type: 'string', default: '19320' },
    out: { type: 'string', default: join(harnessDir, 'results') },
  },
});
const SMOKE = o.smoke;
const ROUNDS = Number(o.rounds ?? (SMOKE ? 1 : 2));
const WARMUP = Number(o.warmup ?? (SMOKE ? 1 : 3));
const DURATION = Number(o.duration ?? (SMOKE ? 1 : 8));
const CONNS = Number(o.connections);
const HANDSHAKES = Number(o.handshakes ?? (SMOKE ? 10 : 100));
const QUIET_WAIT = Number(o['quiet-wait'] ?? (SMOKE ? 2 : 30));
const MAX_FOREIGN = Number(o['max-foreign']);
const PIN = !o['no-pin'];
const LOAD_CPU = PIN ? o['load-cpu'] : null;
const SUT_CPU = PIN ? o['sut-cpu'] : null;
const BASE = Number(o['port-base']);
const UPSTREAM_PORT = BASE;
const UPSTREAM_ADMIN = BASE + 1;
const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim() || 100);
const CLI = join(repoRoot, 'dist', 'cli', 'bin.js');
if (!existsSync(CLI)) throw new Error(`${CLI} missing: build first (npx tsc -p tsconfig.build.json at the repository root)`);

// The orchestrator is idle during loads; keep it off the gateway's core.
if (PIN) spawnSync('taskset', ['-a', '-pc', LOAD_CPU, String(process.pid)], { stdio: 'ignore' });

const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const runDir = join(o.out, `mtls-${stamp}`);
const pki = join(runDir, 'pki');
mkdirSync(pki, { recursive: true });
const log = (...a) => console.log(...a);
const sh = (cmd, args, input) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout;
};

let shuttingDown = false;
const bail = async (sig) => { if (shuttingDown) return; shuttingDown = true; console.error(`\n${sig}: stopping started processes`); await stopAll(); process.exit(130); };
process.on('SIGINT', () => bail('SIGINT'));
process.on('SIGTERM', () => bail('SIGTERM'));

// ---- Portcullis configuration ------------------------------------------------------------------
// One route, GET /api/items, that takes a workload's SVID (`spiffe`) or the harness's ES256 bearer token
// (external issuer `bench`); one rule allows the bench workloads (by SPIFFE ID pattern) or role reader.
// As the `portcullis-jwt` bench profile: risk off, no rate limit, batched audit, security headers
// (default), HS256 request-bound assertion to the upstream.
function portcullisYaml({ dataDir, port, tlsFiles, publicKeyFile }) {
  return `# written by bench/gateway/mtls.mjs
dataDir: ${JSON.stringify(dataDir)}
log: { level: warn }
gateway:
  listen: { host: 127.0.0.1, port: ${port} }
${tlsFiles ? `  tls:
    certFile: ${JSON.stringify(tlsFiles.cert)}
    keyFile: ${JSON.stringify(tlsFiles.key)}
    clientCaFile: ${JSON.stringify(tlsFiles.bundle)}
    clientTrustDomain: ${TRUST_DOMAIN}
` : ''}admin:
  listen: { host: 127.0.0.1, port: ${port + 1} }
identity:
  issuer: https://127.0.0.1:${port}
  passwordHash: { memoryCost: 19456, timeCost: 2, parallelism: 1 }
issuers:
  bench:
    issuer: ${JSON.stringify(ISSUER)}
    audience: ${JSON.stringify(AUDIENCE)}
    publicKeyFile: ${JSON.stringify(publicKeyFile ?? '/dev/null')}
upstreams:
  items:
    url: http://127.0.0.1:${UPSTREAM_PORT}
    connections: 64
    assertion: { alg: HS256, key: "bench-only-shared-upstream-key-0123456789abcdef" }
routes:
  - id: items
    path: ${PATH}
    methods: [GET]
    upstream: items
    issuers: [spiffe, bench]
policy:
  rules:
    - id: bench-workloads-and-readers
      routes: [items]
      methods: [GET]
      services: ["spiffe://${TRUST_DOMAIN}/ns/bench/sa/*"]
      roles: [reader]
risk:
  enabled: false
audit:
  decisions: batched
  flushInterval: 50ms
`;
}

// ---- PKI with the product's CLI ----------------------------------------------------------------
log(`run folder ${runDir}`);
const fx = await makeFixtures(join(runDir, 'fixtures'), 1);
const PASS = 'bench-only root passphrase, not a secret';
function initCa(name) {
  const dir = join(pki, name);
  mkdirSync(dir, { recursive: true });
  const cfg = join(dir, 'portcullis.yaml');
  // `ca init` needs a complete config; only its dataDir matters here.
  writeFileSync(cfg, portcullisYaml({ dataDir: join(dir, 'data'), port: BASE + 90, publicKeyFile: fx.publicKeyFile }));
  sh(process.execPath, [CLI, 'ca', 'init', '--trust-domain', TRUST_DOMAIN, '--passphrase-stdin', '--config', cfg], `${PASS}\n`);
  return { cfg, bundle: join(dir, 'data', 'ca', 'bundle.pem') };
}
function issue(ca, name, spiffeId) {
  const key = join(pki, `${name}.key`);
  const csr = join(pki, `${name}.csr`);
  const cert = join(pki, `${name}.pem`);
  sh('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-subj', '/CN=bench', '-out', csr]);
  sh(process.execPath, [CLI, 'svid', 'issue', '--csr', csr, '--spiffe-id', spiffeId, '--ttl', '6h', '--out', cert, '--config', ca.cfg]);
  return { certFile: cert, keyFile: key, cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8'), spiffeId };
}
const ca = initCa('ca');
const rogueCa = initCa('rogue-ca');
const server = issue(ca, 'gateway', SERVER_ID);
const client = issue(ca, 'client', CLIENT_ID);
const other = issue(ca, 'other', OTHER_ID);
const rogue = issue(rogueCa, 'rogue', CLIENT_ID);
const bundle = readFileSync(ca.bundle, 'utf8');
const verified = sh(process.execPath, [CLI, 'svid', 'verify', client.certFile, '--bundle', ca.bundle, '--trust-domain', TRUST_DOMAIN]).trim();
log(`PKI: CA + SVIDs issued by \`portcullis ca init\` / \`svid issue\`; client SVID verifies as ${verified}`);
const tlsFiles = { cert: server.certFile, key: server.keyFile, bundle: ca.bundle };

// ---- contenders --------------------------------------------------------------------------------
const nginxConf = (prefix, port, mtls) => {
  const common = readFileSync(join(harnessDir, 'nginx', 'common.inc'), 'utf8').replace(/\{\{PREFIX\}\}/g, prefix).replace(/\{\{UPSTREAM_PORT\}\}/g, String(UPSTREAM_PORT));
  return `# written by bench/gateway/mtls.mjs: TLS termination${mtls ? ' + client certificate required (chain to the SPIFFE bundle; SPIFFE IDs NOT checked)' : ''}, one worker
worker_processes 1;
daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
${common}
    server {
        listen 127.0.0.1:${port} ssl reuseport;
        ssl_certificate ${server.certFile};
        ssl_certificate_key ${server.keyFile};
        ssl_protocols TLSv1.2 TLSv1.3;
${mtls ? `        ssl_client_certificate ${ca.bundle};
        ssl_verify_client on;
        ssl_verify_depth 2;
` : ''}        location /api/ {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`;
};
function nginxSpec(id, port, mtls) {
  const prefix = join(runDir, id);
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(prefix, 'tmp', d), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(conf, nginxConf(prefix, port, mtls));
  return { name: 'nginx', cmd: 'nginx', args: ['-p', prefix, '-c', conf], readyPort: port };
}
function portcullisSpec(id, port) {
  const dir = join(runDir, id);
  mkdirSync(dir, { recursive: true });
  const cfg = join(dir, 'portcullis.yaml');
  writeFileSync(cfg, portcullisYaml({ dataDir: join(dir, 'data'), port, tlsFiles, publicKeyFile: fx.publicKeyFile }));
  return { name: 'portcullis', cmd: process.execPath, args: [CLI, 'up', '--config', cfg], env: { NODE_ENV: 'production' }, readyPort: port };
}

const CONTENDERS = [
  {
    id: 'nginx-mtls', label: 'nginx: TLS + `ssl_verify_client on` (chain to the bundle only; SPIFFE ID not checked), proxy_pass',
    port: BASE + 10, kind: 'nginx', auth: 'svid', spec: () => nginxSpec('nginx-mtls', BASE + 10, true),
  },
  {
    id: 'portcullis-mtls', label: 'Portcullis: X.509-SVID client certificate (`issuers: [spiffe]`, `services:` rule)',
    port: BASE + 20, kind: 'portcullis', auth: 'svid', spec: () => portcullisSpec('portcullis-mtls', BASE + 20),
  },
  {
    id: 'portcullis-jwt-tls', label: 'Portcullis: ES256 bearer JWT, same TLS listener, no client certificate (`roles:` rule)',
    port: BASE + 30, kind: 'portcullis', auth: 'jwt', spec: () => portcullisSpec('portcullis-jwt-tls', BASE + 30),
  },
  {
    id: 'nginx-tls', label: 'nginx: TLS only, no client certificate, no auth (TLS proxy floor)',
    port: BASE + 40, kind: 'nginx', auth: 'none', spec: () => nginxSpec('nginx-tls', BASE + 40, false),
  },
];
let contenders = CONTENDERS;
if (o.only) contenders = o.only.split(',').map((id) => CONTENDERS.find((c) => c.id === id) ?? (() => { throw new Error(`unknown contender ${id} (${CONTENDERS.map((c) => c.id).join(', ')})`); })());

// ---- one request / one handshake ---------------------------------------------------------------
async function request(port, { cert, headers = {} } = {}) {
  const c = new Client(`https://127.0.0.1:${port}`, { connect: { ca: bundle, checkServerIdentity, ...(cert ? { cert: cert.cert, key: cert.key } : {}) }, headersTimeout: 5000, bodyTimeout: 5000 });
  try {
    const r = await c.request({ path: PATH, method: 'GET', headers });
    return { status: r.statusCode, body: await r.body.text(), headers: r.headers };
  } catch (err) {
    return { status: 0, error: `${err.code || err.name}: ${err.message}` };
  } finally {
    await c.destroy().catch(() => {});
  }
}
const bearer = (t) => ({ authorization: `Bearer ${t}` });
const describe = (r) => (r.status ? `${r.status}` : `TLS/connection error (${r.error})`);

// Client TLS contexts, built once per certificate (building one with `ca` costs milliseconds).
const contexts = new Map();
const contextFor = (cert) => {
  if (!contexts.has(cert)) contexts.set(cert, tls.createSecureContext({ ca: bundle, ...(cert ? { cert: cert.cert, key: cert.key } : {}) }));
  return contexts.get(cert);
};
// One fresh TLS connection (full handshake, no session resumption) + one request, Connection: close.
function handshakeOnce(port, { cert, headers = {} }) {
  return new Promise((resolveP) => {
    const t0 = process.hrtime.bigint();
    const s = tls.connect({ host: '127.0.0.1', port, secureContext: contextFor(cert), checkServerIdentity }, () => {
      const h = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      s.write(`GET ${PATH} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${h}Connection: close\r\n\r\n`);
    });
    let head = '';
    s.on('data', (d) => { if (head.length < 64) head += d.toString('latin1'); });
    s.on('end', () => resolveP({ ms: Number(process.hrtime.bigint() - t0) / 1e6, status: Number(head.split(' ')[1]), protocol: s.getProtocol(), cipher: s.getCipher()?.name }));
    s.on('error', (err) => resolveP({ ms: NaN, status: 0, error: err.message }));
  });
}

// ---- validation --------------------------------------------------------------------------------
async function validate(c, expectedBody) {
  const checks = [];
  const check = (name, r, ok, note = '') => checks.push({ name, got: describe(r), ok, note });
  const refused = (r) => r.status === 0 || r.status === 400 || r.status === 401 || r.status === 403;
  const goodAuth = c.auth === 'svid' ? { cert: client } : c.auth === 'jwt' ? { headers: bearer(fx.single) } : {};
  const good = await request(c.port, goodAuth);
  check('valid credential', good, good.status === 200 && good.body === expectedBody, good.status === 200 && good.body !== expectedBody ? 'body differs from the upstream' : '');
  if (c.auth === 'svid') {
    const none = await request(c.port);
    check('no client certificate', none, refused(none));
    const rg = await request(c.port, { cert: rogue });
    check('SVID from another CA (same trust domain)', rg, refused(rg));
    const ot = await request(c.port, { cert: other });
    if (c.kind === 'portcullis') check(`SVID of ${OTHER_ID} (not allowed by policy)`, ot, ot.status === 403);
    else check(`SVID of ${OTHER_ID}`, ot, true, ot.status === 200 ? 'accepted: nginx checks the chain only, not SPIFFE IDs (n/a)' : '');
    if (c.kind === 'portcullis') {
      // A valid SVID is no substitute for a token where the client sends a bearer token that is wrong.
      const bad = await request(c.port, { cert: client, headers: bearer(fx.negative['wrong signing key']) });
      check('valid SVID + a bearer token signed by another key', bad, bad.status === 401, 'the token, when present, decides');
    }
  } else if (c.auth === 'jwt') {
    const none = await request(c.port);
    check('no token, no certificate', none, none.status === 401);
    const wk = await request(c.port, { headers: bearer(fx.negative['wrong signing key']) });
    check('token signed by another key', wk, wk.status === 401);
    const ex = await request(c.port, { headers: bearer(fx.negative.expired) });
    check('expired token', ex, ex.status === 401);
    const guest = await request(c.port, { headers: bearer(fx.deny) });
    check("valid token of role 'guest' (not allowed by policy)", guest, guest.status === 403);
  }
  const hs = await handshakeOnce(c.port, goodAuth);
  return { ok: checks.every((x) => x.ok), checks, tls: `${hs.protocol} ${hs.cipher}` };
}

// ---- runs --------------------------------------------------------------------------------------
const upstreamStats = async () => JSON.parse(await (await fetch(`http://127.0.0.1:${UPSTREAM_ADMIN}/`)).text());
const median = (xs) => { const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b); if (!s.length) return NaN; const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

function runLoad(c, expect, auth) {
  const cfgFile = join(runDir, `load-${c.id}.json`);
  writeFileSync(cfgFile, JSON.stringify({
    origin: `https://127.0.0.1:${c.port}`, path: PATH, ca: bundle, connections: CONNS, warmupS: WARMUP, durationS: DURATION, expect,
    ...(auth.cert ? { cert: auth.cert.cert, key: auth.cert.key } : {}), headers: auth.headers || {},
  }));
  const argv = [process.execPath, fileURLToPath(import.meta.url), '--load', cfgFile];
  const full = LOAD_CPU === null ? argv : ['taskset', '-c', String(LOAD_CPU), ...argv];
  const child = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  return { child, cmd: full.join(' ').replace(process.execPath, 'node'), lines: createInterface({ input: child.stdout }) };
}

async function measure(c, sut, upstream) {
  const auth = c.auth === 'svid' ? { cert: client } : c.auth === 'jwt' ? { headers: bearer(fx.single) } : {};
  const quiet = await waitQuiet({ ownPgids: [...sut.map((p) => p.pid), upstream.pid], maxPct: MAX_FOREIGN, maxWaitS: QUIET_WAIT });
  const { child, cmd, lines } = runLoad(c, 200, auth);
  let before;
  let after;
  let result;
  const pg = sut.map((p) => p.pid);
  const snap = async () => ({ cpu: cpuTimes(), m: machineTicks(), me: selfTicks(), gw: groupCpuTicks(pg), up: groupCpuTicks([upstream.pid]), load: groupCpuTicks([child.pid]), st: await upstreamStats() });
  for await (const line of lines) {
    if (line === 'MEASURE_START') before = await snap();
    else if (line === 'MEASURE_END') after = await snap();
    else if (line.startsWith('RESULT ')) result = JSON.parse(line.slice(7));
  }
  await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
  if (!result || !before || !after) throw new Error(`load generator for ${c.id} failed (exit ${child.exitCode})`);
  const cpu = cpuDelta(before.cpu, after.cpu);
  const own = (after.me.self - before.me.self) + (after.gw - before.gw) + (after.up - before.up) + (after.load - before.load);
  const foreign = (100 * (after.m.busy - before.m.busy - own)) / Math.max(1, after.m.elapsed - before.m.elapsed);
  const n = Math.max(1, result.requests);
  return {
    cmd, ...result,
    gw_us_per_req: ((after.gw - before.gw) * TICK_US) / n,
    up_us_per_req: ((after.up - before.up) * TICK_US) / n,
    sut_busy_pct: SUT_CPU === null ? null : cpu[SUT_CPU]?.busyPct,
    load_core_busy_pct: LOAD_CPU === null ? null : cpu[LOAD_CPU]?.busyPct,
    foreign_pct: foreign, waited_quiet_s: quiet.waited_s,
    upstream_new_conns: after.st.connections - before.st.connections,
  };
}

// Sequential new connections (full handshake + one request, Connection: close): client-side latency and
// the gateway's CPU per connection; for client-certificate contenders also with a refused certificate
// (the rogue CA's SVID), which is what an unauthenticated client can make the gateway spend.
async function handshakes(c, pg) {
  const auth = c.auth === 'svid' ? { cert: client } : c.auth === 'jwt' ? { headers: bearer(fx.single) } : {};
  const ms = [];
  let bad = 0;
  const g0 = groupCpuTicks(pg);
  for (let i = 0; i < HANDSHAKES; i++) {
    const r = await handshakeOnce(c.port, auth);
    if (r.status === 200) ms.push(r.ms); else bad++;
  }
  const conn_us = ((groupCpuTicks(pg) - g0) * TICK_US) / HANDSHAKES;
  let refused_conn_us = NaN;
  if (c.auth === 'svid') {
    const r0 = groupCpuTicks(pg);
    for (let i = 0; i < HANDSHAKES; i++) await handshakeOnce(c.port, { cert: rogue });
    refused_conn_us = ((groupCpuTicks(pg) - r0) * TICK_US) / HANDSHAKES;
  }
  return { median_ms: median(ms), bad, conn_us, refused_conn_us };
}

const env = {
  date: new Date().toISOString(), node: process.version,
  nginx: spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim().replace('nginx version: ', ''),
  openssl: process.versions.openssl, kernel: os.release(), cpu: os.cpus()[0]?.model, cores: os.cpus().length,
  undici: JSON.parse(readFileSync(join(harnessDir, 'node_modules', 'undici', 'package.json'), 'utf8')).version,
  settings: { smoke: SMOKE, rounds: ROUNDS, warmup: WARMUP, duration: DURATION, connections: CONNS, loadCpu: LOAD_CPU, sutCpu: SUT_CPU, handshakes: HANDSHAKES },
};
log(JSON.stringify(env));

const upstream = startProcess({ name: 'upstream', cmd: process.execPath, args: [join(harnessDir, 'servers', 'upstream.mjs')], env: { PORT: String(UPSTREAM_PORT), ADMIN_PORT: String(UPSTREAM_ADMIN) }, cpu: SUT_CPU, logFile: join(runDir, 'upstream.log') });
const cells = [];
const validations = {};
try {
  await waitPort(UPSTREAM_PORT, upstream);
  await waitPort(UPSTREAM_ADMIN, upstream);
  const expectedBody = await (await fetch(`http://127.0.0.1:${UPSTREAM_ADMIN}/body`)).text();
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 ? contenders : [...contenders].reverse();
    for (const c of order) {
      const spec = c.spec();
      const proc = startProcess({ ...spec, cpu: SUT_CPU, logFile: join(runDir, `${c.id}.log`) });
      try {
        await waitPort(spec.readyPort, proc, 30_000);
        await sleep(500);
        const v = await validate(c, expectedBody);
        if (round === 1 || !v.ok) {
          validations[c.id] = v;
          log(`\n${c.id}: validation ${v.ok ? 'passed' : 'FAILED'} (${v.tls})`);
          for (const x of v.checks) log(`  ${x.ok ? 'ok ' : 'BAD'} ${x.name}: ${x.got}${x.note ? ` — ${x.note}` : ''}`);
        }
        if (!v.ok) { cells.push({ id: c.id, round, invalid: true }); continue; }
        if (o['validate-only']) continue;
        const r = await measure(c, [proc], upstream);
        const h = await handshakes(c, [proc.pid]);
        cells.push({ id: c.id, round, ...r, handshake_ms: h.median_ms, handshake_bad: h.bad, conn_us: h.conn_us, refused_conn_us: h.refused_conn_us });
        log(`  round ${round} ${c.id.padEnd(19)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${(r.p50_us / 1000).toFixed(2)} ms  p99 ${(r.p99_us / 1000).toFixed(2)} ms  gw ${r.gw_us_per_req.toFixed(1)} µs/req  up ${r.up_us_per_req.toFixed(1)}  load gen ${r.loadCpuPct.toFixed(0)}% of its core (${r.loadUsPerReq.toFixed(1)} µs/req)  sut ${r.sut_busy_pct?.toFixed(0)}%  foreign ${r.foreign_pct.toFixed(1)}%  non-200 ${r.requests - r.ok} err ${r.errors}${r.errorSample ? ` (${r.errorSample})` : ''}  new conns client ${r.connectsMeasured}/upstream ${r.upstream_new_conns}  handshake+1st req ${h.median_ms.toFixed(2)} ms, gw ${h.conn_us.toFixed(0)} µs/new conn${Number.isFinite(h.refused_conn_us) ? ` (refused cert: ${h.refused_conn_us.toFixed(0)})` : ''}${h.bad ? ` (${h.bad} not 200)` : ''}`);
      } finally {
        await stopProcess(proc);
      }
    }
  }
} finally {
  await stopProcess(upstream);
  await stopAll();
}

// ---- report ------------------------------------------------------------------------------------
const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const rows = contenders.map((c) => {
  const cs = cells.filter((x) => x.id === c.id && !x.invalid);
  if (!cs.length) return { c, invalid: true };
  const pick = (k) => cs.map((x) => x[k]);
  return {
    c, n: cs.length,
    rps: median(pick('rps')), rps_min: Math.min(...pick('rps')), rps_max: Math.max(...pick('rps')),
    p50: median(pick('p50_us')) / 1000, p99: median(pick('p99_us')) / 1000,
    gw: median(pick('gw_us_per_req')), gw_min: Math.min(...pick('gw_us_per_req')), gw_max: Math.max(...pick('gw_us_per_req')),
    up: median(pick('up_us_per_req')),
    load: Math.max(...pick('loadCpuPct')), loadUs: median(pick('loadUsPerReq')),
    sut: median(pick('sut_busy_pct')), foreign: Math.max(...pick('foreign_pct')),
    non200: cs.reduce((s, x) => s + (x.requests - x.ok) + x.errors, 0),
    conns: Math.max(...pick('connectsMeasured')), upconns: Math.max(...pick('upstream_new_conns')),
    hs: median(pick('handshake_ms')), conn: median(pick('conn_us')), refused: median(pick('refused_conn_us')),
  };
});
if (o['validate-only']) {
  log(`validate-only: ${Object.values(validations).every((v) => v.ok) ? 'all passed' : 'FAILURES'}`);
  process.exit(Object.values(validations).every((v) => v.ok) ? 0 : 1);
}
const saturated = rows.filter((r) => !r.invalid && r.load >= 90);
let md = `## Scenario 5: mTLS client-certificate route (X.509-SVID) — ${env.date}\n\n`;
md += `${SMOKE ? '**SMOKE RUN (1 s runs, 1 round): numbers are not meaningful.** ' : ''}${ROUNDS} round(s), interleaved (even rounds reversed); per run ${WARMUP} s warm-up then ${DURATION} s measured; `;
md += `${CONNS} keep-alive TLS connections (undici Pool, pipelining 1, closed loop) from one Node process${PIN ? ` pinned to CPU ${LOAD_CPU}` : ''}; gateway and upstream${PIN ? ` pinned to CPU ${SUT_CPU}` : ''}. `;
md += `Node ${env.node}, ${env.nginx}, OpenSSL ${env.openssl}, undici ${env.undici}, ${env.cores}× ${env.cpu}. Noisy shared VM: trust gw µs/req over req/s.\n\n`;
md += `| contender | req/s (median) | min–max | p50 ms | p99 ms | gw µs/req (min–max) | upstream µs/req | load gen CPU % of its core (max) | load gen µs/req | SUT core busy | foreign max % core | new conns in measured window (client / upstream) | non-200 + errors | new TLS conn + 1st req, ms (median of ${HANDSHAKES}) | gw µs per new conn: valid / refused cert |\n`;
md += `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n`;
for (const r of rows) {
  if (r.invalid) { md += `| ${r.c.id}: ${r.c.label} | INVALID (validation failed) ||||||||||||||\n`; continue; }
  md += `| ${r.c.id}: ${r.c.label} | ${f(r.rps)} | ${f(r.rps_min)}–${f(r.rps_max)} | ${f(r.p50, 2)} | ${f(r.p99, 2)} | ${f(r.gw, 1)} (${f(r.gw_min, 1)}–${f(r.gw_max, 1)}) | ${f(r.up, 1)} | ${f(r.load)}%${r.load >= 90 ? ' **saturated**' : ''} | ${f(r.loadUs, 1)} | ${f(r.sut)}% | ${f(r.foreign, 1)} | ${r.conns} / ${r.upconns} | ${r.non200} | ${f(r.hs, 2)} | ${f(r.conn)} / ${Number.isFinite(r.refused) ? f(r.refused) : 'n/a'} |\n`;
}
md += `\nValidation before load (round 1; TLS negotiated): ${Object.entries(validations).map(([id, v]) => `**${id}** ${v.ok ? 'passed' : 'FAILED'} (${v.tls}): ${v.checks.map((x) => `${x.name} → ${x.got}${x.note ? ` [${x.note}]` : ''}`).join('; ')}`).join('. ')}.\n\n`;
md += `Notes: nginx verifies the client certificate's chain against the same SPIFFE bundle but does **not** check SPIFFE IDs (no per-workload authorization; the not-allowed workload gets 200), and adds no security headers, audit or assertion; Portcullis checks the SVID with \`verifySvid\` (once per certificate, cached), authorizes the SPIFFE ID by policy, writes a batched audit record and signs an HS256 assertion per request. `;
md += `gw µs/req = utime+stime of the gateway's process group (upstream excluded) per measured request; 1e6 / gw µs/req ≈ its capacity on a dedicated core. New connections: sequential full handshakes (no session resumption) + one request with \`Connection: close\`, after the load (client TLS context built once; the ms column still includes the client's handshake work) — compare the gateway's CPU per connection (10 ms /proc ticks: ±10000/N µs). Latency is closed-loop at saturation (p50 ≈ connections / throughput). `;
md += saturated.length
  ? `**The load generator saturated its core (≥ 90 %) for ${saturated.map((r) => r.c.id).join(', ')}: there req/s is the load generator's limit, not the gateway's; compare gw µs/req.**\n`
  : `The load generator stayed under 90 % of its core in every run${rows.some((r) => !r.invalid && r.load >= 75) ? ` (but ≥ 75 % for ${rows.filter((r) => !r.invalid && r.load >= 75).map((r) => r.c.id).join(', ')}: near its limit, so that req/s may be partly capped by the load generator; SUT core busy and gw µs/req tell)` : ''}, so req/s is the system under test's.\n`;
mkdirSync(o.out, { recursive: true });
writeFileSync(join(o.out, `mtls-${stamp}.md`), md);
writeFileSync(join(o.out, `mtls-${stamp}.json`), JSON.stringify({ env, validations, cells }, null, 1));
log(`\n${md}`);
log(`written: ${join(o.out, `mtls-${stamp}.md`)} and .json; logs, configs and PKI in ${runDir}`);
process.exit(rows.some((r) => r.invalid) ? 1 : 0);
