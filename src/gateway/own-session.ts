import { PortcullisError } from '../core/index.js';
import type { Gateway, RequestContext } from './context.js';
import { checkTokenProof } from './dpop.js';
import { bearerToken } from './steps/authenticate.js';

export const ENROL_MAX_AGE_MS = 15 * 60_000;

/**
 * Enrolling a second factor or a device needs a sign-in from the last 15 minutes: a stolen access token
 * alone must not be enough to put the thief's authenticator or device on the account.
 */
export function requireRecentSignIn(gw: Gateway, p: { authTime?: number }, what = 'MFA enrolment'): void {
  if (p.authTime === undefined || gw.clock.now() - p.authTime > ENROL_MAX_AGE_MS)
    throw new PortcullisError('step_up_required', {
      detail: `${what} needs a recent sign-in`,
      headers: { 'www-authenticate': 'Bearer error="insufficient_user_authentication", max_age=900' },
    });
}

/** The caller's own session (our tokens only), checked like at the gateway. */
export async function ownSession(gw: Gateway, ctx: RequestContext) {
  const principal = await gw.tokens.verifyAccessToken(bearerToken(ctx.req.headers.authorization));
  // A person's session only: a service account has no sessions or MFA to manage.
  if (principal.kind !== 'user')
    throw new PortcullisError('forbidden', { detail: 'a user token is required' });
  await gw.identity.checkSession(principal);
  await checkTokenProof(gw, ctx, principal);
  return principal;
}

export const NO_STORE = { pragma: 'no-cache' } as const;
