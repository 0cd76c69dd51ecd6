import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { decodeJwt } from 'jose';
import { OWN_ISSUER_ID } from '../../config/index.js';
import { PortcullisError, type Principal } from '../../core/index.js';
import { API_KEY_ISSUER_ID } from '../../identity/index.js';
import { SPIFFE_ISSUER_ID } from '../../workload/peer.js';
import type { Gateway, RequestContext } from '../context.js';
import { clientResponseHeaders } from '../headers.js';
import { CONNECTION_FAILURES, type Target } from '../upstream.js';
import { bearerToken } from './authenticate.js';

/** A WebSocket opening handshake (RFC 6455 §4.1): GET, `Upgrade: websocket`, no body. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return req.method === 'GET' && (req.headers.upgrade ?? '').trim().toLowerCase() === 'websocket';
}

/** undici's error for an upgrade answered with another status than 101 (`SocketError('bad upgrade')`). */
function isRefusedHandshake(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e.code === 'UND_ERR_SOCKET' && e.message === 'bad upgrade';
}

/**
 * The last step of an authorized WebSocket upgrade: the handshake goes to the upstream (canonical
 * target, filtered headers, identity assertion — as any forwarded request) through the target's pool
 * (mTLS included); on its `101` the client gets the upstream's handshake answer and the two sockets are
 * joined. While the tunnel is open the caller's session is checked every `recheckMs`: a revoked or
 * expired session closes it. A shutdown closes the tunnels; a reload leaves them to their re-checks.
 */
export async function tunnel(
  gw: Gateway,
  ctx: RequestContext,
  path: string,
  headers: Record<string, string | string[] | undefined>,
  recheckMs: number,
): Promise<void> {
  const { route, upgrade, req, res } = ctx;
  if (!route || !upgrade)
    throw new PortcullisError('internal_error', { detail: 'tunnel without an upgrade' });
  if (req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0')
    throw new PortcullisError('bad_request', { detail: 'a WebSocket handshake has no body' });
  const upstream = route.upstream;
  // The pool adds `Connection: upgrade` and `Upgrade: websocket`; the client's were hop-by-hop.
  delete headers.connection;
  delete headers.upgrade;
  let to: Target = upstream.pick();
  let attemptsLeft = upstream.retries;
  let up: { headers: IncomingMessage['headers']; socket: Duplex };
  for (;;) {
    try {
      up = (await to.pool.upgrade({
        path,
        method: 'GET',
        headers: headers as Record<string, string>,
        protocol: 'websocket',
      })) as unknown as typeof up;
      to.answered();
      break;
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      // undici reports an answer other than 101 as a socket error: the target answered (refused the
      // handshake). That is not a failed connection: no ejection, and no other target is asked.
      if (isRefusedHandshake(err)) {
        to.answered();
        throw new PortcullisError('upstream_unavailable', {
          detail: `${upstream.name}: the upstream refused the WebSocket handshake`,
          cause: err,
        });
      }
      if (CONNECTION_FAILURES.has(code)) {
        to.connectionFailed(`connection failed: ${code}`);
        if (attemptsLeft-- > 0 && !upgrade.socket.destroyed) {
          to = upstream.pick(to);
          continue;
        }
      }
      throw new PortcullisError('upstream_unavailable', {
        detail: `${upstream.name}: WebSocket handshake failed (${code || (err as Error).message})`,
        cause: err,
      });
    }
  }
  const client = upgrade.socket;
  if (client.destroyed) {
    up.socket.destroy();
    return;
  }
  // The gateway is shutting down: its tunnels were closed while this handshake was in flight.
  if (upstream.tunnels.closed) {
    up.socket.destroy();
    throw new PortcullisError('upstream_unavailable', { detail: `${upstream.name}: closing` });
  }
  // The answer is written by hand: the response object must not also speak on this socket.
  res.statusCode = 101;
  res.detachSocket(client as Parameters<typeof res.detachSocket>[0]);
  const answer: OutgoingHttpHeaders = clientResponseHeaders(up.headers);
  let head = 'HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n';
  head += `x-request-id: ${ctx.requestId}\r\n`;
  for (const [name, value] of Object.entries(answer)) {
    if (value === undefined || name === 'x-request-id') continue;
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`;
  }
  client.write(`${head}\r\n`);
  if (upgrade.head.length > 0) up.socket.write(upgrade.head);

  const sockets = new Set([client, up.socket]);
  const principal = ctx.principal;
  let timer: NodeJS.Timeout | undefined;
  let expiry: NodeJS.Timeout | undefined;
  const close = () => {
    clearInterval(timer);
    clearTimeout(expiry);
    for (const s of sockets) s.destroy();
    upstream.tunnels.open.delete(close);
  };
  upstream.tunnels.open.add(close);
  for (const s of sockets) {
    s.on('error', close);
    s.on('close', close);
  }
  client.pipe(up.socket);
  up.socket.pipe(client);

  // Never trust once: what authenticated the handshake is checked again while the tunnel lives.
  if (!principal) return;
  const recheck = liveCheck(gw, ctx, principal);
  const end = (why: string, code?: string) => {
    gw.log.info(
      { requestId: ctx.requestId, route: route.id, sub: principal.id, code },
      `WebSocket closed: ${why}`,
    );
    close();
  };
  if (recheck.until !== undefined) {
    // A credential with an end of its own (an external token's `exp`, a certificate's notAfter).
    expiry = setTimeout(
      () => end('the credential expired'),
      Math.max(0, Math.min(recheck.until - gw.clock.now(), 2 ** 31 - 1)),
    );
    expiry.unref();
  }
  if (recheck.check) {
    const check = recheck.check;
    timer = setInterval(() => {
      check().catch((err: unknown) =>
        end('the credential is no longer valid', (err as { code?: string }).code),
      );
    }, recheckMs);
    timer.unref();
  }
}

/**
 * How a tunnel's caller is checked again: our own sessions (and service accounts) in the store — the
 * tunnel's traffic counts as the session's activity, so a used connection does not idle out; an API key
 * by looking it up again; external tokens and client certificates end at their expiry.
 */
function liveCheck(
  gw: Gateway,
  ctx: RequestContext,
  principal: Principal,
): { check?: () => Promise<unknown>; until?: number } {
  if (principal.issuer === OWN_ISSUER_ID) {
    const meta = { ip: ctx.ip, userAgent: ctx.req.headers['user-agent'] };
    return { check: () => gw.identity.checkSession(principal, meta) };
  }
  if (principal.issuer === API_KEY_ISSUER_ID) {
    const key = ctx.req.headers['x-api-key'];
    return typeof key === 'string' ? { check: () => gw.apiKeys.authenticate(key) } : {};
  }
  if (principal.issuer === SPIFFE_ISSUER_ID) {
    const peer = (ctx.req.socket as TLSSocket).getPeerCertificate?.();
    return peer?.valid_to ? { until: Date.parse(peer.valid_to) } : {};
  }
  if (ctx.req.headers.authorization === undefined) return {};
  try {
    // Verified by this very request's authenticate step; only its lifetime is read here.
    const { exp } = decodeJwt(bearerToken(ctx.req.headers.authorization));
    return typeof exp === 'number' ? { until: exp * 1000 } : {};
  } catch {
    return {};
  }
}
