// Portcullis as contenders in the gateway harness, in the same run as the peers:
//   node run.mjs --add contenders.portcullis.mjs --only direct,nginx,nginx-authreq,express,fastify,lean,portcullis,portcullis-hmac
//   node run.mjs --add contenders.portcullis.mjs --only nginx,nginx-authreq,express,portcullis-jwt,portcullis-full,portcullis-full-es256,portcullis-fwd --modes single,rotate,deny,unauth
//   node run.mjs --add contenders.portcullis.mjs --only nginx,node-floor,nginx-authreq,express,portcullis-jwt,portcullis-full,portcullis-full-es256 --modes single,rotate
//   node run.mjs --add contenders.portcullis.mjs --only nginx,node-floor,proto-jwt,portcullis-jwt --modes single,rotate
// Each entry writes a portcullis.yaml into the run folder and starts the built CLI (`npm run build`
// at the repository root first): the harness's ES256 tokens are accepted from an external issuer
// (its PEM), every decision is audited (batched, hash-chained SQLite), security headers are added
// (the default), and a request-bound identity assertion is signed for the upstream — ES256 or
// HMAC-SHA256 with a per-upstream key (the assertion cannot be turned off, so the cheaper HS256 is the
// "least work" setting). What else the route does is the entry's profile:
//   roles  rule `readers-read-items` (role reader), risk step on (default), no rate limit: the original
//          `portcullis` / `portcullis-hmac` entries, kept as they were for comparison with earlier runs
//   jwt    verify the token and forward: a rule naming no one (= any authenticated principal), risk off,
//          no rate limit. It does not authorize roles (a guest-role token is allowed): no `roles: true`
//   full   role reader AND an ABAC condition (CEL) over the token's claims, risk step on (default
//          settings), a per-user rate limit set so high it is never hit (GCRA bookkeeping on every request)
// `node-floor` is not Portcullis: node:http -> undici dispatch with no auth at all, the floor under any Node
// gateway on the machine (servers/node-floor.mjs), measured in the same run so the Node rows can be read
// against it.
// `portcullis-fwd` is the full profile behind nginx: nginx auth_request asks Portcullis's forward-auth
// endpoint, then proxies to the upstream itself (peer: `nginx-authreq`, nginx + a jose verifier).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { nginxProcess } from './lib/nginx.mjs';

const repoRoot = (ctx) => resolve(ctx.harnessDir, '..', '..');
const HS256_KEY = 'bench-only-shared-upstream-key-0123456789abcdef';

// External-issuer tokens reach CEL as principal.id (sub), principal.issuer (the issuer's id here),
// principal.roles, principal.groups, and the claims the issuer lists in `claims` (tenant and email
// here). The harness's tokens satisfy it (sub `user-*`, tenant `acme`, issuer `bench`). Runs before
// 2026-12-02 could not read the tenant claim and measured the condition without it.
const ABAC_CONDITION = `principal.issuer == 'bench' && principal.tenant == 'acme' && principal.id.startsWith('user-')`;

const PROFILES = {
  roles: { rule: ['id: readers-read-items', 'roles: [reader]'], risk: true, rateLimit: false },
  jwt: { rule: ['id: any-authenticated'], risk: false, rateLimit: false },
  full: { rule: ['id: readers-of-bench-read-items', 'roles: [reader]', `when: ${JSON.stringify(ABAC_CONDITION)}`], risk: true, rateLimit: true },
};

// The generated config; `forwardAuth`: the endpoint on, with nginx (loopback) as the trusted proxy.
function portcullisYaml(ctx, { dir, port, assertion, profile, forwardAuth }) {
  const p = PROFILES[profile];
  const upstreamAssertion = assertion === 'HS256' ? `{ alg: HS256, key: "${HS256_KEY}" }` : '{ alg: ES256 }';
  const rule = [...p.rule, 'routes: [items]', 'methods: [GET]'];
  return `# written by bench/gateway/contenders.portcullis.mjs (profile ${profile})
dataDir: ${JSON.stringify(join(dir, 'data'))}
log: { level: warn }
gateway:
  listen: { host: 127.0.0.1, port: ${port} }
${forwardAuth ? '  trustedProxies: [127.0.0.1/32]\n  forwardAuth: { refusalBody: false }\n' : ''}admin:
  listen: { host: 127.0.0.1, port: ${port + 100} }
identity:
  issuer: http://127.0.0.1:${port}
  passwordHash: { memoryCost: 19456, timeCost: 2, parallelism: 1 }
issuers:
  bench:
    issuer: ${JSON.stringify(ctx.env.JWT_ISSUER)}
    audience: ${JSON.stringify(ctx.env.JWT_AUDIENCE)}
    publicKeyFile: ${JSON.stringify(ctx.env.JWT_PUBLIC_KEY_FILE)}
    claims: [tenant, email]
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
${p.rateLimit ? '    rateLimit: { limit: 1000000000, window: 1m }\n' : ''}policy:
  rules:
    - ${rule.join('\n      ')}
${p.risk ? '' : 'risk:\n  enabled: false\n'}audit:
  decisions: batched
  flushInterval: 50ms
`;
}

