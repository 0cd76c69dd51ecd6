#!/usr/bin/env node
// Runs every Portcullis benchmark and writes one markdown report with the machine's facts:
//   npm run bench               full runs (~15 min; needs nginx and wrk: apt-get install -y nginx wrk)
//   npm run bench -- --smoke    seconds-long runs that only prove the harnesses still work (run by the tests)
// Loopback only; every load is bounded in time; every process the gateway harness starts is stopped by PID.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: { smoke: { type: 'boolean', default: false }, out: { type: 'string' } },
});
const smoke = values.smoke;
const outDir = values.out ?? join(root, 'bench', 'results');

function run(title, cmd, args, cwd = root) {
  process.stderr.write(`\n== ${title}: ${cmd} ${args.join(' ')}\n`);
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    process.stderr.write(r.stdout ?? '');
    throw new Error(`${title} failed (exit ${r.status})`);
  }
  return r.stdout;
}

const sections = [];
run('build', 'npm', ['run', '--silent', 'build']);
if (!existsSync(join(root, 'bench', 'gateway', 'node_modules'))) {
  run(
    'gateway harness install',
    'npm',
    ['ci', '--no-audit', '--no-fund', '--silent'],
    join(root, 'bench', 'gateway'),
  );
}
sections.push([
  'Identity assertion signing',
  run('assertion', process.execPath, [
    join(root, 'bench/micro/assertion-sign.mjs'),
    '--ms',
    smoke ? '100' : '1500',
  ]),
]);
sections.push([
  'Audit log',
  run('audit', process.execPath, [
    join(root, 'bench/micro/audit.mjs'),
    '--records',
    smoke ? '20000' : '1000000',
    '--durable',
    smoke ? '2000' : '20000',
  ]),
]);
sections.push([
  'Workload identity',
  run('workload', process.execPath, [
    join(root, 'bench/micro/workload.mjs'),
    ...(smoke ? ['--issue', '20', '--handshakes', '30'] : []),
  ]),
]);
sections.push([
  'Risk step',
  run('risk', process.execPath, [
    join(root, 'bench/micro/risk.mjs'),
    '--requests',
    smoke ? '20000' : '500000',
  ]),
]);
sections.push([
  'Identity',
  run('identity', process.execPath, [
    join(root, 'bench/micro/identity.mjs'),
    ...(smoke ? ['--logins', '3', '--refreshes', '100', '--verifies', '100'] : []),
  ]),
]);
// Policy engines on the shared 22-rule scenario: verification that every engine (Portcullis, Cedar,
// Casbin, CASL, three CEL engines) decides alike, then decisions/s each in its own process.
if (!existsSync(join(root, 'bench', 'policy', 'node_modules'))) {
  run(
    'policy harness install',
    'npm',
    ['ci', '--no-audit', '--no-fund', '--silent'],
    join(root, 'bench', 'policy'),
  );
}
const policyOut = run(
  'policy',
  process.execPath,
  smoke
    ? ['bench.mjs', '--verify-n', '400', '--only', 'Portcullis', '--runs', '1', '--ms', '50']
    : ['bench.mjs', '--rounds', '3'],
  join(root, 'bench', 'policy'),
);
sections.push([
  'Policy engines (decisions/s, single thread)',
  policyOut
    .split('\n')
    .filter((l) => !/^ {3}round \d/.test(l))
    .join('\n'),
]);

const gatewayArgs = ['run.mjs', '--add', 'contenders.portcullis.mjs', '--out', join(outDir, 'gateway')];
if (smoke) {
  // Every Portcullis profile the harness generates a config for (JWT-only, full pipeline, forward-auth
  // behind nginx) must still load and pass validation; the refusal modes prove the 403/401 paths.
  gatewayArgs.push(
    '--only',
    'direct,node-floor,proto-jwt,portcullis,portcullis-jwt,portcullis-full,portcullis-fwd',
    '--rounds',
    '1',
    '--warmup',
    '1',
    '--duration',
    '1',
    '--modes',
    'single,deny,unauth',
  );
  gatewayArgs.push('--retries', '0', '--quiet-wait', '0', '--max-foreign', '1000', '--tokens', '50');
  // No settling pause between runs: these numbers mean nothing, and 14 s of pauses are saved.
  gatewayArgs.push('--settle', '200');
}
const pin =
  spawnSync('taskset', ['-c', '0', 'true']).status === 0
    ? ['taskset', ['-c', '0', process.execPath, ...gatewayArgs]]
    : [process.execPath, [...gatewayArgs, '--no-pin']];
run('gateway', pin[0], pin[1], join(root, 'bench', 'gateway'));
const reports = readdirSync(join(outDir, 'gateway'))
  .filter((f) => f.endsWith('.md'))
  .sort();
const gatewayReport = readFileSync(join(outDir, 'gateway', reports.at(-1)), 'utf8');
sections.push(['Gateway (vs peers)', gatewayReport.replace(/^# .*\n/, '')]);

// Scenario 5: an mTLS client-certificate route (wrk has no client certificates: a Node load generator).
const mtlsDir = join(outDir, 'mtls');
mkdirSync(mtlsDir, { recursive: true });
run(
  'mtls',
  process.execPath,
  [join(root, 'bench/gateway/mtls.mjs'), '--out', mtlsDir, ...(smoke ? ['--smoke'] : [])],
  join(root, 'bench', 'gateway'),
);
const mtlsReport = readdirSync(mtlsDir)
  .filter((f) => f.endsWith('.md'))
  .sort()
  .at(-1);
sections.push([
  'mTLS route (vs nginx)',
  readFileSync(join(mtlsDir, mtlsReport ?? ''), 'utf8').replace(/^# .*\n/, ''),
]);

const cpus = os.cpus();
const md = `# Portcullis benchmarks${smoke ? ' (smoke run: numbers mean nothing)' : ''}

${new Date().toISOString()} · node ${process.version} · ${os.type()} ${os.release()} · ${cpus.length} × ${cpus[0]?.model ?? 'cpu'} · ${Math.round(os.totalmem() / 2 ** 30)} GiB

${sections.map(([title, body]) => `## ${title}\n\n${body.trim()}\n`).join('\n')}`;
mkdirSync(outDir, { recursive: true });
const file = join(outDir, smoke ? 'smoke.md' : 'latest.md');
writeFileSync(file, md);
process.stdout.write(md);
process.stderr.write(`\nreport: ${file}\n`);
if (/INVALID/.test(gatewayReport)) {
  process.stderr.write('a contender failed validation (see the report)\n');
  process.exit(1);
}
