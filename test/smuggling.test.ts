import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalizeTarget } from '../src/gateway/index.js';
import { keyResolver } from '../src/identity/index.js';
import { verifyAssertion } from '../src/sdk/index.js';
import { type Stack, startStack } from './helpers.js';

/**
 * Raw HTTP/1.1 against the gateway, byte for byte: path tricks, smuggling shapes (CL.TE, TE.CL, TE.TE,
 * duplicate Content-Length, obs-fold, bare LF), spoofed identity and forwarding headers, Connection and
 * Upgrade abuse, oversized heads and request-line tricks. The caller is a viewer (or nobody), who may
 * reach `GET /api/orders/*` and `GET /public/*` and nothing else. For every row the same invariant is
 * asserted on what the upstream recorded: nothing policy denies reaches it, and what reaches it is exactly
 * what was authorized — the canonical target, the gateway's own assertion bound to that target, no
 * client-supplied identity or forwarding headers.
 */

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** False when the request was cut off mid-body (the record is made when the head arrives). */
  complete: boolean;
}

/** An upstream that records every request as soon as its head arrives (so aborted ones count too). */
async function startHeadRecordingUpstream(): Promise<{
  url: string;
  seen: Seen[];
  close: () => Promise<void>;
}> {
  const seen: Seen[] = [];
  const server: Server = createServer((req, res) => {
    const record: Seen = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      body: '',
      complete: false,
    };
    seen.push(record);
    req.setEncoding('latin1');
    req.on('data', (c: string) => {
      record.body += c;
    });
    req.on('end', () => {
      record.complete = true;
      const text = JSON.stringify({ upstream: true, path: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  // Anything the upstream's own parser refuses is a desync the gateway let through: record it loudly.
  // The one exception is the connection closing mid-body: that is the gateway aborting a request whose
  // head was already recorded (left `complete: false`).
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (err.code !== 'HPE_INVALID_EOF_STATE' && err.code !== 'ECONNRESET')
      seen.push({
        method: 'CLIENT_ERROR',
        url: `${err.code}: ${err.message}`,
        headers: {},
        body: '',
        complete: false,
      });
    socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Splits what the gateway wrote back into responses (1xx interim answers skipped). */
function parseReplies(bytes: Buffer): Reply[] {
  const text = bytes.toString('latin1');
  const out: Reply[] = [];
  let pos = 0;
  while (pos < text.length) {
    const end = text.indexOf('\r\n\r\n', pos);
    if (end === -1) break;
    const lines = text.slice(pos, end).split('\r\n');
    const status = Number(lines[0]?.split(' ')[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
    }
    let next = end + 4;
    if (status >= 100 && status < 200) {
      pos = next;
      continue;
    }
    let body = '';
    if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const nl = text.indexOf('\r\n', next);
        if (nl === -1) return out;
        const size = Number.parseInt(text.slice(next, nl), 16);
        next = nl + 2 + size + 2;
        if (next > text.length) return out;
        if (size === 0) break;
        body += text.slice(nl + 2, nl + 2 + size);
      }
    } else if (headers['content-length'] !== undefined) {
      const len = Number(headers['content-length']);
      if (next + len > text.length) return out;
      body = text.slice(next, next + len);
      next += len;
    } else {
      body = text.slice(next);
      next = text.length;
    }
    out.push({ status, headers, body });
    pos = next;
  }
  return out;
}

const SOCKET_TIMEOUT_MS = 2_000;
const IDLE_MS = 250;

/**
 * Writes `bytes` in one go on a fresh connection and collects the answers until the gateway closes the
 * connection, or `expected` answers are in and the line has been quiet for a moment, or 2 s pass.
 */
function exchange(url: string, bytes: string | Buffer, expected: number): Promise<Reply[]> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    let done = false;
    let idle: NodeJS.Timeout | undefined;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(idle);
      clearTimeout(hard);
      socket.destroy();
      resolve(parseReplies(Buffer.concat(chunks)));
    };
    const hard = setTimeout(finish, SOCKET_TIMEOUT_MS);
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        if (parseReplies(Buffer.concat(chunks)).length >= expected) finish();
        else arm();
      }, IDLE_MS);
    };
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      arm();
    });
    socket.on('error', () => undefined); // a reset after a refusal is an answer too
    socket.on('close', finish);
    socket.write(bytes);
    arm();
  });
}