function portcullisProcess(ctx, { id, port, ...opts }) {
  const dir = join(ctx.runDir, id);
  mkdirSync(dir, { recursive: true });
  const configFile = join(dir, 'portcullis.yaml');
  writeFileSync(configFile, portcullisYaml(ctx, { dir, port, ...opts }));
  return {
    name: 'portcullis',
    cmd: ctx.node,
    args: [join(repoRoot(ctx), 'dist', 'cli', 'bin.js'), 'up', '--config', configFile],
    env: { NODE_ENV: 'production' },
    readyPort: port,
  };
}

// Portcullis itself in front of the upstream.
function entry({ id, label, port, assertion, profile }) {
  return {
    id,
    label,
    port,
    auth: true,
    roles: profile !== 'jwt', // refuses a validly signed guest-role token with 403 (the `deny` mode)
    securityHeaders: true,
    processes: (ctx) => [portcullisProcess(ctx, { id, port, assertion, profile })],
  };
}

// nginx in front (one worker, keep-alive both ways); Portcullis decides on its forward-auth endpoint.
// Its security headers come from Portcullis's answer (auth_request_set), like its assertion.
function forwardAuthEntry({ id, label, port, portcullisPort, assertion, profile }) {
  return {
    id,
    label,
    port,
    auth: true,
    roles: profile !== 'jwt',
    securityHeaders: true,
    processes: (ctx) => [
      portcullisProcess(ctx, { id, port: portcullisPort, assertion, profile, forwardAuth: true }),
      nginxProcess(ctx, { id, template: 'portcullis-authreq.conf.tmpl', port, vars: { PORTCULLIS_PORT: portcullisPort } }),
    ],
  };
}

// A one-process Node server of servers/ on `port` (the harness's env: upstream URL, issuer key, …).
function nodeServer({ id, label, port, auth, script }) {
  return {
    id,
    label,
    port,
    auth,
    processes: (ctx) => [
      {
        name: script,
        cmd: ctx.node,
        args: [join(ctx.harnessDir, 'servers', script)],
        env: { NODE_ENV: 'production', ...ctx.env, PORT: String(port) },
        readyPort: port,
      },
    ],
  };
}

// The floor under every Node gateway here (servers/node-floor.mjs): node:http → undici dispatch, no auth.
// Not a peer: it does nothing a user would deploy. It shows how much of a Node contender's cost is the
// runtime's HTTP in and out, and what is left for everything else.
const floorEntry = nodeServer({
  id: 'node-floor',
  label: '10 floor: node:http -> undici dispatch, no auth (Portcullis addition)',
  port: 18095,
  auth: false,
  script: 'node-floor.mjs',
});

// The prototype #9 cites as proof that JWT-only ≥ 0.5× nginx is reachable (servers/proto-jwt.mjs): the floor
// plus jose verification with a SHA-256-keyed verified-token cache, and nothing else (no audit, assertion,
// headers or policy). Not a peer either: it shows whether that prototype's ratio holds here.
const protoEntry = nodeServer({
  id: 'proto-jwt',
  label: '11 #9 prototype: node:http + undici + jose + SHA-256 token cache, nothing else (Portcullis addition)',
  port: 18096,
  auth: true,
  script: 'proto-jwt.mjs',
});

// Ports: gateway/nginx 18087–18094, Portcullis admin listeners +100. (18087 is also lean-crypto's: the
// harness runs one contender at a time.)
export default [
  floorEntry,
  protoEntry,
  entry({ id: 'portcullis', label: '6 Portcullis (ES256 assertion)', port: 18088, assertion: 'ES256', profile: 'roles' }),
  entry({ id: 'portcullis-hmac', label: '6b Portcullis (HS256 assertion)', port: 18087, assertion: 'HS256', profile: 'roles' }),
  entry({
    id: 'portcullis-jwt', label: '7 Portcullis JWT-only: verify + forward (any authenticated, risk off; audit, headers, HS256 assertion)',
    port: 18089, assertion: 'HS256', profile: 'jwt',
  }),
  entry({
    id: 'portcullis-full', label: '8 Portcullis full pipeline: role + ABAC policy, risk, rate limit, audit, headers, HS256 assertion',
    port: 18090, assertion: 'HS256', profile: 'full',
  }),
  entry({
    id: 'portcullis-full-es256', label: '8b Portcullis full pipeline, ES256 assertion',
    port: 18091, assertion: 'ES256', profile: 'full',
  }),
  forwardAuthEntry({
    id: 'portcullis-fwd', label: '9 nginx + auth_request -> Portcullis forward-auth (full pipeline, HS256 assertion)',
    port: 18093, portcullisPort: 18094, assertion: 'HS256', profile: 'full',
  }),
];
