import { isIP } from 'node:net';
import { z } from 'zod';
import { duration, durationOrOff } from './duration.js';

const host = z.string().min(1);
const port = z.number().int().min(0).max(65535);
const listen = z.strictObject({ host: host.default('127.0.0.1'), port });

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
export const httpMethod = z.enum(HTTP_METHODS);
export type HttpMethod = z.infer<typeof httpMethod>;

const id = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'expected an id of lowercase letters, digits, - and _');

/**
 * A route path pattern: literal segments, `:name` parameters, and an optional final `*` that matches
 * the rest of the path (zero or more segments). Examples: `/api/orders`, `/api/orders/:id`, `/api/admin/*`.
 */
export const pathPattern = z
  .string()
  .regex(
    /^\/(?:(?:[A-Za-z0-9._~!$&'()+,;=@-]+|:[A-Za-z_][A-Za-z0-9_]*)(?:\/(?:[A-Za-z0-9._~!$&'()+,;=@-]+|:[A-Za-z_][A-Za-z0-9_]*))*)?(?:\/?\*)?$/,
    'expected a path pattern such as /api/orders, /api/orders/:id or /api/admin/*',
  )
  .refine((p) => !/(^|\/)\.{1,2}(\/|$)/.test(p), 'a path pattern must not contain . or .. segments');

/** How the identity assertion to an upstream is signed. */
const assertionSigning = z.discriminatedUnion('alg', [
  /** ES256 with the gateway's assertion key: upstreams verify it through the public JWKS. */
  z.strictObject({ alg: z.literal('ES256') }),
  /**
   * HMAC-SHA256 with a key only the gateway and this upstream hold (cheaper per request; a leaked key
   * reaches no other upstream). At least 32 bytes; use `${file:...}` or `${env:...}`.
   */
  z.strictObject({
    alg: z.literal('HS256'),
    key: z.string().min(32, 'an HS256 assertion key must be at least 32 bytes'),
  }),
]);

/** An IPv4 or IPv6 CIDR (`10.0.0.0/8`, `::1/128`) or a single address. */
export const cidr = z.string().refine((v) => {
  const [addr, bits, extra] = v.split('/');
  const family = isIP(addr ?? '');
  if (family === 0 || extra !== undefined) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n <= (family === 4 ? 32 : 128);
}, 'expected an IP address or CIDR such as 10.0.0.0/8 or ::1/128');

/** Where a service runs in Kubernetes, for `portcullis export istio|k8s`. */
const k8sName = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a Kubernetes name (lower case, digits, -)')
  .max(63);
const kubernetesWorkload = z.strictObject({
  namespace: k8sName,
  /** The pods' labels (the selector of the exported policies). */
  labels: z.record(z.string().min(1).max(253), z.string().max(63)).refine((l) => Object.keys(l).length > 0, {
    message: 'at least one label',
  }),
  /** Its SPIFFE ID (Istio: spiffe://<td>/ns/<ns>/sa/<serviceaccount>); default: the upstream's mtls.spiffeId. */
  spiffeId: z.string().startsWith('spiffe://').optional(),
  /** The container port the NetworkPolicy opens (default: any port). */
  port: z.number().int().min(1).max(65535).optional(),
});

/** Active health checks of an upstream's targets (`GET <path>` on each, through the same pool). */
const healthCheck = z.strictObject({
  path: z.string().startsWith('/').max(2048).default('/healthz'),
  interval: duration.default(10_000),
  timeout: duration.default(2_000),
  /** Consecutive failed checks (or failed connections) that take a target out of rotation. */
  unhealthyThreshold: z.number().int().min(1).max(100).default(2),
  /** Consecutive passed checks that put it back. */
  healthyThreshold: z.number().int().min(1).max(100).default(1),
});

const upstreamUrl = z.url({ protocol: /^https?$/ });

const upstream = z
  .strictObject({
    /** Base URL of the upstream (http or https); its path is ignored. Or `targets`, for several. */
    url: upstreamUrl.optional(),
    /**
     * Several base URLs serving the same upstream: requests go round-robin to the healthy ones; a target
     * whose connections fail (or whose health checks fail) leaves the rotation until it passes again.
     */
    targets: z.array(upstreamUrl).min(1).max(64).optional(),
    healthCheck: healthCheck.optional(),
    /**
     * Further attempts, each on another target, when a connection fails before the upstream answered —
     * only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) whose body can be sent again.
     */
    retries: z.number().int().min(0).max(5).default(1),
    /** `aud` of the identity assertion sent to this upstream; defaults to the upstream's name. */
    audience: z.string().min(1).optional(),
    /** Forward the client's Authorization header to this upstream (off: the assertion replaces it). */
    passAuthorization: z.boolean().default(false),
    timeout: duration.default(30_000),
    connections: z.number().int().min(1).max(1024).default(64),
    assertion: assertionSigning.default({ alg: 'ES256' }),
    /**
     * mTLS with SPIFFE identities (an https upstream): the gateway presents its own X.509-SVID (files, e.g.
     * written by the agent) and accepts only a server whose certificate chains to `bundleFile` and carries
     * exactly one URI SAN equal to `spiffeId` — never a host-name check, never the first of several URIs.
     */
    mtls: z
      .strictObject({
        spiffeId: z.string().startsWith('spiffe://'),
        bundleFile: z.string().min(1),
        certFile: z.string().min(1),
        keyFile: z.string().min(1),
      })
      .optional(),
    /** The service behind this upstream in Kubernetes (for the mesh exports). */
    kubernetes: kubernetesWorkload.optional(),
  })
  .refine((u) => (u.url === undefined) !== (u.targets === undefined), {
    message: 'give exactly one of url, targets',
  })
  .refine((u) => !u.mtls || (u.targets ?? [u.url]).every((t) => t?.startsWith('https:')), {
    message: 'an mtls upstream needs https targets',
  })
  .transform((u) => {
    const targets = [...new Set((u.targets ?? [u.url as string]).map((t) => new URL(t).origin))];
    return { ...u, url: targets[0] as string, targets };
  });

