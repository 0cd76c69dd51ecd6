import { existsSync, readFileSync } from 'node:fs';
import { Reader } from 'maxmind';

/** What geo-IP knows about an address. */
export interface GeoInfo {
  country?: string;
  latitude?: number;
  longitude?: number;
  /** Accuracy radius of the location, km. */
  accuracyKm?: number;
  asn?: number;
  asOrg?: string;
}

type Rec = Record<string, unknown>;
const CACHE_MAX = 50_000;

/**
 * Geo-IP from MaxMind-format (MMDB) databases read with the `maxmind` package: city databases
 * (MaxMind GeoLite2/GeoIP2 City layout, or the flat `@ip-location-db` layout) and ASN databases. Results
 * are cached per address (bounded).
 */
export class GeoIp {
  readonly #readers: Reader<Rec>[];
  readonly #cache = new Map<string, GeoInfo>();

  private constructor(readers: Reader<Rec>[]) {
    this.#readers = readers;
  }

  /** Opens the files that exist; `missing` lists the others (the caller says so clearly). */
  static open(files: readonly string[]): { geo: GeoIp; missing: string[] } {
    const readers: Reader<Rec>[] = [];
    const missing: string[] = [];
    for (const f of files) {
      if (!existsSync(f)) {
        missing.push(f);
        continue;
      }
      readers.push(new Reader<Rec>(readFileSync(f)));
    }
    return { geo: new GeoIp(readers), missing };
  }

  get databases(): number {
    return this.#readers.length;
  }

  lookup(ip: string): GeoInfo {
    const hit = this.#cache.get(ip);
    if (hit) return hit;
    const info: GeoInfo = {};
    for (const r of this.#readers) {
      let rec: Rec | null;
      try {
        rec = r.get(ip);
      } catch {
        rec = null;
      }
      if (rec) merge(info, rec);
    }
    if (this.#cache.size >= CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value as string);
    this.#cache.set(ip, info);
    return info;
  }
}

function merge(info: GeoInfo, rec: Rec): void {
  const country = (rec.country as Rec | undefined)?.iso_code ?? rec.country_code;
  if (typeof country === 'string' && country) info.country ??= country;
  const loc = rec.location as Rec | undefined;
  const lat = loc?.latitude ?? rec.latitude;
  const lon = loc?.longitude ?? rec.longitude;
  if (typeof lat === 'number' && typeof lon === 'number' && info.latitude === undefined) {
    info.latitude = lat;
    info.longitude = lon;
    const acc = loc?.accuracy_radius;
    if (typeof acc === 'number') info.accuracyKm = acc;
  }
  const asn = rec.autonomous_system_number ?? rec.asn;
  if (typeof asn === 'number') info.asn ??= asn;
  const org = rec.autonomous_system_organization ?? rec.as_organization;
  if (typeof org === 'string') info.asOrg ??= org;
}

/** Great-circle distance (haversine), km. */
export function distanceKm(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.min(1, Math.sqrt(a)));
}
