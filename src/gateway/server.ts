import { createServer, type Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { errorBody, newRequestId } from '../core/index.js';
import type { Gateway } from './context.js';
import { SECURITY_HEADERS } from './headers.js';
import { createHandler, createUpgradeHandler } from './pipeline.js';
import { type GatewayTls, gatewaySecureContext } from './tls-files.js';

/** The security headers as raw header lines, for answers written straight to the socket. */
const RAW_SECURITY_HEADERS = SECURITY_HEADERS.map(([k, v]) => `${k}: ${v}\r\n`).join('');

/**
 * The gateway's node:http server. Malformed HTTP (the parser refuses it before any handler runs) gets a
 * JSON 400 and the connection is closed.
 */
export function createGatewayServer(current: () => Gateway, tls?: GatewayTls): Server {
  const options = {
    headersTimeout: 10_000,
    requestTimeout: 60_000,
    keepAliveTimeout: 5_000,
    maxHeaderSize: 16_384,
    // Duplicate Host, CL+TE and the like are refused by llhttp in strict mode.
    insecureHTTPParser: false,
    // A missing Host on HTTP/1.1 is refused by the pipeline (canonicalize), with the JSON error shape and
    // the security headers, rather than by node:http's bare 400.
    requireHostHeader: false,
  };
  const server: Server = tls
    ? // Client certificates are optional (users come with bearer tokens) and are verified by the
      // pipeline with the SPIFFE rules, not by OpenSSL's defaults.
      (createTlsServer(
        { ...options, ...gatewaySecureContext(tls) },
        createHandler(current),
      ) as unknown as Server)
    : createServer(options, createHandler(current));
  server.on('upgrade', createUpgradeHandler(current));
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const body = errorBody('bad_request', 'The request is malformed.', newRequestId());
    socket.end(
      `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${RAW_SECURITY_HEADERS}\r\n${body}`,
    );
  });
  return server;
}
