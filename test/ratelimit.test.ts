import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineConfig } from '../src/config/index.js';
import { createLogger, manualClock } from '../src/core/index.js';
import { type RunningPortcullis, startPortcullis } from '../src/portcullis.js';
import { gcra, MemoryRateLimitStore } from '../src/ratelimit/index.js';
import { startRecordingUpstream, tempDir, testConfig } from './helpers.js';

describe('GCRA', () => {
  const quota = { limit: 10, windowMs: 10_000, burst: 3 }; // one per second, three at once

  it('allows a burst, then one request per emission interval, with exact retry-after', () => {
    const store = new MemoryRateLimitStore();
    const t0 = 1_000_000;
    expect([0, 1, 2].map(() => store.take('k', quota, t0))).toEqual([
      { allowed: true, remaining: 2, retryAfterMs: 0, resetMs: 1000 },
      { allowed: true, remaining: 1, retryAfterMs: 0, resetMs: 2000 },
      { allowed: true, remaining: 0, retryAfterMs: 0, resetMs: 3000 },
    ]);
    expect(store.take('k', quota, t0)).toEqual({
      allowed: false,
      remaining: 0,
      retryAfterMs: 1000,
      resetMs: 3000,
    });
    expect(store.take('k', quota, t0 + 999).allowed).toBe(false);
    expect(store.take('k', quota, t0 + 1000)).toMatchObject({ allowed: true, remaining: 0 });
    // A quiet period refills the burst, never beyond it.
    expect(store.take('k', quota, t0 + 60_000)).toMatchObject({ allowed: true, remaining: 2 });
    expect(store.take('other', quota, t0).remaining).toBe(2);
  });

  it('a denied request does not consume quota', () => {
    let tat: number | undefined;
    const q = { limit: 1, windowMs: 1000, burst: 1 };
    tat = gcra(tat, q, 0).tat;
    for (let i = 0; i < 5; i++) expect(gcra(tat, q, 10).tat).toBeUndefined();
    expect(gcra(tat, q, 1000).decision.allowed).toBe(true);
  });

  it('keeps its key count bounded; eviction only ever forgives', () => {
    const store = new MemoryRateLimitStore(100);
    for (let i = 0; i < 1000; i++) store.take(`u${i}`, { limit: 1, windowMs: 60_000, burst: 1 }, 0);
    expect(store.size).toBeLessThanOrEqual(100);
  });
});

