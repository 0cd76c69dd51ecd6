import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Secret, TOTP } from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, manualClock } from '../src/core/index.js';
import {
  GeoIp,
  hourOfWeek,
  PrefixSet,
  parseThreatList,
  type RiskAssessment,
  RiskEngine,
  type RiskSettings,
  ThreatIntel,
} from '../src/risk/index.js';
import { openSqliteStore } from '../src/store/index.js';
import { type Stack, startStack, tempDir } from './helpers.js';
import { buildMmdb } from './mmdb-writer.js';

const log = createLogger({ level: 'silent' });
const HOUR = 3_600_000;
const LONDON = '81.2.69.160';
const TOKYO = '203.0.113.9';
const BERLIN_V6 = '2001:db8::42';
const OTHER_ASN = '198.51.100.7';

/** A small geo database with exactly the networks these tests use (built with test/mmdb-writer.ts). */
function geoDb(dir: string): string {
  const file = join(dir, 'geo.mmdb');
  writeFileSync(
    file,
    buildMmdb({
      '81.2.69.0/24': {
        country: { iso_code: 'GB' },
        location: { latitude: 51.5074, longitude: -0.1278, accuracy_radius: 20 },
        autonomous_system_number: 64501,
      },
      '203.0.113.0/24': {
        country: { iso_code: 'JP' },
        location: { latitude: 35.6762, longitude: 139.6503, accuracy_radius: 50 },
        autonomous_system_number: 64502,
      },
      '2001:db8::/32': {
        country: { iso_code: 'DE' },
        location: { latitude: 52.52, longitude: 13.405, accuracy_radius: 50 },
        autonomous_system_number: 64503,
      },
      '81.2.70.0/24': {
        country: { iso_code: 'GB' },
        location: { latitude: 51.52, longitude: -0.1, accuracy_radius: 20 },
        autonomous_system_number: 64600,
      },
      '198.51.100.0/24': {
        country: { iso_code: 'GB' },
        location: { latitude: 51.45, longitude: -0.97, accuracy_radius: 20 },
        autonomous_system_number: 64999,
      },
    }),
  );
  return file;
}

const SETTINGS: RiskSettings = {
  thresholds: { challenge: 40, deny: 80 },
  weights: {
    impossibleTravel: 60,
    newCountry: 20,
    newAsn: 10,
    unusualTime: 15,
    threatIntel: 70,
    requestVelocity: 20,
    failureVelocity: 25,
    staleAuthentication: 10,
    noRecentMfa: 5,
    newDevice: 15,
    unmanagedDevice: 0,
    untrustedDevice: 10,
    noncompliantDevice: 20,
  },
  travel: { maxSpeedKmh: 1000, toleranceKm: 100 },
  unusualTime: { minObservations: 50, rareBelow: 0.01 },
  velocity: { requestsPerMinute: 100, failuresPerMinute: 10 },
  staleAuthenticationMs: 12 * HOUR,
};

