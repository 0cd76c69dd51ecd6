import { PortcullisError } from '../../core/index.js';
import { canonicalizeTarget } from '../canonical-target.js';
import { clientAddress } from '../client-address.js';
import type { Gateway, RequestContext } from '../context.js';
import { canonicalHost } from '../route-table.js';

const ABSOLUTE_FORM = /^https?:\/\//i;
/**
 * `uri-host [":" port]` (RFC 9112 §3.2) as hosts are really named: DNS labels (underscores allowed), IPv4
 * or a bracketed IPv6 literal. No userinfo, path, list or whitespace: Host becomes X-Forwarded-Host.
 */
const AUTHORITY = /^(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?$/;

/**
 * Step 1: one canonical host and target for everything after; ambiguous targets are a 400. A second
 * Host header, or one that is not a plain `host[:port]`, is refused; an absolute-form target
 * (`GET http://host/path`) supplies the host itself (RFC 9112 §3.2.2) and must carry a plain authority
 * too (no userinfo). Behind trusted proxies, the client address comes from
 * their X-Forwarded-For and the scheme from their X-Forwarded-Proto.
 */
export function canonicalize(gw: Gateway, ctx: RequestContext): void {
  const raw = ctx.req.rawHeaders;
  let hosts = 0;
  let credentials = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') hosts += 1;
    else if (
      (name.length === 13 && name.toLowerCase() === 'authorization') ||
      (name.length === 9 && name.toLowerCase() === 'x-api-key')
    )
      credentials += 1;
  }
  if (hosts > 1)
    throw new PortcullisError('bad_request', { message: 'The request has more than one Host header.' });
  // node:http keeps the first Authorization and drops the rest; a proxy in front may keep the last. Two
  // credentials in one request are ambiguous: refused, like two Hosts.
  if (credentials > 1)
    throw new PortcullisError('bad_request', {
      message: 'The request carries more than one credential header (Authorization, X-API-Key).',
    });
  const url = ctx.req.url ?? '';
  if (ABSOLUTE_FORM.test(url)) {
    const start = url.indexOf('//') + 2;
    let end = start;
    while (end < url.length && url[end] !== '/' && url[end] !== '?') end += 1;
    const authority = url.slice(start, end);
    if (!AUTHORITY.test(authority)) {
      throw new PortcullisError('invalid_path', { detail: 'absolute-form target without a plain authority' });
    }
    ctx.host = canonicalHost(authority);
    ctx.authority = authority.toLowerCase();
    const rest = url.slice(end);
    ctx.target = canonicalizeTarget(rest.startsWith('/') ? rest : `/${rest}`);
  } else {
    const host = ctx.req.headers.host;
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 (HTTP/1.0 may leave it out).
    if (host === undefined && ctx.req.httpVersionMajor === 1 && ctx.req.httpVersionMinor >= 1)
      throw new PortcullisError('bad_request', { message: 'The request has no Host header.' });
    // An empty Host is allowed (RFC 9112 §3.2, a target without authority); an invalid one is not.
    if (host !== undefined && host !== '' && !AUTHORITY.test(host))
      throw new PortcullisError('bad_request', { message: 'The Host header is invalid.' });
    ctx.host = canonicalHost(host);
    ctx.target = canonicalizeTarget(url);
  }
  const client = clientAddress(gw, ctx);
  ctx.ip = client.ip;
  ctx.forwardedFor = client.chain;
  // Behind a TLS-terminating proxy we trust, the scheme the client used is the one it says.
  if (gw.isTrustedProxy(ctx.peerIp)) {
    const proto = ctx.req.headers['x-forwarded-proto'];
    if (proto === 'https' || proto === 'http') ctx.scheme = proto;
  }
}
