import type { loadConfigFile } from '../config/index.js';
import { createLogger, isPortcullisError } from '../core/index.js';
import { openCore } from '../portcullis.js';
import type { CliIO } from './io.js';

export type Core = Awaited<ReturnType<typeof openCore>>;

/**
 * Runs a command against the core (store, keys, audit) and always closes it. A failure is one line on
 * stderr and exit 1: a PortcullisError's public message, any other error's message.
 */
export async function withCore(
  loaded: ReturnType<typeof loadConfigFile>,
  io: CliIO,
  run: (core: Core) => Promise<number>,
): Promise<number> {
  const core = await openCore(loaded, { log: createLogger({ level: 'silent' }) });
  try {
    return await run(core);
  } catch (err) {
    io.stderr.write(`${isPortcullisError(err) ? err.publicMessage : (err as Error).message}\n`);
    return 1;
  } finally {
    await core.close();
  }
}
