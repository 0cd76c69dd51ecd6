// Portcullis as contenders in the gateway harness, in the same run as the peers:
//   node run.mjs --add contenders.portcullis.mjs --only direct,nginx,nginx-authreq,express,fastify,lean,portcullis,portcullis-hmac
// Each entry writes a portcullis.yaml into the run folder and starts the built CLI (`npm run build`
// at the repository root first): the harness's ES256 tokens are accepted from an external issuer
// (its PEM), a policy rule allows role `reader` on the route, every decision is audited (batched,
// hash-chained SQLite), security headers are added, and a request-bound identity assertion is signed
// for the upstream — ES256 (default) or HMAC-SHA256 with a per-upstream key (`-hmac`).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const repoRoot = (ctx) => resolve(ctx.harnessDir, '..', '..');

function entry({ id, label, port, assertion }) {
  return {
    id,
    label,
    port,
    auth: true,
    securityHeaders: true,
    processes: (ctx) => {
      const dir = join(ctx.runDir, id);
      mkdirSync(dir, { recursive: true });
      const upstreamAssertion =
        assertion === 'HS256' ? `{ alg: HS256, key: "bench-only-shared-upstream-key-0123456789abcdef" }` : '{ alg: ES256 }';
      const yaml = `# written by bench/gateway/contenders.portcullis.mjs
dataDir: ${JSON.stringify(join(dir, 'data'))}
log: { level: warn }
gateway:
  listen: { host: 127.0.0.1, port: ${port} }
admin:
  listen: { host: 127.0.0.1, port: ${port + 100} }
identity:
  issuer: http://127.0.0.1:${port}
  passwordHash: { memoryCost: 19456, timeCost: 2, parallelism: 1 }
issuers:
  bench:
    issuer: ${JSON.stringify(ctx.env.JWT_ISSUER)}
    audience: ${JSON.stringify(ctx.env.JWT_AUDIENCE)}
    publicKeyFile: ${JSON.stringify(ctx.env.JWT_PUBLIC_KEY_FILE)}
upstreams:
  items:
    url: ${ctx.env.UPSTREAM_URL}
    connections: 64
    assertion: ${upstreamAssertion}
routes:
  - id: items
    path: /api/items
    methods: [GET]
    upstream: items
    issuers: [bench]
policy:
  rules:
    - id: readers-read-items
      routes: [items]
      methods: [GET]
      roles: [reader]
audit:
  decisions: batched
  flushInterval: 50ms
`;
      const configFile = join(dir, 'portcullis.yaml');
      writeFileSync(configFile, yaml);
      return [
        {
          name: 'portcullis',
          cmd: ctx.node,
          args: [join(repoRoot(ctx), 'dist', 'cli', 'bin.js'), 'up', '--config', configFile],
          env: { NODE_ENV: 'production' },
          readyPort: port,
        },
      ];
    },
  };
}

export default [
  entry({ id: 'portcullis', label: '6 Portcullis (ES256 assertion)', port: 18088, assertion: 'ES256' }),
  entry({ id: 'portcullis-hmac', label: '6b Portcullis (HS256 assertion)', port: 18087, assertion: 'HS256' }),
];
