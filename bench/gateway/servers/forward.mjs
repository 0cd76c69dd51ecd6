// Shared by node-floor.mjs and proto-jwt.mjs (Portcullis additions, not peers): node:http request →
// undici `dispatch` over a keep-alive Pool, with a handler writing the answer straight into the response
// (the transport Portcullis uses), hop-by-hop headers filtered both ways.
const HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host'];
const RESPONSE_HOP = new Set(HOP);

class Exchange {
  constructor(res) { this.res = res; this.controller = undefined; }
  onRequestStart(c) { this.controller = c; }
  onResponseStart(_c, status, headers) {
    const out = {};
    for (const k in headers) if (!RESPONSE_HOP.has(k)) out[k] = headers[k];
    this.res.writeHead(status, out);
  }
  onResponseData(c, chunk) { if (!this.res.write(chunk)) { c.pause(); this.res.once('drain', () => c.resume()); } }
  onResponseEnd() { this.res.end(); }
  onResponseError(_c, err) {
    if (this.res.headersSent) this.res.destroy(err);
    else { this.res.writeHead(502, { 'content-length': 0 }); this.res.end(); }
  }
}

/**
 * A forwarder over `pool`: `forward(req, res, extra)` sends the request on with its headers minus the
 * hop-by-hop ones (and `alsoDrop`), plus `extra`, and streams the answer back.
 */
export function forwarder(pool, alsoDrop = []) {
  const drop = new Set([...HOP, ...alsoDrop]);
  return (req, res, extra) => {
    const headers = {};
    for (const k in req.headers) if (!drop.has(k)) headers[k] = req.headers[k];
    if (extra) Object.assign(headers, extra);
    const ex = new Exchange(res);
    res.once('close', () => { if (!res.writableFinished) ex.controller?.abort(new Error('client gone')); });
    pool.dispatch({ method: req.method, path: req.url, headers, body: null }, ex);
  };
}
