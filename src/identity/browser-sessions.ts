import { createHmac, randomBytes } from 'node:crypto';
import { z } from 'zod';
import {
  type Clock,
  constantTimeEqual,
  PortcullisError,
  type SessionId,
  type UserId,
} from '../core/index.js';
import { SecretBox } from './secret-box.js';
import { INVALID_TOKEN_CHALLENGE } from './tokens.js';

/** The issuer id a route lists (`routes[].issuers`) to accept the browser session cookie. */
export const SESSION_COOKIE_ISSUER_ID = 'session';
/** Host-only (no Domain), Secure, Path=/: no other host or subdomain can set or read it. */
export const SESSION_COOKIE = '__Host-portcullis-session';
/** The nonce behind the CSRF tokens of the gateway's own HTML forms. */
export const CSRF_COOKIE = '__Host-portcullis-csrf';

/** What a session cookie refers to: a server-side session, its user, and when the cookie ends (ms). */
export interface SessionRef {
  sessionId: SessionId;
  userId: UserId;
  expiresAt: number;
}

const SEAL_CONTEXT = 'portcullis-session-cookie:v1';
const sealedRef = z.strictObject({
  s: z.string().min(1).max(64),
  u: z.string().min(1).max(64),
  e: z.number().int().positive(),
});
/** The sealed form: `v1.<iv>.<ciphertext+tag>`, base64url, bounded. */
const SEALED = /^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22,1024}$/;
const NONCE = /^[A-Za-z0-9_-]{43}$/;

const invalidCookie = (detail: string) =>
  new PortcullisError('invalid_token', {
    message: 'The session cookie is invalid or expired; sign in again.',
    detail,
    headers: INVALID_TOKEN_CHALLENGE,
  });

/**
 * The browser session cookie and the CSRF tokens of the sign-in forms. The cookie is not a bearer
 * credential of its own: it is a reference to a server-side session (id, user, expiry) sealed with
 * AES-256-GCM under this gateway's data key, so it cannot be forged, altered or moved to another
 * deployment, and the session it names is checked in the store on every request (a revoked session is
 * refused on its next request). CSRF tokens are HMACs of a random nonce kept in a `__Host-` cookie
 * (the signed double-submit pattern), compared in constant time.
 *
 * @example
 * const cookies = new BrowserSessions({ dataKey: keys.dataKey, clock });
 * const value = cookies.seal({ sessionId, userId, expiresAt });
 * cookies.open(value); // { sessionId, userId, expiresAt }
 */
export class BrowserSessions {
  readonly #box: SecretBox;
  readonly #csrfKey: Buffer;
  readonly #clock: Clock;

  constructor(options: { dataKey: Buffer; clock: Clock }) {
    this.#box = new SecretBox(options.dataKey);
    // A key of its own for CSRF tokens, derived once from the data key.
    this.#csrfKey = createHmac('sha256', options.dataKey).update('portcullis-csrf-key:v1').digest();
    this.#clock = options.clock;
  }

  /** The cookie value for a session. */
  seal(ref: SessionRef): string {
    return this.#box.seal(
      JSON.stringify({ s: ref.sessionId, u: ref.userId, e: ref.expiresAt }),
      SEAL_CONTEXT,
    );
  }

  /** Opens a cookie value; tampered, foreign, malformed or expired → 401 `invalid_token`. */
  open(value: string): SessionRef {
    if (!SEALED.test(value)) throw invalidCookie('malformed session cookie');
    let parsed: z.output<typeof sealedRef>;
    try {
      parsed = sealedRef.parse(JSON.parse(this.#box.open(value, SEAL_CONTEXT)));
    } catch {
      throw invalidCookie('session cookie does not open with our key');
    }
    if (parsed.e <= this.#clock.now()) throw invalidCookie('session cookie expired');
    return { sessionId: parsed.s as SessionId, userId: parsed.u as UserId, expiresAt: parsed.e };
  }

  /** A fresh CSRF nonce (for {@link CSRF_COOKIE}). */
  newNonce(): string {
    return randomBytes(32).toString('base64url');
  }

  /** Whether a cookie value is a nonce we could have made (anything else is replaced). */
  isNonce(value: string | undefined): value is string {
    return value !== undefined && NONCE.test(value);
  }

  /** The token a form carries for the nonce in the browser's CSRF cookie. */
  csrfToken(nonce: string): string {
    return createHmac('sha256', this.#csrfKey).update(`csrf:${nonce}`).digest('base64url');
  }

  /** Whether a form's token belongs to the browser's nonce (constant time). */
  checkCsrf(nonce: string | undefined, token: string): boolean {
    if (!this.isNonce(nonce)) return false;
    return constantTimeEqual(this.csrfToken(nonce), token);
  }
}
