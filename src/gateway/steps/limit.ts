import { PortcullisError, type Principal } from '../../core/index.js';
import type { RateDecision } from '../../ratelimit/index.js';
import type { Gateway, RequestContext } from '../context.js';
import type { CompiledQuota, CompiledRateLimit } from '../route-table.js';

/**
 * Step 6: the route's per-principal quota (GCRA). Over quota → 429 `rate_limited` with `Retry-After`;
 * either way the response carries `RateLimit-Policy` and `RateLimit` (IETF httpapi ratelimit headers).
 * A tiered route takes the quota of the tier the principal's attribute names (else the default tier).
 */
export function limit(gw: Gateway, ctx: RequestContext): void | Promise<void> {
  const rl = ctx.route?.rateLimit;
  const principal = ctx.principal;
  if (!rl || !ctx.route) return;
  const quota = rl.tiers === undefined ? rl : tierOf(rl.tiers, rl, principal);
  // Public routes have no principal: their quota is per client address.
  const key = principal
    ? `${quota.keyPrefix}${principal.issuer}\u0000${principal.id}`
    : `${quota.keyPrefix}ip\u0000${ctx.ip}`;
  const result = gw.rateLimits.take(key, quota, gw.clock.now());
  if (result instanceof Promise) return result.then((d) => apply(ctx, quota, d));
  apply(ctx, quota, result);
}

/**
 * The tier named by the principal's attribute (our tokens' `attrs`, e.g. `plan: gold`); anonymous callers,
 * principals without it (API keys, external issuers), non-string values and names of no tier get the default.
 */
function tierOf(
  tiers: NonNullable<CompiledRateLimit['tiers']>,
  fallback: CompiledQuota,
  principal: Principal | undefined,
): CompiledQuota {
  const value = principal?.attributes?.[tiers.attribute];
  return (typeof value === 'string' && tiers.byName.get(value)) || fallback;
}

function apply(ctx: RequestContext, quota: CompiledQuota, d: RateDecision): void {
  const headers: Record<string, string> = {
    'ratelimit-policy': quota.policyHeader,
    ratelimit: `${quota.policyName};r=${d.remaining};t=${Math.ceil((d.allowed ? d.resetMs : d.retryAfterMs) / 1000)}`,
  };
  if (d.allowed) {
    ctx.rateLimitHeaders = headers;
    return;
  }
  headers['retry-after'] = String(Math.max(1, Math.ceil(d.retryAfterMs / 1000)));
  const route = ctx.route?.id ?? '';
  const detail =
    quota.tier === undefined
      ? `quota of route ${route} exhausted`
      : `quota of route ${route} exhausted (tier ${quota.tier})`;
  throw new PortcullisError('rate_limited', { detail, headers });
}
