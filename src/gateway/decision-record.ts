import type { PortcullisError } from '../core/index.js';
import type { Signal } from '../risk/index.js';
import type { RequestContext } from './context.js';

const MAX_RAW_TARGET = 2048;

/** A risk signal with its members in code-unit order (the engine lists them name, weight, evidence). */
const inMemberOrder = (s: Signal) => ({ evidence: s.evidence, name: s.name, weight: s.weight });

/** The audit record of one gateway decision (allow or deny), built once per request. */
export function decisionRecord(
  ctx: RequestContext,
  error: PortcullisError | undefined,
): Record<string, unknown> {
  // Members in code-unit order, as the audit log's canonical JSON sorts them: the serializer then
  // finds them in order and skips its sort (this record is written for every request).
  return {
    code: error?.code,
    device: ctx.device?.id ?? null,
    host: ctx.host,
    ip: ctx.ip,
    method: ctx.method,
    outcome:
      ctx.decision?.outcome === 'challenge'
        ? 'challenge'
        : error
          ? 'deny'
          : (ctx.decision?.outcome ?? 'allow'),
    path: ctx.target ? ctx.target.path : (ctx.req.url ?? '').slice(0, MAX_RAW_TARGET),
    reason: ctx.decision?.reason ?? error?.detail ?? error?.code,
    requestId: ctx.requestId,
    // The score and the signals that made it, when there were any.
    risk:
      ctx.risk && ctx.risk.score > 0
        ? { score: ctx.risk.score, signals: ctx.risk.signals.map(inMemberOrder) }
        : undefined,
    route: ctx.route?.id ?? null,
    ruleIds: ctx.decision?.ruleIds ?? [],
    sid: ctx.principal?.sessionId ?? null,
    status: error?.status,
    sub: ctx.principal?.id ?? null,
  };
}
