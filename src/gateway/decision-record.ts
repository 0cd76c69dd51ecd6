import type { PortcullisError } from '../core/index.js';
import type { RequestContext } from './context.js';

const MAX_RAW_TARGET = 2048;

/** The audit record of one gateway decision (allow or deny), built once per request. */
export function decisionRecord(
  ctx: RequestContext,
  error: PortcullisError | undefined,
): Record<string, unknown> {
  return {
    requestId: ctx.requestId,
    outcome:
      ctx.decision?.outcome === 'challenge'
        ? 'challenge'
        : error
          ? 'deny'
          : (ctx.decision?.outcome ?? 'allow'),
    status: error?.status,
    code: error?.code,
    ruleIds: ctx.decision?.ruleIds ?? [],
    reason: ctx.decision?.reason ?? error?.detail ?? error?.code,
    route: ctx.route?.id ?? null,
    method: ctx.method,
    host: ctx.host,
    path: ctx.target ? ctx.target.path : (ctx.req.url ?? '').slice(0, MAX_RAW_TARGET),
    sub: ctx.principal?.id ?? null,
    sid: ctx.principal?.sessionId ?? null,
    device: ctx.device?.id ?? null,
    ip: ctx.ip,
    // The score and the signals that made it, when there were any.
    ...(ctx.risk && ctx.risk.score > 0 ? { risk: { score: ctx.risk.score, signals: ctx.risk.signals } } : {}),
  };
}
