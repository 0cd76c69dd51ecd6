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
  actionMatcher,
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
export { authorizeBodySchema, authorizeQuerySchema, policyInputSchema, toPolicyInput } from './input.js';
export { loadPolicy, policySpecOf } from './load.js';
export {
  findPolicyTestFiles,
  type PolicyTestResult,
  policyTestFileSchema,
  runPolicyTests,
} from './test-runner.js';
export type {
  Decision,
  Outcome,
  PolicyAuthentication,
  PolicyContext,
  PolicyDevice,
  PolicyEngine,
  PolicyInput,
  PolicyPrincipal,
  PolicyResource,
  Requirements,
} from './types.js';
