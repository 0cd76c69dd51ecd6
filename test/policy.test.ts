import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, type ConfigInput, defineConfig, parseConfigText } from '../src/config/index.js';
import {
  type CompiledPolicy,
  compilePolicy,
  loadPolicy,
  type PolicyInput,
  type PolicyPrincipal,
  policySpec,
} from '../src/policy/index.js';
import { tempDir } from './helpers.js';

type Doc = NonNullable<ConfigInput['policy']>;
const compile = (doc: Doc): CompiledPolicy => {
  const parsed = defineConfig({
    identity: { issuer: 'http://p.test' },
    upstreams: { app: { url: 'http://127.0.0.1:1' } },
    routes: [{ id: 'orders', path: '/orders/*', methods: ['GET', 'POST', 'DELETE'], upstream: 'app' }],
    policy: doc,
  }).config.policy;
  return compilePolicy(policySpec(parsed));
};

const user = (
  id: string,
  roles: string[],
  attributes: Record<string, unknown> = {},
  extra: Partial<PolicyPrincipal> = {},
): PolicyPrincipal => ({
  id,
  roles,
  attributes,
  ...extra,
});
const req = (
  principal: PolicyPrincipal,
  action: string,
  resource: PolicyInput['resource'] = {},
  context: PolicyInput['context'] = {},
): PolicyInput => ({
  principal,
  action,
  resource,
  context,
});

