import { createPublicKey, randomUUID } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { calculateJwkThumbprint, errors, importJWK, type JWK, jwtVerify } from 'jose';
import type { AuditWriter } from '../audit/index.js';
import { type Clock, PortcullisError, type UserId } from '../core/index.js';
import { checkTokenHygiene } from '../identity/token-hygiene.js';
import type { DeviceCheck, DeviceRecord, Store } from '../store/index.js';
import { StoreError } from '../store/index.js';
import type { WorkloadCa } from '../workload/index.js';
import { pemBlocks } from '../workload/svid.js';
import { loadX509, x509 } from '../workload/x509.js';
import { DpopVerifier, dpopError } from './dpop.js';
import { type ComplianceRules, judgePosture, type PostureClaims, postureClaims } from './posture.js';

/** The SPIFFE ID path of a device certificate: `/device/<id>`. */
export const DEVICE_PATH_PREFIX = '/device/';
const POSTURE_MAX_SKEW_MS = 5 * 60_000;
const POSTURE_HEADER = new Set(['alg', 'typ']);
/** `lastSeenAt` is written at most this often per device (a write per request would cost every request). */
const TOUCH_EVERY_MS = 60_000;

export interface DeviceSettings {
  readonly approval: 'admin' | 'auto';
  readonly certTtl: number;
  readonly maxPerUser: number;
  readonly dpop: { readonly maxAge: number };
  readonly posture: { readonly maxAge: number; readonly rules: ComplianceRules };
}

/** A device as a request sees it: what policy (`device.*`) and the risk engine read. */
export interface DeviceState {
  readonly id: string;
  /** How it proved itself on this request. */
  readonly via: 'mtls' | 'dpop';
  /** Enrolled and approved (not pending, not revoked). */
  readonly trusted: boolean;
  /** Its last posture report passed the compliance rules and has not expired. */
  readonly compliant: boolean;
  readonly platform: string;
  /** The last report's claims (`os`, `diskEncrypted`, `screenLock`, …), or an empty map. */
  readonly posture: Readonly<Record<string, unknown>>;
}

export type EnrolInput = { name: string; platform?: string | undefined } & (
  | { csr: string; jwk?: undefined }
  | { jwk: Record<string, unknown>; csr?: undefined }
);

export interface Enrolment {
  readonly device: Record<string, unknown>;
  /** With a CSR: the device certificate, its chain and the trust bundle (PEM). */
  readonly certificate?: string;
  readonly chain?: string;
  readonly bundle?: string;
}

const invalid = (message: string) => new PortcullisError('invalid_body', { message });

/**
 * The device registry. A user enrols a device with its public key — a CSR (the internal CA then issues
 * a device certificate `spiffe://<td>/device/<id>` for mTLS) or a JWK (browsers: the key signs DPoP
 * proofs). Either way the key's RFC 7638 thumbprint names the device, so the same key also signs DPoP
 * proofs and posture reports. Devices start `pending` (until an admin approves) or `active`
 * (`devices.approval: auto`); a revoked device is refused on its next request.
 */
export class DeviceService {
  readonly settings: DeviceSettings;
  readonly dpop: DpopVerifier;
  readonly #store: Store;
  readonly #audit: AuditWriter;
  readonly #clock: Clock;
  readonly #ca: () => Promise<WorkloadCa | undefined>;
  readonly #touched = new Map<string, number>();

  constructor(options: {
    settings: DeviceSettings;
    store: Store;
    audit: AuditWriter;
    clock: Clock;
    /** The internal CA, when there is one (device certificates need it). */
    ca: () => Promise<WorkloadCa | undefined>;
  }) {
    this.settings = options.settings;
    this.#store = options.store;
    this.#audit = options.audit;
    this.#clock = options.clock;
    this.#ca = options.ca;
    this.dpop = new DpopVerifier({ maxAgeMs: options.settings.dpop.maxAge, now: () => options.clock.now() });
  }

