import { readFileSync } from 'node:fs';
import type { JSONWebKeySet } from 'jose';
import { loadConfigFile } from '../../config/index.js';
import { withCore } from '../core.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis service-account add NAME --scope S [--scope S ...] [--role R ...] [--audience A ...]
                                  [--spiffe-id spiffe://…] [--jwks FILE]   (without --jwks: a client secret, shown once)
  portcullis service-account list
  portcullis service-account rotate-key NAME [--jwks FILE]                (a new secret, or new public keys)
every command takes --config FILE`;

/** `portcullis service-account …`: machine identities for the client credentials grant. */
export const serviceAccount: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub === 'add') return add(rest, io);
  if (sub === 'list') return list(rest, io);
  if (sub === 'rotate-key') return rotate(rest, io);
  throw new UsageError(USAGE);
};

function readJwks(file: string | undefined): JSONWebKeySet | undefined {
  if (file === undefined) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet;
}

async function add(argv: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...CONFIG_OPTION,
    scope: { type: 'string', multiple: true },
    role: { type: 'string', multiple: true },
    audience: { type: 'string', multiple: true },
    'spiffe-id': { type: 'string' },
    jwks: { type: 'string' },
  });
  const name = positionals[0];
  if (!name || positionals.length !== 1 || !values.scope?.length) throw new UsageError(USAGE);
  const jwks = readJwks(values.jwks);
  return withCore(loadConfigFile(configPath(values.config, io), io.env ?? process.env), io, async (core) => {
    const { account, secret } = await core.clients.create({
      name,
      scopes: values.scope ?? [],
      roles: values.role ?? [],
      ...(values.audience ? { audiences: values.audience } : {}),
      ...(values['spiffe-id'] ? { spiffeId: values['spiffe-id'] } : {}),
      ...(jwks ? { jwks } : {}),
    });
    io.stdout.write(
      `created service account ${account.name}: client_id=${account.id} scopes=[${account.scopes.join(' ')}] audiences=[${account.audiences.join(' ')}]\n`,
    );
    if (secret) io.stdout.write(`client secret (shown once): ${secret}\n`);
    else io.stdout.write('authentication: private_key_jwt with the registered keys\n');
    return 0;
  });
}

async function list(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(argv, CONFIG_OPTION, false);
  return withCore(loadConfigFile(configPath(values.config, io), io.env ?? process.env), io, async (core) => {
    const all = await core.store.serviceAccounts.list();
    for (const a of all) {
      io.stdout.write(
        `${a.name}\t${a.status}\t${a.jwks ? 'private_key_jwt' : 'client_secret'}\tscopes=[${a.scopes.join(' ')}]\troles=[${a.roles.join(', ')}]\t${a.spiffeId ?? '-'}\n`,
      );
    }
    if (all.length === 0) io.stdout.write('no service accounts\n');
    return 0;
  });
}

async function rotate(argv: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONFIG_OPTION, jwks: { type: 'string' } });
  const name = positionals[0];
  if (!name || positionals.length !== 1) throw new UsageError(USAGE);
  const jwks = readJwks(values.jwks);
  return withCore(loadConfigFile(configPath(values.config, io), io.env ?? process.env), io, async (core) => {
    const secret = await core.clients.rotate(name, jwks);
    io.stdout.write(
      secret
        ? `new client secret (shown once): ${secret}\n`
        : 'new keys registered; the old ones no longer work\n',
    );
    return 0;
  });
}
