import { readFileSync } from 'node:fs';
import type { JWTVerifyGetKey } from 'jose';
import {
  localKeyResolver,
  type PublicKeyAlg,
  parseJwks,
  RemoteKeySet,
  TokenVerificationError,
  verifyToken,
} from '../../identity/index.js';
import { type CliIO, type Command, parse, UsageError } from '../io.js';

const USAGE =
  'usage: portcullis jwt verify --jwks FILE|URL [--iss ISSUER] [--aud AUDIENCE] [--alg ES256|ES384|EdDSA|RS256|PS256]… TOKEN';

const ALGORITHMS: ReadonlySet<string> = new Set(['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256']);

/**
 * `portcullis jwt verify`: verifies a token against a JWKS (file or URL) with the same verifier and
 * the same key vetting the gateway uses; prints the verified claims, or the reason it was refused (exit 1).
 */
export const jwt: Command = async (argv, io: CliIO) => {
  const [sub, ...rest] = argv;
  if (sub !== 'verify') throw new UsageError(USAGE);
  const { values, positionals } = parse(rest, {
    jwks: { type: 'string' },
    iss: { type: 'string' },
    aud: { type: 'string' },
    alg: { type: 'string', multiple: true },
  });
  const token = positionals[0];
  if (!values.jwks || !token || positionals.length !== 1) throw new UsageError(USAGE);
  const algs = (values.alg ?? ['ES256']) as PublicKeyAlg[];
  if (algs.some((a) => !ALGORITHMS.has(a)))
    throw new UsageError(`--alg must be one of ${[...ALGORITHMS].join(', ')}`);

  // The keys are vetted as the gateway vets an external issuer's (key hygiene, one algorithm per key).
  let keys: JWTVerifyGetKey;
  let remote: RemoteKeySet | undefined;
  if (/^https?:\/\//.test(values.jwks)) {
    const url = new URL(values.jwks);
    if (url.protocol === 'http:') io.stderr.write('note: the key set is fetched over plain http\n');
    remote = new RemoteKeySet({
      issuer: values.iss ?? url.origin,
      algorithms: algs,
      source: { jwksUrl: url },
      allowInsecure: true,
      log: { warn: (o, msg) => io.stderr.write(`${msg}: ${JSON.stringify(o)}\n`) },
    });
    remote.stop();
    keys = remote.getKey;
  } else {
    try {
      const { keys: usable, dropped } = parseJwks(JSON.parse(readFileSync(values.jwks, 'utf8')), algs);
      for (const d of dropped)
        io.stderr.write(`key ${d.kid ?? `#${d.index}`} not used: ${d.reason.message}\n`);
      keys = localKeyResolver(usable);
    } catch (err) {
      io.stderr.write(`cannot read JWKS ${values.jwks}: ${(err as Error).message}\n`);
      return 1;
    }
  }
  try {
    const claims = await verifyToken(token, keys, {
      issuer: values.iss ?? null,
      audience: values.aud ?? null,
      algorithms: algs,
    });
    remote?.stop();
    if (!values.iss || !values.aud)
      io.stderr.write('note: issuer and/or audience were not checked (pass --iss and --aud)\n');
    io.stdout.write(`${JSON.stringify(claims, null, 2)}\n`);
    return 0;
  } catch (err) {
    const reason =
      err instanceof TokenVerificationError ? `${err.failure}: ${err.message}` : (err as Error).message;
    io.stdout.write(`token refused: ${reason}\n`);
    return 1;
  }
};
