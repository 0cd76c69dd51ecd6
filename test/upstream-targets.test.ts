import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { defineConfig } from '../src/config/index.js';
import { createLogger } from '../src/core/index.js';
import { type RunningPortcullis, startPortcullis } from '../src/portcullis.js';
import { REFUSING_UPSTREAM, tempDir, testConfig } from './helpers.js';

/** A target that answers with its own name, records what reached it, and can be told to fail health checks. */
async function target(name: string) {
  const seen: string[] = [];
  let healthy = true;
  const server: Server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(healthy ? 200 : 503).end();
      return;
    }
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString();
    });
    req.on('end', () => {
      seen.push(`${req.method} ${req.url}${body ? ` ${body}` : ''}`);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(name);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    name,
    url,
    seen,
    setHealthy: (h: boolean) => {
      healthy = h;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A plain upstream on loopback for one test (closed after it); resolves with its URL. */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function gateway(
  upstream: Record<string, unknown>,
  log = createLogger({ level: 'silent' }),
): Promise<RunningPortcullis> {
  const tmp = tempDir();
  const config = testConfig(tmp.dir, 'http://127.0.0.1:1', {
    upstreams: { app: { timeout: '2s', ...upstream } as never },
    routes: [{ id: 'pub', path: '/pub/*', methods: ['GET', 'POST', 'PUT'], upstream: 'app', public: true }],
    policy: { rules: [] },
  });
  const pc = await startPortcullis(defineConfig(config), { log });
  cleanups.push(tmp.cleanup, () => pc.close());
  return pc;
}

async function call(pc: RunningPortcullis, method: string, path: string, body?: string) {
  const res = await fetch(`${pc.gatewayUrl}${path}`, { method, ...(body ? { body } : {}) });
  const text = await res.text();
  return { status: res.status, text };
}

/** Polls `cond` (bounded) until it holds. */
const eventually = async (cond: () => Promise<boolean>, ms = 5000) => {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
};

const round = async (pc: RunningPortcullis, tag: string) =>
  (await Promise.all([0, 1, 2, 3].map((i) => call(pc, 'GET', `/pub/${tag}-${i}`)))).map((x) => x.text);

describe('upstreams with several targets', () => {
  it('spreads requests round-robin over the targets', async () => {
    const [a, b, c] = await Promise.all([target('a'), target('b'), target('c')]);
    cleanups.push(a.close, b.close, c.close);
    const pc = await gateway({ targets: [a.url, b.url, c.url] });
    const answers: string[] = [];
    for (let i = 0; i < 9; i++) answers.push((await call(pc, 'GET', `/pub/${i}`)).text);
    expect(answers).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c']);
  });

  it('retries an idempotent request on another target when the connection fails, never a POST', async () => {
    const b = await target('b');
    cleanups.push(b.close);
    const dead = REFUSING_UPSTREAM;
    // The dead target comes first: the first request lands on it.
    const pc = await gateway({ targets: [dead, b.url] });
    const post = await call(pc, 'POST', '/pub/charge', 'amount=5');
    expect(post.status).toBe(502);
    expect(JSON.parse(post.text).error.code).toBe('upstream_unavailable');
    expect(b.seen).toEqual([]); // not sent twice: a POST may have had its effect on the first target

    const pc2 = await gateway({ targets: [dead, b.url] });
    const get = await call(pc2, 'GET', '/pub/report');
    expect(get).toEqual({ status: 200, text: 'b' });
    const put = await call(pc2, 'PUT', '/pub/doc', 'v2');
    expect(put).toEqual({ status: 200, text: 'b' });
    expect(b.seen).toEqual(['GET /pub/report', 'PUT /pub/doc v2']);
  });

  it('with retries: 0, a failed connection is the answer', async () => {
    const b = await target('b');
    cleanups.push(b.close);
    const dead = REFUSING_UPSTREAM;
    const pc = await gateway({ targets: [dead, b.url], retries: 0 });
    expect((await call(pc, 'GET', '/pub/x')).status).toBe(502);
    // The failed target left the rotation (passive check): the next requests all reach b.
    for (let i = 0; i < 4; i++) expect((await call(pc, 'GET', `/pub/${i}`)).text).toBe('b');
  });

  it('takes a target that fails its health checks out of rotation, and back when it passes', async () => {
    const [a, b] = await Promise.all([target('a'), target('b')]);
    cleanups.push(a.close, b.close);
    const pc = await gateway({
      targets: [a.url, b.url],
      healthCheck: {
        path: '/healthz',
        interval: '50ms',
        timeout: '1s',
        unhealthyThreshold: 2,
        healthyThreshold: 2,
      },
    });
    a.setHealthy(false);
    // Two failed checks: a is out — a whole round of requests avoids it.
    expect(await eventually(async () => (await round(pc, 'probe')).every((x) => x === 'b'))).toBe(true);
    const before = a.seen.length;
    for (let i = 0; i < 6; i++) expect((await call(pc, 'GET', `/pub/out-${i}`)).text).toBe('b');
    expect(a.seen.length).toBe(before);

    a.setHealthy(true);
    expect(await eventually(async () => (await round(pc, 'back')).includes('a'))).toBe(true);
  });

  it('when no target is healthy, still tries them (panic routing) rather than refusing outright', async () => {
    const a = await target('a');
    cleanups.push(a.close);
    const pc = await gateway({
      targets: [a.url],
      healthCheck: { path: '/healthz', interval: '50ms', timeout: '1s', unhealthyThreshold: 1 },
    });
    a.setHealthy(false);
    await new Promise((r) => setTimeout(r, 200));
    expect(await call(pc, 'GET', '/pub/anyway')).toEqual({ status: 200, text: 'a' });
  });

  it('config: exactly one of url and targets; mtls needs https targets', () => {
    const base = (u: Record<string, unknown>) =>
      testConfig('/tmp/x', 'http://127.0.0.1:1', { upstreams: { app: u as never } });
    expect(() => defineConfig(base({ url: 'http://127.0.0.1:1', targets: ['http://127.0.0.1:2'] }))).toThrow(
      /exactly one of url, targets/,
    );
    expect(() => defineConfig(base({}))).toThrow(/exactly one of url, targets/);
    expect(() =>
      defineConfig(
        base({
          targets: ['http://127.0.0.1:2'],
          mtls: { spiffeId: 'spiffe://x/y', bundleFile: 'b', certFile: 'c', keyFile: 'k' },
        }),
      ),
    ).toThrow(/https targets/);
    const ok = defineConfig(base({ targets: ['http://127.0.0.1:2/ignored', 'http://127.0.0.1:3'] }));
    expect(ok.config.upstreams.app?.targets).toEqual(['http://127.0.0.1:2', 'http://127.0.0.1:3']);
  });
});

/** Writes `chunk` `count` times as fast as the socket takes it (waiting for 'drain'), then ends. */
function writeChunks(res: ServerResponse, chunk: Buffer, count: number): void {
  let left = count;
  const more = () => {
    while (left > 0) {
      left -= 1;
      if (!res.write(chunk)) return void res.once('drain', more);
    }
    res.end();
  };
  more();
}

describe('answers stream through the gateway', () => {
  it('a large answer arrives whole (backpressure), and a client that leaves aborts the upstream request', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let aborted = false;
    const url = await serve((req, res) => {
      if (req.url === '/pub/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        writeChunks(res, chunk, 128); // 8 MiB
        return;
      }
      // Endless: until the gateway gives up on it.
      res.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => res.write('tick\n'), 10);
      res.on('close', () => {
        clearInterval(timer);
        aborted = !res.writableEnded;
      });
    });
    const pc = await gateway({ url });
    const big = await fetch(`${pc.gatewayUrl}/pub/big`);
    expect(big.status).toBe(200);
    expect((await big.arrayBuffer()).byteLength).toBe(128 * chunk.length);

    const controller = new AbortController();
    const endless = await fetch(`${pc.gatewayUrl}/pub/endless`, { signal: controller.signal });
    const reader = endless.body?.getReader();
    await reader?.read();
    controller.abort();
    expect(await eventually(async () => aborted, 3000)).toBe(true);
  });

  it('an upgrade request served as a plain request gets a large answer whole (its socket drains too)', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'y');
    const url = await serve((_req, res) => {
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': String(64 * chunk.length),
      });
      writeChunks(res, chunk, 64);
    });
    const pc = await gateway({ url });
    // Not a WebSocket handshake: node:http hands it to the upgrade listener all the same.
    const socket = connect(Number(new URL(pc.gatewayUrl).port), '127.0.0.1');
    let received = 0;
    const closed = new Promise<void>((r) => socket.on('close', () => r()));
    socket.on('data', (c: Buffer) => {
      received += c.length;
    });
    socket.write('GET /pub/big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n');
    // It used to stall after the first socket buffer's worth: the response never saw its socket drain.
    const done = await Promise.race([
      closed.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 5000)),
    ]);
    socket.destroy();
    expect(done).toBe(true);
    expect(received).toBeGreaterThan(64 * chunk.length);
  });

  it('a client that leaves before the answer aborts the upstream request, and is no upstream failure', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', destination: { write: (l: string) => void lines.push(l) } });
    let aborted = false;
    const url = await serve((_req, res) => {
      // Answers only after the client has gone.
      const timer = setTimeout(() => res.writeHead(200).end('late'), 1500);
      res.on('close', () => {
        clearTimeout(timer);
        aborted = !res.writableEnded;
      });
    });
    const pc = await gateway({ url }, log);
    const controller = new AbortController();
    const gone = fetch(`${pc.gatewayUrl}/pub/slow`, { signal: controller.signal }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    controller.abort();
    await gone;
    expect(await eventually(async () => aborted, 3000)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    const refused = lines
      .map((l) => JSON.parse(l) as { msg: string; code?: string })
      .filter((l) => l.msg === 'request refused');
    expect(refused).toEqual([]);
  });
});
