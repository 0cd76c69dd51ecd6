import { PortcullisError } from '../core/index.js';
import { SESSION_COOKIE, safeReturnTo, type TokenResponse } from '../identity/index.js';
import type { Gateway, RequestContext } from './context.js';
import { cookieValues, setCookie } from './cookies.js';

/** Methods that must not change anything (RFC 9110 §9.2.1): no CSRF check for them. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** `Set-Cookie` for the session cookie: host-only, every path, sent on top-level navigations (Lax). */
export function sessionCookie(value: string, maxAgeSec: number): string {
  return setCookie(SESSION_COOKIE, value, { path: '/', maxAgeSec, sameSite: 'Lax' });
}

/** `Set-Cookie` that removes the session cookie. */
export const CLEAR_SESSION_COOKIE = sessionCookie('', 0);

/** Whether the request carries a session cookie at all (valid or not). */
export function hasSessionCookie(ctx: RequestContext): boolean {
  return cookieValues(ctx.req.headers.cookie, SESSION_COOKIE).length > 0;
}

/** The sealed session reference in the request's cookie: undefined when none, 401 when it does not open. */
export function sessionRefOf(gw: Gateway, ctx: RequestContext) {
  const values = cookieValues(ctx.req.headers.cookie, SESSION_COOKIE);
  if (values.length === 0) return undefined;
  if (values.length > 1)
    throw new PortcullisError('invalid_token', { detail: 'more than one session cookie' });
  return gw.browserSessions.open(values[0] as string);
}

/**
 * Authenticates by the browser session cookie, when there is one: the sealed reference must open with
 * our key, and its session must be active in the store (checked on every request, like our access
 * tokens' sessions); the principal is what an access token for that session would carry. An unsafe
 * method or an upgrade (WebSocket) must come from this origin (see {@link crossSiteRefusal}). Returns false without a cookie.
 */
export async function authenticateSessionCookie(gw: Gateway, ctx: RequestContext): Promise<boolean> {
  const ref = sessionRefOf(gw, ctx);
  if (!ref) return false;
  ctx.principal = await gw.identity.sessionPrincipal(ref, {
    ip: ctx.ip,
    userAgent: ctx.req.headers['user-agent'],
  });
  ctx.sessionCookie = true;
  // A WebSocket handshake is a GET, but what follows is a two-way channel in the user's name: a
  // cross-origin page must not open one with the cookie (Cross-Site WebSocket Hijacking).
  if (!SAFE_METHODS.has(ctx.method) || ctx.upgrade) {
    const refusal = crossSiteRefusal(ctx, true);
    if (refusal) throw new PortcullisError('csrf_rejected', { detail: refusal });
  }
  return true;
}

/** The request's own origin (`scheme://host[:port]`, as browsers write `Origin`), or undefined. */
export function requestOrigin(ctx: RequestContext): string | undefined {
  try {
    return new URL(`${ctx.scheme}://${ctx.authority}`).origin;
  } catch {
    return undefined;
  }
}

/**
 * Why a cookie-authenticated unsafe request is refused as cross-site, or undefined when it is not: an
 * `Origin` that is not this origin (nor, with `cors`, one the route lets send credentials), or
 * `Sec-Fetch-Site: cross-site`. Requests without either header (not from a browser) pass; SameSite=Lax
 * keeps the cookie off cross-site subrequests in browsers that send neither.
 */
export function crossSiteRefusal(ctx: RequestContext, allowCors: boolean): string | undefined {
  const origin = ctx.req.headers.origin;
  if (origin !== undefined) {
    if (origin === requestOrigin(ctx)) return undefined;
    const cors = ctx.route?.cors;
    if (allowCors && cors?.credentials && cors.origins.has(origin)) return undefined;
    return `cross-origin request with the session cookie (Origin ${origin.slice(0, 100)})`;
  }
  if (ctx.req.headers['sec-fetch-site'] === 'cross-site')
    return 'cross-site request with the session cookie (Sec-Fetch-Site)';
  return undefined;
}

const allowListCache = new WeakMap<object, ReadonlySet<string>>();

/** The origins besides the request's own that a sign-in may return to: the issuer's and the allow-list. */
export function returnOrigins(gw: Gateway): ReadonlySet<string> {
  let allowed = allowListCache.get(gw.config);
  if (!allowed) {
    const origins = [gw.config.identity.issuer, ...gw.config.identity.redirectAllowList];
    allowed = new Set(origins.map((u) => new URL(u).origin));
    allowListCache.set(gw.config, allowed);
  }
  return allowed;
}

/**
 * Where to send the browser after a sign-in: `return_to` when it is a path on this origin or a URL on
 * the gateway's issuer origin or an `identity.redirectAllowList` origin; `/` otherwise (never an open
 * redirect).
 */
export function returnTarget(gw: Gateway, ctx: RequestContext, value: string | null | undefined): string {
  if (!value || value.length > 2048) return '/';
  try {
    return safeReturnTo(value, requestOrigin(ctx) ?? gw.config.identity.issuer, returnOrigins(gw));
  } catch {
    return '/';
  }
}

/**
 * Turns the token response of a completed sign-in into the browser's session cookie: the access token
 * names the new session (verified, not parsed), the cookie seals a reference to it, and the tokens
 * themselves are never given to the browser.
 */
export async function startCookieSession(gw: Gateway, tokens: TokenResponse): Promise<string> {
  const principal = await gw.tokens.verifyAccessToken(tokens.access_token);
  if (principal.sessionId === undefined)
    throw new PortcullisError('internal_error', { detail: 'sign-in without a session' });
  const ttl = gw.config.identity.sessionTtl;
  const value = gw.browserSessions.seal({
    sessionId: principal.sessionId,
    userId: principal.id,
    expiresAt: gw.clock.now() + ttl,
  });
  return sessionCookie(value, ttl / 1000);
}
