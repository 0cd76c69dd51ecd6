import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalizeTarget, RouteTable } from '../src/gateway/index.js';
import { rawRequest, type Stack, startStack } from './helpers.js';

describe('canonicalizeTarget', () => {
  const ok: Array<[string, string, string]> = [
    ['/api/orders', '/api/orders', ''],
    ['/api/orders/', '/api/orders/', ''],
    ['/', '/', ''],
    ['/.well-known/jwks.json', '/.well-known/jwks.json', ''],
    ['/a/./b/../c', '/a/c', ''],
    ['/a/b/..', '/a/', ''],
    ['/../../etc/passwd', '/etc/passwd', ''],
    ['//a///b', '/a/b', ''],
    ['/%7Euser/%61', '/~user/a', ''],
    ['/a%2e%2E/b', '/a../b', ''],
    ['/%2e%2e/x', '/x', ''],
    ['/a%20b/%c3%a9', '/a%20b/%C3%A9', ''],
    ['/q?x=%2F&y=../z', '/q', '?x=%2F&y=../z'],
    ['/a.json', '/a.json', ''],
    ['/a/.hidden', '/a/.hidden', ''],
    ['/matrix;v=1/x;a=b', '/matrix;v=1/x;a=b', ''],
    ['/a/..x;y', '/a/..x;y', ''],
  ];
  it.each(ok)('%s → %s', (raw, path, query) => {
    expect(canonicalizeTarget(raw)).toEqual({ path, query });
  });

  const refused = [
    '',
    '*',
    'http://evil.example/api',
    'api/orders',
    '/a%2Fb',
    '/a%2fb',
    '/a%5Cb',
    '/a\\b',
    '/a%00',
    '/a%0d%0aSet-Cookie:x',
    '/a%zz',
    '/a%2',
    '/a%c0%ae%c0%ae/',
    '/a%ff',
    '/a b',
    '/a#frag',
    '/é',
    '/a?x=1#f',
    '/a?\u0001',
    '/api/orders/..;/admin',
    '/api/orders/..;x=1/admin',
    '/api/orders/..%3B/admin',
    '/api/orders/..%3b/admin',
    '/a/.;/b',
    '/a/%2e%2e;/b',
  ];
  it.each(refused)('refuses %j with invalid_path', (raw) => {
    expect(() => canonicalizeTarget(raw)).toThrow(
      expect.objectContaining({ code: 'invalid_path', status: 400 }),
    );
  });

  it('is idempotent: a canonical path canonicalizes to itself', () => {
    for (const [raw] of ok) {
      const once = canonicalizeTarget(raw);
      expect(canonicalizeTarget(once.path + once.query)).toEqual(once);
    }
  });
});

describe('RouteTable', () => {
  const table = new RouteTable(
    [
      {
        id: 'list',
        path: '/api/orders',
        methods: ['GET', 'POST'],
        upstream: 'a',
        issuers: ['portcullis'],
        maxBodyBytes: 1024,
        public: false,
      },
      {
        id: 'one',
        path: '/api/orders/:id',
        methods: ['GET'],
        upstream: 'a',
        issuers: ['portcullis'],
        maxBodyBytes: 1024,
        public: false,
      },
      {
        id: 'admin',
        path: '/api/admin/*',
        methods: ['GET'],
        upstream: 'a',
        issuers: ['portcullis'],
        maxBodyBytes: 1024,
        public: false,
      },
      {
        id: 'tenant',
        host: 'Tenant.Example.',
        path: '/:any/*',
        methods: ['GET'],
        upstream: 'b',
        issuers: ['portcullis'],
        maxBodyBytes: 1024,
        public: false,
      },
      {
        id: 'root',
        path: '/',
        methods: ['GET'],
        upstream: 'a',
        issuers: ['portcullis'],
        maxBodyBytes: 1024,
        public: false,
      },
    ],
    (r) => r.upstream,
  );
  const id = (host: string, method: string, path: string) => {
    const m = table.match(host, method, path);
    return m.kind === 'match' ? [m.route.id, m.params] : m.kind;
  };

  it('matches literals, params and rest patterns in config order', () => {
    expect(id('x', 'GET', '/api/orders')).toEqual(['list', {}]);
    expect(id('x', 'GET', '/api/orders/')).toEqual(['list', {}]);
    expect(id('x', 'HEAD', '/api/orders')).toEqual(['list', {}]);
    expect(id('x', 'GET', '/api/orders/42')).toEqual(['one', { id: '42' }]);
    expect(id('x', 'GET', '/api/admin')).toEqual(['admin', {}]);
    expect(id('x', 'GET', '/api/admin/a/b/c')).toEqual(['admin', {}]);
    expect(id('x', 'GET', '/')).toEqual(['root', {}]);
    expect(id('x', 'GET', '/api/orders/42/items')).toBe('none');
    expect(id('x', 'GET', '/api/administrator')).toBe('none');
    expect(id('x', 'GET', '/API/orders')).toBe('none');
  });

  it('matches hosts case-insensitively, ignoring the trailing dot, and answers 405 with Allow', () => {
    expect(id('tenant.example', 'GET', '/docs/x')).toEqual(['tenant', { any: 'docs' }]);
    expect(id('other.example', 'GET', '/docs/x')).toBe('none');
    expect(table.match('x', 'DELETE', '/api/orders')).toEqual({
      kind: 'method_not_allowed',
      allow: 'GET, POST, HEAD',
    });
  });
});

/** PayloadsAllTheThings traversal lists, read from ../shared/vectors (skipped when absent). */
const VECTORS = join(process.cwd(), '..', 'shared', 'vectors', 'payloadsallthethings-traversal');
const haveVectors = existsSync(VECTORS);
if (!haveVectors) console.warn(`skipping traversal vectors: ${VECTORS} not found`);

describe.skipIf(!haveVectors)(
  'traversal payloads (PayloadsAllTheThings) never reach an admin route as a viewer',
  () => {
    let s: Stack;
    let token: string;
    beforeAll(async () => {
      s = await startStack();
      const { body } = await s.login(s.users.viewer.username, s.users.viewer.password);
      token = body.access_token as string;
    });
    afterAll(() => s.close());

    it('every payload from both lists, with admin/reports as the target', async () => {
      const payloads = ['deep_traversal.txt', 'traversals-8-deep-exotic-encoding.txt'].flatMap((f) =>
        readFileSync(join(VECTORS, f), 'latin1')
          .split('\n')
          .filter((l) => l.includes('{FILE}')),
      );
      expect(payloads.length).toBeGreaterThan(1500);
      const statuses = new Map<number, number>();
      for (const p of payloads) {
        const suffix = p.replace('{FILE}', 'admin/reports').replace(/^\//, '');
        const target = `/api/orders/${suffix}`;
        const request = `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer ${token}\r\n\r\n`;
        const res = await rawRequest(s.pc.gatewayUrl, Buffer.from(request, 'latin1'));
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        expect(res.status, target).not.toBe(200);
      }
      // Nothing the viewer may not see reached the upstream, whatever the encoding.
      expect(s.upstream.received.filter((r) => !/^\/api\/orders(\/[^/]+)?\/?(\?|$)/.test(r.url))).toEqual([]);
      expect([...statuses.keys()].every((st) => [400, 403, 404].includes(st))).toBe(true);
    });
  },
);
