import { createPublicKey } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type * as X509 from '@peculiar/x509';
import type { AuditWriter } from '../audit/index.js';
import { type Clock, type Logger, randomToken, sha256b64url } from '../core/index.js';
import type { Store } from '../store/index.js';
import { newKeyAndCsr, type WorkloadCa } from './ca.js';
import { isDeviceId, isReservedId } from './peer.js';
import { parseSpiffeId } from './spiffe-id.js';
import { SvidError, verifySvid } from './svid.js';
import { loadX509, x509 } from './x509.js';

/** The workload API's own SVID lives a day and is renewed at half-life. */
const OWN_TTL_MS = 24 * 3_600_000;
const MAX_BODY = 16 * 1024;

export interface WorkloadServerOptions {
  /** The CA (reloaded when it rotates). */
  ca: () => Promise<WorkloadCa>;
  store: Store;
  audit: AuditWriter;
  clock: Clock;
  log: Logger;
  svidTtlMs: number;
  /** Serials refused at renewal and for JWT-SVIDs (emergency revocation). */
  deniedSerials?: () => ReadonlySet<string>;
  /** Mints a JWT-SVID (`POST /v1/jwt-svid`), when configured. */
  jwtSvid?: (spiffeId: string, audience: string) => Promise<{ token: string; expiresAt: number }>;
}

/** Creates a one-time join token bound to `spiffeId`; returns the token (shown once; stored hashed). */
export async function createJoinToken(
  store: Store,
  ca: WorkloadCa,
  spiffeId: string,
  ttlMs: number,
  now = Date.now(),
): Promise<string> {
  const id = parseSpiffeId(spiffeId);
  if (id.trustDomain !== ca.trustDomain)
    throw new Error(`${spiffeId} is not in this CA's trust domain (${ca.trustDomain})`);
  if (id.path === '') throw new Error('a join token needs a SPIFFE ID with a path');
  if (isDeviceId(id.toString()))
    throw new Error('device IDs (…/device/…) are issued by device enrolment, not join tokens');
  if (isReservedId(id.toString())) throw new Error("the workload API's own ID is not for join tokens");
  const token = randomToken(32);
  await store.joinTokens.create(sha256b64url(token), id.toString(), now + ttlMs, now);
  return token;
}

/** The trust bundle as a SPIFFE bundle document (JWK set: x509-svid authorities, sequence, refresh hint). */
export function spiffeBundle(
  roots: readonly X509.X509Certificate[],
  sequence: number,
  refreshHintSec: number,
): Record<string, unknown> {
  return {
    keys: roots.map((r) => ({
      ...(createPublicKey({ key: Buffer.from(r.publicKey.rawData), format: 'der', type: 'spki' }).export({
        format: 'jwk',
      }) as Record<string, unknown>),
      use: 'x509-svid',
      x5c: [Buffer.from(r.rawData).toString('base64')],
    })),
    spiffe_sequence: sequence,
    spiffe_refresh_hint: refreshHintSec,
  };
}

/** The certificates a TLS peer presented, leaf first, as parsed X.509 objects. */
function peerChain(socket: TLSSocket): X509.X509Certificate[] {
  const out: X509.X509Certificate[] = [];
  let cert = socket.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: unknown } | undefined;
  const seen = new Set<unknown>();
  while (cert?.raw && !seen.has(cert)) {
    seen.add(cert);
    out.push(new x509.X509Certificate(new Uint8Array(cert.raw)));
    cert = cert.issuerCertificate as typeof cert;
  }
  return out;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(c as Buffer);
  }
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error();
    return v as Record<string, unknown>;
  } catch {
    throw Object.assign(new Error('the body must be a JSON object'), { status: 400 });
  }
}

/**
 * The workload API, over TLS with the CA's own server SVID: `POST /v1/svid` (first issuance, authorised by
 * a one-time join token bound to a SPIFFE ID), `POST /v1/svid/renew` (authorised by the caller's current,
 * still-valid X.509-SVID presented as its TLS client certificate — the new SVID has the same ID), and
 * `GET /v1/bundle` (the SPIFFE bundle document). The CA decides every SAN; a CSR only contributes its key.
 */
