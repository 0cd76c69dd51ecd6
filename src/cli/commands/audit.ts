import { createPublicKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import {
  consistencyBundle,
  inclusionBundle,
  loadFieldHasher,
  readAnchorFile,
  verifyLog,
} from '../../audit/index.js';
import { loadConfigFile } from '../../config/index.js';
import {
  anchorFileOf,
  auditHmacKeyFile,
  checkpointKeyFile,
  checkpointOrigin,
  databasePath,
} from '../../portcullis.js';
import { openSqliteStore, type Store } from '../../store/index.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';
import { exportRecords, tail } from './audit-read.js';

const USAGE = `usage:
  portcullis audit verify [--anchor FILE] [--config FILE]
  portcullis audit prove SEQ [--size N] [--config FILE]
  portcullis audit prove --consistency M N [--config FILE]
  portcullis audit hash VALUE [--config FILE]
  portcullis audit tail [-n N] [--follow] [--filter key=value ...] [--config FILE]
  portcullis audit export [--since TIME|SEQ] [--until TIME] [--filter key=value ...] --format jsonl [--config FILE]`;

/**
 * `portcullis audit verify`: recomputes the hash chain and the Merkle tree, checks every signed
 * checkpoint (signature and root), and names the first record that was edited, removed or re-ordered,
 * or the checkpoint the log no longer matches (rewritten, truncated, rolled back). Exit 0 / 1.
 *
 * `portcullis audit prove`: prints, as JSON, an RFC 9162 inclusion proof for record SEQ (or a
 * consistency proof between two sizes) against a signed checkpoint, verifiable offline.
 */
export const audit: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub === 'verify') return verify(rest, io);
  if (sub === 'prove') return prove(rest, io);
  if (sub === 'hash') {
    const { values, positionals } = parse(rest, CONFIG_OPTION);
    if (positionals.length !== 1) throw new UsageError(USAGE);
    const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
    io.stdout.write(`${loadFieldHasher(auditHmacKeyFile(loaded), []).hash(positionals[0] as string)}\n`);
    return 0;
  }
  if (sub === 'tail') return tail(rest, io, (config, fn) => withStore(config, io, fn));
  if (sub === 'export') return exportRecords(rest, io, (config, fn) => withStore(config, io, fn));
  throw new UsageError(USAGE);
};

async function withStore<T>(
  config: string | undefined,
  io: CliIO,
  fn: (store: Store, loaded: ReturnType<typeof loadConfigFile>) => Promise<T>,
) {
  const loaded = loadConfigFile(configPath(config, io), io.env ?? process.env);
  const store = openSqliteStore(databasePath(loaded.dataDir), { readonly: true });
  try {
    return await fn(store, loaded);
  } finally {
    await store.close();
  }
}

async function verify(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(argv, { ...CONFIG_OPTION, anchor: { type: 'string' } }, false);
  return withStore(values.config, io, async (store, loaded) => {
    const keyFile = checkpointKeyFile(loaded);
    const key = existsSync(keyFile)
      ? { name: checkpointOrigin(loaded.config), publicKey: createPublicKey(readFileSync(keyFile, 'utf8')) }
      : undefined;
    if (!key) io.stderr.write(`note: no checkpoint key at ${keyFile}; checkpoint signatures not checked\n`);
    const total = await store.audit.count();
    const anchor = values.anchor ?? anchorFileOf(loaded);
    const anchored = anchor === undefined ? [] : readAnchorFile(anchor);
    if (anchor === undefined) {
      io.stderr.write(
        'note: no checkpoint anchor configured; a database rolled back with its checkpoints cannot be detected\n',
      );
    }
    const result = await verifyLog(store.audit.scan(), await store.audit.checkpoints(), {
      anchored,
      ...(key ? { key } : {}),
      progressEvery: 100_000,
      onProgress: (n) =>
        io.stderr.write(`  verified ${n} / ${total} records (${Math.floor((n * 100) / total)}%)\n`),
    });
    if (result.ok) {
      io.stdout.write(
        `audit log intact: ${result.count} records, ${result.checkpointsVerified} signed checkpoints (stored and anchored copies) verified, root ${result.root}, chain head ${result.head}\n`,
      );
      return 0;
    }
    const where = result.badSeq === undefined ? '' : ` at record ${result.badSeq}`;
    io.stdout.write(
      `audit log BROKEN${where}: ${result.reason} (${result.count} records verified before it)\n`,
    );
    return 1;
  });
}

async function prove(argv: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(argv, {
    ...CONFIG_OPTION,
    size: { type: 'string' },
    consistency: { type: 'boolean' },
  });
  return withStore(values.config, io, async (store) => {
    try {
      const bundle = values.consistency
        ? await (positionals.length === 2
            ? consistencyBundle(store.audit, Number(positionals[0]), Number(positionals[1]))
            : Promise.reject(new RangeError('give two sizes')))
        : await (positionals.length === 1
            ? inclusionBundle(
                store.audit,
                Number(positionals[0]),
                values.size === undefined ? undefined : Number(values.size),
              )
            : Promise.reject(new RangeError('give one record number')));
      io.stdout.write(`${JSON.stringify(bundle, null, 2)}\n`);
      return 0;
    } catch (err) {
      if (err instanceof RangeError) throw new UsageError(`${USAGE}\n(${err.message})`);
      throw err;
    }
  });
}
