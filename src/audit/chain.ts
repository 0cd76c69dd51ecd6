import { createHash } from 'node:crypto';
import type { AuditRecord, ChainHasher } from '../store/index.js';

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
  return createHash('sha256')
    .update(`${prevHash}\n${r.seq}\n${r.ts}\n${r.type}\n`)
    .update(r.data)
    .digest('hex');
};

export type ChainVerification =
  | { ok: true; count: number; head: string }
  | { ok: false; count: number; badSeq: number; reason: string };

/**
 * Walks the chain in order and reports the first record that breaks it: an edited record (its hash no
 * longer matches its content), a removed one (a gap in `seq`, or a successor whose `prev_hash` no
 * longer matches), or a re-ordered one.
 *
 * @example
 * const v = await verifyChain(store.audit.scan());
 * if (!v.ok) console.error(`record ${v.badSeq}: ${v.reason}`);
 */
export async function verifyChain(
  records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>,
): Promise<ChainVerification> {
  let expectedSeq = 1;
  let prev = GENESIS_HASH;
  let count = 0;
  for await (const r of records) {
    if (r.seq !== expectedSeq) {
      return r.seq > expectedSeq
        ? {
            ok: false,
            count,
            badSeq: expectedSeq,
            reason: `record ${expectedSeq}${r.seq - expectedSeq > 1 ? `–${r.seq - 1}` : ''} is missing (next present is ${r.seq})`,
          }
        : {
            ok: false,
            count,
            badSeq: r.seq,
            reason: `record ${r.seq} is out of order (expected ${expectedSeq})`,
          };
    }
    if (r.prevHash !== prev) {
      return {
        ok: false,
        count,
        badSeq: r.seq,
        reason: `record ${r.seq} does not link to record ${r.seq - 1} (prev_hash mismatch)`,
      };
    }
    const h = chainHash(prev, { seq: r.seq, ts: r.ts, type: r.type, data: r.data });
    if (h !== r.hash) {
      return { ok: false, count, badSeq: r.seq, reason: `record ${r.seq} was altered (hash mismatch)` };
    }
    prev = r.hash;
    expectedSeq += 1;
    count += 1;
  }
  return { ok: true, count, head: prev };
}
