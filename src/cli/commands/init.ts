import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfigFile } from '../../config/index.js';
import { createLogger } from '../../core/index.js';
import { KeyRing } from '../../identity/index.js';
import { type CliIO, type Command, parse } from '../io.js';

/** The example config shipped at the package root (same path from src/ and dist/). */
export const EXAMPLE_CONFIG = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  'portcullis.example.yaml',
);

/**
 * `portcullis init [--config FILE] [--force]`: writes a starter config (the shipped example) and
 * generates the signing keys in its data directory (mode 0600).
 */
export const init: Command = async (argv, io: CliIO) => {
  const { values } = parse(
    argv,
    { config: { type: 'string', short: 'c' }, force: { type: 'boolean' } },
    false,
  );
  const file = values.config ?? 'portcullis.yaml';
  if (existsSync(file) && !values.force) {
    io.stderr.write(`${file} already exists (use --force to overwrite)\n`);
    return 1;
  }
  writeFileSync(file, readFileSync(EXAMPLE_CONFIG, 'utf8'), { mode: 0o600 });
  const { dataDir } = loadConfigFile(file, io.env ?? process.env);
  const keys = await KeyRing.loadOrCreate(join(dataDir, 'keys'), createLogger({ level: 'silent' }));
  io.stdout.write(
    `wrote ${file}\nsigning keys in ${join(dataDir, 'keys')} (kid ${keys.accessToken.kid}, ${keys.assertion.kid})\n`,
  );
  io.stdout.write(`next: portcullis up --config ${file}\n`);
  return 0;
};
