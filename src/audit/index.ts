export {
  type Alert,
  AlertEngine,
  type AlertEngineOptions,
  type AlertRule,
  type AlertSink,
  DEFAULT_ALERT_RULES,
  type Severity,
} from './alerts.js';
export { type CheckpointAnchor, FileAnchor, readAnchorFile, WebhookAnchor } from './anchor.js';
export { canonicalJson } from './canonical.js';
export { chainHash, GENESIS_HASH } from './chain.js';
export {
  type Checkpoint,
  type CheckpointSigner,
  loadCheckpointSigner,
  openCheckpoint,
  parseVerifierKey,
} from './checkpoint.js';
export {
  consistencyProof,
  emptyRoot,
  type Hash,
  inclusionProof,
  leafHash,
  nodeHash,
  RootAccumulator,
  treeRoot,
  verifyConsistency,
  verifyInclusion,
} from './merkle.js';
export {
  type ConsistencyBundle,
  consistencyBundle,
  type InclusionBundle,
  inclusionBundle,
} from './proofs.js';
export { type FieldHasher, HMAC_PREFIX, loadFieldHasher } from './redact.js';
export {
  createAlertSinks,
  formatRfc5424,
  JsonLinesFileSink,
  StdoutSink,
  SyslogSink,
  WebhookSink,
} from './sinks/index.js';
export {
  Checkpointer,
  type CheckpointerOptions,
  entryBytes,
  type LogVerification,
  loadLeaves,
  recordLeaf,
  type VerifyLogOptions,
  verifyLog,
} from './tree.js';
export {
  type AuditEvent,
  type AuditMode,
  AuditUnavailableError,
  AuditWriter,
  type AuditWriterOptions,
  type CommittedRecord,
} from './writer.js';
