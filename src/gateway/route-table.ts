import type { RouteConfig } from '../config/index.js';
import type { Quota } from '../ratelimit/index.js';
import { compileSecurityHeaders } from './headers.js';

type Segment = { kind: 'literal'; value: string } | { kind: 'param'; name: string };

export interface CompiledRoute<U> {
  readonly id: string;
  readonly host: string | undefined;
  readonly segments: readonly Segment[];
  /** Pattern ends in `*`: matches any remaining segments. */
  readonly rest: boolean;
  readonly methods: ReadonlySet<string>;
  /** The `Allow` header value for 405 answers. */
  readonly allow: string;
  /** Issuers whose bearer tokens the route accepts. */
  readonly issuers: ReadonlySet<string>;
  readonly maxBodyBytes: number;
  /** WebSocket upgrades are tunnelled (after the usual checks); the session is re-checked this often. */
  readonly websocket: { readonly recheckMs: number } | undefined;
  /** No authentication, no policy: an explicitly public route. */
  readonly public: boolean;
  /** Named action per method, for policy (`GET` → `orders:read`). */
  readonly actions: Readonly<Partial<Record<string, string>>> | undefined;
  readonly resourceType: string | undefined;
  /** The security headers of this route's responses (computed at load). */
  readonly securityHeaders: ReadonlyArray<readonly [string, string]>;
  /** CORS, compiled: allowed origins (or any), methods, the preflight answer's fixed headers. */
  readonly cors:
    | {
        readonly anyOrigin: boolean;
        readonly origins: ReadonlySet<string>;
        readonly methods: ReadonlySet<string>;
        readonly credentials: boolean;
        readonly preflight: Readonly<Record<string, string>>;
        readonly expose: string | undefined;
      }
    | undefined;
  /** Webhook routes: the signers whose RFC 9421 signatures it accepts, and the signatures' max age. */
  readonly signature: { readonly signers: ReadonlySet<string>; readonly maxAgeMs: number } | undefined;
  /** The request body's JSON Schema, compiled at load: the failing paths, or undefined when valid. */
  readonly validateBody: ((body: unknown) => string[] | undefined) | undefined;
  /** Per-principal quota (the default tier's, when tiered), with its tiers and headers compiled at load. */
  readonly rateLimit: CompiledRateLimit | undefined;
  readonly upstream: U;
}

/** One quota of a route, ready for the hot path: headers and bucket key prefix computed at load. */
export interface CompiledQuota extends Quota {
  /** The tier it belongs to; undefined on an untiered route. */
  readonly tier: string | undefined;
  /** The policy's name as an HTTP structured-field string: `"orders"`, or `"orders:gold"` for a tier. */
  readonly policyName: string;
  /** `RateLimit-Policy` value: `"orders:gold";q=600;w=60`. */
  readonly policyHeader: string;
  /**
   * Start of the store key (route, and tier when tiered); the caller appends the principal. A principal
   * moved to another tier therefore draws on a fresh bucket with the new quota at once.
   */
  readonly keyPrefix: string;
}

/** A route's rate limit: its quota, or (tiered) the default tier's quota plus the tiers to choose from. */
export interface CompiledRateLimit extends CompiledQuota {
  readonly tiers:
    | {
        /** The principal attribute whose (string) value names the tier. */
        readonly attribute: string;
        readonly byName: ReadonlyMap<string, CompiledQuota>;
      }
    | undefined;
}

function compileQuota(routeId: string, tier: string | undefined, q: Quota): CompiledQuota {
  const policyName = tier === undefined ? `"${routeId}"` : `"${routeId}:${tier}"`;
  return {
    limit: q.limit,
    windowMs: q.windowMs,
    burst: q.burst,
    tier,
    policyName,
    policyHeader: `${policyName};q=${q.limit};w=${Math.max(1, Math.round(q.windowMs / 1000))}`,
    keyPrefix: tier === undefined ? `${routeId}\u0000` : `${routeId}\u0000tier:${tier}\u0000`,
  };
}

function compileRateLimit(
  r: RouteConfig,
  tiers: Readonly<Record<string, Quota>>,
): CompiledRateLimit | undefined {
  const rl = r.rateLimit;
  if (!rl) return undefined;
  if (!('tiers' in rl)) return { ...compileQuota(r.id, undefined, rl), tiers: undefined };
  const byName = new Map<string, CompiledQuota>();
  for (const [name, q] of Object.entries(tiers)) byName.set(name, compileQuota(r.id, name, q));
  const fallback = byName.get(rl.tiers.default);
  // The config schema already refuses this; the table must never run a tiered route without a default.
  if (!fallback) throw new Error(`route ${r.id}: unknown rate-limit tier ${rl.tiers.default}`);
  return { ...fallback, tiers: { attribute: rl.tiers.attribute, byName } };
}

export type RouteMatch<U> =
  | { kind: 'match'; route: CompiledRoute<U>; params: Record<string, string> }
  | { kind: 'method_not_allowed'; allow: string }
  | { kind: 'none' };

const NONE = Object.freeze({ kind: 'none' }) as RouteMatch<never>;
const EMPTY: Record<string, string> = Object.freeze({}) as Record<string, string>;

