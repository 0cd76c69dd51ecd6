import { generateKeyPairSync } from 'node:crypto';
import { SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyResolver } from '../src/identity/index.js';
import { verifyAssertion } from '../src/sdk/index.js';
import { REFUSING_UPSTREAM, rawGet, rawRequest, type Stack, startStack } from './helpers.js';

const ERROR_SHAPE = {
  error: {
    code: expect.any(String),
    message: expect.any(String),
    requestId: expect.stringMatching(/^[0-9a-f-]{36}$/),
  },
};

describe('gateway: login → request → upstream', () => {
  let s: Stack;
  let viewerToken: string;
  let adminToken: string;

  beforeAll(async () => {
    s = await startStack();
    const v = await s.login(s.users.viewer.username, s.users.viewer.password);
    const a = await s.login(s.users.admin.username, s.users.admin.password);
    viewerToken = v.body.access_token as string;
    adminToken = a.body.access_token as string;
  });
  afterAll(() => s.close());

  const get = (path: string, token?: string, headers: Record<string, string> = {}) =>
    fetch(`${s.pc.gatewayUrl}${path}`, {
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    });

  it('issues an ES256 access token with the documented claims', async () => {
    const [h, p] = viewerToken
      .split('.')
      .slice(0, 2)
      .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()));
    expect(h).toMatchObject({ alg: 'ES256', typ: 'at+jwt', kid: expect.any(String) });
    expect(Object.keys(p).sort()).toEqual(
      ['acr', 'amr', 'aud', 'auth_time', 'exp', 'iat', 'iss', 'jti', 'nbf', 'roles', 'sid', 'sub'].sort(),
    );
    expect(p).toMatchObject({
      iss: 'http://portcullis.test',
      aud: 'portcullis',
      roles: ['viewer'],
      amr: ['pwd'],
    });
    expect(p.exp - p.iat).toBe(600);
  });

  it('forwards an allowed request; the upstream sees a verifiable assertion and no spoofed identity headers', async () => {
    const res = await get('/api/orders?limit=5', viewerToken, {
      'x-portcullis-user': 'admin',
      'X-Portcullis-Assertion': 'forged',
      'x-forwarded-for': '6.6.6.6',
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ upstream: true, path: '/api/orders?limit=5' });
    expect(res.headers.get('server')).toBeNull();
    expect(res.headers.get('x-powered-by')).toBeNull();
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");

    const seen = s.upstream.received.at(-1);
    expect(seen?.url).toBe('/api/orders?limit=5');
    expect(seen?.headers['x-portcullis-user']).toBeUndefined();
    expect(seen?.headers.authorization).toBeUndefined();
    expect(seen?.headers['x-forwarded-for']).toBe('127.0.0.1');
    const assertion = seen?.headers['x-portcullis-assertion'];
    expect(typeof assertion).toBe('string');
    expect(assertion).not.toBe('forged');

    const jwks = await (await fetch(`${s.pc.gatewayUrl}/.well-known/jwks.json`)).json();
    const claims = await verifyAssertion(assertion as string, keyResolver(jwks), {
      issuer: 'http://portcullis.test',
      audience: 'app',
      request: { method: 'GET', target: seen?.url ?? '' },
    });
    expect(claims).toMatchObject({
      roles: ['viewer'],
      htm: 'GET',
      route: 'orders',
      rules: ['read-orders'],
      amr: ['pwd'],
    });
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBeLessThanOrEqual(60);
    // Bound to this request: the same assertion does not verify for another target or audience.
    await expect(
      verifyAssertion(assertion as string, keyResolver(jwks), {
        issuer: 'http://portcullis.test',
        audience: 'app',
        request: { method: 'GET', target: '/api/admin/reports' },
      }),
    ).rejects.toThrow(/another request target/);
    await expect(
      verifyAssertion(assertion as string, keyResolver(jwks), {
        issuer: 'http://portcullis.test',
        audience: 'other',
      }),
    ).rejects.toThrow(/aud/);
  });

  it('an assertion is not accepted as an access token', async () => {
    await get('/api/orders', viewerToken);
    const assertion = s.upstream.received.at(-1)?.headers['x-portcullis-assertion'] as string;
    const res = await get('/api/orders', assertion);
    expect(res.status).toBe(401);
  });

  it('streams request bodies to the upstream (admin POST)', async () => {
    const res = await fetch(`${s.pc.gatewayUrl}/api/orders`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ item: 'rope', quantity: 2 }),
    });
    expect(res.status).toBe(200);
    expect(s.upstream.received.at(-1)).toMatchObject({
      method: 'POST',
      body: '{"item":"rope","quantity":2}',
    });
  });

  describe('refusals, each with the JSON error shape', () => {
    const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const claims = { sid: 'x', roles: ['admin'], amr: ['pwd'] };

    const cases: Array<[string, () => Promise<Response>, number, string]> = [
      ['no token', () => get('/api/orders'), 401, 'unauthenticated'],
      [
        'not a bearer scheme',
        () => get('/api/orders', undefined, { authorization: 'Basic dXNlcjpwYXNz' }),
        401,
        'unauthenticated',
      ],
      ['garbage token', () => get('/api/orders', 'not.a.jwt'), 401, 'invalid_token'],
      [
        'expired token',
        async () => {
          const now = Math.floor(Date.now() / 1000);
          // Signed with the real key (read from the key ring) but expired an hour ago.
          const key = s.pc.core.keys.accessToken;
          const t = await new SignJWT(claims)
            .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'at+jwt' })
            .setIssuer('http://portcullis.test')
            .setAudience('portcullis')
            .setSubject('u')
            .setJti('j')
            .setIssuedAt(now - 7200)
            .setExpirationTime(now - 3600)
            .sign(key.privateKey);
          return get('/api/orders', t);
        },
        401,
        'invalid_token',
      ],
      [
        'token signed by another key',
        async () => {
          const t = await new SignJWT(claims)
            .setProtectedHeader({ alg: 'ES256', kid: s.pc.core.keys.accessToken.kid, typ: 'at+jwt' })
            .setIssuer('http://portcullis.test')
            .setAudience('portcullis')
            .setSubject('u')
            .setJti('j')
            .setIssuedAt()
            .setExpirationTime('5m')
            .sign(otherKey);
          return get('/api/orders', t);
        },
        401,
        'invalid_token',
      ],
      [
        'alg: none token',
        () => {
          const t = new UnsecuredJWT(claims)
            .setIssuer('http://portcullis.test')
            .setAudience('portcullis')
            .setSubject('u')
            .setIssuedAt()
            .setExpirationTime('5m')
            .encode();
          return get('/api/orders', t);
        },
        401,
        'invalid_token',
      ],
      ['viewer on an admin route', () => get('/api/admin/reports', viewerToken), 403, 'forbidden'],
      [
        'viewer POST where only GET is allowed for viewers',
        () =>
          fetch(`${s.pc.gatewayUrl}/api/orders`, {
            method: 'POST',
            headers: { authorization: `Bearer ${viewerToken}` },
          }),
        403,
        'forbidden',
      ],
      ['unknown route', () => get('/nowhere', viewerToken), 404, 'route_not_found'],
      [
        'method the route does not serve',
        () =>
          fetch(`${s.pc.gatewayUrl}/api/orders/1`, {
            method: 'DELETE',
            headers: { authorization: `Bearer ${adminToken}` },
          }),
        405,
        'method_not_allowed',
      ],
    ];

    it.each(cases.map(([n, f, st, c]) => [`${n} → ${st} ${c}`, f, st, c] as const))(
      '%s',
      async (_name, send, status, code) => {
        const before = s.upstream.received.length;
        const res = await send();
        expect(res.status).toBe(status);
        expect(res.headers.get('content-type')).toMatch(/^application\/json/);
        expect(res.headers.get('x-content-type-options')).toBe('nosniff');
        const body = await res.json();
        expect(body).toEqual(ERROR_SHAPE);
        expect(body.error.code).toBe(code);
        expect(body.error.requestId).toBe(res.headers.get('x-request-id'));
        if (status === 401) expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="portcullis"/);
        expect(s.upstream.received.length).toBe(before);
      },
    );
  });

  describe('path tricks cannot reach an admin route as a viewer', () => {
    const tricks = [
      '/api/orders/../admin/reports',
      '/api/orders/%2e%2e/admin/reports',
      '/api/orders/%2E%2E/admin/reports',
      '/api/orders/.%2e/admin/reports',
      '//api/admin/reports',
      '/api//admin/reports',
      '/api/orders/..%2fadmin%2freports',
      '/api%2Fadmin%2Freports',
      '/api/admin%2freports',
      '/api/./admin/reports',
      '/api/orders/..\\admin/reports',
      '/api/orders/%5c..%5cadmin/reports',
      '/api/%61dmin/reports',
      '/API/admin/reports',
      '/api/admin/reports%00',
      '/api/orders/..;/admin/reports',
      '/api/orders/%252e%252e/admin/reports',
    ];
    it.each(tricks)('%s', async (target) => {
      const before = s.upstream.received.length;
      const res = await rawRequest(
        s.pc.gatewayUrl,
        rawGet(target, { Authorization: `Bearer ${viewerToken}` }),
      );
      expect([400, 403, 404]).toContain(res.status);
      const reached = s.upstream.received.slice(before);
      expect(reached.filter((r) => r.url.toLowerCase().includes('admin'))).toEqual([]);
    });

    it('the same tricks as an admin are normalized, and what is forwarded is the canonical path', async () => {
      const before = s.upstream.received.length;
      const res = await rawRequest(
        s.pc.gatewayUrl,
        rawGet('/api/orders/%2e%2e//admin/./reports?x=%2F', { Authorization: `Bearer ${adminToken}` }),
      );
      expect(res.status).toBe(200);
      expect(s.upstream.received.slice(before).map((r) => r.url)).toEqual(['/api/admin/reports?x=%2F']);
    });
  });

  it('malformed HTTP (duplicate Content-Length, CL with TE) is refused with a JSON 400 before routing', async () => {
    const before = s.upstream.received.length;
    for (const extra of [
      'Content-Length: 1\r\nContent-Length: 2',
      'Content-Length: 3\r\nTransfer-Encoding: chunked',
    ]) {
      const res = await rawRequest(
        s.pc.gatewayUrl,
        `POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${adminToken}\r\n${extra}\r\n\r\n0\r\n\r\n`,
      );
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body).error.code).toBe('bad_request');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    }
    expect(s.upstream.received.length).toBe(before);
  });

  it('serves the JWKS with both public keys and no private material', async () => {
    const res = await fetch(`${s.pc.gatewayUrl}/.well-known/jwks.json`);
    const jwks = (await res.json()) as { keys: Array<Record<string, unknown>> };
    expect(jwks.keys).toHaveLength(2);
    for (const k of jwks.keys) {
      expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
      expect(k.d).toBeUndefined();
    }
  });

  it('exposes /metrics and /healthz on the admin listener only', async () => {
    const metrics = await (await fetch(`${s.pc.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /portcullis_gateway_requests_total\{route="orders",outcome="allow",status="2xx"\} \d+/,
    );
    expect(metrics).toMatch(
      /portcullis_decisions_total\{outcome="allow",route="orders",rule="read-orders"\} \d+/,
    );
    expect(metrics).toMatch(
      /portcullis_decisions_total\{outcome="deny",route="admin",rule="forbidden"\} \d+/,
    );
    expect((await fetch(`${s.pc.adminUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${s.pc.adminUrl}/readyz`)).status).toBe(200);
    expect((await get('/metrics', adminToken)).status).toBe(404);
    expect((await get('/healthz')).status).toBe(404);
  });
});

describe('gateway: upstream down', () => {
  it('answers 502 upstream_unavailable with the JSON shape', async () => {
    const s = await startStack({}, REFUSING_UPSTREAM);
    try {
      const { body } = await s.login(s.users.viewer.username, s.users.viewer.password);
      const res = await fetch(`${s.pc.gatewayUrl}/api/orders`, {
        headers: { authorization: `Bearer ${body.access_token}` },
      });
      expect(res.status).toBe(502);
      expect(await res.json()).toEqual({
        error: {
          ...ERROR_SHAPE.error,
          code: 'upstream_unavailable',
          message: 'The upstream service is unavailable.',
        },
      });
    } finally {
      await s.close();
    }
  });
});

describe('gateway: path parameters on dot-segments behind a wildcard route', () => {
  it('refuses ..; and ..%3B instead of forwarding them (Tomcat/Spring would resolve them as ..)', async () => {
    const s = await startStack({
      routes: [
        { id: 'orders', path: '/api/orders/*', methods: ['GET'], upstream: 'app' },
        { id: 'admin', path: '/api/admin/*', methods: ['GET'], upstream: 'app' },
      ],
      policy: {
        rules: [
          { id: 'read-orders', routes: ['orders'], roles: ['viewer'] },
          { id: 'admin', routes: ['admin'], roles: ['admin'] },
        ],
      },
    });
    try {
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      for (const trick of [
        '/api/orders/..;/admin/secret',
        '/api/orders/..%3B/admin/secret',
        '/api/orders/..;x/admin/secret',
      ]) {
        const res = await rawRequest(s.pc.gatewayUrl, rawGet(trick, { Authorization: `Bearer ${token}` }));
        expect(res.status, trick).toBe(400);
      }
      expect(s.upstream.received).toEqual([]);
      const ok = await rawRequest(
        s.pc.gatewayUrl,
        rawGet('/api/orders/42;v=1', { Authorization: `Bearer ${token}` }),
      );
      expect(ok.status).toBe(200);
    } finally {
      await s.close();
    }
  });
});

describe('gateway: Host, absolute-form targets and forwarding headers', () => {
  it('refuses a second Host header; takes the host from an absolute-form target; refuses userinfo', async () => {
    const s = await startStack({
      routes: [
        { id: 'orders', host: 'shop.example', path: '/api/orders', methods: ['GET'], upstream: 'app' },
      ],
      policy: { rules: [{ id: 'read', routes: ['orders'], roles: ['viewer'] }] },
    });
    try {
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      const auth = `Authorization: Bearer ${token}\r\n`;
      const dup = await rawRequest(
        s.pc.gatewayUrl,
        `GET /api/orders HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\n${auth}Connection: close\r\n\r\n`,
      );
      expect(dup.status).toBe(400);
      const abs = await rawRequest(
        s.pc.gatewayUrl,
        `GET http://SHOP.example./api/orders?x=1 HTTP/1.1\r\nHost: other.example\r\n${auth}Connection: close\r\n\r\n`,
      );
      expect(abs.status).toBe(200);
      expect(s.upstream.received.at(-1)?.url).toBe('/api/orders?x=1');
      const wrongHost = await rawRequest(
        s.pc.gatewayUrl,
        `GET http://other.example/api/orders HTTP/1.1\r\nHost: shop.example\r\n${auth}Connection: close\r\n\r\n`,
      );
      expect(wrongHost.status).toBe(404);
      const userinfo = await rawRequest(
        s.pc.gatewayUrl,
        `GET http://u:p@shop.example/api/orders HTTP/1.1\r\nHost: shop.example\r\n${auth}Connection: close\r\n\r\n`,
      );
      expect(userinfo.status).toBe(400);
    } finally {
      await s.close();
    }
  });

  it('believes X-Forwarded-For only from trusted proxies, and sends upstream only the part it can vouch for', async () => {
    const s = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['127.0.0.1/32', '10.0.0.0/8'] },
    });
    try {
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      const res = await fetch(`${s.pc.gatewayUrl}/api/orders`, {
        headers: {
          authorization: `Bearer ${token}`,
          'x-forwarded-for': '198.51.100.7, 203.0.113.9, 10.1.2.3',
        },
      });
      expect(res.status).toBe(200);
      // 10.1.2.3 is a trusted hop, 203.0.113.9 is the client; the left part is the client's own claim.
      expect(s.upstream.received.at(-1)?.headers['x-forwarded-for']).toBe('203.0.113.9, 10.1.2.3, 127.0.0.1');
    } finally {
      await s.close();
    }
    const untrusted = await startStack();
    try {
      const token = (await untrusted.login(untrusted.users.viewer.username, untrusted.users.viewer.password))
        .body.access_token as string;
      await fetch(`${untrusted.pc.gatewayUrl}/api/orders`, {
        headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': '203.0.113.9' },
      });
      expect(untrusted.upstream.received.at(-1)?.headers['x-forwarded-for']).toBe('127.0.0.1');
    } finally {
      await untrusted.close();
    }
  });
});

