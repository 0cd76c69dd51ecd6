import { type IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { newRequestId, PortcullisError } from '../core/index.js';
import { redirectBrowser } from './browser-redirect.js';
import type { Gateway, RequestContext } from './context.js';
import { decisionRecord } from './decision-record.js';
import { mayBeInternal, serveInternal } from './internal-endpoints.js';
import { asPortcullisError, sendError } from './respond.js';
import { authenticate } from './steps/authenticate.js';
import { authorize } from './steps/authorize.js';
import { canonicalize } from './steps/canonicalize.js';
import { identifyDevice } from './steps/device.js';
import { forward } from './steps/forward.js';
import { answerForwardAuth, extAuthzRequest, forwardedRequest } from './steps/forward-auth.js';
import { limit } from './steps/limit.js';
import { assessRisk } from './steps/risk.js';
import { route } from './steps/route.js';
import { validateRequest } from './steps/validate.js';

/**
 * The request path, in order. Each step is one small module with one job; a step that answers the
 * request itself returns `true` and ends the pipeline; a step that refuses throws a PortcullisError.
 *
 *   1. canonicalize   one canonical host + target; ambiguous encodings → 400
 *   2. internal       the gateway's own endpoints (/auth/*, JWKS)
 *   3. route          compiled route table → route, params (404 / 405)
 *   4. authenticate   bearer JWT (or browser session cookie) verified + session still active →
 *                     principal (401; a browser navigating is redirected to the sign-in page)
 *      device         the user's device, proven by a DPoP proof or a device certificate (401/403)
 *      risk           signals → score → allow / step-up (401) / deny (403, session ended)
 *   5. authorize      policy decision, deny by default (403); step-up 401 (browsers: the MFA page)
 *   6. limit          per-principal, per-route quota (GCRA) → 429 with Retry-After
 *   7. audit          the allow decision is appended to the audit log (refusals are audited on answer)
 *   8. forward        identity assertion + canonical target → upstream (502 / 504)
 */
type Step = (gw: Gateway, ctx: RequestContext) => unknown;

const STEPS: readonly Step[] = [
  canonicalize,
  (gw, ctx) => {
    const path = ctx.target?.path ?? '';
    return mayBeInternal(path) ? serveInternal(gw, ctx, path) : undefined;
  },
  route,
  authenticate,
  identifyDevice,
  assessRisk,
  authorize,
  limit,
  validateRequest,
  auditDecision,
  forward,
];

/**
 * Forward-auth (nginx `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`): the same checks,
 * on the original request described by a trusted proxy, answered with identity headers instead of
 * being forwarded.
 */
const FORWARD_AUTH_STEPS: readonly Step[] = [
  forwardedRequest,
  route,
  authenticate,
  identifyDevice,
  assessRisk,
  authorize,
  limit,
  auditDecision,
  answerForwardAuth,
];

/** Envoy ext_authz (HTTP service): the original request is the request itself, under a path prefix. */
const EXT_AUTHZ_STEPS: readonly Step[] = [extAuthzRequest, ...FORWARD_AUTH_STEPS.slice(1)];

/**
 * Writes a decision record; when the audit log cannot take it, the request is refused with 503
 * `store_unavailable` (fail closed) unless the writer is configured to fail open. Batched records are
 * queued synchronously (no promise per request); a durable one returns the promise of its commit.
 */
function writeDecision(
  gw: Gateway,
  ctx: RequestContext,
  error: PortcullisError | undefined,
): Promise<void> | undefined {
  gw.metrics.countDecision(
    ctx.decision?.outcome === 'challenge' ? 'challenge' : error ? 'deny' : (ctx.decision?.outcome ?? 'allow'),
    ctx.route?.id ?? '',
    ctx.decision?.ruleIds[0] ?? error?.code ?? '',
  );
  const event = { type: 'gateway.decision', data: decisionRecord(ctx, error) };
  try {
    // batched: a failed commit is retried from the spool; a full spool or a closed writer throws here
    if (gw.config.audit.decisions === 'batched') {
      gw.audit.enqueue(event);
      return undefined;
    }
    return gw.audit.write(event, 'durable').catch((err: unknown) => {
      throw new PortcullisError('store_unavailable', { detail: 'audit write failed', cause: err });
    });
  } catch (err) {
    throw new PortcullisError('store_unavailable', { detail: 'audit log unavailable', cause: err });
  }
}

/** Records an allow decision before forwarding (awaited when decisions are durable). */
function auditDecision(gw: Gateway, ctx: RequestContext): Promise<void> | undefined {
  return writeDecision(gw, ctx, undefined);
}

/**
 * The server's `upgrade` listener: the request runs the same pipeline, with a response bound to the raw
 * socket (so refusals are the usual JSON answers). The forward step tunnels a WebSocket upgrade on a
 * route that allows it; any other upgrade request is served as a plain request, and the connection
 * closes after the answer.
 */
export function createUpgradeHandler(
  current: () => Gateway,
): (req: IncomingMessage, socket: Duplex, head: Buffer) => void {
  const handle = createHandler(current);
  return (req, socket, head) => {
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.once('finish', () => {
      res.detachSocket(socket as Socket);
      socket.end();
    });
    socket.on('error', () => socket.destroy());
    // node:http took its own 'drain' listener off this socket when it handed it over: without this, a
    // response that fills the socket (an upstream answer forwarded with backpressure) never resumes.
    socket.on('drain', () => {
      if (res.writableNeedDrain) res.emit('drain');
    });
    handle(req, res, { socket, head });
  };
}

const STATUS_CLASS: readonly string[] = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/**
 * The node:http request handler running {@link STEPS}. `current` returns the gateway built from the
 * active config: a reload swaps it, and each request runs start to finish on the one it started with.
 */
export function createHandler(
  current: () => Gateway,
): (req: IncomingMessage, res: ServerResponse, upgrade?: RequestContext['upgrade']) => void {
  return (req, res, upgrade) => {
    const gw = current();
    const forwardAuthPath = gw.config.gateway.forwardAuth?.path;
    const url = req.url ?? '';
    const extAuthz = gw.config.gateway.extAuthz?.pathPrefix;
    const steps =
      forwardAuthPath !== undefined &&
      url.startsWith(forwardAuthPath) &&
      (url.length === forwardAuthPath.length || url[forwardAuthPath.length] === '?')
        ? FORWARD_AUTH_STEPS
        : extAuthz !== undefined && url.startsWith(`${extAuthz}/`)
          ? EXT_AUTHZ_STEPS
          : STEPS;
    const ctx: RequestContext = {
      req,
      res,
      requestId: newRequestId(),
      startedAt: performance.now(),
      peerIp: req.socket.remoteAddress ?? '',
      ip: req.socket.remoteAddress ?? '',
      forwardedFor: req.socket.remoteAddress ?? '',
      method: req.method ?? 'GET',
      scheme: (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
      authority: (req.headers.host ?? '').toLowerCase(),
      host: '',
      target: undefined,
      route: undefined,
      params: {},
      principal: undefined,
      sessionCookie: false,
      decision: undefined,
      risk: undefined,
      device: undefined,
      dpop: undefined,
      body: undefined,
      decideOnly: false,
      internal: false,
      rateLimitHeaders: undefined,
      upgrade,
    };
    void run(gw, ctx, steps);
  };
}

async function run(gw: Gateway, ctx: RequestContext, steps: readonly Step[]): Promise<void> {
  let outcome = 'allow';
  try {
    // An indexed loop: `for…of` across an await allocates an iterator result per step.
    for (let i = 0; i < steps.length; i++) {
      let done = (steps[i] as Step)(gw, ctx);
      if (done instanceof Promise) done = await done;
      if (done === true) {
        outcome = ctx.internal ? 'internal' : 'allow';
        break;
      }
    }
  } catch (err) {
    const error = asPortcullisError(err);
    // A refusal (4xx) is a deny even after policy allowed (e.g. 429); a 5xx after an allow is an error.
    outcome = error.status < 500 || ctx.decision?.outcome !== 'allow' ? 'deny' : 'error';
    if (error.code === 'store_unavailable') gw.metrics.storeErrors.inc();
    // Failure velocity counts refusals of authenticated callers that the risk step itself did not cause:
    // anonymous noise from a shared address must not raise the risk of everyone behind it.
    if (
      (error.status === 401 || error.status === 403) &&
      // A cross-site page can make the browser send refused requests at will: not the user's failures.
      error.code !== 'csrf_rejected' &&
      ctx.principal &&
      (!ctx.risk || ctx.risk.outcome === 'allow')
    )
      gw.risk?.recordFailure(ctx.ip);
    let answer = error;
    if (outcome === 'deny' && !ctx.internal) {
      try {
        await recordDenial(gw, ctx, error);
      } catch (auditErr) {
        answer = asPortcullisError(auditErr);
      }
    }
    // A browser navigating to a session-cookie route goes to the sign-in or step-up page instead.
    if (!redirectBrowser(gw, ctx, answer)) sendError(gw, ctx, answer);
  } finally {
    gw.metrics.countRequest(
      ctx.route?.id ?? '',
      outcome,
      STATUS_CLASS[Math.floor(ctx.res.statusCode / 100)] ?? 'other',
      (performance.now() - ctx.startedAt) / 1000,
    );
  }
}

/** Every refusal is a decision too. A failed durable write turns the answer into a 503 (fail closed). */
async function recordDenial(gw: Gateway, ctx: RequestContext, error: PortcullisError): Promise<void> {
  await writeDecision(gw, ctx, error);
}
