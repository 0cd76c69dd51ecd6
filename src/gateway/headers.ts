import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy-specific ones that must never be forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  // A DPoP proof is for the gateway (it checked it); an upstream must not be able to replay it here.
  'dpop',
  // The gateway, as the server, already answered it (100 Continue); undici refuses to send it on.
  'expect',
]);

/** Headers the gateway sets itself towards upstreams; a client's copy is dropped. */
const SET_BY_GATEWAY = new Set([
  'host',
  'x-request-id',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'forwarded',
  'x-real-ip',
]);

/**
 * Headers that make common frameworks serve another target or method than the one authorized
 * (IIS/Symfony `X-Original-URL`, `X-Rewrite-URL`; method-override middleware).
 */
const REWRITES = new Set([
  'x-original-url',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
]);

/**
 * Identity headers other access proxies set for their apps (Authelia's `Remote-*`, Apache's
 * `X-Remote-User`, Oathkeeper's `X-User`; oauth2-proxy's `X-Auth-Request-*`, Grafana's `X-WEBAUTH-*` and
 * Pomerium's `X-Pomerium-*` by prefix): an app moved behind Portcullis may still believe them, so a
 * client's copy never reaches it.
 */
const OTHER_PROXY_IDENTITY = new Set([
  'remote-user',
  'remote-groups',
  'remote-email',
  'remote-name',
  'x-remote-user',
  'x-remote-group',
  'x-remote-groups',
  'x-remote-email',
  'x-user',
]);

/**
 * Spoofable headers, by their name with `_` read as `-` (CGI-style servers read `X_Forwarded_User` as
 * `X-Forwarded-User`): our identity headers (`x-portcullis-*`), every `x-forwarded-*` (client address,
 * host, port, prefix, and proxy identity headers such as `X-Forwarded-User`; the gateway sets its own)
 * and the target/method rewrites.
 */
const isSpoofable = (key: string) =>
  // Every name here starts with `x` or `r`: one character test keeps the common headers cheap (hot path).
  (key.charCodeAt(0) === 120 || key.charCodeAt(0) === 114) &&
  (key.startsWith('x-portcullis') ||
    key.startsWith('x-forwarded-') ||
    REWRITES.has(key) ||
    OTHER_PROXY_IDENTITY.has(key) ||
    key.startsWith('x-auth-request-') ||
    key.startsWith('x-webauth-') ||
    key.startsWith('x-pomerium-'));

/**
 * Headers to send upstream: the client's headers minus hop-by-hop headers (and any the client lists
 * in `Connection`), minus anything the gateway sets itself, minus spoofable identity, forwarding and
 * rewrite headers (in either spelling, `-` or `_`), minus `Authorization` unless the upstream asked for it.
 */
export function upstreamRequestHeaders(
  inbound: IncomingHttpHeaders,
  passAuthorization: boolean,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const listed = connectionListed(inbound.connection);
  for (const name in inbound) {
    const value = inbound[name];
    if (value === undefined) continue;
    const key = name.includes('_') ? name.replaceAll('_', '-') : name;
    if (HOP_BY_HOP.has(key) || SET_BY_GATEWAY.has(key) || isSpoofable(key)) continue;
    if (listed?.has(name)) continue;
    if ((key === 'authorization' || key === 'x-api-key') && !passAuthorization) continue;
    if (
      key === 'cookie' &&
      !passAuthorization &&
      typeof value === 'string' &&
      value.includes('portcullis-')
    ) {
      // The gateway's own cookies (session, CSRF nonce, refresh) are credentials for the gateway only.
      const rest = withoutOwnCookies(value);
      if (rest !== '') out[name] = rest;
      continue;
    }
    out[name] = value;
  }
  return out;
}

