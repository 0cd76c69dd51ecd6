import { hash, timingSafeEqual } from 'node:crypto';

/**
 * Constant-time comparison of two secrets. Both sides are hashed first so neither the content nor the
 * length of the expected value leaks through timing. Every secret comparison goes through here.
 *
 * @example
 * if (!constantTimeEqual(presentedHash, storedHash)) throw new PortcullisError('invalid_grant');
 */
export function constantTimeEqual(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const ha = hash('sha256', a, 'buffer');
  const hb = hash('sha256', b, 'buffer');
  return timingSafeEqual(ha, hb);
}

/** SHA-256 of a string or bytes, base64url: how opaque tokens are stored and how paths are bound. */
export function sha256b64url(data: string | Uint8Array): string {
  // One-shot `crypto.hash`: no Hash object per call (this runs on every forwarded request).
  return hash('sha256', data, 'base64url');
}