  async enrol(
    userId: UserId,
    input: EnrolInput,
    meta: { ip: string; requestId: string; provenJkt?: string | undefined },
  ): Promise<Enrolment> {
    const now = this.#clock.now();
    const mine = (await this.#store.devices.list(userId)).filter((d) => d.status !== 'revoked');
    if (mine.length >= this.settings.maxPerUser)
      throw new PortcullisError('forbidden', {
        message: `At most ${this.settings.maxPerUser} devices per user; revoke one first.`,
      });
    const id = randomUUID();
    let jwk: JWK;
    let ca: WorkloadCa | undefined;
    if (input.csr !== undefined) {
      ca = await this.#ca();
      if (!ca)
        throw new PortcullisError('invalid_body', {
          message: 'Device certificates are not available here (no internal CA); enrol with a jwk.',
        });
      jwk = await csrPublicJwk(input.csr);
    } else jwk = await publicJwk(input.jwk);
    const jkt = await calculateJwkThumbprint(jwk, 'sha256');
    if (input.csr === undefined && meta.provenJkt !== jkt)
      throw dpopError('enrolling a key needs a DPoP proof signed by that key with the request');
    let issued: { certificate: string; chain: string; notAfter: Date; serial: string } | undefined;
    if (ca && input.csr !== undefined) {
      try {
        const r = await ca.issue(
          input.csr,
          `spiffe://${ca.trustDomain}${DEVICE_PATH_PREFIX}${id}`,
          this.settings.certTtl,
          now,
        );
        const leaf = new x509.X509Certificate(r.certificate);
        issued = { ...r, serial: leaf.serialNumber.toLowerCase() };
      } catch (err) {
        throw invalid(`The CSR was refused: ${(err as Error).message}`);
      }
    }
    const active = this.settings.approval === 'auto';
    const record: DeviceRecord = {
      id,
      userId,
      name: input.name,
      platform: input.platform ?? null,
      publicJwk: jwk as Record<string, unknown>,
      jkt,
      certSerial: issued?.serial ?? null,
      certNotAfter: issued ? issued.notAfter.getTime() : null,
      status: active ? 'active' : 'pending',
      createdAt: now,
      approvedAt: active ? now : null,
      revokedAt: null,
      lastSeenAt: null,
      posture: null,
      postureAt: null,
      compliant: false,
      complianceFailures: [],
    };
    try {
      await this.#store.devices.create(record);
    } catch (err) {
      if (err instanceof StoreError && err.code === 'conflict')
        throw invalid('This key is already enrolled as a device.');
      throw err;
    }
    await this.#audit.write(
      {
        type: 'device.enrolled',
        data: {
          device: id,
          sub: userId,
          name: input.name,
          platform: input.platform ?? null,
          method: issued ? 'certificate' : 'key',
          jkt,
          serial: issued?.serial ?? null,
          status: record.status,
          ip: meta.ip,
          requestId: meta.requestId,
        },
      },
      'durable',
    );
    return {
      device: this.view(record),
      ...(issued && ca
        ? {
            certificate: issued.certificate,
            chain: issued.chain,
            bundle: ca.roots.map((r) => r.toString('pem')).join('\n'),
          }
        : {}),
    };
  }

  get(id: string): Promise<DeviceRecord | undefined> {
    return this.#store.devices.get(id);
  }

  list(userId?: UserId): Promise<DeviceRecord[]> {
    return this.#store.devices.list(userId);
  }

