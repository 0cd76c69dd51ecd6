import { createServer, type Server } from 'node:http';
import { errorBody, newRequestId } from '../core/index.js';

/** host or host:port (a port is replaced), IPv6 literals in brackets: nothing that could move the path. */
const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * The plain-HTTP listener of an HTTPS gateway: every request gets a 308 (method and body kept) to the
 * same host, path and query over HTTPS on `httpsPort`. Nothing is served over HTTP, nothing reaches an
 * upstream; a Host that is not a plain host name, or a target that is not origin-form, is a 400.
 */
export function createRedirectServer(httpsPort: number): Server {
  const portSuffix = httpsPort === 443 ? '' : `:${httpsPort}`;
  return createServer({ headersTimeout: 10_000, requestTimeout: 10_000 }, (req, res) => {
    const host = req.headers.host ?? '';
    const target = req.url ?? '';
    if (!HOST.test(host) || !target.startsWith('/') || target.startsWith('//') || /[\s\\]/.test(target)) {
      const body = errorBody('bad_request', 'The request is malformed.', newRequestId());
      res.writeHead(400, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(body),
        connection: 'close',
      });
      res.end(body);
      return;
    }
    const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : (host.split(':')[0] as string);
    res.writeHead(308, {
      location: `https://${name.toLowerCase()}${portSuffix}${target}`,
      'content-length': 0,
      'cache-control': 'no-store',
      connection: 'close',
    });
    res.end();
  });
}
