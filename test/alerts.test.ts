import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createTcpServer, type Server } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Alert,
  AlertEngine,
  type AlertRule,
  formatRfc5424,
  JsonLinesFileSink,
  StdoutSink,
  SyslogSink,
  WebhookSink,
} from '../src/audit/index.js';
import { createLogger, manualClock } from '../src/core/index.js';
import type { AuditRecord } from '../src/store/index.js';
import { type Stack, startStack, tempDir } from './helpers.js';

const log = createLogger({ level: 'silent' });
let seq = 0;
const rec = (type: string, data: Record<string, unknown>): AuditRecord => ({
  seq: ++seq,
  ts: 0,
  type,
  data: JSON.stringify(data),
  prevHash: '',
  hash: '',
});
const alert = (over: Partial<Alert> = {}): Alert => ({
  rule: 'login-failures',
  severity: 'warning',
  group: 'mallory',
  count: 5,
  windowMs: 300_000,
  at: Date.UTC(2026, 10, 23, 12),
  seqs: [1, 2, 3, 4, 5],
  summary: 'login-failures: 5 × auth.login.failed for username=mallory within 300s',
  ...over,
});

describe('alert rules (sliding window, grouping, suppression) on a controlled clock', () => {
  const rule: AlertRule = {
    id: 'login-failures',
    type: 'auth.login.*',
    where: { reason: 'bad_password' },
    groupBy: 'username',
    threshold: 3,
    windowMs: 60_000,
    suppressMs: 300_000,
    severity: 'warning',
  };

  it('fires at the threshold within the window, per group, then stays quiet for the suppression period', () => {
    const clock = manualClock(0);
    const fired: Alert[] = [];
    const engine = new AlertEngine({ rules: [rule], sinks: [], clock, log, onAlert: (a) => fired.push(a) });
    const fail = (username: string, reason = 'bad_password') =>
      engine.observe([rec('auth.login.failed', { username, reason })]);

    fail('ann');
    clock.advance(30_000);
    fail('ann');
    fail('bob');
    fail('ann', 'unknown_user'); // does not match `where`
    engine.observe([rec('auth.login.succeeded', { username: 'ann' })]); // type matches the glob, `where` does not
    expect(fired).toEqual([]);
    clock.advance(29_000);
    fail('ann');
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({ rule: 'login-failures', group: 'ann', count: 3, severity: 'warning' });
    expect(fired[0]?.seqs).toHaveLength(3);

    for (let i = 0; i < 5; i++) fail('ann'); // suppressed
    expect(fired).toHaveLength(1);
    clock.advance(300_001);
    fail('ann');
    fail('ann');
    fail('ann');
    expect(fired).toHaveLength(2);

    // Old hits slide out of the window: two now and one 61 s later do not fire.
    fail('bob');
    clock.advance(61_000);
    fail('bob');
    expect(fired).toHaveLength(2);
  });

  it('keeps memory bounded by dropping the least recently seen groups', () => {
    const fired: Alert[] = [];
    const engine = new AlertEngine({
      rules: [{ ...rule, threshold: 2 }],
      sinks: [],
      clock: manualClock(0),
      log,
      maxGroups: 10,
      onAlert: (a) => fired.push(a),
    });
    engine.observe([rec('auth.login.failed', { username: 'first', reason: 'bad_password' })]);
    for (let i = 0; i < 20; i++)
      engine.observe([rec('auth.login.failed', { username: `u${i}`, reason: 'bad_password' })]);
    engine.observe([rec('auth.login.failed', { username: 'first', reason: 'bad_password' })]);
    expect(fired).toEqual([]); // 'first' was evicted, so its count restarted
  });
});

