import type { OutgoingHttpHeaders } from 'node:http';
import { errorBody, isPortcullisError, PortcullisError } from '../core/index.js';
import type { Gateway, RequestContext } from './context.js';
import { corsHeaders } from './cors.js';
import { withSecurityHeaders } from './headers.js';

/** Sends a JSON body with the security headers and our request id. */
export function sendJson(
  ctx: RequestContext,
  status: number,
  body: string,
  extra?: Readonly<Record<string, string>>,
): void {
  const headers: OutgoingHttpHeaders = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': ctx.requestId,
    // A browser on another origin can read why it was refused (the route's CORS, when it has one).
    ...(ctx.route?.cors ? corsHeaders(ctx) : {}),
    ...extra,
  };
  ctx.res.writeHead(status, withSecurityHeaders(headers, ctx.route?.securityHeaders));
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body);
}

/** Turns any error into a PortcullisError (unknown errors become `internal_error`). */
export function asPortcullisError(err: unknown): PortcullisError {
  return isPortcullisError(err)
    ? err
    : new PortcullisError('internal_error', { detail: (err as Error)?.message ?? String(err), cause: err });
}

/**
 * Answers with `{"error":{"code","message","requestId"}}`. The client sees the code and the public
 * message; the operator's detail goes to the log only. If the response had already started, the
 * connection is cut instead (a half-sent body must not look complete).
 */
export function sendError(gw: Gateway, ctx: RequestContext, error: PortcullisError): void {
  const level = error.status >= 500 ? 'error' : 'debug';
  gw.log[level](
    {
      requestId: ctx.requestId,
      code: error.code,
      detail: error.detail,
      route: ctx.route?.id,
      err: error.status >= 500 ? error.cause : undefined,
    },
    'request refused',
  );
  if (ctx.res.headersSent) {
    ctx.res.destroy();
    return;
  }
  if (ctx.decideOnly === 'forward-auth' && gw.config.gateway.forwardAuth?.refusalBody === false) {
    // Behind nginx auth_request: headers only, so nginx keeps its connection to us (see the config doc).
    const headers: OutgoingHttpHeaders = {
      'content-length': 0,
      'cache-control': 'no-store',
      'x-request-id': ctx.requestId,
      'x-portcullis-error': error.code,
      ...error.headers,
    };
    ctx.res.writeHead(error.status, withSecurityHeaders(headers, ctx.route?.securityHeaders));
    ctx.res.end();
    return;
  }
  sendJson(ctx, error.status, errorBody(error.code, error.publicMessage, ctx.requestId), error.headers);
}