describe('prefix tries and threat lists', () => {
  it('matches IPv4 and IPv6 networks by prefix, including IPv4-mapped IPv6', () => {
    const set = new PrefixSet();
    for (const c of ['10.0.0.0/8', '192.0.2.7', '2001:db8:abcd::/48', '::1']) expect(set.add(c)).toBe(true);
    expect(set.add('not an ip')).toBe(false);
    expect(set.add('10.0.0.0/33')).toBe(false);
    expect(set.has('10.255.1.2')).toBe(true);
    expect(set.has('11.0.0.1')).toBe(false);
    expect(set.has('192.0.2.7')).toBe(true);
    expect(set.has('192.0.2.8')).toBe(false);
    expect(set.has('::ffff:10.1.2.3')).toBe(true);
    expect(set.has('2001:db8:abcd:1::9')).toBe(true);
    expect(set.has('2001:db8:abce::1')).toBe(false);
    expect(set.has('::1')).toBe(true);
    expect(set.has('::2')).toBe(false);
  });

  it('reads plain, FireHOL netset and Tor exit-list formats', () => {
    expect(
      parseThreatList('# comment\n198.51.100.0/24\n203.0.113.5 # inline\n\nbogus\n', 'plain'),
    ).toMatchObject({ rejected: 1 });
    const netset = parseThreatList(
      '#\n# FireHOL level1\n#\n1.2.3.0/24\n5.6.7.8\n2a00:1::/32\n',
      'netset',
    ).set;
    expect([netset.has('1.2.3.99'), netset.has('5.6.7.8'), netset.has('2a00:1:2::3'), netset.size]).toEqual([
      true,
      true,
      true,
      3,
    ]);
    const tor = parseThreatList(
      'ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\nPublished 2026-11-30 12:00:00\nLastStatus 2026-11-30 13:00:00\nExitAddress 192.0.2.66 2026-11-30 13:05:00\n',
      'tor',
    ).set;
    expect([tor.has('192.0.2.66'), tor.size]).toEqual([true, 1]);
  });

  it('reloads a list from its file and keeps the old one when the new one cannot be read', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const file = join(dir, 'bad.txt');
      writeFileSync(file, '192.0.2.1\n');
      const ti = new ThreatIntel([{ name: 'blocklist', source: file, format: 'plain' }], log);
      await ti.reload();
      expect(ti.match('192.0.2.1')).toEqual(['blocklist']);
      writeFileSync(file, '192.0.2.2\n');
      await ti.reload();
      expect([ti.match('192.0.2.1'), ti.match('192.0.2.2')]).toEqual([[], ['blocklist']]);
      const { rmSync } = await import('node:fs');
      rmSync(file);
      await ti.reload();
      expect(ti.match('192.0.2.2')).toEqual(['blocklist']);
    } finally {
      cleanup();
    }
  });
});

