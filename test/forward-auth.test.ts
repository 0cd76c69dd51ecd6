import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileTrustedProxies } from '../src/gateway/index.js';
import { keyResolver } from '../src/identity/index.js';
import { verifyAssertion } from '../src/sdk/index.js';
import { rawGet, rawRequest, type Stack, startStack, stopChild, unusedPort, waitForHttp } from './helpers.js';

const FA = '/.portcullis/forward-auth';

describe('trusted proxies', () => {
  it('matches IPv4 and IPv6 CIDRs and single addresses; trusts nobody by default', () => {
    const trusted = compileTrustedProxies(['10.0.0.0/8', '192.168.1.7', '::1/128', 'fd00::/8']);
    expect(['10.1.2.3', '::ffff:10.9.9.9', '192.168.1.7', '::1', 'fd12::1'].map(trusted)).toEqual([
      true,
      true,
      true,
      true,
      true,
    ]);
    expect(['11.0.0.1', '192.168.1.8', '::2', 'fe80::1', '127.0.0.1'].map(trusted)).toEqual([
      false,
      false,
      false,
      false,
      false,
    ]);
    expect(compileTrustedProxies([])('127.0.0.1')).toBe(false);
  });
});

describe('forward-auth endpoint', () => {
  let s: Stack;
  let viewer: string;
  beforeAll(async () => {
    s = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['127.0.0.1/32'], forwardAuth: {} },
    });
    viewer = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
  });
  afterAll(() => s.close());

  const ask = (method: string, uri: string, token?: string, host = 'app.example') =>
    fetch(`${s.pc.gatewayUrl}${FA}`, {
      headers: {
        'x-forwarded-method': method,
        'x-forwarded-uri': uri,
        'x-forwarded-host': host,
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
    });

  it('answers 200 with a request-bound assertion for an allowed request, and never proxies', async () => {
    const before = s.upstream.received.length;
    const res = await ask('GET', '/api/orders?page=2', viewer);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-portcullis-roles')).toBe('viewer');
    const claims = await verifyAssertion(
      res.headers.get('x-portcullis-assertion') ?? '',
      keyResolver(s.pc.core.keys.jwks()),
      {
        issuer: 'http://portcullis.test',
        audience: 'app',
        request: { method: 'GET', target: '/api/orders?page=2' },
      },
    );
    expect(claims).toMatchObject({ route: 'orders', host: 'app.example', htm: 'GET' });
    expect(s.upstream.received.length).toBe(before);
  });

  it('refuses with the same codes as the proxy: 401, 403, 404, and 400 for a non-canonical target', async () => {
    expect((await ask('GET', '/api/orders')).status).toBe(401);
    expect((await ask('GET', '/api/admin/reports', viewer)).status).toBe(403);
    expect((await ask('POST', '/api/orders', viewer)).status).toBe(403);
    expect((await ask('GET', '/nowhere', viewer)).status).toBe(404);
    const trick = await ask('GET', '/api/orders/%2e%2e/admin/reports', viewer);
    expect(trick.status).toBe(400);
    expect((await trick.json()).error.code).toBe('invalid_path');
    expect((await ask('GET', '/api//orders', viewer)).status).toBe(400);
    const missing = await fetch(`${s.pc.gatewayUrl}${FA}`, {
      headers: { authorization: `Bearer ${viewer}` },
    });
    expect(missing.status).toBe(400);
  });

  it('refusalBody: false answers refusals with headers only (status, X-Portcullis-Error), for nginx to keep its connection', async () => {
    const quiet = await startStack({
      gateway: {
        listen: { host: '127.0.0.1', port: 0 },
        trustedProxies: ['127.0.0.1/32'],
        forwardAuth: { refusalBody: false },
      },
    });
    try {
      const token = (await quiet.login(quiet.users.viewer.username, quiet.users.viewer.password)).body
        .access_token as string;
      const askQuiet = (uri: string, bearer?: string) =>
        fetch(`${quiet.pc.gatewayUrl}${FA}`, {
          headers: {
            'x-forwarded-method': 'GET',
            'x-forwarded-uri': uri,
            'x-forwarded-host': 'app.example',
            ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
          },
        });
      for (const [uri, bearer, status, code] of [
        ['/api/orders', undefined, 401, 'unauthenticated'],
        ['/api/admin/reports', token, 403, 'forbidden'],
      ] as const) {
        const res = await askQuiet(uri, bearer);
        expect(res.status).toBe(status);
        expect(res.headers.get('content-length')).toBe('0');
        expect(res.headers.get('x-portcullis-error')).toBe(code);
        expect(res.headers.get('x-request-id')).toBeTruthy();
        expect(res.headers.get('x-content-type-options')).toBe('nosniff');
        expect(await res.text()).toBe('');
      }
      expect((await askQuiet('/api/orders')).headers.get('www-authenticate')).toMatch(/^Bearer/);
      // Allowed answers are unchanged, and the proxy itself still answers refusals in JSON.
      expect((await askQuiet('/api/orders', token)).status).toBe(200);
      const direct = await fetch(`${quiet.pc.gatewayUrl}/api/orders`);
      expect((await direct.json()).error.code).toBe('unauthenticated');
    } finally {
      await quiet.close();
    }
  });

  it('is refused to callers that are not trusted proxies', async () => {
    const other = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['10.0.0.0/8'], forwardAuth: {} },
    });
    try {
      const token = (await other.login(other.users.admin.username, other.users.admin.password)).body
        .access_token as string;
      const res = await fetch(`${other.pc.gatewayUrl}${FA}`, {
        headers: {
          'x-forwarded-method': 'GET',
          'x-forwarded-uri': '/api/orders',
          'x-forwarded-host': 'a',
          authorization: `Bearer ${token}`,
        },
      });
      expect(res.status).toBe(403);
    } finally {
      await other.close();
    }
  });
});

