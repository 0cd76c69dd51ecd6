import type { Alert, AlertSink } from '../alerts.js';

/** Alerts as JSON lines on a stream (stdout by default), for container log collectors. */
export class StdoutSink implements AlertSink {
  readonly name = 'stdout';
  readonly #out: { write(s: string): unknown };
  constructor(out: { write(s: string): unknown } = process.stdout) {
    this.#out = out;
  }
  send(alert: Alert): void {
    this.#out.write(`${JSON.stringify({ alert })}\n`);
  }
  async close(): Promise<void> {}
}
