import type { PolicyRuleConfig } from '../config/index.js';
import type { Decision, PolicyEngine, PolicyInput } from './types.js';

interface CompiledRule {
  id: string;
  /** `undefined` = every method of the route. */
  methods: ReadonlySet<string> | undefined;
  roles: ReadonlySet<string>;
}

const NO_RULE: Decision = Object.freeze({
  outcome: 'deny',
  ruleIds: Object.freeze([]),
  reason: 'no rule allows this request (deny by default)',
});

/**
 * Deny-by-default role rules: a rule allows the listed roles on the listed routes (optionally only for
 * some methods). Rules are indexed by route id at load; a decision is a map lookup and a few set
 * lookups. This is the walking skeleton's engine; the full policy engine replaces it behind the same
 * {@link PolicyEngine} interface.
 *
 * @example
 * const engine = compileRoleRules([{ id: 'viewers-read', effect: 'allow', routes: ['orders'], methods: ['GET'], roles: ['viewer'] }]);
 */
export function compileRoleRules(rules: readonly PolicyRuleConfig[]): PolicyEngine {
  const byRoute = new Map<string, CompiledRule[]>();
  for (const rule of rules) {
    const compiled: CompiledRule = {
      id: rule.id,
      methods: rule.methods ? new Set(rule.methods) : undefined,
      roles: new Set(rule.roles),
    };
    for (const routeId of rule.routes) {
      const list = byRoute.get(routeId) ?? [];
      list.push(compiled);
      byRoute.set(routeId, list);
    }
  }
  const allowDecisions = new Map<string, Decision>();
  for (const list of byRoute.values()) {
    for (const r of list) {
      allowDecisions.set(
        r.id,
        Object.freeze({
          outcome: 'allow',
          ruleIds: Object.freeze([r.id]),
          reason: `allowed by rule ${r.id}`,
        }),
      );
    }
  }

  return {
    decide(input: PolicyInput): Decision {
      const candidates = byRoute.get(input.resource.routeId);
      if (!candidates) return NO_RULE;
      const method = input.action.method === 'HEAD' ? 'GET' : input.action.method;
      for (const rule of candidates) {
        if (rule.methods && !rule.methods.has(input.action.method) && !rule.methods.has(method)) continue;
        for (const role of input.principal.roles) {
          if (rule.roles.has(role)) return allowDecisions.get(rule.id) ?? NO_RULE;
        }
      }
      return NO_RULE;
    },
  };
}
