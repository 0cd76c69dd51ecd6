import { hash } from 'node:crypto';
import type { ChainHasher } from '../store/index.js';

/** `prev_hash` of the first record. */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * hash(n) = SHA-256( prev_hash(n) ‖ LF ‖ seq ‖ LF ‖ ts ‖ LF ‖ type ‖ LF ‖ data ), hex — where seq and ts
 * are decimal integers, type is a dotted name (no LF) and data is the record's canonical JSON (RFC 8785),
 * last, so the encoding is unambiguous without escaping data a second time.
 */
export const chainHash: ChainHasher = (prevHash, r) => {
  if (!Number.isSafeInteger(r.seq) || !Number.isSafeInteger(r.ts) || r.type.includes('\n')) {
    throw new TypeError('chainHash: seq and ts must be integers and type must not contain a newline');
  }
  // One-shot `crypto.hash` over one string: no Hash object per record.
  return hash('sha256', `${prevHash}\n${r.seq}\n${r.ts}\n${r.type}\n${r.data}`, 'hex');
};
