import { request } from 'undici';
import type { Alert, AlertSink } from '../alerts.js';
import { DeliveryQueue } from './queue.js';

export interface WebhookSinkOptions {
  url: string;
  timeoutMs: number;
  maxQueue: number;
  maxAttempts: number;
  headers?: Readonly<Record<string, string>>;
  onDrop?: (alert: Alert, why: 'queue_full' | 'gave_up', err?: unknown) => void;
}

/** POSTs each alert as JSON; non-2xx and network errors are retried with back-off. */
export class WebhookSink implements AlertSink {
  readonly name: string;
  readonly #queue: DeliveryQueue;

  constructor(o: WebhookSinkOptions) {
    this.name = `webhook:${new URL(o.url).origin}`;
    this.#queue = new DeliveryQueue(
      async (alert) => {
        const res = await request(o.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...o.headers },
          body: JSON.stringify({ alert }),
          headersTimeout: o.timeoutMs,
          bodyTimeout: o.timeoutMs,
        });
        await res.body.dump();
        if (res.statusCode < 200 || res.statusCode >= 300)
          throw new Error(`webhook answered ${res.statusCode}`);
      },
      {
        maxQueue: o.maxQueue,
        maxAttempts: o.maxAttempts,
        baseDelayMs: 200,
        ...(o.onDrop ? { onDrop: o.onDrop } : {}),
      },
    );
  }

  send(alert: Alert): void {
    this.#queue.push(alert);
  }

  idle(): Promise<void> {
    return this.#queue.idle();
  }

  close(): Promise<void> {
    return this.#queue.close();
  }
}
