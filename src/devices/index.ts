export { type DpopCheck, DpopVerifier, dpopError, type VerifiedDpop } from './dpop.js';
export {
  type ComplianceRules,
  compareVersions,
  judgePosture,
  type PostureClaims,
  postureClaims,
} from './posture.js';
export {
  DEVICE_PATH_PREFIX,
  DeviceService,
  type DeviceSettings,
  type DeviceState,
  type EnrolInput,
  type Enrolment,
} from './service.js';