describe('alert sinks against real loopback receivers', () => {
  const t = tempDir();
  afterAll(() => t.cleanup());

  it('webhook: retries a failing receiver with back-off, delivers once', async () => {
    const bodies: string[] = [];
    let calls = 0;
    const server = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        calls += 1;
        if (calls < 3) {
          res.writeHead(503).end();
          return;
        }
        bodies.push(body);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    const sink = new WebhookSink({
      url: `http://127.0.0.1:${port}/hook`,
      timeoutMs: 2000,
      maxQueue: 10,
      maxAttempts: 5,
    });
    sink.send(alert());
    await sink.idle();
    await sink.close();
    server.close();
    expect(calls).toBe(3);
    expect(bodies.map((b) => JSON.parse(b).alert.rule)).toEqual(['login-failures']);
  });

  it('webhook: back-pressure drops the oldest past the queue bound, and gives up after the attempts', async () => {
    const drops: string[] = [];
    const sink = new WebhookSink({
      url: 'http://127.0.0.1:9/unreachable',
      timeoutMs: 200,
      maxQueue: 2,
      maxAttempts: 1,
      onDrop: (a, why) => drops.push(`${a.group}:${why}`),
    });
    for (const g of ['a', 'b', 'c', 'd']) sink.send(alert({ group: g }));
    await sink.idle();
    await sink.close();
    expect(drops).toContain('b:queue_full');
    expect(drops.filter((d) => d.endsWith('gave_up'))).toHaveLength(3);
  });

  /** Splits RFC 6587 octet-counted frames (lengths in bytes) out of a byte stream. */
  const framesOf = (frames: string[]) => {
    let buf = Buffer.alloc(0);
    return (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const sp = buf.indexOf(0x20);
        const len = Number(buf.subarray(0, sp).toString());
        if (sp < 1 || !Number.isSafeInteger(len) || buf.length < sp + 1 + len) return;
        frames.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
        buf = buf.subarray(sp + 1 + len);
      }
    };
  };
  const collect = (server: Server, frames: string[]) => {
    server.on('connection', (socket) => socket.on('data', framesOf(frames)));
  };
  const RFC5424 =
    /^<84>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ portcullis \d+ login-failures \[portcullis@32473 rule="login-failures" group="mallory" count="5" seqs="1,2,3,4,5"\] login-failures: 5 × /;

  it('syslog over TCP: RFC 5424 with structured data, RFC 6587 octet counting', async () => {
    const frames: string[] = [];
    const server = createTcpServer();
    collect(server, frames);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const sink = new SyslogSink({
      host: '127.0.0.1',
      port: (server.address() as AddressInfo).port,
      appName: 'portcullis',
      maxQueue: 10,
      maxAttempts: 3,
    });
    sink.send(alert());
    sink.send(
      alert({ severity: 'critical', rule: 'refresh-token-reuse', group: 'sid-1', count: 1, seqs: [9] }),
    );
    await sink.idle();
    for (let i = 0; i < 50 && frames.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    await sink.close();
    server.close();
    expect(frames[0]).toMatch(RFC5424);
    expect(frames[1]).toMatch(
      /^<82>1 .* refresh-token-reuse \[portcullis@32473 rule="refresh-token-reuse" group="sid-1" count="1" seqs="9"\]/,
    );
  });

  it('syslog over TLS (RFC 5425) with a private CA', async () => {
    const dir = join(t.dir, 'tls');
    execFileSync('mkdir', ['-p', dir]);
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    const frames: string[] = [];
    const server = createTlsServer({ key: readFileSync(join(dir, 'key.pem')), cert });
    server.on('secureConnection', (socket) => socket.on('data', framesOf(frames)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const sink = new SyslogSink({
      host: '127.0.0.1',
      port,
      tls: { ca: cert, servername: 'localhost' },
      appName: 'portcullis',
      maxQueue: 10,
      maxAttempts: 3,
    });
    sink.send(alert());
    await sink.idle();
    for (let i = 0; i < 50 && frames.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    await sink.close();
    // Without the CA the collector is not trusted: nothing is sent.
    const drops: string[] = [];
    const untrusted = new SyslogSink({
      host: '127.0.0.1',
      port,
      tls: {},
      appName: 'portcullis',
      maxQueue: 10,
      maxAttempts: 1,
      onDrop: (_a, why) => drops.push(why),
    });
    untrusted.send(alert());
    await untrusted.idle();
    await untrusted.close();
    server.close();
    expect(frames).toHaveLength(1);
    expect(frames[0]).toMatch(RFC5424);
    expect(drops).toEqual(['gave_up']);
  });

  it('JSON-lines file: rotates by size and keeps the configured number of files', () => {
    const path = join(t.dir, 'alerts', 'alerts.jsonl');
    const sink = new JsonLinesFileSink(path, { maxBytes: 1024, keep: 2 });
    for (let i = 0; i < 20; i++) sink.send(alert({ group: `g${i}` }));
    const files = readdirSync(join(t.dir, 'alerts')).sort();
    expect(files).toEqual(['alerts.jsonl', 'alerts.jsonl.1', 'alerts.jsonl.2']);
    const newest = readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).group);
    expect(newest.at(-1)).toBe('g19');
    for (const f of files) expect(readFileSync(join(t.dir, 'alerts', f)).length).toBeLessThanOrEqual(1024);
  });

  it('stdout: one JSON line per alert; formatRfc5424 escapes structured-data values', () => {
    let out = '';
    new StdoutSink({ write: (s: string) => (out += s) }).send(alert());
    expect(JSON.parse(out).alert.rule).toBe('login-failures');
    expect(formatRfc5424(alert({ group: 'a"b]c\\d' }), 'app', 'host')).toContain('group="a\\"b\\]c\\\\d"');
  });
});

describe('alerts end to end: failed logins through the gateway', () => {
  let s: Stack;
  const received: Array<{ alert: Alert }> = [];
  let hook: ReturnType<typeof createHttpServer>;
  beforeAll(async () => {
    hook = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        received.push(JSON.parse(body));
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    s = await startStack({
      alerts: {
        sinks: [{ type: 'webhook', url: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/` }],
      },
      // Five failures in a row, without the login back-off in the way.
      identity: {
        lockout: { freeAttempts: 10 },
      },
    });
  });
  afterAll(async () => {
    await s.close();
    hook.close();
  });

  it('five wrong passwords for one account fire the default rule: webhook, audit record, metric', async () => {
    for (let i = 0; i < 5; i++)
      expect((await s.login(s.users.viewer.username, `wrong-${i}-password`)).status).toBe(401);
    for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(received.map((r) => r.alert.rule)).toEqual(['login-failures']);
    const hashedUser = received[0]?.alert.group;
    expect(hashedUser).toMatch(/^hmac-sha256:/); // grouped by the HMAC'd username: no username leaves in clear
    await s.pc.core.audit.flush();
    const alerts = [];
    for await (const r of s.pc.core.store.audit.scan())
      if (r.type === 'security.alert') alerts.push(JSON.parse(r.data));
    expect(alerts).toMatchObject([{ rule: 'login-failures', count: 5, severity: 'warning' }]);
    const metrics = await (await fetch(`${s.pc.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_alerts_fired_total\{rule="login-failures",severity="warning"\} 1/);
  });
});
