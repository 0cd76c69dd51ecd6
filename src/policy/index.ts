export {
  CelCompileError,
  CelError,
  type CelScope,
  type CompiledCondition,
  celEquals,
  compileCondition,
  compileExpression,
} from './cel.js';
export {
  type CompiledPolicy,
  type ConditionTrace,
  compilePolicy,
  type Explanation,
  type PolicySpec,
  type PolicyWarning,
  policySpec,
  type RoleSource,
  type RuleSource,
  type RuleTrace,
} from './engine.js';
export { loadPolicy, policySpecOf } from './load.js';
export type {
  Decision,
  Outcome,
  PolicyAuthentication,
  PolicyContext,
  PolicyEngine,
  PolicyInput,
  PolicyPrincipal,
  PolicyResource,
  Requirements,
} from './types.js';
