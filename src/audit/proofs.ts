import type { AuditStore } from '../store/index.js';
import { consistencyProof, inclusionProof, treeRoot } from './merkle.js';
import { loadLeaves, recordLeaf } from './tree.js';

/** An inclusion proof with everything needed to check it offline (RFC 9162 §2.1.3). */
export interface InclusionBundle {
  record: { seq: number; ts: number; type: string; data: unknown };
  leafIndex: number;
  leafHash: string;
  treeSize: number;
  root: string;
  proof: string[];
  /** The signed checkpoint for `treeSize`, when one exists. */
  checkpoint: string | null;
}

export interface ConsistencyBundle {
  first: { size: number; root: string; checkpoint: string | null };
  second: { size: number; root: string; checkpoint: string | null };
  proof: string[];
}

const hex = (h: Buffer) => h.toString('hex');

/**
 * Proves record `seq` is in the tree of `size` records (default: the latest checkpoint that covers it,
 * else the whole log). Throws RangeError on sizes outside the log. O(n): reads every leaf.
 */
export async function inclusionBundle(
  store: AuditStore,
  seq: number,
  size?: number,
): Promise<InclusionBundle> {
  const leaves = await loadLeaves(store.scan());
  const checkpoints = await store.checkpoints();
  const latest = checkpoints.at(-1)?.size;
  const n = size ?? (latest !== undefined && latest >= seq ? latest : leaves.length);
  if (!(Number.isSafeInteger(seq) && Number.isSafeInteger(n) && seq >= 1 && seq <= n && n <= leaves.length)) {
    throw new RangeError(`need 1 <= seq <= size <= ${leaves.length}`);
  }
  let record: InclusionBundle['record'] | undefined;
  for await (const r of store.scan(seq)) {
    if (r.seq !== seq || !recordLeaf(r).equals(leaves[seq - 1] as Buffer))
      throw new Error('record changed while proving');
    record = { seq: r.seq, ts: r.ts, type: r.type, data: JSON.parse(r.data) };
    break;
  }
  if (!record) throw new RangeError(`no record ${seq}`);
  return {
    record,
    leafIndex: seq - 1,
    leafHash: hex(leaves[seq - 1] as Buffer),
    treeSize: n,
    root: hex(treeRoot(leaves, n)),
    proof: inclusionProof(leaves, seq - 1, n).map(hex),
    checkpoint: checkpoints.find((c) => c.size === n)?.note ?? null,
  };
}

/** Proves the tree of `first` records is a prefix of the tree of `second` (RFC 9162 §2.1.4). */
export async function consistencyBundle(
  store: AuditStore,
  first: number,
  second: number,
): Promise<ConsistencyBundle> {
  const leaves = await loadLeaves(store.scan());
  if (
    !(
      Number.isSafeInteger(first) &&
      Number.isSafeInteger(second) &&
      first >= 0 &&
      first <= second &&
      second <= leaves.length
    )
  ) {
    throw new RangeError(`need 0 <= first <= second <= ${leaves.length}`);
  }
  const checkpoints = await store.checkpoints();
  const side = (size: number) => ({
    size,
    root: hex(treeRoot(leaves, size)),
    checkpoint: checkpoints.find((c) => c.size === size)?.note ?? null,
  });
  return {
    first: side(first),
    second: side(second),
    proof: consistencyProof(leaves, first, second).map(hex),
  };
}