describe('risk signals (manual clock, test geo database)', () => {
  let dir: string;
  let cleanup: () => void;
  let geo: GeoIp;
  beforeAll(() => {
    ({ dir, cleanup } = tempDir());
    geo = GeoIp.open([geoDb(dir)]).geo;
  });
  afterAll(() => cleanup());

  const engine = (clock = manualClock(Date.UTC(2026, 10, 30, 10)), extra: Partial<RiskSettings> = {}) => ({
    clock,
    e: new RiskEngine({ settings: { ...SETTINGS, ...extra }, geo, clock, log }),
  });
  const user = { id: 'u1', kind: 'user' as const, amr: ['pwd', 'otp'], authTime: Date.UTC(2026, 10, 30, 9) };
  const names = (a: RiskAssessment) => a.signals.map((s) => s.name);
  const step = (e: RiskEngine, ip: string, who = user) => {
    const a = e.assess(who, ip) as RiskAssessment;
    e.observe(who, a);
    return a;
  };

  it('geo-IP: country, location and ASN, IPv4 and IPv6', () => {
    expect(geo.lookup(LONDON)).toMatchObject({ country: 'GB', asn: 64501, accuracyKm: 20 });
    expect(geo.lookup(BERLIN_V6)).toMatchObject({ country: 'DE', latitude: 52.52 });
    expect(geo.lookup('192.0.2.1')).toEqual({});
  });

  it('impossible travel: London then Tokyo within an hour; not after a day', () => {
    const { clock, e } = engine();
    expect(names(step(e, LONDON))).toEqual([]);
    clock.advance(HOUR);
    const a = e.assess(user, TOKYO) as RiskAssessment;
    expect(a.signals.find((s) => s.name === 'impossible_travel')?.evidence).toMatchObject({
      from: 'GB',
      to: 'JP',
      minutes: 60,
    });
    expect(names(a)).toEqual(['impossible_travel', 'new_country', 'new_asn']);
    expect(a).toMatchObject({ score: 90, outcome: 'deny', level: 'high' });
    clock.advance(23 * HOUR);
    expect(names(e.assess({ ...user, authTime: clock.now() }, TOKYO) as RiskAssessment)).toEqual([
      'new_country',
      'new_asn',
    ]);
  });

  it('measures travel from where the principal was last located, not from its last (unlocated) request', () => {
    const { clock, e } = engine();
    step(e, LONDON);
    for (let h = 0; h < 10; h++) {
      clock.advance(HOUR);
      step(e, '192.0.2.1'); // no geo match
    }
    clock.advance(HOUR);
    // London → Tokyo in 11 h is ~870 km/h: possible.
    expect(names(e.assess({ ...user, authTime: clock.now() }, TOKYO) as RiskAssessment)).not.toContain(
      'impossible_travel',
    );
  });

  it('a rise is remembered until the session is calm again; the next rise needs a new step-up', () => {
    const { clock, e } = engine();
    const first = e.raisedAt('s1');
    expect(first.first).toBe(true);
    clock.advance(60_000);
    expect(e.raisedAt('s1')).toEqual({ at: first.at, first: false });
    e.clearRaised('s1');
    clock.advance(3 * 24 * HOUR);
    expect(e.raisedAt('s1')).toEqual({ at: clock.now(), first: true });
  });

  it('tolerates geo inaccuracy: two nearby addresses minutes apart are not travel', () => {
    const { clock, e } = engine();
    step(e, LONDON);
    clock.advance(60_000);
    const a = e.assess(user, OTHER_ASN) as RiskAssessment; // ~60 km away, 1 minute later
    expect(names(a)).toEqual(['new_asn']);
  });

  it('learns usual hours: nothing before minObservations; then a 3 a.m. Sunday request is unusual', () => {
    const { clock, e } = engine();
    const start = Date.UTC(2026, 10, 2, 9); // Monday 09:00
    for (let week = 0; week < 3; week++)
      for (let day = 0; day < 5; day++)
        for (let h = 0; h < 8; h++) {
          clock.set(start + week * 7 * 24 * HOUR + day * 24 * HOUR + h * HOUR);
          const a = step(e, LONDON);
          if (week === 0 && day === 0) expect(names(a)).not.toContain('unusual_time');
        }
    clock.set(Date.UTC(2026, 10, 29, 3)); // Sunday 03:00
    const odd = e.assess({ ...user, authTime: clock.now() }, LONDON) as RiskAssessment;
    expect(odd.signals.find((s) => s.name === 'unusual_time')?.evidence).toMatchObject({
      hourOfWeek: hourOfWeek(clock.now()),
      share: 0,
    });
    clock.set(Date.UTC(2026, 11, 1, 10)); // Tuesday 10:00
    expect(names(e.assess({ ...user, authTime: clock.now() }, LONDON) as RiskAssessment)).not.toContain(
      'unusual_time',
    );
  });

  it('threat lists, velocity, stale authentication and no MFA; the score is capped at 100', async () => {
    const { dir: d2, cleanup: c2 } = tempDir();
    try {
      const file = join(d2, 'tor.txt');
      writeFileSync(file, 'ExitAddress 203.0.113.9 2026-11-30 10:00:00\n');
      const threats = new ThreatIntel([{ name: 'tor-exits', source: file, format: 'tor' }], log);
      await threats.reload();
      const clock = manualClock(Date.UTC(2026, 10, 30, 10));
      const e = new RiskEngine({ settings: SETTINGS, geo, threats, clock, log });
      const pwdOnly = { id: 'u2', kind: 'user' as const, amr: ['pwd'], authTime: clock.now() - 13 * HOUR };
      const a = e.assess(pwdOnly, TOKYO) as RiskAssessment;
      expect(a.signals.map((s) => [s.name, s.weight])).toEqual([
        ['threat_intel', 70],
        ['stale_authentication', 10],
        ['no_mfa', 5],
      ]);
      expect(a).toMatchObject({ score: 85, outcome: 'deny' });
      for (let i = 0; i < 11; i++) e.recordFailure(LONDON);
      for (let i = 0; i < 100; i++) e.assess(user, LONDON);
      const busy = e.assess(user, LONDON) as RiskAssessment;
      expect(busy.signals.map((s) => s.name)).toEqual(['request_velocity', 'failure_velocity']);
      expect(busy.score).toBe(45);
      // A minute later both windows have emptied.
      clock.advance(61_000);
      expect((e.assess(user, LONDON) as RiskAssessment).signals).toEqual([]);
      // Capped: threat + travel + new country + … stays at 100.
      const capped = new RiskEngine({
        settings: { ...SETTINGS, weights: { ...SETTINGS.weights, threatIntel: 90 } },
        geo,
        threats,
        clock,
        log,
      });
      step(capped, LONDON, pwdOnly);
      clock.advance(60_000);
      expect((capped.assess(pwdOnly, TOKYO) as RiskAssessment).score).toBe(100);
    } finally {
      c2();
    }
  });

  it('devices: a new device for this user, an untrusted one, a non-compliant one; never more than no device', () => {
    // Device signals are on when unmanagedDevice is weighted; off (and silent) by default.
    const off = engine().e;
    expect(names(off.assess(user, LONDON) as RiskAssessment)).toEqual([]);
    expect(
      names(off.assess(user, LONDON, { id: 'x', trusted: false, compliant: false }) as RiskAssessment),
    ).toEqual([]);
    const { e, clock } = engine(undefined, { weights: { ...SETTINGS.weights, unmanagedDevice: 50 } });
    const laptop = { id: 'laptop', trusted: true, compliant: true };
    const devNames = (a: RiskAssessment) => names(a).filter((n) => n.endsWith('_device'));
    // First request ever: no history, so nothing is "new" yet; the profile learns the laptop.
    const first = e.assess(user, LONDON, laptop) as RiskAssessment;
    expect(devNames(first)).toEqual([]);
    e.observe(user, first, laptop.id);
    clock.advance(60_000);
    expect(devNames(e.assess(user, LONDON, laptop) as RiskAssessment)).toEqual([]);
    const phone = { id: 'phone', trusted: false, compliant: false };
    const a = e.assess(user, LONDON, phone) as RiskAssessment;
    expect(a.signals.filter((s) => s.name.endsWith('_device'))).toEqual([
      { name: 'new_device', weight: 15, evidence: { device: 'phone', known: 1 } },
      { name: 'untrusted_device', weight: 10, evidence: { device: 'phone' } },
      { name: 'noncompliant_device', weight: 20, evidence: { device: 'phone' } },
    ]);
    expect(a).toMatchObject({ score: 45, outcome: 'challenge' });
    e.observe(user, a, phone.id);
    // Known now; still untrusted and not compliant.
    expect(devNames(e.assess(user, LONDON, phone) as RiskAssessment)).toEqual([
      'untrusted_device',
      'noncompliant_device',
    ]);
    // No device at all scores the cap; a proven device never more than that (leaving the proof out
    // must not be the way to look less risky).
    const none = e.assess(user, LONDON) as RiskAssessment;
    expect(none.signals.filter((x) => x.name.endsWith('_device'))).toEqual([
      { name: 'unmanaged_device', weight: 50, evidence: {} },
    ]);
    const tight = engine(clock, { weights: { ...SETTINGS.weights, unmanagedDevice: 20 } }).e;
    tight.observe(user, tight.assess(user, LONDON, laptop) as RiskAssessment, laptop.id);
    const capped = tight.assess(user, LONDON, {
      id: 'tablet',
      trusted: false,
      compliant: false,
    }) as RiskAssessment;
    expect(capped.signals.filter((x) => x.name.endsWith('_device')).map((x) => [x.name, x.weight])).toEqual([
      ['new_device', 15],
      ['untrusted_device', 5],
    ]);
    // Services are never judged by device.
    expect(devNames(e.assess({ id: 'svc', kind: 'service', amr: [] }, LONDON) as RiskAssessment)).toEqual([]);
  });

  it('persists profiles: a restarted engine still knows the usual country', async () => {
    const { dir: d3, cleanup: c3 } = tempDir();
    const store = openSqliteStore(join(d3, 'p.db'));
    try {
      const clock = manualClock(Date.UTC(2026, 10, 30, 10));
      const first = new RiskEngine({ settings: SETTINGS, geo, store: store.riskProfiles, clock, log });
      const a = (await first.assess(user, LONDON)) as RiskAssessment;
      first.observe(user, a);
      await first.flush();
      const second = new RiskEngine({ settings: SETTINGS, geo, store: store.riskProfiles, clock, log });
      clock.advance(48 * HOUR);
      const b = await second.assess({ ...user, authTime: clock.now() }, BERLIN_V6);
      expect(b.signals.map((s) => s.name)).toEqual(['new_country', 'new_asn']);
    } finally {
      await store.close();
      c3();
    }
  });
});

