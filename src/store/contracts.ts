import type { SessionId, UserId } from '../core/index.js';

/**
 * Storage contracts. Every adapter (SQLite now; PostgreSQL and Redis later) implements these and passes
 * the same conformance suite. They are async so a networked adapter fits; an unreachable store throws,
 * and callers turn that into a deny (fail closed).
 */

/** `suspended` by an administrator; a temporary lock is `lockedUntil`, not a status. */
export type UserStatus = 'active' | 'suspended';

export interface UserRecord {
  id: UserId;
  /** Normalized (NFKC, lower case) login name; unique. */
  username: string;
  /** Normalized (NFKC, lower case) email; unique when set. */
  email: string | null;
  displayName: string | null;
  passwordHash: string;
  roles: string[];
  groups: string[];
  /** Attributes for policy (`department`, `clearance`, …). */
  attributes: Record<string, unknown>;
  status: UserStatus;
  createdAt: number;
  /** Temporary lock after repeated failures (ms since epoch); expires by itself. */
  lockedUntil: number | null;
  /** TOTP secret, sealed (AES-256-GCM), once enrolment is confirmed. */
  totpSecret: string | null;
  /** TOTP secret awaiting its first valid code. */
  totpPending: string | null;
  /** Last TOTP time step accepted: a code of that step or earlier is never accepted again. */
  totpLastStep: number;
}

export type UserUpdate = Partial<
  Pick<
    UserRecord,
    | 'passwordHash'
    | 'displayName'
    | 'roles'
    | 'groups'
    | 'attributes'
    | 'status'
    | 'lockedUntil'
    | 'totpSecret'
    | 'totpPending'
  >
>;

export interface UserStore {
  /** Fails with `{ code: 'conflict' }` (a StoreError) when the username or email exists. */
  create(user: UserRecord): Promise<void>;
  get(id: UserId): Promise<UserRecord | undefined>;
  findByUsername(username: string): Promise<UserRecord | undefined>;
  /** By normalized username or email. */
  findByLogin(login: string): Promise<UserRecord | undefined>;
  list(): Promise<UserRecord[]>;
  count(): Promise<number>;
  update(id: UserId, patch: UserUpdate): Promise<void>;
  /** The local user linked to an external identity (OP issuer + subject). */
  findFederated(provider: string, subject: string): Promise<UserRecord | undefined>;
  /** Links an external identity to a local user (a link never moves to another user). */
  linkFederated(provider: string, subject: string, userId: UserId, at: number): Promise<void>;
  /** Accepts TOTP time step `step` if it is later than the last one accepted (atomic); false = replay. */
  useTotpStep(id: UserId, step: number): Promise<boolean>;
  /** Replaces the user's recovery codes with these hashes (all unused). */
  setRecoveryCodes(id: UserId, hashes: readonly string[], at: number): Promise<void>;
  /** Spends one recovery code (atomic); false when unknown or already used. */
  useRecoveryCode(id: UserId, hash: string, at: number): Promise<boolean>;
  unusedRecoveryCodes(id: UserId): Promise<number>;
}

/** A machine identity that gets tokens with the OAuth 2.0 client credentials grant. */
export interface ServiceAccountRecord {
  /** Also its OAuth `client_id`. */
  id: string;
  /** Unique, lower case. */
  name: string;
  /** SHA-256 of its client secret (high-entropy, generated), or null when it uses keys only. */
  secretHash: string | null;
  /** Public keys (JWKs) for `private_key_jwt` client authentication, or null. */
  jwks: Record<string, unknown>[] | null;
  scopes: string[];
  roles: string[];
  /** Audiences it may ask tokens for (`resource`/`audience` parameter). */
  audiences: string[];
  /** Its workload identity, for microsegmentation rules by SPIFFE ID. */
  spiffeId: string | null;
  status: UserStatus;
  createdAt: number;
}

export type ServiceAccountUpdate = Partial<
  Pick<ServiceAccountRecord, 'secretHash' | 'jwks' | 'scopes' | 'roles' | 'audiences' | 'status' | 'spiffeId'>
