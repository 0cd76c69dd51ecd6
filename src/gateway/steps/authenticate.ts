import type { TLSSocket } from 'node:tls';
import { OWN_ISSUER_ID } from '../../config/index.js';
import { PortcullisError } from '../../core/index.js';
import { API_KEY_ISSUER_ID, SESSION_COOKIE_ISSUER_ID } from '../../identity/index.js';
import { SPIFFE_ISSUER_ID } from '../../workload/peer.js';
import type { Gateway, RequestContext } from '../context.js';
import { authenticateSessionCookie } from '../session-cookie.js';

const CHALLENGE = { 'www-authenticate': 'Bearer realm="portcullis"' };
/** RFC 6750 b64token, bounded. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]{1,8192}=*$/;

/**
 * The bearer token of an `Authorization` header; a missing or malformed header is a 401. `checkSyntax`
 * false skips the b64token check, for a lookup in the verified-token cache only: every cached token
 * passed it before it was verified, so a hit is well-formed and a malformed token cannot hit.
 */
export function bearerToken(header: string | undefined, checkSyntax = true): string {
  if (!header) throw new PortcullisError('unauthenticated', { headers: CHALLENGE });
  const space = header.indexOf(' ');
  const scheme = space === -1 ? '' : header.slice(0, space).toLowerCase();
  // `DPoP` (RFC 9449) is a bearer token that goes with a proof; the device step checks the proof.
  if (scheme !== 'bearer' && scheme !== 'dpop') {
    throw new PortcullisError('unauthenticated', {
      detail: 'not a bearer authorization',
      headers: CHALLENGE,
    });
  }
  const token = header.slice(space + 1).trim();
  if (checkSyntax && !B64TOKEN.test(token)) {
    throw new PortcullisError('invalid_token', {
      detail: 'malformed bearer token',
      headers: { 'www-authenticate': 'Bearer realm="portcullis", error="invalid_token"' },
    });
  }
  return token;
}

/**
 * Step 4: verify the bearer token (signature once, then from the verified-token cache; expiry and the
 * route's accepted issuers on every request), and for our own tokens the session behind it — a revoked
 * session is refused on its next request even while its token is unexpired. Routes listing `session`
 * also take the browser session cookie (its session checked the same way; unsafe methods same-origin).
 */
export function authenticate(gw: Gateway, ctx: RequestContext): Promise<void> | undefined {
  const route = ctx.route;
  if (!route) throw new PortcullisError('internal_error', { detail: 'authenticate before route' });
  if (route.public) return undefined;
  const authorization = ctx.req.headers.authorization;
  // The common case without a promise: an external issuer's bearer token whose signature the cache
  // already verified (expiry and the route's issuers are still checked, here, on every request).
  if (authorization !== undefined && !route.signature) {
    const principal = gw.bearer.cached(bearerToken(authorization, false), route.issuers);
    if (principal) {
      ctx.principal = principal;
      return undefined;
    }
  }
  return authenticateFully(gw, ctx, route);
}

async function authenticateFully(
  gw: Gateway,
  ctx: RequestContext,
  route: NonNullable<RequestContext['route']>,
): Promise<void> {
  // A webhook: the request itself is signed (RFC 9421); nothing else authenticates on such a route.
  if (route.signature) {
    ctx.principal = await gw.signatures.verify(ctx, route.signature.signers, route.signature.maxAgeMs);
    return;
  }
  // A workload with an X.509-SVID (and no bearer token) on a route that accepts SPIFFE identities.
  if (ctx.req.headers.authorization === undefined && gw.spiffe && route.issuers.has(SPIFFE_ISSUER_ID)) {
    const workload = await gw.spiffe.authenticate(ctx.req.socket as TLSSocket);
    if (workload) {
      ctx.principal = workload;
      return;
    }
  }
  // A machine caller with an API key, on a route that takes them (and no bearer token).
  const apiKey = ctx.req.headers['x-api-key'];
  if (
    ctx.req.headers.authorization === undefined &&
    apiKey !== undefined &&
    route.issuers.has(API_KEY_ISSUER_ID)
  ) {
    if (typeof apiKey !== 'string') throw new PortcullisError('invalid_token', { detail: 'one X-API-Key' });
    ctx.principal = await gw.apiKeys.authenticate(apiKey);
    return;
  }
  // A browser with the gateway's session cookie (and no bearer token), on a route that takes it.
  if (
    ctx.req.headers.authorization === undefined &&
    route.issuers.has(SESSION_COOKIE_ISSUER_ID) &&
    (await authenticateSessionCookie(gw, ctx))
  )
    return;
  const principal = await gw.bearer.authenticate(bearerToken(ctx.req.headers.authorization), route.issuers);
  // Known before the session check, so a refused use of a revoked session is recorded with its subject.
  ctx.principal = principal;
  if (principal.issuer === OWN_ISSUER_ID) await gw.identity.checkSession(principal);
}
