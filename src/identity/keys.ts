import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type JsonWebKey,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, type JSONWebKeySet, type JWK } from 'jose';
import { type Clock, type Logger, systemClock, writeSecretFile } from '../core/index.js';
import { SecretBox } from './secret-box.js';

export type SigningAlg = 'ES256' | 'EdDSA';

/** One signing key, pinned to one algorithm. */
export interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlg;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly publicJwk: JWK;
  /** When it signs (ms); before that it is only published (`next`). */
  readonly activatesAt: number;
}

export type KeyPurpose = 'access-token' | 'assertion';
export type KeyState = 'next' | 'current' | 'retiring';

/** A key file: metadata in clear, the private JWK sealed with the data key (AES-256-GCM). */
interface SealedKeyFile {
  kid: string;
  alg: SigningAlg;
  use: 'sig';
  createdAt: number;
  activatesAt: number;
  sealed: string;
}

/** When keys rotate by themselves (see {@link KeyRing.maintain}). */
export interface RotationSchedule {
  alg: SigningAlg;
  /** A current key signs for this long, then its successor takes over. */
  rotateEveryMs: number;
  /** The successor is published in the JWKS this long before it signs. */
  publishAheadMs: number;
  /** A replaced key stays published this long (the longest token it signed must still verify). */
  retainMs: number;
}

export interface KeyRingOptions {
  log?: Logger;
  clock?: Clock;
  /** Algorithm of a first access-token key (default ES256). */
  alg?: SigningAlg;
  /** File of the 32-byte data-encryption key; default `<dir>/data.key`. Keep it off the data disk if you can. */
  dataKeyFile?: string;
  /** How long a replaced access-token key stays published (default 1 h). */
  retainMs?: number;
}

/**
 * The gateway's keys, generated on first run (files 0600 in a 0700 folder):
 * - access-token signing keys (ES256 by default, or EdDSA) that rotate with an overlap: the next key is
 *   published before it signs, the replaced one stays published until the tokens it signed expire; the
 *   JWKS serves next, current and retiring keys, and every token carries its key's `kid`;
 * - the identity-assertion key (ES256; a different key, so one token can never pass for the other);
 * - the data-encryption key that seals the private keys and other secrets at rest (AES-256-GCM).
 *
 * @example
 * const keys = await KeyRing.loadOrCreate('.portcullis/keys', { log });
 * keys.jwks(); // { keys: [ {kid, alg: 'ES256', ...}, ... ] }
 */
export class KeyRing {
  readonly assertion: SigningKey;
  readonly dataKey: Buffer;
  /** Keys this load generated (for the audit log). */
  readonly generated: { purpose: KeyPurpose | 'data'; kid: string | undefined; file: string }[];
  readonly #dir: string;
  readonly #box: SecretBox;
  readonly #clock: Clock;
  readonly #log: Logger | undefined;
  readonly #retainMs: number;
  #accessKeys: SigningKey[] = [];
  #jwks: JSONWebKeySet = { keys: [] };
  #jwksAt = -1;

  private constructor(
    dir: string,
    dataKey: Buffer,
    assertion: SigningKey,
    options: KeyRingOptions,
    generated: KeyRing['generated'],
  ) {
    this.#dir = dir;
    this.dataKey = dataKey;
    this.#box = new SecretBox(dataKey);
    this.assertion = assertion;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.log;
    this.#retainMs = options.retainMs ?? 3_600_000;
    this.generated = generated;
  }

  static async loadOrCreate(dir: string, options: KeyRingOptions | Logger = {}): Promise<KeyRing> {
    const o: KeyRingOptions = 'info' in options ? { log: options as Logger } : (options as KeyRingOptions);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const generated: KeyRing['generated'] = [];
    const dataKeyFile = o.dataKeyFile ?? join(dir, 'data.key');
    if (!existsSync(dataKeyFile)) generated.push({ purpose: 'data', kid: undefined, file: dataKeyFile });
    const dataKey = loadOrCreateDataKey(dataKeyFile, o.log);
    const box = new SecretBox(dataKey);

    const assertionFile = join(dir, 'assertion.key.json');
    migratePlain(join(dir, 'assertion.jwk.json'), assertionFile, box, 0);
    if (!existsSync(assertionFile)) {
      const key = await newKeyFile('ES256', 0, box);
      writeSecretFile(assertionFile, `${JSON.stringify(key, null, 2)}\n`);
      generated.push({ purpose: 'assertion', kid: key.kid, file: assertionFile });
    }
    const assertion = openKeyFile(assertionFile, box);

    const accessDir = join(dir, 'access-token');
    mkdirSync(accessDir, { recursive: true, mode: 0o700 });
    const legacy = join(dir, 'access-token.jwk.json');
    if (existsSync(legacy)) migratePlain(legacy, join(accessDir, 'migrated.json'), box, 0);
    const ring = new KeyRing(dir, dataKey, assertion, o, generated);
    ring.reload();
    if (ring.#accessKeys.length === 0) {
      const key = await ring.#add(o.alg ?? 'ES256', 0);
      generated.push({ purpose: 'access-token', kid: key.kid, file: join(accessDir, `${key.kid}.json`) });
    }
    for (const g of generated) o.log?.info({ purpose: g.purpose, kid: g.kid, file: g.file }, 'generated key');
    return ring;
  }