describe('policy semantics', () => {
  it('denies by default, with no deciding rule', () => {
    const p = compile({ rules: [] });
    expect(p.decide(req(user('u1', ['admin']), 'GET'))).toMatchObject({ outcome: 'deny', ruleIds: [] });
  });

  it('allows by role and reports every allow rule that matched', () => {
    const p = compile({
      rules: [
        { id: 'a', roles: ['viewer'], actions: ['orders:read'] },
        { id: 'b', roles: ['viewer', 'editor'], actions: ['orders:*'] },
        { id: 'c', roles: ['editor'], actions: ['orders:read'] },
      ],
    });
    expect(p.decide(req(user('u', ['viewer']), 'orders:read'))).toMatchObject({
      outcome: 'allow',
      ruleIds: ['a', 'b'],
    });
    expect(p.decide(req(user('u', ['viewer']), 'orders:write'))).toMatchObject({
      outcome: 'allow',
      ruleIds: ['b'],
    });
    expect(p.decide(req(user('u', ['viewer']), 'invoices:read')).outcome).toBe('deny');
    expect(p.decide(req(user('u', []), 'orders:read')).outcome).toBe('deny');
  });

  it('lets any matching deny win over any allow, naming every deny that matched', () => {
    const p = compile({
      rules: [
        { id: 'allow-all', roles: ['admin'] },
        { id: 'no-delete', effect: 'deny', methods: ['DELETE'] },
        { id: 'no-contractor-delete', effect: 'deny', roles: ['contractor'], methods: ['DELETE'] },
      ],
    });
    expect(p.decide(req(user('u', ['admin']), 'GET')).outcome).toBe('allow');
    expect(p.decide(req(user('u', ['admin', 'contractor']), 'DELETE'))).toMatchObject({
      outcome: 'deny',
      ruleIds: ['no-delete', 'no-contractor-delete'],
    });
  });

  it('expands role inheritance: a rule for a role applies to every role that includes it', () => {
    const p = compile({
      roles: {
        employee: { permissions: ['docs:read'] },
        manager: { includes: ['employee'], permissions: ['docs:approve'] },
        director: { includes: ['manager'] },
      },
      rules: [{ id: 'emp-write', roles: ['employee'], actions: ['docs:write'] }],
    });
    const director = user('d', ['director']);
    expect(p.decide(req(director, 'docs:read'))).toMatchObject({
      outcome: 'allow',
      ruleIds: ['role:employee'],
    });
    expect(p.decide(req(director, 'docs:approve'))).toMatchObject({
      outcome: 'allow',
      ruleIds: ['role:manager'],
    });
    expect(p.decide(req(director, 'docs:write'))).toMatchObject({ outcome: 'allow', ruleIds: ['emp-write'] });
    expect(p.decide(req(user('e', ['employee']), 'docs:approve')).outcome).toBe('deny');
  });

  it('refuses a role inheritance cycle at load', () => {
    expect(() => compile({ roles: { a: { includes: ['b'] }, b: { includes: ['a'] } } })).toThrow(
      /cycle: a → b → a/,
    );
  });

  it('matches permission wildcards: orders:* and *', () => {
    const p = compile({ roles: { ops: { permissions: ['orders:*'] }, root: { permissions: ['*'] } } });
    expect(p.decide(req(user('o', ['ops']), 'orders:refund')).outcome).toBe('allow');
    expect(p.decide(req(user('o', ['ops']), 'ordersx:read')).outcome).toBe('deny');
    expect(p.decide(req(user('r', ['root']), 'anything:at-all')).outcome).toBe('allow');
  });

  it('evaluates ownership and relationship conditions', () => {
    const p = compile({
      schema: {
        principal: { department: 'string' },
        resourceTypes: { Doc: { ownerId: 'string', department: 'string' } },
      },
      rules: [
        { id: 'owner', types: ['Doc'], when: 'resource.ownerId == principal.id' },
        {
          id: 'dept-read',
          types: ['Doc'],
          actions: ['read'],
          when: 'principal.department == resource.department',
        },
      ],
    });
    const alice = user('alice', [], { department: 'eng' });
    const doc = (ownerId: string, department: string) => ({
      type: 'Doc',
      id: 'd1',
      attributes: { ownerId, department },
    });
    expect(p.decide(req(alice, 'write', doc('alice', 'sales')))).toMatchObject({
      outcome: 'allow',
      ruleIds: ['owner'],
    });
    expect(p.decide(req(alice, 'write', doc('bob', 'eng'))).outcome).toBe('deny');
    expect(p.decide(req(alice, 'read', doc('bob', 'eng')))).toMatchObject({
      outcome: 'allow',
      ruleIds: ['dept-read'],
    });
    expect(p.decide(req(alice, 'read', doc('alice', 'eng')))).toMatchObject({
      ruleIds: ['owner', 'dept-read'],
    });
  });

  it('turns an allow with an unmet obligation into a challenge that says what is required', () => {
    const now = Date.UTC(2026, 0, 1, 12);
    const p = compile({
      rules: [
        {
          id: 'delete-needs-mfa',
          roles: ['admin'],
          methods: ['DELETE'],
          require: { mfa: true, maxAge: '5m' },
        },
        { id: 'read', roles: ['admin'], methods: ['GET'] },
      ],
    });
    const admin = user('a', ['admin']);
    const del = (auth: NonNullable<NonNullable<PolicyInput['context']>['authentication']>) =>
      p.decide({
        principal: admin,
        action: 'DELETE',
        resource: {},
        context: { time: now, authentication: auth },
      });
    expect(del({ amr: ['pwd'], authTime: now - 60_000 })).toEqual({
      outcome: 'challenge',
      ruleIds: ['delete-needs-mfa'],
      reason: 'step-up required: multi-factor authentication',
      requirements: { mfa: true },
    });
    expect(del({ amr: ['pwd', 'otp'], authTime: now - 600_000 })).toMatchObject({
      outcome: 'challenge',
      requirements: { maxAge: 300_000 },
    });
    expect(del({ amr: ['pwd', 'otp'], authTime: now - 60_000 })).toMatchObject({
      outcome: 'allow',
      ruleIds: ['delete-needs-mfa'],
    });
    expect(p.decide(req(admin, 'GET')).outcome).toBe('allow');
  });

  it('asks for the least of several obligations, and a deny still beats a challenge', () => {
    const p = compile({
      acrLevels: ['aal1', 'aal2', 'aal3'],
      rules: [
        { id: 'strong', roles: ['u'], require: { acr: 'aal3', mfa: true } },
        { id: 'medium', roles: ['u'], require: { acr: 'aal2' } },
        { id: 'blocked', effect: 'deny', roles: ['blocked'] },
      ],
    });
    expect(
      p.decide(req(user('x', ['u']), 'GET', {}, { authentication: { amr: ['pwd'], acr: 'aal1' } })),
    ).toMatchObject({
      outcome: 'challenge',
      ruleIds: ['strong', 'medium'],
      requirements: { acr: 'aal2' },
    });
    expect(
      p.decide(req(user('x', ['u']), 'GET', {}, { authentication: { amr: ['pwd'], acr: 'aal2' } })).outcome,
    ).toBe('allow');
    expect(p.decide(req(user('x', ['u', 'blocked']), 'GET')).outcome).toBe('deny');
  });

  it('fails closed on condition errors: a deny that cannot be evaluated matches, an allow does not', () => {
    const p = compile({
      rules: [
        { id: 'allow-if-tier', when: 'principal.tier == "gold"' },
        { id: 'deny-if-flagged', effect: 'deny', when: 'resource.flagged' },
      ],
    });
    // Both attributes missing: the deny's error counts as a match.
    const d = p.decide(req(user('u', [], {}), 'GET', { attributes: {} }));
    expect(d).toMatchObject({ outcome: 'deny', ruleIds: ['deny-if-flagged'] });
    expect(d.errors?.map((e) => e.ruleId)).toEqual(['deny-if-flagged']);
    const ok = p.decide(req(user('u', [], { tier: 'gold' }), 'GET', { attributes: { flagged: false } }));
    expect(ok).toMatchObject({ outcome: 'allow', ruleIds: ['allow-if-tier'] });
    const noTier = p.decide(req(user('u', [], {}), 'GET', { attributes: { flagged: false } }));
    expect(noTier).toMatchObject({ outcome: 'deny', ruleIds: [] });
    expect(noTier.errors?.[0]).toMatchObject({
      ruleId: 'allow-if-tier',
      message: expect.stringContaining('principal.tier'),
    });
  });

  it('a deny whose condition is not a bool (an open attribute holding 1) matches, with the error named', () => {
    const p = compile({
      rules: [{ id: 'all' }, { id: 'blocked', effect: 'deny', when: 'principal.blocked' }],
    });
    for (const v of [true, 1, 'yes']) {
      const d = p.decide(req(user('u', [], { blocked: v }), 'GET'));
      expect(d.outcome, String(v)).toBe('deny');
    }
    expect(p.decide(req(user('u', [], { blocked: 1 }), 'GET')).errors?.[0]?.message).toMatch(/not a bool/);
    expect(p.decide(req(user('u', [], { blocked: false }), 'GET')).outcome).toBe('allow');
  });

  it('matches users, groups, paths with parameters, routes, types and methods (HEAD as GET)', () => {
    const p = compile({
      rules: [
        { id: 'users', users: ['u7'], paths: ['/orders/:id'] },
        { id: 'groups', groups: ['auditors'], routes: ['orders'], methods: ['GET'] },
        { id: 'types', roles: ['r'], types: ['Invoice'] },
      ],
    });
    expect(p.decide(req(user('u7', []), 'GET', { path: '/orders/42' })).outcome).toBe('allow');
    expect(p.decide(req(user('u7', []), 'GET', { path: '/orders/42/items' })).outcome).toBe('deny');
    expect(p.decide(req(user('u8', []), 'GET', { path: '/orders/42' })).outcome).toBe('deny');
    const auditor = user('a', [], {}, { groups: ['auditors'] });
    expect(
      p.decide({
        principal: auditor,
        action: 'HEAD',
        resource: { route: 'orders' },
        request: { method: 'HEAD', path: '/orders/1' },
      }).outcome,
    ).toBe('allow');
    expect(
      p.decide({
        principal: auditor,
        action: 'POST',
        resource: { route: 'orders' },
        request: { method: 'POST', path: '/orders/1' },
      }).outcome,
    ).toBe('deny');
    expect(p.decide(req(user('x', ['r']), 'read', { type: 'Invoice' })).outcome).toBe('allow');
    expect(p.decide(req(user('x', ['r']), 'read', { type: 'Doc' })).outcome).toBe('deny');
  });

  it('microsegmentation: services by SPIFFE ID or pattern, per upstream route, method and path', () => {
    const p = compile({
      rules: [
        {
          id: 'billing-reads-orders',
          services: ['spiffe://prod.example/ns/billing/sa/*'],
          routes: ['orders'],
          methods: ['GET'],
          paths: ['/orders/*'],
        },
        { id: 'batch-anything', services: ['spiffe://prod.example/ns/batch/**'], routes: ['orders'] },
      ],
    });
    const svc = (spiffeId: string): PolicyPrincipal => ({
      id: spiffeId,
      kind: 'service',
      roles: [],
      spiffeId,
    });
    const call = (who: PolicyPrincipal, method: string, path: string) =>
      p.decide({
        principal: who,
        action: method,
        resource: { route: 'orders', path },
        request: { method, path },
      }).outcome;
    expect(call(svc('spiffe://prod.example/ns/billing/sa/worker'), 'GET', '/orders/1')).toBe('allow');
    expect(call(svc('spiffe://prod.example/ns/billing/sa/worker'), 'POST', '/orders/1')).toBe('deny');
    expect(call(svc('spiffe://prod.example/ns/billing/sa/a/b'), 'GET', '/orders/1')).toBe('deny');
    expect(call(svc('spiffe://prod.example/ns/shipping/sa/worker'), 'GET', '/orders/1')).toBe('deny');
    expect(call(svc('spiffe://prod.example/ns/batch/sa/x/y'), 'DELETE', '/orders/1')).toBe('allow');
    // A user whose id looks like a SPIFFE ID is not a service.
    expect(call({ id: 'spiffe://prod.example/ns/batch/sa/x', roles: [] }, 'GET', '/orders/1')).toBe('deny');
  });

  it('gives conditions the request context: time, ip, authentication, risk', () => {
    const p = compile({
      rules: [
        {
          id: 'office-hours-low-risk',
          when: 'context.hour >= 9 && context.hour < 17 && context.weekday != 0 && context.ip.startsWith("10.") && context.risk.score < 50 && "otp" in context.authentication.amr',
        },
      ],
    });
    const monday10 = Date.UTC(2026, 10, 30, 10); // a Monday
    const ctx = (time: number, score: number, amr: string[]) => ({
      time,
      ip: '10.1.2.3',
      risk: { score },
      authentication: { amr },
    });
    expect(p.decide(req(user('u', []), 'GET', {}, ctx(monday10, 10, ['pwd', 'otp']))).outcome).toBe('allow');
    expect(
      p.decide(req(user('u', []), 'GET', {}, ctx(monday10 + 8 * 3_600_000, 10, ['pwd', 'otp']))).outcome,
    ).toBe('deny');
    expect(
      p.decide(req(user('u', []), 'GET', {}, ctx(monday10 - 86_400_000, 10, ['pwd', 'otp']))).outcome,
    ).toBe('deny');
    expect(p.decide(req(user('u', []), 'GET', {}, ctx(monday10, 80, ['pwd', 'otp']))).outcome).toBe('deny');
    expect(p.decide(req(user('u', []), 'GET', {}, ctx(monday10, 10, ['pwd']))).outcome).toBe('deny');
  });

  it('gives conditions the device: present, trusted, compliant, posture; no device reads as absent, not an error', () => {
    const p = compile({
      rules: [
        { id: 'managed', roles: ['viewer'], when: 'device.trusted && device.compliant' },
        {
          id: 'no-old-macs',
          effect: 'deny',
          when: 'device.present && device.posture.os.name == "macos" && device.posture.os.version < "14"',
        },
      ],
    });
    const dev = (trusted: boolean, compliant: boolean, version = '14.5') => ({
      id: 'd1',
      trusted,
      compliant,
      via: 'dpop',
      posture: { os: { name: 'macos', version }, diskEncrypted: true },
    });
    const ask = (device?: PolicyInput['device']) =>
      p.decide({ ...req(user('u', ['viewer']), 'GET'), ...(device ? { device } : {}) });
    expect(ask(dev(true, true))).toMatchObject({ outcome: 'allow', ruleIds: ['managed'] });
    expect(ask(dev(true, false)).outcome).toBe('deny');
    expect(ask(dev(false, true)).outcome).toBe('deny');
    expect(ask()).toMatchObject({ outcome: 'deny', ruleIds: [] });
    expect(ask(dev(true, true, '13.6'))).toMatchObject({ outcome: 'deny', ruleIds: ['no-old-macs'] });
  });

  it('explains a decision: every rule considered, and each part of each condition with its value', () => {
    const p = compile({
      schema: { principal: { clearance: 'int' }, resource: { level: 'int' } },
      rules: [
        {
          id: 'clear',
          when: 'principal.clearance >= resource.level && !resource.level.startsWith("x")'.replace(
            ' && !resource.level.startsWith("x")',
            ' && resource.level < 5',
          ),
        },
        { id: 'nobody', users: ['z'] },
      ],
    });
    const e = p.explain(req(user('u', [], { clearance: 3 }), 'GET', { attributes: { level: 4 } }));
    expect(e.decision.outcome).toBe('deny');
    expect(e.rules).toEqual([
      {
        id: 'clear',
        effect: 'allow',
        applies: true,
        matched: false,
        condition: {
          expression: 'principal.clearance >= resource.level && resource.level < 5',
          value: false,
          parts: [
            { expression: 'principal.clearance >= resource.level', value: false, parts: [] },
            { expression: 'resource.level < 5', value: true, parts: [] },
          ],
        },
      },
      {
        id: 'nobody',
        effect: 'allow',
        applies: false,
        why: 'principal not named by the rule',
        matched: false,
      },
    ]);
  });
});

