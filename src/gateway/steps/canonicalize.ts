import { canonicalizeTarget } from '../canonical-target.js';
import type { RequestContext } from '../context.js';
import { canonicalHost } from '../route-table.js';

/** Step 1: one canonical host and target for everything after; ambiguous targets are a 400. */
export function canonicalize(ctx: RequestContext): void {
  ctx.host = canonicalHost(ctx.req.headers.host);
  ctx.target = canonicalizeTarget(ctx.req.url ?? '');
}
