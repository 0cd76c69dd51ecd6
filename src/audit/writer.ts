import type { Clock, Logger } from '../core/index.js';
import type { AuditDraft, AuditRecord, AuditStore } from '../store/index.js';
import { canonicalJson } from './canonical.js';
import { chainHash, GENESIS_HASH } from './chain.js';

export type AuditMode = 'durable' | 'batched';

export interface AuditEvent {
  /** Dotted event type, e.g. `auth.login.succeeded`, `gateway.decision`. */
  type: string;
  data: Record<string, unknown>;
}

export interface AuditWriterOptions {
  store: AuditStore;
  clock: Clock;
  log: Logger;
  /** Batched entries are committed at most this many ms after they were queued. */
  flushIntervalMs: number;
  /** A batch is committed at once when it reaches this size. */
  maxBatch?: number;
  /** Called with the records of each committed batch, in order (metrics, checkpoints). */
  onCommit?: (records: readonly AuditRecord[]) => void;
  /** Called when a batch could not be committed (for metrics). */
  onFailure?: () => void;
}

/**
 * Appends events to the hash-chained audit log.
 * - `durable`: the promise resolves once the record (and everything queued before it) is committed.
 * - `batched`: the record is queued and group-committed within `flushIntervalMs`; the promise resolves
 *   at once. Each batch is one transaction, so a crash never leaves a half-written chain.
 *
 * @example
 * await audit.write({ type: 'auth.login.succeeded', data: { userId } }, 'durable');
 */
export class AuditWriter {
  readonly #opts: Required<Omit<AuditWriterOptions, 'onCommit' | 'onFailure'>> &
    Pick<AuditWriterOptions, 'onCommit' | 'onFailure'>;
  #queue: AuditDraft[] = [];
  #waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(opts: AuditWriterOptions) {
    this.#opts = { maxBatch: 512, ...opts };
  }

  write(event: AuditEvent, mode: AuditMode): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('audit writer is closed'));
    this.#queue.push({ ts: this.#opts.clock.now(), type: event.type, data: canonicalJson(event.data) });
    if (mode === 'durable') {
      const p = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
      void this.flush();
      return p;
    }
    if (this.#queue.length >= this.#opts.maxBatch) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), this.#opts.flushIntervalMs);
    return Promise.resolve();
  }

  /** Commits everything queued so far. Resolves when it is on disk. */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#commit());
    return this.#flushing;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  async #commit(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    const waiters = this.#waiters;
    this.#queue = [];
    this.#waiters = [];
    try {
      const records = await this.#opts.store.append(batch, chainHash, GENESIS_HASH);
      this.#opts.onCommit?.(records);
      for (const w of waiters) w.resolve();
    } catch (err) {
      this.#opts.onFailure?.();
      this.#opts.log.error({ err, lost: batch.length }, 'audit append failed');
      for (const w of waiters) w.reject(err);
    }
  }
}
