import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConfigInput, defineConfig } from '../src/config/index.js';
import { type Clock, createLogger } from '../src/core/index.js';
import { type RunningPortcullis, startPortcullis } from '../src/portcullis.js';

export function tempDir(prefix = 'portcullis-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An upstream that records exactly what reached it and answers 200 with the path it saw. */
export async function startRecordingUpstream(): Promise<{
  url: string;
  received: Received[];
  close: () => Promise<void>;
  server: Server;
}> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => {
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const text = JSON.stringify({ upstream: true, path: req.url });
      res.writeHead(200, {
        'content-type': 'application/json',
        server: 'upstream/1.0',
        'x-powered-by': 'demo',
      });
      res.end(text);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    server,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/**
 * An upstream that refuses every connection: port 1 (tcpmux) on loopback, which nothing here serves and
 * which `listen(0)` never hands out — unlike {@link unusedPort}, whose port another test running in
 * parallel may take in the meantime (a "dead" upstream that answers 200).
 */
export const REFUSING_UPSTREAM = 'http://127.0.0.1:1';

/** A port that was free a moment ago (for a listener to start on). */
export async function unusedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Cheap argon2id parameters so tests stay fast (production defaults are OWASP's). */
export const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 } as const;

/** Config overrides for tests; `identity` is merged onto the test issuer, audience and fast argon2. */
export type TestOverrides = Partial<Omit<ConfigInput, 'identity'>> & {
  identity?: Partial<ConfigInput['identity']>;
};

export function testConfig(dataDir: string, upstreamUrl: string, overrides: TestOverrides = {}): ConfigInput {
  const { identity, ...rest } = overrides;
  return {
    dataDir,
    log: { level: 'silent' },
    gateway: { listen: { host: '127.0.0.1', port: 0 } },
    admin: { listen: { host: '127.0.0.1', port: 0 } },
    identity: {
      issuer: 'http://portcullis.test',
      audience: 'portcullis',
      passwordHash: FAST_ARGON2,
      ...identity,
    },
    upstreams: { app: { url: upstreamUrl, timeout: '5s' } },
    routes: [
      { id: 'orders', path: '/api/orders', methods: ['GET', 'POST'], upstream: 'app' },
      { id: 'order', path: '/api/orders/:id', methods: ['GET'], upstream: 'app' },
      { id: 'admin', path: '/api/admin/*', methods: ['GET', 'POST'], upstream: 'app' },
    ],
    policy: {
      rules: [
        { id: 'read-orders', routes: ['orders', 'order'], methods: ['GET'], roles: ['viewer', 'admin'] },
        { id: 'admin-all', routes: ['orders', 'order', 'admin'], roles: ['admin'] },
      ],
    },
    audit: { decisions: 'batched', flushInterval: '10ms' },
    ...rest,
  };
}

export interface Stack {
  pc: RunningPortcullis;
  upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  dataDir: string;
  users: { admin: { username: string; password: string }; viewer: { username: string; password: string } };
  login(username: string, password: string): Promise<{ status: number; body: Record<string, unknown> }>;
  close(): Promise<void>;
}

/** The real gateway (real SQLite in a temp dir) in front of a recording upstream, with an admin and a viewer. */
export async function startStack(
  overrides: TestOverrides = {},
  upstreamUrl?: string,
  options: { clock?: Clock } = {},
): Promise<Stack> {
  const tmp = tempDir();
  const upstream = await startRecordingUpstream();
  const loaded = defineConfig(testConfig(tmp.dir, upstreamUrl ?? upstream.url, overrides));
  const pc = await startPortcullis(loaded, {
    log: createLogger({ level: 'silent' }),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const users = {
    admin: { username: 'alice', password: 'alice-password-123' },
    viewer: { username: 'victor', password: 'victor-password-123' },
  };
  await pc.core.identity.createUser({ ...users.admin, roles: ['admin'] });
  await pc.core.identity.createUser({ ...users.viewer, roles: ['viewer'] });
  return {
    pc,
    upstream,
    dataDir: tmp.dir,
    users,
    login: async (username, password) => {
      const res = await fetch(`${pc.gatewayUrl}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    close: async () => {
      await pc.close();
      await upstream.close();
      tmp.cleanup();
    },
  };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends exact bytes over a TCP socket (no client-side normalization of the target) and parses the
 * answer. For path tricks that `fetch` would rewrite or refuse.
 */
export function rawRequest(url: string, request: string | Buffer): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () => socket.destroy(new Error('raw request timed out')));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const head = text.slice(0, end === -1 ? text.length : end).split('\r\n');
      const status = Number(head[0]?.split(' ')[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      let body = end === -1 ? '' : text.slice(end + 4);
      if (headers['transfer-encoding'] === 'chunked') body = dechunk(body);
      resolve({ status, headers, body });
    });
    socket.write(request);
  });
}

function dechunk(s: string): string {
  let out = '';
  let rest = s;
  for (;;) {
    const nl = rest.indexOf('\r\n');
    if (nl === -1) return out;
    const size = Number.parseInt(rest.slice(0, nl), 16);
    if (!size) return out;
    out += rest.slice(nl + 2, nl + 2 + size);
    rest = rest.slice(nl + 2 + size + 2);
  }
}

/** A GET request line + headers for {@link rawRequest}. */
export function rawGet(target: string, headers: Record<string, string> = {}): string {
  const lines = [`GET ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Writes a test config as YAML (for CLI commands, which take a file). */
export async function writeConfigFile(
  dir: string,
  upstreamUrl: string,
  overrides: TestOverrides = {},
): Promise<string> {
  const { stringify } = await import('yaml');
  const file = join(dir, 'portcullis.yaml');
  writeFileSync(file, stringify({ ...testConfig('./data', upstreamUrl, overrides) }));
  return file;
}

/** Captures a command's output for assertions. */
export function captureIO(extra: Partial<import('../src/cli/io.js').CliIO> = {}) {
  let out = '';
  let err = '';
  return {
    io: {
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      env: {},
      ...extra,
    },
    out: () => out,
    err: () => err,
  };
}

/**
 * Waits until `out()` (a captured CLI's output) contains `text`, or `timeoutMs` pass. `portcullis up`
 * takes 1–2 s to start alone and several times that while the rest of the suite loads both cores.
 */
export async function waitForOutput(out: () => string, text: string, timeoutMs = 20_000): Promise<void> {
  for (let i = 0; i < timeoutMs / 50 && !out().includes(text); i++)
    await new Promise((r) => setTimeout(r, 50));
}

/** Polls `url` until something answers (any status) or `timeoutMs` pass. */
export async function waitForHttp(url: string, timeoutMs = 5_000): Promise<void> {
  for (let i = 0; i < timeoutMs / 50; i++) {
    try {
      await fetch(url);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Stops a child process we started: SIGTERM, then SIGKILL if it is still there 200 ms later. */
export async function stopChild(child: import('node:child_process').ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
