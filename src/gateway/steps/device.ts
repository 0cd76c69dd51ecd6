import type { TLSSocket } from 'node:tls';
import { isDeviceId } from '../../workload/index.js';
import type { Gateway, RequestContext } from '../context.js';
import { checkTokenProof } from '../dpop.js';

/**
 * Step 4b: which device is the user on? Proven, never claimed: a DPoP proof (RFC 9449) signed by an
 * enrolled device key for this very request and access token, or a device certificate from the internal
 * CA presented over mTLS. A copied header or fingerprint is never enough. A token bound to a key
 * (`cnf.jkt`) needs a proof by that key on every request. The device must be the user's own and not
 * revoked; policy then reads `device.*` and the risk engine its signals. Requests without a proof have
 * no device (and pay nothing here).
 */
export async function identifyDevice(gw: Gateway, ctx: RequestContext): Promise<void> {
  const principal = ctx.principal;
  if (principal?.kind !== 'user') return;
  const v = await checkTokenProof(gw, ctx, principal);
  const devices = gw.devices;
  if (!devices) return;
  if (v) {
    ctx.device = await devices.forRequest(principal.id, { via: 'dpop', jkt: v.jkt });
    return;
  }
  if (!gw.spiffe) return;
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
