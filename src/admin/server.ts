import { createServer, type Server } from 'node:http';
import { consistencyBundle, inclusionBundle } from '../audit/index.js';
import type { Metrics } from '../core/index.js';
import type { AuditStore } from '../store/index.js';

export interface AdminDeps {
  metrics: Metrics;
  /** The audit log, for checkpoints and proofs. */
  audit: AuditStore;
  /** Throws when a dependency (the store) is unreachable. */
  ready: () => Promise<void>;
}

/**
 * The admin listener: `/healthz` (process is up), `/readyz` (store reachable), `/metrics` (Prometheus),
 * and the audit log's `/audit/checkpoint` (latest signed checkpoint), `/audit/proof/inclusion?seq=&size=`
 * and `/audit/proof/consistency?first=&second=` (RFC 9162 proofs). It binds to its own address, never
 * the public one.
 */
export function createAdminServer(deps: AdminDeps): Server {
  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    const path = url.pathname;
    const int = (name: string) => {
      const v = url.searchParams.get(name);
      return v === null ? undefined : /^\d{1,15}$/.test(v) ? Number(v) : Number.NaN;
    };
    const answer = (p: Promise<unknown>) =>
      p.then(
        (body) => send(200, 'application/json', JSON.stringify(body)),
        (err: unknown) =>
          err instanceof RangeError
            ? send(
                400,
                'application/json',
                JSON.stringify({ error: { code: 'bad_request', message: err.message } }),
              )
            : send(
                503,
                'application/json',
                JSON.stringify({ error: { code: 'store_unavailable', message: 'Audit log unavailable.' } }),
              ),
      );
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
      case '/audit/checkpoint':
        deps.audit.checkpoints().then(
          (cps) => {
            const latest = cps.at(-1);
            if (latest) send(200, 'text/plain; charset=utf-8', latest.note);
            else
              send(
                404,
                'application/json',
                JSON.stringify({ error: { code: 'route_not_found', message: 'No checkpoint yet.' } }),
              );
          },
          () =>
            send(
              503,
              'application/json',
              JSON.stringify({ error: { code: 'store_unavailable', message: 'Audit log unavailable.' } }),
            ),
        );
        return;
      case '/audit/proof/inclusion':
        answer(inclusionBundle(deps.audit, int('seq') ?? Number.NaN, int('size')));
        return;
      case '/audit/proof/consistency':
        answer(consistencyBundle(deps.audit, int('first') ?? Number.NaN, int('second') ?? Number.NaN));
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
