import { createHmac, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeSecretFile } from '../core/index.js';

export const HMAC_PREFIX = 'hmac-sha256:';

/**
 * Sensitive fields (client IPs, usernames…) are stored as keyed HMACs, as Vault's audit devices do:
 * the log can be shared without revealing them, and whoever holds the key can still find every record
 * about a given value (`portcullis audit hash VALUE`). The key lives outside the database.
 */
export interface FieldHasher {
  /** `hmac-sha256:<base64url>` of a value. */
  hash(value: string): string;
  /** A copy of `data` with the sensitive top-level string fields replaced by their HMAC. */
  redact(data: Record<string, unknown>): Record<string, unknown>;
}

/** Loads (or creates, 0600) the 256-bit HMAC key and returns a hasher for `fields`. */
export function loadFieldHasher(keyFile: string, fields: readonly string[]): FieldHasher {
  if (!existsSync(keyFile)) {
    mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
    writeSecretFile(keyFile, `${randomBytes(32).toString('base64url')}\n`);
  }
  if ((statSync(keyFile).mode & 0o777) !== 0o600) chmodSync(keyFile, 0o600);
  const raw = Buffer.from(readFileSync(keyFile, 'utf8').trim(), 'base64url');
  if (raw.length < 32) throw new Error(`${keyFile}: the audit HMAC key must be at least 32 bytes`);
  const key: KeyObject = createSecretKey(raw);
  const sensitive = new Set(fields);
  // The same few values (client IPs, usernames) recur constantly: remember their HMACs, bounded.
  const memo = new Map<string, string>();
  const hash = (value: string) => {
    let h = memo.get(value);
    if (h === undefined) {
      h = `${HMAC_PREFIX}${createHmac('sha256', key).update(value).digest('base64url')}`;
      if (memo.size >= 10_000) memo.clear();
      memo.set(value, h);
    }
    return h;
  };
  return {
    hash,
    redact(data) {
      if (sensitive.size === 0) return data;
      let out: Record<string, unknown> | undefined;
      for (const name of sensitive) {
        const v = data[name];
        if (typeof v !== 'string' || v === '') continue;
        out ??= { ...data };
        out[name] = hash(v);
      }
      return out ?? data;
    },
  };
}