  /** The key that signs access tokens now: the latest one whose activation time has come. */
  get accessToken(): SigningKey {
    const now = this.#clock.now();
    let current: SigningKey | undefined;
    for (const k of this.#accessKeys) if (k.activatesAt <= now) current = k;
    return current ?? (this.#accessKeys[0] as SigningKey);
  }

  /** A published access-token key by `kid` (next, current or retiring), for verification. */
  accessTokenKey(kid: string | undefined): SigningKey | undefined {
    if (kid === undefined) return undefined;
    return this.#published().find((k) => k.kid === kid);
  }

  /** Public keys: what `/.well-known/jwks.json` serves (access-token keys next/current/retiring, and the assertion key). */
  jwks(): JSONWebKeySet {
    // Recomputed when a key changes state (at most once per second of clock time).
    const now = this.#clock.now();
    if (Math.floor(now / 1000) !== this.#jwksAt) {
      this.#jwks = Object.freeze({
        keys: [...this.#published().map((k) => k.publicJwk), this.assertion.publicJwk],
      });
      this.#jwksAt = Math.floor(now / 1000);
    }
    return this.#jwks;
  }

  /** Access-token keys with their state, oldest first. */
  list(): { kid: string; alg: SigningAlg; state: KeyState | 'expired'; activatesAt: number }[] {
    const current = this.accessToken;
    const now = this.#clock.now();
    return this.#accessKeys.map((k, i) => {
      const successor = this.#accessKeys[i + 1];
      const state: KeyState | 'expired' =
        k === current
          ? 'current'
          : k.activatesAt > now
            ? 'next'
            : successor && now - successor.activatesAt <= this.#retainMs
              ? 'retiring'
              : 'expired';
      return { kid: k.kid, alg: k.alg, state, activatesAt: k.activatesAt };
    });
  }

  /** Re-reads the key folder (keys rotated by `portcullis keys rotate` in another process). */
  reload(): void {
    const dir = join(this.#dir, 'access-token');
    const keys: SigningKey[] = [];
    for (const name of readdirSync(dir).sort()) {
      if (!name.endsWith('.json')) continue;
      keys.push(openKeyFile(join(dir, name), this.#box));
    }
    keys.sort((a, b) => a.activatesAt - b.activatesAt || a.kid.localeCompare(b.kid));
    this.#accessKeys = keys;
    this.#jwksAt = -1;
  }

  /** Adds an access-token key that signs from `now + activateInMs` (published until then). */
  async rotate(alg: SigningAlg, activateInMs: number): Promise<SigningKey> {
    const key = await this.#add(alg, this.#clock.now() + Math.max(0, activateInMs));
    this.#log?.info(
      { kid: key.kid, alg, activatesAt: new Date(key.activatesAt).toISOString() },
      'access-token key added',
    );
    return key;
  }

  /**
   * Scheduled rotation: publishes the successor `publishAheadMs` before the current key has signed for
   * `rotateEveryMs`, and deletes keys replaced more than `retainMs` ago. Returns what it did.
   */
  async maintain(schedule: RotationSchedule): Promise<{ added?: SigningKey; removed: string[] }> {
    const now = this.#clock.now();
    const current = this.accessToken;
    const hasNext = this.#accessKeys.some((k) => k.activatesAt > now);
    let added: SigningKey | undefined;
    const due = Math.max(current.activatesAt, this.#createdAt(current)) + schedule.rotateEveryMs;
    if (!hasNext && now >= due - schedule.publishAheadMs) {
      added = await this.#add(schedule.alg, Math.max(due, now));
    }
    const removed: string[] = [];
    for (let i = 0; i < this.#accessKeys.length - 1; i++) {
      const k = this.#accessKeys[i] as SigningKey;
      const successor = this.#accessKeys[i + 1] as SigningKey;
      if (
        k !== this.accessToken &&
        successor.activatesAt <= now &&
        now - successor.activatesAt > schedule.retainMs
      ) {
        rmSync(join(this.#dir, 'access-token', `${k.kid}.json`), { force: true });
        removed.push(k.kid);
      }
    }
    if (removed.length > 0) this.reload();
    return { ...(added ? { added } : {}), removed };
  }

  #published(): SigningKey[] {
    const now = this.#clock.now();
    const current = this.accessToken;
    return this.#accessKeys.filter((k, i) => {
      if (k === current || k.activatesAt > now) return true;
      const successor = this.#accessKeys[i + 1];
      return successor !== undefined && now - successor.activatesAt <= this.#retainMs;
    });
  }

  #createdAt(k: SigningKey): number {
    const file = join(this.#dir, 'access-token', `${k.kid}.json`);
    try {
      return (JSON.parse(readFileSync(file, 'utf8')) as SealedKeyFile).createdAt;
    } catch {
      return k.activatesAt;
    }
  }

  async #add(alg: SigningAlg, activatesAt: number): Promise<SigningKey> {
    const content = await newKeyFile(alg, activatesAt, this.#box, this.#clock.now());
    writeSecretFile(
      join(this.#dir, 'access-token', `${content.kid}.json`),
      `${JSON.stringify(content, null, 2)}\n`,
    );
    this.reload();
    return this.#accessKeys.find((k) => k.kid === content.kid) as SigningKey;
  }
}

async function newKeyFile(
  alg: SigningAlg,
  activatesAt: number,
  box: SecretBox,
  now = Date.now(),
): Promise<SealedKeyFile> {
  const { privateKey } =
    alg === 'EdDSA' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(publicPart(jwk));
  return {
    kid,
    alg,
    use: 'sig',
    createdAt: now,
    activatesAt,
    sealed: box.seal(JSON.stringify(jwk), `signing-key:${kid}`),
  };
}

function publicPart(jwk: JWK): JWK {
  return jwk.kty === 'OKP'
    ? ({ kty: jwk.kty, crv: jwk.crv, x: jwk.x } as JWK)
    : ({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } as JWK);
}

function openKeyFile(file: string, box: SecretBox): SigningKey {
  if ((statSync(file).mode & 0o777) !== 0o600) chmodSync(file, 0o600);
  const content = JSON.parse(readFileSync(file, 'utf8')) as SealedKeyFile;
  let jwk: JWK;
  try {
    jwk = JSON.parse(box.open(content.sealed, `signing-key:${content.kid}`)) as JWK;
  } catch {
    throw new Error(`${file}: cannot decrypt the key (wrong data key, or the file was altered)`);
  }
  const okAlg =
    (content.alg === 'ES256' && jwk.kty === 'EC' && jwk.crv === 'P-256') ||
    (content.alg === 'EdDSA' && jwk.kty === 'OKP' && jwk.crv === 'Ed25519');
  if (!okAlg || typeof jwk.d !== 'string') throw new Error(`${file}: expected an ${content.alg} private key`);
  const privateKey = createPrivateKey({ key: jwk as unknown as JsonWebKey, format: 'jwk' });
  const publicKey = createPublicKey(privateKey);
  const publicJwk = Object.freeze({
    ...publicPart(jwk),
    kid: content.kid,
    alg: content.alg,
    use: 'sig',
  } as JWK);
  return {
    kid: content.kid,
    alg: content.alg,
    privateKey,
    publicKey,
    publicJwk,
    activatesAt: content.activatesAt,
  };
}

/** A key file from before keys were sealed (plain private JWK): seal it in place of the new file, delete the old. */
function migratePlain(plain: string, sealedFile: string, box: SecretBox, activatesAt: number): void {
  if (!existsSync(plain)) return;
  const jwk = JSON.parse(readFileSync(plain, 'utf8')) as JWK & { kid: string };
  const content: SealedKeyFile = {
    kid: jwk.kid,
    alg: 'ES256',
    use: 'sig',
    createdAt: statSync(plain).mtimeMs,
    activatesAt,
    sealed: box.seal(JSON.stringify(jwk), `signing-key:${jwk.kid}`),
  };
  const target = sealedFile.endsWith('migrated.json')
    ? sealedFile.replace('migrated.json', `${jwk.kid}.json`)
    : sealedFile;
  writeSecretFile(target, `${JSON.stringify(content, null, 2)}\n`);
  rmSync(plain);
}

/** The data-encryption key: 32 random bytes, base64url in a 0600 file. */
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
