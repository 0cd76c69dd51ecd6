import { isIPv4, isIPv6 } from 'node:net';

interface Node {
  zero?: Node;
  one?: Node;
  /** A network ends here: every address below matches. */
  end?: true;
}

/** The bits of an address (IPv4: 32, IPv6: 128), most significant first, without allocation per bit. */
function bytesOf(ip: string): Uint8Array | undefined {
  if (isIPv4(ip)) return Uint8Array.from(ip.split('.').map(Number));
  if (!isIPv6(ip)) return undefined;
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = (v4[1] as string).split('.').map(Number);
    text = `${text.slice(0, -(v4[1] as string).length)}${(((b[0] as number) << 8) | (b[1] as number)).toString(16)}:${(((b[2] as number) << 8) | (b[3] as number)).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const n = Number.parseInt(g || '0', 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  });
  return out;
}

/**
 * A set of IPv4 and IPv6 networks in two binary tries: `has(ip)` walks at most one node per prefix bit
 * (32 or 128), whatever the number of networks. An IPv4-mapped IPv6 address matches the IPv4 networks.
 *
 * @example
 * const set = new PrefixSet(); set.add('203.0.113.0/24'); set.has('203.0.113.9'); // true
 */
export class PrefixSet {
  readonly #v4: Node = {};
  readonly #v6: Node = {};
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Adds `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `prefix/n`; returns false for something else. */
  add(cidr: string): boolean {
    const [ip, lenText] = cidr.trim().split('/') as [string, string | undefined];
    const bytes = bytesOf(ip);
    if (!bytes) return false;
    const max = bytes.length * 8;
    const len = lenText === undefined ? max : Number(lenText);
    if (!Number.isInteger(len) || len < 0 || len > max) return false;
    let node = bytes.length === 4 ? this.#v4 : this.#v6;
    for (let i = 0; i < len; i++) {
      if (node.end) return true; // a broader network already covers it
      const bit = ((bytes[i >> 3] as number) >> (7 - (i & 7))) & 1;
      const key = bit ? 'one' : 'zero';
      node[key] ??= {};
      node = node[key] as Node;
    }
    node.end = true;
    delete node.zero;
    delete node.one;
    this.#size++;
    return true;
  }

  has(ip: string): boolean {
    let bytes = bytesOf(ip);
    if (!bytes) return false;
    // ::ffff:a.b.c.d is the IPv4 address a.b.c.d.
    if (
      bytes.length === 16 &&
      bytes.slice(0, 10).every((b) => b === 0) &&
      bytes[10] === 0xff &&
      bytes[11] === 0xff
    )
      bytes = bytes.slice(12);
    let node: Node | undefined = bytes.length === 4 ? this.#v4 : this.#v6;
    const bits = bytes.length * 8;
    for (let i = 0; node !== undefined; i++) {
      if (node.end) return true;
      if (i === bits) return false;
      node = ((bytes[i >> 3] as number) >> (7 - (i & 7))) & 1 ? node.one : node.zero;
    }
    return false;
  }
}
