export { type Clock, manualClock, systemClock } from './clock.js';
export { constantTimeEqual, sha256b64url } from './ct.js';
export {
  ERROR_CODES,
  type ErrorCode,
  errorBody,
  isPortcullisError,
  PortcullisError,
  type PortcullisErrorOptions,
} from './errors.js';
export { writeSecretFile } from './files.js';
export {
  type Brand,
  newRequestId,
  newSessionId,
  newUserId,
  type RequestId,
  randomToken,
  type SessionId,
  type UserId,
} from './ids.js';
export { createLogger, type Logger, type LogOptions } from './log.js';
export { Metrics } from './metrics.js';
export { type Principal, ROLE_NAME } from './principal.js';
export { ReplayCache, type ReplayVerdict } from './replay-cache.js';
