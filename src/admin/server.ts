import { createServer, type Server } from 'node:http';
import type { Metrics } from '../core/index.js';

export interface AdminDeps {
  metrics: Metrics;
  /** Throws when a dependency (the store) is unreachable. */
  ready: () => Promise<void>;
}

/**
 * The admin listener: `/healthz` (process is up), `/readyz` (store reachable), `/metrics` (Prometheus).
 * It binds to its own address, never the public one.
 */
export function createAdminServer(deps: AdminDeps): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, {
        'content-type': type,
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(
        405,
        'application/json',
        JSON.stringify({ error: { code: 'method_not_allowed', message: 'Use GET.' } }),
      );
      return;
    }
    switch (path) {
      case '/healthz':
        send(200, 'application/json', '{"status":"ok"}');
        return;
      case '/readyz':
        deps.ready().then(
          () => send(200, 'application/json', '{"status":"ready"}'),
          () => send(503, 'application/json', '{"status":"unavailable","reason":"store unreachable"}'),
        );
        return;
      case '/metrics':
        deps.metrics.registry.metrics().then(
          (text) => send(200, deps.metrics.registry.contentType, text),
          () => send(500, 'text/plain', 'metrics unavailable\n'),
        );
        return;
      default:
        send(
          404,
          'application/json',
          JSON.stringify({ error: { code: 'route_not_found', message: 'Not found.' } }),
        );
    }
  });
}
