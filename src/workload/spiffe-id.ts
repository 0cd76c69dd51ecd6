/** A parsed SPIFFE ID: `spiffe://<trust domain><path>`. */
export interface SpiffeId {
  readonly trustDomain: string;
  /** `''` for the trust domain itself, else `/seg/seg…`. */
  readonly path: string;
  readonly toString: () => string;
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

/**
 * Parses and validates a SPIFFE ID exactly as the SPIFFE-ID specification (§2) says: scheme `spiffe`
 * (lower case), a trust domain of lower-case letters, digits, `.`, `-`, `_` (no port, no user info, no
 * percent-encoding), a path of segments of letters, digits, `.`, `-`, `_` — no empty, `.` or `..`
 * segments, no trailing slash, no query or fragment; at most 2048 bytes. Throws with the rule broken.
 *
 * @example
 * parseSpiffeId('spiffe://prod.example/ns/billing/sa/worker').trustDomain // 'prod.example'
 */
export function parseSpiffeId(id: string): SpiffeId {
  const fail = (why: string): never => {
    throw new Error(`invalid SPIFFE ID ${JSON.stringify(id.slice(0, 100))}: ${why}`);
  };
  if (Buffer.byteLength(id, 'utf8') > 2048) fail('longer than 2048 bytes');
  if (!id.startsWith('spiffe://')) fail('scheme must be "spiffe://" (lower case)');
  const rest = id.slice('spiffe://'.length);
  if (/[?#]/.test(rest)) fail('query and fragment are not allowed');
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (trustDomain === '') fail('the trust domain is empty');
  if (!TRUST_DOMAIN.test(trustDomain))
    fail('the trust domain may only hold a-z 0-9 . - _ (no port, no user info)');
  if (path !== '') {
    const segments = path.slice(1).split('/');
    for (const s of segments) {
      if (s === '') fail(path.endsWith('/') ? 'trailing slash' : 'empty path segment');
      if (s === '.' || s === '..') fail('"." and ".." segments are not allowed');
      if (!SEGMENT.test(s)) fail('path segments may only hold A-Z a-z 0-9 . - _');
    }
  }
  const text = `spiffe://${trustDomain}${path}`;
  return { trustDomain, path, toString: () => text };
}

export function isSpiffeId(id: string): boolean {
  try {
    parseSpiffeId(id);
    return true;
  } catch {
    return false;
  }
}
