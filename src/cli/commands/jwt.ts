import { readFileSync } from 'node:fs';
import type { JSONWebKeySet } from 'jose';
import { type AllowedAlg, keyResolver, TokenVerificationError, verifyToken } from '../../identity/index.js';
import { type CliIO, type Command, parse, UsageError } from '../io.js';

const USAGE =
  'usage: portcullis jwt verify --jwks FILE|URL [--iss ISSUER] [--aud AUDIENCE] [--alg ES256|EdDSA] TOKEN';

/**
 * `portcullis jwt verify`: verifies a token against a JWKS (file or URL) with the same verifier the
 * gateway uses; prints the verified claims, or the reason it was refused (exit 1).
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
  const algs = (values.alg ?? ['ES256']) as AllowedAlg[];
  if (algs.some((a) => a !== 'ES256' && a !== 'EdDSA')) throw new UsageError('--alg must be ES256 or EdDSA');

  let source: JSONWebKeySet | URL;
  if (/^https?:\/\//.test(values.jwks)) {
    source = new URL(values.jwks);
  } else {
    try {
      source = JSON.parse(readFileSync(values.jwks, 'utf8')) as JSONWebKeySet;
    } catch (err) {
      io.stderr.write(`cannot read JWKS ${values.jwks}: ${(err as Error).message}\n`);
      return 1;
    }
  }
  try {
    const claims = await verifyToken(token, keyResolver(source), {
      issuer: values.iss ?? null,
      audience: values.aud ?? null,
      algorithms: algs,
    });
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
