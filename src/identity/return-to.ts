import { PortcullisError } from '../core/index.js';

/**
 * Where a browser may be sent after a sign-in (`return_to`): a path on `origin`, or a URL on one of
 * `allowedOrigins` — never an open redirect. Control characters are refused anywhere (browsers drop
 * tabs and newlines: `/\t/evil` becomes `//evil`), so are scheme-relative (`//evil`, `/\evil`) and
 * non-HTTP(S) URLs (`javascript:`), and paths whose dot-segments resolve to `//` (`/.//evil`). The
 * answer is normalized (percent-encoded), safe for `Location`. Throws `bad_request` naming what is wrong.
 *
 * @example
 * safeReturnTo('/app?x=1', 'https://gw.example', new Set()); // '/app?x=1'
 * safeReturnTo('//evil.example', 'https://gw.example', new Set()); // throws bad_request
 */
export function safeReturnTo(value: string, origin: string, allowedOrigins: ReadonlySet<string>): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  if (/[\x00-\x1f\x7f]/.test(value))
    throw new PortcullisError('bad_request', { message: 'return_to must not contain control characters' });
  const base = new URL(origin);
  if (value.startsWith('/') && !value.startsWith('//') && !value.startsWith('/\\')) {
    // Resolved, it must stay on our origin, and stay a path: `/.//evil` resolves to `//evil`.
    const url = new URL(value, base);
    const path = `${url.pathname}${url.search}${url.hash}`;
    if (url.origin === base.origin && !path.startsWith('//')) return path;
    throw new PortcullisError('bad_request', { message: 'return_to must stay on this origin' });
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new PortcullisError('bad_request', { message: 'return_to must be a path or an allowed URL' });
  }
  if (
    (url.protocol !== 'https:' && url.protocol !== 'http:') ||
    (url.origin !== base.origin && !allowedOrigins.has(url.origin))
  )
    throw new PortcullisError('bad_request', {
      message: 'return_to points at an origin that is not allowed',
    });
  return url.href;
}
