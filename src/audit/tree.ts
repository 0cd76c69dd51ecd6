import type { KeyObject } from 'node:crypto';
import type { Clock, Logger } from '../core/index.js';
import type { AuditRecord, AuditStore, StoredCheckpoint } from '../store/index.js';
import type { CheckpointAnchor } from './anchor.js';
import { chainHash, GENESIS_HASH } from './chain.js';
import { type CheckpointSigner, openCheckpoint } from './checkpoint.js';
import { type Hash, leafHash, RootAccumulator } from './merkle.js';

/**
 * The bytes of a record as a Merkle leaf: its RFC 8785 canonical JSON `{"data","seq","ts","type"}`
 * (members already in canonical order; `data` is itself canonical JSON). Leaf index = seq − 1.
 */
export function entryBytes(r: Pick<AuditRecord, 'seq' | 'ts' | 'type' | 'data'>): string {
  return `{"data":${r.data},"seq":${r.seq},"ts":${r.ts},"type":${JSON.stringify(r.type)}}`;
}

export const recordLeaf = (r: Pick<AuditRecord, 'seq' | 'ts' | 'type' | 'data'>): Hash =>
  leafHash(entryBytes(r));

/** Every leaf hash of the log, in order (for proofs; O(n)). */
export async function loadLeaves(records: AsyncIterable<AuditRecord>): Promise<Hash[]> {
  const out: Hash[] = [];
  for await (const r of records) out.push(recordLeaf(r));
  return out;
}

export type LogVerification =
  | { ok: true; count: number; head: string; root: string; checkpointsVerified: number }
  | { ok: false; count: number; badSeq?: number; reason: string };

export interface VerifyLogOptions {
  /** Checkpoints read back from anchors outside the database; they must agree with the log too. */
  anchored?: readonly StoredCheckpoint[];
  /** Verify each checkpoint's signature with this key (its note name must match). */
  key?: { name: string; publicKey: KeyObject };
  /** Called every `progressEvery` records with the count so far. */
  onProgress?: (count: number) => void;
  progressEvery?: number;
}

/**
 * Verifies the whole log in one pass: the hash chain (naming the first edited, missing or re-ordered
 * record), the Merkle root at every checkpoint size against the signed checkpoint (a rewritten history
 * cannot match a signature made before it), each checkpoint's signature, and that no checkpoint is
 * larger than the log (truncation or rollback).
 */
export async function verifyLog(
  records: AsyncIterable<AuditRecord> | Iterable<AuditRecord>,
  checkpoints: readonly StoredCheckpoint[],
  options: VerifyLogOptions = {},
): Promise<LogVerification> {
  // Stored and anchored checkpoints are all checked (root and signature); two for one size must agree.
  const all = [...checkpoints, ...(options.anchored ?? [])];
  const bySize = new Map<number, StoredCheckpoint>();
  for (const cp of all) {
    const seen = bySize.get(cp.size);
    if (seen && seen.root !== cp.root) {
      return {
        ok: false,
        count: 0,
        reason: `two different checkpoints for size ${cp.size} (stored vs anchored): history was rewritten`,
      };
    }
    bySize.set(cp.size, cp);
  }
  const sorted = all.sort((a, b) => a.size - b.size);
  const acc = new RootAccumulator();
  let cpIndex = 0;
  let verified = 0;
  let prev = GENESIS_HASH;
  let expected = 1;
  const every = options.progressEvery ?? 10_000;
  const checkAt = (size: number): { ok: false; count: number; reason: string } | undefined => {
    while (cpIndex < sorted.length && (sorted[cpIndex] as StoredCheckpoint).size === size) {
      const cp = sorted[cpIndex] as StoredCheckpoint;
      cpIndex += 1;
      const root = acc.root().toString('hex');
      if (cp.root !== root) {
        return {
          ok: false,
          count: size,
          reason: `checkpoint at size ${size} does not match the log (history rewritten)`,
        };
      }
      if (options.key) {
        try {
          const opened = openCheckpoint(cp.note, options.key);
          if (opened.size !== size || opened.root.toString('hex') !== root)
            throw new Error('note does not match the stored checkpoint');
        } catch (err) {
          return { ok: false, count: size, reason: `checkpoint at size ${size}: ${(err as Error).message}` };
        }
      }
      verified += 1;
    }
    return undefined;
  };
  const atZero = checkAt(0);
  if (atZero) return atZero;
  for await (const r of records) {
    if (r.seq !== expected) {
      return r.seq > expected
        ? {
            ok: false,
            count: acc.size,
            badSeq: expected,
            reason: `record ${expected} is missing (next present is ${r.seq})`,
          }
        : {
            ok: false,
            count: acc.size,
            badSeq: r.seq,
            reason: `record ${r.seq} is out of order (expected ${expected})`,
          };
    }
    if (r.prevHash !== prev) {
      return {
        ok: false,
        count: acc.size,
        badSeq: r.seq,
        reason: `record ${r.seq} does not link to record ${r.seq - 1} (prev_hash mismatch)`,
      };
    }
    if (chainHash(prev, r) !== r.hash) {
      return {
        ok: false,
        count: acc.size,
        badSeq: r.seq,
        reason: `record ${r.seq} was altered (hash mismatch)`,
      };
    }
    prev = r.hash;
    expected += 1;
    acc.push(recordLeaf(r));
    const bad = checkAt(acc.size);
    if (bad) return { ...bad, badSeq: r.seq };
    if (options.onProgress && acc.size % every === 0) options.onProgress(acc.size);
  }
  if (cpIndex < sorted.length) {
    const cp = sorted[cpIndex] as StoredCheckpoint;
    return {
      ok: false,
      count: acc.size,
      reason: `log has ${acc.size} records but a checkpoint covers ${cp.size} (truncated or rolled back)`,
    };
  }
  return {
    ok: true,
    count: acc.size,
    head: prev,
    root: acc.root().toString('hex'),
    checkpointsVerified: verified,
  };
}