>;

export interface ServiceAccountStore {
  /** Conflict when the name exists. */
  create(account: ServiceAccountRecord): Promise<void>;
  get(id: string): Promise<ServiceAccountRecord | undefined>;
  findByName(name: string): Promise<ServiceAccountRecord | undefined>;
  list(): Promise<ServiceAccountRecord[]>;
  update(id: string, patch: ServiceAccountUpdate): Promise<void>;
  /**
   * Records a client assertion's `jti` until it expires; false when it was already seen (a replay).
   * Expired entries are forgotten on the way.
   */
  rememberAssertion(clientId: string, jti: string, expiresAt: number, now: number): Promise<boolean>;
}

/** The short-lived second step of a login with MFA: stored hashed, single use, few attempts. */
export interface MfaChallengeRecord {
  hash: string;
  userId: UserId;
  createdAt: number;
  expiresAt: number;
  attempts: number;
  usedAt: number | null;
}

export interface MfaChallengeStore {
  create(challenge: MfaChallengeRecord): Promise<void>;
  get(hash: string): Promise<MfaChallengeRecord | undefined>;
  /** Counts a failed attempt; returns the new count. */
  fail(hash: string): Promise<number>;
  /** Marks it used (atomic); false when already used. */
  consume(hash: string, at: number): Promise<boolean>;
}

export interface SessionRecord {
  id: SessionId;
  userId: UserId;
  /** Authentication methods used to start the session (RFC 8176 values, e.g. `pwd`). */
  amr: string[];
  createdAt: number;
  /** Absolute end of the session, ms since epoch. */
  expiresAt: number;
  revokedAt: number | null;
  /** Last (step-up) authentication: its time, methods in `amr`, and context class. */
  authTime: number;
  acr: string;
  /** Last login or refresh (for the idle timeout and the session list). */
  lastSeenAt: number;
  /** Client address and user agent at the last login or refresh. */
  ip: string | null;
  userAgent: string | null;
  /**
   * The key the session is bound to (RFC 9449 `jkt`), when it was started with a DPoP proof: its access
   * tokens carry `cnf.jkt` and its refresh tokens are accepted only with a proof by that key.
   */
  dpopJkt?: string;
}

/** Recorded on the session in the same transaction as a rotation; `idleMs` ends an idle session instead. */
export interface RefreshActivity {
  ip: string | null;
  userAgent: string | null;
  /** A session unseen for longer than this is inactive (0 = no idle timeout). */
  idleMs: number;
}

export type RefreshRotation =
  | { kind: 'rotated'; session: SessionRecord }
  /** The same token again within the grace window: the caller answers with the same successor. */
  | { kind: 'grace'; session: SessionRecord }
  /** The presented token had already been used: the session (its whole family) is now revoked. */
  | { kind: 'reused'; session: SessionRecord }
  /** The session is revoked or past its lifetime. */
  | { kind: 'inactive'; session: SessionRecord }
  | { kind: 'unknown' };

export interface SessionStore {
  /** Creates a session with its first refresh token (stored as the given hash). */
  create(session: SessionRecord, refreshHash: string): Promise<void>;
  get(id: SessionId): Promise<SessionRecord | undefined>;
  /** Marks the session revoked; returns false if it did not exist or was already revoked. */
  revoke(id: SessionId, at: number): Promise<boolean>;
  /**
   * Atomically spends the refresh token `oldHash` and stores its successor `newHash`. A token that was
   * already spent revokes the session (reuse detection) — unless it was spent less than `graceMs` ago,
   * for this very successor, which is still unused: then it is a concurrent duplicate (`grace`).
   */
  rotateRefresh(
    oldHash: string,
    newHash: string,
    at: number,
    graceMs?: number,
    activity?: RefreshActivity,
  ): Promise<RefreshRotation>;
  /** The session a refresh token belongs to (spent or not), for revocation (RFC 7009). */
  byRefreshHash(hash: string): Promise<SessionRecord | undefined>;
  /** Records activity (a refresh): last seen time, address and user agent. */
  touch(id: SessionId, at: number, ip: string | null, userAgent: string | null): Promise<void>;
  /** A user's sessions, newest first (active and ended). */
  listByUser(userId: UserId): Promise<SessionRecord[]>;
  /** Revokes every active session of a user; returns how many. */
  revokeAll(userId: UserId, at: number): Promise<number>;
  /** Records a fresh authentication on the session (step-up); false when it is not active. */
  stepUp(id: SessionId, auth: { authTime: number; amr: string[]; acr: string }): Promise<boolean>;
}

