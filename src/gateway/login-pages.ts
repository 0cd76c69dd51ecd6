import type { OutgoingHttpHeaders } from 'node:http';
import { z } from 'zod';
import { PortcullisError, type Principal } from '../core/index.js';
import { CSRF_COOKIE } from '../identity/index.js';
import { readFormFields, readSmallBody } from './body.js';
import { LOGIN_PATH, sendRedirect } from './browser-redirect.js';
import type { Gateway, RequestContext } from './context.js';
import { cookieValues, setCookie } from './cookies.js';
import { withSecurityHeaders } from './headers.js';
import { codeHtml, loginHtml, logoutHtml, messageHtml, pageCsp } from './login-html.js';
import { asPortcullisError } from './respond.js';
import {
  CLEAR_SESSION_COOKIE,
  crossSiteRefusal,
  requestOrigin,
  returnOrigins,
  returnTarget,
  sessionRefOf,
  startCookieSession,
} from './session-cookie.js';

/**
 * The browser sign-in pages: `GET /auth/login` and its form, the second-factor form (`POST /auth/mfa`),
 * the step-up page (`GET|POST /auth/step-up`) and sign-out (`GET|POST /auth/logout`). They sign in with
 * the same identity service as the JSON endpoints (throttling, lockout, audit), set the session cookie
 * and send the browser back to `return_to` (same origin or allow-listed, else `/`). Every form carries a
 * CSRF token (signed double-submit: an HMAC of the nonce in a `__Host-` cookie) and must come from this
 * origin.
 */

const CSRF_MAX_AGE_SEC = 86_400;
/** Optional in the schemas so that a form without it is a CSRF refusal (403), not a shape error. */
const csrf = z.string().min(1).max(128).optional();
const returnTo = z.string().max(4096).optional();
const code = z.string().regex(/^\d{6}$/, 'a 6-digit code');
const recoveryCode = z.string().min(8).max(32);
const loginFields = z.strictObject({
  username: z.string().min(1).max(254),
  password: z.string().min(1).max(1024),
  csrf,
  return_to: returnTo,
});
const mfaToken = z.string().min(1).max(512);
const mfaFields = z.union([
  z.strictObject({ mfa_token: mfaToken, code, csrf, return_to: returnTo }),
  z.strictObject({ mfa_token: mfaToken, recovery_code: recoveryCode, csrf, return_to: returnTo }),
]);
const stepUpFields = z.union([
  z.strictObject({ code, csrf, return_to: returnTo }),
  z.strictObject({ recovery_code: recoveryCode, csrf, return_to: returnTo }),
]);
const logoutFields = z.strictObject({ csrf, return_to: returnTo });
const pageQuery = z.object({ return_to: returnTo });

/** Refusals a form answers by showing itself again with the message (the rest are JSON errors). */
const SHOWN_AGAIN = new Set(['invalid_credentials', 'invalid_mfa_code', 'too_many_attempts', 'bad_request']);

const proofOf = (f: { code: string } | { recovery_code: string }) =>
  'code' in f ? { code: f.code } : { recoveryCode: f.recovery_code };
const metaOf = (ctx: RequestContext) => ({
  ip: ctx.ip,
  requestId: ctx.requestId,
  userAgent: ctx.req.headers['user-agent'],
});

/** Whether a POST is one of our HTML forms (rather than the JSON API on the same path). */
export function isFormPost(ctx: RequestContext): boolean {
  const type = ctx.req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  return ctx.req.method === 'POST' && type === 'application/x-www-form-urlencoded';
}

/** The `return_to` of a page's query (a repeated one is refused). */
function queryReturnTo(gw: Gateway, ctx: RequestContext): string {
  const params = new URLSearchParams(ctx.target?.query ?? '');
  if (params.getAll('return_to').length > 1)
    throw new PortcullisError('bad_request', { message: 'return_to is given more than once' });
  const q = pageQuery.safeParse({ return_to: params.get('return_to') ?? undefined });
  return returnTarget(gw, ctx, q.success ? q.data.return_to : undefined);
}

/** The form token for this browser, and the nonce cookie to set when it has none yet. */
function formToken(gw: Gateway, ctx: RequestContext): { token: string; cookies: string[] } {
  const [existing, ...more] = cookieValues(ctx.req.headers.cookie, CSRF_COOKIE);
  if (more.length === 0 && gw.browserSessions.isNonce(existing))
    return { token: gw.browserSessions.csrfToken(existing), cookies: [] };
  const nonce = gw.browserSessions.newNonce();
  const cookie = setCookie(CSRF_COOKIE, nonce, {
    path: '/',
    maxAgeSec: CSRF_MAX_AGE_SEC,
    sameSite: 'Strict',
  });
  return { token: gw.browserSessions.csrfToken(nonce), cookies: [cookie] };
}