/** The reserved issuer id of Portcullis's own access tokens (session-checked on every request). */
export const OWN_ISSUER_ID = 'portcullis';

/** An external token issuer whose bearer JWTs routes may accept. Exactly one key source. */
/** An external OpenID Provider users can log in through (authorization code + PKCE). */
const federationProvider = z.strictObject({
  /** The OP's issuer URL; its discovery document is read from `<issuer>/.well-known/openid-configuration`. */
  issuer: z.url(),
  clientId: z.string().min(1),
  clientSecret: z.string().min(1),
  /** Default `<identity.issuer>/auth/federated/<id>/callback`. */
  redirectUri: z.url().optional(),
  scopes: z.array(z.string().min(1)).default(['openid', 'profile', 'email']),
  /** ID-token/userinfo claim holding the user's groups or roles at the OP (`groups`). */
  rolesClaim: z.string().min(1).optional(),
  /** OP group/role → our role(s); values not listed give no role. */
  roleMap: z.record(z.string(), z.union([z.string(), z.array(z.string())])).default({}),
  /** Roles every user of this OP gets. */
  defaultRoles: z.array(z.string()).default([]),
  /** Believe the OP's `amr`/`acr` (e.g. its MFA) for policies' `require`; otherwise a federated sign-in is `amr: [fed]`, `acr: aal1`. */
  trustAuthContext: z.boolean().default(false),
  /** Allow an http:// issuer (loopback tests and labs only). */
  allowInsecure: z.boolean().default(false),
});

/**
 * What conditions read from the principal itself (`principal.id`, …), never from a token claim or a
 * declared attribute. The policy engine's built-in principal fields are exactly these (it checks at load).
 */
export const PRINCIPAL_BUILTINS: ReadonlySet<string> = new Set([
  'id',
  'type',
  'roles',
  'groups',
  'spiffeId',
  'issuer',
]);

/** Where an external issuer's keys come from: exactly one of these. */
const ISSUER_KEY_SOURCES = ['publicKeyFile', 'jwksFile', 'jwksUrl', 'discovery'] as const;

const externalIssuer = z
  .strictObject({
    issuer: z.string().min(1),
    audience: z.string().min(1),
    /** PEM (SPKI) public key file. */
    publicKeyFile: z.string().min(1).optional(),
    /** Local JWKS file. */
    jwksFile: z.string().min(1).optional(),
    /** JWKS URL (cached; refetched on unknown kid at most once per `jwksCooldown`). */
    jwksUrl: z.url({ protocol: /^https?$/ }).optional(),
    /**
     * OpenID discovery: `true` reads `<issuer>/.well-known/openid-configuration`, a URL reads that
     * document; its `issuer` must equal `issuer` exactly and its `jwks_uri` is then used like `jwksUrl`.
     */
    discovery: z.union([z.literal(true), z.url({ protocol: /^https?$/ })]).optional(),
    /** Allow http:// for `jwksUrl`/`discovery` (loopback tests and labs only). */
    allowInsecure: z.boolean().default(false),
    /** Least time between two key set fetches triggered by an unknown `kid` (1s–1h). */
    jwksCooldown: duration
      .default(30_000)
      .refine((ms) => ms >= 1000 && ms <= 3_600_000, 'jwksCooldown must be between 1s and 1h'),
    /** Pinned algorithms; never `none` or HS*. */
    algorithms: z
      .array(z.enum(['ES256', 'ES384', 'EdDSA', 'RS256', 'PS256']))
      .min(1)
      .default(['ES256']),
    /** Claim holding the subject's roles (array of strings, or a space-separated string). */
    rolesClaim: z.string().min(1).default('roles'),
    /**
     * Claim holding the subject's groups (array of strings, or one string): `principal.groups` in
     * conditions and rules' `groups`. Absent claim = no groups; any other type refuses the token.
     */
    groupsClaim: z.string().min(1).default('groups'),
    /**
     * Further claims policy conditions may read as `principal.<claim>` (`tenant`, `email`, …), copied
     * as they are (any JSON value); a claim the token lacks reads as absent.
     */
    claims: z
      .array(
        z
          .string()
          .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a claim name conditions can read (letters, digits, _)')
          .refine((n) => !PRINCIPAL_BUILTINS.has(n), 'built into principal: cannot be a claim attribute'),
      )
      .max(64)
      .default([]),
  })
  .superRefine((v, ctx) => {
    const given = ISSUER_KEY_SOURCES.filter((k) => v[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: `give exactly one of ${ISSUER_KEY_SOURCES.join(', ')}${given.length > 1 ? ` (got ${given.join(', ')})` : ''}`,
      });
      return;
    }
    const urls: [string, string][] = [];
    if (v.jwksUrl !== undefined) urls.push(['jwksUrl', v.jwksUrl]);
    if (typeof v.discovery === 'string') urls.push(['discovery', v.discovery]);
    if (v.discovery === true) {
      if (!URL.canParse(v.issuer)) {
        ctx.addIssue({ code: 'custom', path: ['issuer'], message: 'discovery: true needs an issuer URL' });
        return;
      }
      urls.push(['issuer', v.issuer]);
    }
    for (const [key, url] of urls)
      if (!v.allowInsecure && new URL(url).protocol !== 'https:')
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `${key} must be an https URL (allowInsecure permits http for tests)`,
        });
  });

