import type { Gateway, RequestContext } from './context.js';

/**
 * Who the client is, believing forwarding headers only from trusted proxies: with the peer trusted,
 * X-Forwarded-For is walked from the right, skipping trusted hops, and the first untrusted address is
 * the client; otherwise the peer is the client and any inbound X-Forwarded-For is ignored. Returns the
 * client address and the chain to send upstream (the trusted part of the inbound chain + the peer).
 */
export function clientAddress(gw: Gateway, ctx: RequestContext): { ip: string; chain: string } {
  const peer = ctx.peerIp;
  if (!gw.isTrustedProxy(peer)) return { ip: peer, chain: peer };
  const header = ctx.req.headers['x-forwarded-for'];
  if (typeof header !== 'string' || header === '') return { ip: peer, chain: peer };
  const hops = header
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '');
  let i = hops.length - 1;
  while (i > 0 && gw.isTrustedProxy(hops[i] as string)) i -= 1;
  const ip = hops[i] ?? peer;
  return { ip, chain: [...hops.slice(i), peer].join(', ') };
}
