import { z } from 'zod';
import { PortcullisError, type Principal } from '../core/index.js';
import type { SessionRecord, UserRecord } from '../store/index.js';
import { readJsonBody } from './body.js';
import type { Gateway, RequestContext } from './context.js';
import { checkTokenProof } from './dpop.js';
import { sendJson } from './respond.js';
import { bearerToken } from './steps/authenticate.js';

/** `/_portcullis/admin/…`: the account administration API (the same operations as `portcullis user …`). */
export const ADMIN_PREFIX = '/_portcullis/admin/';
const USER_PATH =
  /^\/_portcullis\/admin\/users(?:\/([A-Za-z0-9-]{1,64})(?:\/(suspend|activate|unlock|reset-mfa|sessions|sessions\/revoke))?)?$/;
const DEVICE_PATH = /^\/_portcullis\/admin\/devices(?:\/([0-9a-f-]{36})(?:\/(approve|revoke))?)?$/;
const revokeBody = z.union([
  z.strictObject({ session_id: z.string().min(1).max(64) }),
  z.strictObject({ all: z.literal(true) }),
]);

const view = (u: UserRecord, now: number) => ({
  id: u.id,
  username: u.username,
  email: u.email,
  displayName: u.displayName,
  status: u.status,
  lockedUntil: u.lockedUntil !== null && u.lockedUntil > now ? new Date(u.lockedUntil).toISOString() : null,
  roles: u.roles,
  groups: u.groups,
  attributes: u.attributes,
  mfa: u.totpSecret ? ['otp'] : [],
  createdAt: new Date(u.createdAt).toISOString(),
});

/** A session as the APIs show it (own sessions, and the admin API): never its refresh tokens. */
export function sessionView(s: SessionRecord & { active: boolean }): Record<string, unknown> {
  return {
    id: s.id,
    active: s.active,
    createdAt: new Date(s.createdAt).toISOString(),
    lastSeenAt: new Date(s.lastSeenAt).toISOString(),
    ip: s.ip,
    userAgent: s.userAgent,
    amr: s.amr,
    acr: s.acr,
  };
}

/**
 * The caller must hold one of `identity.adminRoles` on one of our own user tokens (session checked) —
 * and, with `identity.adminRequireMfa`, have signed in with a second factor.
 */
async function requireAdmin(gw: Gateway, ctx: RequestContext): Promise<Principal> {
  const principal = await gw.tokens.verifyAccessToken(bearerToken(ctx.req.headers.authorization));
  await gw.identity.checkSession(principal);
  await checkTokenProof(gw, ctx, principal);
  const roles = gw.config.identity.adminRoles;
  if (principal.kind !== 'user' || !principal.roles.some((r) => roles.includes(r)))
    throw new PortcullisError('forbidden', {
      detail: `admin API needs one of the roles ${roles.join(', ')}`,
    });
  if (gw.config.identity.adminRequireMfa && principal.acr !== 'aal2')
    throw new PortcullisError('step_up_required', {
      detail: 'admin API needs a multi-factor sign-in',
      headers: { 'www-authenticate': 'Bearer error="insufficient_user_authentication", acr_values="aal2"' },
    });
  return principal;
}

