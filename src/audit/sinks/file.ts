import { appendFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Alert, AlertSink } from '../alerts.js';

/**
 * Alerts as JSON lines in a file, rotated by size: `alerts.jsonl` → `alerts.jsonl.1` → … → `.keep`,
 * the oldest dropped.
 */
export class JsonLinesFileSink implements AlertSink {
  readonly name: string;
  readonly #path: string;
  readonly #maxBytes: number;
  readonly #keep: number;
  readonly #onError: (err: unknown) => void;

  constructor(path: string, options: { maxBytes: number; keep: number; onError?: (err: unknown) => void }) {
    this.#path = path;
    this.#maxBytes = options.maxBytes;
    this.#keep = options.keep;
    this.#onError = options.onError ?? (() => undefined);
    this.name = `file:${path}`;
    mkdirSync(dirname(path), { recursive: true });
  }

  send(alert: Alert): void {
    const line = `${JSON.stringify(alert)}\n`;
    try {
      if (existsSync(this.#path) && statSync(this.#path).size + Buffer.byteLength(line) > this.#maxBytes)
        this.#rotate();
      appendFileSync(this.#path, line, { mode: 0o600 });
    } catch (err) {
      this.#onError(err);
    }
  }

  async close(): Promise<void> {}

  #rotate(): void {
    rmSync(`${this.#path}.${this.#keep}`, { force: true });
    for (let i = this.#keep - 1; i >= 1; i--) {
      if (existsSync(`${this.#path}.${i}`)) renameSync(`${this.#path}.${i}`, `${this.#path}.${i + 1}`);
    }
    if (this.#keep > 0) renameSync(this.#path, `${this.#path}.1`);
    else rmSync(this.#path, { force: true });
  }
}
