import { randomBytes } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manualClock, type SessionId, type UserId } from '../src/core/index.js';
import { BrowserSessions, keyResolver } from '../src/identity/index.js';
import { verifyAssertion } from '../src/sdk/index.js';
import { rawRequest, type Stack, startStack } from './helpers.js';

/**
 * Browser sessions on the real gateway (loopback, real SQLite): the sealed session cookie on routes
 * that list `session`, login redirects, the HTML sign-in forms (CSRF, MFA, safe return_to), CSRF rules
 * for cookie-authenticated writes, revocation, and the browser variant of step-up.
 */
describe('browser sessions: cookie, sign-in pages, step-up', () => {
  const clock = manualClock(Date.now());
  let s: Stack;
  let base: string;
  const NAV = { accept: 'text/html,application/xhtml+xml;q=0.9,*/*;q=0.8', 'sec-fetch-mode': 'navigate' };
  const API = { accept: 'application/json' };

  beforeAll(async () => {
    s = await startStack(
      {
        identity: { redirectAllowList: ['https://app.example.com'] },
        routes: [
          {
            id: 'app',
            path: '/app/*',
            methods: ['GET', 'POST', 'DELETE'],
            upstream: 'app',
            issuers: ['portcullis', 'session'],
          },
          {
            id: 'secure',
            path: '/secure/*',
            methods: ['GET'],
            upstream: 'app',
            issuers: ['portcullis', 'session'],
          },
          { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
        ],
        policy: {
          rules: [
            { id: 'app-users', routes: ['app'], roles: ['viewer', 'admin'] },
            { id: 'secure-mfa', routes: ['secure'], roles: ['admin'], require: { mfa: true, maxAge: '5m' } },
            { id: 'orders', routes: ['orders'], roles: ['viewer', 'admin'] },
          ],
        },
      },
      undefined,
      { clock },
    );
    base = s.pc.gatewayUrl;
  });
  afterAll(async () => {
    await s.close();
  });

  /** A minimal cookie jar: the last value of each cookie set (Max-Age=0 deletes). */
  class Jar {
    readonly cookies = new Map<string, string>();
    take(res: Response): void {
      for (const line of res.headers.getSetCookie()) {
        const [pair = ''] = line.split(';');
        const eq = pair.indexOf('=');
        const name = pair.slice(0, eq);
        if (/max-age=0/i.test(line)) this.cookies.delete(name);
        else this.cookies.set(name, pair.slice(eq + 1));
      }
    }
    header(): string {
      return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    }
  }

  const go = async (
    path: string,
    o: { method?: string; headers?: Record<string, string>; body?: string; jar?: Jar } = {},
  ) => {
    const res = await fetch(`${base}${path}`, {
      method: o.method ?? 'GET',
      redirect: 'manual',
      headers: { ...(o.jar && o.jar.cookies.size > 0 ? { cookie: o.jar.header() } : {}), ...o.headers },
      ...(o.body === undefined ? {} : { body: o.body }),
    });
    o.jar?.take(res);
    return { res, status: res.status, location: res.headers.get('location'), text: await res.text() };
  };
  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
  const FORM = () => ({ 'content-type': 'application/x-www-form-urlencoded', origin: base });
  const csrfOf = (html: string) => /name="csrf" value="([^"]+)"/.exec(html)?.[1] as string;

  /** GET the sign-in page, then post the form: the answer to the post. */
  async function signIn(jar: Jar, username: string, password: string, returnTo = '/app/home') {
    const page = await go(`/auth/login?return_to=${encodeURIComponent(returnTo)}`, { jar });
    return go('/auth/login', {
      method: 'POST',
      jar,
      headers: FORM(),
      body: form({ username, password, csrf: csrfOf(page.text), return_to: returnTo }),
    });
  }
  const sessionCookie = (jar: Jar) => jar.cookies.get('__Host-portcullis-session');

  it('a browser navigating without a cookie goes to the sign-in page with return_to; an API call gets 401 JSON', async () => {
    const nav = await go('/app/page?x=1', { headers: NAV });
    expect(nav.status).toBe(302);
    expect(nav.location).toBe(`/auth/login?return_to=${encodeURIComponent('/app/page?x=1')}`);
    expect(nav.res.headers.get('cache-control')).toBe('no-store');
    // Accept: text/html alone is a navigation too; a script's fetch (Accept: */*) is not.
    expect((await go('/app/x', { headers: { accept: 'text/html' } })).status).toBe(302);
    for (const headers of [API, { accept: '*/*' }, { ...NAV, authorization: 'Bearer nope' }]) {
      const api = await go('/app/page', { headers });
      expect(api.status).toBe(401);
      expect(api.res.headers.get('content-type')).toContain('application/json');
      expect(api.res.headers.get('www-authenticate')).toContain('Bearer');
    }
    expect(JSON.parse((await go('/app/page', { headers: API })).text).error.code).toBe('unauthenticated');
    // A POST is never redirected (its body would be lost), nor is a route that does not take the cookie.
    expect((await go('/app/page', { method: 'POST', headers: NAV })).status).toBe(401);
    expect((await go('/api/orders', { headers: NAV })).status).toBe(401);
  });

  it('the sign-in page: no script, its own CSP, a CSRF nonce cookie, every value escaped', async () => {
    const evil = '/app/"><script>alert(1)</script>';
    const page = await go(`/auth/login?return_to=${encodeURIComponent(evil)}`);
    expect(page.status).toBe(200);
    expect(page.res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = page.res.headers.get('content-security-policy') as string;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/style-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).toContain("form-action 'self' http://portcullis.test https://app.example.com");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(page.res.headers.get('x-frame-options')).toBe('DENY');
    expect(page.res.headers.get('cache-control')).toBe('no-store');
    expect(page.text).not.toContain('<script');
    expect(page.text).toContain('value="/app/%22%3E%3Cscript%3Ealert(1)%3C/script%3E"');
    const [csrfCookie] = page.res.headers.getSetCookie();
    expect(csrfCookie).toMatch(
      /^__Host-portcullis-csrf=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=\d+; HttpOnly; Secure; SameSite=Strict$/,
    );
    // HEAD answers the headers only; other methods are refused with the right Allow.
    const head = await go('/auth/login', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.text).toBe('');
    const put = await go('/auth/login', { method: 'PUT' });
    expect(put.status).toBe(405);
    expect(put.res.headers.get('allow')).toBe('POST, GET, HEAD');
  });

  it('the form refuses a missing, foreign or cross-site CSRF token, and malformed input (400)', async () => {
    const jar = new Jar();
    const page = await go('/auth/login', { jar });
    const token = csrfOf(page.text);
    const { username, password } = s.users.viewer;
    const post = (fields: Record<string, string>, headers: Record<string, string> = FORM(), withJar = jar) =>
      go('/auth/login', { method: 'POST', jar: withJar, headers, body: form(fields) });
    const missing = await post({ username, password });
    expect(missing.status).toBe(403);
    expect(JSON.parse(missing.text).error.code).toBe('csrf_rejected');
    // Another browser's token (nonce cookie of its own) does not fit this browser's nonce.
    const other = new Jar();
    await go('/auth/login', { jar: other });
    expect((await post({ username, password, csrf: token }, FORM(), other)).status).toBe(403);
    expect((await post({ username, password, csrf: `${token.slice(0, -2)}AA` })).status).toBe(403);
    // A valid token posted from another origin or site.
    expect(
      (await post({ username, password, csrf: token }, { ...FORM(), origin: 'https://evil.example' })).status,
    ).toBe(403);
    const { origin: _, ...noOrigin } = FORM();
    expect(
      (await post({ username, password, csrf: token }, { ...noOrigin, 'sec-fetch-site': 'cross-site' }))
        .status,
    ).toBe(403);
    // Unknown or repeated fields: 400 invalid_body.
    const extra = await post({ username, password, csrf: token, admin: 'true' });
    expect(extra.status).toBe(400);
    expect(JSON.parse(extra.text).error.code).toBe('invalid_body');
    const repeated = await go('/auth/login', {
      method: 'POST',
      jar,
      headers: FORM(),
      body: `${form({ username, password, csrf: token })}&username=alice`,
    });
    expect(repeated.status).toBe(400);
    expect(sessionCookie(jar)).toBeUndefined();
  });

  it('a wrong password shows the form again (401, escaped), with the same throttling as the JSON login', async () => {
    const jar = new Jar();
    const res = await signIn(jar, '<b>victor</b>', 'wrong-password-123');
    expect(res.status).toBe(401);
    expect(res.res.headers.get('content-type')).toContain('text/html');
    expect(res.text).toContain('The username or password is incorrect.');
    expect(res.text).toContain('value="&lt;b&gt;victor&lt;/b&gt;"');
    expect(res.text).not.toContain('<b>victor');
    expect(sessionCookie(jar)).toBeUndefined();
    await s.pc.core.audit.flush();
    const failed: unknown[] = [];
    for await (const r of s.pc.core.store.audit.scan()) if (r.type === 'auth.login.failed') failed.push(r);
    expect(failed.length).toBeGreaterThan(0);
  });

  let viewerJar: Jar;
  it('form sign-in sets a sealed, host-only session cookie and returns to the page; the upstream gets the identity assertion, not the cookie', async () => {
    viewerJar = new Jar();
    const res = await signIn(viewerJar, s.users.viewer.username, s.users.viewer.password, '/app/page?x=1');
    expect(res.status).toBe(303);
    expect(res.location).toBe('/app/page?x=1');
    const set = res.res.headers
      .getSetCookie()
      .find((c) => c.startsWith('__Host-portcullis-session=')) as string;
    expect(set).toMatch(
      /^__Host-portcullis-session=v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+; Path=\/; Max-Age=43200; HttpOnly; Secure; SameSite=Lax$/,
    );
    expect(set).not.toMatch(/Domain=/i);
    // A reference, not a token: nothing readable in it.
    const value = sessionCookie(viewerJar) as string;
    expect(Buffer.from(value.split('.')[2] as string, 'base64url').toString('latin1')).not.toMatch(
      /victor|viewer|sid/,
    );

    viewerJar.cookies.set('theme', 'dark');
    const page = await go('/app/page?x=1', { jar: viewerJar, headers: NAV });
    expect(page.status).toBe(200);
    const seen = s.upstream.received.at(-1);
    expect(seen?.url).toBe('/app/page?x=1');
    expect(seen?.headers.cookie).toBe('theme=dark');
    const jwks = await (await fetch(`${base}/.well-known/jwks.json`)).json();
    const claims = await verifyAssertion(
      seen?.headers['x-portcullis-assertion'] as string,
      keyResolver(jwks),
      {
        issuer: 'http://portcullis.test',
        audience: 'app',
        request: { method: 'GET', target: '/app/page?x=1' },
        currentDate: new Date(clock.now()),
      },
    );
    const victor = await s.pc.core.identity.findUser('victor');
    expect(claims).toMatchObject({
      sub: victor?.id,
      roles: ['viewer'],
      amr: ['pwd'],
      acr: 'aal1',
      route: 'app',
    });
    // The same-origin API call with the cookie (fetch from the app's own page) works too.
    expect((await go('/app/data', { jar: viewerJar, headers: API })).status).toBe(200);
  });

  it('the cookie principal is exactly what an access token for the session carries', async () => {
    const victor = await s.pc.core.identity.findUser('victor');
    const session = (await s.pc.core.identity.sessions(victor?.id as UserId)).find((x) => x.active);
    const ref = { sessionId: session?.id as SessionId, userId: victor?.id as UserId };
    const fromCookie = await s.pc.core.identity.sessionPrincipal(ref, { ip: '127.0.0.1' });
    const token = await s.pc.core.tokens.issueAccessToken({
      userId: ref.userId,
      sessionId: ref.sessionId,
      roles: victor?.roles ?? [],
      amr: session?.amr ?? [],
      authTime: session?.authTime ?? 0,
      acr: session?.acr ?? '',
      groups: victor?.groups ?? [],
      attributes: victor?.attributes ?? {},
    });
    const { tokenId: _, ...fromToken } = await s.pc.core.tokens.verifyAccessToken(token);
    const { tokenId: __, ...cookiePrincipal } = fromCookie;
    expect(cookiePrincipal).toEqual(fromToken);
  });

  it('a tampered, foreign or duplicated cookie is refused (401 for APIs, sign-in redirect that clears it for browsers)', async () => {
    const good = sessionCookie(viewerJar) as string;
    const flipped = `${good.slice(0, -3)}${good.at(-3) === 'A' ? 'B' : 'A'}${good.slice(-2)}`;
    const victor = await s.pc.core.identity.findUser('victor');
    const session = (await s.pc.core.identity.sessions(victor?.id as UserId)).find((x) => x.active);
    // A well-formed cookie for a real session, sealed under another deployment's key.
    const foreign = new BrowserSessions({ dataKey: randomBytes(32), clock }).seal({
      sessionId: session?.id as SessionId,
      userId: victor?.id as UserId,
      expiresAt: clock.now() + 3_600_000,
    });
    for (const bad of [flipped, foreign, 'v1.abc.def', 'x'.repeat(5000)]) {
      const cookie = `__Host-portcullis-session=${bad}`;
      const api = await go('/app/page', { headers: { ...API, cookie } });
      expect(api.status, bad.slice(0, 20)).toBe(401);
      expect(JSON.parse(api.text).error.code).toBe('invalid_token');
      const nav = await go('/app/page', { headers: { ...NAV, cookie } });
      expect(nav.status).toBe(302);
      expect(nav.location).toMatch(/^\/auth\/login\?return_to=/);
      expect(nav.res.headers.getSetCookie()).toContain(
        '__Host-portcullis-session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax',
      );
    }
    const twice = `__Host-portcullis-session=${good}; __Host-portcullis-session=${good}`;
    expect((await go('/app/page', { headers: { ...API, cookie: twice } })).status).toBe(401);
    // The cookie is not a credential on a route that does not list `session`.
    expect((await go('/api/orders', { jar: viewerJar, headers: API })).status).toBe(401);
  });

  it('cookie-authenticated writes must come from this origin (CSRF); reads and non-browser clients pass', async () => {
    const before = s.upstream.received.length;
    const post = (headers: Record<string, string>) =>
      go('/app/items', {
        method: 'POST',
        jar: viewerJar,
        headers: { 'content-type': 'application/json', ...headers },
        body: '{}',
      });
    const crossOrigin = await post({ origin: 'https://evil.example' });
    expect(crossOrigin.status).toBe(403);
    expect(JSON.parse(crossOrigin.text).error.code).toBe('csrf_rejected');
    expect((await post({ origin: 'null' })).status).toBe(403);
    expect((await post({ 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect(
      (
        await go('/app/items/1', {
          method: 'DELETE',
          jar: viewerJar,
          headers: { origin: 'https://evil.example' },
        })
      ).status,
    ).toBe(403);
    expect(s.upstream.received.length).toBe(before);
    expect((await post({ origin: base, 'sec-fetch-site': 'same-origin' })).status).toBe(200);
    expect((await post({})).status).toBe(200);
    // A WebSocket handshake with the cookie from another origin is refused too (Cross-Site WebSocket
    // Hijacking): browsers always send Origin on it.
    const handshake = (origin: string) =>
      rawRequest(
        base,
        `GET /app/socket HTTP/1.1\r\nHost: ${new URL(base).host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: ${origin}\r\nCookie: ${viewerJar.header()}\r\n\r\n`,
      );
    const hijack = await handshake('https://evil.example');
    expect(hijack.status).toBe(403);
    expect(JSON.parse(hijack.body).error.code).toBe('csrf_rejected');
    expect(s.upstream.received.length).toBe(before + 2);
    expect((await handshake(base)).status).toBe(200); // same origin: served (as a plain request on this route)
    // A cross-site GET is a navigation (SameSite=Lax lets the cookie come): allowed, like a link.
    expect(
      (await go('/app/page', { jar: viewerJar, headers: { ...NAV, 'sec-fetch-site': 'cross-site' } })).status,
    ).toBe(200);
  });

  it('return_to must be a path on this origin or an allow-listed origin: anything else falls back to /', async () => {
    for (const bad of [
      '//evil.com',
      'https://evil.com',
      '/\\evil.com',
      'javascript:alert(1)',
      '/.//evil.com',
      '/\t/evil.com',
      'http://portcullis.test.evil.com/',
    ]) {
      const jar = new Jar();
      const res = await signIn(jar, s.users.viewer.username, s.users.viewer.password, bad);
      expect(res.status, bad).toBe(303);
      expect(res.location, bad).toBe('/');
      expect((await go(`/auth/login?return_to=${encodeURIComponent(bad)}`)).text).toContain(
        'name="return_to" value="/"',
      );
    }
    const allowed = await signIn(
      new Jar(),
      s.users.viewer.username,
      s.users.viewer.password,
      'https://app.example.com/after?a=1',
    );
    expect(allowed.location).toBe('https://app.example.com/after?a=1');
    const own = await signIn(new Jar(), s.users.viewer.username, s.users.viewer.password, `${base}/app/abs`);
    expect(own.location).toBe(`${base}/app/abs`);
  });

  it('sign-out revokes the session: the old cookie is refused on its next request; an admin revocation works the same', async () => {
    const stolen = sessionCookie(viewerJar) as string;
    const page = await go('/auth/logout', { jar: viewerJar });
    expect(page.status).toBe(200);
    // Without the token and from another origin: refused, still signed in.
    const forged = await go('/auth/logout', {
      method: 'POST',
      jar: viewerJar,
      headers: { ...FORM(), origin: 'https://evil.example' },
      body: form({ csrf: csrfOf(page.text) }),
    });
    expect(forged.status).toBe(403);
    expect((await go('/app/page', { jar: viewerJar, headers: API })).status).toBe(200);
    const out = await go('/auth/logout', {
      method: 'POST',
      jar: viewerJar,
      headers: FORM(),
      body: form({ csrf: csrfOf(page.text) }),
    });
    expect(out.status).toBe(303);
    expect(out.location).toBe('/auth/login');
    expect(sessionCookie(viewerJar)).toBeUndefined();
    const replay = await go('/app/page', {
      headers: { ...API, cookie: `__Host-portcullis-session=${stolen}` },
    });
    expect(replay.status).toBe(401);
    expect(JSON.parse(replay.text).error.code).toBe('session_revoked');
    expect(
      (await go('/app/page', { headers: { ...NAV, cookie: `__Host-portcullis-session=${stolen}` } })).status,
    ).toBe(302);

    // An administrator ends every session of the user: the next request is refused.
    const jar = new Jar();
    await signIn(jar, s.users.viewer.username, s.users.viewer.password);
    expect((await go('/app/page', { jar, headers: API })).status).toBe(200);
    const victor = await s.pc.core.identity.findUser('victor');
    expect(await s.pc.core.identity.revokeAllSessions(victor?.id as UserId)).toBeGreaterThan(0);
    expect((await go('/app/page', { jar, headers: API })).status).toBe(401);
    const nav = await go('/app/page', { jar, headers: NAV });
    expect(nav.status).toBe(302);
    expect(nav.location).toBe('/auth/login?return_to=%2Fapp%2Fpage');
  });

  it("an app's own sign-out (same-origin fetch, no body) works; step-up without a second factor explains itself", async () => {
    const jar = new Jar();
    await signIn(jar, s.users.viewer.username, s.users.viewer.password);
    const cookie = sessionCookie(jar) as string;
    const stepUp = await go('/auth/step-up?return_to=%2Fapp', { jar });
    expect(stepUp.status).toBe(403);
    expect(stepUp.text).toContain('Enrol an authenticator app first.');
    // No Origin, no token: refused; the app's same-origin fetch: signed out.
    expect((await go('/auth/logout', { method: 'POST', jar })).status).toBe(403);
    const out = await go('/auth/logout', { method: 'POST', jar, headers: { origin: base } });
    expect(out.status).toBe(303);
    expect(sessionCookie(jar)).toBeUndefined();
    const after = await go('/app/page', {
      headers: { ...API, cookie: `__Host-portcullis-session=${cookie}` },
    });
    expect(after.status).toBe(401);
  });

  describe('with TOTP: the MFA form step and browser step-up', () => {
    const codeAt = (secret: string, ms: number) =>
      new TOTP({ secret: Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' }).generate({
        timestamp: ms,
      });
    let secret = '';
    const jar = new Jar();

    beforeAll(async () => {
      // Alice (admin) enrols TOTP through the JSON API.
      const login = await s.login(s.users.admin.username, s.users.admin.password);
      const token = login.body.access_token as string;
      const call = async (path: string, body: unknown) =>
        (
          await fetch(`${base}${path}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
            body: JSON.stringify(body),
          })
        ).json();
      secret = ((await call('/auth/mfa/totp', {})) as { secret: string }).secret;
      await call('/auth/mfa/totp/confirm', { code: codeAt(secret, clock.now()) });
      clock.advance(30_000);
    });

    it('sign-in with a second factor: password, then the code form, then back to the page', async () => {
      const nav = await go('/secure/report', { headers: NAV });
      expect(nav.location).toBe('/auth/login?return_to=%2Fsecure%2Freport');
      const first = await signIn(jar, s.users.admin.username, s.users.admin.password, '/secure/report');
      expect(first.status).toBe(200);
      expect(first.text).toContain('action="/auth/mfa"');
      expect(sessionCookie(jar)).toBeUndefined();
      const mfaToken = /name="mfa_token" value="([^"]+)"/.exec(first.text)?.[1] as string;
      const fields = { mfa_token: mfaToken, csrf: csrfOf(first.text), return_to: '/secure/report' };
      const wrong = await go('/auth/mfa', {
        method: 'POST',
        jar,
        headers: FORM(),
        body: form({ ...fields, code: '000000' }),
      });
      expect(wrong.status).toBe(401);
      expect(wrong.text).toContain('The code is invalid');
      const done = await go('/auth/mfa', {
        method: 'POST',
        jar,
        headers: FORM(),
        body: form({ ...fields, code: codeAt(secret, clock.now()) }),
      });
      expect(done.status).toBe(303);
      expect(done.location).toBe('/secure/report');
      expect(sessionCookie(jar)).toBeDefined();
      expect((await go('/secure/report', { jar, headers: NAV })).status).toBe(200);
    });

    it('policy challenge: a browser goes to the MFA page and back, and is then allowed; an API gets RFC 9470', async () => {
      clock.advance(6 * 60_000); // the MFA sign-in is now older than the rule's 5 minutes
      const nav = await go('/secure/report?tab=2', { jar, headers: NAV });
      expect(nav.status).toBe(302);
      expect(nav.location).toBe(`/auth/step-up?return_to=${encodeURIComponent('/secure/report?tab=2')}`);
      const api = await go('/secure/report?tab=2', { jar, headers: API });
      expect(api.status).toBe(401);
      expect(JSON.parse(api.text).error.code).toBe('step_up_required');
      expect(api.res.headers.get('www-authenticate')).toContain('error="insufficient_user_authentication"');
      expect(api.res.headers.get('www-authenticate')).toContain('max_age=300');

      const page = await go(nav.location as string, { jar });
      expect(page.status).toBe(200);
      expect(page.text).toContain('action="/auth/step-up"');
      expect(page.text).toContain('name="return_to" value="/secure/report?tab=2"');
      const fields = { csrf: csrfOf(page.text), return_to: '/secure/report?tab=2' };
      const wrong = await go('/auth/step-up', {
        method: 'POST',
        jar,
        headers: FORM(),
        body: form({ ...fields, code: '000000' }),
      });
      expect(wrong.status).toBe(401);
      clock.advance(30_000);
      const up = await go('/auth/step-up', {
        method: 'POST',
        jar,
        headers: FORM(),
        body: form({ ...fields, code: codeAt(secret, clock.now()) }),
      });
      expect(up.status).toBe(303);
      expect(up.location).toBe('/secure/report?tab=2');
      const back = await go(up.location as string, { jar, headers: NAV });
      expect(back.status).toBe(200);
      const assertion = String(s.upstream.received.at(-1)?.headers['x-portcullis-assertion']);
      const claims = JSON.parse(Buffer.from(assertion.split('.')[1] as string, 'base64url').toString());
      expect(claims).toMatchObject({ acr: 'aal2', route: 'secure' });
      expect(claims.amr).toContain('otp');
      await s.pc.core.audit.flush();
      const types: string[] = [];
      for await (const r of s.pc.core.store.audit.scan()) types.push(r.type);
      expect(types).toContain('auth.step_up');
    });

    it('the step-up page without a session sends the browser to sign in (keeping return_to)', async () => {
      const res = await go('/auth/step-up?return_to=%2Fsecure%2Freport');
      expect(res.status).toBe(302);
      expect(res.location).toBe('/auth/login?return_to=%2Fsecure%2Freport');
    });
  });
});