/** A posted form must come from this origin and carry the token of this browser's nonce; returns it. */
function checkForm(gw: Gateway, ctx: RequestContext, token: string | undefined): string {
  const refusal = crossSiteRefusal(ctx, false);
  if (refusal) throw new PortcullisError('csrf_rejected', { detail: refusal });
  const nonces = cookieValues(ctx.req.headers.cookie, CSRF_COOKIE);
  if (token === undefined || nonces.length !== 1 || !gw.browserSessions.checkCsrf(nonces[0], token))
    throw new PortcullisError('csrf_rejected', { detail: 'form token missing or not this browser’s' });
  return token;
}

/** Answers an HTML page: never cached, its own CSP, the security headers, our request id. */
function sendPage(
  gw: Gateway,
  ctx: RequestContext,
  status: number,
  html: string,
  o: { cookies?: readonly string[]; retryAfter?: string | undefined } = {},
): void {
  const headers: OutgoingHttpHeaders = {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
    'content-security-policy': pageCsp([...returnOrigins(gw)]),
    'x-request-id': ctx.requestId,
    ...(o.cookies && o.cookies.length > 0 ? { 'set-cookie': [...o.cookies] } : {}),
    ...(o.retryAfter ? { 'retry-after': o.retryAfter } : {}),
  };
  ctx.res.writeHead(status, withSecurityHeaders(headers));
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : html);
}

/** Runs a sign-in step; a refusal the user can act on shows the form again with the message. */
async function orShowAgain<T>(
  gw: Gateway,
  ctx: RequestContext,
  run: () => Promise<T>,
  again: (error: string) => string,
): Promise<T | undefined> {
  try {
    return await run();
  } catch (err) {
    const e = asPortcullisError(err);
    if (!SHOWN_AGAIN.has(e.code)) throw e;
    gw.log.debug({ requestId: ctx.requestId, code: e.code, detail: e.detail }, 'sign-in form refused');
    sendPage(gw, ctx, e.status, again(e.publicMessage), { retryAfter: e.headers?.['retry-after'] });
    return undefined;
  }
}

/** `GET /auth/login?return_to=…`: the sign-in form. */
export async function loginPage(gw: Gateway, ctx: RequestContext): Promise<void> {
  const { token, cookies } = formToken(gw, ctx);
  const providers = Object.keys(gw.config.identity.federation);
  sendPage(gw, ctx, 200, loginHtml({ csrf: token, returnTo: queryReturnTo(gw, ctx), providers }), {
    cookies,
  });
}

/** `POST /auth/login` (form): password, then the second factor when enrolled, then the cookie. */
export async function loginForm(gw: Gateway, ctx: RequestContext): Promise<void> {
  const form = await readFormFields(ctx.req, gw.config.gateway.maxAuthBodyBytes, loginFields);
  const token = checkForm(gw, ctx, form.csrf);
  const to = returnTarget(gw, ctx, form.return_to);
  const result = await orShowAgain(
    gw,
    ctx,
    () => gw.identity.login(form.username, form.password, metaOf(ctx)),
    (error) => loginHtml({ csrf: token, returnTo: to, username: form.username, error }),
  );
  gw.metrics.logins.inc({
    result: !result ? 'failure' : 'mfa_required' in result ? 'mfa_required' : 'success',
  });
  if (!result) return;
  if ('mfa_required' in result) {
    sendPage(gw, ctx, 200, mfaPage(token, to, result.mfa_token));
    return;
  }
  sendRedirect(ctx, 303, to, [await startCookieSession(gw, result)]);
}

const mfaPage = (token: string, to: string, mfa: string, error?: string) =>
  codeHtml({
    title: 'Two-step verification',
    intro: 'Enter the code from your authenticator app to finish signing in.',
    action: '/auth/mfa',
    csrf: token,
    returnTo: to,
    mfaToken: mfa,
    ...(error ? { error } : {}),
  });

/** `POST /auth/mfa` (form): the second step of a browser sign-in. */
export async function mfaForm(gw: Gateway, ctx: RequestContext): Promise<void> {
  const form = await readFormFields(ctx.req, gw.config.gateway.maxAuthBodyBytes, mfaFields);
  const token = checkForm(gw, ctx, form.csrf);
  const to = returnTarget(gw, ctx, form.return_to);
  const tokens = await orShowAgain(
    gw,
    ctx,
    () => gw.identity.completeMfaLogin(form.mfa_token, proofOf(form), metaOf(ctx)),
    (error) => mfaPage(token, to, form.mfa_token, error),
  );
  if (tokens) sendRedirect(ctx, 303, to, [await startCookieSession(gw, tokens)]);
}

