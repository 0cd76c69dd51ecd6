import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { defineConfig } from '../src/config/index.js';
import { ASSERTION_HEADER } from '../src/gateway/assertion.js';
import { rawRequest, type Stack, startStack, type TestOverrides, tempDir, testConfig } from './helpers.js';

/** A WebSocket upstream that echoes, and records every handshake and plain request that reached it. */
async function wsUpstream() {
  const handshakes: { url: string; headers: IncomingHttpHeaders }[] = [];
  const plain: { url: string; headers: IncomingHttpHeaders }[] = [];
  const server: Server = createServer((req, res) => {
    plain.push({ url: req.url ?? '', headers: req.headers });
    res.writeHead(200, { 'content-type': 'text/plain' }).end('plain');
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    handshakes.push({ url: req.url ?? '', headers: req.headers });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data) => ws.send(`echo:${data.toString()}`));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    handshakes,
    plain,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

type Opened = { ws: WebSocket; status: 101 } | { status: number; body: string };

/** Opens a WebSocket through the gateway; resolves with the socket, or with the refusal's status and body. */
function open(base: string, path: string, headers: Record<string, string> = {}): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace('http', 'ws')}${path}`, { headers, handshakeTimeout: 3000 });
    ws.once('open', () => resolve({ ws, status: 101 }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', reject);
  });
}

const roundTrip = (ws: WebSocket, text: string) =>
  new Promise<string>((resolve) => {
    ws.once('message', (d) => resolve(d.toString()));
    ws.send(text);
  });

const OVERRIDES: TestOverrides = {
  routes: [
    {
      id: 'feed',
      path: '/ws/feed',
      methods: ['GET'],
      upstream: 'app',
      websocket: { recheck: '100ms' },
    },
    { id: 'admin-feed', path: '/ws/admin', methods: ['GET'], upstream: 'app', websocket: true },
    { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
  ],
  policy: {
    rules: [
      { id: 'feed', routes: ['feed', 'orders'], methods: ['GET'], roles: ['viewer', 'admin'] },
      { id: 'admin-feed', routes: ['admin-feed'], roles: ['admin'] },
    ],
  },
};

describe('WebSocket upgrades: authorized like any request, then tunnelled', () => {
  let s: Stack;
  let up: Awaited<ReturnType<typeof wsUpstream>>;
  let viewer: string;
  let admin: string;

  beforeAll(async () => {
    up = await wsUpstream();
    s = await startStack(OVERRIDES, up.url);
    viewer = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
    admin = (await s.login(s.users.admin.username, s.users.admin.password)).body.access_token as string;
  });
  afterAll(async () => {
    await s.close();
    await up.close();
  });

  it('an allowed upgrade is tunnelled: messages both ways, the upstream sees the assertion and no client identity headers', async () => {
    const o = await open(s.pc.gatewayUrl, '/ws/./feed?room=1', {
      authorization: `Bearer ${viewer}`,
      'x-portcullis-identity': 'forged',
    });
    if (!('ws' in o)) throw new Error(`refused: ${o.status} ${o.body}`);
    expect(await roundTrip(o.ws, 'hello')).toBe('echo:hello');
    expect(await roundTrip(o.ws, 'again')).toBe('echo:again');
    o.ws.close();
    const h = up.handshakes.at(-1);
    expect(h?.url).toBe('/ws/feed?room=1'); // the canonical target
    expect(h?.headers[ASSERTION_HEADER]).toMatch(/^ey/);
    expect(h?.headers.authorization).toBeUndefined();
    expect(h?.headers['x-portcullis-identity']).toBeUndefined();
    expect(h?.headers['sec-websocket-key']).toBeTruthy();
  });

  it('a reload leaves open tunnels to their re-checks (a certificate rotation reloads too)', async () => {
    const o = await open(s.pc.gatewayUrl, '/ws/feed', { authorization: `Bearer ${viewer}` });
    if (!('ws' in o)) throw new Error(`refused: ${o.status}`);
    expect(await roundTrip(o.ws, 'before')).toBe('echo:before');
    expect((await s.pc.reload(defineConfig(testConfig(s.dataDir, up.url, OVERRIDES)))).ok).toBe(true);
    await new Promise((r) => setTimeout(r, 300)); // a few re-checks on the way
    expect(await roundTrip(o.ws, 'after')).toBe('echo:after');
    o.ws.close();
  });

  it('refusals are the usual JSON answers, and nothing reaches the upstream', async () => {
    const before = up.handshakes.length;
    const none = await open(s.pc.gatewayUrl, '/ws/feed');
    expect(none.status).toBe(401);
    expect(JSON.parse((none as { body: string }).body).error.code).toBe('unauthenticated');
    const denied = await open(s.pc.gatewayUrl, '/ws/admin', { authorization: `Bearer ${viewer}` });
    expect(denied.status).toBe(403);
    expect(JSON.parse((denied as { body: string }).body).error.code).toBe('forbidden');
    // A path trick towards the admin feed is canonicalized first, then denied like the plain path.
    const trick = await rawRequest(
      s.pc.gatewayUrl,
      `GET /ws/feed/%2e%2e/admin HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${viewer}\r\n\r\n`,
    );
    expect(trick.status).toBe(403);
    expect(up.handshakes.length).toBe(before);
    const ok = await open(s.pc.gatewayUrl, '/ws/admin', { authorization: `Bearer ${admin}` });
    expect(ok.status).toBe(101);
    if ('ws' in ok) ok.ws.close();
  });

  it('an upgrade on a route without websocket is served as a plain request (the Upgrade header is not forwarded)', async () => {
    const res = await rawRequest(
      s.pc.gatewayUrl,
      `GET /api/orders HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${viewer}\r\n\r\n`,
    );
    expect(res.status).toBe(200);
    expect(res.body).toBe('plain');
    expect(up.plain.at(-1)?.headers.upgrade).toBeUndefined();
    // h2c is never tunnelled either.
    const h2c = await rawRequest(
      s.pc.gatewayUrl,
      `GET /ws/feed HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nAuthorization: Bearer ${viewer}\r\n\r\n`,
    );
    expect(h2c.status).toBe(200);
    expect(up.plain.at(-1)?.headers.upgrade).toBeUndefined();
    expect(up.plain.at(-1)?.headers['http2-settings']).toBeUndefined();
  });

  it('a session revoked while the tunnel is open closes the tunnel at the next re-check', async () => {
    const login = await s.login(s.users.viewer.username, s.users.viewer.password);
    const token = login.body.access_token as string;
    const o = await open(s.pc.gatewayUrl, '/ws/feed', { authorization: `Bearer ${token}` });
    if (!('ws' in o)) throw new Error(`refused: ${o.status}`);
    expect(await roundTrip(o.ws, 'before')).toBe('echo:before');
    const closed = new Promise<number>((r) => o.ws.once('close', (code) => r(code)));
    const out = await fetch(`${s.pc.gatewayUrl}/auth/logout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(out.status).toBe(204);
    const started = Date.now();
    await closed;
    expect(Date.now() - started).toBeLessThan(2000);
    // And a new handshake with that token is refused.
    expect((await open(s.pc.gatewayUrl, '/ws/feed', { authorization: `Bearer ${token}` })).status).toBe(401);
  });

  it('an upstream that refuses the handshake is a 502, never a half-open tunnel', async () => {
    // The plain HTTP upstream answers 200 to a handshake path that its upgrade handler does not take.
    const plainOnly: Server = createServer((_req, res) => res.writeHead(200).end('no'));
    await new Promise<void>((r) => plainOnly.listen(0, '127.0.0.1', r));
    const s2 = await startStack(
      {
        routes: [{ id: 'feed', path: '/ws/feed', methods: ['GET'], upstream: 'app', websocket: true }],
        policy: { rules: [{ id: 'feed', routes: ['feed'], roles: ['viewer'] }] },
      },
      `http://127.0.0.1:${(plainOnly.address() as AddressInfo).port}`,
    );
    try {
      const t = (await s2.login(s2.users.viewer.username, s2.users.viewer.password)).body
        .access_token as string;
      const o = await open(s2.pc.gatewayUrl, '/ws/feed', { authorization: `Bearer ${t}` });
      expect(o.status).toBe(502);
    } finally {
      await s2.close();
      plainOnly.closeAllConnections();
      plainOnly.close();
    }
  });

  it('a refused handshake is the target answering: it is not ejected, and no other target is asked', async () => {
    // Three targets that serve plain requests and refuse every handshake (403), one retry configured.
    const seen: string[] = [];
    const refusing = async (name: string) => {
      const server: Server = createServer((req, res) => {
        seen.push(`${name} ${req.url}`);
        res.writeHead(200).end(name);
      });
      server.on('upgrade', (req, socket) => {
        seen.push(`${name} upgrade ${req.url}`);
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return server;
    };
    const servers = [await refusing('a'), await refusing('b'), await refusing('c')];
    const urls = servers.map((x) => `http://127.0.0.1:${(x.address() as AddressInfo).port}`);
    const s2 = await startStack({
      upstreams: { app: { targets: urls, timeout: '2s', retries: 1 } as never },
      routes: [
        { id: 'feed', path: '/ws/*', methods: ['GET'], upstream: 'app', public: true, websocket: true },
      ],
      policy: { rules: [] },
    });
    try {
      const o = await open(s2.pc.gatewayUrl, '/ws/feed');
      expect(o.status).toBe(502);
      // Sent once: an answered handshake is never retried elsewhere.
      expect(seen.filter((x) => x.includes('upgrade'))).toHaveLength(1);
      // All targets stay in rotation (a refused handshake used to eject the targets it reached).
      const names = new Set<string>();
      for (let i = 0; i < 6; i++) names.add(await (await fetch(`${s2.pc.gatewayUrl}/ws/plain-${i}`)).text());
      expect([...names].sort()).toEqual(['a', 'b', 'c']);
    } finally {
      await s2.close();
      for (const x of servers) {
        x.closeAllConnections();
        x.close();
      }
    }
  });

  it('shutting down closes open tunnels instead of waiting for them', async () => {
    const s2 = await startStack(
      {
        routes: [
          { id: 'feed', path: '/ws/feed', methods: ['GET'], upstream: 'app', public: true, websocket: true },
        ],
        policy: { rules: [] },
      },
      up.url,
    );
    const o = await open(s2.pc.gatewayUrl, '/ws/feed');
    if (!('ws' in o)) throw new Error(`refused: ${o.status}`);
    expect(await roundTrip(o.ws, 'hi')).toBe('echo:hi');
    const closed = new Promise<void>((r) => o.ws.once('close', () => r()));
    const started = Date.now();
    const stopped = s2.close();
    // It used to hang until the client went away (the upgraded socket held the server's close).
    const within = await Promise.race([
      stopped.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 4000)),
    ]);
    o.ws.terminate();
    await stopped;
    expect(within).toBe(true);
    await closed;
    expect(Date.now() - started).toBeLessThan(4000);
  });
});

