import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import type { Dispatcher } from 'undici';
import { PortcullisError } from '../../core/index.js';
import { ASSERTION_HEADER, signedAssertion } from '../assertion.js';
import type { Gateway, RequestContext } from '../context.js';
import { applyCors } from '../cors.js';
import { clientResponseHeaders, upstreamRequestHeaders, withSecurityHeaders } from '../headers.js';
import { CONNECTION_FAILURES } from '../upstream.js';
import { isWebSocketUpgrade, tunnel } from './tunnel.js';

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Step 8: forward exactly what was authorized — the canonical target, the client's headers minus
 * hop-by-hop and spoofable identity headers — with a fresh identity assertion bound to this request,
 * through the upstream's keep-alive pool; stream the answer back with the security headers.
 */
export async function forward(gw: Gateway, ctx: RequestContext): Promise<void> {
  const { route, target, req, res } = ctx;
  if (!route || !target) throw new PortcullisError('internal_error', { detail: 'forward without a route' });
  const upstream = route.upstream;
  const forwardedTarget = target.path + target.query;
  const headers = upstreamRequestHeaders(req.headers, upstream.passAuthorization);
  // No identity, no assertion (public routes); the client's identity headers were stripped all the same.
  if (ctx.principal) headers[ASSERTION_HEADER] = signedAssertion(gw, ctx);
  headers['x-request-id'] = ctx.requestId;
  headers['x-forwarded-for'] = ctx.forwardedFor;
  headers['x-forwarded-proto'] = ctx.scheme;
  if (ctx.host !== '') headers['x-forwarded-host'] = ctx.host;
  if (ctx.upgrade && route.websocket && isWebSocketUpgrade(req))
    return tunnel(gw, ctx, forwardedTarget, headers, route.websocket.recheckMs);

  const declared = req.headers['content-length'];
  const hasBody = req.headers['transfer-encoding'] !== undefined || (declared ?? '0') !== '0';
  // node:http hands an upgrade request's following bytes to the upgrade listener unparsed: a body there
  // would be lost (or be something else entirely), so such a request is refused, not forwarded empty.
  if (ctx.upgrade && hasBody)
    throw new PortcullisError('bad_request', { detail: 'an upgrade request with a body' });
  if (declared !== undefined && Number(declared) > route.maxBodyBytes)
    throw new PortcullisError('payload_too_large');
  // A body a step already read whole (and validated) goes as those bytes, with their length.
  const read = ctx.body;
  if (read) {
    delete headers['transfer-encoding'];
    headers['content-length'] = String(read.length);
  }
  const body = read ? null : hasBody ? limitBody(req, route.maxBodyBytes) : null;
  // The upstream's answer goes straight into `res` (see Exchange), and a client gone aborts it.
  const answer = new ResponseHead(ctx, route.securityHeaders, route.cors !== undefined);
  // Another target may be tried only when the request can be sent again unchanged: an idempotent
  // method, and no body or one already read whole.
  let attemptsLeft = body === null && IDEMPOTENT.has(ctx.method) ? upstream.retries : 0;
  let to = upstream.pick();
  for (;;) {
    try {
      await exchange(
        to.pool,
        { method: ctx.method as 'GET', path: forwardedTarget, headers, body: read ?? body?.stream ?? null },
        res,
        answer,
      );
      to.answered();
      return;
    } catch (err) {
      if (answer.started) {
        // The client went away or the upstream broke mid-body: nothing more can be sent.
        gw.log.debug({ requestId: ctx.requestId, err }, 'response stream ended early');
        res.destroy();
        return;
      }
      if (body?.exceeded())
        throw new PortcullisError('payload_too_large', { detail: 'streamed body over the route limit' });
      const code = (err as { code?: string }).code ?? '';
      if (CONNECTION_FAILURES.has(code)) to.connectionFailed(`connection failed: ${code}`);
      if (res.destroyed) {
        // The client left before the answer (which aborted the upstream request): nobody to answer,
        // and not the upstream's failure.
        gw.log.debug({ requestId: ctx.requestId, err }, 'client closed the connection before the answer');
        return;
      }
      if (attemptsLeft > 0 && CONNECTION_FAILURES.has(code)) {
        attemptsLeft--;
        const failed = to;
        to = upstream.pick(failed);
        gw.log.debug(
          { requestId: ctx.requestId, upstream: upstream.name, failed: failed.origin, code },
          'retrying',
        );
        continue;
      }
      throw new PortcullisError(TIMEOUT_CODES.has(code) ? 'upstream_timeout' : 'upstream_unavailable', {
        detail: `${upstream.name}: ${code || (err as Error).message}`,
        cause: err,
      });
    }
  }
}