/** The cookie's principal, or undefined when there is no usable session cookie. */
async function cookiePrincipal(gw: Gateway, ctx: RequestContext): Promise<Principal | undefined> {
  try {
    const ref = sessionRefOf(gw, ctx);
    return (
      ref &&
      (await gw.identity.sessionPrincipal(ref, { ip: ctx.ip, userAgent: ctx.req.headers['user-agent'] }))
    );
  } catch (err) {
    const e = asPortcullisError(err);
    if (e.code === 'invalid_token' || e.code === 'session_revoked') return undefined;
    throw e;
  }
}

const stepUpPageHtml = (token: string, to: string, error?: string) =>
  codeHtml({
    title: 'Confirm it’s you',
    intro: 'This page needs a fresh sign-in with your second factor.',
    action: '/auth/step-up',
    csrf: token,
    returnTo: to,
    ...(error ? { error } : {}),
  });

/** `GET /auth/step-up?return_to=…`: the MFA form that upgrades the cookie's session. */
export async function stepUpPage(gw: Gateway, ctx: RequestContext): Promise<void> {
  const to = queryReturnTo(gw, ctx);
  const principal = await cookiePrincipal(gw, ctx);
  if (!principal) {
    sendRedirect(ctx, 302, `${LOGIN_PATH}?return_to=${encodeURIComponent(to)}`, [CLEAR_SESSION_COOKIE]);
    return;
  }
  const user = await gw.identity.findUser(principal.id);
  if (!user?.totpSecret) {
    sendPage(gw, ctx, 403, messageHtml('Second factor needed', 'Enrol an authenticator app first.'));
    return;
  }
  const { token, cookies } = formToken(gw, ctx);
  sendPage(gw, ctx, 200, stepUpPageHtml(token, to), { cookies });
}

/** `POST /auth/step-up` (form): a fresh TOTP or recovery code upgrades the session, then back to the page. */
export async function stepUpForm(gw: Gateway, ctx: RequestContext): Promise<void> {
  const form = await readFormFields(ctx.req, gw.config.gateway.maxAuthBodyBytes, stepUpFields);
  const token = checkForm(gw, ctx, form.csrf);
  const to = returnTarget(gw, ctx, form.return_to);
  const principal = await cookiePrincipal(gw, ctx);
  if (!principal) {
    sendRedirect(ctx, 303, `${LOGIN_PATH}?return_to=${encodeURIComponent(to)}`, [CLEAR_SESSION_COOKIE]);
    return;
  }
  const done = await orShowAgain(
    gw,
    ctx,
    () => gw.identity.stepUp(principal, proofOf(form), { ip: ctx.ip, requestId: ctx.requestId }),
    (error) => stepUpPageHtml(token, to, error),
  );
  // The session itself now says otp/aal2/now: the cookie needs no change.
  if (done) sendRedirect(ctx, 303, to);
}

/** `GET /auth/logout`: a sign-out button (sign-out changes state, so it is a POST). */
export async function logoutPage(gw: Gateway, ctx: RequestContext): Promise<void> {
  const { token, cookies } = formToken(gw, ctx);
  sendPage(gw, ctx, 200, logoutHtml({ csrf: token }), { cookies });
}

/**
 * `POST /auth/logout` with the session cookie: the session ends (revoked in the store, so the cookie is
 * refused everywhere at once) and the cookie is cleared. Our form's token, or an app's own same-origin
 * sign-out form (its `Origin`), is required.
 */
export async function logoutForm(gw: Gateway, ctx: RequestContext): Promise<void> {
  // A script's `fetch('/auth/logout', { method: 'POST' })` sends no body and no type: an empty form
  // (anything in such a body is a 413).
  let form: z.output<typeof logoutFields> = {};
  if (ctx.req.headers['content-type'] === undefined) await readSmallBody(ctx.req, 0);
  else form = await readFormFields(ctx.req, gw.config.gateway.maxAuthBodyBytes, logoutFields);
  const origin = ctx.req.headers.origin;
  if (origin === undefined || origin !== requestOrigin(ctx)) checkForm(gw, ctx, form.csrf);
  let ref: ReturnType<typeof sessionRefOf>;
  try {
    ref = sessionRefOf(gw, ctx);
  } catch {
    ref = undefined; // an unreadable cookie: nothing to end, only to clear
  }
  if (ref) await gw.identity.logout(ref.sessionId, { ip: ctx.ip, requestId: ctx.requestId });
  const to = form.return_to === undefined ? LOGIN_PATH : returnTarget(gw, ctx, form.return_to);
  sendRedirect(ctx, 303, to, [CLEAR_SESSION_COOKIE]);
}