describe('risk at the gateway: step-up and revocation mid-session', () => {
  const clock = manualClock(Date.UTC(2026, 10, 30, 10));
  let s: Stack;
  let cleanup: () => void;
  beforeAll(async () => {
    const t = tempDir();
    cleanup = t.cleanup;
    const threats = join(t.dir, 'blocklist.netset');
    writeFileSync(threats, '# test list\n198.51.100.0/24\n203.0.113.128/25\n');
    s = await startStack(
      {
        gateway: { listen: { host: '127.0.0.1', port: 0 }, trustedProxies: ['127.0.0.1/32'] },
        identity: {
          accessTokenTtl: '15m',
        },
        risk: {
          geoip: [geoDb(t.dir)],
          threatLists: [{ name: 'blocklist', source: threats, format: 'netset' }],
          weights: { newCountry: 0 },
        },
        routes: [
          { id: 'orders', path: '/api/orders', methods: ['GET'], upstream: 'app' },
          { id: 'sensitive', path: '/api/sensitive', methods: ['GET'], upstream: 'app' },
        ],
        policy: {
          rules: [
            { id: 'read', roles: ['viewer', 'admin'] },
            // Policy reads the score too: any risk at all keeps this route closed.
            {
              id: 'calm-only',
              effect: 'deny',
              routes: ['sensitive'],
              when: 'has(context.risk) && context.risk.score >= 10',
            },
          ],
        },
      },
      undefined,
      { clock },
    );
  });
  afterAll(async () => {
    await s.close();
    cleanup();
  });

  const from = (ip: string, path: string, token: string) =>
    fetch(`${s.pc.gatewayUrl}${path}`, {
      headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': ip },
    });
  const login = async (ip: string, user = s.users.viewer) => {
    const res = await fetch(`${s.pc.gatewayUrl}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
      body: JSON.stringify({ username: user.username, password: user.password }),
    });
    return (await res.json()) as { access_token: string; mfa_token?: string };
  };
  const events = async (type: string) => {
    await s.pc.core.audit.flush();
    const out: Record<string, unknown>[] = [];
    for await (const r of s.pc.core.store.audit.scan()) if (r.type === type) out.push(JSON.parse(r.data));
    return out;
  };

  it('a session that jumps continents is challenged; an MFA step-up lets it through; the decision records the signals', async () => {
    // The admin enrols TOTP, so it can step up.
    const admin = await s.pc.core.store.users.findByUsername(s.users.admin.username);
    const { secret } = await s.pc.core.identity.beginTotp(admin?.id as never);
    const code = (ms: number) =>
      new TOTP({ secret: Secret.fromBase32(secret), digits: 6, period: 30 }).generate({ timestamp: ms });
    await s.pc.core.identity.confirmTotp(admin?.id as never, code(clock.now()), {
      ip: '127.0.0.1',
      requestId: 't',
    });
    clock.advance(30_000);
    const first = await login(LONDON, s.users.admin);
    const mfa = await fetch(`${s.pc.gatewayUrl}/auth/mfa`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': LONDON },
      body: JSON.stringify({ mfa_token: first.mfa_token, code: code(clock.now()) }),
    });
    const token = (await mfa.json()).access_token as string;
    expect((await from(LONDON, '/api/orders', token)).status).toBe(200);
    clock.advance(5 * 60_000); // 5 minutes later, from Tokyo
    const jump = await from(TOKYO, '/api/orders', token);
    expect(jump.status).toBe(401);
    expect((await jump.json()).error.code).toBe('step_up_required');
    expect(jump.headers.get('www-authenticate')).toContain('insufficient_user_authentication');
    expect((await events('risk.raised')).map((e) => e.signals)).toEqual([['impossible_travel', 'new_asn']]);
    expect(await events('security.impossible_travel')).toMatchObject([{ from: 'GB', to: 'JP', minutes: 5 }]);
    const alerts = await events('security.alert');
    expect(alerts.filter((a) => a.rule === 'impossible-travel')).toMatchObject([
      { severity: 'critical', count: 1 },
    ]);

    clock.advance(30_000);
    const up = await fetch(`${s.pc.gatewayUrl}/auth/step-up`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${token}`,
        'x-forwarded-for': TOKYO,
      },
      body: JSON.stringify({ code: code(clock.now()) }),
    });
    const stepped = (await up.json()).access_token as string;
    expect((await from(TOKYO, '/api/orders', stepped)).status).toBe(200);
    const decisions = (await events('gateway.decision')).filter((d) => d.route === 'orders');
    expect(decisions.find((d) => d.code === 'step_up_required')).toMatchObject({
      risk: {
        score: 70,
        signals: [
          { name: 'impossible_travel', weight: 60, evidence: { from: 'GB', to: 'JP', minutes: 5 } },
          { name: 'new_asn', weight: 10, evidence: { asn: 64502 } },
        ],
      },
    });
    // Learned: Tokyo is now where this session is, so the next request there is calm.
    clock.advance(60_000);
    expect((await from(TOKYO, '/api/orders', stepped)).status).toBe(200);
  });

  it('policy conditions see context.risk; a high score ends the session at once', async () => {
    const t = await login(LONDON);
    expect((await from(LONDON, '/api/orders', t.access_token)).status).toBe(200);
    expect((await from(LONDON, '/api/sensitive', t.access_token)).status).toBe(200); // no_mfa: 5 < 10
    clock.advance(60_000);
    // Same city, another network: new_asn (10) + no_mfa (5) = 15 — below the challenge threshold, but the
    // calm-only rule refuses it. The network is learned: the next request from it is calm again.
    expect((await from('81.2.70.5', '/api/sensitive', t.access_token)).status).toBe(403);
    expect((await from('81.2.70.5', '/api/sensitive', t.access_token)).status).toBe(200);
    clock.advance(60_000);
    // A blocklisted address in Tokyo a minute later: 70 + 60 + 10 + 5 → 100, deny, and the session ends.
    expect((await from('203.0.113.200', '/api/orders', t.access_token)).status).toBe(403);
    expect((await from(LONDON, '/api/orders', t.access_token)).status).toBe(401);
    const revoked = await events('risk.session_revoked');
    expect(revoked.at(-1)).toMatchObject({
      score: 100,
      signals: ['impossible_travel', 'new_asn', 'threat_intel', 'no_mfa'],
    });
    const decision = (await events('gateway.decision')).find(
      (d) => d.route === 'sensitive' && d.outcome === 'deny',
    );
    expect(decision).toMatchObject({ ruleIds: ['calm-only'], risk: { score: 15 } });
  });
});
