import { z } from 'zod';
import { OWN_ISSUER_ID } from '../config/index.js';
import { PortcullisError } from '../core/index.js';
import { FEDERATION_COOKIE } from '../identity/index.js';
import { authorizeBodySchema, type Decision, type PolicyInput } from '../policy/index.js';
import { ADMIN_PREFIX, serveAdminApi, sessionView } from './admin-api.js';
import { readJsonBody } from './body.js';
import type { Gateway, RequestContext } from './context.js';
import { cookieValue } from './cookies.js';
import { serveDeviceEndpoints } from './device-endpoints.js';
import { checkTokenProof, signInMeta } from './dpop.js';
import { withSecurityHeaders } from './headers.js';
import {
  isFormPost,
  loginForm,
  loginPage,
  logoutForm,
  logoutPage,
  mfaForm,
  stepUpForm,
  stepUpPage,
} from './login-pages.js';
import { OAUTH_ENDPOINTS } from './oauth-endpoints.js';
import { NO_STORE, ownSession, requireRecentSignIn } from './own-session.js';
import { sendJson } from './respond.js';
import { hasSessionCookie, startCookieSession } from './session-cookie.js';
import { bearerToken } from './steps/authenticate.js';
import { deviceOf } from './steps/device.js';

type Endpoint = {
  method: 'GET' | 'POST';
  /** A second method the endpoint answers too (userinfo: GET and POST). */
  also?: 'GET' | 'POST';
  handle: (gw: Gateway, ctx: RequestContext) => Promise<void>;
};

/** `browser`: the refresh token goes in an HttpOnly cookie, never in the body; `api` (default): in the body. */
const client = z.enum(['api', 'browser']).optional();
const loginBody = z.strictObject({
  username: z.string().min(1).max(254),
  password: z.string().min(1).max(1024),
  client,
});
const refreshBody = z.strictObject({ refresh_token: z.string().min(1).max(512).optional(), client });

/** The browser-mode refresh cookie: HttpOnly, Secure, SameSite=Strict, sent only to the refresh path. */
const REFRESH_COOKIE = '__Secure-portcullis-rt';
const REFRESH_PATH = '/auth/refresh';

function refreshCookie(value: string, maxAgeSec: number): string {
  return `${REFRESH_COOKIE}=${value}; Path=${REFRESH_PATH}; Max-Age=${maxAgeSec}; HttpOnly; Secure; SameSite=Strict`;
}

/** Answers a token response; in browser mode the refresh token moves from the body into the cookie. */
function sendTokens(
  gw: Gateway,
  ctx: RequestContext,
  tokens: object,
  mode: 'api' | 'browser' | undefined,
): void {
  if (mode !== 'browser' || !('refresh_token' in tokens)) {
    sendJson(ctx, 200, JSON.stringify(tokens), NO_STORE);
    return;
  }
  const { refresh_token, ...rest } = tokens as { refresh_token: string };
  sendJson(ctx, 200, JSON.stringify(rest), {
    ...NO_STORE,
    'set-cookie': refreshCookie(refresh_token, Math.floor(gw.config.identity.sessionTtl / 1000)),
  });
}
const totpCode = z.string().regex(/^\d{6}$/, 'a 6-digit code');
const recoveryCode = z.string().min(8).max(32);
/** A fresh MFA proof: a TOTP code or a recovery code. */
const proofBody = z.union([
  z.strictObject({ code: totpCode }),
  z.strictObject({ recovery_code: recoveryCode }),
]);
const mfaLoginBody = z.union([
  z.strictObject({ mfa_token: z.string().min(1).max(512), code: totpCode, client }),
  z.strictObject({ mfa_token: z.string().min(1).max(512), recovery_code: recoveryCode, client }),
]);
const codeBody = z.strictObject({ code: totpCode });

const toProof = (b: { code: string } | { recovery_code: string }) =>
  'code' in b ? { code: b.code } : { recoveryCode: b.recovery_code };

