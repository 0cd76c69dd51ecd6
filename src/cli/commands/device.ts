import { loadConfigFile } from '../../config/index.js';
import type { UserId } from '../../core/index.js';
import { withCore } from '../core.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis device list [--user NAME] [--json]
  portcullis device show ID
  portcullis device approve ID       (a pending device becomes trusted)
  portcullis device revoke ID        (refused on its next request)
every command takes --config FILE`;

/** `portcullis device …`: the device registry, as the admin API shows it. */
export const device: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub !== 'list' && sub !== 'show' && sub !== 'approve' && sub !== 'revoke') throw new UsageError(USAGE);
  const { values, positionals } = parse(rest, {
    ...CONFIG_OPTION,
    ...(sub === 'list' ? { user: { type: 'string' }, json: { type: 'boolean' } } : {}),
  } as typeof CONFIG_OPTION & { user: { type: 'string' }; json: { type: 'boolean' } });
  const id = positionals[0];
  if (sub === 'list' ? positionals.length !== 0 : positionals.length !== 1 || !id)
    throw new UsageError(USAGE);
  return withCore(loadConfigFile(configPath(values.config, io), io.env ?? process.env), io, async (core) => {
    const devices = core.devices;
    if (sub === 'list') {
      let owner: UserId | undefined;
      if (values.user !== undefined) {
        const u = await core.identity.findUser(values.user);
        if (!u) {
          io.stderr.write(`no such user: ${values.user}\n`);
          return 1;
        }
        owner = u.id;
      }
      const list = await devices.list(owner);
      if (values.json) {
        io.stdout.write(
          `${JSON.stringify(
            list.map((d) => devices.view(d)),
            null,
            2,
          )}\n`,
        );
        return 0;
      }
      for (const d of list) {
        const v = devices.view(d);
        io.stdout.write(
          `${d.id}  ${d.status.padEnd(7)}  ${v.compliant ? 'compliant    ' : 'not compliant'}  ${d.certSerial ? 'cert' : 'key '}  user=${d.userId}  ${d.name}\n`,
        );
      }
      if (list.length === 0) io.stdout.write('no devices\n');
      return 0;
    }
    const target = id as string;
    const existing = await devices.get(target);
    if (!existing) {
      io.stderr.write(`no such device: ${target}\n`);
      return 1;
    }
    const after =
      sub === 'approve'
        ? await devices.approve(target, 'cli')
        : sub === 'revoke'
          ? await devices.revoke(target, 'cli')
          : existing;
    io.stdout.write(`${JSON.stringify(devices.view(after), null, 2)}\n`);
    return 0;
  });
};
