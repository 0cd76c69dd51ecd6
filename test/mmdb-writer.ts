import { isIPv4 } from 'node:net';

/**
 * A minimal MaxMind DB (MMDB v2) writer for tests: IPv6 tree (IPv4 networks under ::/96, where readers
 * look for them), 32-bit records, maps/strings/doubles/uints/booleans/arrays. Enough to build a small
 * geo-IP or ASN database with exactly the networks a test needs; the product only reads MMDB files
 * (with the `maxmind` package). Format: https://maxmind.github.io/MaxMind-DB/
 */

type Value = string | number | boolean | Value[] | { [k: string]: Value };
interface TreeNode {
  kids: [TreeNode | Value | undefined, TreeNode | Value | undefined];
}

function ctrl(type: number, size: number): Buffer {
  const extended = type > 7;
  const first = (extended ? 0 : type) << 5;
  const parts: number[] = [];
  let sizeBits: number;
  const extra: number[] = [];
  if (size < 29) sizeBits = size;
  else if (size < 29 + 256) {
    sizeBits = 29;
    extra.push(size - 29);
  } else {
    sizeBits = 30;
    const v = size - 285;
    extra.push((v >> 8) & 0xff, v & 0xff);
  }
  parts.push(first | sizeBits);
  if (extended) parts.push(type - 7);
  return Buffer.from([...parts, ...extra]);
}

function uint(type: number, v: number | bigint): Buffer {
  let hex = BigInt(v).toString(16);
  if (hex === '0') return ctrl(type, 0);
  if (hex.length % 2) hex = `0${hex}`;
  const bytes = Buffer.from(hex, 'hex');
  return Buffer.concat([ctrl(type, bytes.length), bytes]);
}

function encode(v: Value): Buffer {
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([ctrl(2, b.length), b]);
  }
  if (typeof v === 'boolean') return ctrl(14, v ? 1 : 0);
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0 && v < 2 ** 32) return uint(6, v);
    const b = Buffer.alloc(8);
    b.writeDoubleBE(v);
    return Buffer.concat([ctrl(3, 8), b]);
  }
  if (Array.isArray(v)) return Buffer.concat([ctrl(11, v.length), ...v.map(encode)]);
  const entries = Object.entries(v);
  return Buffer.concat([ctrl(7, entries.length), ...entries.flatMap(([k, x]) => [encode(k), encode(x)])]);
}

function bitsOf(cidr: string): number[] {
  const [ip, lenText] = cidr.split('/') as [string, string | undefined];
  const bits: number[] = [];
  if (isIPv4(ip)) {
    for (let i = 0; i < 96; i++) bits.push(0);
    for (const part of ip.split('.')) for (let b = 7; b >= 0; b--) bits.push((Number(part) >> b) & 1);
    return bits.slice(0, 96 + Number(lenText ?? 32));
  }
  // IPv6: expand ::
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  for (const g of groups) {
    const n = Number.parseInt(g || '0', 16);
    for (let b = 15; b >= 0; b--) bits.push((n >> b) & 1);
  }
  return bits.slice(0, Number(lenText ?? 128));
}

/** Builds an MMDB file's bytes from `{ cidr: record }`. */
export function buildMmdb(networks: Record<string, Value>, databaseType = 'Portcullis-Test'): Buffer {
  const root: TreeNode = { kids: [undefined, undefined] };
  for (const [cidr, record] of Object.entries(networks)) {
    const bits = bitsOf(cidr);
    let node = root;
    for (let i = 0; i < bits.length - 1; i++) {
      const b = bits[i] as 0 | 1;
      let next = node.kids[b];
      if (next === undefined || !(typeof next === 'object' && next !== null && 'kids' in next)) {
        next = { kids: [undefined, undefined] };
        node.kids[b] = next;
      }
      node = next as TreeNode;
    }
    node.kids[bits[bits.length - 1] as 0 | 1] = record;
  }
  // Number the nodes breadth-first; encode each record once.
  const nodes: TreeNode[] = [];
  const queue: TreeNode[] = [root];
  while (queue.length) {
    const n = queue.shift() as TreeNode;
    nodes.push(n);
    for (const k of n.kids) if (k && typeof k === 'object' && 'kids' in k) queue.push(k as TreeNode);
  }
  const index = new Map(nodes.map((n, i) => [n, i]));
  const dataParts: Buffer[] = [];
  const dataOffset = new Map<Value, number>();
  let offset = 0;
  const recordValue = (k: TreeNode | Value | undefined): number => {
    if (k === undefined) return nodes.length;
    if (typeof k === 'object' && k !== null && 'kids' in k) return index.get(k as TreeNode) as number;
    let at = dataOffset.get(k as Value);
    if (at === undefined) {
      const enc = encode(k as Value);
      at = offset;
      dataOffset.set(k as Value, at);
      dataParts.push(enc);
      offset += enc.length;
    }
    return nodes.length + 16 + at;
  };
  const tree = Buffer.alloc(nodes.length * 8);
  nodes.forEach((n, i) => {
    tree.writeUInt32BE(recordValue(n.kids[0]), i * 8);
    tree.writeUInt32BE(recordValue(n.kids[1]), i * 8 + 4);
  });
  const metadata = encode({
    node_count: nodes.length,
    record_size: 32,
    ip_version: 6,
    database_type: databaseType,
    languages: ['en'],
    binary_format_major_version: 2,
    binary_format_minor_version: 0,
    build_epoch: 1_700_000_000,
    description: { en: 'test database' },
  });
  return Buffer.concat([
    tree,
    Buffer.alloc(16),
    ...dataParts,
    Buffer.from([0xab, 0xcd, 0xef]),
    Buffer.from('MaxMind.com'),
    metadata,
  ]);
}