  /** An admin trusts a pending device. A revoked device stays revoked (enrol it again). */
  async approve(id: string, actor: string): Promise<DeviceRecord> {
    const d = await this.#required(id);
    if (await this.#store.devices.approve(id, this.#clock.now()))
      await this.#audit.write(
        { type: 'device.approved', data: { device: id, sub: d.userId, actor } },
        'durable',
      );
    const after = (await this.#store.devices.get(id)) as DeviceRecord;
    if (after.status === 'revoked') throw new PortcullisError('device_revoked');
    return after;
  }

  /**
   * Its user or an admin ends a device: every later proof by it (certificate or DPoP key) is refused,
   * and the sessions bound to its key end too.
   */
  async revoke(id: string, actor: string): Promise<DeviceRecord> {
    const d = await this.#required(id);
    const sessions = await this.#store.devices.revoke(id, this.#clock.now());
    if (sessions !== undefined)
      await this.#audit.write(
        {
          type: 'device.revoked',
          data: { device: id, sub: d.userId, actor, serial: d.certSerial, sessionsEnded: sessions },
        },
        'durable',
      );
    return (await this.#store.devices.get(id)) as DeviceRecord;
  }

  /**
   * A posture report, a compact JWS signed with the device's own key (`typ: posture+jwt`): checked,
   * judged against the compliance rules and stored with the verdict. It must be fresh (signed within
   * 5 minutes) and newer than the last one, so an old, better report cannot be replayed.
   */
  async submitPosture(
    userId: UserId,
    id: string,
    report: string,
  ): Promise<{ compliant: boolean; failures: string[]; expiresAt: number }> {
    const d = await this.#required(id);
    if (d.userId !== userId) throw new PortcullisError('route_not_found', { message: 'No such device.' });
    if (d.status === 'revoked') throw new PortcullisError('device_revoked');
    const now = this.#clock.now();
    let claims: PostureClaims;
    try {
      checkTokenHygiene(report, {
        maxTokenBytes: 8192,
        maxLifetimeSec: 86_400,
        clockToleranceSec: 5,
        nowSec: Math.floor(now / 1000),
        headerMembers: POSTURE_HEADER,
      });
      const alg = d.publicJwk.kty === 'OKP' ? 'EdDSA' : 'ES256';
      const key = await importJWK(d.publicJwk as JWK, alg);
      const r = await jwtVerify(report, key, {
        typ: 'posture+jwt',
        algorithms: [alg],
        currentDate: new Date(now),
      });
      const parsed = postureClaims.safeParse(r.payload);
      if (!parsed.success)
        throw invalid(
          `The posture report is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
        );
      claims = parsed.data;
    } catch (err) {
      if (err instanceof PortcullisError) throw err;
      if (err instanceof errors.JOSEError || err instanceof Error)
        throw invalid(`The posture report is not signed by this device: ${(err as Error).message}`);
      throw err;
    }
    if (claims.device !== id) throw invalid('The posture report is for another device.');
    const signedAt = claims.iat * 1000;
    if (signedAt < now - POSTURE_MAX_SKEW_MS || signedAt > now + 5_000)
      throw invalid('The posture report is not fresh (signed more than 5 minutes ago or in the future).');
    const verdict = judgePosture(claims, this.settings.posture.rules, now);
    const { device: _d, iat: _i, ...posture } = claims;
    const stored = await this.#store.devices.putPosture(id, {
      posture,
      postureAt: signedAt,
      compliant: verdict.compliant,
      failures: verdict.failures,
    });
    if (!stored) throw invalid('A newer posture report is already recorded.');
    await this.#audit.write(
      {
        type: 'device.posture',
        data: { device: id, sub: userId, compliant: verdict.compliant, failures: verdict.failures },
      },
      'durable',
    );
    return { ...verdict, expiresAt: signedAt + this.settings.posture.maxAge };
  }

  /**
   * The device a proof named, checked for this request: it must be the user's own and not revoked. A
   * key no device was enrolled with is no device (undefined); a device certificate is also matched by
   * its serial, so a certificate replaced by a new enrolment no longer counts.
   */
  async forRequest(
    userId: string,
    proof: { via: 'dpop'; jkt: string } | { via: 'mtls'; spiffeId: string; serial: string; jkt: string },
  ): Promise<DeviceState | undefined> {
    let d: DeviceCheck | undefined;
    if (proof.via === 'dpop') d = await this.#store.devices.check({ jkt: proof.jkt });
    else {
      const at = proof.spiffeId.indexOf(DEVICE_PATH_PREFIX);
      d = await this.#store.devices.check({ id: proof.spiffeId.slice(at + DEVICE_PATH_PREFIX.length) });
      // The enrolled certificate, by serial and by key: another CA in the client bundle minting the same
      // ID and serial still cannot have the device's key.
      if (d && (d.certSerial !== proof.serial.toLowerCase() || d.jkt !== proof.jkt)) d = undefined;
    }
    if (!d) return undefined;
    if (d.userId !== userId)
      throw new PortcullisError('forbidden', { detail: `device ${d.id} belongs to another user` });
    if (d.status === 'revoked')
      throw new PortcullisError('device_revoked', { detail: `device ${d.id} was revoked` });
    const now = this.#clock.now();
    if (now - (this.#touched.get(d.id) ?? 0) >= TOUCH_EVERY_MS) {
      if (this.#touched.size >= 100_000) this.#touched.clear();
      this.#touched.set(d.id, now);
      void this.#store.devices.update(d.id, { lastSeenAt: now }).catch(() => undefined);
    }
    return this.state(d, proof.via, now);
  }

  state(d: DeviceCheck, via: 'mtls' | 'dpop', now = this.#clock.now()): DeviceState {
    return {
      id: d.id,
      via,
      trusted: d.status === 'active',
      compliant: this.#compliant(d, now),
      platform: d.platform ?? '',
      posture: d.posture ?? {},
    };
  }

  /** A device as the APIs and the CLI show it (never its key, only the thumbprint). */
  view(d: DeviceRecord, now = this.#clock.now()): Record<string, unknown> {
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    return {
      id: d.id,
      userId: d.userId,
      name: d.name,
      platform: d.platform,
      status: d.status,
      trusted: d.status === 'active',
      compliant: this.#compliant(d, now),
      complianceFailures: d.complianceFailures,
      jkt: d.jkt,
      certificate: d.certSerial ? { serial: d.certSerial, notAfter: iso(d.certNotAfter) } : null,
      posture: d.posture,
      postureAt: iso(d.postureAt),
      postureExpiresAt: d.postureAt === null ? null : iso(d.postureAt + this.settings.posture.maxAge),
      createdAt: iso(d.createdAt),
      approvedAt: iso(d.approvedAt),
      revokedAt: iso(d.revokedAt),
      lastSeenAt: iso(d.lastSeenAt),
    };
  }

  #compliant(d: DeviceCheck, now: number): boolean {
    return d.compliant && d.postureAt !== null && now < d.postureAt + this.settings.posture.maxAge;
  }

  async #required(id: string): Promise<DeviceRecord> {
    const d = await this.#store.devices.get(id);
    if (!d) throw new PortcullisError('route_not_found', { message: 'No such device.' });
    return d;
  }
}

/** A device's public key from a JWK: EC P-256 or Ed25519, public members only (a private key is refused). */
async function publicJwk(input: Record<string, unknown>): Promise<JWK> {
  if ('d' in input) throw invalid('Send the public key only (the jwk has a private member "d").');
  let out: JWK;
  if (input.kty === 'EC' && input.crv === 'P-256')
    out = { kty: 'EC', crv: 'P-256', x: String(input.x), y: String(input.y) };
  else if (input.kty === 'OKP' && input.crv === 'Ed25519')
    out = { kty: 'OKP', crv: 'Ed25519', x: String(input.x) };
  else throw invalid('The device key must be an EC P-256 or Ed25519 public key (JWK).');
  try {
    // Node checks the point is on the curve (and its encoding) when it imports the key.
    createPublicKey({ key: out as Parameters<typeof createPublicKey>[0] & object as never, format: 'jwk' });
  } catch {
    throw invalid('The device key is not a valid public key.');
  }
  return out;
}

/** The public key of a CSR (its signature checked) as a JWK. */
async function csrPublicJwk(csrPem: string): Promise<JWK> {
  await loadX509();
  const block = pemBlocks(csrPem).find((b) => b.label === 'CERTIFICATE REQUEST');
  if (!block) throw invalid('The csr is not a PEM certificate request.');
  let csr: X509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(block.der);
  } catch {
    throw invalid('The csr cannot be parsed.');
  }
  if (!(await csr.verify())) throw invalid('The csr signature does not verify.');
  const jwk = createPublicKey({
    key: Buffer.from(csr.publicKey.rawData),
    format: 'der',
    type: 'spki',
  }).export({
    format: 'jwk',
  }) as Record<string, unknown>;
  return publicJwk(jwk);
}