describe('gateway: request body limits per route', () => {
  it('refuses an announced or a streamed body over the route limit (413), forwards one under it', async () => {
    const s = await startStack({
      routes: [{ id: 'orders', path: '/api/orders', methods: ['POST'], upstream: 'app', maxBodyBytes: 1000 }],
      policy: { rules: [{ id: 'write', routes: ['orders'], roles: ['viewer'] }] },
    });
    try {
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      const post = (body: string | ReadableStream, extra: Record<string, string> = {}) =>
        fetch(`${s.pc.gatewayUrl}/api/orders`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', ...extra },
          body,
          ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
        } as RequestInit);
      expect((await post('x'.repeat(1000))).status).toBe(200);
      const announced = await post('x'.repeat(1001));
      expect(announced.status).toBe(413);
      expect((await announced.json()).error.code).toBe('payload_too_large');
      const chunks = [Buffer.alloc(600, 1), Buffer.alloc(600, 2)];
      const streamed = await post(
        new ReadableStream({
          pull(controller) {
            const next = chunks.shift();
            if (next) controller.enqueue(next);
            else controller.close();
          },
        }),
      );
      expect(streamed.status).toBe(413);
      expect(s.upstream.received.filter((r) => r.body.length > 1000)).toEqual([]);
    } finally {
      await s.close();
    }
  });
});
