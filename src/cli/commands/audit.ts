import { verifyChain } from '../../audit/index.js';
import { loadConfigFile } from '../../config/index.js';
import { databasePath } from '../../portcullis.js';
import { openSqliteStore } from '../../store/index.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = 'usage: portcullis audit verify [--config FILE]';

/**
 * `portcullis audit verify`: recomputes the whole hash chain from the database and names the first
 * record that was edited, removed or re-ordered. Exit 0 when intact, 1 when not.
 */
export const audit: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub !== 'verify') throw new UsageError(USAGE);
  const { values } = parse(rest, CONFIG_OPTION, false);
  const { dataDir } = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  const store = openSqliteStore(databasePath(dataDir), { readonly: true });
  try {
    const result = await verifyChain(store.audit.scan());
    if (result.ok) {
      io.stdout.write(`audit chain intact: ${result.count} records, head ${result.head}\n`);
      return 0;
    }
    io.stdout.write(
      `audit chain BROKEN at record ${result.badSeq}: ${result.reason} (${result.count} records verified before it)\n`,
    );
    return 1;
  } finally {
    await store.close();
  }
};