/**
 * A POST endpoint for the caller's own session: bearer checked like at the gateway, JSON body
 * validated, the answer sent as JSON and never cached.
 */
function withSession<S extends z.ZodType>(
  schema: S,
  run: (
    gw: Gateway,
    principal: Awaited<ReturnType<typeof ownSession>>,
    body: z.output<S>,
    meta: { ip: string; requestId: string },
  ) => Promise<unknown>,
): Endpoint {
  return {
    method: 'POST',
    handle: async (gw, ctx) => {
      const principal = await ownSession(gw, ctx);
      const body = await readJsonBody(ctx.req, gw.config.gateway.maxAuthBodyBytes, schema);
      const result = await run(gw, principal, body, { ip: ctx.ip, requestId: ctx.requestId });
      sendJson(ctx, 200, JSON.stringify(result), NO_STORE);
    },
  };
}

/** Where a request came from, for the audit log and the session list. */
function meta(ctx: RequestContext): { ip: string; requestId: string; userAgent: string | undefined } {
  return { ip: ctx.ip, requestId: ctx.requestId, userAgent: ctx.req.headers['user-agent'] };
}

const revokeBody = z.union([
  z.strictObject({ session_id: z.string().min(1).max(64) }),
  z.strictObject({ all: z.literal(true) }),
]);

/**
 * The gateway's own endpoints (identity and key discovery), served before the route table. They share
 * the pipeline's canonicalization and error handling; each writes its own audit events.
 */
