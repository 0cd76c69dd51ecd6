import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { captureIO, tempDir, unusedPort, waitForOutput, writeConfigFile } from './helpers.js';

describe('portcullis CLI', () => {
  let t: ReturnType<typeof tempDir>;
  let configFile: string;
  beforeEach(async () => {
    t = tempDir();
    configFile = await writeConfigFile(t.dir, 'http://127.0.0.1:9');
  });
  afterEach(() => t.cleanup());

  it('prints help, and exits 2 on unknown commands and bad options', async () => {
    const help = captureIO();
    expect(await runCli(['help'], help.io)).toBe(0);
    expect(help.out()).toContain('audit');
    const unknown = captureIO();
    expect(await runCli(['frobnicate'], unknown.io)).toBe(2);
    expect(unknown.err()).toContain('unknown command "frobnicate"');
    const bad = captureIO();
    expect(await runCli(['user', 'list', '--nope'], bad.io)).toBe(2);
  });

  it('user add generates a password shown once; user list shows the user; duplicates are refused', async () => {
    const add = captureIO();
    expect(
      await runCli(
        ['user', 'add', 'Bob', '--role', 'viewer', '--role', 'auditor', '--config', configFile],
        add.io,
      ),
    ).toBe(0);
    expect(add.out()).toMatch(
      /created user bob \([0-9a-f-]{36}\) roles=\[viewer, auditor\]\npassword \(shown once\): \S{20}\n/,
    );
    const list = captureIO();
    expect(await runCli(['user', 'list', '--config', configFile], list.io)).toBe(0);
    expect(list.out()).toMatch(/^bob\t[0-9a-f-]{36}\tactive\troles=\[viewer, auditor\]\t/);
    const dup = captureIO();
    expect(await runCli(['user', 'add', 'BOB', '--config', configFile], dup.io)).toBe(1);
    expect(dup.err()).toContain('already exists');
  });

  it('user add --password-stdin reads the password and never prints it', async () => {
    const c = captureIO({ stdin: Readable.from(['a-long-enough-password\n']) });
    expect(
      await runCli(
        ['user', 'add', 'carol', '--role', 'admin', '--password-stdin', '--config', configFile],
        c.io,
      ),
    ).toBe(0);
    expect(c.out()).not.toContain('a-long-enough-password');
    const short = captureIO({ stdin: Readable.from(['short\n']) });
    expect(await runCli(['user', 'add', 'dave', '--password-stdin', '--config', configFile], short.io)).toBe(
      1,
    );
  });

  it('a broken config is reported with file:line:path and exit 1', async () => {
    writeFileSync(configFile, `${readFileSync(configFile, 'utf8')}surprise: true\n`);
    const c = captureIO();
    expect(await runCli(['user', 'list', '--config', configFile], c.io)).toBe(1);
    expect(c.err()).toMatch(new RegExp(`${configFile}:\\d+:1: surprise: unknown key "surprise"`));
  });

  it('init writes a starter config and keys with mode 0600 (folder 0700)', async () => {
    const file = join(t.dir, 'new.yaml');
    const c = captureIO();
    expect(await runCli(['init', '--config', file], c.io)).toBe(0);
    expect(existsSync(file)).toBe(true);
    const keys = join(t.dir, '.portcullis', 'keys');
    expect(statSync(keys).mode & 0o777).toBe(0o700);
    expect(statSync(join(keys, 'access-token')).mode & 0o777).toBe(0o700);
    const accessKeys = readdirSync(join(keys, 'access-token')).map((f) => join('access-token', f));
    expect(accessKeys).toHaveLength(1);
    for (const f of [...accessKeys, 'assertion.key.json']) {
      expect(statSync(join(keys, f)).mode & 0o777).toBe(0o600);
      // Private keys are sealed (AES-256-GCM under the data key): no "d" in clear.
      const content = JSON.parse(readFileSync(join(keys, f), 'utf8'));
      expect(content).toMatchObject({
        alg: 'ES256',
        kid: expect.any(String),
        sealed: expect.stringMatching(/^v1\./),
      });
      expect(content.d).toBeUndefined();
      expect(readFileSync(join(keys, f), 'utf8')).not.toMatch(/"d"/);
    }
    expect(statSync(join(keys, 'data.key')).mode & 0o777).toBe(0o600);
    expect(await runCli(['init', '--config', file], captureIO().io)).toBe(1);
  });
});

