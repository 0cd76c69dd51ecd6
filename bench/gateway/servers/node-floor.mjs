// Portcullis's addition to the shared harness (not one of its peers): the floor under any Node gateway
// on this machine. node:http in, undici `dispatch` out over a keep-alive Pool (the transport Portcullis
// uses, with the same kind of handler writing the answer straight into the response), hop-by-hop
// headers filtered both ways, nothing else: no token, no policy, no audit, no security headers.
// Whatever a Node gateway does per request costs CPU on top of this one's.
import http from 'node:http';
import { Pool } from 'undici';
import { HOST, need, onTerm, port } from '../lib/env.mjs';

const pool = new Pool(need('UPSTREAM_URL'), { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

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

const server = http.createServer((req, res) => {
  const headers = {};
  for (const k in req.headers) if (!HOP.has(k)) headers[k] = req.headers[k];
  const ex = new Exchange(res);
  res.once('close', () => { if (!res.writableFinished) ex.controller?.abort(new Error('client gone')); });
  pool.dispatch({ method: req.method, path: req.url, headers, body: null }, ex);
});
server.keepAliveTimeout = 65_000;
server.listen(port(), HOST);
onTerm(() => { server.close(); void pool.close(); });
