import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Constant-time comparison of two secrets. Both sides are hashed first so neither the content nor the
 * length of the expected value leaks through timing. Every secret comparison goes through here.
 *
 * @example
 * if (!constantTimeEqual(presentedHash, storedHash)) throw new PortcullisError('invalid_grant');
 */
export function constantTimeEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** SHA-256 of a string or bytes, base64url: how opaque tokens are stored and how paths are bound. */
export function sha256b64url(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('base64url');
}