describe('Envoy ext_authz, HTTP service mode (requests as Envoy sends them)', () => {
  let s: Stack;
  let viewer: string;
  const PREFIX = '/.portcullis/ext-authz';
  beforeAll(async () => {
    s = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['127.0.0.1/32'], extAuthz: {} },
    });
    viewer = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
  });
  afterAll(() => s.close());

  /** Envoy's check request: the original method, path_prefix + original path, the original Host. */
  const check = (method: string, path: string, token?: string, host = 'app.example') =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const url = new URL(s.pc.gatewayUrl);
      const req = httpRequest(
        {
          host: url.hostname,
          port: url.port,
          method,
          path: `${PREFIX}${path}`,
          headers: {
            host,
            'content-length': '0',
            'x-forwarded-proto': 'https',
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
        },
        (res) => {
          let body = '';
          res.on('data', (c) => {
            body += c;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });

  it('allows with the identity headers for Envoy to add upstream; refuses like the proxy; never proxies', async () => {
    const before = s.upstream.received.length;
    const ok = await check('GET', '/api/orders?page=2', viewer);
    expect(ok.status).toBe(200);
    expect(ok.headers['x-portcullis-roles']).toBe('viewer');
    const claims = await verifyAssertion(
      String(ok.headers['x-portcullis-assertion']),
      keyResolver(s.pc.core.keys.jwks()),
      {
        issuer: 'http://portcullis.test',
        audience: 'app',
        request: { method: 'GET', target: '/api/orders?page=2' },
      },
    );
    expect(claims).toMatchObject({ route: 'orders', host: 'app.example', htm: 'GET' });
    expect((await check('GET', '/api/orders')).status).toBe(401);
    expect((await check('POST', '/api/orders', viewer)).status).toBe(403);
    expect((await check('GET', '/api/admin/reports', viewer)).status).toBe(403);
    expect((await check('GET', '/nowhere', viewer)).status).toBe(404);
    // A preflight-shaped request through a proxy is never a 2xx (that would let it through unauthenticated).
    const url = new URL(s.pc.gatewayUrl);
    const preflight = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        {
          host: url.hostname,
          port: url.port,
          method: 'OPTIONS',
          path: `${PREFIX}/api/orders`,
          headers: {
            host: 'app.example',
            origin: 'https://x.example',
            'access-control-request-method': 'GET',
          },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(preflight).toBeGreaterThanOrEqual(400);
    const trick = await check('GET', '/api/orders/%2e%2e/admin/reports', viewer);
    expect(trick.status).toBe(400);
    expect(JSON.parse(trick.body).error.code).toBe('invalid_path');
    expect(s.upstream.received.length).toBe(before);
    // Decisions are audited like any other.
    await s.pc.core.audit.flush();
    let audited = 0;
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'gateway.decision' && JSON.parse(r.data).host === 'app.example') audited++;
    expect(audited).toBe(7); // one allow, six refusals
  });

  it('is refused to callers that are not trusted proxies', async () => {
    const other = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['10.0.0.0/8'], extAuthz: {} },
    });
    try {
      const token = (await other.login(other.users.viewer.username, other.users.viewer.password)).body
        .access_token as string;
      const res = await fetch(`${other.pc.gatewayUrl}${PREFIX}/api/orders`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(res.status).toBe(403);
    } finally {
      await other.close();
    }
  });
});

