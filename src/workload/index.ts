export { type CaFiles, caFiles, initCa, WorkloadCa } from './ca.js';
export { SPIFFE_ISSUER_ID, SpiffePeerAuthenticator } from './peer.js';
export { createJoinToken, createWorkloadServer, spiffeBundle, type WorkloadServerOptions } from './server.js';
export { isSpiffeId, parseSpiffeId, type SpiffeId } from './spiffe-id.js';
export {
  checkLeaf,
  parseCertificates,
  parseSvid,
  pemBlocks,
  SvidError,
  type VerifiedSvid,
  verifySvid,
} from './svid.js';
