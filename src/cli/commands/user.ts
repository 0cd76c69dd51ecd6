import { loadConfigFile } from '../../config/index.js';
import { createLogger, randomToken } from '../../core/index.js';
import { openCore } from '../../portcullis.js';
import { StoreError } from '../../store/index.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis user add USERNAME --role ROLE [--role ROLE ...] [--password-stdin] [--config FILE]
  portcullis user list [--config FILE]`;

/** `portcullis user add|list`. Without --password-stdin a strong password is generated and printed once. */
export const user: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub === 'add') return add(rest, io);
  if (sub === 'list') return list(rest, io);
  throw new UsageError(USAGE);
};

async function add(argv: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...CONFIG_OPTION,
    role: { type: 'string', multiple: true },
    'password-stdin': { type: 'boolean' },
  });
  const username = positionals[0];
  if (!username || positionals.length !== 1) throw new UsageError(USAGE);
  let password: string;
  if (values['password-stdin']) {
    if (!io.stdin) throw new UsageError('--password-stdin needs standard input');
    let text = '';
    for await (const chunk of io.stdin) text += chunk;
    password = text.replace(/\r?\n$/, '');
    if (password.length < 12) {
      io.stderr.write('password must be at least 12 characters\n');
      return 1;
    }
  } else {
    password = randomToken(15);
  }
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  const core = await openCore(loaded, { log: silentLog() });
  try {
    const u = await core.identity.createUser({ username, password, roles: values.role ?? [] });
    io.stdout.write(`created user ${u.username} (${u.id}) roles=[${u.roles.join(', ')}]\n`);
    if (!values['password-stdin']) io.stdout.write(`password (shown once): ${password}\n`);
    return 0;
  } catch (err) {
    if (err instanceof StoreError && err.code === 'conflict') {
      io.stderr.write(`user ${username} already exists\n`);
      return 1;
    }
    throw err;
  } finally {
    await core.close();
  }
}

async function list(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(argv, CONFIG_OPTION, false);
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  const core = await openCore(loaded, { log: silentLog() });
  try {
    const users = await core.store.users.list();
    for (const u of users) {
      io.stdout.write(
        `${u.username}\t${u.id}\t${u.status}\troles=[${u.roles.join(', ')}]\t${new Date(u.createdAt).toISOString()}\n`,
      );
    }
    if (users.length === 0) io.stdout.write('no users\n');
    return 0;
  } finally {
    await core.close();
  }
}

function silentLog() {
  return createLogger({ level: 'silent' });
}
