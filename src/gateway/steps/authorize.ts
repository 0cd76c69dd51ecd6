import { PortcullisError } from '../../core/index.js';
import type { Decision, PolicyInput } from '../../policy/index.js';
import type { Gateway, RequestContext } from '../context.js';

/**
 * Step 6: the policy engine decides. Deny is a 403; a challenge (a rule's `require` not met) is a 401
 * `step_up_required` whose `WWW-Authenticate` says what is needed (RFC 9470). Either way the decision
 * and its rule ids go to the audit log.
 */
const PUBLIC: Decision = Object.freeze({
  outcome: 'allow',
  ruleIds: Object.freeze(['public']) as readonly string[],
  reason: 'public route',
});

export function authorize(gw: Gateway, ctx: RequestContext): void {
  const { principal, route, target } = ctx;
  if (route?.public) {
    ctx.decision = PUBLIC;
    return;
  }
  if (!principal || !route || !target)
    throw new PortcullisError('internal_error', { detail: 'authorize out of order' });
  const input: PolicyInput = {
    principal,
    action: route.actions?.[ctx.method] ?? ctx.method,
    resource: {
      route: route.id,
      path: target.path,
      params: ctx.params,
      ...(route.resourceType ? { type: route.resourceType } : {}),
    },
    request: { method: ctx.method, path: target.path, host: ctx.host },
    ...(ctx.device ? { device: ctx.device } : {}),
    context: {
      time: gw.clock.now(),
      ip: ctx.ip,
      authentication: principal,
      ...(ctx.risk
        ? {
            risk: {
              score: ctx.risk.score,
              level: ctx.risk.level,
              signals: ctx.risk.signals.map((s) => s.name),
            },
            ...(ctx.risk.geo.country ? { geo: { country: ctx.risk.geo.country } } : {}),
          }
        : {}),
    },
  };
  const decision = gw.policy.decide(input);
  ctx.decision = decision;
  if (decision.outcome === 'allow') return;
  if (decision.outcome === 'challenge') {
    throw new PortcullisError('step_up_required', {
      detail: decision.reason,
      headers: { 'www-authenticate': stepUpChallenge(decision) },
    });
  }
  throw new PortcullisError('forbidden', { detail: decision.reason });
}

/** `Bearer error="insufficient_user_authentication"` with `acr_values` / `max_age` (RFC 9470 §3). */
function stepUpChallenge(decision: Decision): string {
  const req = decision.requirements ?? {};
  const acr = [req.acr, req.mfa ? 'mfa' : undefined].filter(Boolean).join(' ');
  let out =
    'Bearer error="insufficient_user_authentication", error_description="A fresh or stronger sign-in is required"';
  if (acr) out += `, acr_values="${acr}"`;
  if (req.maxAge !== undefined) out += `, max_age=${Math.floor(req.maxAge / 1000)}`;
  return out;
}