function findNginx(): string | undefined {
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx']) {
    try {
      execFileSync(p, ['-v'], { stdio: 'ignore' });
      return p;
    } catch {}
  }
  return undefined;
}
const NGINX = findNginx();
if (!NGINX)
  console.warn(
    'skipping nginx forward-auth round trip: nginx not installed (apt-get install nginx; .ci/run installs it)',
  );

describe.skipIf(!NGINX)('nginx auth_request → Portcullis forward-auth → upstream (real nginx)', () => {
  let s: Stack;
  let nginx: ChildProcess;
  let base: string;
  let viewer: string;
  let admin: string;

  beforeAll(async () => {
    s = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['127.0.0.1/32'], forwardAuth: {} },
    });
    viewer = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
    admin = (await s.login(s.users.admin.username, s.users.admin.password)).body.access_token as string;
    const prefix = join(s.dataDir, 'nginx');
    mkdirSync(prefix, { recursive: true });
    const port = await unusedPort();
    base = `http://127.0.0.1:${port}`;
    const gw = new URL(s.pc.gatewayUrl);
    const up = new URL(s.upstream.url);
    writeFileSync(
      join(prefix, 'nginx.conf'),
      `worker_processes 1;
daemon off;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy; fastcgi_temp_path ${prefix}/fcgi;
  uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;
  server {
    listen 127.0.0.1:${port};
    location = /_portcullis_auth {
      internal;
      proxy_pass http://127.0.0.1:${gw.port}${FA};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Uri $request_uri;
      proxy_set_header X-Forwarded-Host $host;
    }
    location / {
      auth_request /_portcullis_auth;
      auth_request_set $portcullis_assertion $upstream_http_x_portcullis_assertion;
      proxy_set_header X-Portcullis-Assertion $portcullis_assertion;
      proxy_pass http://127.0.0.1:${up.port};
    }
  }
}
`,
    );
    nginx = spawn(NGINX as string, ['-p', prefix, '-c', join(prefix, 'nginx.conf')], { stdio: 'ignore' });
    await waitForHttp(base);
  });
  afterAll(async () => {
    await stopChild(nginx);
    await s?.close();
  });

  const call = (path: string, token?: string, extra: Record<string, string> = {}) =>
    rawRequest(base, rawGet(path, { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...extra }));

  it('an allowed request reaches the upstream with Portcullis’s assertion, not the client’s', async () => {
    const before = s.upstream.received.length;
    const res = await call('/api/orders?x=1', viewer, { 'X-Portcullis-Assertion': 'forged' });
    expect(res.status).toBe(200);
    const seen = s.upstream.received.slice(before);
    expect(seen.map((r) => r.url)).toEqual(['/api/orders?x=1']);
    const claims = await verifyAssertion(
      seen[0]?.headers['x-portcullis-assertion'] as string,
      keyResolver(s.pc.core.keys.jwks()),
      {
        issuer: 'http://portcullis.test',
        audience: 'app',
        request: { method: 'GET', target: seen[0]?.url ?? '' },
      },
    );
    expect(claims).toMatchObject({ roles: ['viewer'], route: 'orders' });
  });

  it('refusals stop at nginx: no token 401, wrong role 403, path tricks and unknown routes never reach the upstream', async () => {
    const before = s.upstream.received.length;
    expect((await call('/api/orders')).status).toBe(401);
    expect((await call('/api/admin/reports', viewer)).status).toBe(403);
    for (const trick of [
      '/api/orders/%2e%2e/admin/reports',
      '/api/orders/../admin/reports',
      '//api/admin/reports',
      '/api/orders/..%2fadmin',
    ]) {
      const res = await call(trick, viewer);
      expect(res.status, trick).toBeGreaterThanOrEqual(400);
    }
    expect((await call('/nowhere', viewer)).status).toBe(500); // auth_request maps any non-2xx/401/403 to 500: still a denial
    expect(s.upstream.received.slice(before)).toEqual([]);
    expect((await call('/api/admin/reports', admin)).status).toBe(200);
  });

  it('every forward-auth decision is in the audit log', async () => {
    await s.pc.core.audit.flush();
    const records = [];
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'gateway.decision') records.push(JSON.parse(r.data));
    expect(
      records.some((d) => d.path === '/api/orders' && d.outcome === 'allow' && d.host === '127.0.0.1'),
    ).toBe(true);
    expect(
      records.some((d) => d.path === '/api/admin/reports' && d.outcome === 'deny' && d.status === 403),
    ).toBe(true);
    expect(readFileSync(join(s.dataDir, 'nginx', 'error.log'), 'utf8')).not.toMatch(/\[emerg\]/);
  });
});

