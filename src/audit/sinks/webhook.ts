import { request } from 'undici';
import type { Alert, AlertSink } from '../alerts.js';
import { QueuedSink } from './queue.js';

export interface WebhookSinkOptions {
  url: string;
  timeoutMs: number;
  maxQueue: number;
  maxAttempts: number;
  headers?: Readonly<Record<string, string>>;
  onDrop?: (alert: Alert, why: 'queue_full' | 'gave_up', err?: unknown) => void;
}

/** POSTs each alert as JSON; non-2xx and network errors are retried with back-off. */
export class WebhookSink extends QueuedSink implements AlertSink {
  readonly name: string;
  readonly #o: WebhookSinkOptions;

  constructor(o: WebhookSinkOptions) {
    super(o);
    this.#o = o;
    this.name = `webhook:${new URL(o.url).origin}`;
  }

  protected async deliver(alert: Alert): Promise<void> {
    const res = await request(this.#o.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...this.#o.headers },
      body: JSON.stringify({ alert }),
      headersTimeout: this.#o.timeoutMs,
      bodyTimeout: this.#o.timeoutMs,
    });
    await res.body.dump();
    if (res.statusCode < 200 || res.statusCode >= 300) throw new Error(`webhook answered ${res.statusCode}`);
  }
}
