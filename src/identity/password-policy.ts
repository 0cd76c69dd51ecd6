import { createRequire } from 'node:module';
import { PortcullisError } from '../core/index.js';

export const PASSWORD_MIN = 12;
export const PASSWORD_MAX = 128;

/**
 * The 49,233 most common passwords of `@zxcvbn-ts/language-common` (MIT), lower-cased, loaded once, on
 * the first password check (the package's dictionaries weigh ~2.5 MB of heap that a gateway which never
 * sets a password need not carry; its CommonJS build loads synchronously).
 * A password equal to one of them (ignoring case) is refused whatever its length.
 */
let common: ReadonlySet<string> | undefined;
function commonPasswords(): ReadonlySet<string> {
  if (common) return common;
  const { dictionary } = createRequire(import.meta.url)('@zxcvbn-ts/language-common') as {
    dictionary: Record<string, string[]>;
  };
  common = new Set(dictionary['passwords-common']?.map((p) => p.toLowerCase()));
  return common;
}

/** How many common passwords are bundled (for tests and docs). */
export function commonPasswordCount(): number {
  return commonPasswords().size;
}

/**
 * NIST SP 800-63B / OWASP ASVS V6 password rules: 12–128 characters (counted in code points after
 * NFKC), not a common password, and not containing the username or the email's local part. Throws
 * `weak_password` with a reason the user can act on.
 *
 * @example
 * checkPassword('correct horse battery staple', { username: 'alice', email: 'alice@example.com' });
 */
export function checkPassword(
  password: string,
  who: { username?: string | null; email?: string | null },
): void {
  const normalized = password.normalize('NFKC');
  const length = [...normalized].length;
  const refuse = (message: string): never => {
    throw new PortcullisError('weak_password', { message });
  };
  if (length < PASSWORD_MIN) refuse(`the password must be at least ${PASSWORD_MIN} characters`);
  if (length > PASSWORD_MAX) refuse(`the password must be at most ${PASSWORD_MAX} characters`);
  const lower = normalized.toLowerCase();
  if (commonPasswords().has(lower))
    refuse('this password is one of the most common passwords; choose another');
  const names = [who.username, who.email?.split('@')[0]].filter((n): n is string => !!n && n.length >= 3);
  for (const n of names) {
    if (lower.includes(n.normalize('NFKC').toLowerCase()))
      refuse('the password must not contain your username or email');
  }
}
