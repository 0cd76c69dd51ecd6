import { PortcullisError } from '../../core/index.js';
import type { Gateway, RequestContext } from '../context.js';

/** Step 6: the policy engine decides; anything but allow is a 403 with the decision's reason logged. */
export function authorize(gw: Gateway, ctx: RequestContext): void {
  const { principal, route, target } = ctx;
  if (!principal || !route || !target)
    throw new PortcullisError('internal_error', { detail: 'authorize out of order' });
  const decision = gw.policy.decide({
    principal,
    action: { method: ctx.method },
    resource: { routeId: route.id, path: target.path, params: ctx.params },
    context: { ip: ctx.ip, time: gw.clock.now() },
  });
  ctx.decision = decision;
  if (decision.outcome !== 'allow') throw new PortcullisError('forbidden', { detail: decision.reason });
}