/** Writes the client's response head from the upstream's: filtered, with the route's own headers. */
class ResponseHead {
  started = false;
  constructor(
    private readonly ctx: RequestContext,
    private readonly securityHeaders: ReadonlyArray<readonly [string, string]>,
    private readonly cors: boolean,
  ) {}

  write(statusCode: number, upstreamHeaders: IncomingHttpHeaders): void {
    const ctx = this.ctx;
    const out = withSecurityHeaders(clientResponseHeaders(upstreamHeaders), this.securityHeaders);
    out['x-request-id'] = ctx.requestId;
    if (this.cors) applyCors(out as Record<string, unknown>, ctx);
    if (ctx.rateLimitHeaders) Object.assign(out, ctx.rateLimitHeaders);
    ctx.res.writeHead(statusCode, out);
    this.started = true;
  }
}

/**
 * One request to the upstream through undici's `dispatch` with a handler that writes the answer
 * straight into `res`: no Readable, no AsyncResource, no end-of-stream listeners per request (what
 * `stream()` adds), and one handler object per attempt rather than a closure per callback. Backpressure:
 * the upstream is paused while `res` is full. A client that goes away aborts the upstream request.
 * Resolves when the answer is complete; rejects with the upstream error (the head has then been written
 * or not — `head.started` tells).
 */
function exchange(
  pool: Dispatcher,
  options: Dispatcher.DispatchOptions,
  res: ServerResponse,
  head: ResponseHead,
): Promise<void> {
  return new Promise((resolve, reject) => {
    pool.dispatch(options, new Exchange(res, head, resolve, reject));
  });
}

class Exchange implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined;
  #done = false;
  readonly #onClose = () => {
    if (!this.#done) this.#controller?.abort(new Error('client closed the connection'));
  };
  readonly #onDrain = () => this.#controller?.resume();

  constructor(
    private readonly res: ServerResponse,
    private readonly head: ResponseHead,
    private readonly resolve: () => void,
    private readonly reject: (err: Error) => void,
  ) {
    res.once('close', this.#onClose);
    res.on('drain', this.#onDrain);
  }

  #settle(err?: Error): void {
    if (this.#done) return;
    this.#done = true;
    this.res.off('close', this.#onClose);
    this.res.off('drain', this.#onDrain);
    if (err) this.reject(err);
    else this.resolve();
  }

  onRequestStart(c: Dispatcher.DispatchController): void {
    this.#controller = c;
    if (this.res.destroyed) c.abort(new Error('client closed the connection'));
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return; // 1xx: the final answer follows
    this.head.write(statusCode, headers);
  }

  onResponseData(c: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) c.pause();
  }

  onResponseEnd(): void {
    this.res.end();
    this.#settle();
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.#settle(err);
  }
}

/** RFC 9110 §9.2.2 idempotent methods (TRACE is never forwarded). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/** The request body, cut off (and the upstream request aborted) once it passes `max` bytes. */
function limitBody(req: IncomingMessage, max: number): { stream: Transform; exceeded: () => boolean } {
  let seen = 0;
  let over = false;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > max) {
        over = true;
        done(new Error('request body over the route limit'));
        return;
      }
      done(null, chunk);
    },
  });
  req.pipe(stream);
  req.once('error', (err) => stream.destroy(err));
  return { stream, exceeded: () => over };
}
