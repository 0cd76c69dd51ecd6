import { PortcullisError, type Principal } from '../core/index.js';
import { dpopError, type VerifiedDpop } from '../devices/index.js';
import type { Gateway, RequestContext } from './context.js';

/** host, host:port, [v6]:port — nothing else. */
const AUTHORITY =
  /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.?|\[[0-9a-f:.]+\])(?::\d{1,5})?$/;

/** The token after `Bearer ` / `DPoP ` in the Authorization header ('' when there is none). */
function accessTokenOf(ctx: RequestContext): string {
  const h = ctx.req.headers.authorization ?? '';
  return h.slice(h.indexOf(' ') + 1).trim();
}

/**
 * The request's DPoP proof (RFC 9449), verified for this method and URL (scheme, Host as sent, canonical
 * path) and — with `accessToken` — for that token; undefined when the request carries none.
 */
export async function verifyDpopHeader(
  gw: Gateway,
  ctx: RequestContext,
  accessToken: string | undefined,
  options: { subject?: string; defer?: boolean } = {},
): Promise<(VerifiedDpop & { commit: () => void }) | undefined> {
  const proof = ctx.req.headers.dpop;
  if (proof === undefined) return undefined;
  // Node joins repeated headers with ", ", which no compact JWS contains: two proofs fail as malformed.
  if (typeof proof !== 'string') throw dpopError('one DPoP proof per request');
  if (!gw.devices) throw dpopError('DPoP proofs are not accepted here');
  const target = ctx.target;
  if (!target) throw new PortcullisError('internal_error', { detail: 'DPoP check before canonicalize' });
  // The URL the proof must name is built from the request's authority: only a plain host[:port] will
  // do (a `/`, `?` or `#` smuggled into Host would otherwise move the path being compared).
  if (!AUTHORITY.test(ctx.authority))
    throw dpopError(`the request authority is not a plain host: ${ctx.authority}`);
  return gw.devices.dpop.verify(
    proof,
    {
      method: ctx.method,
      url: `${ctx.scheme}://${ctx.authority}${target.path}`,
      accessToken,
    },
    options,
  );
}

/**
 * The proof that goes with an access token: verified when sent; required, and by the bound key, when
 * the token is bound (`cnf.jkt`) — at the gateway and at our own endpoints alike, so a stolen bound
 * token is useless without the device's key. The `DPoP` scheme always needs a proof.
 */
export async function checkTokenProof(
  gw: Gateway,
  ctx: RequestContext,
  principal: Principal,
): Promise<VerifiedDpop | undefined> {
  const v = await verifyDpopHeader(gw, ctx, accessTokenOf(ctx), {
    subject: `${principal.issuer}:${principal.id}`,
  });
  const bound = principal.confirmationJkt;
  if (bound !== undefined) {
    if (!v) throw dpopError('the access token is bound to a key (cnf.jkt): send a DPoP proof with it');
    if (v.jkt !== bound)
      throw dpopError('the DPoP proof is signed by another key than the token is bound to');
  }
  if (!v && ctx.req.headers.authorization?.slice(0, 5).toLowerCase() === 'dpop ')
    throw dpopError('the DPoP authorization scheme needs a DPoP proof');
  ctx.dpop = v;
  return v;
}

/**
 * Where a sign-in or refresh came from, and — when it carries a DPoP proof (for this endpoint, without
 * `ath`) — the key the session is (or must be) bound to. The proof's jti is spent by `commit()`, once the
 * sign-in succeeded: anyone may call these endpoints, and failed attempts must not fill the jti cache.
 */
export async function signInMeta(
  gw: Gateway,
  ctx: RequestContext,
): Promise<{
  meta: { ip: string; requestId: string; userAgent: string | undefined; dpopJkt?: string };
  commit: () => void;
}> {
  const v = await verifyDpopHeader(gw, ctx, undefined, { defer: true });
  return {
    meta: {
      ip: ctx.ip,
      requestId: ctx.requestId,
      userAgent: ctx.req.headers['user-agent'],
      ...(v ? { dpopJkt: v.jkt } : {}),
    },
    commit: v ? v.commit : () => undefined,
  };
}
