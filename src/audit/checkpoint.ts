import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeSecretFile } from '../core/index.js';

/**
 * Signed checkpoints in the C2SP tlog-checkpoint format (a C2SP signed note):
 *
 *     <origin>\n<tree size>\n<base64 root hash>\n\n— <key name> <base64(key hash ‖ Ed25519 signature)>\n
 *
 * key hash = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte Ed25519 public key)[:4]. The signature covers the
 * three body lines with their newlines. The signing key lives in a file outside the database, so
 * rewriting the log's rows does not let anyone re-sign a history.
 */
export interface Checkpoint {
  origin: string;
  size: number;
  root: Buffer;
  /** The whole signed note, as published and anchored. */
  note: string;
}

const EM_DASH = '\u2014';

export interface CheckpointSigner {
  readonly keyName: string;
  /** The verifier key in C2SP note form: `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`. */
  readonly verifierKey: string;
  readonly publicKey: KeyObject;
  sign(size: number, root: Buffer): Checkpoint;
}

function rawPublicKey(publicKey: KeyObject): Buffer {
  const jwk = publicKey.export({ format: 'jwk' });
  if (jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new Error('checkpoint key must be Ed25519');
  return Buffer.from(jwk.x, 'base64url');
}

function keyHash(name: string, publicKey: KeyObject): Buffer {
  return createHash('sha256')
    .update(name)
    .update('\n')
    .update(Buffer.from([1]))
    .update(rawPublicKey(publicKey))
    .digest()
    .subarray(0, 4);
}

const body = (origin: string, size: number, root: Buffer) =>
  `${origin}\n${size}\n${root.toString('base64')}\n`;

/** Loads (or creates, mode 0600) the Ed25519 checkpoint key and returns a signer named `origin`. */
export function loadCheckpointSigner(keyFile: string, origin: string): CheckpointSigner {
  if (!existsSync(keyFile)) {
    mkdirSync(dirname(keyFile), { recursive: true, mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ed25519');
    writeSecretFile(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  }
  if ((statSync(keyFile).mode & 0o777) !== 0o600) chmodSync(keyFile, 0o600);
  const privateKey = createPrivateKey(readFileSync(keyFile, 'utf8'));
  const publicKey = createPublicKey(privateKey);
  const hash = keyHash(origin, publicKey);
  return {
    keyName: origin,
    publicKey,
    verifierKey: `${origin}+${hash.toString('hex')}+${Buffer.concat([Buffer.from([1]), rawPublicKey(publicKey)]).toString('base64')}`,
    sign(size, root) {
      const text = body(origin, size, root);
      const sig = sign(null, Buffer.from(text), privateKey);
      return {
        origin,
        size,
        root,
        note: `${text}\n${EM_DASH} ${origin} ${Buffer.concat([hash, sig]).toString('base64')}\n`,
      };
    },
  };
}

/** Parses a C2SP verifier key (`name+hash+base64(0x01 ‖ key)`) into a public key. */
export function parseVerifierKey(vkey: string): { name: string; publicKey: KeyObject } {
  // name+hash+key: the name has no '+', the hash is hex, the key is base64 (which may contain '+').
  const first = vkey.indexOf('+');
  const second = vkey.indexOf('+', first + 1);
  const name = vkey.slice(0, Math.max(first, 0));
  const hashHex = vkey.slice(first + 1, Math.max(second, first + 1));
  const raw = Buffer.from(vkey.slice(second + 1), 'base64');
  if (first < 1 || second < 0 || !/^[0-9a-f]{8}$/.test(hashHex) || raw.length !== 33 || raw[0] !== 1) {
    throw new Error('malformed verifier key');
  }
  const publicKey = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: raw.subarray(1).toString('base64url') },
    format: 'jwk',
  });
  if (keyHash(name, publicKey).toString('hex') !== hashHex)
    throw new Error('verifier key hash does not match');
  return { name, publicKey };
}

/**
 * Parses a checkpoint note and verifies its signature by `key` (the name must match too). Returns the
 * checkpoint, or throws with the reason.
 */
export function openCheckpoint(note: string, key: { name: string; publicKey: KeyObject }): Checkpoint {
  const split = note.indexOf('\n\n');
  if (split === -1) throw new Error('checkpoint: no signature block');
  const text = note.slice(0, split + 1);
  const lines = text.slice(0, -1).split('\n');
  const [origin, sizeText, rootB64] = lines;
  if (lines.length < 3 || !origin || !/^\d{1,16}$/.test(sizeText ?? '') || !rootB64)
    throw new Error('checkpoint: malformed body');
  const root = Buffer.from(rootB64, 'base64');
  if (root.length !== 32 || root.toString('base64') !== rootB64)
    throw new Error('checkpoint: malformed root hash');
  const expectedHash = keyHash(key.name, key.publicKey);
  for (const line of note.slice(split + 2).split('\n')) {
    if (!line.startsWith(`${EM_DASH} ${key.name} `)) continue;
    const blob = Buffer.from(line.slice(key.name.length + 3), 'base64');
    if (blob.length !== 68 || !blob.subarray(0, 4).equals(expectedHash)) continue;
    if (verify(null, Buffer.from(text), key.publicKey, blob.subarray(4))) {
      return { origin, size: Number(sizeText), root, note };
    }
    throw new Error('checkpoint: signature does not verify');
  }
  throw new Error(`checkpoint: no signature by ${key.name}`);
}
