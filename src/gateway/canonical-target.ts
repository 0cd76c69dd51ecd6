import { PortcullisError } from '../core/index.js';

/** The one canonical form of a request target: what routing, policy, the assertion and the upstream see. */
export interface CanonicalTarget {
  /** Absolute path: percent-encoded unreserved characters decoded, dot-segments removed, `//` merged. */
  readonly path: string;
  /** The query string including its leading `?`, or `''`. Forwarded as received. */
  readonly query: string;
}

/** Characters allowed raw in a path: RFC 3986 pchar plus `/` and `%` (which is checked separately). */
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;
/** A path that needs no work: no percent-encodings, no `//`, no dot-segments. */
const SIMPLE_PATH = /^(?:\/(?:[A-Za-z0-9\-_~!$&'()*+,=:@]|\.(?![./;]|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]*)*\/?$/;
/** Control characters, space, `#`, DEL and non-ASCII are never valid in a query. */
const BAD_QUERY = /[^!"$-~]/;
const UNRESERVED = /[A-Za-z0-9\-._~]/;
/** Where a segment's path parameters start: `;`, or `;` still percent-encoded. */
const PARAMS = /;|%3B/;

const bad = (detail: string) => new PortcullisError('invalid_path', { detail });

/**
 * Canonicalizes an origin-form request target once, at the edge. Ambiguous or dangerous encodings are
 * rejected (400 `invalid_path`) instead of guessed at: encoded `/` (`%2F`), `\` (raw or `%5C`), NUL and
 * other control characters, malformed or non-UTF-8 percent-encodings, fragments, and any target that is
 * not origin-form.
 *
 * @example
 * canonicalizeTarget('/api/orders/%2e%2e//admin?x=1') // { path: '/api/admin', query: '?x=1' }
 */
export function canonicalizeTarget(raw: string): CanonicalTarget {
  if (raw.length === 0 || raw.charCodeAt(0) !== 0x2f /* / */) {
    throw bad('request target is not origin-form');
  }
  const q = raw.indexOf('?');
  const rawPath = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : raw.slice(q);
  if (query !== '' && BAD_QUERY.test(query)) throw bad('query contains forbidden characters');
  if (SIMPLE_PATH.test(rawPath)) return { path: rawPath, query };
  if (!PATH_CHARS.test(rawPath)) throw bad('path contains forbidden characters');
  const decoded = rawPath.includes('%') ? normalizePercent(rawPath) : rawPath;
  return { path: removeDotSegments(decoded), query };
}

/** Decodes %XX of unreserved characters, upper-cases the rest, rejects what must never be decoded. */
function normalizePercent(path: string): string {
  let out = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i] as string;
    if (c !== '%') {
      out += c;
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw bad('malformed percent-encoding');
    const byte = Number.parseInt(hex, 16);
    if (byte === 0x2f) throw bad('encoded slash (%2F) in path');
    if (byte === 0x5c) throw bad('encoded backslash (%5C) in path');
    if (byte < 0x20 || byte === 0x7f) throw bad('encoded control character in path');
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
    i += 2;
  }
  if (out.includes('%')) {
    try {
      decodeURIComponent(out); // throws on invalid or overlong UTF-8
    } catch {
      throw bad('percent-encoding is not valid UTF-8');
    }
  }
  return out;
}

/** RFC 3986 §5.2.4 on a path whose empty segments are merged; `..` never climbs above the root. */
function removeDotSegments(path: string): string {
  const segments = path.split('/');
  const out: string[] = [];
  let trailingSlash = false;
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i] as string;
    const last = i === segments.length - 1;
    if (s === '' || s === '.') {
      trailingSlash = last;
    } else if (s === '..') {
      out.pop();
      trailingSlash = last;
    } else {
      // A dot-segment with path parameters (`..;x`, `.;`, `..%3B`) is `..`/`.` to Tomcat, Jetty and
      // Spring, which strip parameters before resolving: refuse it rather than pass it on.
      const head = s.split(PARAMS)[0];
      if (head === '.' || head === '..') throw bad('dot-segment with path parameters');
      out.push(s);
      trailingSlash = false;
    }
  }
  const joined = `/${out.join('/')}`;
  return trailingSlash && out.length > 0 ? `${joined}/` : joined;
}