/** A quota: `limit` requests per `window`, up to `burst` at once (default: `limit`). */
const quota = z
  .strictObject({
    limit: z.number().int().min(1).max(1_000_000_000),
    window: duration,
    burst: z.number().int().min(1).max(1_000_000_000).optional(),
  })
  .transform((r) => ({ limit: r.limit, windowMs: r.window, burst: r.burst ?? r.limit }));

/**
 * Per-principal quota on a route: a quota of its own (`{limit, window, burst?}`), or
 * `{tiers: {attribute, default}}` — the `rateLimitTiers` entry named by that attribute of the principal
 * (`plan: gold`), else the `default` tier (anonymous callers, principals without the attribute, values
 * that name no tier).
 */
const rateLimit = z
  .strictObject({
    limit: z.number().int().min(1).max(1_000_000_000).optional(),
    window: duration.optional(),
    burst: z.number().int().min(1).max(1_000_000_000).optional(),
    tiers: z
      .strictObject({
        attribute: z
          .string()
          .regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'expected an attribute name (letters, digits, _)'),
        default: id,
      })
      .optional(),
  })
  .superRefine((r, ctx) => {
    for (const k of ['limit', 'window', 'burst'] as const) {
      if (r.tiers && r[k] !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: [k],
          message: `${k} cannot be combined with tiers (each tier sets its own)`,
        });
    }
    for (const k of ['limit', 'window'] as const) {
      if (!r.tiers && r[k] === undefined)
        ctx.addIssue({ code: 'custom', path: [k], message: `${k} is required (or give tiers)` });
    }
  })
  .transform((r) =>
    r.tiers
      ? { tiers: r.tiers }
      : { limit: r.limit as number, windowMs: r.window as number, burst: r.burst ?? (r.limit as number) },
  );

/** A header value we send: printable ASCII, no line breaks (so config can never split a response). */
const headerValue = z.string().regex(/^[\x20-\x7e]{1,4096}$/, 'expected a header value (printable ASCII)');
/** An origin as browsers send it: scheme://host[:port], no path. */
const origin = z
  .string()
  .regex(
    /^https?:\/\/[a-z0-9.-]+(:\d{1,5})?$|^\*$/,
    'expected an origin such as https://app.example.com, or *',
  );

/** Security headers of a route's responses: a value replaces the default, `false` leaves the header out. */
const routeSecurityHeaders = z.strictObject({
  strictTransportSecurity: z.union([headerValue, z.literal(false)]).optional(),
  contentSecurityPolicy: z.union([headerValue, z.literal(false)]).optional(),
  frameOptions: z.union([z.enum(['DENY', 'SAMEORIGIN']), z.literal(false)]).optional(),
  referrerPolicy: z.union([headerValue, z.literal(false)]).optional(),
  permissionsPolicy: z.union([headerValue, z.literal(false)]).optional(),
  crossOriginOpenerPolicy: z.union([headerValue, z.literal(false)]).optional(),
  crossOriginResourcePolicy: z.union([headerValue, z.literal(false)]).optional(),
});

/** CORS for browsers on other origins: preflights answered by the gateway, actual responses marked. */
const routeCors = z
  .strictObject({
    origins: z.array(origin).min(1),
    /** Methods allowed cross-origin (default: the route's). */
    methods: z.array(httpMethod).min(1).optional(),
    /** Request headers a browser may send (default: authorization, content-type, dpop). */
    headers: z
      .array(z.string().regex(/^[A-Za-z0-9-]{1,64}$/))
      .default(['authorization', 'content-type', 'dpop']),
    exposeHeaders: z.array(z.string().regex(/^[A-Za-z0-9-]{1,64}$/)).default([]),
    credentials: z.boolean().default(false),
    maxAge: duration.default(600_000),
  })
  .refine((c) => !(c.credentials && c.origins.includes('*')), {
    message: 'credentials cannot be allowed for any origin (*): list the origins',
  });

const route = z
  .strictObject({
    id,
    /** Host to match (case-insensitive, port ignored); omitted = any host. */
    host: z.string().min(1).optional(),
    path: pathPattern,
    methods: z.array(httpMethod).min(1).default(['GET', 'HEAD']),
    upstream: id,
    /**
     * Who may authenticate on this route: `portcullis` (our own tokens), ids from `issuers`, and/or
     * `spiffe` (a workload's X.509-SVID as TLS client certificate, with `gateway.tls.clientCaFile`),
     * `apikey`, `session` (the browser session cookie; browsers navigating without one are sent to
     * the sign-in page).
     */
    issuers: z.array(id).min(1).default([OWN_ISSUER_ID]),
    /** Named action per method (`{ GET: orders:read, POST: orders:write }`), what policy rules and role permissions see as `action`; unmapped methods are their own action. */
    actions: z.partialRecord(httpMethod, z.string().regex(/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*$/)).optional(),
    /** The resource type policy sees for this route (`resource.type`). */
    resourceType: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9_]*$/)
      .optional(),
    /**
     * An explicitly public route: no authentication and no policy (the declaration itself is the allow,
     * recorded as rule `public`), no identity assertion; still canonicalized, limited, audited.
     */
    public: z.boolean().default(false),
    /**
     * WebSocket upgrades (`GET` with `Upgrade: websocket`) are authorized like any request and then
     * tunnelled to the upstream; the caller's session is checked again every `recheck` (a revoked
     * session's tunnel is closed). Off: an upgrade request is served as a plain request.
     */
    websocket: z
      .union([z.boolean(), z.strictObject({ recheck: duration.default(30_000) })])
      .transform((w) => (w === false ? undefined : { recheckMs: w === true ? 30_000 : w.recheck }))
      .optional(),
    /** Largest request body forwarded on this route (413 past it, whether announced or streamed). */
    maxBodyBytes: z.number().int().min(0).max(10_737_418_240).default(1_048_576),
    /** Per-principal rate limit on this route (GCRA); omitted = none. 429 with Retry-After when exceeded. */
    rateLimit: rateLimit.optional(),
    /** Security headers for this route's responses (defaults: helmet's for an API). */
    securityHeaders: routeSecurityHeaders.optional(),
    /** Cross-origin access for browsers; omitted = none (no CORS headers, preflights refused). */
    cors: routeCors.optional(),
    /**
     * A JSON Schema (draft 2020-12 subset as ajv compiles it) the JSON request body must satisfy, inline or
     * in a file; compiled once at load. A body that fails is a 400 naming the failing paths.
     */
    requestSchema: z.record(z.string(), z.unknown()).optional(),
    requestSchemaFile: z.string().min(1).optional(),
    /**
     * Webhook routes: requests signed with RFC 9421 HTTP Message Signatures by one of these
     * `messageSigners` (the caller is the service `signer:<id>`); `@method`, `@target-uri` and
     * `content-digest` (checked against the body) must be covered, with `created`, `keyid` and `nonce`.
     */
    signature: z
      .strictObject({
        signers: z.array(id).min(1),
        /** A signature older than this (by `created`) is refused; its nonce is remembered this long. */
        maxAge: duration
          .default(300_000)
          .refine((ms) => ms >= 1_000 && ms <= 3_600_000, 'maxAge must be between 1s and 1h'),
      })
      .optional(),
  })
  .refine((r) => !(r.requestSchema && r.requestSchemaFile), {
    message: 'requestSchema and requestSchemaFile: one or the other',
    path: ['requestSchemaFile'],
  })
  .refine((r) => !(r.signature && r.public), {
    message: 'a signed webhook route cannot be public',
    path: ['signature'],
  });

