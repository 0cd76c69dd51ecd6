export { canonicalJson } from './canonical.js';
export { type ChainVerification, chainHash, GENESIS_HASH, verifyChain } from './chain.js';
export { type AuditEvent, type AuditMode, AuditWriter, type AuditWriterOptions } from './writer.js';
