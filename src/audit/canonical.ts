/**
 * RFC 8785 JSON Canonicalization Scheme (JCS) serializer for the JSON values our events contain.
 *
 * Object members are sorted by their UTF-16 code units (what JS string comparison does), strings and
 * numbers are serialized exactly as ECMAScript's JSON.stringify does (which is what RFC 8785 specifies),
 * and values JSON cannot represent are refused instead of silently dropped.
 *
 * @example
 * canonicalJson({ b: 1, a: [true, null] }) // '{"a":[true,null],"b":1}'
 */
export function canonicalJson(value: unknown): string {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
      return JSON.stringify(value);
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ',';
          const v: unknown = value[i];
          out += v === undefined ? 'null' : canonicalJson(v);
        }
        return `${out}]`;
      }
      const obj = value as Record<string, unknown>;
      let out = '{';
      let first = true;
      for (const k of sortedKeys(obj)) {
        const v = obj[k];
        if (v === undefined) continue;
        out += first ? '' : ',';
        first = false;
        out += `${JSON.stringify(k)}:${canonicalJson(v)}`;
      }
      return `${out}}`;
    }
    default:
      throw new TypeError(`canonicalJson: cannot serialize a ${typeof value}`);
  }
}

/**
 * Sorted member names, memoized by the object's own key list: records of one kind (a gateway decision,
 * a login event) share their shape, so the sort runs once per shape instead of once per record.
 */
const sortedByShape = new Map<string, readonly string[]>();
const MAX_SHAPES = 1024;

function sortedKeys(obj: Record<string, unknown>): readonly string[] {
  const keys = Object.keys(obj);
  if (keys.length < 2) return keys;
  // Records built with their members already in order (the gateway's decision record) need no lookup.
  let inOrder = true;
  for (let i = 1; i < keys.length; i++) {
    if ((keys[i - 1] as string) >= (keys[i] as string)) {
      inOrder = false;
      break;
    }
  }
  if (inOrder) return keys;
  const shape = keys.join('\u0000');
  let sorted = sortedByShape.get(shape);
  if (sorted === undefined) {
    sorted = [...keys].sort();
    if (sortedByShape.size >= MAX_SHAPES) sortedByShape.clear();
    sortedByShape.set(shape, sorted);
  }
  return sorted;
}