/** Serves the admin API when `path` is under its prefix; returns whether it did. */
export async function serveAdminApi(gw: Gateway, ctx: RequestContext, path: string): Promise<boolean> {
  if (!path.startsWith(ADMIN_PREFIX)) return false;
  ctx.internal = true;
  const actor = await requireAdmin(gw, ctx);
  const now = gw.clock.now();
  const method = ctx.req.method === 'HEAD' ? 'GET' : ctx.req.method;
  const audit = (action: string, target: string) =>
    gw.audit.write(
      {
        type: 'admin.action',
        data: { actor: actor.id, action, target, ip: ctx.ip, requestId: ctx.requestId },
      },
      'durable',
    );

  if (path === `${ADMIN_PREFIX}service-accounts` && method === 'GET') {
    const list = (await gw.clients.list()).map((a) => ({
      name: a.name,
      status: a.status,
      authentication: a.jwks ? 'private_key_jwt' : 'client_secret',
      scopes: a.scopes,
      roles: a.roles,
      audiences: a.audiences,
      spiffeId: a.spiffeId,
    }));
    sendJson(ctx, 200, JSON.stringify({ serviceAccounts: list }));
    return true;
  }
  const dm = DEVICE_PATH.exec(path);
  if (dm && gw.devices) {
    const devices = gw.devices;
    const [, deviceId, deviceAction] = dm;
    const want = deviceAction === undefined ? 'GET' : 'POST';
    if (method !== want)
      throw new PortcullisError('method_not_allowed', {
        headers: { allow: want === 'GET' ? 'GET, HEAD' : 'POST' },
      });
    if (deviceId === undefined) {
      const userParam = new URLSearchParams(ctx.target?.query ?? '').get('user');
      const owner = userParam === null ? undefined : await gw.identity.findUser(userParam);
      if (userParam !== null && !owner)
        throw new PortcullisError('route_not_found', { message: 'No such user.' });
      const list = (await devices.list(owner?.id)).map((d) => devices.view(d));
      sendJson(ctx, 200, JSON.stringify({ devices: list }));
      return true;
    }
    const device = await devices.get(deviceId);
    if (!device) throw new PortcullisError('route_not_found', { message: 'No such device.' });
    if (deviceAction === undefined) {
      sendJson(ctx, 200, JSON.stringify(devices.view(device)));
      return true;
    }
    const updated =
      deviceAction === 'approve'
        ? await devices.approve(deviceId, actor.id)
        : await devices.revoke(deviceId, actor.id);
    await audit(`device.${deviceAction}`, deviceId);
    sendJson(ctx, 200, JSON.stringify(devices.view(updated)));
    return true;
  }
  const m = USER_PATH.exec(path);
  if (!m) throw new PortcullisError('route_not_found');
  const [, id, action] = m;
  if (id === undefined) {
    if (method !== 'GET')
      throw new PortcullisError('method_not_allowed', { headers: { allow: 'GET, HEAD' } });
    const users = await gw.identity.listUsers();
    sendJson(ctx, 200, JSON.stringify({ users: users.map((u) => view(u, now)) }));
    return true;
  }
  const user = await gw.identity.findUser(id);
  if (!user) throw new PortcullisError('route_not_found', { message: 'No such user.' });
  const expect = (m2: 'GET' | 'POST') => {
    if (method !== m2)
      throw new PortcullisError('method_not_allowed', {
        headers: { allow: m2 === 'GET' ? 'GET, HEAD' : 'POST' },
      });
  };
  switch (action) {
    case undefined:
      expect('GET');
      sendJson(ctx, 200, JSON.stringify(view(user, now)));
      return true;
    case 'sessions': {
      expect('GET');
      const sessions = (await gw.identity.sessions(user.id)).map((s) => sessionView(s));
      sendJson(ctx, 200, JSON.stringify({ sessions }));
      return true;
    }
    case 'sessions/revoke': {
      expect('POST');
      const body = await readJsonBody(ctx.req, gw.config.gateway.maxAuthBodyBytes, revokeBody);
      const revoked =
        'all' in body
          ? await gw.identity.revokeAllSessions(user.id)
          : (await gw.identity.revokeSession(user.id, body.session_id as never))
            ? 1
            : 0;
      await audit('sessions.revoke', user.id);
      sendJson(ctx, 200, JSON.stringify({ revoked }));
      return true;
    }
    default: {
      expect('POST');
      if (action === 'suspend') await gw.identity.suspend(user.id);
      else if (action === 'activate') await gw.identity.activate(user.id);
      else if (action === 'unlock') await gw.identity.unlock(user.id);
      else await gw.identity.resetMfa(user.id);
      await audit(action as string, user.id);
      sendJson(ctx, 200, JSON.stringify(view((await gw.identity.findUser(user.id)) as UserRecord, now)));
      return true;
    }
  }
}
