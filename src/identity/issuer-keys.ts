import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseJwks } from './jwks.js';
import { inspectJwk, KeyRefused, type PublicKeyAlg, type UsableKey } from './key-hygiene.js';

/**
 * Reads an external issuer's PEM (SPKI) public key and checks it like a fetched key
 * ({@link inspectJwk}); it is pinned to the one configured algorithm its type implies. Any problem is
 * a startup error naming `name` (the config path) and the file.
 *
 * @example
 * const { key, alg } = loadPublicKeyFile('issuers.idp.publicKeyFile', '/etc/idp.pem', ['ES256']);
 */
export function loadPublicKeyFile(
  name: string,
  file: string,
  algorithms: readonly PublicKeyAlg[],
): UsableKey {
  const fail = (reason: string): never => {
    throw new Error(`${name} ${file}: ${reason}`);
  };
  let jwk: import('node:crypto').JsonWebKey = {};
  try {
    const key = createPublicKey(readFileSync(file, 'utf8'));
    if (key.type !== 'public') fail('not a public key');
    jwk = key.export({ format: 'jwk' });
  } catch (err) {
    fail((err as Error).message);
  }
  try {
    return inspectJwk(jwk, algorithms);
  } catch (err) {
    return fail(err instanceof KeyRefused ? err.message : String(err));
  }
}

/**
 * Reads an external issuer's local JWKS file: every key must pass {@link inspectJwk} (an unsafe key is a
 * startup error naming the file and the key's kid or index); keys that are merely not for this issuer's
 * algorithms (e.g. `use: enc`) are skipped; at least one key must remain.
 *
 * @example
 * const keys = loadJwksFile('issuers.idp.jwksFile', '/etc/idp-jwks.json', ['RS256']);
 */
export function loadJwksFile(name: string, file: string, algorithms: readonly PublicKeyAlg[]): UsableKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${name} ${file}: ${(err as Error).message}`);
  }
  let parsed: ReturnType<typeof parseJwks>;
  try {
    parsed = parseJwks(doc, algorithms);
  } catch (err) {
    throw new Error(`${name} ${file}: ${(err as Error).message}`);
  }
  const bad = parsed.dropped.find((d) => d.reason.kind === 'unsafe');
  if (bad)
    throw new Error(
      `${name} ${file}: key ${bad.kid === undefined ? `#${bad.index}` : `"${bad.kid}" (#${bad.index})`}: ${bad.reason.message}`,
    );
  if (parsed.keys.length === 0)
    throw new Error(`${name} ${file}: no key usable with ${algorithms.join(', ')}`);
  return parsed.keys;
}