function findCaddy(): string | undefined {
  try {
    execFileSync('/usr/bin/caddy', ['version'], { stdio: 'ignore' });
    return '/usr/bin/caddy';
  } catch {
    return undefined;
  }
}
const CADDY = findCaddy();
if (!CADDY)
  console.warn(
    'skipping Caddy forward_auth round trip: caddy not installed (apt-get install caddy; .ci/run installs it)',
  );

/**
 * Starts Debian's Caddy on a fresh loopback port with one site whose body `site` writes, given the
 * gateway's and the recording upstream's ports; resolves once it answers.
 */
async function startCaddy(
  s: Stack,
  name: string,
  site: (gatewayPort: string, upstreamPort: string) => string,
): Promise<{ caddy: ChildProcess; base: string }> {
  const dir = join(s.dataDir, name);
  mkdirSync(dir, { recursive: true });
  const port = await unusedPort();
  const base = `http://127.0.0.1:${port}`;
  writeFileSync(
    join(dir, 'Caddyfile'),
    `{
	admin off
	auto_https off
	storage file_system ${dir}/storage
}
${base} {${site(new URL(s.pc.gatewayUrl).port, new URL(s.upstream.url).port)}}
`,
  );
  const caddy = spawn(
    CADDY as string,
    ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'],
    {
      stdio: 'ignore',
      env: { ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir },
    },
  );
  await waitForHttp(base);
  return { caddy, base };
}

describe.skipIf(!CADDY)('Caddy forward_auth → Portcullis forward-auth → upstream (real Caddy)', () => {
  let s: Stack;
  let caddy: ChildProcess;
  let base: string;
  let viewer: string;

  beforeAll(async () => {
    s = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['127.0.0.1/32'], forwardAuth: {} },
    });
    viewer = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
    ({ caddy, base } = await startCaddy(
      s,
      'caddy',
      (gw, up) => `
	forward_auth 127.0.0.1:${gw} {
		uri ${FA}
		copy_headers X-Portcullis-Assertion X-Portcullis-Roles
	}
	reverse_proxy 127.0.0.1:${up}
`,
    ));
  });
  afterAll(async () => {
    await stopChild(caddy);
    await s?.close();
  });

  const call = (path: string, token?: string, extra: Record<string, string> = {}) =>
    rawRequest(base, rawGet(path, { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...extra }));

  it('allowed: the upstream gets the request with Portcullis’s assertion, not the client’s', async () => {
    const before = s.upstream.received.length;
    const res = await call('/api/orders?y=2', viewer, { 'X-Portcullis-Assertion': 'forged' });
    expect(res.status).toBe(200);
    const seen = s.upstream.received.slice(before);
    expect(seen.map((r) => r.url)).toEqual(['/api/orders?y=2']);
    const claims = await verifyAssertion(
      seen[0]?.headers['x-portcullis-assertion'] as string,
      keyResolver(s.pc.core.keys.jwks()),
      {
        issuer: 'http://portcullis.test',
        audience: 'app',
        request: { method: 'GET', target: seen[0]?.url ?? '' },
      },
    );
    expect(claims).toMatchObject({ roles: ['viewer'], route: 'orders' });
  });

  it('refused: 401 without a token, 403 for the wrong role, 400 for path tricks; nothing reaches the upstream', async () => {
    const before = s.upstream.received.length;
    expect((await call('/api/orders')).status).toBe(401);
    expect((await call('/api/admin/reports', viewer)).status).toBe(403);
    expect((await call('/api/orders/%2e%2e/admin/reports', viewer)).status).toBe(400);
    expect((await call('/nowhere', viewer)).status).toBe(404);
    expect(s.upstream.received.slice(before)).toEqual([]);
  });
});

