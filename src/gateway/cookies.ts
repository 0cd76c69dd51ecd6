/**
 * Every value of cookie `name` in a `Cookie` header (RFC 6265 §5.4: `name=value` pairs joined by `;`).
 *
 * @example
 * cookieValues('a=1; b=2; a=3', 'a'); // ['1', '3']
 */
export function cookieValues(header: string | undefined, name: string): string[] {
  const out: string[] = [];
  if (header === undefined || !header.includes(name)) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) out.push(part.slice(eq + 1).trim());
  }
  return out;
}

/** The first value of cookie `name`, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  return cookieValues(header, name)[0];
}

/**
 * A `Set-Cookie` value for one of the gateway's own cookies: always HttpOnly and Secure; `Max-Age=0`
 * clears it.
 */
export function setCookie(
  name: string,
  value: string,
  o: { path: string; maxAgeSec: number; sameSite: 'Strict' | 'Lax' },
): string {
  return `${name}=${value}; Path=${o.path}; Max-Age=${Math.max(0, Math.floor(o.maxAgeSec))}; HttpOnly; Secure; SameSite=${o.sameSite}`;
}
