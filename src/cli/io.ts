import type { Readable } from 'node:stream';
import { type ParseArgsConfig, parseArgs } from 'node:util';

/** What a command may touch: injected so tests call commands directly. */
export interface CliIO {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  stdin?: Readable;
  env?: NodeJS.ProcessEnv;
  /** Aborting it stops long-running commands (`up`); the binary wires it to SIGINT/SIGTERM. */
  signal?: AbortSignal;
}

/** A command: argv after the command name → exit code. */
export type Command = (argv: readonly string[], io: CliIO) => Promise<number>;

export class UsageError extends Error {}

/** `util.parseArgs`, strict: unknown options are a usage error. */
export function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  argv: readonly string[],
  options: T,
  allowPositionals = true,
): ReturnType<typeof parseArgs<{ options: T; allowPositionals: boolean; strict: true }>> {
  try {
    return parseArgs({ args: [...argv], options, allowPositionals, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The config file to use: --config, then $PORTCULLIS_CONFIG, then ./portcullis.yaml. */
export function configPath(flag: string | undefined, io: CliIO): string {
  return flag ?? io.env?.PORTCULLIS_CONFIG ?? process.env.PORTCULLIS_CONFIG ?? 'portcullis.yaml';
}

export const CONFIG_OPTION = { config: { type: 'string', short: 'c' } } as const;
