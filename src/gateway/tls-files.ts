import { constants, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import type { SecureContextOptions } from 'node:tls';

/** The gateway's HTTPS certificate, key and (optional) client CA bundle, as read from their files. */
export interface GatewayTls {
  readonly cert: string;
  readonly key: string;
  readonly clientCa?: string;
}

/** Longest TLS session (resumption) lifetime, seconds; never longer than the certificate has left. */
const MAX_SESSION_SEC = 300;

/**
 * Reads the certificate files and checks that the key belongs to the leaf — an agent replaces key and
 * certificate one after the other, and a half-written pair must never be served.
 */
export function readGatewayTls(files: {
  cert: string;
  key: string;
  clientCa?: string | undefined;
}): GatewayTls {
  const cert = readFileSync(files.cert, 'utf8');
  const key = readFileSync(files.key, 'utf8');
  const leaf = new X509Certificate(cert);
  if (!leaf.checkPrivateKey(createPrivateKey(key)))
    throw new Error(`${files.key} does not belong to the certificate in ${files.cert}`);
  return { cert, key, ...(files.clientCa ? { clientCa: readFileSync(files.clientCa, 'utf8') } : {}) };
}

/**
 * The secure-context options of the gateway's listener: TLS 1.2+, client certificates requested (and
 * verified by the pipeline with the SPIFFE rules, on every new connection: no resumption then) when a
 * client CA is set, and TLS sessions that never outlive the certificate.
 */
export function gatewaySecureContext(
  t: GatewayTls,
  now = Date.now(),
): SecureContextOptions & {
  requestCert?: boolean;
  rejectUnauthorized?: boolean;
} {
  const left = Math.floor((Date.parse(new X509Certificate(t.cert).validTo) - now) / 1000);
  return {
    cert: t.cert,
    key: t.key,
    minVersion: 'TLSv1.2',
    sessionTimeout: Math.max(1, Math.min(MAX_SESSION_SEC, left)),
    // With client certificates, no session resumption (no tickets; node:tls keeps no server-side session
    // cache): a resumed session shows the server only the leaf, not the chain it was verified with, so a
    // gateway whose peer cache is empty (after a reload, or once the leaf was evicted) could not verify
    // it again, and a certificate revoked since the session began would ride on it.
    ...(t.clientCa
      ? {
          ca: t.clientCa,
          requestCert: true,
          rejectUnauthorized: false,
          secureOptions: constants.SSL_OP_NO_TICKET,
        }
      : {}),
  };
}

/**
 * Calls `onChange` (debounced) when any of the files changes — polled, so an atomic rename by an agent
 * is seen like an in-place write. Returns the function that stops watching.
 */
export function watchFiles(paths: readonly string[], onChange: () => void, intervalMs = 1000): () => void {
  let timer: NodeJS.Timeout | undefined;
  const listener = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(onChange, 100);
    timer.unref();
  };
  for (const p of paths) watchFile(p, { interval: intervalMs, persistent: false }, listener);
  return () => {
    if (timer) clearTimeout(timer);
    for (const p of paths) unwatchFile(p, listener);
  };
}
