import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { defineConfig, loadConfigFile } from '../src/config/index.js';
import {
  captureIO,
  type Stack,
  startStack,
  tempDir,
  testConfig,
  unusedPort,
  waitForOutput,
  writeConfigFile,
} from './helpers.js';

describe('config reload', () => {
  let s: Stack;
  let token: string;
  beforeAll(async () => {
    s = await startStack();
    token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
  });
  afterAll(() => s.close());
  const call = (path: string) =>
    fetch(`${s.pc.gatewayUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const config = (overrides: Parameters<typeof testConfig>[2]) =>
    defineConfig(testConfig(s.dataDir, s.upstream.url, overrides));

  it('applies new routes and policy at once, keeps sessions and quotas, reports what needs a restart', async () => {
    expect((await call('/api/reports')).status).toBe(404);
    const base = testConfig(s.dataDir, s.upstream.url);
    const result = await s.pc.reload(
      config({
        routes: [...(base.routes ?? []), { id: 'reports', path: '/api/reports', upstream: 'app' }],
        policy: { rules: [{ id: 'viewer-reports', routes: ['reports'], roles: ['viewer'] }] },
        identity: {
          accessTokenTtl: '5m',
        },
      }),
    );
    expect(result).toEqual({ ok: true, restartRequired: ['identity'] });
    expect((await call('/api/reports')).status).toBe(200); // same token: sessions survive a reload
    expect((await call('/api/orders')).status).toBe(403); // the new policy no longer allows it
  });

  it('keeps the running config when the new one cannot be built', async () => {
    const before = await call('/api/reports');
    const result = await s.pc.reload(
      config({
        issuers: {
          idp: { issuer: 'https://idp.test/', audience: 'x', publicKeyFile: '/nonexistent/key.pem' },
        },
      }),
    );
    expect(result).toMatchObject({ ok: false, error: expect.stringContaining('/nonexistent/key.pem') });
    expect((await call('/api/reports')).status).toBe(before.status);
  });

  it('lets a request in flight finish on the old config', async () => {
    let release: () => void = () => undefined;
    const slow = createServer((req, res) => {
      release = () => res.end(JSON.stringify({ slow: req.url }));
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const slowUrl = `http://127.0.0.1:${(slow.address() as AddressInfo).port}`;
    await s.pc.reload(
      defineConfig({
        ...testConfig(s.dataDir, slowUrl),
        policy: { rules: [{ id: 'read', routes: ['orders'], roles: ['viewer'] }] },
      }),
    );
    const inFlight = call('/api/orders');
    await new Promise((r) => setTimeout(r, 100));
    await s.pc.reload(config({}));
    release();
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ slow: '/api/orders' });
    slow.close();
  });
});

describe('portcullis up reloads on SIGHUP', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  it('applies a good file, and reports a bad one with file:line while serving the old', async () => {
    const port = await unusedPort();
    const upstream = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const file = await writeConfigFile(t.dir, upstreamUrl, {
      gateway: { listen: { host: '127.0.0.1', port } },
      admin: { listen: { host: '127.0.0.1', port: await unusedPort() } },
    });
    const controller = new AbortController();
    const c = captureIO({ signal: controller.signal });
    const running = runCli(['up', '--config', file], c.io);
    await waitForOutput(c.out, 'Try it');
    const gw = `http://127.0.0.1:${port}`;
    expect((await fetch(`${gw}/api/new`)).status).toBe(404);

    writeFileSync(
      file,
      readFileSync(file, 'utf8').replace(
        'routes:\n',
        'routes:\n  - id: new\n    path: /api/new\n    upstream: app\n',
      ),
    );
    expect(loadConfigFile(file).config.routes[0]?.id).toBe('new');
    process.emit('SIGHUP', 'SIGHUP');
    for (let i = 0; i < 50 && !c.out().includes('config reloaded'); i++)
      await new Promise((r) => setTimeout(r, 20));
    expect((await fetch(`${gw}/api/new`)).status).toBe(401); // the route exists now: authentication is asked for

    writeFileSync(file, `${readFileSync(file, 'utf8')}bogus: 1\n`);
    process.emit('SIGHUP', 'SIGHUP');
    for (let i = 0; i < 50 && !c.err().includes('reload failed'); i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(c.err()).toMatch(new RegExp(`reload failed[\\s\\S]*${file}:\\d+:1: bogus: unknown key "bogus"`));
    expect((await fetch(`${gw}/api/new`)).status).toBe(401);

    controller.abort();
    expect(await running).toBe(0);
    upstream.close();
  });
});
