import type { TLSSocket } from 'node:tls';
import { PortcullisError } from '../../core/index.js';
import { dpopError } from '../../devices/index.js';
import { isDeviceId } from '../../workload/index.js';
import type { Gateway, RequestContext } from '../context.js';

/**
 * Step 4b: which device is the user on? Proven, never claimed: a DPoP proof (RFC 9449) signed by an
 * enrolled device key for this very request and access token, or a device certificate from the internal
 * CA presented over mTLS. A copied header or fingerprint is never enough. A token bound to a key
 * (`cnf.jkt`) needs a proof by that key on every request. The device must be the user's own and not
 * revoked; policy then reads `device.*` and the risk engine its signals. Requests without a proof have
 * no device (and pay nothing here).
 */
export async function identifyDevice(gw: Gateway, ctx: RequestContext): Promise<void> {
  const devices = gw.devices;
  const principal = ctx.principal;
  if (principal?.kind !== 'user') return;
  const proof = ctx.req.headers.dpop;
  const bound = principal.confirmationJkt;
  if (proof !== undefined) {
    // Node joins repeated headers with ", ", which no compact JWS contains: two proofs fail as malformed.
    if (typeof proof !== 'string') throw dpopError('one DPoP proof per request');
    if (!devices) throw dpopError('DPoP proofs are not accepted here (devices are off)');
    const target = ctx.target;
    if (!target) throw new PortcullisError('internal_error', { detail: 'device step before canonicalize' });
    const authorization = ctx.req.headers.authorization ?? '';
    const v = await devices.dpop.verify(proof, {
      method: ctx.method,
      url: `${ctx.scheme}://${ctx.authority}${target.path}`,
      accessToken: authorization.slice(authorization.indexOf(' ') + 1).trim(),
    });
    if (bound !== undefined && v.jkt !== bound)
      throw dpopError('the DPoP proof is signed by another key than the token is bound to');
    ctx.device = await devices.forRequest(principal.id, { via: 'dpop', jkt: v.jkt });
    return;
  }
  if (bound !== undefined)
    throw dpopError('the access token is bound to a key (cnf.jkt): send a DPoP proof with it');
  if (ctx.req.headers.authorization?.slice(0, 5).toLowerCase() === 'dpop ')
    throw dpopError('the DPoP authorization scheme needs a DPoP proof');
  if (!devices || !gw.spiffe) return;
  const socket = ctx.req.socket as TLSSocket;
  if (!socket.encrypted) return;
  const peer = await gw.spiffe.peer(socket);
  if (!peer || !isDeviceId(peer.spiffeId)) return;
  ctx.device = await devices.forRequest(principal.id, {
    via: 'mtls',
    spiffeId: peer.spiffeId,
    serial: peer.serial,
  });
}