export const INTERNAL_ENDPOINTS: ReadonlyMap<string, Endpoint> = new Map<string, Endpoint>([
  [
    '/auth/login',
    {
      // JSON for API clients; GET is the HTML sign-in page and a form POST its form (login-pages.ts).
      method: 'POST',
      also: 'GET',
      handle: async (gw, ctx) => {
        if (ctx.req.method !== 'POST') return loginPage(gw, ctx);
        if (isFormPost(ctx)) return loginForm(gw, ctx);
        const body = await readJsonBody(ctx.req, gw.config.gateway.maxAuthBodyBytes, loginBody);
        try {
          const { meta: m, commit } = await signInMeta(gw, ctx);
          const tokens = await gw.identity.login(body.username, body.password, m);
          commit();
          gw.metrics.logins.inc({ result: 'mfa_required' in tokens ? 'mfa_required' : 'success' });
          sendTokens(gw, ctx, tokens, body.client);
        } catch (err) {
          gw.metrics.logins.inc({ result: 'failure' });
          throw err;
        }
      },
    },
  ],
  [
    '/auth/mfa',
    {
      // Second step of a login with MFA: the mfa_token from /auth/login plus a TOTP or recovery code.
      method: 'POST',
      handle: async (gw, ctx) => {
        if (isFormPost(ctx)) return mfaForm(gw, ctx);
        const body = await readJsonBody(ctx.req, gw.config.gateway.maxAuthBodyBytes, mfaLoginBody);
        const { meta: m, commit } = await signInMeta(gw, ctx);
        const tokens = await gw.identity.completeMfaLogin(body.mfa_token, toProof(body), m);
        commit();
        sendTokens(gw, ctx, tokens, body.client);
      },
    },
  ],
  [
    '/auth/mfa/totp',
    {
      // Begin TOTP enrolment: a seed, its otpauth URI and QR code (SVG). Confirm with a code.
      method: 'POST',
      handle: async (gw, ctx) => {
        const principal = await ownSession(gw, ctx);
        requireRecentSignIn(gw, principal);
        sendJson(ctx, 200, JSON.stringify(await gw.identity.beginTotp(principal.id)), NO_STORE);
      },
    },
  ],
  [
    '/auth/sessions',
    {
      // The caller's sessions (device = user agent, address, last seen); the current one is marked.
      method: 'GET',
      handle: async (gw, ctx) => {
        const principal = await ownSession(gw, ctx);
        const list = (await gw.identity.sessions(principal.id)).map((x) => ({
          ...sessionView(x),
          current: x.id === principal.sessionId,
        }));
        sendJson(ctx, 200, JSON.stringify({ sessions: list }), NO_STORE);
      },
    },
  ],
  [
    '/auth/sessions/revoke',
    withSession(revokeBody, async (gw, p, body, m) =>
      'all' in body
        ? { revoked: await gw.identity.revokeAllSessions(p.id, m) }
        : { revoked: (await gw.identity.revokeSession(p.id, body.session_id as never, m)) ? 1 : 0 },
    ),
  ],
  [
    '/auth/mfa/totp/confirm',
    withSession(codeBody, (gw, p, body, meta) => {
      requireRecentSignIn(gw, p);
      return gw.identity.confirmTotp(p.id, body.code, meta);
    }),
  ],
  [
    '/auth/mfa/recovery-codes',
    withSession(codeBody, (gw, p, body, meta) => gw.identity.regenerateRecoveryCodes(p.id, body.code, meta)),
  ],
  [
    '/auth/step-up',
    {
      // Upgrades the caller's session after a fresh MFA proof; answers a new access token. Browsers:
      // GET is the step-up page for the session cookie, a form POST its form.
      method: 'POST',
      also: 'GET',
      handle: async (gw, ctx) => {
        if (ctx.req.method !== 'POST') return stepUpPage(gw, ctx);
        if (isFormPost(ctx) && ctx.req.headers.authorization === undefined) return stepUpForm(gw, ctx);
        const principal = await gw.tokens.verifyAccessToken(bearerToken(ctx.req.headers.authorization));
        await checkTokenProof(gw, ctx, principal);
        const body = await readJsonBody(ctx.req, gw.config.gateway.maxAuthBodyBytes, proofBody);
        const tokens = await gw.identity.stepUp(principal, toProof(body), {
          ip: ctx.ip,
          requestId: ctx.requestId,
        });
        sendJson(ctx, 200, JSON.stringify(tokens), NO_STORE);
      },
    },
  ],
  [
    '/auth/refresh',
    {
      method: 'POST',
      handle: async (gw, ctx) => {
        const body = await readJsonBody(ctx.req, gw.config.gateway.maxAuthBodyBytes, refreshBody);
        // Browser mode: the token comes in the cookie (SameSite=Strict; the JSON body requirement
        // keeps plain cross-site form posts out) and the successor goes back in it.
        const fromCookie =
          body.refresh_token === undefined ? cookieValue(ctx.req.headers.cookie, REFRESH_COOKIE) : undefined;
        const token = body.refresh_token ?? fromCookie;
        if (!token)
          throw new PortcullisError('invalid_body', {
            message: 'refresh_token is required (in the body, or the browser cookie)',
          });
        const { meta: m, commit } = await signInMeta(gw, ctx);
        const tokens = await gw.identity.refresh(token, m);
        commit();
        sendTokens(gw, ctx, tokens, fromCookie !== undefined ? 'browser' : body.client);
      },
    },
  ],
  [
    '/auth/logout',
    {
      // Bearer (API); without one, the browser session cookie (GET: a sign-out button).
      method: 'POST',
      also: 'GET',
      handle: async (gw, ctx) => {
        if (ctx.req.method !== 'POST') return logoutPage(gw, ctx);
        if (ctx.req.headers.authorization === undefined && (isFormPost(ctx) || hasSessionCookie(ctx)))
          return logoutForm(gw, ctx);
        const token = bearerToken(ctx.req.headers.authorization);
        const principal = await gw.tokens.verifyAccessToken(token);
        await checkTokenProof(gw, ctx, principal);
        if (principal.sessionId === undefined)
          throw new PortcullisError('invalid_token', { detail: 'token has no session' });
        await gw.identity.logout(principal.sessionId, { ip: ctx.ip, requestId: ctx.requestId });
        ctx.res.writeHead(
          204,
          withSecurityHeaders({
            'cache-control': 'no-store',
            'x-request-id': ctx.requestId,
            // Browser mode: the refresh cookie is cleared too (a no-op for API clients).
            'set-cookie': refreshCookie('', 0),
          }),
        );
        ctx.res.end();
      },
    },
  ],
  [
    '/v1/authorize',
    {
      method: 'POST',
      handle: async (gw, ctx) => {
        // The principal is the caller's own token: an app asks "may this user do X to Y?" with the
        // user's bearer token, and cannot ask on behalf of anyone else.
        const token = bearerToken(ctx.req.headers.authorization);
        const principal = await gw.bearer.authenticate(
          token,
          new Set([OWN_ISSUER_ID, ...Object.keys(gw.config.issuers)]),
        );
        if (principal.issuer === OWN_ISSUER_ID) await gw.identity.checkSession(principal);
        // The device it proves (DPoP or device certificate), so `device.*` rules answer as at the gateway.
        const device = await deviceOf(gw, ctx, principal);
        const body = await readJsonBody(ctx.req, gw.config.gateway.maxAuthBodyBytes, authorizeBodySchema);
        const queries = 'requests' in body ? body.requests : [body];
        const time = gw.clock.now();
        const results = queries.map((q) => {
          const input: PolicyInput = {
            principal,
            action: q.action,
            resource: q.resource as PolicyInput['resource'],
            ...(device ? { device } : {}),
            context: {
              time,
              ip: ctx.ip,
              authentication: principal,
              ...(q.context?.attributes ? { attributes: q.context.attributes } : {}),
            },
          };
          return { input, decision: gw.policy.decide(input) };
        });
        const writes = Promise.all(
          results.map(({ input, decision }) =>
            gw.audit.write(
              {
                type: 'authz.decision',
                data: {
                  requestId: ctx.requestId,
                  outcome: decision.outcome,
                  ruleIds: decision.ruleIds,
                  reason: decision.reason,
                  action: input.action,
                  resourceType: input.resource.type ?? null,
                  resourceId: input.resource.id ?? null,
                  sub: principal.id,
                  sid: principal.sessionId ?? null,
                  ip: ctx.ip,
                },
              },
              gw.config.audit.decisions,
            ),
          ),
        ).catch((err: unknown) => {
          throw new PortcullisError('store_unavailable', { detail: 'audit write failed', cause: err });
        });
        // Durable decisions are committed before the answer; batched ones are retried from the spool.
        if (gw.config.audit.decisions === 'durable') await writes;
        else writes.catch(() => undefined);
        for (const { decision } of results)
          gw.metrics.countDecision(decision.outcome, '/v1/authorize', decision.ruleIds[0] ?? '');
        const out = results.map(({ decision }) => answer(decision));
        sendJson(ctx, 200, JSON.stringify('requests' in body ? { results: out } : out[0]));
      },
    },
  ],
  [
    '/.well-known/jwks.json',
    {
      method: 'GET',
      handle: async (gw, ctx) => {
        sendJson(ctx, 200, JSON.stringify(gw.keys.jwks()), { 'cache-control': 'public, max-age=300' });
      },
    },
  ],
]);

