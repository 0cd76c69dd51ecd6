import { loadConfigFile } from '../../config/index.js';
import { createLogger, isPortcullisError, randomToken } from '../../core/index.js';
import { normalizeUsername } from '../../identity/index.js';
import { openCore } from '../../portcullis.js';
import { StoreError } from '../../store/index.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis user add USERNAME --role ROLE [--role ROLE ...] [--email E] [--group G ...] [--attr k=v ...] [--password-stdin]
  portcullis user list
  portcullis user show USER                 (USER = username, email or id)
  portcullis user suspend USER              refuse logins and end every session now
  portcullis user activate USER
  portcullis user unlock USER               lift a temporary lock after failed logins
  portcullis user reset-mfa USER            remove TOTP and recovery codes
  portcullis user sessions USER
  portcullis user revoke USER (--session ID | --all)
every command takes --config FILE`;

/**
 * `portcullis user …`: accounts from the command line. Without --password-stdin a strong password is
 * generated and printed once.
 */
export const user: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub === 'add') return add(rest, io);
  if (sub === 'list') return list(rest, io);
  const admin = sub ? ADMIN[sub] : undefined;
  if (admin) return withUser(rest, io, admin.options ?? {}, admin.run);
  throw new UsageError(USAGE);
};

type Core = Awaited<ReturnType<typeof openCore>>;
type Found = NonNullable<Awaited<ReturnType<Core['store']['users']['get']>>>;
interface AdminCommand {
  options?: Parameters<typeof parse>[1];
  run: (core: Core, u: Found, values: Record<string, unknown>, io: CliIO) => Promise<number>;
}

const iso = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString());

const ADMIN: Record<string, AdminCommand> = {
  show: {
    run: async (core, u, _v, io) => {
      const codes = await core.store.users.unusedRecoveryCodes(u.id);
      const now = core.clock.now();
      const lines = [
        `username:   ${u.username}`,
        `id:         ${u.id}`,
        `email:      ${u.email ?? '-'}`,
        `name:       ${u.displayName ?? '-'}`,
        `status:     ${u.status}${u.lockedUntil !== null && u.lockedUntil > now ? ` (locked until ${iso(u.lockedUntil)})` : ''}`,
        `roles:      ${u.roles.join(', ') || '-'}`,
        `groups:     ${u.groups.join(', ') || '-'}`,
        `attributes: ${JSON.stringify(u.attributes)}`,
        `mfa:        ${u.totpSecret ? `totp, ${codes} recovery code(s) left` : u.totpPending ? 'totp enrolment pending' : 'none'}`,
        `created:    ${iso(u.createdAt)}`,
      ];
      io.stdout.write(`${lines.join('\n')}\n`);
      return 0;
    },
  },
  suspend: {
    run: async (core, u, _v, io) => {
      const n = await core.identity.suspend(u.id);
      io.stdout.write(`suspended ${u.username}; ${n} session(s) ended\n`);
      return 0;
    },
  },
  activate: {
    run: async (core, u, _v, io) => {
      await core.identity.activate(u.id);
      io.stdout.write(`activated ${u.username}\n`);
      return 0;
    },
  },
  unlock: {
    run: async (core, u, _v, io) => {
      await core.identity.unlock(u.id);
      io.stdout.write(`unlocked ${u.username}\n`);
      return 0;
    },
  },
  'reset-mfa': {
    run: async (core, u, _v, io) => {
      await core.identity.resetMfa(u.id);
      io.stdout.write(`MFA removed for ${u.username}; they can enrol again after signing in\n`);
      return 0;
    },
  },
  sessions: {
    run: async (core, u, _v, io) => {
      const list = await core.identity.sessions(u.id);
      for (const s of list) {
        io.stdout.write(
          `${s.id}\t${s.active ? 'active' : 'ended'}\tcreated ${iso(s.createdAt)}\tlast seen ${iso(s.lastSeenAt)}\t${s.ip ?? '-'}\t${s.acr}\t${s.userAgent ?? '-'}\n`,
        );
      }
      if (list.length === 0) io.stdout.write('no sessions\n');
      return 0;
    },
  },
  revoke: {
    options: { session: { type: 'string' }, all: { type: 'boolean' } },
    run: async (core, u, v, io) => {
      if (v.all) {
        io.stdout.write(`${await core.identity.revokeAllSessions(u.id)} session(s) ended\n`);
        return 0;
      }
      if (typeof v.session !== 'string') throw new UsageError('user revoke needs --session ID or --all');
      const ok = await core.identity.revokeSession(u.id, v.session as never);
      io.stdout.write(
        ok ? `session ${v.session} ended\n` : `no active session ${v.session} for ${u.username}\n`,
      );
      return ok ? 0 : 1;
    },
  },
};

async function withUser(
  argv: readonly string[],
  io: CliIO,
  options: NonNullable<AdminCommand['options']>,
  run: AdminCommand['run'],
): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONFIG_OPTION, ...options });
  const who = positionals[0];
  if (!who || positionals.length !== 1) throw new UsageError(USAGE);
  const loaded = loadConfigFile(configPath(values.config as string | undefined, io), io.env ?? process.env);
  const core = await openCore(loaded, { log: silentLog() });
  try {
    const u =
      (await core.store.users.findByLogin(normalizeUsername(who))) ??
      (await core.store.users.get(who as never));
    if (!u) {
      io.stderr.write(`no user ${who}\n`);
      return 1;
    }
    return await run(core, u, values as Record<string, unknown>, io);
  } finally {
    await core.close();
  }
}

async function add(argv: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...CONFIG_OPTION,
    role: { type: 'string', multiple: true },
    email: { type: 'string' },
    group: { type: 'string', multiple: true },
    attr: { type: 'string', multiple: true },
    'password-stdin': { type: 'boolean' },
  });
  const attributes: Record<string, unknown> = {};
  for (const a of values.attr ?? []) {
    const eq = a.indexOf('=');
    if (eq < 1) throw new UsageError(`--attr takes key=value, got ${a}`);
    const raw = a.slice(eq + 1);
    // Numbers and booleans as such (clearance=3), anything else as a string.
    attributes[a.slice(0, eq)] = /^-?\d+(\.\d+)?$/.test(raw)
      ? Number(raw)
      : raw === 'true'
        ? true
        : raw === 'false'
          ? false
          : raw;
  }
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
    // The full password policy (common passwords, email) is checked by createUser.
  } else {
    password = randomToken(15);
  }
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  const core = await openCore(loaded, { log: silentLog() });
  try {
    const u = await core.identity.createUser({
      username,
      password,
      roles: values.role ?? [],
      groups: values.group ?? [],
      attributes,
      ...(values.email ? { email: values.email } : {}),
    });
    io.stdout.write(`created user ${u.username} (${u.id}) roles=[${u.roles.join(', ')}]\n`);
    if (!values['password-stdin']) io.stdout.write(`password (shown once): ${password}\n`);
    return 0;
  } catch (err) {
    if (isPortcullisError(err)) {
      io.stderr.write(`${err.publicMessage}\n`);
      return 1;
    }
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
