import type { OutgoingHttpHeaders } from 'node:http';
import type { PortcullisError } from '../core/index.js';
import { SESSION_COOKIE_ISSUER_ID } from '../identity/index.js';
import type { Gateway, RequestContext } from './context.js';
import { withSecurityHeaders } from './headers.js';
import { CLEAR_SESSION_COOKIE, hasSessionCookie } from './session-cookie.js';

export const LOGIN_PATH = '/auth/login';
export const STEP_UP_PATH = '/auth/step-up';

/** Refusals a sign-in cures: no credentials, or a session cookie that is invalid or whose session ended. */
const SIGN_IN_CURES = new Set(['unauthenticated', 'invalid_token', 'session_revoked']);

/**
 * A browser navigating to a page: GET or HEAD, and `Sec-Fetch-Mode: navigate` or an `Accept` that asks
 * for HTML. Scripts (fetch, XHR) and API clients do not qualify and keep their JSON answers.
 */
export function isNavigation(ctx: RequestContext): boolean {
  if (ctx.method !== 'GET' && ctx.method !== 'HEAD') return false;
  if (ctx.req.headers['sec-fetch-mode'] === 'navigate') return true;
  return ctx.req.headers.accept?.toLowerCase().includes('text/html') === true;
}

/** Sends a redirect (no body, never cached) with the security headers and our request id. */
export function sendRedirect(
  ctx: RequestContext,
  status: 302 | 303,
  location: string,
  cookies: readonly string[] = [],
): void {
  const headers: OutgoingHttpHeaders = {
    location,
    'content-length': 0,
    'cache-control': 'no-store',
    'x-request-id': ctx.requestId,
    ...(cookies.length > 0 ? { 'set-cookie': [...cookies] } : {}),
  };
  ctx.res.writeHead(status, withSecurityHeaders(headers));
  ctx.res.end();
}

/** `/auth/login?return_to=…` (or the step-up page) for the request's canonical path and query. */
function pageFor(path: string, ctx: RequestContext): string {
  const here = `${ctx.target?.path ?? '/'}${ctx.target?.query ?? ''}`;
  return `${path}?return_to=${encodeURIComponent(here)}`;
}

/**
 * Answers a refusal on a browser-session route with a redirect instead of JSON, when a browser is
 * navigating there: to the sign-in page when a sign-in would cure it (a stale or invalid cookie is
 * cleared), to the MFA step-up page when policy asked for a stronger sign-in of the cookie's session.
 * Both carry `return_to`, the original canonical URL. Requests with a bearer token, API calls,
 * forward-auth (unless `forwardAuth.redirectBrowsers`), ext_authz and the gateway's own endpoints keep
 * the JSON answer. Returns whether it answered.
 */
export function redirectBrowser(gw: Gateway, ctx: RequestContext, error: PortcullisError): boolean {
  const route = ctx.route;
  if (
    !route ||
    (ctx.decideOnly &&
      !(ctx.decideOnly === 'forward-auth' && gw.config.gateway.forwardAuth?.redirectBrowsers)) ||
    ctx.internal ||
    ctx.res.headersSent ||
    !route.issuers.has(SESSION_COOKIE_ISSUER_ID) ||
    ctx.req.headers.authorization !== undefined ||
    !isNavigation(ctx)
  )
    return false;
  if (error.code === 'step_up_required' && ctx.sessionCookie) {
    sendRedirect(ctx, 302, pageFor(STEP_UP_PATH, ctx));
  } else if (SIGN_IN_CURES.has(error.code) && !ctx.sessionCookie) {
    sendRedirect(ctx, 302, pageFor(LOGIN_PATH, ctx), hasSessionCookie(ctx) ? [CLEAR_SESSION_COOKIE] : []);
  } else {
    return false;
  }
  gw.log.debug({ requestId: ctx.requestId, code: error.code, route: route.id }, 'browser redirected');
  return true;
}
