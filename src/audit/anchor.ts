import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { request } from 'undici';
import type { StoredCheckpoint } from '../store/index.js';

/**
 * Somewhere outside the database that keeps a copy of every signed checkpoint, so that whoever
 * controls the database (even with the signing key) cannot roll it back or rewrite it unnoticed:
 * `audit verify` checks the log against the anchored copies too.
 */
export interface CheckpointAnchor {
  readonly name: string;
  publish(checkpoint: StoredCheckpoint): Promise<void>;
}

/**
 * An append-only JSON-lines file (one checkpoint per line, fsync'd), e.g. on another volume, a WORM
 * mount, or a path shipped elsewhere by the host's log forwarder.
 *
 * @example
 * const anchor = new FileAnchor('/var/lib/portcullis-anchor/checkpoints.jsonl');
 */
export class FileAnchor implements CheckpointAnchor {
  readonly name: string;
  readonly #file: string;

  constructor(file: string) {
    this.#file = file;
    this.name = `file:${file}`;
  }

  async publish(cp: StoredCheckpoint): Promise<void> {
    mkdirSync(dirname(this.#file), { recursive: true });
    const fd = openSync(this.#file, 'a', 0o600);
    try {
      writeSync(
        fd,
        `${JSON.stringify({ size: cp.size, root: cp.root, note: cp.note, createdAt: cp.createdAt })}\n`,
      );
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/** Reads the checkpoints anchored in a {@link FileAnchor} file (a torn last line is ignored). */
export function readAnchorFile(file: string): StoredCheckpoint[] {
  if (!existsSync(file)) return [];
  const out: StoredCheckpoint[] = [];
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      const v = JSON.parse(line) as StoredCheckpoint;
      if (Number.isSafeInteger(v.size) && typeof v.root === 'string' && typeof v.note === 'string')
        out.push(v);
      else throw new Error('bad record');
    } catch (err) {
      if (i < lines.length - 2)
        throw new Error(`${file}:${i + 1}: not an anchored checkpoint`, { cause: err });
    }
  });
  return out;
}

/**
 * POSTs each checkpoint, as the same JSON object a {@link FileAnchor} line holds, to a receiver that
 * keeps them (another team's service, a transparency log witness). Whatever the receiver stores can be
 * handed to `audit verify --anchor FILE` as JSON lines. Retried with back-off; a checkpoint that cannot be
 * delivered is reported (the next one carries the whole history's root anyway).
 */
export class WebhookAnchor implements CheckpointAnchor {
  readonly name: string;
  readonly #url: string;
  readonly #headers: Readonly<Record<string, string>>;
  readonly #attempts: number;

  constructor(url: string, options: { headers?: Readonly<Record<string, string>>; attempts?: number } = {}) {
    this.#url = url;
    this.#headers = options.headers ?? {};
    this.#attempts = options.attempts ?? 5;
    this.name = `webhook:${new URL(url).origin}`;
  }

  async publish(cp: StoredCheckpoint): Promise<void> {
    const body = JSON.stringify({ size: cp.size, root: cp.root, note: cp.note, createdAt: cp.createdAt });
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      try {
        const res = await request(this.#url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...this.#headers },
          body,
          headersTimeout: 5_000,
          bodyTimeout: 5_000,
        });
        await res.body.dump();
        if (res.statusCode >= 200 && res.statusCode < 300) return;
        lastError = new Error(`anchor webhook answered ${res.statusCode}`);
      } catch (err) {
        lastError = err;
      }
      if (attempt < this.#attempts) await new Promise((r) => setTimeout(r, 100 * 2 ** (attempt - 1)));
    }
    throw lastError;
  }
}
