import { createHmac, createSecretKey, type KeyObject, sign } from 'node:crypto';
import type { UpstreamConfig } from '../config/index.js';
import { PortcullisError, sha256b64url } from '../core/index.js';
import type { SigningKey } from '../identity/index.js';
import { ASSERTION_TYP } from '../sdk/verify-assertion.js';
import type { Gateway, RequestContext } from './context.js';

export { ASSERTION_TYP };
export const ASSERTION_HEADER = 'x-portcullis-assertion';

export interface AssertionClaims {
  subject: string;
  sessionId: string | undefined;
  roles: readonly string[];
  amr: readonly string[];
  /** Authentication context class, the device the request proved, and its risk score, when known. */
  acr?: string | undefined;
  device?: string | undefined;
  risk?: number | undefined;
  method: string;
  host: string;
  /** The request target exactly as forwarded (canonical path + query). */
  target: string;
  routeId: string;
  /** Request id: also the decision id in the audit log. */
  requestId: string;
  ruleIds: readonly string[];
}

/** Signs the identity assertion for one upstream. Built at load; `sign` is synchronous. */
export interface AssertionSigner {
  readonly alg: 'ES256' | 'HS256';
  sign(claims: AssertionClaims, nowSec: number): string;
}

const b64 = (s: string) => Buffer.from(s).toString('base64url');

/**
 * The identity assertion forwarded to an upstream: a short-lived JWT (typ `portcullis-assertion+jwt`)
 * bound to this request — audience = the upstream, `htm` = method, `host`, and `tgt` = SHA-256 of the
 * forwarded target — so it cannot be replayed on another route or upstream.
 *
 * Signing is on the hot path, so the header and the constant part of the payload are encoded once at
 * load, and the signature is made with `node:crypto` (ES256 in IEEE P1363 form, as JWS requires, with a
 * cached key object; or HMAC-SHA256 with the upstream's own key). Verification stays with `jose`
 * (see `verifyAssertion`); the tests verify every kind of assertion with it.
 */
export function createAssertionSigner(
  upstreamName: string,
  upstream: UpstreamConfig,
  issuer: string,
  ttlSec: number,
  es256Key: SigningKey,
): AssertionSigner {
  const audience = upstream.audience ?? upstreamName;
  const prefix = `{"iss":${JSON.stringify(issuer)},"aud":${JSON.stringify(audience)},`;
  // Written member by member (the same members, in the same order, as JSON.stringify of the claims
  // object would write; absent ones omitted): no claims object and no generic serializer per request.
  const str = JSON.stringify;
  const payload = (c: AssertionClaims, now: number): string => {
    let p = `${prefix}"sub":${str(c.subject)},"iat":${now},"exp":${now + ttlSec},"jti":${str(c.requestId)}`;
    if (c.sessionId !== undefined) p += `,"sid":${str(c.sessionId)}`;
    p += `,"roles":${str(c.roles)},"amr":${str(c.amr)}`;
    if (c.acr !== undefined) p += `,"acr":${str(c.acr)}`;
    if (c.device !== undefined) p += `,"device":${str(c.device)}`;
    if (c.risk !== undefined) p += `,"risk":${str(c.risk)}`;
    return `${p},"htm":${str(c.method)},"host":${str(c.host)},"tgt":"${sha256b64url(c.target)}","route":${str(c.routeId)},"rules":${str(c.ruleIds)}}`;
  };

  if (upstream.assertion.alg === 'HS256') {
    const secret: KeyObject = createSecretKey(Buffer.from(upstream.assertion.key, 'utf8'));
    const header = b64(JSON.stringify({ alg: 'HS256', typ: ASSERTION_TYP }));
    return {
      alg: 'HS256',
      sign: (c, now) => {
        const input = `${header}.${b64(payload(c, now))}`;
        return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
      },
    };
  }
  const header = b64(JSON.stringify({ alg: 'ES256', kid: es256Key.kid, typ: ASSERTION_TYP }));
  const key = { key: es256Key.privateKey, dsaEncoding: 'ieee-p1363' as const };
  return {
    alg: 'ES256',
    sign: (c, now) => {
      const input = `${header}.${b64(payload(c, now))}`;
      return `${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`;
    },
  };
}

/**
 * The assertion for the request in `ctx`, signed for its route's upstream: requires an allow decision.
 * Shared by the proxy (forward step) and the forward-auth answer.
 */
export function signedAssertion(gw: Gateway, ctx: RequestContext): string {
  const { principal, route, target, decision } = ctx;
  if (!principal || !route || !target || decision?.outcome !== 'allow') {
    throw new PortcullisError('internal_error', { detail: 'assertion without an allow decision' });
  }
  return route.upstream.assertion.sign(
    {
      subject: principal.id,
      sessionId: principal.sessionId,
      roles: principal.roles,
      amr: principal.amr,
      acr: principal.acr,
      device: ctx.device?.id,
      risk: ctx.risk?.score,
      method: ctx.method,
      host: ctx.host,
      target: target.path + target.query,
      routeId: route.id,
      requestId: ctx.requestId,
      ruleIds: decision.ruleIds,
    },
    Math.floor(gw.clock.now() / 1000),
  );
}
