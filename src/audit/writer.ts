import type { Clock, Logger } from '../core/index.js';
import type { AuditDraft, AuditRecord, AuditStore } from '../store/index.js';
import { canonicalJson } from './canonical.js';
import { chainHash, GENESIS_HASH } from './chain.js';

export type AuditMode = 'durable' | 'batched';

/** A committed record, with the data object it was written from. */
export type CommittedRecord = AuditRecord & { parsed?: Record<string, unknown> | undefined };

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
  /**
   * Called with the records of each committed batch, in order (metrics, checkpoints, alerts), each with
   * its data object as `parsed` (what `data` serializes), so observers need not parse it again.
   */
  onCommit?: (records: readonly CommittedRecord[]) => void;
  /** Called when a batch could not be committed, or a record was refused because the spool is full. */
  onFailure?: (reason: 'append_failed' | 'spool_full') => void;
  /** Records kept in memory while the store cannot be written; past it, writes are refused. */
  spoolLimit?: number;
  /** When the spool is full: whether a record of this type is dropped (true) instead of refused (false, default). */
  failOpen?: (type: string) => boolean;
  /** Replaces sensitive fields (e.g. by their HMAC) before a record is serialized. */
  redact?: (data: Record<string, unknown>) => Record<string, unknown>;
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
  readonly #opts: Required<Omit<AuditWriterOptions, 'onCommit' | 'onFailure' | 'redact'>> &
    Pick<AuditWriterOptions, 'onCommit' | 'onFailure' | 'redact'>;
  /** Queued drafts; `durable` ones have a waiter and are never retried once their waiter was failed. */
  #queue: Array<AuditDraft & { durable: boolean; parsed: Record<string, unknown> }> = [];
  #waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #closed = false;
  #retryMs = 0;

  constructor(opts: AuditWriterOptions) {
    this.#opts = { maxBatch: 512, spoolLimit: 10_000, failOpen: () => false, ...opts };
  }

  /**
   * Queues an event. Throws {@link AuditUnavailableError} synchronously when the spool is full because
   * the log cannot be written (unless the writer fails open, in which case the event is dropped and
   * counted): callers turn that into a refusal, so nothing goes unrecorded.
   */
  write(event: AuditEvent, mode: AuditMode): Promise<void> {
    if (mode === 'batched') {
      if (this.#closed) return Promise.reject(new AuditUnavailableError('audit writer is closed'));
      this.enqueue(event);
      return RESOLVED;
    }
    if (this.#closed) return Promise.reject(new AuditUnavailableError('audit writer is closed'));
    if (!this.#admit(event.type)) return RESOLVED;
    this.#push(event, true);
    const p = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    void this.flush();
    return p;
  }

  /**
   * Queues a batched event, synchronously and without a promise (the gateway's decision records, one
   * per request). Throws {@link AuditUnavailableError} when the writer is closed, or when the spool is
   * full and the writer fails closed for this type.
   */
  enqueue(event: AuditEvent): void {
    if (this.#closed) throw new AuditUnavailableError('audit writer is closed');
    if (!this.#admit(event.type)) return;
    this.#push(event, false);
    if (this.#queue.length >= this.#opts.maxBatch && this.#retryMs === 0) void this.flush();
    else
      this.#timer ??= setTimeout(
        () => void this.flush(),
        Math.max(this.#opts.flushIntervalMs, this.#retryMs),
      );
  }

  /** Whether the spool takes one more record: false = drop it (fail open); throws when failing closed. */
  #admit(type: string): boolean {
    if (this.#queue.length < this.#opts.spoolLimit) return true;
    this.#opts.onFailure?.('spool_full');
    if (!this.#opts.failOpen(type))
      throw new AuditUnavailableError('the audit log cannot be written and its spool is full');
    return false;
  }

  #push(event: AuditEvent, durable: boolean): void {
    const data = this.#opts.redact ? this.#opts.redact(event.data) : event.data;
    this.#queue.push({
      ts: this.#opts.clock.now(),
      type: event.type,
      data: canonicalJson(data),
      durable,
      parsed: data,
    });
  }

  /** Records waiting to be committed (the spool; non-zero for long only while the store fails). */
  get pending(): number {
    return this.#queue.length;
  }

  /** Commits everything queued so far. Resolves when it is on disk (or the attempt failed). */
  flush(): Promise<void> {
    // The chain must survive anything #commit throws, or no later commit would ever run.
    this.#flushing = this.#flushing
      .then(() => this.#commit())
      .catch((err: unknown) => {
        this.#opts.log.error({ err }, 'audit flush failed');
      });
    return this.#flushing;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#queue.length > 0)
      this.#opts.log.error(
        { lost: this.#queue.length },
        'audit records could not be written before shutdown',
      );
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
    let records: AuditRecord[];
    try {
      // The queued entries are drafts already (the store reads ts, type and data only).
      records = await this.#opts.store.append(batch, chainHash, GENESIS_HASH, {
        durable: batch.some((d) => d.durable),
      });
    } catch (err) {
      // Durable records are dropped: their callers are told now that the operation failed, so the log
      // must not later claim it happened. Batched records stay queued, ahead of newer ones, and are
      // retried with back-off.
      this.#queue = batch.filter((d) => !d.durable).concat(this.#queue);
      this.#retryMs = Math.min(Math.max(this.#retryMs * 2, 100), 2_000);
      for (const w of waiters)
        w.reject(new AuditUnavailableError('the audit log cannot be written', { cause: err }));
      if (!this.#closed) this.#timer = setTimeout(() => void this.flush(), this.#retryMs);
      this.#opts.onFailure?.('append_failed');
      this.#opts.log.error(
        { err, spooled: this.#queue.length },
        'audit append failed; batched records kept for retry',
      );
      return;
    }
    this.#retryMs = 0;
    for (const w of waiters) w.resolve();
    try {
      if (this.#opts.onCommit) {
        // Each committed record carries the object its data was serialized from (set in place: the
        // records are the store's fresh objects, and this runs for every record).
        for (let i = 0; i < records.length; i++) (records[i] as CommittedRecord).parsed = batch[i]?.parsed;
        this.#opts.onCommit(records as CommittedRecord[]);
      }
    } catch (err) {
      // Committed is committed: a failing observer (metrics, checkpoints, alerts) must not re-queue it.
      this.#opts.log.error({ err }, 'audit commit observer failed');
    }
  }
}

const RESOLVED: Promise<void> = Promise.resolve();

/** The audit log cannot take a record: callers refuse the operation (fail closed). */
export class AuditUnavailableError extends Error {
  readonly code = 'audit_unavailable';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AuditUnavailableError';
  }
}