/** An audit record as stored: one link of the hash chain. */
export interface AuditRecord {
  seq: number;
  ts: number;
  type: string;
  /** Canonical JSON (RFC 8785) of the event's data. */
  data: string;
  prevHash: string;
  hash: string;
}

export type AuditDraft = Pick<AuditRecord, 'ts' | 'type' | 'data'>;

/** Computes a record's hash from its predecessor's hash and its own content. */
export type ChainHasher = (prevHash: string, record: Omit<AuditRecord, 'hash' | 'prevHash'>) => string;

/** A signed checkpoint of the audit log's Merkle tree, as stored. */
export interface StoredCheckpoint {
  size: number;
  /** Root hash, hex. */
  root: string;
  /** The signed note (C2SP tlog-checkpoint). */
  note: string;
  createdAt: number;
}

export interface AuditStore {
  /**
   * Appends drafts in order, in one transaction, each linked to the current head of the chain
   * (read inside the transaction, so several writers on one database keep one valid chain).
   * `durable: false` (only batched records, which may be lost within their flush interval anyway): the
   * adapter may commit without waiting for the disk, as long as a crash still leaves a valid prefix of
   * the chain. Default true.
   */
  append(
    drafts: readonly AuditDraft[],
    hasher: ChainHasher,
    genesis: string,
    options?: { durable?: boolean },
  ): Promise<AuditRecord[]>;
  /** Records in `seq` order, from `fromSeq` (default 1). */
  scan(fromSeq?: number): AsyncIterable<AuditRecord>;
  /** The highest `seq` (0 when empty). */
  lastSeq(): Promise<number>;
  count(): Promise<number>;
  /** Records a checkpoint; a second checkpoint for the same size must be identical (else it throws). */
  saveCheckpoint(checkpoint: StoredCheckpoint): Promise<void>;
  /** The checkpoint with the largest size, if any. */
  latestCheckpoint(): Promise<StoredCheckpoint | undefined>;
  /** All checkpoints, by size. */
  checkpoints(): Promise<StoredCheckpoint[]>;
}

/** A device enrolled by a user (its key never leaves it; we keep the public key and its thumbprint). */
export interface DeviceRecord {
  readonly id: string;
  readonly userId: UserId;
  readonly name: string;
  readonly platform: string | null;
  /** The device's public key (JWK: EC P-256 or Ed25519) and its RFC 7638 thumbprint (DPoP `jkt`). */
  readonly publicJwk: Readonly<Record<string, unknown>>;
  readonly jkt: string;
  /** Its device certificate from the internal CA (enrolled with a CSR), or null (DPoP only). */
  readonly certSerial: string | null;
  readonly certNotAfter: number | null;
  /** `pending` (awaits an admin), `active` (trusted), `revoked` (refused on its next request). */
  readonly status: 'pending' | 'active' | 'revoked';
  readonly createdAt: number;
  readonly approvedAt: number | null;
  readonly revokedAt: number | null;
  readonly lastSeenAt: number | null;
  /** The last accepted posture report (its claims), when it was signed, and the compliance verdict. */
  readonly posture: Readonly<Record<string, unknown>> | null;
  readonly postureAt: number | null;
  readonly compliant: boolean;
  /** Why the last report is not compliant (rule names with what was found). */
  readonly complianceFailures: readonly string[];
}

