import { SignJWT } from 'jose';
import { sha256b64url } from '../core/index.js';
import type { SigningKey } from '../identity/index.js';

export const ASSERTION_HEADER = 'x-portcullis-assertion';

import { ASSERTION_TYP } from '../sdk/index.js';

export { ASSERTION_TYP };

export interface AssertionClaims {
  audience: string;
  subject: string;
  sessionId: string;
  roles: readonly string[];
  amr: readonly string[];
  method: string;
  host: string;
  /** The request target exactly as forwarded (canonical path + query). */
  target: string;
  routeId: string;
  /** Request id: also the decision id in the audit log. */
  requestId: string;
  ruleIds: readonly string[];
}

/**
 * Signs the identity assertion forwarded to an upstream: a short-lived ES256 JWT (typ
 * `portcullis-assertion+jwt`) bound to this request — audience = the upstream, `htm` = method, `host`,
 * and `tgt` = SHA-256 of the forwarded target — so it cannot be replayed on another route or upstream.
 */
export function signAssertion(
  key: SigningKey,
  issuer: string,
  ttlSec: number,
  nowSec: number,
  c: AssertionClaims,
): Promise<string> {
  return new SignJWT({
    sid: c.sessionId,
    roles: [...c.roles],
    amr: [...c.amr],
    htm: c.method,
    host: c.host,
    tgt: sha256b64url(c.target),
    route: c.routeId,
    rules: [...c.ruleIds],
  })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: ASSERTION_TYP })
    .setIssuer(issuer)
    .setAudience(c.audience)
    .setSubject(c.subject)
    .setIssuedAt(nowSec)
    .setExpirationTime(nowSec + ttlSec)
    .setJti(c.requestId)
    .sign(key.privateKey);
}
