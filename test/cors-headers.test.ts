import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineConfig } from '../src/config/index.js';
import { type Stack, startStack, testConfig } from './helpers.js';

/** Per-route security headers and CORS (preflights answered by the gateway, responses marked). */
describe('per-route security headers and CORS', () => {
  let s: Stack;
  let token: string;
  const APP = 'https://app.example';
  beforeAll(async () => {
    s = await startStack({
      routes: [
        { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
        {
          id: 'embed',
          path: '/api/embed',
          methods: ['GET'],
          upstream: 'app',
          securityHeaders: {
            frameOptions: 'SAMEORIGIN',
            permissionsPolicy: 'camera=(), microphone=()',
            crossOriginResourcePolicy: false,
          },
        },
        {
          id: 'spa',
          path: '/api/spa/:id',
          methods: ['GET', 'POST'],
          upstream: 'app',
          cors: { origins: [APP], credentials: true, exposeHeaders: ['x-request-id'], maxAge: '1h' },
        },
      ],
      policy: { rules: [{ id: 'read', roles: ['viewer', 'admin'] }] },
    });
    token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
  });
  afterAll(() => s?.close());

  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') =>
    fetch(`${s.pc.gatewayUrl}${path}`, { method, headers });
  const auth = () => ({ authorization: `Bearer ${token}` });

  it('default security headers everywhere; a route can change or drop them (computed at load)', async () => {
    const plain = await get('/api/orders', auth());
    expect(plain.status).toBe(200);
    expect(plain.headers.get('x-frame-options')).toBe('DENY');
    expect(plain.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
    expect(plain.headers.get('cross-origin-resource-policy')).toBe('same-origin');
    expect(plain.headers.get('server')).toBeNull();
    const embed = await get('/api/embed', auth());
    expect(embed.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(embed.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'self'");
    expect(embed.headers.get('permissions-policy')).toBe('camera=(), microphone=()');
    expect(embed.headers.get('cross-origin-resource-policy')).toBeNull();
    // Refusals carry the route's headers too.
    const refused = await get('/api/embed');
    expect(refused.status).toBe(401);
    expect(refused.headers.get('x-frame-options')).toBe('SAMEORIGIN');
  });

  it('answers preflights for allowed origins and methods without credentials; refuses the others', async () => {
    const before = s.upstream.received.length;
    const pre = await get(
      '/api/spa/7',
      {
        origin: APP,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization',
      },
      'OPTIONS',
    );
    expect(pre.status).toBe(204);
    expect(
      Object.fromEntries([...pre.headers].filter(([k]) => k.startsWith('access-control') || k === 'vary')),
    ).toEqual({
      'access-control-allow-origin': APP,
      'access-control-allow-credentials': 'true',
      'access-control-allow-methods': 'GET, POST, HEAD',
      'access-control-allow-headers': 'authorization, content-type, dpop',
      'access-control-max-age': '3600',
      'access-control-expose-headers': 'x-request-id',
      vary: 'Origin',
    });
    const evil = await get(
      '/api/spa/7',
      { origin: 'https://evil.example', 'access-control-request-method': 'GET' },
      'OPTIONS',
    );
    expect(evil.status).toBe(403);
    expect(evil.headers.get('access-control-allow-origin')).toBeNull();
    // A route without CORS refuses preflights.
    expect(
      (await get('/api/orders', { origin: APP, 'access-control-request-method': 'GET' }, 'OPTIONS')).status,
    ).toBe(403);
    expect(s.upstream.received.length).toBe(before);
  });

  it('marks responses (and refusals) for allowed origins only; Vary: Origin always', async () => {
    const ok = await get('/api/spa/7', { ...auth(), origin: APP });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('access-control-allow-origin')).toBe(APP);
    expect(ok.headers.get('access-control-allow-credentials')).toBe('true');
    expect(ok.headers.get('vary')).toBe('Origin');
    const refused = await get('/api/spa/7', { origin: APP });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('access-control-allow-origin')).toBe(APP);
    // Without an Origin the answer still varies by Origin (a cache must not serve it cross-origin).
    expect((await get('/api/spa/7', auth())).headers.get('vary')).toBe('Origin');
    const evil = await get('/api/spa/7', { ...auth(), origin: 'https://evil.example' });
    expect(evil.status).toBe(200);
    expect(evil.headers.get('access-control-allow-origin')).toBeNull();
    expect(evil.headers.get('vary')).toBe('Origin');
  });

  it('refuses credentials for any origin, and header values that could split a response, at load', () => {
    const base = testConfig('/tmp/x', 'http://127.0.0.1:1');
    expect(() =>
      defineConfig({
        ...base,
        routes: [{ id: 'a', path: '/a', upstream: 'app', cors: { origins: ['*'], credentials: true } }],
      }),
    ).toThrow(/credentials cannot be allowed for any origin/);
    expect(() =>
      defineConfig({
        ...base,
        routes: [
          {
            id: 'a',
            path: '/a',
            upstream: 'app',
            securityHeaders: { referrerPolicy: 'x\r\nset-cookie: a=b' },
          },
        ],
      }),
    ).toThrow(/printable ASCII/);
    expect(() =>
      defineConfig({
        ...base,
        messageSigners: { s: { alg: 'hmac-sha256', key: 'k'.repeat(40) } },
        routes: [{ id: 'a', path: '/a', upstream: 'app', public: true, signature: { signers: ['s'] } }],
      }),
    ).toThrow(/signed webhook route cannot be public/);
    expect(() =>
      defineConfig({
        ...base,
        messageSigners: { s: { alg: 'hmac-sha256', key: 'k'.repeat(40) } },
        routes: [{ id: 'a', path: '/a', upstream: 'app', signature: { signers: ['s'], maxAge: '500ms' } }],
      }),
    ).toThrow(/between 1s and 1h/);
  });
});
