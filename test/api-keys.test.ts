import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from '../src/cli/index.js';
import { manualClock } from '../src/core/index.js';
import { captureIO, type Stack, startStack, type TestOverrides, testConfig } from './helpers.js';

/** API keys (X-API-Key) on routes that list the `apikey` issuer: hashed, revocable, expiring. */
describe('API keys', () => {
  const clock = manualClock(Date.now());
  let s: Stack;
  let cfg: string;
  const overrides: TestOverrides = {
    routes: [
      {
        id: 'reports',
        path: '/api/reports',
        methods: ['GET'],
        upstream: 'app',
        issuers: ['apikey', 'portcullis'],
      },
      { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
    ],
    policy: {
      rules: [
        { id: 'reporters', routes: ['reports'], roles: ['reporter'] },
        { id: 'readers', routes: ['orders'], roles: ['viewer', 'reporter'] },
      ],
    },
  };
  beforeAll(async () => {
    s = await startStack(overrides, undefined, { clock });
    cfg = join(s.dataDir, 'cli.yaml');
    writeFileSync(cfg, stringify(testConfig(s.dataDir, s.upstream.url, overrides)));
  });
  afterAll(() => s?.close());

  const get = (path: string, key: string) =>
    fetch(`${s.pc.gatewayUrl}${path}`, { headers: { 'x-api-key': key } });
  const create = async (name: string, ...extra: string[]) => {
    const io = captureIO();
    expect(
      await runCli(['api-key', 'create', name, '--role', 'reporter', ...extra, '--config', cfg], io.io),
    ).toBe(0);
    return (/key \(shown once\): (\S+)/.exec(io.out()) as RegExpExecArray)[1] as string;
  };

  it('a key (shown once, stored hashed) authenticates on routes that take keys; the upstream never sees it', async () => {
    const key = await create('nightly-report');
    expect(key).toMatch(/^pcak_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    const before = s.upstream.received.length;
    expect((await get('/api/reports', key)).status).toBe(200);
    const seen = s.upstream.received.slice(before)[0];
    expect(seen?.headers['x-api-key']).toBeUndefined();
    const assertion = JSON.parse(
      Buffer.from(
        String(seen?.headers['x-portcullis-assertion']).split('.')[1] as string,
        'base64url',
      ).toString(),
    );
    expect(assertion.sub).toBe('apikey:nightly-report');
    // Not on a route that does not list the apikey issuer.
    expect((await get('/api/orders', key)).status).toBe(401);
    // Stored hashed: the secret is nowhere in the database row.
    const row = await s.pc.core.store.apiKeys.findByName('nightly-report');
    // The secret is everything after `pcak_<id>_` (base64url: it may hold `_` itself, even start with one).
    const secret = key.slice('pcak_'.length + 16 + 1);
    expect(secret).toHaveLength(43);
    expect(JSON.stringify(row)).not.toContain(secret);
    // A wrong secret, a made-up id, garbage: 401 with one code.
    const wrong = await get('/api/reports', `${key.slice(0, -4)}AAAA`);
    expect(wrong.status).toBe(401);
    expect((await wrong.json()).error.code).toBe('invalid_token');
    expect(
      (await get('/api/reports', 'pcak_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')).status,
    ).toBe(401);
    expect((await get('/api/reports', 'nonsense')).status).toBe(401);
  });

  it('revoked (CLI, another process) → refused on its next request; expired → refused; listed with its state', async () => {
    const key = await create('temp-export', '--ttl', '1h');
    expect((await get('/api/reports', key)).status).toBe(200);
    const io = captureIO();
    expect(await runCli(['api-key', 'revoke', 'temp-export', '--config', cfg], io.io)).toBe(0);
    expect((await get('/api/reports', key)).status).toBe(401);
    const short = await create('short-lived', '--ttl', '10m');
    expect((await get('/api/reports', short)).status).toBe(200);
    clock.advance(11 * 60_000);
    expect((await get('/api/reports', short)).status).toBe(401);
    const list = captureIO();
    expect(await runCli(['api-key', 'list', '--config', cfg], list.io)).toBe(0);
    expect(list.out()).toMatch(/temp-export {2}revoked/);
    expect(list.out()).toMatch(/short-lived {2}active/); // the CLI reads the real clock; the gateway's is 11 min ahead
    const types: string[] = [];
    await s.pc.core.audit.flush();
    for await (const r of s.pc.core.store.audit.scan()) if (r.type.startsWith('apikey.')) types.push(r.type);
    expect(types).toContain('apikey.revoked');
  });
});
