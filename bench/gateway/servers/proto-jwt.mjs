// Portcullis's addition to the shared harness (not one of its peers): the prototype #9 names as proof
// that "JWT-only ≥ 0.5× nginx proxy_pass" is reachable — node:http + undici dispatch + jose, with a
// verified-token cache keyed by the token's SHA-256. Nothing else: no audit entry, no identity
// assertion, no security headers, no policy. It is node-floor.mjs plus the token check, so the run shows
// what that check costs and whether the prototype's ratio holds on the machine at hand.
// The signature is checked once per token (jose jwtVerify: ES256, issuer, audience, sub and exp
// required); a cached token's exp is checked on every request; refused tokens are not cached.
import { createHash } from 'node:crypto';
import http from 'node:http';
import { importSPKI, jwtVerify } from 'jose';
import { Pool } from 'undici';
import { AUDIENCE, HOST, ISSUER, need, onTerm, port, publicKeyPem } from '../lib/env.mjs';
import { forwarder } from './forward.mjs';

const key = await importSPKI(publicKeyPem(), 'ES256');
const pool = new Pool(need('UPSTREAM_URL'), { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });
const CACHE_MAX = 10_000;
const cache = new Map(); // sha256(token) -> { sub, exp }

const refuse = (res) => { res.writeHead(401, { 'content-length': 0, 'www-authenticate': 'Bearer' }); res.end(); };

// The client's token is not passed on (the upstream gets who it is in x-user).
const forwardAs = forwarder(pool, ['authorization']);
const forward = (req, res, sub) => forwardAs(req, res, { 'x-user': sub });

const server = http.createServer((req, res) => {
  const auth = req.headers.authorization;
  if (auth === undefined || !auth.startsWith('Bearer ')) return refuse(res);
  const token = auth.slice(7);
  const k = createHash('sha256').update(token).digest('base64');
  const hit = cache.get(k);
  if (hit !== undefined) {
    if (hit.exp > Date.now() / 1000) return forward(req, res, hit.sub);
    cache.delete(k);
    return refuse(res);
  }
  jwtVerify(token, key, { algorithms: ['ES256'], issuer: ISSUER, audience: AUDIENCE, requiredClaims: ['sub', 'exp'] }).then(
    ({ payload }) => {
      if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value);
      cache.set(k, { sub: payload.sub, exp: payload.exp });
      forward(req, res, payload.sub);
    },
    () => refuse(res),
  );
});
server.keepAliveTimeout = 65_000;
server.listen(port(), HOST);
onTerm(() => { server.close(); void pool.close(); });
