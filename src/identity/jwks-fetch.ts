import { z } from 'zod';

/** Limits on one fetch of an issuer's metadata or key set. */
export interface FetchLimits {
  timeoutMs: number;
  maxBytes: number;
  /** Allow http:// (loopback tests and labs only). */
  allowInsecure: boolean;
}

export interface FetchedJson {
  body: unknown;
  /** `Cache-Control: max-age` in seconds (0 for `no-store`/`no-cache`), when the response gave one. */
  maxAgeSec: number | undefined;
}

/**
 * GETs a JSON document: https only (unless `allowInsecure`), redirects refused (a redirect could
 * downgrade the scheme or leave the issuer's host), status 200, at most `maxBytes`, within `timeoutMs`
 * (headers and body together). Throws an `Error` naming the URL and what went wrong.
 */
export async function fetchJson(url: URL, limits: FetchLimits): Promise<FetchedJson> {
  assertScheme(url, limits.allowInsecure);
  const res = await fetch(url, {
    signal: AbortSignal.timeout(limits.timeoutMs),
    redirect: 'error',
    headers: { accept: 'application/json, application/jwk-set+json' },
  });
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new Error(`${url.href} answered HTTP ${res.status}`);
  }
  const announced = Number(res.headers.get('content-length') ?? Number.NaN);
  if (announced > limits.maxBytes) {
    await res.body?.cancel();
    throw new Error(`${url.href} sent more than ${limits.maxBytes} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      size += chunk.byteLength;
      if (size > limits.maxBytes) throw new Error(`${url.href} sent more than ${limits.maxBytes} bytes`);
      chunks.push(chunk);
    }
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new Error(`${url.href} did not send JSON`);
  }
  return { body, maxAgeSec: maxAge(res.headers.get('cache-control')) };
}

function maxAge(cacheControl: string | null): number | undefined {
  if (cacheControl === null) return undefined;
  if (/(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|$)/i.test(cacheControl)) return 0;
  const m = /(?:^|,)\s*max-age\s*=\s*"?(\d{1,10})"?\s*(?:,|$)/i.exec(cacheControl);
  return m ? Number(m[1]) : undefined;
}

function assertScheme(url: URL, allowInsecure: boolean): void {
  if (url.protocol === 'https:' || (allowInsecure && url.protocol === 'http:')) return;
  throw new Error(`${url.href}: https is required (allowInsecure permits http for tests)`);
}

const discoveryDocument = z.looseObject({ issuer: z.string(), jwks_uri: z.string() });

/** Where an issuer's OpenID discovery document is: `<issuer>/.well-known/openid-configuration`. */
export function discoveryUrlOf(issuer: string): URL {
  return new URL(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
}

/**
 * Reads an OpenID Provider's discovery document (OpenID Connect Discovery 1.0 §4) and returns its
 * `jwks_uri`, after checking that the document's `issuer` is exactly the configured one (§4.3: a
 * document for another issuer must not be used) and that the key set URL is https.
 */
export async function discoverJwksUri(discoveryUrl: URL, issuer: string, limits: FetchLimits): Promise<URL> {
  const { body } = await fetchJson(discoveryUrl, limits);
  const doc = discoveryDocument.safeParse(body);
  if (!doc.success) throw new Error(`${discoveryUrl.href}: not a discovery document (issuer, jwks_uri)`);
  if (doc.data.issuer !== issuer)
    throw new Error(
      `${discoveryUrl.href}: the document's issuer ${JSON.stringify(doc.data.issuer)} is not ${JSON.stringify(issuer)}`,
    );
  let jwksUri: URL;
  try {
    jwksUri = new URL(doc.data.jwks_uri);
  } catch {
    throw new Error(`${discoveryUrl.href}: jwks_uri is not a URL`);
  }
  assertScheme(jwksUri, limits.allowInsecure);
  return jwksUri;
}