/** A webhook sender's key for RFC 9421 signatures: HMAC-SHA256 (shared secret) or Ed25519 (public key). */
const messageSigner = z.discriminatedUnion('alg', [
  z.strictObject({
    alg: z.literal('hmac-sha256'),
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the config's own ${file:} syntax, named for the user
    key: z.string().min(32, 'an HMAC key must be at least 32 bytes; use ${file:...} or ${env:...}'),
    roles: z.array(z.string().min(1)).default([]),
  }),
  z.strictObject({
    alg: z.literal('ed25519'),
    publicKeyFile: z.string().min(1),
    roles: z.array(z.string().min(1)).default([]),
  }),
]);

/** A rule id: also used in explanations, audit records and metrics labels. */
const ruleId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'expected a rule id of letters, digits, _ . : and -');
const roleName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$/, 'expected a role name without spaces or commas');
/** An action name (`orders:write`) or pattern (`orders:*`, `*`). */
const actionPattern = z
  .string()
  .regex(/^(\*|[A-Za-z0-9_.-]+(:[A-Za-z0-9_.*-]+)*)$/, 'expected an action such as orders:write or orders:*');
/** A SPIFFE ID, or a pattern where `*` matches one path segment and a final `/**` any number. */
const spiffePattern = z
  .string()
  .regex(
    /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._*-]+)*(\/\*\*)?$/,
    'expected spiffe://trust-domain/path (with * or a final /**)',
  );
/** A CEL type for an attribute: string, int, double, bool, list<string>, map<string, dyn>, dyn… */
const celType = z
  .string()
  .regex(/^[a-z][a-z0-9_<>, ]*$/, 'expected a CEL type such as string, int or list<string>');
const attributeSchema = z.record(
  z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an attribute name (letters, digits, _)'),
  celType,
);

export const policyRule = z.strictObject({
  id: ruleId,
  description: z.string().optional(),
  effect: z.enum(['allow', 'deny']).default('allow'),
  /** Who (any of): roles (with inheritance), groups, user ids, service SPIFFE IDs or patterns. None = anyone authenticated. */
  roles: z.array(roleName).min(1).optional(),
  groups: z.array(z.string().min(1)).min(1).optional(),
  users: z.array(z.string().min(1)).min(1).optional(),
  services: z.array(spiffePattern).min(1).optional(),
  /** Named actions or patterns (`orders:write`, `orders:*`); omitted = any. */
  actions: z.array(actionPattern).min(1).optional(),
  /** HTTP methods (HEAD counts as GET); omitted = any. */
  methods: z.array(httpMethod).min(1).optional(),
  /** Route ids; omitted = any route. */
  routes: z.array(id).min(1).optional(),
  /** Canonical path patterns (`/orders/:id`, `/admin/*`); omitted = any path. */
  paths: z.array(pathPattern).min(1).optional(),
  /** Resource types (`Document`); omitted = any type. */
  types: z
    .array(z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/))
    .min(1)
    .optional(),
  /** A CEL condition over principal, resource, action, request and context. */
  when: z.string().min(1).max(4096).optional(),
  /** An obligation: when not met, a would-be allow becomes a challenge (step-up). */
  require: z
    .strictObject({
      mfa: z.boolean().optional(),
      maxAge: duration.optional(),
      acr: z.string().min(1).optional(),
    })
    .optional(),
});

const roleDefinition = z.strictObject({
  description: z.string().optional(),
  /** Roles this role includes: their holders' rules apply to it too. */
  includes: z.array(roleName).default([]),
  /** Actions this role may perform on any resource (`orders:write`, `orders:*`). */
  permissions: z.array(actionPattern).default([]),
});

/** A policy document (the config's `policy` section, or one file of `policy.files`). */
export const policyDocument = z.strictObject({
  rules: z.array(policyRule).default([]),
  roles: z.record(roleName, roleDefinition).default({}),
});