describe('WebSocket tunnels opened with an external token end when the token does', () => {
  it('closes the tunnel at the token’s exp', async () => {
    const up = await wsUpstream();
    const t = tempDir();
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(join(t.dir, 'idp.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    const s = await startStack(
      {
        issuers: {
          idp: { issuer: 'https://idp.example', audience: 'feed', publicKeyFile: join(t.dir, 'idp.pem') },
        },
        routes: [
          {
            id: 'feed',
            path: '/ws/feed',
            methods: ['GET'],
            upstream: 'app',
            websocket: true,
            issuers: ['idp'],
          },
        ],
        policy: { rules: [{ id: 'feed', routes: ['feed'], roles: ['reader'] }] },
      },
      up.url,
    );
    try {
      const now = Math.floor(Date.now() / 1000);
      const token = await new SignJWT({ roles: ['reader'] })
        .setProtectedHeader({ alg: 'ES256' })
        .setIssuer('https://idp.example')
        .setAudience('feed')
        .setSubject('partner-1')
        .setIssuedAt(now)
        .setExpirationTime(now + 2)
        .sign(privateKey);
      const o = await open(s.pc.gatewayUrl, '/ws/feed', { authorization: `Bearer ${token}` });
      if (!('ws' in o)) throw new Error(`refused: ${o.status} ${o.body}`);
      expect(await roundTrip(o.ws, 'hi')).toBe('echo:hi');
      const closedAt = await new Promise<number>((r) => o.ws.once('close', () => r(Date.now())));
      // Closed at exp (within the second it falls in), not left open for as long as the client likes.
      expect(closedAt).toBeGreaterThanOrEqual((now + 2) * 1000 - 50);
      expect(closedAt).toBeLessThan((now + 2) * 1000 + 1500);
    } finally {
      await s.close();
      await up.close();
      t.cleanup();
    }
  });
});
