import './x509-eager.js';

export { type AgentOptions, type AgentState, type CurrentSvid, WorkloadAgent } from './agent.js';
export {
  type CaFiles,
  caFiles,
  caLoader,
  caStatus,
  initCa,
  maintainCa,
  newKeyAndCsr,
  prepareCaRotation,
  WorkloadCa,
} from './ca.js';
export { exportIstio, exportKubernetes, type Manifest, type MeshExport } from './export.js';
export {
  isDeviceId,
  isReservedId,
  SPIFFE_ISSUER_ID,
  SpiffePeerAuthenticator,
  type VerifiedPeer,
} from './peer.js';
export { createJoinToken, createWorkloadServer, spiffeBundle, type WorkloadServerOptions } from './server.js';
export { isSpiffeId, parseSpiffeId, type SpiffeId } from './spiffe-id.js';
export {
  checkLeaf,
  EKU,
  parseCertificates,
  parseDenylist,
  parseSvid,
  pemBlocks,
  SvidError,
  serialKey,
  type VerifiedSvid,
  verifyPath,
  verifySvid,
} from './svid.js';