/** A decision as `/v1/authorize` answers it (the reason and rule ids help the app explain a refusal). */
function answer(d: Decision): Record<string, unknown> {
  return {
    decision: d.outcome,
    ruleIds: d.ruleIds,
    reason: d.reason,
    ...(d.requirements ? { requirements: d.requirements } : {}),
  };
}

const FEDERATED = /^\/auth\/federated\/([a-z0-9][a-z0-9_-]{0,62})\/(start|callback)$/;

/** `GET /auth/federated/<id>/start?return_to=/path&client=browser|api`: off to the OP. */
async function federatedStart(gw: Gateway, ctx: RequestContext, id: string): Promise<void> {
  const params = new URLSearchParams(ctx.target?.query ?? '');
  const client = params.get('client') === 'api' ? 'api' : 'browser';
  const { location, cookie } = await gw.federation.start(id, params.get('return_to'), client);
  ctx.res.writeHead(
    302,
    withSecurityHeaders({
      location,
      'set-cookie': cookie,
      'cache-control': 'no-store',
      'x-request-id': ctx.requestId,
    }),
  );
  ctx.res.end();
}

/**
 * `GET /auth/federated/<id>/callback`: the OP sends the browser back here. Browser mode: the refresh
 * and session cookies are set and the browser goes on to `return_to` (the app then refreshes for an
 * access token, or simply browses routes that take the session cookie);
 * API mode: the token response as JSON.
 */
