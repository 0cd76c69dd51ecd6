import type { Clock, Logger } from '../core/index.js';
import { distanceKm, type GeoInfo, type GeoIp } from './geo.js';
import type { ThreatIntel } from './threat.js';
import { SlidingCounter } from './velocity.js';

/** One reason a request looks risky: its name, its weight in the score, and the evidence. */
export interface Signal {
  readonly name: string;
  readonly weight: number;
  readonly evidence: Readonly<Record<string, unknown>>;
}

export type RiskOutcome = 'allow' | 'challenge' | 'deny';

export interface RiskAssessment {
  /** 0–100: the sum of the signals' weights, capped. */
  readonly score: number;
  readonly level: 'low' | 'medium' | 'high';
  readonly outcome: RiskOutcome;
  readonly signals: readonly Signal[];
  readonly geo: GeoInfo;
}

export interface RiskSettings {
  thresholds: { challenge: number; deny: number };
  weights: {
    impossibleTravel: number;
    newCountry: number;
    newAsn: number;
    unusualTime: number;
    threatIntel: number;
    requestVelocity: number;
    failureVelocity: number;
    staleAuthentication: number;
    noRecentMfa: number;
    newDevice: number;
    unmanagedDevice: number;
    untrustedDevice: number;
    noncompliantDevice: number;
  };
  travel: { maxSpeedKmh: number; toleranceKm: number };
  unusualTime: { minObservations: number; rareBelow: number };
  velocity: { requestsPerMinute: number; failuresPerMinute: number };
  /** Authentication older than this is stale (ms). */
  staleAuthenticationMs: number;
}

/** What is kept per principal: where and when it was last seen, what is usual for it. */
export interface RiskProfile {
  lastAt: number;
  /** When the stored location was seen (travel is measured from here, not from the last request). */
  locAt?: number;
  lat?: number;
  lon?: number;
  acc?: number;
  country?: string;
  countries: string[];
  asns: number[];
  /** Devices this principal has used (ids, most recent last). */
  devices?: string[];
  /** Requests per hour of the week (UTC), learned from the principal's own history. */
  hours: number[];
  seen: number;
}

/** Persistence for profiles, so a restart does not forget them (JSON per principal). */
export interface RiskProfileStore {
  get(id: string): Promise<string | undefined>;
  putMany(entries: readonly (readonly [string, string])[], at: number): Promise<void>;
}

/** Who is assessed: the fields of the gateway's principal that matter here. */
export interface RiskSubject {
  readonly id: string;
  readonly kind: 'user' | 'service';
  readonly amr: readonly string[];
  readonly authTime?: number;
}

/** The device a request proved it comes from, as far as the score is concerned. */
export interface RiskDevice {
  readonly id: string;
  readonly trusted: boolean;
  readonly compliant: boolean;
}

const MFA = new Set(['mfa', 'otp', 'hwk', 'swk', 'sc', 'pop', 'sms', 'tel', 'recovery']);
const MAX_LIST = 32;
const MAX_PROFILES = 100_000;
const HOURS = 168;

/**
 * Continuous verification: every authenticated request is scored from signals computed per request —
 * impossible travel (great-circle distance over elapsed time, allowing for geo inaccuracy), new country
 * and ASN for this principal, an hour of the week unusual for this principal (learned; nothing is said
 * before `minObservations`), threat-intelligence lists, request and failure velocity, stale
 * authentication and no recent MFA. The score is the capped sum of the signals' weights; thresholds map
 * it to allow / challenge / deny, and every contribution is kept with its evidence.
 *
 * Profiles live in memory (bounded) and are written behind to the store; a principal not in memory is
 * loaded on its first request (the only time `assess` waits).
 */
export class RiskEngine {
  readonly #s: RiskSettings;
  readonly #geo: GeoIp | undefined;
  readonly #threats: ThreatIntel | undefined;
  readonly #store: RiskProfileStore | undefined;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #profiles = new Map<string, RiskProfile>();
  readonly #dirty = new Set<string>();
  readonly #requests = new SlidingCounter();
  readonly #failures = new SlidingCounter();
  /** When a session's risk last rose to a challenge: an MFA sign-in after it satisfies it. */
  readonly #raised = new Map<string, number>();

  constructor(options: {
    settings: RiskSettings;
    geo?: GeoIp | undefined;
    threats?: ThreatIntel | undefined;
    store?: RiskProfileStore | undefined;
    clock: Clock;
    log: Logger;
  }) {
    this.#s = options.settings;
    this.#geo = options.geo;
    this.#threats = options.threats;
    this.#store = options.store;
    this.#clock = options.clock;
    this.#log = options.log;
  }

