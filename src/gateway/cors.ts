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
  if (!cors) return undefined;
  if (typeof origin !== 'string' || (!cors.anyOrigin && !cors.origins.has(origin))) return { vary: 'Origin' };
  return {
    'access-control-allow-origin': cors.anyOrigin && !cors.credentials ? '*' : origin,
    vary: 'Origin',
    ...(cors.credentials ? { 'access-control-allow-credentials': 'true' } : {}),
    ...(cors.expose ? { 'access-control-expose-headers': cors.expose } : {}),
  };
}

/**
 * Puts the route's CORS headers on an upstream answer: the upstream's own `access-control-*` headers are
 * dropped (the route's origin list decides), and `Origin` is added to its `Vary` rather than replacing it.
 */
export function applyCors(out: Record<string, unknown>, ctx: RequestContext): void {
  for (const name of Object.keys(out)) if (name.startsWith('access-control-')) delete out[name];
  const cors = corsHeaders(ctx);
  if (!cors) return;
  const { vary, ...rest } = cors;
  Object.assign(out, rest);
  const existing = out.vary;
  const list = (Array.isArray(existing) ? existing.join(',') : typeof existing === 'string' ? existing : '')
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
  if (!list.some((v) => v === '*' || v.toLowerCase() === 'origin')) list.push(vary as string);
  out.vary = list.join(', ');
}

/**
 * A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) for a route that allows it:
 * answered here with 204 and the route's CORS policy — before authentication, as browsers send
 * preflights without credentials. A preflight the route does not allow is a 403.
 */
export function answerPreflight(gw: Gateway, ctx: RequestContext): boolean {
  // Forward-auth and ext_authz: a 2xx there means "let it through", so a preflight is never answered.
  if (ctx.decideOnly) return false;
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
