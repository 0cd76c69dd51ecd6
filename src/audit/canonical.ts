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
  // A value already in canonical form (every object's members in order, only JSON types) is what
  // JSON.stringify writes byte for byte: the native serializer is about twice as fast as building the
  // string here, and the gateway's decision record, written for every request, is built that way.
  return value !== undefined && inCanonicalOrder(value, 0) ? JSON.stringify(value) : serialize(value);
}

/**
 * Whether JSON.stringify(value) is its RFC 8785 form: plain objects whose own enumerable members are
 * in code-unit order (integer-like names are listed first by the engine, so an object where that
 * breaks the order is not), arrays, strings, finite numbers, booleans and null, with `undefined`
 * members (skipped by both). Anything else (a Date or other object with `toJSON`, a class instance, a
 * non-finite number, a bigint, deep nesting) goes to the serializer below, which sorts or refuses.
 */
function inCanonicalOrder(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
    case 'undefined':
      return true;
    case 'number':
      return Number.isFinite(value);
    case 'object': {
      if (value === null) return true;
      if (depth > MAX_FAST_DEPTH) return false;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) if (!inCanonicalOrder(value[i], depth + 1)) return false;
        return true;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return false;
      const obj = value as Record<string, unknown>;
      let prev: string | undefined;
      // for…in walks own members in Object.keys order without allocating the array (the prototype is
      // Object.prototype or null: anything enumerable on Object.prototype comes after the own members and
      // at worst fails the check, which only sends the value to the sorting serializer).
      for (const k in obj) {
        if (prev !== undefined && prev >= k) return false;
        prev = k;
        if (!inCanonicalOrder(obj[k], depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

const MAX_FAST_DEPTH = 32;

function serialize(value: unknown): string {
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
          out += v === undefined ? 'null' : serialize(v);
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
        out += `${JSON.stringify(k)}:${serialize(v)}`;
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
