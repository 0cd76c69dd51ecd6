import type { TLSSocket } from 'node:tls';
import type { Principal } from '../../core/index.js';
import type { DeviceState } from '../../devices/index.js';
import { isDeviceId } from '../../workload/peer.js';
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
export function identifyDevice(gw: Gateway, ctx: RequestContext): Promise<void> | undefined {
  const principal = ctx.principal;
  if (principal?.kind !== 'user') return undefined;
  // Nothing to prove or check (no proof, a token bound to no key, no `DPoP` scheme, no client
  // certificate): no device, decided without a promise — the common case of a plain bearer token.
  if (
    ctx.req.headers.dpop === undefined &&
    principal.confirmationJkt === undefined &&
    ctx.req.headers.authorization?.slice(0, 5).toLowerCase() !== 'dpop ' &&
    !(gw.spiffe && (ctx.req.socket as TLSSocket).encrypted)
  )
    return undefined;
  return deviceOf(gw, ctx, principal).then((device) => {
    ctx.device = device;
  });
}

/** The proven device of a user's request (also for `/v1/authorize`); checks the token's proof first. */
export async function deviceOf(
  gw: Gateway,
  ctx: RequestContext,
  principal: Principal,
): Promise<DeviceState | undefined> {
  const v = await checkTokenProof(gw, ctx, principal);
  const devices = gw.devices;
  if (!devices || principal.kind !== 'user') return undefined;
  if (v) return devices.forRequest(principal.id, { via: 'dpop', jkt: v.jkt });
  if (!gw.spiffe) return undefined;
  const socket = ctx.req.socket as TLSSocket;
  if (!socket.encrypted) return undefined;
  let peer: Awaited<ReturnType<NonNullable<Gateway['spiffe']>['peer']>>;
  try {
    peer = await gw.spiffe.peer(socket);
  } catch {
    // A client certificate that is not an SVID of ours (a browser's smartcard, an enterprise proxy's):
    // no device, and the bearer token decides as if there were no certificate.
    return undefined;
  }
  if (!peer || !isDeviceId(peer.spiffeId)) return undefined;
  return devices.forRequest(principal.id, {
    via: 'mtls',
    spiffeId: peer.spiffeId,
    serial: peer.serial,
    jkt: peer.jkt,
  });
}