/** The request head's lines joined with CRLF, the empty line, then the body. */
const msg = (head: readonly string[], body = '') => `${head.join('\r\n')}\r\n\r\n${body}`;
const HOST = 'Host: 127.0.0.1';
const CLOSE = 'Connection: close';
/** A request the viewer may not make (with the viewer's token); if it reaches the upstream, it was smuggled. */
const admin = (auth: string) => msg(['GET /admin/users HTTP/1.1', HOST, auth, CLOSE]);
/** What an h2c client sends right after its upgrade request (RFC 9113 §3.4). */
const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;

/** What a row sends: built once the viewer's token is known. */
type Build = (auth: string) => string | Buffer;

interface Row {
  name: string;
  send: Build;
  /** Status of each answer, in order (none when the gateway just closes the connection). */
  statuses: number[];
  /** `METHOD target` of each request that reaches the upstream (pipelined ones may arrive in any order). */
  reached: string[];
  /**
   * Requests that may also reach it, depending on timing: an allowed request whose body turns out to be
   * malformed after its head was parsed (the upstream then sees it cut off).
   */
  mayAlsoReach?: string[];
  /** The X-Forwarded-Host the upstream must see ('' for none); default 127.0.0.1. */
  host?: string;
  /** The body each reached request must carry (when it matters). */
  bodies?: (auth: string) => string[];
  /** Who is calling: decides which routes are reachable and whether an assertion must be present. */
  caller?: 'viewer' | 'anonymous';
}

