import { PortcullisError } from '../core/index.js';
import type { Gateway, RequestContext } from './context.js';
import { withSecurityHeaders } from './headers.js';

/**
 * The CORS headers of a response on a route with `cors`: the request's Origin echoed when allowed (`*`
 * only for any-origin routes without credentials), `Vary: Origin` always, so caches keep answers for
 * different origins apart. Nothing for routes without CORS or requests without Origin.
 */
export function corsHeaders(ctx: RequestContext): Record<string, string> | undefined {
  const cors = ctx.route?.cors;
  const origin = ctx.req.headers.origin;
  if (!cors || typeof origin !== 'string') return undefined;
  if (!cors.anyOrigin && !cors.origins.has(origin)) return { vary: 'Origin' };
  return {
    'access-control-allow-origin': cors.anyOrigin && !cors.credentials ? '*' : origin,
    vary: 'Origin',
    ...(cors.credentials ? { 'access-control-allow-credentials': 'true' } : {}),
    ...(cors.expose ? { 'access-control-expose-headers': cors.expose } : {}),
  };
}

/**
 * A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) for a route that allows it:
 * answered here with 204 and the route's CORS policy — before authentication, as browsers send
 * preflights without credentials. A preflight the route does not allow is a 403.
 */
export function answerPreflight(gw: Gateway, ctx: RequestContext): boolean {
  const h = ctx.req.headers;
  const requested = h['access-control-request-method'];
  if (ctx.method !== 'OPTIONS' || typeof h.origin !== 'string' || typeof requested !== 'string') return false;
  const target = ctx.target;
  if (!target) return false;
  const m = gw.routes.match(ctx.host, requested, target.path);
  if (m.kind !== 'match') return false;
  ctx.route = m.route;
  ctx.internal = true; // answered by the gateway itself, no decision to record
  const cors = m.route.cors;
  const origin = h.origin;
  if (!cors || !(cors.anyOrigin || cors.origins.has(origin)) || !cors.methods.has(requested))
    throw new PortcullisError('forbidden', {
      detail: `CORS preflight from ${origin} for ${requested} refused`,
    });
  ctx.res.writeHead(
    204,
    withSecurityHeaders(
      {
        ...corsHeaders(ctx),
        ...cors.preflight,
        'content-length': 0,
        'cache-control': 'no-store',
        'x-request-id': ctx.requestId,
      },
      m.route.securityHeaders,
    ),
  );
  ctx.res.end();
  return true;
}