describe('portcullis up + jwt verify, against the bundled demo upstream', () => {
  let t: ReturnType<typeof tempDir>;
  afterEach(() => t.cleanup());

  it('starts everything, prints how to log in, serves the demo API through the gateway, and stops on signal', async () => {
    t = tempDir();
    const [gwPort, adminPort, demoPort] = [await unusedPort(), await unusedPort(), await unusedPort()];
    const configFile = await writeConfigFile(t.dir, `http://127.0.0.1:${demoPort}`, {
      gateway: { listen: { host: '127.0.0.1', port: gwPort } },
      admin: { listen: { host: '127.0.0.1', port: adminPort } },
      upstreams: { demo: { url: `http://127.0.0.1:${demoPort}` } },
      routes: [
        { id: 'orders', path: '/api/orders', methods: ['GET', 'POST'], upstream: 'demo' },
        { id: 'whoami', path: '/api/whoami', methods: ['GET'], upstream: 'demo' },
        { id: 'admin', path: '/api/admin/*', upstream: 'demo' },
      ],
      policy: {
        rules: [
          { id: 'read', routes: ['orders', 'whoami'], methods: ['GET'], roles: ['viewer', 'admin'] },
          { id: 'admin', routes: ['orders', 'whoami', 'admin'], roles: ['admin'] },
        ],
      },
      identity: {
        issuer: `http://127.0.0.1:${gwPort}`,
        passwordHash: { memoryCost: 1024, timeCost: 1, parallelism: 1 },
      },
      demo: { upstream: { host: '127.0.0.1', port: demoPort }, seedUsers: true },
    });
    const controller = new AbortController();
    const c = captureIO({ signal: controller.signal });
    const running = runCli(['up', '--config', configFile], c.io);
    const gw = `http://127.0.0.1:${gwPort}`;
    await waitForOutput(c.out, 'Try it');
    expect(c.out()).toContain(`gateway        ${gw}`);
    expect(c.out()).toContain(`admin          http://127.0.0.1:${adminPort}`);
    const viewerPw = /viewer\s+(\S+)\s+roles=\[viewer\]/.exec(c.out())?.[1];
    const adminPw = /admin\s+(\S+)\s+roles=\[admin\]/.exec(c.out())?.[1];
    expect(viewerPw).toBeDefined();
    expect(adminPw).toBeDefined();

    const login = async (username: string, password: string) =>
      (
        await (
          await fetch(`${gw}/auth/login`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ username, password }),
          })
        ).json()
      ).access_token as string;
    const viewer = await login('viewer', viewerPw as string);
    const admin = await login('admin', adminPw as string);
    const call = (path: string, token: string) =>
      fetch(`${gw}${path}`, { headers: { authorization: `Bearer ${token}` } });

    const orders = await call('/api/orders', viewer);
    expect(orders.status).toBe(200);
    expect((await orders.json()).orders.length).toBeGreaterThan(0);
    expect((await call('/api/admin/reports', viewer)).status).toBe(403);
    const report = await call('/api/admin/reports', admin);
    expect(report.status).toBe(200);
    expect((await report.json()).report.roles).toEqual(['admin']);
    // The demo upstream refuses anyone who bypasses the gateway.
    const direct = await fetch(`http://127.0.0.1:${demoPort}/api/orders`, {
      headers: { 'x-portcullis-assertion': 'forged' },
    });
    expect(direct.status).toBe(401);

    // jwt verify against the gateway's JWKS, by URL and by file.
    const ok = captureIO();
    expect(
      await runCli(
        [
          'jwt',
          'verify',
          '--jwks',
          `${gw}/.well-known/jwks.json`,
          '--iss',
          `http://127.0.0.1:${gwPort}`,
          '--aud',
          'portcullis',
          viewer,
        ],
        ok.io,
      ),
    ).toBe(0);
    expect(JSON.parse(ok.out())).toMatchObject({
      roles: ['viewer'],
      amr: ['pwd'],
      iss: `http://127.0.0.1:${gwPort}`,
    });
    const jwksFile = join(t.dir, 'jwks.json');
    writeFileSync(jwksFile, await (await fetch(`${gw}/.well-known/jwks.json`)).text());
    const wrongAud = captureIO();
    expect(
      await runCli(['jwt', 'verify', '--jwks', jwksFile, '--aud', 'someone-else', viewer], wrongAud.io),
    ).toBe(1);
    expect(wrongAud.out()).toContain('token refused: claim_invalid: claim "aud" is invalid');
    const tampered = captureIO();
    const [h, p, sig] = viewer.split('.');
    const forgedPayload = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(p as string, 'base64url').toString()), roles: ['admin'] }),
    ).toString('base64url');
    expect(
      await runCli(['jwt', 'verify', '--jwks', jwksFile, `${h}.${forgedPayload}.${sig}`], tampered.io),
    ).toBe(1);
    expect(tampered.out()).toContain('token refused: bad_signature');

    controller.abort();
    expect(await running).toBe(0);
    expect(c.out()).toContain('Portcullis stopped.');
    await expect(fetch(`${gw}/api/orders`)).rejects.toThrow();

    // Keys survive a restart: the same kid is served again.
    const kid = readdirSync(join(t.dir, 'data', 'keys', 'access-token'))[0]?.replace(/\.json$/, '');
    const again = new AbortController();
    const c2 = captureIO({ signal: again.signal });
    const running2 = runCli(['up', '--config', configFile], c2.io);
    await waitForOutput(c2.out, 'Try it');
    expect(c2.out()).not.toContain('shown only this once');
    const jwks = await (await fetch(`${gw}/.well-known/jwks.json`)).json();
    expect(jwks.keys.map((k: { kid: string }) => k.kid)).toContain(kid);
    again.abort();
    expect(await running2).toBe(0);
  });
});

