import { PortcullisError } from '../../core/index.js';
import type { Gateway, RequestContext } from '../context.js';

const CHALLENGE = { 'www-authenticate': 'Bearer realm="portcullis"' };
/** RFC 6750 b64token, bounded. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]{1,8192}=*$/;

/** The bearer token of an `Authorization` header; a missing or malformed header is a 401. */
export function bearerToken(header: string | undefined): string {
  if (!header) throw new PortcullisError('unauthenticated', { headers: CHALLENGE });
  const space = header.indexOf(' ');
  if (space === -1 || header.slice(0, space).toLowerCase() !== 'bearer') {
    throw new PortcullisError('unauthenticated', {
      detail: 'not a bearer authorization',
      headers: CHALLENGE,
    });
  }
  const token = header.slice(space + 1).trim();
  if (!B64TOKEN.test(token)) {
    throw new PortcullisError('invalid_token', {
      detail: 'malformed bearer token',
      headers: { 'www-authenticate': 'Bearer realm="portcullis", error="invalid_token"' },
    });
  }
  return token;
}

/**
 * Step 3: verify the bearer access token (signature, algorithm, iss, aud, exp, typ) and then the
 * session behind it, on every request — a revoked session is refused even while its token is unexpired.
 */
export async function authenticate(gw: Gateway, ctx: RequestContext): Promise<void> {
  const principal = await gw.tokens.verifyAccessToken(bearerToken(ctx.req.headers.authorization));
  await gw.identity.checkSession(principal);
  ctx.principal = principal;
}