const policySection = policyDocument.extend({
  /** Declared attributes: a condition naming an undeclared attribute of a declared object fails to load. */
  schema: z
    .strictObject({
      principal: attributeSchema.optional(),
      /** Attributes every resource may have. */
      resource: attributeSchema.optional(),
      /** Attributes by resource type (merged with `resource`). */
      resourceTypes: z.record(z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/), attributeSchema).optional(),
      context: attributeSchema.optional(),
    })
    .prefault({}),
  /** More policy documents: YAML files, or folders of them (read in name order). */
  files: z.array(z.string().min(1)).default([]),
  /** Authentication context classes from weakest to strongest, for `require.acr`. */
  acrLevels: z.array(z.string().min(1)).min(1).default(['aal1', 'aal2', 'aal3']),
});

const argon2Params = z.strictObject({
  /** KiB of memory; OWASP minimum for argon2id is 19456 (19 MiB) with t=2. */
  memoryCost: z.number().int().min(1024).max(4_194_304).default(19_456),
  timeCost: z.number().int().min(1).max(20).default(2),
  parallelism: z.number().int().min(1).max(16).default(1),
});

const alertRule = z.strictObject({
  id,
  /** Audit record type to count (`auth.login.failed`); a trailing `*` matches a prefix. */
  type: z.string().min(1),
  /** Record data fields that must have these values, e.g. `{ outcome: deny }`. */
  where: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
  /** Data field that groups the count (`username`, `sub`, `ip`); omitted = one group. */
  groupBy: z.string().min(1).optional(),
  threshold: z.number().int().min(1).max(1_000_000),
  window: duration,
  /** After firing, the rule stays quiet for that group this long. */
  suppress: duration.optional(),
  severity: z.enum(['info', 'warning', 'critical']).default('warning'),
});

const alertSink = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('webhook'),
    url: z.url({ protocol: /^https?$/ }),
    timeout: duration.default(5_000),
    maxQueue: z.number().int().min(1).max(1_000_000).default(1_000),
    maxAttempts: z.number().int().min(1).max(100).default(5),
    headers: z.record(z.string(), z.string()).optional(),
  }),
  z.strictObject({
    type: z.literal('syslog'),
    host: z.string().min(1),
    port: port.default(514),
    /** RFC 5425 syslog over TLS; `ca` (PEM, e.g. `${file:ca.pem}`) to trust a private CA. */
    tls: z
      .union([
        z.boolean(),
        z.strictObject({ ca: z.string().min(1).optional(), servername: z.string().optional() }),
      ])
      .default(false),
    appName: z.string().min(1).max(48).default('portcullis'),
    maxQueue: z.number().int().min(1).max(1_000_000).default(1_000),
    maxAttempts: z.number().int().min(1).max(100).default(5),
  }),
  z.strictObject({
    type: z.literal('file'),
    path: z.string().min(1),
    maxBytes: z.number().int().min(1024).default(10_485_760),
    keep: z.number().int().min(0).max(100).default(5),
  }),
  z.strictObject({ type: z.literal('stdout') }),
]);