describe('portcullis jwt verify vets the keys as the gateway does', () => {
  it('verifies an RS256 token with a 2048-bit key and leaves a 1024-bit key in the same file unused', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const { SignJWT, exportJWK } = await import('jose');
    const t = tempDir();
    try {
      const strong = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
      const jwks = {
        keys: [
          { ...(await exportJWK(strong.publicKey)), kid: 'strong', alg: 'RS256', use: 'sig' },
          { ...(await exportJWK(weak.publicKey)), kid: 'weak', alg: 'RS256', use: 'sig' },
        ],
      };
      const file = join(t.dir, 'jwks.json');
      writeFileSync(file, JSON.stringify(jwks));
      const sign = (key: typeof strong.privateKey, kid: string) =>
        new SignJWT({ roles: ['x'] })
          .setProtectedHeader({ alg: 'RS256', kid })
          .setIssuer('https://idp.example')
          .setAudience('api')
          .setSubject('u1')
          .setExpirationTime('5m')
          .sign(key);
      const args = (token: string) => [
        'jwt',
        'verify',
        '--jwks',
        file,
        '--iss',
        'https://idp.example',
        '--aud',
        'api',
        '--alg',
        'RS256',
        token,
      ];
      const ok = captureIO();
      expect(await runCli(args(await sign(strong.privateKey, 'strong')), ok.io)).toBe(0);
      expect(JSON.parse(ok.out())).toMatchObject({ sub: 'u1' });
      expect(ok.err()).toMatch(/key weak not used: .*2048/);
      // A token naming the weak key finds no key to check it with (jose will not even sign with it).
      const refused = captureIO();
      expect(await runCli(args(await sign(strong.privateKey, 'weak')), refused.io)).toBe(1);
      expect(refused.out()).toMatch(/^token refused: /);
      const badAlg = captureIO();
      await expect(
        runCli(['jwt', 'verify', '--jwks', file, '--alg', 'HS256', 'x.y.z'], badAlg.io),
      ).resolves.toBe(2);
    } finally {
      t.cleanup();
    }
  });
});