describe('rate limiting at the gateway', () => {
  const t = tempDir();
  const clock = manualClock(Date.UTC(2026, 10, 23, 12));
  let pc: RunningPortcullis;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    const base = testConfig(t.dir, upstream.url);
    const loaded = defineConfig({
      ...base,
      routes: [
        {
          id: 'orders',
          path: '/api/orders',
          methods: ['GET'],
          upstream: 'app',
          rateLimit: { limit: 3, window: '1m' },
        },
        { id: 'order', path: '/api/orders/:id', methods: ['GET'], upstream: 'app' },
      ],
      policy: { rules: [{ id: 'read', routes: ['orders', 'order'], roles: ['viewer'] }] },
    });
    pc = await startPortcullis(loaded, { log: createLogger({ level: 'silent' }), clock });
    for (const name of ['ann', 'ben']) {
      await pc.core.identity.createUser({
        username: name,
        password: `${name}-password-1`,
        roles: ['viewer'],
      });
      const res = await fetch(`${pc.gatewayUrl}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: name, password: `${name}-password-1` }),
      });
      tokens[name] = (await res.json()).access_token;
    }
  });
  afterAll(async () => {
    await pc.close();
    await upstream.close();
    t.cleanup();
  });

  const call = (path: string, who: string) =>
    fetch(`${pc.gatewayUrl}${path}`, { headers: { authorization: `Bearer ${tokens[who]}` } });

  it('answers 429 with Retry-After past the quota, per principal and per route, and recovers', async () => {
    const first = await call('/api/orders', 'ann');
    expect(first.status).toBe(200);
    expect(first.headers.get('ratelimit-policy')).toBe('"orders";q=3;w=60');
    expect(first.headers.get('ratelimit')).toBe('"orders";r=2;t=20');
    expect((await call('/api/orders', 'ann')).status).toBe(200);
    expect((await call('/api/orders', 'ann')).status).toBe(200);

    const before = upstream.received.length;
    const limited = await call('/api/orders', 'ann');
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('20');
    expect(limited.headers.get('ratelimit')).toBe('"orders";r=0;t=20');
    expect((await limited.json()).error).toMatchObject({ code: 'rate_limited' });
    expect(upstream.received.length).toBe(before);

    // Another principal, and another route, have their own quota.
    expect((await call('/api/orders', 'ben')).status).toBe(200);
    expect((await call('/api/orders/1', 'ann')).status).toBe(200);

    clock.advance(20_000);
    expect((await call('/api/orders', 'ann')).status).toBe(200);
    expect((await call('/api/orders', 'ann')).status).toBe(429);

    // Every 429 is a refusal in the audit log.
    await pc.core.audit.flush();
    const limitedRecords = [];
    for await (const r of pc.core.store.audit.scan()) {
      const d = JSON.parse(r.data);
      if (r.type === 'gateway.decision' && d.code === 'rate_limited') limitedRecords.push(d);
    }
    expect(limitedRecords).toHaveLength(2);
    expect(limitedRecords[0]).toMatchObject({ outcome: 'deny', status: 429, route: 'orders' });
  });
});

describe('GCRA at epoch-sized times with a fractional interval', () => {
  it('allows exactly the burst (7 per second) and counts remaining down to 0', () => {
    for (let i = 0; i < 200; i++) {
      const store = new MemoryRateLimitStore();
      const now = Date.UTC(2026, 10, 23) + Math.floor(Math.random() * 1e9);
      const q = { limit: 7, windowMs: 1000, burst: 7 };
      const seen = Array.from({ length: 8 }, () => store.take('k', q, now));
      expect(seen.map((d) => d.allowed)).toEqual([true, true, true, true, true, true, true, false]);
      expect(seen.slice(0, 7).map((d) => d.remaining)).toEqual([6, 5, 4, 3, 2, 1, 0]);
    }
  });
});

describe('rate-limit tiers chosen by a principal attribute', () => {
  const t = tempDir();
  const clock = manualClock(Date.UTC(2026, 10, 23, 12));
  let pc: RunningPortcullis;
  let upstream: Awaited<ReturnType<typeof startRecordingUpstream>>;
  const tokens: Record<string, string> = {};
  const refresh: Record<string, string> = {};
  // Interval 30 s (free) and 12 s (gold): `t` of the RateLimit header is exact under the manual clock.
  const rateLimitTiers = { free: { limit: 2, window: '1m' }, gold: { limit: 5, window: '1m' } };

  const login = async (name: string) => {
    const res = await fetch(`${pc.gatewayUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: name, password: `${name}-password-1` }),
    });
    const body = await res.json();
    tokens[name] = body.access_token;
    refresh[name] = body.refresh_token;
  };

  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    const base = testConfig(t.dir, upstream.url);
    const tiers = { attribute: 'plan', default: 'free' };
    const loaded = defineConfig({
      ...base,
      rateLimitTiers,
      routes: [
        { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app', rateLimit: { tiers } },
        { id: 'open', path: '/open', methods: ['GET'], upstream: 'app', public: true, rateLimit: { tiers } },
      ],
      policy: { rules: [{ id: 'read', routes: ['orders'], roles: ['viewer'] }] },
    });
    pc = await startPortcullis(loaded, { log: createLogger({ level: 'silent' }), clock });
    const plans: Record<string, unknown> = { gia: 'gold', fay: 'free', una: 'bronze', num: 7, eve: 'free' };
    for (const name of ['gia', 'fay', 'una', 'num', 'nob', 'eve']) {
      await pc.core.identity.createUser({
        username: name,
        password: `${name}-password-1`,
        roles: ['viewer'],
        ...(name in plans ? { attributes: { plan: plans[name] } } : {}),
      });
      await login(name);
    }
  });
  afterAll(async () => {
    await pc.close();
    await upstream.close();
    t.cleanup();
  });

  const call = (who: string, token = tokens[who]) =>
    fetch(`${pc.gatewayUrl}/api/orders`, { headers: { authorization: `Bearer ${token}` } });
  const statuses = async (who: string, n: number) => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push((await call(who)).status);
    return out;
  };

  it('gives two users on one route the quotas and RateLimit-Policy of their tiers', async () => {
    const gold = await call('gia');
    expect(gold.status).toBe(200);
    expect(gold.headers.get('ratelimit-policy')).toBe('"orders:gold";q=5;w=60');
    expect(gold.headers.get('ratelimit')).toBe('"orders:gold";r=4;t=12');
    const free = await call('fay');
    expect(free.status).toBe(200);
    expect(free.headers.get('ratelimit-policy')).toBe('"orders:free";q=2;w=60');
    expect(free.headers.get('ratelimit')).toBe('"orders:free";r=1;t=30');

    expect(await statuses('gia', 5)).toEqual([200, 200, 200, 200, 429]);
    expect(await statuses('fay', 2)).toEqual([200, 429]);
    const limited = await call('fay');
    expect(limited.headers.get('ratelimit-policy')).toBe('"orders:free";q=2;w=60');
    expect(limited.headers.get('retry-after')).toBe('30');
  });

  it('gives the default tier to an unknown value, a non-string value and a missing attribute', async () => {
    for (const who of ['una', 'num', 'nob']) {
      const res = await call(who);
      expect(res.headers.get('ratelimit-policy'), who).toBe('"orders:free";q=2;w=60');
      expect(await statuses(who, 2), who).toEqual([200, 429]);
    }
  });

  it('gives anonymous callers (limited per address) the default tier', async () => {
    const res = await fetch(`${pc.gatewayUrl}/open`);
    expect(res.status).toBe(200);
    expect(res.headers.get('ratelimit-policy')).toBe('"open:free";q=2;w=60');
    expect(res.headers.get('ratelimit')).toBe('"open:free";r=1;t=30');
  });

  it('applies a new tier at once, mid-window, from the next token that carries it', async () => {
    expect(await statuses('eve', 3)).toEqual([200, 200, 429]);
    const eve = await pc.core.identity.findUser('eve');
    if (!eve) throw new Error('eve was not created');
    await pc.core.store.users.update(eve.id, { attributes: { plan: 'gold' } });
    const freeToken = tokens.eve as string;
    const res = await fetch(`${pc.gatewayUrl}/auth/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: refresh.eve }),
    });
    expect(res.status).toBe(200);
    tokens.eve = (await res.json()).access_token;

    // The gold bucket is a fresh one: the exhausted free quota does not carry over into the new tier…
    const upgraded = await call('eve');
    expect(upgraded.status).toBe(200);
    expect(upgraded.headers.get('ratelimit-policy')).toBe('"orders:gold";q=5;w=60');
    expect(upgraded.headers.get('ratelimit')).toBe('"orders:gold";r=4;t=12');
    // …and the old token, still saying `free`, still draws on the exhausted free bucket.
    expect((await call('eve', freeToken)).status).toBe(429);
  });

  it('refuses a config naming an unknown tier, with the field in the message', () => {
    const base = testConfig(t.dir, 'http://127.0.0.1:9');
    const route = { id: 'orders', path: '/api/orders', upstream: 'app' };
    expect(() =>
      defineConfig({
        ...base,
        rateLimitTiers,
        routes: [{ ...route, rateLimit: { tiers: { attribute: 'plan', default: 'platinum' } } }],
        policy: {},
      }),
    ).toThrow(
      /routes\[0\]\.rateLimit\.tiers\.default: unknown rate-limit tier "platinum" \(rateLimitTiers defines free, gold\)/,
    );
    expect(() =>
      defineConfig({
        ...base,
        routes: [{ ...route, rateLimit: { tiers: { attribute: 'plan', default: 'free' } } }],
        policy: {},
      }),
    ).toThrow(
      /routes\[0\]\.rateLimit\.tiers\.default: unknown rate-limit tier "free" \(rateLimitTiers defines none\)/,
    );
    expect(() =>
      defineConfig({
        ...base,
        rateLimitTiers,
        routes: [
          { ...route, rateLimit: { limit: 3, window: '1m', tiers: { attribute: 'plan', default: 'free' } } },
        ],
        policy: {},
      }),
    ).toThrow(/routes\[0\]\.rateLimit\.limit: limit cannot be combined with tiers/);
  });
});