/** Upstream response headers to pass to the client: hop-by-hop and server fingerprints removed. */
export function clientResponseHeaders(
  upstream: Record<string, string | string[] | undefined>,
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const connection = upstream.connection;
  const listed = connectionListed(Array.isArray(connection) ? connection.join(',') : connection);
  for (const name in upstream) {
    const value = upstream[name];
    if (value === undefined) continue;
    if (HOP_BY_HOP.has(name) || name === 'server' || name === 'x-powered-by' || listed?.has(name)) continue;
    out[name] = value;
  }
  return out;
}

function connectionListed(value: string | undefined): Set<string> | undefined {
  if (!value) return undefined;
  const set = new Set<string>();
  for (const token of value.split(',')) {
    const t = token.trim().toLowerCase();
    if (t !== '') set.add(t);
  }
  return set;
}

/**
 * Security headers on every response (helmet's defaults for an API), computed once. An upstream's own
 * value for one of these headers is kept: it knows its content best.
 */
export const SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = Object.freeze([
  ['x-content-type-options', 'nosniff'],
  ['strict-transport-security', 'max-age=31536000; includeSubDomains'],
  ['x-frame-options', 'DENY'],
  ['content-security-policy', "default-src 'none'; frame-ancestors 'none'"],
  ['referrer-policy', 'no-referrer'],
  ['cross-origin-opener-policy', 'same-origin'],
  ['cross-origin-resource-policy', 'same-origin'],
  ['x-dns-prefetch-control', 'off'],
] as const);

type RouteSecurityHeaders = Partial<
  Record<
    | 'strictTransportSecurity'
    | 'contentSecurityPolicy'
    | 'frameOptions'
    | 'referrerPolicy'
    | 'permissionsPolicy'
    | 'crossOriginOpenerPolicy'
    | 'crossOriginResourcePolicy',
    string | false | undefined
  >
>;
const HEADER_OF: Record<keyof RouteSecurityHeaders, string> = {
  strictTransportSecurity: 'strict-transport-security',
  contentSecurityPolicy: 'content-security-policy',
  frameOptions: 'x-frame-options',
  referrerPolicy: 'referrer-policy',
  permissionsPolicy: 'permissions-policy',
  crossOriginOpenerPolicy: 'cross-origin-opener-policy',
  crossOriginResourcePolicy: 'cross-origin-resource-policy',
};

/**
 * A route's security headers, computed at load: the defaults with the route's values in place and the
 * ones it turns off (`false`) left out. `frame-ancestors` follows `frameOptions` in the default CSP.
 */
export function compileSecurityHeaders(
  o: RouteSecurityHeaders | undefined,
): ReadonlyArray<readonly [string, string]> {
  if (!o) return SECURITY_HEADERS;
  const out = new Map<string, string>(SECURITY_HEADERS.map(([k, v]) => [k, v]));
  if (o.frameOptions === 'SAMEORIGIN' && o.contentSecurityPolicy === undefined)
    out.set('content-security-policy', "default-src 'none'; frame-ancestors 'self'");
  for (const [key, header] of Object.entries(HEADER_OF) as [keyof RouteSecurityHeaders, string][]) {
    const v = o[key];
    if (v === false) out.delete(header);
    else if (v !== undefined) out.set(header, v);
  }
  return Object.freeze([...out]);
}

/** Adds the security headers (the route's, or the defaults) that `headers` does not already carry. */
export function withSecurityHeaders(
  headers: OutgoingHttpHeaders,
  list: ReadonlyArray<readonly [string, string]> = SECURITY_HEADERS,
): OutgoingHttpHeaders {
  for (let i = 0; i < list.length; i++) {
    const header = list[i] as readonly [string, string];
    if (headers[header[0]] === undefined) headers[header[0]] = header[1];
  }
  return headers;
}

const OWN_COOKIE_NAME = /^__(?:Host|Secure)-portcullis-/;

/** A `Cookie` header without the gateway's own cookies (`__Host-portcullis-session`, …). */
function withoutOwnCookies(header: string): string {
  return header
    .split(';')
    .map((pair) => pair.trim())
    .filter((pair) => pair !== '' && !OWN_COOKIE_NAME.test(pair))
    .join('; ');
}