describe('policy load errors and warnings', () => {
  const yaml = (policy: string) => `identity:
  issuer: http://p.test
upstreams:
  app:
    url: http://127.0.0.1:1
routes:
  - id: orders
    path: /orders/*
    methods: [GET]
    upstream: app
policy:
${policy}`;

  it('names file, line and column of a condition that reads an undeclared attribute', () => {
    const loaded = parseConfigText(
      yaml(`  schema:
    principal: { department: string }
  rules:
    - id: dept
      when: principal.departmnet == "eng"
`),
      '/etc/portcullis.yaml',
    );
    let err: unknown;
    try {
      loadPolicy(loaded);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const issue = (err as ConfigError).issues[0];
    expect(issue).toMatchObject({
      file: '/etc/portcullis.yaml',
      line: 16,
      column: 13,
      path: 'rule dept.when',
    });
    expect(issue?.message).toMatch(
      /principal\.departmnet is not a declared attribute \(declared: .*department/,
    );
  });

  it('reports type errors and unknown acr levels together, each at its line', () => {
    const loaded = parseConfigText(
      yaml(`  rules:
    - id: a
      when: 'principal.id + 1 == 2'
    - id: b
      require: { acr: gold }
`),
      '/p.yaml',
    );
    try {
      loadPolicy(loaded);
      expect.unreachable();
    } catch (e) {
      const lines = (e as ConfigError).issues.map((i) => `${i.line}:${i.path}:${i.message}`);
      expect(lines).toEqual([
        expect.stringMatching(/^14:rule a\.when:.*overload/),
        expect.stringMatching(/^16:rule b\.require\.acr:unknown acr "gold"/),
      ]);
    }
  });

  it('warns (without refusing) about rules that can never match or are shadowed, and undeclared reads', () => {
    const loaded = parseConfigText(
      yaml(`  roles:
    viewer: {}
  rules:
    - id: never
      when: 1 > 2
    - id: wrong-method
      routes: [orders]
      methods: [POST]
    - id: typo-role
      roles: [veiwer]
    - id: block-contractors
      effect: deny
      roles: [contractor]
    - id: contractors-read
      roles: [contractor]
      methods: [GET]
    - id: open-attr
      when: resource.owner == principal.id
`),
      '/w.yaml',
    );
    const p = loadPolicy(loaded);
    expect(p.warnings.map((w) => `${w.line} ${w.ruleId}: ${w.message}`)).toEqual([
      '16 never: can never match: its condition is always false',
      '19 wrong-method: can never match: none of its methods is served by its routes',
      '21 typo-role: role "veiwer" is not declared in policy.roles (a typo would make this rule never match)',
      '24 block-contractors: role "contractor" is not declared in policy.roles (a typo would make this rule never match)',
      '25 contractors-read: shadowed: deny rule block-contractors always matches wherever this rule does',
      '26 contractors-read: role "contractor" is not declared in policy.roles (a typo would make this rule never match)',
      '29 open-attr: condition reads resource.owner, which the schema does not declare',
    ]);
    expect(p.decide(req(user('c', ['contractor']), 'GET')).outcome).toBe('deny');
  });

  it("knows the attributes external issuers' claims provide: no warning, no closed-schema error", () => {
    const issuers = (claims: string) => `issuers:
  idp:
    issuer: https://idp.test/
    audience: api
    jwksUrl: https://idp.test/jwks
    claims: ${claims}
`;
    const rule = `  rules:
    - id: tenant-a
      when: principal.tenant == 'a' && principal.email.endsWith('@a.test')
`;
    // Open schema: listed claims read without a warning; an unlisted one still warns.
    const open = loadPolicy(
      parseConfigText(
        `${issuers('[tenant, email]')}${yaml(`${rule}    - id: other\n      when: principal.team == 'x'\n`)}`,
        '/w.yaml',
      ),
    );
    expect(open.warnings.map((w) => `${w.ruleId}: ${w.message}`)).toEqual([
      'other: condition reads principal.team, which the schema does not declare',
    ]);
    const ok = user('u', [], { tenant: 'a', email: 'x@a.test' });
    expect(open.decide(req(ok, 'GET')).outcome).toBe('allow');
    expect(open.decide(req(user('u', [], { tenant: 'b', email: 'x@a.test' }), 'GET')).outcome).toBe('deny');
    expect(open.decide(req(user('u', [], { email: 'x@a.test' }), 'GET')).outcome).toBe('deny');

    // Closed schema: the claims are known (dyn) beside the declared attributes…
    const closed = loadPolicy(
      parseConfigText(
        `${issuers('[tenant, email]')}${yaml(`  schema:\n    principal: { department: string }\n${rule}`)}`,
        '/w.yaml',
      ),
    );
    expect(closed.warnings).toEqual([]);
    expect(closed.decide(req(ok, 'GET')).outcome).toBe('allow');
    // …and without the issuer's list, the same closed schema refuses the condition (file, line).
    expect(() =>
      loadPolicy(
        parseConfigText(
          `${issuers('[email]')}${yaml(`  schema:\n    principal: { department: string }\n${rule}`)}`,
          '/w.yaml',
        ),
      ),
    ).toThrow(/w\.yaml:\d+.*tenant/);
    // The schema's own type of a claim wins over dyn: comparing an int attribute with a string is refused.
    expect(() =>
      loadPolicy(
        parseConfigText(
          `${issuers('[tenant, email]')}${yaml(`  schema:\n    principal: { tenant: int }\n${rule}`)}`,
          '/w.yaml',
        ),
      ),
    ).toThrow(ConfigError);
  });

  it('reads policy documents from a folder, each error naming its own file', () => {
    const { dir } = tempDir();
    const policies = join(dir, 'policies');
    mkdirSync(policies);
    writeFileSync(join(policies, '10-base.yaml'), 'roles:\n  viewer:\n    permissions: ["orders:read"]\n');
    writeFileSync(
      join(policies, '20-deny.yaml'),
      'rules:\n  - id: no-weekend\n    effect: deny\n    when: context.weekday == 0\n',
    );
    writeFileSync(join(policies, 'README.txt'), 'not a policy');
    const cfg = join(dir, 'portcullis.yaml');
    const text = yaml('  files: [./policies]\n');
    writeFileSync(cfg, text);
    const p = loadPolicy(parseConfigText(text, cfg));
    const sunday = Date.UTC(2026, 10, 29, 12);
    expect(
      p.decide(req(user('v', ['viewer']), 'orders:read', {}, { time: sunday + 86_400_000 })).outcome,
    ).toBe('allow');
    expect(p.decide(req(user('v', ['viewer']), 'orders:read', {}, { time: sunday }))).toMatchObject({
      outcome: 'deny',
      ruleIds: ['no-weekend'],
    });

    writeFileSync(
      join(policies, '30-bad.yaml'),
      'rules:\n  - id: bad\n    when: principal.x +\n  - id: elsewhere\n    routes: [nope]\n',
    );
    let err: ConfigError | undefined;
    try {
      loadPolicy(parseConfigText(text, cfg));
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err?.issues.map((i) => `${i.file}:${i.line}: ${i.path}: ${i.message}`)).toEqual([
      expect.stringMatching(new RegExp(`^${join(policies, '30-bad.yaml')}:3: rule bad.when: `)),
      `${join(policies, '30-bad.yaml')}:5: rule elsewhere.routes.0: unknown route "nope"`,
    ]);
  });
});
