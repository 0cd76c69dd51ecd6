import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { captureIO, type Stack, startStack, tempDir, writeConfigFile } from './helpers.js';

const ISSUER = 'http://portcullis.test';
const TOKEN_ENDPOINT = `${ISSUER}/oauth2/token`;

/** Service accounts (client credentials), introspection, revocation, discovery, userinfo — real gateway. */
describe('OAuth 2.0 endpoints', () => {
  let s: Stack;
  let billingSecret: string;
  let introspectorSecret: string;
  let keyPair: Awaited<ReturnType<typeof generateKeyPair>>;
  beforeAll(async () => {
    s = await startStack({
      policy: {
        rules: [
          { id: 'read-orders', routes: ['orders', 'order'], methods: ['GET'], roles: ['viewer', 'admin'] },
          {
            id: 'billing-reads-orders',
            services: ['spiffe://prod.test/ns/billing/sa/*'],
            routes: ['orders'],
            methods: ['GET'],
          },
        ],
      },
    });
    billingSecret = (
      await s.pc.core.clients.create({
        name: 'billing',
        scopes: ['orders.read', 'orders.write'],
        audiences: ['portcullis', 'inventory-api'],
        spiffeId: 'spiffe://prod.test/ns/billing/sa/worker',
      })
    ).secret as string;
    introspectorSecret = (await s.pc.core.clients.create({ name: 'gatekeeper', scopes: ['introspect'] }))
      .secret as string;
    keyPair = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(keyPair.publicKey)), kid: 'k1', alg: 'ES256' };
    await s.pc.core.clients.create({ name: 'signer', scopes: ['orders.read'], jwks: { keys: [jwk] } });
  });
  afterAll(() => s.close());

  const form = async (path: string, params: Record<string, string>, headers: Record<string, string> = {}) => {
    const res = await fetch(`${s.pc.gatewayUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams(params).toString(),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
  };
  const basic = (id: string, secret: string) => ({
    authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`,
  });
  const claims = (jwt: string) =>
    JSON.parse(Buffer.from(jwt.split('.')[1] as string, 'base64url').toString());
  const assertion = (overrides: Record<string, unknown> = {}, key = keyPair.privateKey, expSec = 60) =>
    new SignJWT({ jti: crypto.randomUUID(), ...overrides })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer('signer')
      .setSubject('signer')
      .setAudience(TOKEN_ENDPOINT)
      .setIssuedAt()
      .setExpirationTime(`${expSec}s`)
      .sign(key);

  it('publishes authorization server metadata (RFC 8414) and the OIDC discovery document', async () => {
    for (const path of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
      const doc = await (await fetch(`${s.pc.gatewayUrl}${path}`)).json();
      expect(doc).toMatchObject({
        issuer: ISSUER,
        jwks_uri: `${ISSUER}/.well-known/jwks.json`,
        token_endpoint: TOKEN_ENDPOINT,
        introspection_endpoint: `${ISSUER}/oauth2/introspect`,
        revocation_endpoint: `${ISSUER}/oauth2/revoke`,
        userinfo_endpoint: `${ISSUER}/oauth2/userinfo`,
        grant_types_supported: ['client_credentials', 'refresh_token'],
        token_endpoint_auth_methods_supported: [
          'client_secret_basic',
          'client_secret_post',
          'private_key_jwt',
        ],
      });
    }
  });

  it('client credentials with a secret (Basic or in the body): a short, audience-bound token with granted scopes only', async () => {
    const viaBasic = await form(
      '/oauth2/token',
      { grant_type: 'client_credentials', scope: 'orders.read' },
      basic('billing', billingSecret),
    );
    expect(viaBasic.status).toBe(200);
    expect(viaBasic.headers.get('cache-control')).toBe('no-store');
    expect(viaBasic.body).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: 'orders.read' });
    const c = claims(viaBasic.body.access_token);
    expect(c).toMatchObject({
      iss: ISSUER,
      sub: 'billing',
      client_id: 'billing',
      aud: 'portcullis',
      scope: 'orders.read',
      spiffe_id: 'spiffe://prod.test/ns/billing/sa/worker',
    });
    expect(c.exp - c.iat).toBe(300);
    expect(c.sid).toBeUndefined();

    const viaPost = await form('/oauth2/token', {
      grant_type: 'client_credentials',
      client_id: 'billing',
      client_secret: billingSecret,
      audience: 'inventory-api',
    });
    expect(viaPost.status).toBe(200);
    expect(claims(viaPost.body.access_token)).toMatchObject({
      aud: 'inventory-api',
      scope: 'orders.read orders.write',
    });

    expect(
      await form(
        '/oauth2/token',
        { grant_type: 'client_credentials', scope: 'admin' },
        basic('billing', billingSecret),
      ),
    ).toMatchObject({
      status: 400,
      body: { error: 'invalid_scope' },
    });
    expect(
      await form(
        '/oauth2/token',
        { grant_type: 'client_credentials', audience: 'payroll' },
        basic('billing', billingSecret),
      ),
    ).toMatchObject({ status: 400, body: { error: 'invalid_target' } });
    const wrong = await form(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      basic('billing', 'not-the-secret'),
    );
    expect(wrong).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(wrong.headers.get('www-authenticate')).toBe('Basic realm="portcullis"');
    expect(
      (await form('/oauth2/token', { grant_type: 'client_credentials' }, basic('nobody', 'x'))).status,
    ).toBe(401);
    const malformed = await form(
      '/oauth2/token',
      { grant_type: 'client_credentials' },
      { authorization: `Basic ${Buffer.from('%zz:%zz').toString('base64')}` },
    );
    expect(malformed).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(
      await form(
        '/oauth2/token',
        { grant_type: 'client_credentials', client_id: 'billing', client_secret: billingSecret },
        basic('billing', billingSecret),
      ),
    ).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(
      await form('/oauth2/token', { grant_type: 'password' }, basic('billing', billingSecret)),
    ).toMatchObject({
      status: 400,
      body: { error: 'unsupported_grant_type' },
    });
    const json = await fetch(`${s.pc.gatewayUrl}/oauth2/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(await json.json()).toMatchObject({ error: 'invalid_request' });
  });

  it('private_key_jwt (RFC 7523): signed by the registered key, right aud, at most 5 minutes, single-use jti', async () => {
    const ok = await assertion();
    const params = (a: string) => ({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: a,
    });
    const first = await form('/oauth2/token', params(ok));
    expect(first.status).toBe(200);
    expect(claims(first.body.access_token)).toMatchObject({ sub: 'signer', scope: 'orders.read' });
    expect(await form('/oauth2/token', params(ok))).toMatchObject({
      status: 401,
      body: { error: 'invalid_client', error_description: expect.stringContaining('replayed') },
    });
    expect(
      (await form('/oauth2/token', params(await assertion({}, keyPair.privateKey, 600)))).body
        .error_description,
    ).toMatch(/lifetime|too far/);
    const other = await generateKeyPair('ES256');
    expect((await form('/oauth2/token', params(await assertion({}, other.privateKey)))).status).toBe(401);
    const wrongAud = await new SignJWT({ jti: crypto.randomUUID() })
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer('signer')
      .setSubject('signer')
      .setAudience('https://elsewhere.example/token')
      .setIssuedAt()
      .setExpirationTime('60s')
      .sign(keyPair.privateKey);
    expect((await form('/oauth2/token', params(wrongAud))).body.error_description).toMatch(/aud/);
    const noJti = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer('signer')
      .setSubject('signer')
      .setAudience(TOKEN_ENDPOINT)
      .setIssuedAt()
      .setExpirationTime('60s')
      .sign(keyPair.privateKey);
    expect((await form('/oauth2/token', params(noJti))).status).toBe(401);
  });

  it('a service token at the gateway: microsegmentation by its SPIFFE ID, and it dies with its account', async () => {
    const token = (
      await form('/oauth2/token', { grant_type: 'client_credentials' }, basic('billing', billingSecret))
    ).body.access_token;
    const call = (method: string, path: string, t: string) =>
      fetch(`${s.pc.gatewayUrl}${path}`, { method, headers: { authorization: `Bearer ${t}` } }).then(
        (r) => r.status,
      );
    expect(await call('GET', '/api/orders', token)).toBe(200);
    expect(s.upstream.received.at(-1)?.headers['x-portcullis-assertion']).toBeTruthy();
    expect(await call('POST', '/api/orders', token)).toBe(403);
    // A service token is not a person's session: no session or MFA endpoints for it.
    expect(await call('GET', '/auth/sessions', token)).toBe(403);
    expect(await call('GET', '/api/orders/1', token)).toBe(403);
    const signerToken = (
      await form('/oauth2/token', {
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(),
      })
    ).body.access_token;
    expect(await call('GET', '/api/orders', signerToken)).toBe(403); // no SPIFFE ID, no rule

    await s.pc.core.store.serviceAccounts.update('billing', { status: 'suspended' });
    expect(await call('GET', '/api/orders', token)).toBe(401);
    expect(
      (await form('/oauth2/token', { grant_type: 'client_credentials' }, basic('billing', billingSecret)))
        .status,
    ).toBe(401);
    await s.pc.core.store.serviceAccounts.update('billing', { status: 'active' });
  });

  it('introspection (RFC 7662): only for clients with the introspect scope; active reflects sessions and accounts', async () => {
    const user = (await s.login(s.users.viewer.username, s.users.viewer.password)).body;
    const ask = (token: string, id = 'gatekeeper', secret = introspectorSecret) =>
      form('/oauth2/introspect', { token }, basic(id, secret));
    const live = await ask(user.access_token as string);
    expect(live.status).toBe(200);
    expect(live.body).toMatchObject({
      active: true,
      iss: ISSUER,
      aud: 'portcullis',
      amr: ['pwd'],
      acr: 'aal1',
      token_type: 'Bearer',
    });
    const service = (
      await form(
        '/oauth2/token',
        { grant_type: 'client_credentials', audience: 'inventory-api' },
        basic('billing', billingSecret),
      )
    ).body.access_token;
    expect((await ask(service)).body).toMatchObject({
      active: true,
      client_id: 'billing',
      aud: 'inventory-api',
      scope: 'orders.read orders.write',
    });
    expect((await ask('garbage')).body).toEqual({ active: false });
    expect(await ask(user.access_token as string, 'billing', billingSecret)).toMatchObject({
      status: 403,
      body: { error: 'unauthorized_client' },
    });
    expect((await form('/oauth2/introspect', { token: 'x' })).status).toBe(401);

    // Revocation (RFC 7009) of the refresh token ends the session: the access token goes inactive too.
    expect((await form('/oauth2/revoke', { token: user.refresh_token as string })).status).toBe(200);
    expect((await ask(user.access_token as string)).body).toEqual({ active: false });
    expect(
      (
        await fetch(`${s.pc.gatewayUrl}/api/orders`, {
          headers: { authorization: `Bearer ${user.access_token}` },
        })
      ).status,
    ).toBe(401);
    expect((await form('/oauth2/revoke', { token: 'unknown-token' })).status).toBe(200);
  });

  it('the refresh_token grant works at the token endpoint too; userinfo answers for user tokens only', async () => {
    const user = (await s.login(s.users.admin.username, s.users.admin.password)).body;
    const refreshed = await form('/oauth2/token', {
      grant_type: 'refresh_token',
      refresh_token: user.refresh_token as string,
    });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.refresh_token).not.toBe(user.refresh_token);
    expect(
      (await form('/oauth2/token', { grant_type: 'refresh_token', refresh_token: 'nope' })).body,
    ).toMatchObject({ error: 'invalid_grant' });
    const info = await (
      await fetch(`${s.pc.gatewayUrl}/oauth2/userinfo`, {
        headers: { authorization: `Bearer ${refreshed.body.access_token}` },
      })
    ).json();
    expect(info).toMatchObject({ preferred_username: s.users.admin.username, roles: ['admin'], groups: [] });
    const service = (
      await form('/oauth2/token', { grant_type: 'client_credentials' }, basic('billing', billingSecret))
    ).body.access_token;
    expect(
      (await fetch(`${s.pc.gatewayUrl}/oauth2/userinfo`, { headers: { authorization: `Bearer ${service}` } }))
        .status,
    ).toBe(401);
  });
});

describe('portcullis service-account', () => {
  it('add (secret shown once, or keys), list, rotate-key', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const config = await writeConfigFile(dir, 'http://127.0.0.1:1');
      const run = async (...args: string[]) => {
        const io = captureIO();
        const code = await runCli(['service-account', ...args, '--config', config], io.io);
        return { code, out: io.out(), err: io.err() };
      };
      const added = await run(
        'add',
        'reports',
        '--scope',
        'reports.read',
        '--role',
        'reporter',
        '--spiffe-id',
        'spiffe://prod.test/ns/r/sa/x',
      );
      expect(added.code).toBe(0);
      expect(added.out).toMatch(/client_id=reports scopes=\[reports\.read\]/);
      expect(added.out).toMatch(/client secret \(shown once\): \S{40,}/);
      expect((await run('list')).out).toMatch(
        /^reports\tactive\tclient_secret\tscopes=\[reports\.read\]\troles=\[reporter\]\tspiffe:\/\/prod\.test\/ns\/r\/sa\/x\n$/,
      );
      expect((await run('rotate-key', 'reports')).out).toMatch(/new client secret/);
      expect((await run('add', 'reports', '--scope', 'x')).err).toMatch(/already exists/);
      expect((await run('add', 'noscope')).code).toBe(2);
    } finally {
      cleanup();
    }
  });
});
