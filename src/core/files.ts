import { renameSync, writeFileSync } from 'node:fs';

/**
 * Writes a secret file atomically with mode 0600: a temp file created exclusively (never following an
 * existing file), then renamed into place, so a crash leaves the old file or the new one, never half.
 */
export function writeSecretFile(path: string, content: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode: 0o600, flag: 'wx' });
  renameSync(tmp, path);
}