export type DeviceUpdate = Partial<
  Pick<
    DeviceRecord,
    | 'status'
    | 'approvedAt'
    | 'revokedAt'
    | 'lastSeenAt'
    | 'posture'
    | 'postureAt'
    | 'compliant'
    | 'complianceFailures'
    | 'certSerial'
    | 'certNotAfter'
  >
>;

/** An API key: only the SHA-256 of its secret is kept; the key itself is shown once, at creation. */
export interface ApiKeyRecord {
  readonly id: string;
  readonly name: string;
  /** SHA-256 (hex) of the secret part. */
  readonly hash: string;
  readonly roles: readonly string[];
  readonly createdAt: number;
  readonly expiresAt: number | null;
  readonly revokedAt: number | null;
}

export interface ApiKeyStore {
  /** Fails with `{ code: 'conflict' }` when the name exists. */
  create(key: ApiKeyRecord): Promise<void>;
  get(id: string): Promise<ApiKeyRecord | undefined>;
  findByName(name: string): Promise<ApiKeyRecord | undefined>;
  list(): Promise<ApiKeyRecord[]>;
  /** Ends a key (atomic); false when it was already revoked. */
  revoke(id: string, at: number): Promise<boolean>;
}

/** What a request needs to know about the device it proved: read on every such request, so kept narrow. */
export type DeviceCheck = Pick<
  DeviceRecord,
  'id' | 'userId' | 'status' | 'jkt' | 'certSerial' | 'platform' | 'posture' | 'postureAt' | 'compliant'
>;

export interface DeviceStore {
  /** Fails with `{ code: 'conflict' }` when the key (thumbprint) is enrolled as a device that is not revoked. */
  create(device: DeviceRecord): Promise<void>;
  get(id: string): Promise<DeviceRecord | undefined>;
  findByJkt(jkt: string): Promise<DeviceRecord | undefined>;
  /** The per-request view of a device, by key thumbprint or by id (one narrow indexed read). */
  check(by: { jkt: string } | { id: string }): Promise<DeviceCheck | undefined>;
  /** All devices, or one user's; newest first. */
  list(userId?: UserId): Promise<DeviceRecord[]>;
  update(id: string, patch: DeviceUpdate): Promise<void>;
  /** pending → active (atomic); false when the device is not pending (approved already, or revoked). */
  approve(id: string, at: number): Promise<boolean>;
  /**
   * → revoked (atomic), and every session of its user bound to its key (`dpopJkt`) ends with it: the
   * number of sessions ended, or undefined when the device was already revoked.
   */
  revoke(id: string, at: number): Promise<number | undefined>;
  /**
   * Records a posture report unless a later one is already stored (atomic compare on `postureAt`);
   * false when the report is not newer.
   */
  putPosture(
    id: string,
    report: { posture: Record<string, unknown>; postureAt: number; compliant: boolean; failures: string[] },
  ): Promise<boolean>;
}

export interface Store {
  readonly users: UserStore;
  readonly sessions: SessionStore;
  readonly mfaChallenges: MfaChallengeStore;
  readonly serviceAccounts: ServiceAccountStore;
  readonly devices: DeviceStore;
  readonly apiKeys: ApiKeyStore;
  /** One-time tokens that authorise a workload's first X.509-SVID, each bound to one SPIFFE ID. */
  readonly joinTokens: {
    create(hash: string, spiffeId: string, expiresAt: number, at: number): Promise<void>;
    /** Spends the token (atomic, once, before it expires): its SPIFFE ID, or undefined. */
    consume(hash: string, at: number): Promise<string | undefined>;
  };
  /** Risk-engine history per principal (JSON), written behind. */
  readonly riskProfiles: {
    get(id: string): Promise<string | undefined>;
    putMany(entries: readonly (readonly [string, string])[], at: number): Promise<void>;
  };
  readonly audit: AuditStore;
  /** Throws when the store is unreachable. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export class StoreError extends Error {
  readonly code: 'conflict' | 'unavailable';
  constructor(code: 'conflict' | 'unavailable', message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
    this.code = code;
  }
}
