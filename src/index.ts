/**
 * Portcullis as a library. The public API is deliberately small:
 *
 * - {@link startPortcullis} — run the gateway, identity endpoints and admin listener from a config.
 * - {@link loadConfigFile}, {@link defineConfig}, {@link parseConfigText} — load and validate a config.
 * - {@link verifyToken} + {@link keyResolver} — verify a JWT against a JWKS (object or URL) with pinned algorithms.
 * - {@link verifyAssertion} — for apps behind the gateway: verify the per-request identity assertion.
 * - {@link verifyLog}, {@link verifyInclusion}, {@link verifyConsistency}, {@link openCheckpoint} — check the audit log and its proofs offline.
 * - {@link compilePolicy} + {@link policySpec} (or {@link loadPolicy} from a config) — the policy engine:
 *   `decide()` (allow | deny | challenge with rule ids) and `explain()`; {@link runPolicyTests} for policy tests.
 * - {@link runCli} — the `portcullis` command, callable in-process.
 *
 * @example
 * import { loadConfigFile, startPortcullis } from 'portcullis';
 * const pc = await startPortcullis(loadConfigFile('portcullis.yaml'));
 */
export {
  type Checkpoint,
  type LogVerification,
  openCheckpoint,
  parseVerifierKey,
  verifyConsistency,
  verifyInclusion,
  verifyLog,
} from './audit/index.js';
export { runCli } from './cli/index.js';
export {
  type Config,
  ConfigError,
  type ConfigInput,
  type ConfigIssue,
  defineConfig,
  type LoadedConfig,
  loadConfigFile,
  parseConfigText,
} from './config/index.js';
export {
  ERROR_CODES,
  type ErrorCode,
  isPortcullisError,
  PortcullisError,
  type Principal,
} from './core/index.js';
export {
  type KeySource,
  keyResolver,
  type TokenFailure,
  TokenVerificationError,
  type VerifyTokenOptions,
  verifyToken,
} from './identity/index.js';
export {
  type CompiledPolicy,
  compilePolicy,
  type Decision,
  type Explanation,
  findPolicyTestFiles,
  loadPolicy,
  type PolicyInput,
  type PolicyPrincipal,
  type PolicyWarning,
  policyInputSchema,
  policySpec,
  type Requirements,
  runPolicyTests,
} from './policy/index.js';
export {
  openCore,
  type PortcullisCore,
  type RunningPortcullis,
  type StartOptions,
  startPortcullis,
} from './portcullis.js';
export {
  type AgentSvid,
  fetchJwtSvid,
  fetchX509Svid,
  JtiReplayCache,
  mtlsClientOptions,
  mtlsServerOptions,
  peerSpiffeId,
  type SpiffeIdMatcher,
  type VerifiedAssertion,
  type VerifiedJwtSvid,
  type VerifyAssertionOptions,
  verifyAssertion,
  verifyJwtSvid,
} from './sdk/index.js';
