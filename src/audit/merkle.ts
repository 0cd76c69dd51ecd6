import { hash } from 'node:crypto';

/**
 * RFC 9162 (Certificate Transparency v2, same as RFC 6962 §2.1) Merkle tree hashing and proofs over
 * SHA-256: leaf hash = H(0x00 ‖ entry), node hash = H(0x01 ‖ left ‖ right), the hash of the empty
 * tree = H(''). Proof generation works from the list of leaf hashes; verification needs only the
 * proof, so a third party can check it offline.
 */

const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

export type Hash = Buffer;

// One-shot `crypto.hash` (no Hash object per call): a leaf and about one node are hashed per record.
// Its hex output turned into a Buffer costs less than its 'buffer' output (0.6 vs 0.8 µs a node hash).
const sha256 = (data: string | Uint8Array): Hash => Buffer.from(hash('sha256', data, 'hex'), 'hex');
export const emptyRoot = (): Hash => sha256('');
export const leafHash = (entry: string | Uint8Array): Hash =>
  // For a string, U+0000 encodes as the single byte 0x00: the input is 0x00 ‖ UTF-8(entry).
  typeof entry === 'string' ? sha256(`\u0000${entry}`) : sha256(Buffer.concat([LEAF, entry]));
export const nodeHash = (left: Hash, right: Hash): Hash =>
  sha256(Buffer.concat([NODE, left, right], 1 + left.length + right.length));

/** Largest power of two strictly smaller than n (n ≥ 2): RFC 9162's split point k. */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH(D[lo:hi]) by the RFC's recursive definition. */
function subtreeRoot(leaves: readonly Hash[], lo: number, hi: number): Hash {
  const n = hi - lo;
  if (n === 0) return emptyRoot();
  if (n === 1) return leaves[lo] as Hash;
  const k = split(n);
  return nodeHash(subtreeRoot(leaves, lo, lo + k), subtreeRoot(leaves, lo + k, hi));
}

/** The root of the tree over the first `size` leaf hashes (default: all). */
export function treeRoot(leaves: readonly Hash[], size = leaves.length): Hash {
  return subtreeRoot(leaves, 0, size);
}

/**
 * Streaming root: feed leaf hashes in order, read the root of everything fed so far. Keeps one hash
 * per set bit of the size (O(log n) memory), so a million-entry log is verified without holding it.
 */
export class RootAccumulator {
  #stack: Array<{ size: number; hash: Hash }> = [];
  #count = 0;

  push(leaf: Hash): void {
    let node = { size: 1, hash: leaf };
    let top = this.#stack.at(-1);
    while (top && top.size === node.size) {
      this.#stack.pop();
      node = { size: node.size * 2, hash: nodeHash(top.hash, node.hash) };
      top = this.#stack.at(-1);
    }
    this.#stack.push(node);
    this.#count += 1;
  }

  get size(): number {
    return this.#count;
  }

  root(): Hash {
    if (this.#stack.length === 0) return emptyRoot();
    let acc = (this.#stack.at(-1) as { hash: Hash }).hash;
    for (let i = this.#stack.length - 2; i >= 0; i--)
      acc = nodeHash((this.#stack[i] as { hash: Hash }).hash, acc);
    return acc;
  }
}

/** PATH(m, D[0:n]) — RFC 9162 §2.1.3.1: the audit path of leaf `index` in the tree of `size` leaves. */
export function inclusionProof(leaves: readonly Hash[], index: number, size = leaves.length): Hash[] {
  if (!(index >= 0 && index < size && size <= leaves.length))
    throw new RangeError('inclusion proof: index out of range');
  const path = (m: number, lo: number, hi: number): Hash[] => {
    const n = hi - lo;
    if (n === 1) return [];
    const k = split(n);
    return m < k
      ? [...path(m, lo, lo + k), subtreeRoot(leaves, lo + k, hi)]
      : [...path(m - k, lo + k, hi), subtreeRoot(leaves, lo, lo + k)];
  };
  return path(index, 0, size);
}

/** PROOF(m, D[0:n]) — RFC 9162 §2.1.4.1: proves the tree of `m` leaves is a prefix of the tree of `n`. */
export function consistencyProof(leaves: readonly Hash[], m: number, n = leaves.length): Hash[] {
  if (!(m >= 0 && m <= n && n <= leaves.length))
    throw new RangeError('consistency proof: sizes out of range');
  if (m === 0 || m === n) return [];
  const subproof = (mm: number, lo: number, hi: number, complete: boolean): Hash[] => {
    const nn = hi - lo;
    if (mm === nn) return complete ? [] : [subtreeRoot(leaves, lo, hi)];
    const k = split(nn);
    return mm <= k
      ? [...subproof(mm, lo, lo + k, complete), subtreeRoot(leaves, lo + k, hi)]
      : [...subproof(mm - k, lo + k, hi, false), subtreeRoot(leaves, lo, lo + k)];
  };
  return subproof(m, 0, n, true);
}

/** RFC 9162 §2.1.3.2: verifies that `leaf` is at `index` in the tree of `size` leaves with `root`. */
export function verifyInclusion(
  leaf: Hash,
  index: number,
  size: number,
  proof: readonly Hash[],
  root: Hash,
): boolean {
  if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size))
    return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

/** RFC 9162 §2.1.4.2: verifies that the tree (size1, root1) is a prefix of the tree (size2, root2). */
export function verifyConsistency(
  size1: number,
  size2: number,
  root1: Hash,
  root2: Hash,
  proof: readonly Hash[],
): boolean {
  if (!(Number.isSafeInteger(size1) && Number.isSafeInteger(size2) && size1 >= 0 && size1 <= size2))
    return false;
  if (size1 === size2) return proof.length === 0 && root1.equals(root2);
  if (size1 === 0) return proof.length === 0;
  const path = [...proof];
  // If size1 is an exact power of two, root1 is the first node of the path.
  if (Number.isInteger(Math.log2(size1))) path.unshift(root1);
  if (path.length === 0) return false;
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0] as Hash;
  let sr = path[0] as Hash;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && fr.equals(root1) && sr.equals(root2);
}