export async function createWorkloadServer(
  o: WorkloadServerOptions,
): Promise<Server & { renewOwn(): Promise<void> }> {
  await loadX509();
  /** The server's own SVID: spiffe://<td>/portcullis/workload-api, from a fresh key; renewed at half-life. */
  const ownSvid = async () => {
    const ca = await o.ca();
    const { csr, keyPem: key } = await newKeyAndCsr('workload-api');
    const own = await ca.issue(
      csr,
      `spiffe://${ca.trustDomain}/portcullis/workload-api`,
      OWN_TTL_MS,
      o.clock.now(),
    );
    return {
      context: {
        key,
        cert: own.chain,
        ca: ca.roots.map((r) => r.toString('pem')).join('\n'),
      },
      renewAt: o.clock.now() + OWN_TTL_MS / 2,
    };
  };
  let own = await ownSvid();
  const rootsPem = async () => (await o.ca()).roots.map((r) => r.toString('pem')).join('\n');

  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };
  const fail = (res: ServerResponse, status: number, code: string, message: string) =>
    send(res, status, { error: { code, message } });

  /** Issues an SVID for `spiffeId` from the body's CSR, audits it, and answers it with the bundle. */
  const issueAndAnswer = async (
    res: ServerResponse,
    csrPem: unknown,
    spiffeId: string,
    via: 'join_token' | 'renewal',
  ) => {
    if (typeof csrPem !== 'string') throw Object.assign(new Error('csr (PEM) is required'), { status: 400 });
    let out: Awaited<ReturnType<WorkloadCa['issue']>>;
    try {
      out = await (await o.ca()).issue(csrPem, spiffeId, o.svidTtlMs, o.clock.now());
    } catch (err) {
      throw Object.assign(new Error((err as Error).message), { status: 400 });
    }
    await o.audit.write(
      { type: 'ca.svid_issued', data: { spiffeId, via, notAfter: out.notAfter.toISOString() } },
      'durable',
    );
    send(res, 200, {
      spiffe_id: spiffeId,
      svid: out.chain,
      bundle: await rootsPem(),
      expires_at: out.notAfter.toISOString(),
    });
  };

  const server = createServer(
    {
      ...own.context,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    },
    (req, res) => {
      void (async () => {
        try {
          const path = new URL(req.url ?? '/', 'https://workload.invalid').pathname;
          if (req.method === 'GET' && path === '/v1/bundle') {
            const ca = await o.ca();
            send(res, 200, spiffeBundle(ca.roots, ca.sequence, 300));
            return;
          }
          if (
            req.method !== 'POST' ||
            (path !== '/v1/svid' && path !== '/v1/svid/renew' && path !== '/v1/jwt-svid')
          ) {
            fail(res, 404, 'route_not_found', 'No such workload API endpoint.');
            return;
          }
          const body = await readJson(req);
          if (path === '/v1/svid') {
            const token = body.join_token;
            if (typeof token !== 'string' || token.length > 256)
              throw Object.assign(new Error('join_token is required'), { status: 400 });
            const spiffeId = await o.store.joinTokens.consume(sha256b64url(token), o.clock.now());
            if (!spiffeId) {
              await o.audit.write(
                { type: 'ca.join_refused', data: { ip: req.socket.remoteAddress ?? '' } },
                'durable',
              );
              fail(res, 401, 'invalid_join_token', 'The join token is unknown, expired or already used.');
              return;
            }
            await issueAndAnswer(res, body.csr, spiffeId, 'join_token');
            return;
          }
          // Renewal: the caller proves itself with its current SVID as TLS client certificate.
          const chain = peerChain(req.socket as TLSSocket);
          if (chain.length === 0) {
            fail(
              res,
              401,
              'client_certificate_required',
              'Renewal needs the current X.509-SVID as TLS client certificate.',
            );
            return;
          }
          let spiffeId: string;
          try {
            const ca = await o.ca();
            const denied = o.deniedSerials?.();
            ({ spiffeId } = await verifySvid(chain, ca.roots, {
              ...(denied ? { deniedSerials: denied } : {}),
              trustDomain: ca.trustDomain,
              at: new Date(o.clock.now()),
            }));
          } catch (err) {
            const why = err instanceof SvidError ? `${err.code}: ${err.message}` : 'invalid certificate';
            await o.audit.write(
              { type: 'ca.renew_refused', data: { reason: why, ip: req.socket.remoteAddress ?? '' } },
              'durable',
            );
            fail(res, 401, 'invalid_svid', `The client certificate is not a valid SVID (${why}).`);
            return;
          }
          // A device certificate proves which device a user is on; it is never a workload identity.
          if (isDeviceId(spiffeId)) {
            await o.audit.write(
              { type: 'ca.renew_refused', data: { reason: 'device certificate', spiffeId } },
              'durable',
            );
            fail(res, 401, 'invalid_svid', 'A device certificate is not a workload identity.');
            return;
          }
          if (path === '/v1/jwt-svid') {
            // A JWT-SVID for one audience, for the workload the client certificate proves.
            const audience = body.audience;
            if (typeof audience !== 'string' || audience === '' || audience.length > 256)
              throw Object.assign(new Error('audience (one string) is required'), { status: 400 });
            if (!o.jwtSvid) {
              fail(res, 404, 'route_not_found', 'JWT-SVIDs are not enabled.');
              return;
            }
            const minted = await o.jwtSvid(spiffeId, audience);
            await o.audit.write({ type: 'ca.jwt_svid_issued', data: { spiffeId, audience } }, 'durable');
            send(res, 200, { token: minted.token, expires_at: new Date(minted.expiresAt).toISOString() });
            return;
          }
          await issueAndAnswer(res, body.csr, spiffeId, 'renewal');
        } catch (err) {
          const status = (err as { status?: number }).status ?? 500;
          if (status === 500) o.log.error({ err }, 'workload API error');
          if (!res.headersSent)
            fail(
              res,
              status,
              status === 500 ? 'internal_error' : 'bad_request',
              status === 500 ? 'An internal error occurred.' : (err as Error).message,
            );
        }
      })();
    },
  );
  /** Renews the server's own SVID at half-life (and after a CA rotation), for new handshakes. */
  const renewOwn = async () => {
    own = await ownSvid();
    server.setSecureContext({ ...own.context });
  };
  const timer = setInterval(() => {
    if (o.clock.now() >= own.renewAt)
      void renewOwn().catch((err: unknown) => o.log.error({ err }, 'workload API: own SVID not renewed'));
  }, 60_000);
  timer.unref();
  server.on('close', () => clearInterval(timer));
  return Object.assign(server, { renewOwn });
}
