import { createHmac, randomBytes } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';

/** RFC 6238 parameters every authenticator app supports: SHA-1, 6 digits, 30 s steps. */
const PERIOD = 30;
const DIGITS = 6;

/** A new TOTP seed: 160 random bits (RFC 4226 §4 recommends at least 128), base32. */
export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

/** The `otpauth://totp/...` URI an authenticator app scans. */
export function totpUri(secret: string, issuer: string, account: string): string {
  return new TOTP({
    issuer,
    label: account,
    secret: Secret.fromBase32(secret),
    period: PERIOD,
    digits: DIGITS,
    algorithm: 'SHA1',
  }).toString();
}

/** The URI as a QR code, an SVG document. (`qrcode` is loaded on first use: only enrollment needs it.) */
export async function totpQrSvg(uri: string): Promise<string> {
  const QRCode = await import('qrcode');
  return QRCode.toString(uri, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 });
}

/**
 * Checks a code within ±1 time step (RFC 6238 §5.2) and returns the absolute step it matched, so the
 * caller can refuse a step already used; undefined when the code is wrong.
 */
export function matchTotp(secret: string, code: string, now: number): number | undefined {
  if (!/^\d{6}$/.test(code)) return undefined;
  const totp = new TOTP({
    secret: Secret.fromBase32(secret),
    period: PERIOD,
    digits: DIGITS,
    algorithm: 'SHA1',
  });
  const delta = totp.validate({ token: code, timestamp: now, window: 1 });
  if (delta === null) return undefined;
  return Math.floor(now / 1000 / PERIOD) + delta;
}

const CODE_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

/** Ten single-use recovery codes, `xxxxx-xxxxx` (50 random bits each). */
export function newRecoveryCodes(count = 10): string[] {
  return Array.from({ length: count }, () => {
    const bytes = randomBytes(10);
    let s = '';
    for (const b of bytes) s += CODE_ALPHABET[b & 31];
    return `${s.slice(0, 5)}-${s.slice(5)}`;
  });
}

/** What a recovery code is stored as: a keyed hash, so a copy of the database cannot be brute-forced offline. */
export function hashRecoveryCode(key: Buffer, code: string): string {
  const normalized = code.trim().toLowerCase().replace(/[\s-]/g, '');
  return createHmac('sha256', key).update(`recovery:${normalized}`).digest('base64url');
}
