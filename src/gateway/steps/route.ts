import { PortcullisError } from '../../core/index.js';
import type { Gateway, RequestContext } from '../context.js';
import { answerPreflight } from '../cors.js';

/** Step 2: the compiled route table picks the route; none → 404, wrong method → 405. */
export function route(gw: Gateway, ctx: RequestContext): boolean | undefined {
  const target = ctx.target;
  if (!target) throw new PortcullisError('internal_error', { detail: 'route before canonicalize' });
  if (ctx.method === 'OPTIONS' && answerPreflight(gw, ctx)) return true;
  const m = gw.routes.match(ctx.host, ctx.method, target.path);
  if (m.kind === 'none') throw new PortcullisError('route_not_found');
  if (m.kind === 'method_not_allowed')
    throw new PortcullisError('method_not_allowed', { headers: { allow: m.allow } });
  ctx.route = m.route;
  ctx.params = m.params;
  // A proxy asking about a request does not send its body: what needs the body cannot be decided here.
  if (ctx.decideOnly && (m.route.signature || m.route.validateBody))
    throw new PortcullisError('forbidden', {
      detail: `route ${m.route.id} checks the request body (signature or schema): not possible through forward-auth`,
    });
  return undefined;
}
