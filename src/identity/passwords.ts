import { type Algorithm, hash, verify } from '@node-rs/argon2';

export interface Argon2Params {
  memoryCost: number;
  timeCost: number;
  parallelism: number;
}

/** `Algorithm.Argon2id` (a const enum in the binding's types, which isolated modules cannot read). */
const ARGON2ID = 2 as Algorithm;

/**
 * argon2id password hashing. Unknown users are checked against a dummy hash made with the same
 * parameters, so a wrong password and an unknown user cost the same time.
 *
 * @example
 * const hasher = await PasswordHasher.create({ memoryCost: 19456, timeCost: 2, parallelism: 1 });
 * const phc = await hasher.hash('correct horse battery staple');
 * await hasher.verify(phc, 'correct horse battery staple'); // true
 */
export class PasswordHasher {
  readonly #params: Argon2Params;
  readonly #dummy: string;

  private constructor(params: Argon2Params, dummy: string) {
    this.#params = params;
    this.#dummy = dummy;
  }

  static async create(params: Argon2Params): Promise<PasswordHasher> {
    const dummy = await hash('portcullis-dummy-password', { ...params, algorithm: ARGON2ID });
    return new PasswordHasher(params, dummy);
  }

  hash(password: string): Promise<string> {
    return hash(password, { ...this.#params, algorithm: ARGON2ID });
  }

  /** Whether a stored hash was made with other parameters (or another algorithm) than the configured ones. */
  needsRehash(phc: string): boolean {
    const p = this.#params;
    return !phc.startsWith(`$argon2id$v=19$m=${p.memoryCost},t=${p.timeCost},p=${p.parallelism}$`);
  }

  /** Verifies `password` against `phc`; with `phc` undefined, burns the same time and returns false. */
  async verify(phc: string | undefined, password: string): Promise<boolean> {
    try {
      const ok = await verify(phc ?? this.#dummy, password);
      return phc !== undefined && ok;
    } catch {
      return false;
    }
  }
}
