export { type AgentSvid, fetchJwtSvid, fetchX509Svid } from './agent-client.js';
export {
  JtiReplayCache,
  JWT_SVID_MAX_LIFETIME_SEC,
  JWT_SVID_TYP,
  type VerifiedJwtSvid,
  verifyJwtSvid,
} from './jwt-svid.js';
export { mtlsClientOptions, mtlsServerOptions, peerSpiffeId, type SpiffeIdMatcher } from './mtls.js';
export {
  ASSERTION_TYP,
  type VerifiedAssertion,
  type VerifyAssertionOptions,
  verifyAssertion,
} from './verify-assertion.js';
