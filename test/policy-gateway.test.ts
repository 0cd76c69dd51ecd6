import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/index.js';
import { defineConfig, parseConfigText } from '../src/config/index.js';
import { captureIO, type Stack, startStack, tempDir, testConfig, writeConfigFile } from './helpers.js';

/** The policy engine behind the real gateway: named actions, step-up, /v1/authorize, reload. */
describe('policy at the gateway', () => {
  let s: Stack;
  let viewer: string;
  let admin: string;
  beforeAll(async () => {
    s = await startStack({
      routes: [
        {
          id: 'orders',
          path: '/api/orders',
          methods: ['GET', 'POST'],
          upstream: 'app',
          actions: { GET: 'orders:read', POST: 'orders:write' },
          resourceType: 'Order',
        },
        { id: 'order', path: '/api/orders/:id', methods: ['GET', 'DELETE'], upstream: 'app' },
        { id: 'admin', path: '/api/admin/*', methods: ['GET', 'POST'], upstream: 'app' },
      ],
      policy: {
        schema: {
          resourceTypes: { Order: { ownerId: 'string', total: 'int' }, Report: { department: 'string' } },
        },
        roles: {
          viewer: { permissions: ['orders:read'] },
          admin: { includes: ['viewer'], permissions: ['orders:*'] },
        },
        rules: [
          { id: 'read-one', routes: ['order'], methods: ['GET'], roles: ['viewer'] },
          {
            id: 'delete-needs-mfa',
            routes: ['order'],
            methods: ['DELETE'],
            roles: ['admin'],
            require: { mfa: true },
          },
          { id: 'admin-area', routes: ['admin'], roles: ['admin'], require: { maxAge: '1h' } },
          {
            id: 'cancel-own',
            types: ['Order'],
            actions: ['orders:cancel'],
            when: 'resource.ownerId == principal.id',
          },
          {
            id: 'no-big-cancel',
            effect: 'deny',
            types: ['Order'],
            actions: ['orders:cancel'],
            when: 'resource.total > 1000',
          },
          {
            id: 'dept-reports',
            groups: ['engineering'],
            types: ['Report'],
            actions: ['reports:read'],
            when: 'principal.department == resource.department',
          },
        ],
      },
    });
    viewer = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
    admin = (await s.login(s.users.admin.username, s.users.admin.password)).body.access_token as string;
  });
  afterAll(() => s.close());

  const call = (method: string, path: string, token: string, body?: unknown) =>
    fetch(`${s.pc.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
  const decisions = async (type: string) => {
    await s.pc.core.audit.flush();
    const out: Record<string, unknown>[] = [];
    for await (const r of s.pc.core.store.audit.scan()) if (r.type === type) out.push(JSON.parse(r.data));
    return out;
  };

  it("authorizes the route's named action through role permissions (and inherited ones)", async () => {
    expect((await call('GET', '/api/orders', viewer)).status).toBe(200);
    expect((await call('HEAD', '/api/orders', viewer)).status).toBe(200);
    const refused = await call('POST', '/api/orders', viewer, {});
    expect(refused.status).toBe(403);
    expect((await refused.json()).error.code).toBe('forbidden');
    expect((await call('POST', '/api/orders', admin, {})).status).toBe(200);
    const recorded = await decisions('gateway.decision');
    expect(recorded.filter((d) => d.route === 'orders').map((d) => [d.method, d.outcome, d.ruleIds])).toEqual(
      [
        ['GET', 'allow', ['role:viewer']],
        ['HEAD', 'allow', ['role:viewer']],
        ['POST', 'deny', []],
        ['POST', 'allow', ['role:admin']],
      ],
    );
  });

  it('answers a challenge with 401 step_up_required and an RFC 9470 WWW-Authenticate, and logs it', async () => {
    const res = await call('DELETE', '/api/orders/7', admin);
    expect(res.status).toBe(401);
    expect((await res.json()).error.code).toBe('step_up_required');
    expect(res.headers.get('www-authenticate')).toBe(
      'Bearer error="insufficient_user_authentication", error_description="A fresh or stronger sign-in is required", acr_values="mfa"',
    );
    expect(s.upstream.received.some((r) => r.method === 'DELETE')).toBe(false);
    // maxAge is met by a fresh login (the token carries auth_time).
    expect((await call('GET', '/api/admin/x', admin)).status).toBe(200);
    const recorded = await decisions('gateway.decision');
    expect(recorded.find((d) => d.method === 'DELETE')).toMatchObject({
      outcome: 'challenge',
      ruleIds: ['delete-needs-mfa'],
      code: 'step_up_required',
    });
    const metrics = await (await fetch(`${s.pc.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_decisions_total\{[^}]*outcome="challenge"[^}]*\} 1/);
  });

  it("POST /v1/authorize decides for the caller's token, singly and in batches, and audits each decision", async () => {
    const me = await (await call('GET', '/api/orders', viewer)).headers.get('x-request-id');
    expect(me).toBeTruthy();
    const sub = JSON.parse(Buffer.from(viewer.split('.')[1] as string, 'base64url').toString()).sub as string;
    const one = await call('POST', '/v1/authorize', viewer, {
      action: 'orders:cancel',
      resource: { type: 'Order', id: 'o1', attributes: { ownerId: sub, total: 20 } },
    });
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual({
      decision: 'allow',
      ruleIds: ['cancel-own'],
      reason: 'allowed by rule cancel-own',
    });

    const batch = await call('POST', '/v1/authorize', viewer, {
      requests: [
        {
          action: 'orders:cancel',
          resource: { type: 'Order', id: 'o2', attributes: { ownerId: 'someone-else', total: 20 } },
        },
        {
          action: 'orders:cancel',
          resource: { type: 'Order', id: 'o3', attributes: { ownerId: sub, total: 5000 } },
        },
        { action: 'orders:read', resource: { type: 'Order', id: 'o4' } },
      ],
    });
    expect(batch.status).toBe(200);
    expect(
      (await batch.json()).results.map((r: { decision: string; ruleIds: string[] }) => [
        r.decision,
        r.ruleIds,
      ]),
    ).toEqual([
      ['deny', []],
      ['deny', ['no-big-cancel']],
      ['allow', ['role:viewer']],
    ]);
    const recorded = await decisions('authz.decision');
    expect(recorded.map((d) => [d.resourceId, d.outcome])).toEqual([
      ['o1', 'allow'],
      ['o2', 'deny'],
      ['o3', 'deny'],
      ['o4', 'allow'],
    ]);
  });

  it('user groups and attributes travel in our access token and reach policy conditions', async () => {
    await s.pc.core.identity.createUser({
      username: 'dora',
      password: 'dora-long-password-1',
      roles: [],
      groups: ['engineering'],
      attributes: { department: 'eng', clearance: 3 },
    });
    const token = (await s.login('dora', 'dora-long-password-1')).body.access_token as string;
    const claims = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString());
    expect(claims).toMatchObject({ groups: ['engineering'], attrs: { department: 'eng', clearance: 3 } });
    const ask = async (department: string, who = token) =>
      (
        await (
          await call('POST', '/v1/authorize', who, {
            action: 'reports:read',
            resource: { type: 'Report', attributes: { department } },
          })
        ).json()
      ).decision;
    expect(await ask('eng')).toBe('allow');
    expect(await ask('sales')).toBe('deny');
    expect(await ask('eng', viewer)).toBe('deny'); // not in the group
  });

  it('POST /v1/authorize refuses anonymous callers, bad bodies and principals smuggled in the body', async () => {
    const anon = await fetch(`${s.pc.gatewayUrl}/v1/authorize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ action: 'orders:read' }),
    });
    expect(anon.status).toBe(401);
    const smuggled = await call('POST', '/v1/authorize', viewer, {
      action: 'orders:write',
      principal: { id: 'x', roles: ['admin'] },
    });
    expect(smuggled.status).toBe(400);
    expect((await smuggled.json()).error.code).toBe('invalid_body');
    const tooMany = await call('POST', '/v1/authorize', viewer, {
      requests: Array.from({ length: 101 }, () => ({ action: 'orders:read' })),
    });
    expect(tooMany.status).toBe(400);
    expect((await call('GET', '/v1/authorize', viewer)).status).toBe(405);
  });
});

describe('policy reload', () => {
  it('swaps a valid new policy at once and keeps the last good one when the new one does not load', async () => {
    const s = await startStack();
    try {
      const { dir } = tempDir();
      const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
        .access_token as string;
      const get = async () =>
        (await fetch(`${s.pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${token}` } }))
          .status;
      expect(await get()).toBe(200);

      const policies = join(dir, 'policies');
      mkdirSync(policies);
      writeFileSync(
        join(policies, 'deny.yaml'),
        'rules:\n  - id: freeze\n    effect: deny\n    roles: [viewer]\n',
      );
      const base = testConfig(s.dataDir, s.upstream.url);
      const yaml = (await import('yaml')).stringify({
        ...base,
        policy: { ...base.policy, files: ['./policies'] },
      });
      const file = join(dir, 'portcullis.yaml');
      writeFileSync(file, yaml);
      expect(await s.pc.reload(parseConfigText(yaml, file))).toMatchObject({ ok: true });
      expect(await get()).toBe(403);

      // A typo in an attribute of a declared schema: refused with file and line, the running policy stays.
      writeFileSync(
        join(policies, 'deny.yaml'),
        'rules:\n  - id: freeze\n    effect: deny\n    roles: [viewer]\n  - id: typo\n    when: principal.deparment == "x"\n',
      );
      const withSchema = (await import('yaml')).stringify({
        ...base,
        policy: { ...base.policy, files: ['./policies'], schema: { principal: { department: 'string' } } },
      });
      const result = await s.pc.reload(parseConfigText(withSchema, file));
      expect(result).toMatchObject({ ok: false });
      expect((result as { error: string }).error).toContain(`${join(policies, 'deny.yaml')}:6:`);
      expect((result as { error: string }).error).toContain(
        'principal.deparment is not a declared attribute',
      );
      expect(await get()).toBe(403);

      writeFileSync(join(policies, 'deny.yaml'), 'rules: []\n');
      expect(await s.pc.reload(parseConfigText(yaml, file))).toMatchObject({ ok: true });
      expect(await get()).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('refuses to start with a policy that does not compile', async () => {
    const { dir, cleanup } = tempDir();
    const { startPortcullis } = await import('../src/index.js');
    const loaded = defineConfig(
      testConfig(dir, 'http://127.0.0.1:1', { policy: { rules: [{ id: 'bad', when: 'principal.id +' }] } }),
    );
    await expect(startPortcullis(loaded)).rejects.toThrow(/rule bad\.when/);
    cleanup();
  });
});

describe('portcullis policy (CLI)', () => {
  it('check prints warnings; explain shows each rule and condition value; test exits 0 on pass and 1 on failure', async () => {
    const { dir, cleanup } = tempDir();
    try {
      mkdirSync(join(dir, 'policies'));
      const file = await writeConfigFile(dir, 'http://127.0.0.1:1', {
        policy: {
          files: ['./policies'],
          schema: { principal: { clearance: 'int' }, resource: { level: 'int' } },
          rules: [
            {
              id: 'cleared',
              routes: ['orders'],
              when: 'principal.clearance >= resource.level && resource.level < 5',
            },
            { id: 'never', when: 'false' },
          ],
        },
      });
      writeFileSync(
        join(dir, 'policies', 'orders.test.yaml'),
        `tests:
  - name: cleared reader
    input:
      principal: { id: u1, attributes: { clearance: 3 } }
      action: GET
      resource: { route: orders, attributes: { level: 2 } }
    expect: { decision: allow, rules: [cleared] }
  - name: uncleared reader
    input:
      principal: { id: u2, attributes: { clearance: 1 } }
      action: GET
      resource: { route: orders, attributes: { level: 2 } }
    expect: deny
`,
      );
      const check = captureIO();
      expect(await runCli(['policy', 'check', '--config', file], check.io)).toBe(0);
      expect(check.err()).toMatch(/warning: .*portcullis\.yaml:\d+:\d+: rule never: can never match/);
      expect(await runCli(['policy', 'check', '--config', file, '--strict'], captureIO().io)).toBe(1);

      const input = join(dir, 'request.json');
      writeFileSync(
        input,
        JSON.stringify({
          principal: { id: 'u2', attributes: { clearance: 1 } },
          action: 'GET',
          resource: { route: 'orders', attributes: { level: 2 } },
        }),
      );
      const explain = captureIO();
      expect(await runCli(['policy', 'explain', '--config', file, '--input', input], explain.io)).toBe(0);
      expect(explain.out()).toBe(
        [
          'decision: deny — no rule allows this request (deny by default)',
          '✗ cleared (allow): condition false',
          '    principal.clearance >= resource.level && resource.level < 5  → false',
          '      principal.clearance >= resource.level  → false',
          '      resource.level < 5  → true',
          '',
        ].join('\n'),
      );

      const pass = captureIO();
      expect(await runCli(['policy', 'test', '--config', file], pass.io)).toBe(0);
      expect(pass.out()).toContain('2 passed, 0 failed (1 file(s))');

      writeFileSync(
        join(dir, 'policies', 'wrong.test.yaml'),
        `tests:
  - name: expects the wrong thing
    input:
      principal: { id: u2, attributes: { clearance: 1 } }
      action: GET
      resource: { route: orders, attributes: { level: 2 } }
    expect: allow
`,
      );
      const fail = captureIO();
      expect(await runCli(['policy', 'test', '--config', file], fail.io)).toBe(1);
      expect(fail.out()).toMatch(
        /FAIL {2}expects the wrong thing {2}\(.*wrong\.test\.yaml:2\)\n {6}expected allow, got deny by \[\]\n {6}decision: deny/,
      );
      expect(fail.out()).toContain('2 passed, 1 failed (2 file(s))');

      const bad = captureIO();
      writeFileSync(input, JSON.stringify({ principal: { id: 'u' }, action: 'GET', extra: 1 }));
      expect(await runCli(['policy', 'explain', '--config', file, '--input', input], bad.io)).toBe(1);
      expect(bad.err()).toMatch(/Unrecognized key/);
    } finally {
      cleanup();
    }
  });

  it('the demo policy ships with tests, and they pass', async () => {
    const io = captureIO({ env: { ...process.env } });
    const code = await runCli(['policy', 'test', '--config', 'portcullis.example.yaml'], io.io);
    expect(io.err()).toBe('');
    expect(code).toBe(0);
    expect(io.out()).toMatch(/\d+ passed, 0 failed/);
  });
});

describe('explicitly public routes', () => {
  it('need no token and no rule, carry no identity assertion, strip spoofed identity headers, and are audited', async () => {
    const s = await startStack({
      routes: [
        {
          id: 'health',
          path: '/healthz',
          methods: ['GET'],
          upstream: 'app',
          public: true,
          rateLimit: { limit: 2, window: '1m' },
        },
        { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
      ],
      policy: { rules: [{ id: 'read', routes: ['orders'], roles: ['viewer'] }] },
    });
    try {
      const res = await fetch(`${s.pc.gatewayUrl}/healthz`, {
        headers: { 'x-portcullis-assertion': 'forged', 'x-portcullis-subject': 'admin' },
      });
      expect(res.status).toBe(200);
      const got = s.upstream.received.at(-1);
      expect(got?.headers['x-portcullis-assertion']).toBeUndefined();
      expect(got?.headers['x-portcullis-subject']).toBeUndefined();
      expect((await fetch(`${s.pc.gatewayUrl}/api/orders`)).status).toBe(401); // the others still need a token
      // Limited per client address.
      expect((await fetch(`${s.pc.gatewayUrl}/healthz`)).status).toBe(200);
      expect((await fetch(`${s.pc.gatewayUrl}/healthz`)).status).toBe(429);
      await s.pc.core.audit.flush();
      const recorded: Record<string, unknown>[] = [];
      for await (const r of s.pc.core.store.audit.scan())
        if (r.type === 'gateway.decision' && JSON.parse(r.data).route === 'health')
          recorded.push(JSON.parse(r.data));
      expect(recorded.map((d) => [d.outcome, d.ruleIds, d.sub])).toEqual([
        ['allow', ['public'], null],
        ['allow', ['public'], null],
        ['deny', ['public'], null],
      ]);
    } finally {
      await s.close();
    }
  });
});
