import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
// @ts-expect-error oidc-provider ships no type declarations
import Provider from 'oidc-provider';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from './helpers.js';

/**
 * Login through an external OpenID Provider: a real `oidc-provider` on loopback (its development
 * login and consent pages), our gateway as the relying party (openid-client, code flow + PKCE).
 */
describe('federated login against a real OpenID Provider (oidc-provider on loopback)', () => {
  let op: Server;
  let opUrl: string;
  let s: Stack;
  const OUR = 'http://portcullis.test';
  const CALLBACK = `${OUR}/auth/federated/corp/callback`;

  beforeAll(async () => {
    op = createServer();
    await new Promise<void>((r) => op.listen(0, '127.0.0.1', r));
    opUrl = `http://127.0.0.1:${(op.address() as AddressInfo).port}`;
    const provider = new Provider(opUrl, {
      clients: [
        {
          client_id: 'portcullis',
          client_secret: 'op-client-secret-0123456789abcdef',
          redirect_uris: [CALLBACK],
          response_types: ['code'],
          grant_types: ['authorization_code'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
      findAccount: async (_ctx: unknown, id: string) => ({
        accountId: id,
        claims: async () => ({
          sub: id,
          email: `${id}@corp.test`,
          email_verified: true,
          preferred_username: id,
          name: `${id[0]?.toUpperCase()}${id.slice(1)} Example`,
          groups: id === 'ana' ? ['engineering', 'admins'] : ['engineering'],
        }),
      }),
      claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        profile: ['preferred_username', 'name', 'groups'],
      },
      features: { devInteractions: { enabled: true } },
      cookies: { keys: ['a-test-cookie-signing-key'] },
      pkce: { required: () => true },
      // The ID token carries the claims (the relying party does not call userinfo).
      conformIdTokenClaims: false,
    } as never);
    op.on('request', provider.callback());
    s = await startStack({
      identity: {
        issuer: OUR,
        audience: 'portcullis',
        passwordHash: { memoryCost: 1024, timeCost: 1, parallelism: 1 },
        federation: {
          corp: {
            issuer: opUrl,
            clientId: 'portcullis',
            clientSecret: 'op-client-secret-0123456789abcdef',
            rolesClaim: 'groups',
            roleMap: { engineering: 'viewer', admins: ['admin'] },
            allowInsecure: true,
          },
        },
      },
    });
  });
  afterAll(async () => {
    await s.close();
    op.closeAllConnections();
    await new Promise((r) => op.close(r));
  });

  /** Follows one login through the OP's development pages; returns the callback URL it sends us to. */
  async function throughOp(authUrl: string, login: string): Promise<URL> {
    const jar = new Map<string, string>();
    const remember = (res: Response) => {
      for (const c of res.headers.getSetCookie()) {
        const [pair] = c.split(';');
        const eq = (pair as string).indexOf('=');
        jar.set((pair as string).slice(0, eq), (pair as string).slice(eq + 1));
      }
    };
    const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    let url = new URL(authUrl);
    let body: string | undefined;
    for (let hop = 0; hop < 20; hop++) {
      const res = await fetch(url, {
        method: body ? 'POST' : 'GET',
        redirect: 'manual',
        headers: {
          cookie: cookie(),
          ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        },
        ...(body ? { body } : {}),
      });
      remember(res);
      body = undefined;
      const location = res.headers.get('location');
      if (location) {
        const next = new URL(location, url);
        if (next.href.startsWith(CALLBACK)) return next;
        url = next;
        continue;
      }
      const html = await res.text();
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
      if (!action) throw new Error(`OP page without a form (${res.status}): ${html.slice(0, 300)}`);
      url = new URL(action.replace(/&amp;/g, '&'), url);
      body = html.includes('name="login"')
        ? new URLSearchParams({ prompt: 'login', login, password: 'any' }).toString()
        : new URLSearchParams({ prompt: 'consent' }).toString();
    }
    throw new Error('too many hops at the OP');
  }

  const gw = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${s.pc.gatewayUrl}${path}`, { redirect: 'manual', headers });
  const toGateway = (u: URL) => `${u.pathname}${u.search}`;
  const cookieValue = (res: Response, name: string) =>
    res.headers
      .getSetCookie()
      .map((c) => c.split(';')[0] as string)
      .find((c) => c.startsWith(`${name}=`));

  async function federatedLogin(login: string, returnTo = '/app/home') {
    const start = await gw(`/auth/federated/corp/start?return_to=${encodeURIComponent(returnTo)}`);
    expect(start.status).toBe(302);
    const authUrl = start.headers.get('location') as string;
    const flow = cookieValue(start, '__Secure-portcullis-fed') as string;
    expect(start.headers.getSetCookie()[0]).toMatch(/HttpOnly; Secure; SameSite=Lax$/);
    const callback = await throughOp(authUrl, login);
    const done = await gw(toGateway(callback), { cookie: flow });
    return { authUrl, flow, callback, done };
  }

  it('code flow with PKCE, state and nonce; the user is provisioned with roles mapped from the OP groups', async () => {
    const { authUrl, done } = await federatedLogin('ana');
    const params = new URL(authUrl).searchParams;
    expect(params.get('code_challenge_method')).toBe('S256');
    expect(params.get('state')).toBeTruthy();
    expect(params.get('nonce')).toBeTruthy();
    expect(params.get('redirect_uri')).toBe(CALLBACK);
    expect(done.status).toBe(302);
    expect(done.headers.get('location')).toBe('/app/home');
    const refresh = cookieValue(done, '__Secure-portcullis-rt') as string;
    expect(refresh).toBeTruthy();
    // And the browser session cookie, for routes that take it (test/browser-session.test.ts).
    expect(cookieValue(done, '__Host-portcullis-session')).toMatch(/^__Host-portcullis-session=v1\./);

    const tokens = await (
      await fetch(`${s.pc.gatewayUrl}/auth/refresh`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', cookie: refresh },
        body: '{}',
      })
    ).json();
    const claims = JSON.parse(
      Buffer.from((tokens.access_token as string).split('.')[1] as string, 'base64url').toString(),
    );
    expect(claims.roles.sort()).toEqual(['admin', 'viewer']);
    expect(claims.amr).toEqual(['fed']);
    const user = await s.pc.core.store.users.findByLogin('corp:ana');
    expect(user).toMatchObject({
      email: 'ana@corp.test',
      displayName: 'Ana Example',
      passwordHash: '!federated',
    });
    expect(
      (
        await fetch(`${s.pc.gatewayUrl}/api/admin/x`, {
          headers: { authorization: `Bearer ${tokens.access_token}` },
        })
      ).status,
    ).toBe(200);
    // No password login for a federated user.
    expect((await s.login('corp:ana', '!federated')).status).toBe(401);
  });

  it('a second login finds the same local user (linked by issuer + subject) and syncs its roles', async () => {
    await federatedLogin('bo');
    const first = await s.pc.core.store.users.findByLogin('corp:bo');
    expect(first?.roles).toEqual(['viewer']);
    await federatedLogin('bo');
    const all = (await s.pc.core.store.users.list()).filter((u) => u.username.startsWith('corp:bo'));
    expect(all).toHaveLength(1);
  });

  it("refuses a callback without this browser's flow cookie, with a tampered state, or twice", async () => {
    const start = await gw('/auth/federated/corp/start');
    const flow = cookieValue(start, '__Secure-portcullis-fed') as string;
    const callback = await throughOp(start.headers.get('location') as string, 'cy');
    expect((await gw(toGateway(callback))).status).toBe(400); // no cookie: login CSRF refused
    const tampered = new URL(callback);
    tampered.searchParams.set('state', 'not-the-state');
    expect((await gw(toGateway(tampered), { cookie: flow })).status).toBe(401);
    // The refused attempts never reached the OP, so the genuine callback still works — once: a replay
    // of the same code is refused by the OP's token endpoint.
    expect((await gw(toGateway(callback), { cookie: flow })).status).toBe(302);
    expect((await gw(toGateway(callback), { cookie: flow })).status).toBe(401);
  });

  it('return_to must stay on our origin (or an allowed one): no open redirect', async () => {
    for (const bad of [
      'https://evil.example/',
      '//evil.example/x',
      '/\\evil.example',
      '/\t/evil.example',
      '/\n/evil',
      'javascript:alert(1)',
    ]) {
      const res = await gw(`/auth/federated/corp/start?return_to=${encodeURIComponent(bad)}`);
      expect(res.status, bad).toBe(400);
    }
    expect((await gw(`/auth/federated/corp/start?return_to=${encodeURIComponent(`${OUR}/ok`)}`)).status).toBe(
      302,
    );
    expect((await gw('/auth/federated/nope/start')).status).toBe(404);
    // The browser sign-in page links to each provider, keeping return_to.
    expect(await (await gw('/auth/login?return_to=%2Fx')).text()).toContain(
      'href="/auth/federated/corp/start?return_to=%2Fx">Sign in with corp</a>',
    );
  });
});
