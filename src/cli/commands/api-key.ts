import { loadConfigFile, parseDuration } from '../../config/index.js';
import { withCore } from '../core.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis api-key create NAME --role R [--role R ...] [--ttl 90d]   (the key is shown once)
  portcullis api-key list
  portcullis api-key revoke NAME                                       (refused on its next request)
every command takes --config FILE; routes accept keys (X-API-Key) when their issuers list apikey`;

/** `portcullis api-key …`: keys for machine callers that cannot do OAuth. */
export const apiKey: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub !== 'create' && sub !== 'list' && sub !== 'revoke') throw new UsageError(USAGE);
  const { values, positionals } = parse(rest, {
    ...CONFIG_OPTION,
    role: { type: 'string', multiple: true },
    ttl: { type: 'string' },
  });
  const name = positionals[0];
  if (sub === 'list' ? positionals.length !== 0 : positionals.length !== 1 || !name)
    throw new UsageError(USAGE);
  const ttl = values.ttl === undefined ? undefined : parseDuration(values.ttl);
  if (values.ttl !== undefined && ttl === undefined) throw new UsageError('--ttl: a duration such as 90d');
  return withCore(loadConfigFile(configPath(values.config, io), io.env ?? process.env), io, async (core) => {
    if (sub === 'create') {
      const { key, record } = await core.apiKeys.create(name as string, values.role ?? [], ttl);
      io.stdout.write(
        `created API key ${record.name} roles=[${record.roles.join(' ')}]${record.expiresAt ? ` expires ${new Date(record.expiresAt).toISOString()}` : ''}\nkey (shown once): ${key}\n`,
      );
      return 0;
    }
    if (sub === 'revoke') {
      if (!(await core.apiKeys.revoke(name as string))) {
        io.stderr.write(`no active API key named ${name}\n`);
        return 1;
      }
      io.stdout.write(`revoked API key ${name}\n`);
      return 0;
    }
    const now = core.clock.now();
    for (const k of await core.apiKeys.list()) {
      const state =
        k.revokedAt !== null ? 'revoked' : k.expiresAt !== null && k.expiresAt <= now ? 'expired' : 'active';
      io.stdout.write(
        `${k.name}  ${state}  roles=[${k.roles.join(' ')}]  created ${new Date(k.createdAt).toISOString()}\n`,
      );
    }
    return 0;
  });
};
