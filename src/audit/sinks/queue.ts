import type { Alert } from '../alerts.js';

/**
 * The delivery loop shared by network sinks: a bounded queue (back-pressure: past `maxQueue` the
 * oldest alert is dropped and counted), one delivery at a time, retried with exponential back-off.
 */
export class DeliveryQueue {
  readonly #deliver: (alert: Alert) => Promise<void>;
  readonly #maxQueue: number;
  readonly #maxAttempts: number;
  readonly #baseDelayMs: number;
  readonly #onDrop: (alert: Alert, why: 'queue_full' | 'gave_up', err?: unknown) => void;
  readonly #queue: Alert[] = [];
  #running: Promise<void> | undefined;
  #closed = false;

  constructor(
    deliver: (alert: Alert) => Promise<void>,
    options: {
      maxQueue: number;
      maxAttempts: number;
      baseDelayMs: number;
      onDrop?: (alert: Alert, why: 'queue_full' | 'gave_up', err?: unknown) => void;
    },
  ) {
    this.#deliver = deliver;
    this.#maxQueue = options.maxQueue;
    this.#maxAttempts = options.maxAttempts;
    this.#baseDelayMs = options.baseDelayMs;
    this.#onDrop = options.onDrop ?? (() => undefined);
  }

  push(alert: Alert): void {
    if (this.#closed) return;
    if (this.#queue.length >= this.#maxQueue) this.#onDrop(this.#queue.shift() as Alert, 'queue_full');
    this.#queue.push(alert);
    this.#running ??= this.#drain().finally(() => {
      this.#running = undefined;
    });
  }

  /** Resolves when everything queued so far was delivered or given up. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  async close(timeoutMs = 5_000): Promise<void> {
    await Promise.race([this.idle(), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    this.#closed = true;
  }

  async #drain(): Promise<void> {
    for (let alert = this.#queue.shift(); alert; alert = this.#queue.shift()) {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.#deliver(alert);
          break;
        } catch (err) {
          if (attempt >= this.#maxAttempts || this.#closed) {
            this.#onDrop(alert, 'gave_up', err);
            break;
          }
          await new Promise((r) => setTimeout(r, this.#baseDelayMs * 2 ** (attempt - 1)).unref());
        }
      }
    }
  }
}

/** Bounds shared by the network sinks. */
export interface QueueLimits {
  maxQueue: number;
  maxAttempts: number;
  onDrop?: (alert: Alert, why: 'queue_full' | 'gave_up', err?: unknown) => void;
}

/** A sink that delivers through a {@link DeliveryQueue}: subclasses say how one alert is delivered. */
export abstract class QueuedSink {
  abstract readonly name: string;
  readonly #queue: DeliveryQueue;

  constructor(limits: QueueLimits) {
    this.#queue = new DeliveryQueue((alert) => this.deliver(alert), {
      maxQueue: limits.maxQueue,
      maxAttempts: limits.maxAttempts,
      baseDelayMs: 200,
      ...(limits.onDrop ? { onDrop: limits.onDrop } : {}),
    });
  }

  /** Delivers one alert; throwing means "retry later". */
  protected abstract deliver(alert: Alert): Promise<void>;

  send(alert: Alert): void {
    this.#queue.push(alert);
  }

  /** Resolves when everything sent so far was delivered or given up. */
  idle(): Promise<void> {
    return this.#queue.idle();
  }

  close(): Promise<void> {
    return this.#queue.close();
  }
}
