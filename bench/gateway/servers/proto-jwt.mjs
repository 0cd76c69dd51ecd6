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

const key = await importSPKI(publicKeyPem(), 'ES256');
const pool = new Pool(need('UPSTREAM_URL'), { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'authorization']);
const CACHE_MAX = 10_000;
const cache = new Map(); // sha256(token) -> { sub, exp }

class Exchange {
  constructor(res) { this.res = res; this.controller = undefined; }
  onRequestStart(c) { this.controller = c; }
  onResponseStart(_c, status, headers) {
    const out = {};
    for (const k in headers) if (!HOP.has(k)) out[k] = headers[k];
    this.res.writeHead(status, out);
  }
  onResponseData(c, chunk) { if (!this.res.write(chunk)) { c.pause(); this.res.once('drain', () => c.resume()); } }
  onResponseEnd() { this.res.end(); }
  onResponseError(_c, err) {
    if (this.res.headersSent) this.res.destroy(err);
    else { this.res.writeHead(502, { 'content-length': 0 }); this.res.end(); }
  }
}

const refuse = (res) => { res.writeHead(401, { 'content-length': 0, 'www-authenticate': 'Bearer' }); res.end(); };

function forward(req, res, sub) {
  const headers = {};
  for (const k in req.headers) if (!HOP.has(k)) headers[k] = req.headers[k];
  headers['x-user'] = sub;
  const ex = new Exchange(res);
  res.once('close', () => { if (!res.writableFinished) ex.controller?.abort(new Error('client gone')); });
  pool.dispatch({ method: req.method, path: req.url, headers, body: null }, ex);
}

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
