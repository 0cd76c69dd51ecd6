import { BlockList, isIPv4 } from 'node:net';

/**
 * Compiles the trusted-proxy CIDRs once into a `BlockList` (Node's own prefix matcher); the returned
 * check is what the hot path calls. IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) match IPv4 entries.
 */
export function compileTrustedProxies(cidrs: readonly string[]): (ip: string) => boolean {
  if (cidrs.length === 0) return () => false;
  const list = new BlockList();
  for (const c of cidrs) {
    const [addr = '', bits] = c.split('/');
    const type = isIPv4(addr) ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return (ip) => {
    const v4 = ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
    return list.check(v4, isIPv4(v4) ? 'ipv4' : 'ipv6');
  };
}