function compilePattern(pattern: string): { segments: Segment[]; rest: boolean } {
  let p = pattern;
  let rest = false;
  if (p.endsWith('*')) {
    rest = true;
    p = p.slice(0, -1);
  }
  const segments = p
    .split('/')
    .filter((s) => s !== '')
    .map(
      (s): Segment =>
        s.startsWith(':') ? { kind: 'param', name: s.slice(1) } : { kind: 'literal', value: s },
    );
  return { segments, rest };
}

/** Lower case, no port, no trailing dot: the form hosts are compared in. */
export function canonicalHost(host: string | undefined): string {
  if (!host) return '';
  let h = host.toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end === -1 ? h : h.slice(0, end + 1);
  }
  const colon = h.indexOf(':');
  if (colon !== -1) h = h.slice(0, colon);
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

/**
 * The route table, compiled at load: routes are indexed by their first path segment so a lookup only
 * tries the routes that can match. Routes are tried in config order; the first whose host, path and
 * method match wins. A path that matches but with another method answers 405 with `Allow`.
 *
 * @example
 * const table = new RouteTable(config.routes, (r) => upstreams.get(r.upstream));
 * table.match('example.com', 'GET', '/api/orders/42'); // { kind: 'match', route, params: { id: '42' } }
 */
export class RouteTable<U> {
  readonly #byFirst = new Map<string, CompiledRoute<U>[]>();
  readonly #dynamicFirst: CompiledRoute<U>[] = [];

  constructor(
    routes: readonly RouteConfig[],
    upstreamOf: (route: RouteConfig) => U,
    validatorOf: (route: RouteConfig) => ((body: unknown) => string[] | undefined) | undefined = () =>
      undefined,
    /** The config's `rateLimitTiers`, for routes whose rate limit is tiered. */
    rateLimitTiers: Readonly<Record<string, Quota>> = {},
  ) {
    const compiled = routes.map((r): CompiledRoute<U> => {
      const { segments, rest } = compilePattern(r.path);
      const methods = new Set<string>(r.methods);
      if (methods.has('GET')) methods.add('HEAD');
      return {
        id: r.id,
        host: r.host === undefined ? undefined : canonicalHost(r.host),
        segments,
        rest,
        methods,
        allow: [...methods].join(', '),
        issuers: new Set(r.issuers),
        maxBodyBytes: r.maxBodyBytes,
        websocket: r.websocket,
        public: r.public,
        // HEAD is a GET without a body: it is the same action unless mapped on its own.
        actions: r.actions && { HEAD: r.actions.GET, ...r.actions },
        resourceType: r.resourceType,
        securityHeaders: compileSecurityHeaders(r.securityHeaders),
        validateBody: validatorOf(r),
        signature: r.signature && { signers: new Set(r.signature.signers), maxAgeMs: r.signature.maxAge },
        cors: r.cors && {
          anyOrigin: r.cors.origins.includes('*'),
          origins: new Set(r.cors.origins),
          methods: new Set(r.cors.methods ?? [...methods]),
          credentials: r.cors.credentials,
          preflight: {
            'access-control-allow-methods': [...new Set(r.cors.methods ?? [...methods])].join(', '),
            'access-control-allow-headers': r.cors.headers.join(', '),
            'access-control-max-age': String(Math.floor(r.cors.maxAge / 1000)),
          },
          expose: r.cors.exposeHeaders.length ? r.cors.exposeHeaders.join(', ') : undefined,
        },
        rateLimit: compileRateLimit(r, rateLimitTiers),
        upstream: upstreamOf(r),
      };
    });
    // Each first-segment bucket keeps config order, including routes whose first segment is dynamic.
    for (const r of compiled) {
      const first = r.segments[0];
      if (first === undefined || first.kind === 'param') this.#dynamicFirst.push(r);
    }
    const literals = new Set(
      compiled.flatMap((r) => (r.segments[0]?.kind === 'literal' ? [r.segments[0].value] : [])),
    );
    for (const lit of literals) {
      this.#byFirst.set(
        lit,
        compiled.filter((r) => {
          const first = r.segments[0];
          return first === undefined || first.kind === 'param' || first.value === lit;
        }),
      );
    }
  }

  match(host: string, method: string, path: string): RouteMatch<U> {
    const parts = path.split('/');
    // parts[0] is '' (path starts with '/'); a trailing '' (path ends with '/') is not a segment.
    const end = parts[parts.length - 1] === '' ? parts.length - 1 : parts.length;
    const candidates = this.#byFirst.get(parts[1] ?? '') ?? this.#dynamicFirst;
    let allow: string | undefined;
    for (const route of candidates) {
      if (route.host !== undefined && route.host !== host) continue;
      const params = matchSegments(route, parts, end);
      if (params === undefined) continue;
      if (route.methods.has(method)) return { kind: 'match', route, params };
      allow ??= route.allow;
    }
    return allow === undefined ? NONE : { kind: 'method_not_allowed', allow };
  }
}

function matchSegments<U>(
  route: CompiledRoute<U>,
  parts: readonly string[],
  end: number,
): Record<string, string> | undefined {
  const n = end - 1;
  const segs = route.segments;
  if (route.rest ? n < segs.length : n !== segs.length) return undefined;
  let params: Record<string, string> | undefined;
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i] as Segment;
    const part = parts[i + 1] as string;
    if (seg.kind === 'literal') {
      if (seg.value !== part) return undefined;
    } else {
      params ??= {};
      params[seg.name] = part;
    }
  }
  return params ?? EMPTY;
}