async function federatedCallback(gw: Gateway, ctx: RequestContext, id: string): Promise<void> {
  const url = new URL(`http://callback.invalid${ctx.target?.path ?? '/'}${ctx.target?.query ?? ''}`);
  const sealed = cookieValue(ctx.req.headers.cookie, FEDERATION_COOKIE);
  const identity = await gw.federation.callback(id, url, sealed);
  const tokens = await gw.identity.federatedLogin(identity, meta(ctx));
  const clearFlow = `${FEDERATION_COOKIE}=; Path=/auth/federated; Max-Age=0; HttpOnly; Secure; SameSite=Lax`;
  if (identity.mode === 'api') {
    sendJson(ctx, 200, JSON.stringify(tokens), { ...NO_STORE, 'set-cookie': clearFlow });
    return;
  }
  const refresh = refreshCookie(tokens.refresh_token, Math.floor(gw.config.identity.sessionTtl / 1000));
  // The session cookie too, for routes that take it (`issuers: [session]`).
  const session = await startCookieSession(gw, tokens);
  ctx.res.writeHead(
    302,
    withSecurityHeaders({
      location: identity.returnTo,
      'set-cookie': [refresh, session, clearFlow],
      'cache-control': 'no-store',
      'x-request-id': ctx.requestId,
    }),
  );
  ctx.res.end();
}

/** Serves an internal endpoint if the path is one; returns whether it did. */
/** The first path segment of every endpoint the gateway serves itself (computed once). */
const INTERNAL_FIRST_SEGMENTS: ReadonlySet<string> = new Set(
  [
    ...INTERNAL_ENDPOINTS.keys(),
    ...OAUTH_ENDPOINTS.keys(),
    ADMIN_PREFIX,
    '/auth/devices',
    '/auth/federated/',
  ].map(firstSegment),
);

function firstSegment(path: string): string {
  const end = path.indexOf('/', 1);
  return end === -1 ? path : path.slice(0, end);
}

/**
 * Whether `path` may be one of the gateway's own endpoints: a set lookup on its first segment, so
 * proxied requests (nearly all of them) skip {@link serveInternal} and its promises.
 */
export function mayBeInternal(path: string): boolean {
  return INTERNAL_FIRST_SEGMENTS.has(firstSegment(path));
}

export async function serveInternal(gw: Gateway, ctx: RequestContext, path: string): Promise<boolean> {
  if (await serveAdminApi(gw, ctx, path)) return true;
  if (await serveDeviceEndpoints(gw, ctx, path)) return true;
  const fed = FEDERATED.exec(path);
  if (fed && gw.federation.has(fed[1] as string)) {
    ctx.internal = true;
    if (ctx.req.method !== 'GET')
      throw new PortcullisError('method_not_allowed', { headers: { allow: 'GET, HEAD' } });
    await (fed[2] === 'start' ? federatedStart : federatedCallback)(gw, ctx, fed[1] as string);
    return true;
  }
  const endpoint = INTERNAL_ENDPOINTS.get(path) ?? OAUTH_ENDPOINTS.get(path);
  if (!endpoint) return false;
  ctx.internal = true;
  const method =
    ctx.req.method === 'HEAD' && (endpoint.method === 'GET' || endpoint.also === 'GET')
      ? 'GET'
      : ctx.req.method;
  if (method !== endpoint.method && method !== endpoint.also) {
    throw new PortcullisError('method_not_allowed', {
      headers: {
        allow: [endpoint.method, endpoint.also]
          .filter(Boolean)
          .map((m) => (m === 'GET' ? 'GET, HEAD' : m))
          .join(', '),
      },
    });
  }
  await endpoint.handle(gw, ctx);
  return true;
}
