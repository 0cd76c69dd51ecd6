export { compileRoleRules } from './role-rules.js';
export type { Decision, Outcome, PolicyEngine, PolicyInput } from './types.js';
