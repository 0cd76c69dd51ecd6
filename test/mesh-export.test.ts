import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AuthorizationPolicy, RequestAuthentication } from '@kubernetes-models/istio/security.istio.io/v1';
import { PeerAuthentication } from '@kubernetes-models/istio/security.istio.io/v1beta1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { runCli } from '../src/cli/index.js';
import { captureIO, tempDir, writeConfigFile } from './helpers.js';

const TD = 'spiffe://cluster.local';

/**
 * `portcullis export istio|k8s`: the policy's service graph as manifests, checked against the Istio CRD
 * and Kubernetes OpenAPI schemas (as compiled by kubernetes-models / @kubernetes-models/istio), compared
 * to committed snapshots (deterministic output), deny by default.
 */
describe('mesh exports', async () => {
  const t = tempDir();
  afterAll(() => t.cleanup());
  const config = await writeConfigFile(t.dir, 'http://127.0.0.1:1', {
    upstreams: {
      billing: {
        url: 'http://billing.payments.svc:8080',
        kubernetes: {
          namespace: 'payments',
          labels: { app: 'billing' },
          spiffeId: `${TD}/ns/payments/sa/billing`,
          port: 8080,
        },
      },
      orders: {
        url: 'http://orders.shop.svc:8080',
        assertion: { alg: 'HS256', key: 'k'.repeat(40) },
        kubernetes: { namespace: 'shop', labels: { app: 'orders' }, spiffeId: `${TD}/ns/shop/sa/orders` },
      },
      legacy: { url: 'http://legacy:80' },
    },
    export: {
      gateway: {
        namespace: 'portcullis',
        labels: { app: 'portcullis' },
        spiffeId: `${TD}/ns/portcullis/sa/gateway`,
      },
    },
    routes: [
      { id: 'charges', path: '/charges', methods: ['GET', 'POST'], upstream: 'billing' },
      { id: 'charge', path: '/charges/:id', methods: ['GET'], upstream: 'billing' },
      { id: 'orders', path: '/api/orders/*', methods: ['GET', 'POST'], upstream: 'orders' },
      { id: 'old', path: '/old/*', methods: ['GET'], upstream: 'legacy' },
    ],
    policy: {
      rules: [
        {
          id: 'orders-create-charges',
          services: [`${TD}/ns/shop/sa/orders`],
          routes: ['charges'],
          methods: ['POST'],
        },
        { id: 'batch-reads-charges', services: [`${TD}/ns/batch/**`], routes: ['charge'] },
        {
          id: 'no-charges-from-cron',
          effect: 'deny',
          services: [`${TD}/ns/batch/sa/cron`],
          routes: ['charges'],
        },
        {
          id: 'mornings-only',
          services: [`${TD}/ns/shop/sa/orders`],
          routes: ['orders'],
          when: 'context.hour < 12',
        },
        { id: 'any-namespace', services: [`${TD}/ns/*/sa/auditor`], routes: ['orders'] },
        { id: 'people', roles: ['viewer'], routes: ['orders'] },
        // Only with MFA (services never pass that), only one path of the route: not exportable as allows.
        { id: 'with-mfa', services: [`${TD}/ns/shop/sa/orders`], routes: ['orders'], require: { mfa: true } },
        {
          id: 'one-path',
          services: [`${TD}/ns/shop/sa/orders`],
          routes: ['orders'],
          paths: ['/api/orders/export'],
        },
        // A deny that names nobody applies to every caller; one with a * inside the ID is widened.
        { id: 'no-posting-orders', effect: 'deny', routes: ['orders'], methods: ['POST'] },
        { id: 'no-cron-jobs', effect: 'deny', services: [`${TD}/ns/batch/*/cron`], routes: ['orders'] },
      ],
    },
  });
  const run = async (kind: string) => {
    const io = captureIO();
    expect(await runCli(['export', kind, '--config', config], io.io)).toBe(0);
    return { yaml: io.out(), warnings: io.err() };
  };
  const docs = (yaml: string) => parseAllDocuments(yaml).map((d) => d.toJS() as Record<string, unknown>);
  const MODELS: Record<string, new (o: never) => { validate(): void }> = {
    'security.istio.io/v1/AuthorizationPolicy': AuthorizationPolicy as never,
    'security.istio.io/v1/RequestAuthentication': RequestAuthentication as never,
    'security.istio.io/v1beta1/PeerAuthentication': PeerAuthentication as never,
    'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy as never,
  };
  const validate = (m: Record<string, unknown>) => {
    const Model = MODELS[`${m.apiVersion}/${m.kind}`];
    if (!Model) throw new Error(`no schema for ${m.apiVersion}/${m.kind}`);
    new Model(m as never).validate();
  };

  it('istio: STRICT mTLS and deny by default per namespace; the service graph as ALLOW/DENY policies; RequestAuthentication for our assertion', async () => {
    const { yaml, warnings } = await run('istio');
    expect((await run('istio')).yaml).toBe(yaml); // deterministic
    await expect(yaml).toMatchFileSnapshot(join(__dirname, 'fixtures', 'export-istio.yaml'));
    const all = docs(yaml);
    for (const m of all) validate(m);
    const find = (kind: string, name: string, ns: string) =>
      all.find(
        (m) =>
          m.kind === kind &&
          (m.metadata as { name: string }).name === name &&
          (m.metadata as { namespace: string }).namespace === ns,
      ) as { spec: Record<string, unknown> } | undefined;
    for (const ns of ['payments', 'portcullis', 'shop']) {
      expect(find('PeerAuthentication', 'default', ns)?.spec).toEqual({ mtls: { mode: 'STRICT' } });
      expect(find('AuthorizationPolicy', 'portcullis-deny-by-default', ns)?.spec).toEqual({});
    }
    const allow = find('AuthorizationPolicy', 'portcullis-upstream-billing-allow', 'payments')?.spec;
    expect(allow).toMatchObject({ selector: { matchLabels: { app: 'billing' } }, action: 'ALLOW' });
    expect(allow?.rules).toEqual([
      {
        from: [{ source: { principals: ['cluster.local/ns/portcullis/sa/gateway'] } }],
        to: [{ operation: { methods: ['GET', 'HEAD', 'POST'], paths: ['/charges'] } }],
      },
      {
        from: [{ source: { principals: ['cluster.local/ns/portcullis/sa/gateway'] } }],
        to: [{ operation: { methods: ['GET', 'HEAD'], paths: ['/charges/{*}'] } }],
      },
      {
        from: [{ source: { principals: ['cluster.local/ns/shop/sa/orders'] } }],
        to: [{ operation: { methods: ['POST'], paths: ['/charges'] } }],
      },
      {
        from: [{ source: { principals: ['cluster.local/ns/batch/*'] } }],
        to: [{ operation: { methods: ['GET', 'HEAD'], paths: ['/charges/{*}'] } }],
      },
    ]);
    expect(find('AuthorizationPolicy', 'portcullis-upstream-billing-deny', 'payments')?.spec).toMatchObject({
      action: 'DENY',
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/batch/sa/cron'] } }] }],
    });
    // Orders: only the gateway (the conditional rule and the mid-pattern * cannot be expressed).
    const orders = find('AuthorizationPolicy', 'portcullis-upstream-orders-allow', 'shop')?.spec as {
      rules: { to: { operation: { paths: string[] } }[] }[];
    };
    expect(orders.rules).toHaveLength(1);
    expect(orders.rules[0]?.to[0]?.operation.paths).toEqual(['/api/orders/{**}']);
    expect(find('RequestAuthentication', 'portcullis-upstream-billing', 'payments')?.spec).toMatchObject({
      jwtRules: [
        { issuer: 'http://portcullis.test', jwksUri: 'http://portcullis.test/.well-known/jwks.json' },
      ],
    });
    expect(find('RequestAuthentication', 'portcullis-upstream-orders', 'shop')).toBeUndefined();
    expect(warnings).toContain(
      'rule mornings-only: a condition (when) cannot be expressed in the mesh; left out',
    );
    expect(warnings).toContain(
      'spiffe://cluster.local/ns/*/sa/auditor cannot be an Istio principal exactly; left out',
    );
    expect(warnings).toContain(
      'rule with-mfa: an obligation (require) cannot be expressed in the mesh; left out',
    );
    expect(warnings).toContain(
      'rule one-path: paths narrower than route orders cannot be expressed exactly; left out',
    );
    const ordersDeny = find('AuthorizationPolicy', 'portcullis-upstream-orders-deny', 'shop')?.spec;
    expect(ordersDeny?.rules).toEqual([
      // Every caller: no `from`.
      { to: [{ operation: { methods: ['POST'], paths: ['/api/orders/{**}'] } }] },
      // ns/batch/*/cron widened to everything in ns/batch.
      {
        from: [{ source: { principals: ['cluster.local/ns/batch/*'] } }],
        to: [{ operation: { methods: ['GET', 'HEAD', 'POST'], paths: ['/api/orders/{**}'] } }],
      },
    ]);
    expect(warnings).toContain('upstream orders: HS256 assertions cannot be checked by the mesh');
    // Nothing for an upstream without a Kubernetes workload.
    expect(yaml).not.toContain('legacy');
  });

  it('k8s: default-deny ingress per namespace; each workload open only to its callers (pods, or a whole namespace)', async () => {
    const { yaml } = await run('k8s');
    expect((await run('k8s')).yaml).toBe(yaml);
    await expect(yaml).toMatchFileSnapshot(join(__dirname, 'fixtures', 'export-k8s.yaml'));
    const all = docs(yaml);
    for (const m of all) validate(m);
    expect(
      all.filter((m) => (m.metadata as { name: string }).name === 'portcullis-default-deny-ingress'),
    ).toHaveLength(3);
    const billing = all.find(
      (m) => (m.metadata as { name: string }).name === 'portcullis-upstream-billing-ingress',
    ) as {
      spec: { ingress: { from: unknown[]; ports: unknown[] }[] };
    };
    expect(billing.spec.ingress[0]?.from).toEqual([
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'shop' } },
        podSelector: { matchLabels: { app: 'orders' } },
      },
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'portcullis' } },
        podSelector: { matchLabels: { app: 'portcullis' } },
      },
      { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'batch' } } },
    ]);
    expect(billing.spec.ingress[0]?.ports).toEqual([{ protocol: 'TCP', port: 8080 }]);
  });

  it('refuses names that would collide when applied', async () => {
    mkdirSync(join(t.dir, 'clash'));
    const clash = await writeConfigFile(join(t.dir, 'clash'), 'http://127.0.0.1:1', {
      export: { gateway: { namespace: 'gw', labels: { app: 'gw' }, spiffeId: `${TD}/ns/gw/sa/gw` } },
      upstreams: {
        a_b: {
          url: 'http://a:80',
          kubernetes: { namespace: 'x', labels: { app: 'a1' }, spiffeId: `${TD}/ns/x/sa/a1` },
        },
        'a-b': {
          url: 'http://b:80',
          kubernetes: { namespace: 'x', labels: { app: 'a2' }, spiffeId: `${TD}/ns/x/sa/a2` },
        },
      },
      routes: [
        { id: 'r1', path: '/one', upstream: 'a_b' },
        { id: 'r2', path: '/two', upstream: 'a-b' },
      ],
      policy: { rules: [] },
    });
    const io = captureIO();
    expect(await runCli(['export', 'istio', '--config', clash], io.io)).toBe(1);
    expect(io.err()).toMatch(/portcullis-upstream-a-b-allow/);
  });

  it('the schemas are strict enough to catch a broken manifest', () => {
    expect(() =>
      validate({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'NetworkPolicy',
        metadata: { name: 'x' },
        spec: { podSelector: {}, policyTypes: ['Sideways'] },
      }),
    ).toThrow();
    expect(() =>
      validate({
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'x' },
        spec: { action: 'MAYBE' },
      }),
    ).toThrow();
  });
});
