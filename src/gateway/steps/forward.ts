import { pipeline } from 'node:stream/promises';
import { PortcullisError } from '../../core/index.js';
import { ASSERTION_HEADER } from '../assertion.js';
import type { Gateway, RequestContext } from '../context.js';
import { clientResponseHeaders, upstreamRequestHeaders, withSecurityHeaders } from '../headers.js';

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Step 8: forward exactly what was authorized — the canonical target, the client's headers minus
 * hop-by-hop and spoofable identity headers — with a fresh identity assertion bound to this request,
 * through the upstream's keep-alive pool; stream the answer back with the security headers.
 */
export async function forward(gw: Gateway, ctx: RequestContext): Promise<void> {
  const { principal, route, target, decision, req, res } = ctx;
  if (!principal || !route || !target || decision?.outcome !== 'allow') {
    throw new PortcullisError('internal_error', { detail: 'forward without an allow decision' });
  }
  const upstream = route.upstream;
  const method = req.method ?? 'GET';
  const forwardedTarget = target.path + target.query;
  const headers = upstreamRequestHeaders(req.headers, upstream.passAuthorization);
  headers[ASSERTION_HEADER] = upstream.assertion.sign(
    {
      subject: principal.id,
      sessionId: principal.sessionId,
      roles: principal.roles,
      amr: principal.amr,
      method,
      host: ctx.host,
      target: forwardedTarget,
      routeId: route.id,
      requestId: ctx.requestId,
      ruleIds: decision.ruleIds,
    },
    Math.floor(gw.clock.now() / 1000),
  );
  headers['x-request-id'] = ctx.requestId;
  headers['x-forwarded-for'] = ctx.ip;
  headers['x-forwarded-proto'] = 'http';
  if (ctx.host !== '') headers['x-forwarded-host'] = ctx.host;

  const hasBody =
    req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
  const abort = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) abort.abort();
  };
  res.once('close', onClose);

  let upstreamRes: Awaited<ReturnType<typeof upstream.pool.request>>;
  try {
    upstreamRes = await upstream.pool.request({
      method: method as 'GET',
      path: forwardedTarget,
      headers,
      body: hasBody ? req : null,
      signal: abort.signal,
    });
  } catch (err) {
    res.off('close', onClose);
    const code = (err as { code?: string }).code ?? '';
    throw new PortcullisError(TIMEOUT_CODES.has(code) ? 'upstream_timeout' : 'upstream_unavailable', {
      detail: `${upstream.name}: ${code || (err as Error).message}`,
      cause: err,
    });
  }

  const out = withSecurityHeaders(clientResponseHeaders(upstreamRes.headers));
  out['x-request-id'] = ctx.requestId;
  res.writeHead(upstreamRes.statusCode, out);
  try {
    await pipeline(upstreamRes.body, res);
  } catch (err) {
    // The client went away or the upstream broke mid-body: nothing more can be sent.
    gw.log.debug({ requestId: ctx.requestId, err }, 'response stream ended early');
    res.destroy();
  } finally {
    res.off('close', onClose);
  }
}