export const configSchema = z
  .strictObject({
    /** Folder for the SQLite database and key files; relative to the config file. */
    dataDir: z.string().min(1).default('./.portcullis'),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .prefault({}),
    gateway: z
      .strictObject({
        listen: listen.prefault({ port: 8080 }),
        /** Serve HTTPS. With `clientCaFile` (a SPIFFE trust bundle, PEM), workloads may authenticate with their X.509-SVID. */
        tls: z
          .strictObject({
            certFile: z.string().min(1),
            keyFile: z.string().min(1),
            clientCaFile: z.string().min(1).optional(),
            /** The trust domain client SVIDs must belong to. */
            clientTrustDomain: z
              .string()
              .regex(/^[a-z0-9._-]+$/)
              .optional(),
            /** Also listen here over plain HTTP, answering every request with a 308 to the HTTPS URL. */
            redirectHttp: listen.optional(),
          })
          .optional(),
        /** Largest request body accepted by the gateway's own endpoints (login, refresh). */
        maxAuthBodyBytes: z.number().int().min(256).max(1_048_576).default(16_384),
        /**
         * Verified-token cache: a token's signature is checked once; its expiry (and, for our own
         * tokens, its session) on every request. 0 disables it.
         */
        tokenCacheSize: z.number().int().min(0).max(1_000_000).default(10_000),
        /**
         * Proxies whose forwarding headers are believed (CIDRs). Default: none. Only these may call the
         * forward-auth endpoint.
         */
        trustedProxies: z.array(cidr).default([]),
        /**
         * Forward-auth endpoint for nginx `auth_request`, Caddy `forward_auth` and Traefik `ForwardAuth`:
         * the original request comes from X-Forwarded-Method/-Uri/-Host, sent by a trusted proxy.
         */
        forwardAuth: z
          .strictObject({
            path: z
              .string()
              .regex(/^\/[A-Za-z0-9._~/-]*$/)
              .default('/.portcullis/forward-auth'),
            /**
             * On routes that take the browser session cookie, answer a browser navigating without a
             * usable one with a 302 to `/auth/login` (or `/auth/step-up`) on the same host, instead of
             * 401 — for Caddy `forward_auth` and Traefik `ForwardAuth`, which pass the answer on; the proxy
             * must route `/auth/*` to Portcullis. Leave it off for nginx `auth_request` (it turns a 302
             * into a 500; use `error_page 401` there).
             */
            redirectBrowsers: z.boolean().default(false),
            /**
             * Refusals (401, 403, 429…) carry the usual JSON error body. Caddy and Traefik pass it on to
             * the client; nginx `auth_request` discards it and, because a body came with the answer,
             * cannot reuse its connection to Portcullis (one new connection per refusal). `false`:
             * refusals are headers only — the status, `X-Portcullis-Error: <code>`, `X-Request-Id`,
             * `WWW-Authenticate` — with an empty body. Set it behind nginx.
             */
            refusalBody: z.boolean().default(true),
          })
          .optional(),
        /**
         * Envoy ext_authz (HTTP service mode): set Envoy's `path_prefix` to this; requests under it are
         * the original requests to decide (from trusted proxies only).
         */
        extAuthz: z
          .strictObject({
            pathPrefix: z
              .string()
              .regex(
                /^\/\.portcullis\/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]$/,
                'expected a path under /.portcullis/ (it must not overlap routes)',
              )
              .default('/.portcullis/ext-authz'),
          })
          .optional(),
      })
      .prefault({}),
    admin: z.strictObject({ listen: listen.prefault({ port: 9090 }) }).prefault({}),
    identity: z
      .strictObject({
        /** `iss` of every token we mint; usually the gateway's public URL. */
        issuer: z.url(),
        /** `aud` of access tokens. */
        audience: z.string().min(1).default('portcullis'),
        accessTokenTtl: duration.default(600_000),
        /** Absolute lifetime of a session (and so of its refresh tokens). */
        sessionTtl: duration.default(43_200_000),
        /** Access-token signing keys: algorithm and scheduled rotation (the next key is published ahead). */
        signingKeys: z
          .strictObject({
            algorithm: z.enum(['ES256', 'EdDSA']).default('ES256'),
            rotateEvery: duration.default(30 * 86_400_000),
            publishAhead: duration.default(86_400_000),
          })
          .prefault({})
          .refine((v) => v.publishAhead < v.rotateEvery, {
            message: 'publishAhead must be shorter than rotateEvery',
          }),
        /** The data-encryption key (seals private keys and TOTP seeds); default `<dataDir>/keys/data.key`. */
        dataKeyFile: z.string().min(1).optional(),
        /** Roles allowed to use the admin API (`/_portcullis/admin/…`). */
        adminRoles: z.array(z.string().min(1)).min(1).default(['admin']),
        /** The admin API needs a multi-factor sign-in (acr aal2). */
        adminRequireMfa: z.boolean().default(true),
        /** External OpenID Providers to log in through (`GET /auth/federated/<id>/start`). */
        federation: z.record(id, federationProvider).default({}),
        /** Origins (besides our issuer's) that `return_to` after a federated or browser sign-in may name. */
        redirectAllowList: z.array(z.url()).default([]),
        /** Lifetime of service-account tokens (client credentials). */
        serviceTokenTtl: duration
          .default(300_000)
          .refine((ms) => ms <= 900_000, 'serviceTokenTtl must be at most 15m'),
        /** A session with no login or refresh for this long ends (at least twice the access-token lifetime). */
        sessionIdleTimeout: duration.default(3_600_000),
        passwordHash: argon2Params.prefault({}),
        /** Two refreshes of the same token within this window both get the same successor (not a reuse). */
        refreshGrace: durationOrOff
          .default(5_000)
          .refine((ms) => ms <= 60_000, 'refreshGrace must be at most 60s (0 turns it off)'),
        mfa: z
          .strictObject({
            /** The name authenticator apps show for the account. */
            issuerName: z.string().min(1).max(64).default('Portcullis'),
            /** Lifetime of the MFA step of a login (password accepted, code pending). */
            challengeTtl: duration
              .default(300_000)
              .refine((ms) => ms <= 900_000, 'challengeTtl must be at most 15m'),
          })
          .prefault({}),
        /** Brute-force defence for logins and MFA codes. */
        lockout: z
          .strictObject({
            /** Failures per account before exponential back-off starts. */
            freeAttempts: z.number().int().min(0).max(100).default(3),
            baseDelay: duration.default(1_000),
            maxDelay: duration.default(900_000),
            /** Failures per account that lock it temporarily. */
            lockAfter: z.number().int().min(1).max(1000).default(10),
            lockFor: duration
              .default(900_000)
              .refine((ms) => ms <= 86_400_000, 'lockFor must be at most 24h'),
            /** Failures per client address before its back-off starts. */
            ipFreeAttempts: z.number().int().min(0).max(100_000).default(30),
          })
          .prefault({}),
      })
      .refine((v) => v.sessionIdleTimeout >= 2 * v.accessTokenTtl, {
        message:
          'sessionIdleTimeout must be at least twice accessTokenTtl (a token is refreshed before it is idle)',
        path: ['sessionIdleTimeout'],
      })
      .refine((v) => v.accessTokenTtl >= 300_000 && v.accessTokenTtl <= 900_000, {
        // Short enough that revocation by expiry is quick, long enough not to refresh constantly.
        message: 'accessTokenTtl must be between 5m and 15m',
        path: ['accessTokenTtl'],
      }),
    assertion: z
      .strictObject({
        /** Lifetime of the identity assertion forwarded to upstreams (at most 60s). */
        ttl: duration.default(30_000).refine((ms) => ms <= 60_000, 'the assertion ttl must be at most 60s'),
      })
      .prefault({}),
    /** Webhook senders (RFC 9421 message signatures) by key id, for `routes[].signature`. */
    messageSigners: z.record(id, messageSigner).default({}),
    /** External issuers whose tokens routes may accept (`routes[].issuers`). */
    issuers: z.record(id, externalIssuer).default({}),
    upstreams: z.record(id, upstream),
    /** `portcullis export istio|k8s`: where the gateway itself runs (its pods and SPIFFE ID). */
    export: z
      .strictObject({
        gateway: kubernetesWorkload.extend({ spiffeId: z.string().startsWith('spiffe://') }).optional(),
      })
      .prefault({}),
    routes: z.array(route).min(1),
    /** Named quotas (`free`, `gold`, …) that routes choose from by a principal attribute (`routes[].rateLimit.tiers`). */
    rateLimitTiers: z.record(id, quota).default({}),
    policy: policySection.prefault({}),
    audit: z
      .strictObject({
        /** `batched`: decisions are group-committed within `flushInterval`; `durable`: written before the response. */
        decisions: z.enum(['batched', 'durable']).default('batched'),
        /** Identity and admin events (logins, refreshes, logouts, users): `durable` by default. */
        identity: z.enum(['batched', 'durable']).default('durable'),
        flushInterval: duration.default(50).refine((ms) => ms <= 5_000, 'flushInterval must be at most 5s'),
        /** Records held in memory while the store cannot be written (short stalls); past it, requests are refused. */
        spoolLimit: z.number().int().min(1).max(10_000_000).default(10_000),
        /**
         * When the log cannot be written and the spool is full, per event class: refuse (false, default)
         * or drop the record and carry on (true). `true`/`false` sets every class.
         */
        failOpen: z
          .union([
            z.boolean().transform((v) => ({ decisions: v, identity: v })),
            z.strictObject({ decisions: z.boolean().default(false), identity: z.boolean().default(false) }),
          ])
          .default({ decisions: false, identity: false }),
        /** Record fields stored as keyed HMACs (`hmac-sha256:…`) so the log can be shared; `[]` keeps them clear. */
        sensitiveFields: z.array(z.string().min(1)).default(['ip', 'username']),
        /** Signed checkpoints of the log's Merkle tree (C2SP tlog-checkpoint, Ed25519). */
        checkpoint: z
          .strictObject({
            /** Sign after this many new records… */
            everyRecords: z.number().int().min(1).max(10_000_000).default(1000),
            /** …or at most this long after the first record not yet covered. */
            interval: duration.default(60_000),
            /** The log's name in its checkpoints; default `<issuer host>/portcullis-audit`. */
            origin: z
              .string()
              .regex(/^[^\s+]+$/, 'an origin has no spaces or +')
              .optional(),
            /** Ed25519 key (PKCS#8 PEM, created if missing); default `<dataDir>/keys/audit-checkpoint.pem`. */
            keyFile: z.string().min(1).optional(),
            /** Append every checkpoint to this JSON-lines file too — put it outside the data directory. */
            anchorFile: z.string().min(1).optional(),
            /** POST every checkpoint to a receiver that keeps them (JSON: size, root, note, createdAt). */
            anchorWebhook: z
              .strictObject({
                url: z.url({ protocol: /^https?$/ }),
                headers: z.record(z.string(), z.string()).optional(),
              })
              .optional(),
          })
          .prefault({}),
      })
      .prefault({}),
    /** Security alerts over the audit log: sliding-window rules and where alerts go. */
    alerts: z
      .strictObject({
        /** Omitted: the default rules (login failures, refresh-token reuse, denial spikes, revoked-token use). */
        rules: z.array(alertRule).optional(),
        sinks: z.array(alertSink).default([]),
      })
      .prefault({}),
    /** Workload identity: the internal CA's API for X.509-SVIDs (needs `portcullis ca init`). */
    workload: z
      .strictObject({
        /** Serve the workload API (TLS) here: first issuance by join token, renewal over mTLS, the bundle. */
        listen: listen.optional(),
        svidTtl: duration.default(3_600_000).refine((ms) => ms <= 86_400_000, 'svidTtl must be at most 24h'),
        /**
         * Emergency revocation: a file of certificate serials (hex, one per line, `#` comments) refused
         * wherever an X.509-SVID is checked — client certificates at the gateway, renewals and JWT-SVIDs
         * at the workload API, upstream servers. Re-read when it changes.
         */
        denylistFile: z.string().min(1).optional(),
        joinTokenTtl: duration
          .default(3_600_000)
          .refine((ms) => ms <= 7 * 86_400_000, 'joinTokenTtl must be at most 7d'),
      })
      .prefault({}),
    /**
     * Devices: enrolled by their user, proven on every request by mTLS with a device certificate from the
     * internal CA (`spiffe://<trust-domain>/device/<id>`) or by a DPoP proof (RFC 9449) signed with the
     * device's key; signed posture reports judged by compliance rules.
     */
    devices: z
      .strictObject({
        /** `admin`: a new device is untrusted until an admin approves it; `auto`: trusted at enrolment. */
        approval: z.enum(['admin', 'auto']).default('admin'),
        /** The CA that issues device certificates (default `<dataDir>/ca`, made by `portcullis ca init`). */
        caDir: z.string().min(1).optional(),
        certTtl: duration
          .default(30 * 86_400_000)
          .refine((ms) => ms <= 397 * 86_400_000, 'certTtl must be at most 397d'),
        /** A user may hold this many devices that are not revoked. */
        maxPerUser: z.number().int().min(1).max(1000).default(20),
        dpop: z
          .strictObject({
            /** A proof older than this (by its `iat`) is refused; its `jti` is remembered this long. */
            maxAge: duration.default(60_000).refine((ms) => ms <= 600_000, 'dpop.maxAge must be at most 10m'),
          })
          .prefault({}),
        posture: z
          .strictObject({
            /** A report counts for this long after it was signed; then the device is not compliant. */
            maxAge: duration.default(86_400_000),
            /** Compliance rules; every one set must hold. */
            rules: z
              .strictObject({
                diskEncryption: z.boolean().default(true),
                screenLock: z.boolean().default(true),
                firewall: z.boolean().default(false),
                /** Minimum OS version per OS name (`macos: "14.4"`); an OS not listed has no minimum. */
                minOsVersion: z.record(z.string().min(1), z.string().regex(/^\d+(\.\d+)*$/)).default({}),
                minAgentVersion: z
                  .string()
                  .regex(/^\d+(\.\d+)*$/)
                  .optional(),
                /** The last patch must be more recent than this. */
                maxPatchAge: duration.optional(),
                /** OS names allowed (default: any). */
                allowedOs: z.array(z.string().min(1)).optional(),
              })
              .prefault({}),
          })
          .prefault({}),
      })
      .prefault({}),
    /** Continuous verification: the risk score computed on every authenticated request. */
    risk: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** MaxMind-format (MMDB) geo-IP databases: city and/or ASN (files that are missing are reported). */
        geoip: z.array(z.string().min(1)).default([]),
        thresholds: z
          .strictObject({
            challenge: z.number().int().min(1).max(100).default(40),
            deny: z.number().int().min(1).max(101).default(80),
          })
          .prefault({})
          .refine((t) => t.challenge <= t.deny, { message: 'challenge must not exceed deny' }),
        weights: z
          .strictObject({
            impossibleTravel: z.number().int().min(0).max(100).default(60),
            newCountry: z.number().int().min(0).max(100).default(20),
            newAsn: z.number().int().min(0).max(100).default(10),
            unusualTime: z.number().int().min(0).max(100).default(15),
            threatIntel: z.number().int().min(0).max(100).default(70),
            requestVelocity: z.number().int().min(0).max(100).default(20),
            failureVelocity: z.number().int().min(0).max(100).default(25),
            staleAuthentication: z.number().int().min(0).max(100).default(10),
            noRecentMfa: z.number().int().min(0).max(100).default(5),
            /**
             * No device proof. Device signals are on when this is above 0, and it caps them: a proven
             * device (new, untrusted, not compliant) never scores more than no device at all.
             */
            unmanagedDevice: z.number().int().min(0).max(100).default(0),
            /** A device proof from a device this principal has not used before. */
            newDevice: z.number().int().min(0).max(100).default(15),
            /** An untrusted (unapproved) device, or one whose posture is not compliant. */
            untrustedDevice: z.number().int().min(0).max(100).default(10),
            noncompliantDevice: z.number().int().min(0).max(100).default(20),
          })
          .prefault({}),
        travel: z
          .strictObject({
            maxSpeedKmh: z.number().min(1).max(100_000).default(1000),
            /** Distance always allowed (geo-IP is inexact); the databases' accuracy radii are added. */
            toleranceKm: z.number().min(0).max(20_000).default(100),
          })
          .prefault({}),
        unusualTime: z
          .strictObject({
            /** Requests a principal needs before its usual hours are judged (cold start). */
            minObservations: z.number().int().min(1).max(1_000_000).default(50),
            /** An hour of the week (± 1 h) holding less than this share of the history is unusual. */
            rareBelow: z.number().min(0).max(1).default(0.01),
          })
          .prefault({}),
        velocity: z
          .strictObject({
            requestsPerMinute: z.number().int().min(1).default(6000),
            failuresPerMinute: z.number().int().min(1).default(30),
          })
          .prefault({}),
        staleAuthenticationAfter: duration.default(43_200_000),
        threatLists: z
          .array(
            z.strictObject({
              name: id,
              source: z.string().min(1),
              format: z.enum(['plain', 'netset', 'tor']).default('plain'),
            }),
          )
          .default([]),
        threatRefresh: duration.default(3_600_000),
      })
      .prefault({}),
    demo: z
      .strictObject({
        /** Start the bundled demo upstream on this address (used by `portcullis up`). */
        upstream: listen.optional(),
        /** Create a demo admin and viewer with generated passwords when there are no users. */
        seedUsers: z.boolean().default(false),
      })
      .prefault({}),
  })
  .superRefine((cfg, ctx) => {
    const seen = new Set<string>();
    cfg.routes.forEach((r, i) => {
      if (seen.has(r.id))
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'id'], message: `duplicate route id "${r.id}"` });
      seen.add(r.id);
      if (!Object.hasOwn(cfg.upstreams, r.upstream)) {
        ctx.addIssue({
          code: 'custom',
          path: ['routes', i, 'upstream'],
          message: `unknown upstream "${r.upstream}"`,
        });
      }
      const tier = r.rateLimit && 'tiers' in r.rateLimit ? r.rateLimit.tiers.default : undefined;
      if (tier !== undefined && !Object.hasOwn(cfg.rateLimitTiers, tier)) {
        const known = Object.keys(cfg.rateLimitTiers);
        ctx.addIssue({
          code: 'custom',
          path: ['routes', i, 'rateLimit', 'tiers', 'default'],
          message: `unknown rate-limit tier "${tier}" (rateLimitTiers defines ${known.length ? known.join(', ') : 'none'})`,
        });
      }
    });
    const ruleIds = new Set<string>();
    cfg.policy.rules.forEach((rule, i) => {
      if (ruleIds.has(rule.id))
        ctx.addIssue({
          code: 'custom',
          path: ['policy', 'rules', i, 'id'],
          message: `duplicate rule id "${rule.id}"`,
        });
      ruleIds.add(rule.id);
      rule.routes?.forEach((rid, j) => {
        if (!seen.has(rid))
          ctx.addIssue({
            code: 'custom',
            path: ['policy', 'rules', i, 'routes', j],
            message: `unknown route "${rid}"`,
          });
      });
    });
  });

/** The validated, defaulted configuration. Durations are in milliseconds. */
export type Config = z.output<typeof configSchema>;
/** What a user writes (YAML or a plain object): durations as strings, defaults optional. */
export type ConfigInput = z.input<typeof configSchema>;
export type RouteConfig = Config['routes'][number];
export type UpstreamConfig = Config['upstreams'][string];
export type PolicyRuleConfig = Config['policy']['rules'][number];
export type PolicyConfig = Config['policy'];
export type FederationProviderConfig = Config['identity']['federation'][string];
export type PolicyDocument = z.output<typeof policyDocument>;
export type ExternalIssuerConfig = Config['issuers'][string];
export type AlertSinkConfig = Config['alerts']['sinks'][number];
