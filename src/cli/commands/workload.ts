import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile, parseDuration } from '../../config/index.js';
import { SecretBox } from '../../identity/index.js';
import { caStatus, initCa, prepareCaRotation, WorkloadCa } from '../../workload/ca.js';
import { isDeviceId, isReservedId } from '../../workload/peer.js';
import { createJoinToken } from '../../workload/server.js';
import { parseCertificates, parseDenylist, SvidError, verifySvid } from '../../workload/svid.js';
import { loadX509 } from '../../workload/x509.js';
import { withCore } from '../core.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const CA_USAGE = `usage:
  portcullis ca init --trust-domain TD --passphrase-stdin [--config FILE]
      creates the root (key encrypted with the passphrase: move <dataDir>/ca/root.key.pem offline) and the
      intermediate that signs X.509-SVIDs (key sealed with the data key)
  portcullis ca rotate --passphrase-stdin [--activate-in 24h] [--config FILE]
      prepares the next root + intermediate: published in the trust bundle now, signing from then on
      (a running server promotes it within a minute of that time); the old root stays in the bundle
      until everything it signed has expired
  portcullis ca status [--config FILE]
      the generations (active, next, retired) and the roots the bundle publishes`;

const SVID_USAGE = `usage:
  portcullis svid join-token --spiffe-id ID [--ttl 1h] [--config FILE]
      a single-use token that lets a workload get its first SVID for ID from the workload API
  portcullis svid issue --csr FILE --spiffe-id ID [--ttl 1h] [--out FILE] [--config FILE]
  portcullis svid verify CERT.pem --bundle BUNDLE.pem [--at RFC3339] [--trust-domain TD] [--denylist FILE]
      validates a certificate chain against a bundle (path rules and the SPIFFE leaf rules); prints the
      SPIFFE ID, or the reason it is refused (exit 1)`;

async function readStdin(io: CliIO): Promise<string> {
  if (!io.stdin) throw new UsageError('--passphrase-stdin needs standard input');
  let text = '';
  for await (const chunk of io.stdin) text += chunk;
  return text.replace(/\r?\n$/, '');
}

/** `portcullis ca init`: the internal certificate authority of workload identity. */
export const ca: Command = async (argv, io) => {
  await loadX509();
  const [sub, ...rest] = argv;
  if (sub === 'rotate') return caRotate(rest, io);
  if (sub === 'status') return caShow(rest, io);
  if (sub !== 'init') throw new UsageError(CA_USAGE);
  const { values } = parse(
    rest,
    { ...CONFIG_OPTION, 'trust-domain': { type: 'string' }, 'passphrase-stdin': { type: 'boolean' } },
    false,
  );
  const trustDomain = values['trust-domain'];
  if (!trustDomain || !values['passphrase-stdin']) throw new UsageError(CA_USAGE);
  const passphrase = await readStdin(io);
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  return withCore(loaded, io, async (core) => {
    const dir = join(loaded.dataDir, 'ca');
    const files = await initCa({
      dir,
      trustDomain,
      passphrase,
      box: new SecretBox(core.keys.dataKey),
    });
    await core.audit.write(
      { type: 'ca.initialised', data: { trustDomain, bundle: files.bundle } },
      'durable',
    );
    io.stdout.write(
      `CA for spiffe://${trustDomain} created in ${dir}\n  trust bundle: ${files.bundle}\n  root key (encrypted; keep it offline): ${files.rootKey}\n`,
    );
    return 0;
  });
};

async function caRotate(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(
    argv,
    {
      ...CONFIG_OPTION,
      'activate-in': { type: 'string' },
      'passphrase-stdin': { type: 'boolean' },
      force: { type: 'boolean' },
    },
    false,
  );
  if (!values['passphrase-stdin']) throw new UsageError(CA_USAGE);
  const activateIn = parseDuration(values['activate-in'] ?? '24h');
  if (activateIn === undefined) throw new UsageError('--activate-in: a duration such as 24h');
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  // Every workload must renew at least once (and so learn the new root) before it signs anything.
  const minimum = loaded.config.workload.svidTtl + 600_000;
  if (activateIn < minimum && !values.force)
    throw new UsageError(
      `--activate-in must be at least the SVID TTL plus 10 minutes (${Math.ceil(minimum / 60_000)}m), so every workload has the new root before it signs; --force to go ahead anyway`,
    );
  const passphrase = await readStdin(io);
  return withCore(loaded, io, async (core) => {
    const dir = join(loaded.dataDir, 'ca');
    const r = await prepareCaRotation({
      dir,
      passphrase,
      box: new SecretBox(core.keys.dataKey),
      activateInMs: activateIn,
    });
    await core.audit.write(
      {
        type: 'ca.rotation_prepared',
        data: { generation: r.generation, activatesAt: r.activatesAt.toISOString() },
      },
      'durable',
    );
    io.stdout.write(
      `CA generation ${r.generation} prepared: in the trust bundle now (sequence ${r.sequence}), signing from ${r.activatesAt.toISOString()}\n`,
    );
    return 0;
  });
}

