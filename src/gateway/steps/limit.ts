import { PortcullisError } from '../../core/index.js';
import type { RateDecision } from '../../ratelimit/index.js';
import type { Gateway, RequestContext } from '../context.js';

/**
 * Step 6: the route's per-principal quota (GCRA). Over quota → 429 `rate_limited` with `Retry-After`;
 * either way the response carries `RateLimit-Policy` and `RateLimit` (IETF httpapi ratelimit headers).
 */
export function limit(gw: Gateway, ctx: RequestContext): void | Promise<void> {
  const quota = ctx.route?.rateLimit;
  const principal = ctx.principal;
  if (!quota || !ctx.route) return;
  // Public routes have no principal: their quota is per client address.
  const key = principal
    ? `${ctx.route.id}\u0000${principal.issuer}\u0000${principal.id}`
    : `${ctx.route.id}\u0000ip\u0000${ctx.ip}`;
  const result = gw.rateLimits.take(key, quota, gw.clock.now());
  if (result instanceof Promise) return result.then((d) => apply(ctx, quota.policyHeader, d));
  apply(ctx, quota.policyHeader, result);
}

function apply(ctx: RequestContext, policyHeader: string, d: RateDecision): void {
  const name = ctx.route?.id ?? '';
  const headers: Record<string, string> = {
    'ratelimit-policy': policyHeader,
    ratelimit: `"${name}";r=${d.remaining};t=${Math.ceil((d.allowed ? d.resetMs : d.retryAfterMs) / 1000)}`,
  };
  if (d.allowed) {
    ctx.rateLimitHeaders = headers;
    return;
  }
  headers['retry-after'] = String(Math.max(1, Math.ceil(d.retryAfterMs / 1000)));
  throw new PortcullisError('rate_limited', { detail: `quota of route ${name} exhausted`, headers });
}
