import { OWN_ISSUER_ID } from '../../config/index.js';
import { PortcullisError } from '../../core/index.js';
import type { RiskAssessment } from '../../risk/index.js';
import type { Gateway, RequestContext } from '../context.js';

const MFA = new Set(['mfa', 'otp', 'hwk', 'swk', 'sc', 'pop', 'sms', 'tel', 'recovery']);

/**
 * Step 5: continuous verification. The risk engine scores the request from its signals; policy then
 * sees `context.risk`. A challenge is a 401 `step_up_required` until the user signs in with a second
 * factor after the risk rose (step-up); a deny ends the session at once. Both are security events, and
 * the decision record carries the score and the signals.
 */
export function assessRisk(gw: Gateway, ctx: RequestContext): void | Promise<void> {
  const risk = gw.risk;
  const principal = ctx.principal;
  if (!risk || !principal) return;
  const result = risk.assess(principal, ctx.ip, ctx.device);
  if (result instanceof Promise) return result.then((a) => apply(gw, ctx, a));
  return apply(gw, ctx, result);
}

async function apply(gw: Gateway, ctx: RequestContext, a: RiskAssessment): Promise<void> {
  ctx.risk = a;
  const principal = ctx.principal;
  if (!principal || !gw.risk) return;
  const sessionKey = principal.sessionId ?? `${principal.kind}:${principal.id}`;
  const names = a.signals.map((s) => s.name);
  const travel = a.signals.find((s) => s.name === 'impossible_travel');
  // A derived security event of its own (alert rules count it), once per rise of a session's risk.
  const reportTravel = async () => {
    if (travel)
      await gw.audit.write(
        {
          type: 'security.impossible_travel',
          data: {
            sub: principal.id,
            sid: principal.sessionId ?? null,
            ...travel.evidence,
            ip: ctx.ip,
            requestId: ctx.requestId,
          },
        },
        'durable',
      );
  };
  if (a.outcome === 'deny') {
    if (principal.sessionId !== undefined && principal.issuer === OWN_ISSUER_ID) {
      await gw.identity.revokeSession(principal.id, principal.sessionId);
      await reportTravel();
      await gw.audit.write(
        {
          type: 'risk.session_revoked',
          data: {
            sub: principal.id,
            sid: principal.sessionId,
            score: a.score,
            signals: names,
            ip: ctx.ip,
            requestId: ctx.requestId,
          },
        },
        'durable',
      );
    }
    throw new PortcullisError('forbidden', { detail: `risk ${a.score}: ${names.join(', ')}` });
  }
  if (a.outcome === 'challenge') {
    const raised = gw.risk.raisedAt(sessionKey);
    if (raised.first) await reportTravel();
    if (raised.first)
      await gw.audit.write(
        {
          type: 'risk.raised',
          data: {
            sub: principal.id,
            sid: principal.sessionId ?? null,
            score: a.score,
            signals: names,
            ip: ctx.ip,
            requestId: ctx.requestId,
          },
        },
        'durable',
      );
    // Satisfied by a second factor used at or after the moment the risk rose (a step-up).
    const stepped =
      principal.amr.some((m) => MFA.has(m)) &&
      (principal.authTime ?? 0) >= Math.floor(raised.at / 1000) * 1000;
    if (!stepped) {
      throw new PortcullisError('step_up_required', {
        detail: `risk ${a.score}: ${names.join(', ')}`,
        headers: {
          'www-authenticate':
            'Bearer error="insufficient_user_authentication", error_description="Unusual activity: sign in again with a second factor", acr_values="mfa", max_age=0',
        },
      });
    }
  }
  // Back to calm: the next rise needs a new step-up.
  if (a.outcome === 'allow') gw.risk.clearRaised(sessionKey);
  gw.risk.observe(principal, a, ctx.device?.id);
}
