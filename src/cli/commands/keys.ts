import { loadConfigFile, parseDuration } from '../../config/index.js';
import { createLogger } from '../../core/index.js';
import { openCore } from '../../portcullis.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis keys list [--config FILE]
  portcullis keys rotate [--in DURATION] [--alg ES256|EdDSA] [--config FILE]
      adds the next access-token key: published now, signing after DURATION (default: identity.signingKeys.publishAhead).
      A running gateway picks it up within 10 minutes, or at once on SIGHUP.`;

/** `portcullis keys list|rotate`: the access-token signing keys and their rotation. */
export const keys: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub !== 'list' && sub !== 'rotate') throw new UsageError(USAGE);
  const { values } = parse(
    rest,
    { ...CONFIG_OPTION, in: { type: 'string' }, alg: { type: 'string' } },
    false,
  );
  if (sub === 'list' && (values.in || values.alg)) throw new UsageError(USAGE);
  const alg = values.alg ?? undefined;
  if (alg !== undefined && alg !== 'ES256' && alg !== 'EdDSA')
    throw new UsageError('--alg must be ES256 or EdDSA');
  const inMs = values.in === undefined ? undefined : values.in === '0' ? 0 : parseDuration(values.in);
  if (values.in !== undefined && inMs === undefined)
    throw new UsageError(`--in: not a duration: ${values.in}`);
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  const core = await openCore(loaded, { log: createLogger({ level: 'silent' }) });
  try {
    if (sub === 'rotate') {
      const sk = loaded.config.identity.signingKeys;
      const key = await core.keys.rotate(alg ?? sk.algorithm, inMs ?? sk.publishAhead);
      await core.audit.write(
        {
          type: 'keys.rotated',
          data: {
            purpose: 'access-token',
            kid: key.kid,
            alg: key.alg,
            activatesAt: key.activatesAt,
            by: 'cli',
          },
        },
        'durable',
      );
      io.stdout.write(
        `added ${key.alg} key ${key.kid}; it signs from ${new Date(key.activatesAt).toISOString()}\n`,
      );
    }
    for (const k of core.keys.list()) {
      io.stdout.write(
        `${k.kid}\t${k.alg}\t${k.state}\tsigns from ${new Date(k.activatesAt).toISOString()}\n`,
      );
    }
    return 0;
  } finally {
    await core.close();
  }
};
