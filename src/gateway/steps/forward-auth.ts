import { PortcullisError } from '../../core/index.js';
import { ASSERTION_HEADER, signedAssertion } from '../assertion.js';
import { canonicalizeTarget } from '../canonical-target.js';
import { clientAddress } from '../client-address.js';
import type { Gateway, RequestContext } from '../context.js';
import { withSecurityHeaders } from '../headers.js';
import { canonicalHost } from '../route-table.js';

const METHOD = /^[A-Z]{1,16}$/;

function single(value: string | string[] | undefined, name: string): string {
  if (typeof value !== 'string' || value === '') {
    throw new PortcullisError('bad_request', { message: `The forward-auth request lacks ${name}.` });
  }
  return value;
}

/**
 * Forward-auth step 1 (instead of canonicalize): the original request is taken from
 * X-Forwarded-Method/-Uri/-Host — only when the caller is a trusted proxy — and must already be in
 * canonical form, because here the proxy, not Portcullis, sends the bytes upstream: what is authorized
 * must be exactly what the upstream gets.
 */
export function forwardedRequest(gw: Gateway, ctx: RequestContext): void {
  ctx.decideOnly = 'forward-auth';
  if (!gw.isTrustedProxy(ctx.peerIp)) {
    throw new PortcullisError('forbidden', {
      detail: `forward-auth caller ${ctx.peerIp} is not a trusted proxy`,
    });
  }
  const client = clientAddress(gw, ctx);
  ctx.ip = client.ip;
  ctx.forwardedFor = client.chain;
  const h = ctx.req.headers;
  original(
    ctx,
    single(h['x-forwarded-method'], 'X-Forwarded-Method'),
    single(h['x-forwarded-uri'], 'X-Forwarded-Uri'),
    single(h['x-forwarded-host'], 'X-Forwarded-Host'),
  );
}

/** The original request as a proxy describes it: method, target (in canonical form only) and host. */
function original(ctx: RequestContext, method: string, uri: string, host: string): void {
  if (!METHOD.test(method))
    throw new PortcullisError('bad_request', { message: 'The original method is invalid.' });
  ctx.method = method;
  ctx.host = canonicalHost(host);
  ctx.authority = host.toLowerCase();
  const proto = ctx.req.headers['x-forwarded-proto'];
  ctx.scheme = proto === 'https' || proto === 'http' ? proto : 'http';
  ctx.target = canonicalizeTarget(uri);
  if (ctx.target.path + ctx.target.query !== uri) {
    throw new PortcullisError('invalid_path', {
      detail: 'forward-auth requires the target in canonical form',
    });
  }
}

/**
 * Envoy ext_authz, HTTP service mode (instead of canonicalize): Envoy sends the original method, the
 * original path after the configured prefix and the original host as Host — honoured only from a
 * trusted proxy. The answer is the forward-auth one: 200 with the identity headers for Envoy to add
 * upstream (`allowed_upstream_headers`), or the refusal, which Envoy returns to the client.
 */
export function extAuthzRequest(gw: Gateway, ctx: RequestContext): void {
  ctx.decideOnly = 'ext-authz';
  const prefix = gw.config.gateway.extAuthz?.pathPrefix ?? '';
  if (!gw.isTrustedProxy(ctx.peerIp)) {
    throw new PortcullisError('forbidden', {
      detail: `ext_authz caller ${ctx.peerIp} is not a trusted proxy`,
    });
  }
  const client = clientAddress(gw, ctx);
  ctx.ip = client.ip;
  ctx.forwardedFor = client.chain;
  const url = ctx.req.url ?? '';
  original(ctx, ctx.req.method ?? '', url.slice(prefix.length) || '/', single(ctx.req.headers.host, 'Host'));
}

/**
 * Forward-auth last step (instead of forward): 200 with the identity for the proxy to copy to the
 * upstream — the request-bound assertion, subject and roles — and the rate-limit headers.
 */
export function answerForwardAuth(gw: Gateway, ctx: RequestContext): true {
  const principal = ctx.principal;
  if (!principal && ctx.route?.public) {
    // A public route: allowed, with no identity to hand on.
    ctx.res.writeHead(
      200,
      withSecurityHeaders({
        'cache-control': 'no-store',
        'content-length': 0,
        'x-request-id': ctx.requestId,
        ...ctx.rateLimitHeaders,
      }),
    );
    ctx.res.end();
    return true;
  }
  if (!principal)
    throw new PortcullisError('internal_error', { detail: 'forward-auth answer without a principal' });
  const headers = withSecurityHeaders({
    'cache-control': 'no-store',
    'content-length': 0,
    'x-request-id': ctx.requestId,
    [ASSERTION_HEADER]: signedAssertion(gw, ctx),
    'x-portcullis-subject': principal.id,
    'x-portcullis-roles': principal.roles.join(','),
    ...ctx.rateLimitHeaders,
  });
  ctx.res.writeHead(200, headers);
  ctx.res.end();
  return true;
}