describe.skipIf(!CADDY)(
  'Caddy forward_auth with browser sessions: sign-in redirect, form sign-in, cookie (real Caddy)',
  () => {
    let s: Stack;
    let caddy: ChildProcess;
    let base: string;

    beforeAll(async () => {
      s = await startStack({
        gateway: {
          listen: { host: '127.0.0.1', port: 0 },
          trustedProxies: ['127.0.0.1/32'],
          forwardAuth: { redirectBrowsers: true },
        },
        routes: [
          {
            id: 'app',
            path: '/app/*',
            methods: ['GET', 'POST'],
            upstream: 'app',
            issuers: ['portcullis', 'session'],
          },
        ],
        policy: { rules: [{ id: 'app-users', routes: ['app'], roles: ['viewer', 'admin'] }] },
      });
      // The app's host serves Portcullis's sign-in pages under /auth/*, and everything else behind forward_auth.
      ({ caddy, base } = await startCaddy(
        s,
        'caddy-browser',
        (gw, up) => `
	handle /auth/* {
		reverse_proxy 127.0.0.1:${gw}
	}
	handle {
		forward_auth 127.0.0.1:${gw} {
			uri ${FA}
			copy_headers X-Portcullis-Assertion
		}
		reverse_proxy 127.0.0.1:${up}
	}
`,
      ));
    });
    afterAll(async () => {
      await stopChild(caddy);
      await s?.close();
    });

    it('a browser is sent to sign in on the app host, signs in through Caddy, and comes back with a working cookie', async () => {
      const jar = new Map<string, string>();
      const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      const go = async (path: string, init: RequestInit = {}) => {
        const res = await fetch(`${base}${path}`, {
          redirect: 'manual',
          ...init,
          headers: {
            ...(jar.size ? { cookie: cookieHeader() } : {}),
            ...(init.headers as Record<string, string>),
          },
        });
        for (const line of res.headers.getSetCookie()) {
          const [pair = ''] = line.split(';');
          const eq = pair.indexOf('=');
          if (/max-age=0/i.test(line)) jar.delete(pair.slice(0, eq));
          else jar.set(pair.slice(0, eq), pair.slice(eq + 1));
        }
        return { status: res.status, location: res.headers.get('location'), text: await res.text() };
      };
      const before = s.upstream.received.length;
      const NAV = { accept: 'text/html', 'sec-fetch-mode': 'navigate' };
      // 1. No cookie: Caddy passes the gateway's 302 on, to the sign-in page on this same host.
      const first = await go('/app/home?tab=2', { headers: NAV });
      expect(first.status).toBe(302);
      expect(first.location).toBe('/auth/login?return_to=%2Fapp%2Fhome%3Ftab%3D2');
      // An API call still gets the 401 JSON.
      expect((await go('/app/home', { headers: { accept: 'application/json' } })).status).toBe(401);
      expect(s.upstream.received.length).toBe(before);
      // 2. The sign-in page and form, served by Portcullis through Caddy.
      const page = await go(first.location as string, { headers: NAV });
      expect(page.status).toBe(200);
      const csrf = /name="csrf" value="([^"]+)"/.exec(page.text)?.[1] as string;
      const signedIn = await go('/auth/login', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base },
        body: new URLSearchParams({
          username: s.users.viewer.username,
          password: s.users.viewer.password,
          csrf,
          return_to: '/app/home?tab=2',
        }).toString(),
      });
      expect(signedIn.status).toBe(303);
      expect(signedIn.location).toBe('/app/home?tab=2');
      expect(jar.has('__Host-portcullis-session')).toBe(true);
      // 3. Back on the page: allowed, and the upstream gets the assertion (not the cookie).
      const back = await go('/app/home?tab=2', { headers: NAV });
      expect(back.status).toBe(200);
      const seen = s.upstream.received.at(-1);
      expect(seen?.url).toBe('/app/home?tab=2');
      const claims = await verifyAssertion(
        seen?.headers['x-portcullis-assertion'] as string,
        keyResolver(s.pc.core.keys.jwks()),
        {
          issuer: 'http://portcullis.test',
          audience: 'app',
          request: { method: 'GET', target: '/app/home?tab=2' },
        },
      );
      expect(claims).toMatchObject({ roles: ['viewer'], route: 'app' });
      // A cross-site POST with the cookie is refused at forward-auth too.
      expect(
        (await go('/app/home', { method: 'POST', headers: { origin: 'https://evil.example' }, body: '{}' }))
          .status,
      ).toBe(403);
    });
  },
);

describe('forward-auth on a public route', () => {
  it('answers 200 with no identity headers (and never a 500)', async () => {
    const s = await startStack({
      gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['127.0.0.1/32'], forwardAuth: {} },
      routes: [
        { id: 'health', path: '/healthz', methods: ['GET'], upstream: 'app', public: true },
        { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
      ],
      policy: { rules: [{ id: 'read', routes: ['orders'], roles: ['viewer'] }] },
    });
    try {
      const ask = (uri: string) =>
        fetch(`${s.pc.gatewayUrl}${FA}`, {
          headers: { 'x-forwarded-method': 'GET', 'x-forwarded-uri': uri, 'x-forwarded-host': 'app.example' },
        });
      const pub = await ask('/healthz');
      expect(pub.status).toBe(200);
      expect(pub.headers.get('x-portcullis-assertion')).toBeNull();
      expect(pub.headers.get('x-portcullis-subject')).toBeNull();
      expect((await ask('/api/orders')).status).toBe(401);
    } finally {
      await s.close();
    }
  });
});
