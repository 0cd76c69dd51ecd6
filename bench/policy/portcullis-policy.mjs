// The reference scenario (scenario.mjs) as a Portcullis policy: the same 22 rules, their CEL
// conditions checked against declared attribute schemas. Shared by bench.mjs and the agreement test
// (test/policy-agreement.test.ts).
import { RULES } from './scenario.mjs';

export const PORTCULLIS_POLICY = {
  schema: {
    principal: { department: 'string', clearance: 'int', suspended: 'bool' },
    resourceTypes: Object.fromEntries(
      ['Document', 'Project', 'Invoice', 'Report'].map((t) => [
        t,
        {
          ownerId: 'string',
          department: 'string',
          sensitivity: 'string',
          locked: 'bool',
          members: 'list<string>',
          amount: 'int',
          status: 'string',
        },
      ]),
    ),
    context: { mfa: 'bool' },
  },
  rules: RULES.map((r) => ({
    id: r.id,
    effect: r.effect === 'forbid' ? 'deny' : 'allow',
    ...(r.roles === '*' ? {} : { roles: r.roles }),
    ...(r.types === '*' ? {} : { types: r.types }),
    ...(r.actions === '*' ? {} : { actions: r.actions }),
    ...(r.cel === 'true' ? {} : { when: r.cel }),
  })),
};

/**
 * The scenario's request as a Portcullis policy input. The principal is what the gateway has in hand
 * after authentication (built once per token, cached with it), so it is built once per user here too;
 * resource and context are built per decision, inside the timed loop.
 */
export function portcullisAdapter(policy) {
  const principals = new WeakMap();
  const principalOf = (p) => {
    let x = principals.get(p);
    if (x === undefined) {
      x = { id: p.id, roles: [p.role], attributes: p };
      principals.set(p, x);
    }
    return x;
  };
  return (req) => {
    const d = policy.decide({
      principal: principalOf(req.principal),
      action: req.action,
      resource: { type: req.resource.type, id: req.resource.id, attributes: req.resource },
      context: { hour: req.context.hour, attributes: req.context },
    });
    return { allow: d.outcome === 'allow', reasons: d.ruleIds };
  };
}