export interface CheckpointerOptions {
  store: AuditStore;
  signer: CheckpointSigner;
  clock: Clock;
  log: Logger;
  /** Checkpoint after this many new records… */
  everyRecords: number;
  /** …or this many ms after the first record not yet covered. */
  intervalMs: number;
  /** Copies of each checkpoint outside the database. */
  anchors?: readonly CheckpointAnchor[];
}

/**
 * Signs checkpoints of the growing log: the Merkle root is kept incrementally (O(log n) state) from the
 * records each commit returns; it is rebuilt from the store when records were appended elsewhere (the
 * CLI, another writer). A checkpoint is stored only if it extends the previous one's tree.
 */
export class Checkpointer {
  readonly #o: CheckpointerOptions;
  #acc: RootAccumulator | undefined;
  #lastSize = -1;
  #lastAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> = Promise.resolve();

  constructor(options: CheckpointerOptions) {
    this.#o = options;
  }

  /** Feed committed records (in order). */
  onCommitted(records: readonly AuditRecord[]): void {
    if (this.#acc) {
      for (const r of records) {
        if (r.seq !== this.#acc.size + 1) {
          this.#acc = undefined; // someone else appended: rebuild on the next checkpoint
          break;
        }
        this.#acc.push(recordLeaf(r));
      }
    }
    const last = records.at(-1);
    if (!last) return;
    if (last.seq - Math.max(this.#lastSize, 0) >= this.#o.everyRecords) void this.checkpoint();
    else this.#timer ??= setTimeout(() => void this.checkpoint(), this.#o.intervalMs).unref();
  }

  /** Signs and stores a checkpoint of everything committed so far (no-op if nothing is new). */
  checkpoint(): Promise<void> {
    this.#running = this.#running
      .then(() => this.#checkpoint())
      .catch((err) => {
        this.#o.log.error({ err }, 'audit checkpoint failed');
      });
    return this.#running;
  }

  /** When the last checkpoint was signed by this process (ms since epoch; 0 = not yet). */
  get lastCheckpointAt(): number {
    return this.#lastAt;
  }

  close(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    return this.checkpoint();
  }

  async #checkpoint(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    // Sequence numbers are gap-free, so the last one is the count — an index lookup, where count(*)
    // scans the whole log (it cost 18% of the CPU in bench/micro/audit-under-load.mjs).
    const count = await this.#o.store.lastSeq();
    const previous = await this.#o.store.latestCheckpoint();
    if (!this.#acc || this.#acc.size !== count) {
      // Rebuild from the store, and make sure the stored history still has the last signed root:
      // a checkpoint must only ever extend the previous one.
      const acc = new RootAccumulator();
      let extendsPrevious = previous === undefined;
      for await (const r of this.#o.store.scan()) {
        acc.push(recordLeaf(r));
        if (previous && acc.size === previous.size)
          extendsPrevious = acc.root().toString('hex') === previous.root;
      }
      if (!extendsPrevious) {
        this.#o.log.error(
          { size: previous?.size },
          'audit log no longer matches its last checkpoint; not signing',
        );
        return;
      }
      this.#acc = acc;
    }
    const size = this.#acc.size;
    this.#lastSize = Math.max(this.#lastSize, previous?.size ?? 0);
    if (size === 0 || size === previous?.size) return;
    const cp = this.#o.signer.sign(size, this.#acc.root());
    const stored = { size, root: cp.root.toString('hex'), note: cp.note, createdAt: this.#o.clock.now() };
    await this.#o.store.saveCheckpoint(stored);
    this.#lastSize = size;
    this.#lastAt = stored.createdAt;
    for (const anchor of this.#o.anchors ?? []) {
      try {
        await anchor.publish(stored);
      } catch (err) {
        this.#o.log.error({ err, anchor: anchor.name, size }, 'could not anchor audit checkpoint');
      }
    }
  }
}