  /** Scores one request (sync when the principal's profile is in memory). */
  assess(
    subject: RiskSubject,
    ip: string,
    device?: RiskDevice | undefined,
  ): RiskAssessment | Promise<RiskAssessment> {
    const profile = this.#profiles.get(subject.id);
    if (profile !== undefined || this.#store === undefined) return this.#assess(subject, ip, profile, device);
    return this.#load(subject.id).then((p) => this.#assess(subject, ip, p, device));
  }

  /** Learns from a request that went through: location, country, ASN, hour of the week. */
  observe(subject: RiskSubject, a: RiskAssessment, deviceId?: string | undefined): void {
    const now = this.#clock.now();
    let p = this.#profiles.get(subject.id);
    if (!p) {
      p = { lastAt: now, countries: [], asns: [], hours: new Array<number>(HOURS).fill(0), seen: 0 };
      this.#remember(subject.id, p);
    }
    const g = a.geo;
    if (g.latitude !== undefined && g.longitude !== undefined) {
      p.lat = g.latitude;
      p.lon = g.longitude;
      p.locAt = now;
      if (g.accuracyKm !== undefined) p.acc = g.accuracyKm;
      else delete p.acc;
    }
    if (g.country !== undefined) {
      p.country = g.country;
      addBounded(p.countries, g.country);
    }
    if (g.asn !== undefined) addBounded(p.asns, g.asn);
    if (deviceId !== undefined) {
      p.devices ??= [];
      addBounded(p.devices, deviceId);
    }
    const h = hourOfWeek(now);
    p.hours[h] = (p.hours[h] ?? 0) + 1;
    p.seen++;
    p.lastAt = now;
    this.#dirty.add(subject.id);
  }

  /** Counts a refused request (401/403/429) for the address's failure velocity. */
  recordFailure(ip: string): void {
    this.#failures.hit(ip, this.#clock.now());
  }

  /**
   * For a challenge: the time the risk rose for this session (remembered on first sight, `true` in
   * `first` then — the caller audits it). An MFA sign-in at or after that time satisfies it.
   */
  raisedAt(sessionKey: string): { at: number; first: boolean } {
    const at = this.#raised.get(sessionKey);
    if (at !== undefined) return { at, first: false };
    const now = this.#clock.now();
    if (this.#raised.size >= MAX_PROFILES) this.#raised.delete(this.#raised.keys().next().value as string);
    this.#raised.set(sessionKey, now);
    return { at: now, first: true };
  }

  clearRaised(sessionKey: string): void {
    this.#raised.delete(sessionKey);
  }

  /** Writes changed profiles to the store. */
  async flush(): Promise<void> {
    if (!this.#store || this.#dirty.size === 0) return;
    const entries: [string, string][] = [];
    for (const id of this.#dirty) {
      const p = this.#profiles.get(id);
      if (p) entries.push([id, JSON.stringify(p)]);
    }
    this.#dirty.clear();
    try {
      await this.#store.putMany(entries, this.#clock.now());
    } catch (err) {
      for (const [id] of entries) this.#dirty.add(id);
      this.#log.warn({ err: (err as Error).message }, 'risk profiles not saved; will retry');
    }
  }

  profile(id: string): RiskProfile | undefined {
    return this.#profiles.get(id);
  }

  async #load(id: string): Promise<RiskProfile | undefined> {
    try {
      const text = await this.#store?.get(id);
      if (text === undefined) return undefined;
      const p = JSON.parse(text) as RiskProfile;
      if (!this.#profiles.has(id)) this.#remember(id, p);
      return this.#profiles.get(id);
    } catch (err) {
      // Without history the novelty signals stay quiet; threat lists and velocity still apply.
      this.#log.warn({ err: (err as Error).message }, 'risk profile not loaded');
      return undefined;
    }
  }

  #remember(id: string, p: RiskProfile): void {
    if (this.#profiles.size >= MAX_PROFILES) {
      const oldest = this.#profiles.keys().next().value as string;
      if (!this.#dirty.has(oldest)) this.#profiles.delete(oldest);
    }
    this.#profiles.set(id, p);
  }

  #assess(
    subject: RiskSubject,
    ip: string,
    p: RiskProfile | undefined,
    device: RiskDevice | undefined,
  ): RiskAssessment {
    const s = this.#s;
    const w = s.weights;
    const now = this.#clock.now();
    const signals: Signal[] = [];
    const geo = this.#geo ? this.#geo.lookup(ip) : {};

    if (
      p !== undefined &&
      geo.latitude !== undefined &&
      geo.longitude !== undefined &&
      p.lat !== undefined &&
      p.lon !== undefined &&
      w.impossibleTravel > 0
    ) {
      const km = distanceKm(p.lat, p.lon, geo.latitude, geo.longitude);
      const hours = Math.max(0, now - (p.locAt ?? p.lastAt)) / 3_600_000;
      const slack = s.travel.toleranceKm + (p.acc ?? 0) + (geo.accuracyKm ?? 0);
      if (km > slack + s.travel.maxSpeedKmh * hours) {
        signals.push({
          name: 'impossible_travel',
          weight: w.impossibleTravel,
          evidence: {
            from: p.country ?? null,
            to: geo.country ?? null,
            km: Math.round(km),
            minutes: Math.round(hours * 60),
            kmh: hours > 0 ? Math.round(km / hours) : null,
          },
        });
      }
    }
    if (p !== undefined && p.seen > 0) {
      if (
        geo.country !== undefined &&
        p.countries.length > 0 &&
        !p.countries.includes(geo.country) &&
        w.newCountry > 0
      )
        signals.push({
          name: 'new_country',
          weight: w.newCountry,
          evidence: { country: geo.country, known: p.countries },
        });
      if (geo.asn !== undefined && p.asns.length > 0 && !p.asns.includes(geo.asn) && w.newAsn > 0)
        signals.push({
          name: 'new_asn',
          weight: w.newAsn,
          evidence: { asn: geo.asn, org: geo.asOrg ?? null },
        });
      if (p.seen >= s.unusualTime.minObservations && w.unusualTime > 0) {
        const h = hourOfWeek(now);
        const around =
          (p.hours[h] ?? 0) + (p.hours[(h + 1) % HOURS] ?? 0) + (p.hours[(h + HOURS - 1) % HOURS] ?? 0);
        const share = around / p.seen;
        if (share < s.unusualTime.rareBelow)
          signals.push({
            name: 'unusual_time',
            weight: w.unusualTime,
            evidence: { hourOfWeek: h, share: Math.round(share * 1000) / 1000 },
          });
      }
    }
    if (this.#threats && w.threatIntel > 0) {
      const lists = this.#threats.match(ip);
      if (lists.length > 0)
        signals.push({ name: 'threat_intel', weight: w.threatIntel, evidence: { ip, lists } });
    }
    const requests = this.#requests.hit(subject.id, now);
    if (requests > s.velocity.requestsPerMinute && w.requestVelocity > 0)
      signals.push({
        name: 'request_velocity',
        weight: w.requestVelocity,
        evidence: { perMinute: requests },
      });
    const failures = this.#failures.count(ip, now);
    if (failures > s.velocity.failuresPerMinute && w.failureVelocity > 0)
      signals.push({
        name: 'failure_velocity',
        weight: w.failureVelocity,
        evidence: { ip, perMinute: failures },
      });
    if (subject.kind === 'user') {
      if (
        subject.authTime !== undefined &&
        now - subject.authTime > s.staleAuthenticationMs &&
        w.staleAuthentication > 0
      )
        signals.push({
          name: 'stale_authentication',
          weight: w.staleAuthentication,
          evidence: { hours: Math.round((now - subject.authTime) / 3_600_000) },
        });
      if (!subject.amr.some((m) => MFA.has(m)) && w.noRecentMfa > 0)
        signals.push({ name: 'no_mfa', weight: w.noRecentMfa, evidence: { amr: subject.amr } });
      // Device signals are on when `unmanagedDevice` is weighted, and a proven device never scores more
      // than no device at all: otherwise leaving the proof out would be the way to look less risky.
      const cap = w.unmanagedDevice;
      if (cap > 0 && device === undefined)
        signals.push({ name: 'unmanaged_device', weight: cap, evidence: {} });
      else if (cap > 0 && device !== undefined) {
        let left = cap;
        const add = (name: string, weight: number, evidence: Record<string, unknown>) => {
          const wt = Math.min(weight, left);
          if (wt <= 0) return;
          left -= wt;
          signals.push({ name, weight: wt, evidence });
        };
        const known = p?.devices ?? [];
        if (p !== undefined && p.seen > 0 && !known.includes(device.id))
          add('new_device', w.newDevice, { device: device.id, known: known.length });
        if (!device.trusted) add('untrusted_device', w.untrustedDevice, { device: device.id });
        if (!device.compliant) add('noncompliant_device', w.noncompliantDevice, { device: device.id });
      }
    }

    let score = 0;
    for (const sig of signals) score += sig.weight;
    score = Math.min(100, score);
    const outcome: RiskOutcome =
      score >= s.thresholds.deny ? 'deny' : score >= s.thresholds.challenge ? 'challenge' : 'allow';
    const level = outcome === 'deny' ? 'high' : outcome === 'challenge' ? 'medium' : 'low';
    return { score, level, outcome, signals, geo };
  }
}

/** 0 = Sunday 00:00–01:00 UTC … 167 = Saturday 23:00–24:00 UTC. */
export function hourOfWeek(ms: number): number {
  const hours = Math.floor(ms / 3_600_000);
  const weekday = (Math.floor(ms / 86_400_000) + 4) % 7;
  return weekday * 24 + (hours % 24);
}

function addBounded<T>(list: T[], v: T): void {
  if (list.includes(v)) return;
  list.push(v);
  if (list.length > MAX_LIST) list.shift();
}
