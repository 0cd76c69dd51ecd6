import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, type JSONWebKeySet, type JWK } from 'jose';
import { type Logger, writeSecretFile } from '../core/index.js';

/** One signing key, pinned to one algorithm. */
export interface SigningKey {
  readonly kid: string;
  readonly alg: 'ES256';
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly publicJwk: JWK;
}

/** What a key file holds: the private JWK plus its pinned algorithm and purpose. */
interface KeyFile extends JWK {
  kid: string;
  alg: 'ES256';
  use: 'sig';
}

export type KeyPurpose = 'access-token' | 'assertion';

/**
 * The gateway's signing keys, generated on first run and kept as JWK files (mode 0600, in a 0700
 * folder). One key signs access tokens, another signs identity assertions to upstreams, so one can
 * never be passed off as the other. Both are published in the JWKS.
 *
 * @example
 * const keys = KeyRing.loadOrCreate('.portcullis/keys', log);
 * keys.jwks(); // { keys: [ {kid, alg: 'ES256', ...}, ... ] }
 */
export class KeyRing {
  readonly accessToken: SigningKey;
  readonly assertion: SigningKey;
  /** 256-bit data-encryption key (AES-256-GCM) for secrets the store keeps, such as TOTP seeds. */
  readonly dataKey: Buffer;
  readonly #jwks: JSONWebKeySet;

  private constructor(accessToken: SigningKey, assertion: SigningKey, dataKey: Buffer) {
    this.accessToken = accessToken;
    this.assertion = assertion;
    this.dataKey = dataKey;
    this.#jwks = Object.freeze({ keys: [accessToken.publicJwk, assertion.publicJwk] });
  }

  static async loadOrCreate(dir: string, log?: Logger): Promise<KeyRing> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const accessToken = await loadOrCreateKey(join(dir, 'access-token.jwk.json'), log);
    const assertion = await loadOrCreateKey(join(dir, 'assertion.jwk.json'), log);
    return new KeyRing(accessToken, assertion, loadOrCreateDataKey(join(dir, 'data.key'), log));
  }

  /** Public keys only: what `/.well-known/jwks.json` serves. */
  jwks(): JSONWebKeySet {
    return this.#jwks;
  }
}

/** The data-encryption key: 32 random bytes, base64url in a 0600 file, kept apart from the database. */
function loadOrCreateDataKey(file: string, log?: Logger): Buffer {
  if (!existsSync(file)) {
    writeSecretFile(file, `${randomBytes(32).toString('base64url')}\n`);
    log?.info({ file }, 'generated data-encryption key');
  }
  if ((statSync(file).mode & 0o777) !== 0o600) chmodSync(file, 0o600);
  const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64url');
  if (key.length !== 32) throw new Error(`${file}: expected a 32-byte key (base64url)`);
  return key;
}

async function loadOrCreateKey(file: string, log?: Logger): Promise<SigningKey> {
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = privateKey.export({ format: 'jwk' }) as JWK;
    const kid = await calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } as JWK);
    const content: KeyFile = { ...jwk, kid, alg: 'ES256', use: 'sig' };
    writeSecretFile(file, `${JSON.stringify(content, null, 2)}\n`);
    log?.info({ file, kid }, 'generated signing key');
  }
  const mode = statSync(file).mode & 0o777;
  if (mode !== 0o600) {
    log?.warn({ file, mode: mode.toString(8) }, 'key file was readable by others; mode reset to 0600');
    chmodSync(file, 0o600);
  }
  const content = JSON.parse(readFileSync(file, 'utf8')) as KeyFile;
  if (
    content.alg !== 'ES256' ||
    content.kty !== 'EC' ||
    content.crv !== 'P-256' ||
    typeof content.d !== 'string'
  ) {
    throw new Error(`${file}: expected an ES256 (EC P-256) private JWK`);
  }
  const privateKey = createPrivateKey({ key: content as unknown as JsonWebKey, format: 'jwk' });
  const publicKey = createPublicKey(privateKey);
  const { kty, crv, x, y } = content;
  const publicJwk: JWK = Object.freeze({ kty, crv, x, y, kid: content.kid, alg: 'ES256', use: 'sig' } as JWK);
  return { kid: content.kid, alg: 'ES256', privateKey, publicKey, publicJwk };
}