const rows: Array<[category: string, Row[]]> = [
  [
    'baseline',
    [
      {
        name: 'allowed GET',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, CLOSE]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'admin route as a viewer',
        send: (a) => msg(['GET /admin/users HTTP/1.1', HOST, a, CLOSE]),
        statuses: [403],
        reached: [],
      },
      {
        name: 'viewer POST where only GET is allowed',
        send: (a) => msg(['POST /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 2', CLOSE], '{}'),
        statuses: [403],
        reached: [],
      },
      {
        name: 'public route, anonymous: no assertion upstream',
        caller: 'anonymous',
        send: () => msg(['GET /public/info HTTP/1.1', HOST, CLOSE]),
        statuses: [200],
        reached: ['GET /public/info'],
      },
      {
        name: 'protected route, anonymous',
        caller: 'anonymous',
        send: () => msg(['GET /api/orders/1 HTTP/1.1', HOST, CLOSE]),
        statuses: [401],
        reached: [],
      },
      {
        name: 'pipelined: allowed, admin, public',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a]) +
          msg(['GET /admin/users HTTP/1.1', HOST, a]) +
          msg(['GET /public/info HTTP/1.1', HOST, CLOSE]),
        statuses: [200, 403, 200],
        reached: ['GET /api/orders/1', 'GET /public/info'],
      },
    ],
  ],
  [
    'path tricks and encodings',
    [
      {
        name: 'encoded dot-segments climbing to /admin',
        send: (a) => msg(['GET /api/orders/%2e%2e/%2E%2E/admin/users HTTP/1.1', HOST, a, CLOSE]),
        statuses: [403],
        reached: [],
      },
      {
        name: 'encoded slash',
        send: (a) => msg(['GET /api/orders/..%2f..%2fadmin/users HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'backslash',
        send: (a) => msg(['GET /api/orders/..\\..\\admin/users HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'encoded NUL',
        send: (a) => msg(['GET /api/orders/1%00/../../admin/users HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'overlong UTF-8 dots',
        send: (a) => msg(['GET /api/orders/%c0%ae%c0%ae/admin HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'raw non-ASCII byte in the target',
        send: (a) => Buffer.from(msg(['GET /api/orders/\xe9 HTTP/1.1', HOST, a, CLOSE]), 'latin1'),
        statuses: [400],
        reached: [],
      },
      {
        name: 'unreserved percent-encodings are forwarded decoded, merged slashes removed',
        send: (a) => msg(['GET /api//orders/./%61bc%7E?q=%2F HTTP/1.1', HOST, a, CLOSE]),
        statuses: [200],
        reached: ['GET /api/orders/abc~?q=%2F'],
      },
      {
        name: 'public prefix climbing to /admin, anonymous',
        caller: 'anonymous',
        send: () => msg(['GET /public/../admin/users HTTP/1.1', HOST, CLOSE]),
        statuses: [401],
        reached: [],
      },
      {
        name: 'dot-segment with path parameters',
        send: (a) => msg(['GET /api/orders/..;/..;/admin/users HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'fragment in the target',
        send: (a) => msg(['GET /api/orders/1#/../../admin HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'asterisk-form',
        send: (a) => msg(['OPTIONS * HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
    ],
  ],
  [
    'CL.TE / TE.CL',
    [
      {
        name: 'CL.TE: Content-Length then Transfer-Encoding, admin request in the body',
        send: (a) => {
          const body = `0\r\n\r\n${admin(a)}`;
          return msg(
            [
              'GET /api/orders/1 HTTP/1.1',
              HOST,
              a,
              `Content-Length: ${body.length}`,
              'Transfer-Encoding: chunked',
            ],
            body,
          );
        },
        statuses: [400],
        reached: [],
      },
      {
        name: 'TE.CL: Transfer-Encoding then a short Content-Length',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked', 'Content-Length: 4'],
            `${chunk(admin(a))}0\r\n\r\n`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'CL.0: Content-Length 0 and the admin request right after (parsed as a second request)',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 0']) + admin(a),
        statuses: [200, 403],
        reached: ['GET /api/orders/1'],
      },
    ],
  ],
  [
    'TE.TE obfuscation',
    [
      {
        name: '"chunked " (trailing space) with a Content-Length',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked ', 'Content-Length: 5'],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: '"xchunked"',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: xchunked'], `0\r\n\r\n${admin(a)}`),
        statuses: [400],
        reached: [],
      },
      {
        name: '"xchunked" with a Content-Length',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: xchunked', 'Content-Length: 5'],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: '"Transfer-Encoding : chunked" (space before the colon)',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding : chunked', 'Content-Length: 5'],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'tab before "chunked" is whitespace: the admin request stays inside the chunk',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding:\tchunked', CLOSE],
            `${chunk(admin(a))}0\r\n\r\n`,
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: (a) => [admin(a)],
      },
      {
        name: 'vertical tab before "chunked"',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding:\x0bchunked'],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'duplicated Transfer-Encoding header (chunked, identity)',
        send: (a) =>
          msg(
            [
              'GET /api/orders/1 HTTP/1.1',
              HOST,
              a,
              'Transfer-Encoding: chunked',
              'Transfer-Encoding: identity',
            ],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: '"chunked, identity"',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked, identity'],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: '"identity, chunked": chunked is last, the admin request stays body',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: identity, chunked', CLOSE],
            `${chunk(admin(a))}0\r\n\r\n`,
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: (a) => [admin(a)],
      },
      {
        name: '"CHUNKED" (case-insensitive)',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: CHUNKED', CLOSE],
            `${chunk(admin(a))}0\r\n\r\n`,
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: (a) => [admin(a)],
      },
      {
        name: 'quoted "chunked"',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: "chunked"'],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'chunked on HTTP/1.0 is read as chunked, and re-framed upstream',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.0', HOST, a, 'Transfer-Encoding: chunked'],
            `${chunk('hello')}0\r\n\r\n`,
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: () => ['hello'],
      },
      {
        name: 'chunked on HTTP/1.0 with the admin request after it (data past a closing message)',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.0', HOST, a, 'Transfer-Encoding: chunked'], `0\r\n\r\n${admin(a)}`),
        statuses: [400],
        reached: [],
        mayAlsoReach: ['GET /api/orders/1'],
      },
    ],
  ],
  [
    'Content-Length',
    [
      {
        name: 'duplicate Content-Length, same value',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 5', 'Content-Length: 5', CLOSE],
            'hello',
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'duplicate Content-Length, different values, admin request between them',
        send: (a) =>
          msg(
            [
              'GET /api/orders/1 HTTP/1.1',
              HOST,
              a,
              'Content-Length: 0',
              `Content-Length: ${admin(a).length}`,
            ],
            admin(a),
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Content-Length list "5, 5"',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 5, 5', CLOSE], 'hello'),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Content-Length with a plus sign',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: +5', CLOSE], 'hello'),
        statuses: [400],
        reached: [],
      },
      {
        name: 'negative Content-Length',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: -1', CLOSE], admin(a)),
        statuses: [400],
        reached: [],
      },
      {
        name: 'hex Content-Length',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 0x5', CLOSE], 'hello'),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Content-Length "5 5"',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 5 5', CLOSE], 'hello'),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Content-Length past 2^64',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 18446744073709551621', CLOSE],
            'hello',
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Content-Length with surrounding whitespace and leading zeros: the body is exactly 5 bytes',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length:   005  ', 'Connection: keep-alive'],
            'hello',
          ) + admin(a),
        statuses: [200, 403],
        reached: ['GET /api/orders/1'],
        bodies: () => ['hello'],
      },
      {
        name: 'Content-Length swallowing the admin request as body',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a, `Content-Length: ${admin(a).length}`], admin(a)),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: (a) => [admin(a)],
      },
      {
        name: 'Content-Length longer than what was sent: the rest never arrives, the head may be forwarded',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 4096'], admin(a)),
        statuses: [],
        reached: [],
        mayAlsoReach: ['GET /api/orders/1'],
      },
    ],
  ],
  [
    'obs-fold, line endings, control characters',
    [
      {
        name: 'obs-fold in an ordinary header',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'X-Note: a', ' b', CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'obs-fold continuing Transfer-Encoding',
        send: (a) =>
          msg(
            [
              'GET /api/orders/1 HTTP/1.1',
              HOST,
              a,
              'Transfer-Encoding: identity',
              ' chunked',
              'Content-Length: 5',
            ],
            `0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'obs-fold hiding an identity header',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'X-Note: a', '\tX-Portcullis-Roles: admin', CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'bare LF line endings',
        send: (a) => `GET /admin/users HTTP/1.1\n${HOST}\n${a}\n${CLOSE}\n\n`,
        statuses: [400],
        reached: [],
      },
      {
        name: 'bare LF splitting a header in two',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'X-Note: a\nX-Portcullis-Roles: admin', CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'bare CR in a header value',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'X-Note: a\rX-Portcullis-Roles: admin', CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'NUL in a header value',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'X-Note: a\0b', CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'bare LF ending the head, admin request as the next line',
        send: (a) => `GET /api/orders/1 HTTP/1.1\r\n${HOST}\r\n${a}\r\nContent-Length: 0\n\n${admin(a)}`,
        statuses: [400],
        reached: [],
      },
    ],
  ],
  [
    'chunk framing',
    [
      {
        name: 'invalid chunk size',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked'],
            `zz\r\nhello\r\n0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
        mayAlsoReach: ['GET /api/orders/1'],
      },
      {
        name: 'negative chunk size',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked'],
            `-5\r\nhello\r\n0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
        mayAlsoReach: ['GET /api/orders/1'],
      },
      {
        name: 'chunk size past 2^64',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked'],
            `1ffffffffffffffff\r\nhello\r\n0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
        mayAlsoReach: ['GET /api/orders/1'],
      },
      {
        name: 'chunk longer than its size',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked'],
            `2\r\nhello\r\n0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
        mayAlsoReach: ['GET /api/orders/1'],
      },
      {
        name: 'chunk extensions are accepted and not forwarded as data',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked', CLOSE],
            '5;ext="v";x=1\r\nhello\r\n0\r\n\r\n',
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: () => ['hello'],
      },
      {
        name: 'chunk extension with a bare LF hiding a request',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Transfer-Encoding: chunked'],
            `5;x\nhello\r\n0\r\n\r\n${admin(a)}`,
          ),
        statuses: [400],
        reached: [],
        mayAlsoReach: ['GET /api/orders/1'],
      },
      {
        name: 'trailer with an identity header',
        send: (a) =>
          msg(
            [
              'GET /api/orders/1 HTTP/1.1',
              HOST,
              a,
              'Transfer-Encoding: chunked',
              'Trailer: X-Portcullis-Roles',
              CLOSE,
            ],
            `${chunk('hello')}0\r\nX-Portcullis-Roles: admin\r\n\r\n`,
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: () => ['hello'],
      },
    ],
  ],
  [
    'HTTP versions and request line',
    [
      {
        name: 'HTTP/1.0 keep-alive, then the admin request',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.0', HOST, a, 'Connection: keep-alive']) + admin(a),
        statuses: [200, 403],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'HTTP/1.0 without Host',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.0', a]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        host: '',
      },
      {
        name: 'HTTP/0.9 request line (parsed as a request without a version; no token, so 401)',
        send: () => 'GET /admin/users\r\n\r\n',
        statuses: [401],
        reached: [],
      },
      {
        name: 'unknown HTTP version',
        send: (a) => msg(['GET /admin/users HTTP/1.2', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'lowercase method',
        send: (a) => msg(['get /api/orders/1 HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'two spaces after the method (tolerated; the same target)',
        send: (a) => msg(['GET  /api/orders/1 HTTP/1.1', HOST, a, CLOSE]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'two spaces before the version (tolerated; the same target)',
        send: (a) => msg(['GET /api/orders/1  HTTP/1.1', HOST, a, CLOSE]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'tabs as separators',
        send: (a) => msg(['GET\t/api/orders/1\tHTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'a second target after the version',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1 /admin/users', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'CONNECT to another host',
        send: (a) => msg(['CONNECT 127.0.0.1:22 HTTP/1.1', 'Host: 127.0.0.1:22', a]),
        statuses: [],
        reached: [],
      },
      {
        name: 'allowed GET then a pipelined POST the viewer may not make',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a]) +
          msg(['POST /api/orders/1 HTTP/1.1', HOST, a, 'Content-Length: 2', CLOSE], '{}'),
        statuses: [200, 403],
        reached: ['GET /api/orders/1'],
      },
    ],
  ],
  [
    'Host and absolute-form',
    [
      {
        name: 'absolute-form to another host, admin path',
        send: (a) => msg(['GET http://evil.example/admin/users HTTP/1.1', HOST, a, CLOSE]),
        statuses: [403],
        reached: [],
      },
      {
        name: 'absolute-form: forwarded in origin-form, host from the target',
        send: (a) =>
          msg(['GET http://shop.example/api/orders/1?x=1 HTTP/1.1', 'Host: other.example', a, CLOSE]),
        statuses: [200],
        reached: ['GET /api/orders/1?x=1'],
        host: 'shop.example',
      },
      {
        name: 'absolute-form with userinfo',
        send: (a) => msg(['GET http://user:pw@127.0.0.1/api/orders/1 HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'duplicate Host',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, 'Host: evil.example', a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'missing Host in HTTP/1.1 (the gateway’s JSON 400, not node:http’s bare one)',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Host with userinfo',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', 'Host: admin@127.0.0.1', a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Host with a path',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', 'Host: 127.0.0.1/admin/users', a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Host as a list',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', 'Host: 127.0.0.1, evil.example', a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'absolute-form with a backslash in the authority',
        send: (a) => msg(['GET http://127.0.0.1\\@evil.example/api/orders/1 HTTP/1.1', HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'Host with a port, upper case and a trailing dot: forwarded canonical',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', 'Host: Shop.Example.:8443', a, CLOSE]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        host: 'shop.example',
      },
      {
        name: 'Host as an IPv6 literal',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', 'Host: [::1]:8080', a, CLOSE]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        host: '[::1]',
      },
    ],
  ],
  [
    'spoofed identity and forwarding headers',
    [
      {
        name: 'X-Portcullis-* identity headers',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'X-Portcullis-Assertion: forged',
            'X-Portcullis-Subject: admin',
            'X-Portcullis-Roles: admin',
            'X-Portcullis-User: admin',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'underscore spellings (X_Portcullis_*)',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'X_Portcullis_Assertion: forged',
            'X_Portcullis_Roles: admin',
            'x-portcullis_subject: admin',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'identity headers on a public route, anonymous',
        caller: 'anonymous',
        send: () =>
          msg([
            'GET /public/info HTTP/1.1',
            HOST,
            'X-Portcullis-Assertion: forged',
            'X-Portcullis-Roles: admin',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /public/info'],
      },
      {
        name: 'proxy identity headers (X-Forwarded-User/-Email/-Groups)',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'X-Forwarded-User: admin',
            'X-Forwarded-Email: admin@example.com',
            'X-Forwarded-Groups: admin',
            'X-Forwarded-Preferred-Username: admin',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'other access proxies’ identity headers (Authelia, oauth2-proxy, Grafana, Pomerium, Oathkeeper)',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'Remote-User: admin',
            'Remote-Groups: admin',
            'Remote-Email: admin@example.com',
            'Remote_Name: Admin',
            'X-Remote-User: admin',
            'X-User: admin',
            'X-Auth-Request-User: admin',
            'X-Auth-Request-Email: admin@example.com',
            'X-WEBAUTH-USER: admin',
            'X-Pomerium-Jwt-Assertion: forged',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'client address and scheme headers from an untrusted client',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'X-Forwarded-For: 10.0.0.1',
            'X-Forwarded-For: 203.0.113.9',
            'Forwarded: for=10.0.0.1;proto=https;host=admin.example',
            'X-Real-IP: 10.0.0.1',
            'X-Forwarded-Host: admin.example',
            'X-Forwarded-Proto: https',
            'X-Forwarded-Port: 443',
            'X-Forwarded-Prefix: /admin',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'target and method rewrite headers (X-Original-URL, X-HTTP-Method-Override)',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'X-Original-URL: /admin/users',
            'X-Rewrite-URL: /admin/users',
            'X-HTTP-Method-Override: DELETE',
            'X-HTTP-Method: DELETE',
            'X-Method-Override: DELETE',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'underscore spellings of forwarding and rewrite headers (CGI reads them as dashes)',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'X_Forwarded_For: 10.0.0.1',
            'X_Forwarded_Host: admin.example',
            'X_Forwarded_User: admin',
            'X_Original_URL: /admin/users',
            'X_HTTP_Method_Override: DELETE',
            CLOSE,
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'a second Authorization header after a garbage one (two credentials: refused)',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, 'Authorization: Bearer garbage', a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: "a garbage Authorization header after the viewer's (two credentials: refused)",
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Authorization: Bearer garbage', CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'an X-API-Key next to a bearer token (two credentials: refused)',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'X-API-Key: pcak_0000000000000000_x', CLOSE]),
        statuses: [400],
        reached: [],
      },
    ],
  ],
  [
    'Connection and Upgrade abuse',
    [
      {
        name: 'Connection naming the assertion header',
        send: (a) =>
          msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Connection: close, X-Portcullis-Assertion']),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'Connection naming Authorization (the gateway still authenticates)',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Connection: authorization, close']),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'Connection naming Authorization on the admin route',
        send: (a) => msg(['GET /admin/users HTTP/1.1', HOST, a, 'Connection: authorization, close']),
        statuses: [403],
        reached: [],
      },
      {
        name: 'Connection naming the forwarding headers the gateway sets',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'Connection: close, x-forwarded-for, x-forwarded-host, x-forwarded-proto, x-request-id, host',
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'Connection naming Content-Length: the body still arrives whole',
        send: (a) =>
          msg(
            [
              'GET /api/orders/1 HTTP/1.1',
              HOST,
              a,
              `Content-Length: ${admin(a).length}`,
              'Connection: content-length',
            ],
            admin(a),
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: (a) => [admin(a)],
      },
      {
        name: 'Upgrade: h2c, then the HTTP/2 preface',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'Connection: Upgrade, HTTP2-Settings',
            'Upgrade: h2c',
            'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA',
          ]) + PREFACE,
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'Upgrade: websocket on a plain route, then an admin request as "frames" (never parsed)',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'Connection: Upgrade',
            'Upgrade: websocket',
            'Sec-WebSocket-Version: 13',
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          ]) + admin(a),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'Upgrade: websocket on the admin route',
        send: (a) =>
          msg([
            'GET /admin/users HTTP/1.1',
            HOST,
            a,
            'Connection: Upgrade',
            'Upgrade: websocket',
            'Sec-WebSocket-Version: 13',
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          ]),
        statuses: [403],
        reached: [],
      },
      {
        name: 'Upgrade without "Connection: upgrade" is a plain request: the next one is parsed and refused',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, 'Upgrade: websocket']) + admin(a),
        statuses: [200, 403],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'Upgrade with a Content-Length body holding the admin request (refused: node:http does not parse an upgrade request’s body)',
        send: (a) =>
          msg(
            [
              'GET /api/orders/1 HTTP/1.1',
              HOST,
              a,
              'Connection: Upgrade',
              'Upgrade: foo',
              `Content-Length: ${admin(a).length}`,
            ],
            admin(a),
          ),
        statuses: [400],
        reached: [],
      },
      {
        name: 'proxy and hop-by-hop request headers',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            'Proxy-Authorization: Basic YWRtaW46YWRtaW4=',
            'Proxy-Connection: keep-alive',
            'Keep-Alive: timeout=5',
            'TE: trailers',
            'Connection: close, TE',
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
      {
        name: 'Expect: 100-continue with a body',
        send: (a) =>
          msg(
            ['GET /api/orders/1 HTTP/1.1', HOST, a, 'Expect: 100-continue', 'Content-Length: 5', CLOSE],
            'hello',
          ),
        statuses: [200],
        reached: ['GET /api/orders/1'],
        bodies: () => ['hello'],
      },
    ],
  ],
  [
    'oversized heads',
    [
      {
        name: 'one 20 KB header',
        send: (a) => msg(['GET /api/orders/1 HTTP/1.1', HOST, a, `X-Big: ${'a'.repeat(20_000)}`, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: 'a 20 KB target',
        send: (a) => msg([`GET /api/orders/${'a'.repeat(20_000)} HTTP/1.1`, HOST, a, CLOSE]),
        statuses: [400],
        reached: [],
      },
      {
        name: '3000 small headers (over the size limit)',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            ...Array.from({ length: 3000 }, (_, i) => `X-H${i}: v`),
            CLOSE,
          ]),
        statuses: [400],
        reached: [],
      },
      {
        name: '2100 tiny headers (under the size limit, over the count) with spoofed identity at the end',
        send: (a) =>
          msg([
            'GET /api/orders/1 HTTP/1.1',
            HOST,
            a,
            CLOSE,
            ...Array.from({ length: 2100 }, () => 'A: 1'),
            'X-Portcullis-Roles: admin',
            'X-Forwarded-User: admin',
          ]),
        statuses: [200],
        reached: ['GET /api/orders/1'],
      },
    ],
  ],
];

/** Hop-by-hop and client-address/identity headers that must never reach the upstream from a client. */
const NEVER_UPSTREAM = [
  'authorization',
  'forwarded',
  'x-real-ip',
  'proxy-connection',
  'proxy-authorization',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'http2-settings',
  'expect',
  'x-original-url',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'remote-user',
  'remote-groups',
  'remote-email',
  'remote-name',
  'x-remote-user',
  'x-user',
  'x-auth-request-user',
  'x-auth-request-email',
  'x-webauth-user',
  'x-pomerium-jwt-assertion',
];
const GATEWAY_FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host']);

describe('raw HTTP against the gateway: nothing denied reaches the upstream, and only what was authorized', () => {
  let s: Stack;
  let upstream: Awaited<ReturnType<typeof startHeadRecordingUpstream>>;
  let auth: string;
  let viewerId: string;
  let jwks: Parameters<typeof keyResolver>[0];

  beforeAll(async () => {
    upstream = await startHeadRecordingUpstream();
    s = await startStack(
      {
        routes: [
          { id: 'orders', path: '/api/orders/*', methods: ['GET', 'POST'], upstream: 'app' },
          { id: 'admin', path: '/admin/*', methods: ['GET', 'POST'], upstream: 'app' },
          { id: 'public', path: '/public/*', methods: ['GET'], upstream: 'app', public: true },
        ],
        policy: {
          rules: [
            { id: 'read-orders', routes: ['orders'], methods: ['GET'], roles: ['viewer', 'admin'] },
            { id: 'admin-all', routes: ['orders', 'admin'], roles: ['admin'] },
          ],
        },
      },
      upstream.url,
    );
    const token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body
      .access_token as string;
    auth = `Authorization: Bearer ${token}`;
    viewerId = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).sub;
    jwks = await (await fetch(`${s.pc.gatewayUrl}/.well-known/jwks.json`)).json();
  });
  afterAll(async () => {
    await s?.close();
    await upstream?.close();
  });

  /** May `caller` reach `method target` at all? (The policy above, restated independently.) */
  const mayReach = (caller: 'viewer' | 'anonymous', method: string, url: string) => {
    const path = url.split('?')[0] as string;
    if (method === 'GET' && path.startsWith('/public/')) return true;
    return caller === 'viewer' && method === 'GET' && path.startsWith('/api/orders/');
  };

  /** The invariant, asserted for every row on what the upstream recorded during it. */
  async function assertInvariant(row: Row, reached: Seen[]): Promise<void> {
    const caller = row.caller ?? 'viewer';
    // 1. Nothing policy denies reaches the upstream (nor anything its own parser refuses: CLIENT_ERROR).
    for (const r of reached)
      expect(mayReach(caller, r.method, r.url), `${r.method} ${r.url} reached`).toBe(true);
    // 2. Exactly the requests expected (pipelined requests are handled concurrently: any order).
    const got = reached.map((r) => `${r.method} ${r.url}`).sort();
    const exact = [...row.reached].sort();
    expect([exact, [...row.reached, ...(row.mayAlsoReach ?? [])].sort()]).toContainEqual(got);
    if (row.bodies) expect(reached.map((r) => r.body)).toEqual(row.bodies(auth));
    for (const r of reached) {
      // 3. The target is canonical: canonicalizing it again changes nothing.
      const canonical = canonicalizeTarget(r.url);
      expect(canonical.path + canonical.query).toBe(r.url);
      // Header names as a CGI-style server reads them (`_` and `-` alike).
      const names = Object.keys(r.headers).map((n) => n.replaceAll('_', '-'));
      // 4. No client-supplied identity, rewrite or hop-by-hop headers: the only x-portcullis header is the
      //    gateway's assertion, and X-Forwarded-* are the gateway's own, with the gateway's values.
      expect(names.filter((n) => n.startsWith('x-portcullis') && n !== 'x-portcullis-assertion')).toEqual([]);
      expect(names.filter((n) => NEVER_UPSTREAM.includes(n))).toEqual([]);
      expect(names.filter((n) => n.startsWith('x-forwarded') && !GATEWAY_FORWARDING.has(n))).toEqual([]);
      expect(names.filter((n) => GATEWAY_FORWARDING.has(n) || n === 'x-request-id').length).toBe(
        new Set(names.filter((n) => GATEWAY_FORWARDING.has(n) || n === 'x-request-id')).size,
      );
      expect(r.headers['x-forwarded-for']).toBe('127.0.0.1');
      expect(r.headers['x-forwarded-proto']).toBe('http');
      expect(r.headers['x-forwarded-host']).toBe(row.host === '' ? undefined : (row.host ?? '127.0.0.1'));
      expect(r.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      // 5. Framing towards the upstream is the gateway's own: Content-Length or chunked, never both.
      expect(r.headers['content-length'] !== undefined && r.headers['transfer-encoding'] !== undefined).toBe(
        false,
      );
      if (r.headers['transfer-encoding'] !== undefined)
        expect(r.headers['transfer-encoding']).toBe('chunked');
      // 6. The assertion is the gateway's, for this caller, bound to exactly this method and target; a
      //    public route gets none at all (whatever the client sent).
      const assertion = r.headers['x-portcullis-assertion'];
      if (r.url.startsWith('/public/')) {
        expect(assertion).toBeUndefined();
        continue;
      }
      expect(typeof assertion).toBe('string');
      const claims = await verifyAssertion(assertion as string, keyResolver(jwks), {
        issuer: 'http://portcullis.test',
        audience: 'app',
        request: { method: r.method, target: r.url },
      });
      expect(claims).toMatchObject({ sub: viewerId, roles: ['viewer'], rules: ['read-orders'] });
    }
  }

  for (const [category, list] of rows) {
    describe(category, () => {
      it.each(list.map((r) => [r.name, r] as const))('%s', async (_name, row) => {
        const before = upstream.seen.length;
        const replies = await exchange(s.pc.gatewayUrl, row.send(auth), row.statuses.length);
        // A request the gateway let through reaches the upstream before its answer comes back; a short
        // settle catches anything that would arrive after (a smuggled follow-up).
        await new Promise((r) => setTimeout(r, 30));
        expect(replies.map((r) => r.status)).toEqual(row.statuses);
        // Every refusal is the gateway's JSON error with the security headers (node:http's parser errors too).
        for (const reply of replies)
          if (reply.status >= 400) {
            expect(reply.headers['x-content-type-options']).toBe('nosniff');
            expect(JSON.parse(reply.body)).toMatchObject({ error: { code: expect.any(String) } });
          }
        await assertInvariant(row, upstream.seen.slice(before));
      });
    });
  }

  it('the invariant itself catches a smuggled request, a spoofed header and an assertion for another target', async () => {
    const before = upstream.seen.length;
    await exchange(s.pc.gatewayUrl, msg(['GET /api/orders/1 HTTP/1.1', HOST, auth, CLOSE]), 1);
    const good = upstream.seen.slice(before);
    const row: Row = { name: 'self-check', send: () => '', statuses: [200], reached: ['GET /api/orders/1'] };
    await assertInvariant(row, good);
    const seen = good[0] as Seen;
    await expect(assertInvariant(row, [...good, { ...seen, url: '/admin/users' }])).rejects.toThrow(
      /\/admin\/users reached/,
    );
    await expect(
      assertInvariant(row, [{ ...seen, headers: { ...seen.headers, x_forwarded_user: 'admin' } }]),
    ).rejects.toThrow();
    await expect(
      assertInvariant({ ...row, reached: ['GET /api/orders/2'] }, [{ ...seen, url: '/api/orders/2' }]),
    ).rejects.toThrow(/another request target/);
  });

  it('the table covers at least 40 raw cases', () => {
    expect(rows.reduce((n, [, list]) => n + list.length, 0)).toBeGreaterThanOrEqual(40);
  });
});
