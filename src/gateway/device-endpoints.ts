import { z } from 'zod';
import { PortcullisError } from '../core/index.js';
import { readJsonBody } from './body.js';
import type { Gateway, RequestContext } from './context.js';
import { NO_STORE, ownSession, requireRecentSignIn } from './own-session.js';
import { sendJson } from './respond.js';

const DEVICES = /^\/auth\/devices(?:\/([0-9a-f-]{36})(?:\/(posture|revoke))?)?$/;

const label = z.string().min(1).max(100);
const platform = z.string().min(1).max(64).optional();
const enrolBody = z.union([
  /** A device certificate for mTLS: the CA keeps only the CSR's key. */
  z.strictObject({ name: label, platform, csr: z.string().min(100).max(16_384) }),
  /** A key for DPoP proofs (browsers, apps). */
  z.strictObject({ name: label, platform, jwk: z.record(z.string(), z.unknown()) }),
]);
const postureBody = z.strictObject({ report: z.string().min(1).max(8192) });

/**
 * `/auth/devices…`, the caller's own devices: `GET` lists them, `POST` enrols one (a recent sign-in
 * needed), `GET /auth/devices/<id>` shows one, `POST …/<id>/posture` takes a signed posture report,
 * `POST …/<id>/revoke` ends it. Returns whether the path was one of them.
 */
export async function serveDeviceEndpoints(gw: Gateway, ctx: RequestContext, path: string): Promise<boolean> {
  const m = DEVICES.exec(path);
  if (!m) return false;
  ctx.internal = true;
  const devices = gw.devices;
  if (!devices) throw new PortcullisError('route_not_found');
  const [, id, action] = m;
  const method = ctx.req.method === 'HEAD' ? 'GET' : ctx.req.method;
  const allowed = id === undefined ? ['GET', 'POST'] : action === undefined ? ['GET'] : ['POST'];
  if (!allowed.includes(method ?? ''))
    throw new PortcullisError('method_not_allowed', {
      headers: { allow: allowed.map((a) => (a === 'GET' ? 'GET, HEAD' : a)).join(', ') },
    });
  const principal = await ownSession(gw, ctx);
  const limit = gw.config.gateway.maxAuthBodyBytes;
  if (id === undefined && method === 'GET') {
    const list = (await devices.list(principal.id)).map((d) => devices.view(d));
    sendJson(ctx, 200, JSON.stringify({ devices: list }), NO_STORE);
    return true;
  }
  if (id === undefined) {
    requireRecentSignIn(gw, principal, 'device enrolment');
    const body = await readJsonBody(ctx.req, Math.max(limit, 32_768), enrolBody);
    // A key is enrolled only by whoever holds it: a CSR is signed by it, a JWK comes with a DPoP proof
    // signed by it (the public key alone travels in every proof and must not be enough).
    const out = await devices.enrol(principal.id, body, {
      ip: ctx.ip,
      requestId: ctx.requestId,
      provenJkt: ctx.dpop?.jkt,
    });
    sendJson(ctx, 201, JSON.stringify(out), NO_STORE);
    return true;
  }
  const device = await devices.get(id);
  // Someone else's device is no device at all, as far as this caller can tell.
  if (!device || device.userId !== principal.id)
    throw new PortcullisError('route_not_found', { message: 'No such device.' });
  if (action === undefined) {
    sendJson(ctx, 200, JSON.stringify(devices.view(device)), NO_STORE);
    return true;
  }
  if (action === 'revoke') {
    const revoked = await devices.revoke(id, principal.id);
    sendJson(ctx, 200, JSON.stringify(devices.view(revoked)), NO_STORE);
    return true;
  }
  const body = await readJsonBody(ctx.req, limit, postureBody);
  const verdict = await devices.submitPosture(principal.id, id, body.report);
  sendJson(
    ctx,
    200,
    JSON.stringify({ ...verdict, expiresAt: new Date(verdict.expiresAt).toISOString() }),
    NO_STORE,
  );
  return true;
}