async function caShow(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(argv, CONFIG_OPTION, false);
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  io.stdout.write(`${JSON.stringify(caStatus(join(loaded.dataDir, 'ca')), null, 2)}\n`);
  return 0;
}

/** `portcullis svid issue|verify`. */
export const svid: Command = async (argv, io) => {
  await loadX509();
  const [sub, ...rest] = argv;
  if (sub === 'verify') return verify(rest, io);
  if (sub === 'join-token') return joinToken(rest, io);
  if (sub === 'issue') return issue(rest, io);
  throw new UsageError(SVID_USAGE);
};

async function joinToken(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(
    argv,
    { ...CONFIG_OPTION, 'spiffe-id': { type: 'string' }, ttl: { type: 'string' } },
    false,
  );
  const spiffeId = values['spiffe-id'];
  if (!spiffeId) throw new UsageError(SVID_USAGE);
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  const ttl = values.ttl === undefined ? loaded.config.workload.joinTokenTtl : parseDuration(values.ttl);
  if (ttl === undefined || ttl > 7 * 86_400_000) throw new UsageError('--ttl: a duration up to 7d');
  return withCore(loaded, io, async (core) => {
    const authority = await WorkloadCa.load(join(loaded.dataDir, 'ca'), new SecretBox(core.keys.dataKey));
    const token = await createJoinToken(core.store, authority, spiffeId, ttl);
    await core.audit.write({ type: 'ca.join_token_created', data: { spiffeId, ttlMs: ttl } }, 'durable');
    io.stdout.write(`join token for ${spiffeId} (single use, shown once): ${token}\n`);
    return 0;
  });
}

async function issue(argv: readonly string[], io: CliIO): Promise<number> {
  const { values } = parse(
    argv,
    {
      ...CONFIG_OPTION,
      csr: { type: 'string' },
      'spiffe-id': { type: 'string' },
      ttl: { type: 'string' },
      out: { type: 'string' },
    },
    false,
  );
  const { csr, out: outFile } = values;
  const spiffeId = values['spiffe-id'];
  if (!csr || !spiffeId) throw new UsageError(SVID_USAGE);
  const ttl = parseDuration(values.ttl ?? '1h');
  if (ttl === undefined || ttl > 30 * 86_400_000) throw new UsageError('--ttl: a duration up to 30d');
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  return withCore(loaded, io, async (core) => {
    const authority = await WorkloadCa.load(join(loaded.dataDir, 'ca'), new SecretBox(core.keys.dataKey));
    if (isReservedId(spiffeId) || isDeviceId(spiffeId))
      throw new UsageError(
        "that ID is reserved (the workload API's own, or a device: enrol devices instead)",
      );
    const out = await authority.issue(readFileSync(csr, 'utf8'), spiffeId, ttl);
    await core.audit.write(
      {
        type: 'ca.svid_issued',
        data: { spiffeId, notAfter: out.notAfter.toISOString(), by: 'cli' },
      },
      'durable',
    );
    if (outFile) writeFileSync(outFile, out.chain, { mode: 0o644 });
    else io.stdout.write(out.chain);
    return 0;
  });
}

async function verify(argv: readonly string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(argv, {
    bundle: { type: 'string' },
    at: { type: 'string' },
    'trust-domain': { type: 'string' },
    denylist: { type: 'string' },
  });
  const file = positionals[0];
  if (!file || positionals.length !== 1 || !values.bundle) throw new UsageError(SVID_USAGE);
  const at = values.at === undefined ? undefined : new Date(values.at);
  if (at && Number.isNaN(at.getTime())) throw new UsageError('--at: an RFC 3339 time');
  try {
    const roots = parseCertificates(readFileSync(values.bundle, 'utf8'));
    if (roots.length === 0) throw new SvidError('parse', `${values.bundle}: no certificates in the bundle`);
    const chain = parseCertificates(readFileSync(file, 'utf8'));
    const result = await verifySvid(chain, roots, {
      ...(values.denylist
        ? { deniedSerials: parseDenylist(readFileSync(values.denylist, 'utf8'), values.denylist) }
        : {}),
      ...(at ? { at } : {}),
      ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
    });
    io.stdout.write(`${result.spiffeId}\n`);
    return 0;
  } catch (err) {
    if (err instanceof SvidError) {
      io.stdout.write(`refused (${err.code}): ${err.message}\n`);
      return 1;
    }
    io.stderr.write(`${(err as Error).message}\n`);
    return 1;
  }
}
