import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const WRK = have('wrk');
if (!WRK)
  console.warn(
    'skipping the benchmark smoke run: wrk not installed (apt-get install wrk; .ci/run installs it)',
  );

/**
 * `npm run bench -- --smoke`: every benchmark for a second or so, proving the harnesses still run — and
 * that Portcullis passes the gateway harness's validation (wrong key, wrong aud/iss, expired, alg:none,
 * HS256-with-the-public-key tokens refused; security headers present) before any load.
 */
describe.skipIf(!WRK)('benchmark smoke run', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  it('runs the assertion, audit and gateway benchmarks and writes a report', () => {
    const r = spawnSync(process.execPath, ['bench/run.mjs', '--smoke', '--out', t.dir], {
      encoding: 'utf8',
      timeout: 240_000,
    });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    const report = readFileSync(join(t.dir, 'smoke.md'), 'utf8');
    expect(report).toMatch(/## Identity assertion signing[\s\S]*node:crypto ES256/);
    expect(report).toMatch(/## Audit log[\s\S]*\| 22,000 \|/);
    expect(report).toMatch(/## Identity[\s\S]*refresh \(rotate/);
    expect(report).toMatch(/\| 6 Portcullis \(ES256 assertion\) \| \d+/);
    // Every scenario's Portcullis profile loads, validates and serves: JWT-only, full pipeline, forward-auth
    // behind nginx; and the refusal modes (403 wrong role, 401 bad token) ran.
    expect(report).toMatch(/\| 7 Portcullis JWT-only[^|]*\| \d+/);
    expect(report).toMatch(/\| 8 Portcullis full pipeline[^|]*\| \d+/);
    expect(report).toMatch(/\| 9 nginx \+ auth_request -> Portcullis forward-auth[^|]*\| \d+/);
    expect(report).toMatch(/## Token mode: deny/);
    expect(report).toMatch(/## Token mode: unauth/);
    // Scenario 5: the mTLS route, side by side with nginx's ssl_verify_client.
    expect(report).toMatch(/## mTLS route \(vs nginx\)[\s\S]*\| portcullis-mtls[^|]*\| \d+/);
    expect(report).not.toContain('INVALID');
  }, 300_000);
});
