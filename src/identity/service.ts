import { createHmac } from 'node:crypto';
import type { AuditWriter } from '../audit/index.js';
import {
  type Clock,
  type Logger,
  newSessionId,
  newUserId,
  PortcullisError,
  type Principal,
  ROLE_NAME,
  randomToken,
  type SessionId,
  sha256b64url,
  type UserId,
} from '../core/index.js';
import { type SessionRecord, type Store, StoreError, type UserRecord } from '../store/index.js';
import { checkPassword } from './password-policy.js';
import type { PasswordHasher } from './passwords.js';
import { SecretBox } from './secret-box.js';
import { LoginThrottle, type ThrottleOptions } from './throttle.js';
import { type AccessTokenSubject, INVALID_TOKEN_CHALLENGE, type TokenService } from './tokens.js';
import { hashRecoveryCode, matchTotp, newRecoveryCodes, newTotpSecret, totpQrSvg, totpUri } from './totp.js';

/** Where a request came from, for the audit log. */
export interface RequestMeta {
  ip: string;
  requestId: string;
  /** The client's User-Agent (logins and refreshes record it on the session). */
  userAgent?: string | undefined;
  /** The thumbprint of the key that signed a valid DPoP proof sent with this request (RFC 9449). */
  dpopJkt?: string | undefined;
}

/** OAuth 2.0 token response (RFC 6749 §5.1). */
export interface TokenResponse {
  access_token: string;
  /** `DPoP` when the session is bound to a key (send the token with `Authorization: DPoP` and a proof). */
  token_type: 'Bearer' | 'DPoP';
  expires_in: number;
  refresh_token: string;
}

export interface IdentityServiceOptions {
  store: Store;
  tokens: TokenService;
  passwords: PasswordHasher;
  audit: AuditWriter;
  clock: Clock;
  log: Logger;
  sessionTtlMs: number;
  /** A session with no login/refresh for this long ends (idle timeout). */
  sessionIdleMs: number;
  /** How identity events are written (default `durable`: committed before the answer). */
  auditMode?: 'durable' | 'batched';
  /** 32-byte key sealing TOTP seeds and keying recovery-code hashes and refresh successors. */
  dataKey: Buffer;
  throttle: ThrottleOptions;
  /** Window in which a refresh token presented twice yields the same successor (ms; 0 = none). */
  refreshGraceMs: number;
  mfa: { issuerName: string; challengeTtlMs: number };
}

export interface NewUser {
  username: string;
  password: string;
  roles: readonly string[];
  email?: string;
  displayName?: string;
  groups?: readonly string[];
  attributes?: Readonly<Record<string, unknown>>;
}

/** The answer to a correct password when the account has MFA: the second step's ticket. */
export interface MfaChallengeResponse {
  mfa_required: true;
  mfa_token: string;
  mfa_methods: string[];
  expires_in: number;
}

/** A fresh MFA proof: a TOTP code or one recovery code. */
export type MfaProof = { code: string } | { recoveryCode: string };

/** NFKC + lower case: one account per visually-equal name. */
export function normalizeUsername(name: string): string {
  return name.normalize('NFKC').toLowerCase();
}

/** NFKC + lower case, the same for every form of one address. */
export function normalizeEmail(email: string): string {
  return email.normalize('NFKC').trim().toLowerCase();
}

const EMAIL = /^[^\s@\p{C}]{1,64}@[^\s@\p{C}]{1,253}\.[^\s@\p{C}]{2,63}$/u;
const MAX_MFA_ATTEMPTS = 5;
/** A browser session's activity is written at most this often (keeps it from idling out). */
const SESSION_TOUCH_MS = 60_000;
/** Authentication context classes: password alone, or with a second factor. */
const ACR_PASSWORD = 'aal1';
const ACR_MFA = 'aal2';

const storeDown = (err: unknown) =>
  new PortcullisError('store_unavailable', { detail: (err as Error).message, cause: err });

/**
 * Users, password login (throttled, with temporary locks), TOTP MFA with recovery codes, sessions with
 * rotating refresh tokens (reuse detection, a grace window for concurrent refreshes), step-up, logout,
 * and the per-request session check. Every login, refresh, MFA use, lock and logout (success or
 * failure) is a durable audit record.
 */
export class IdentityService {
  readonly #o: IdentityServiceOptions;
  readonly #box: SecretBox;
  readonly #throttle: LoginThrottle;

  constructor(options: IdentityServiceOptions) {
    this.#o = options;
    this.#box = new SecretBox(options.dataKey);
    this.#throttle = new LoginThrottle(options.throttle);
  }

  async createUser(input: NewUser): Promise<UserRecord> {
    const username = normalizeUsername(input.username);
    if (!/^[^\s\p{C}]{1,254}$/u.test(username)) {
      throw new PortcullisError('invalid_body', {
        message: 'username must be 1–254 characters without spaces',
      });
    }
    const email = input.email === undefined ? null : normalizeEmail(input.email);
    if (email !== null && !EMAIL.test(email))
      throw new PortcullisError('invalid_body', { message: 'email is not a valid address' });
    const badRole = input.roles.find((r) => !ROLE_NAME.test(r));
    if (badRole !== undefined) {
      throw new PortcullisError('invalid_body', {
        message: `role "${badRole}" is not a valid role name (letters, digits, . _ : @ / -)`,
      });
    }
    checkPassword(input.password, { email });
    const user: UserRecord = {
      ...this.#freshAccount(),
      username,
      email,
      displayName: input.displayName ?? null,
      passwordHash: await this.#o.passwords.hash(input.password),
      roles: [...new Set(input.roles)],
      groups: [...new Set(input.groups ?? [])],
      attributes: { ...(input.attributes ?? {}) },
    };
    // One account per normalized username and per normalized email, whichever form is used to log in.
    const clash =
      (await this.#o.store.users.findByLogin(username)) ??
      (email ? await this.#o.store.users.findByLogin(email) : undefined);
    if (clash)
      throw new PortcullisError('invalid_body', {
        message: 'a user with this username or email already exists',
      });
    await this.#o.store.users.create(user);
    await this.#audit('identity.user.created', { userId: user.id, username, roles: user.roles });
    return user;
  }

  /**
   * Password login (by username or email). Wrong password, unknown user and suspended user answer the
   * same, in the same time; repeated failures back off exponentially and then lock the account for a
   * while (unknown accounts alike). With MFA enrolled, a correct password yields an MFA challenge.
   */
  async login(
    loginInput: string,
    password: string,
    meta: RequestMeta,
  ): Promise<TokenResponse | MfaChallengeResponse> {
    const login = normalizeUsername(loginInput);
    let user: UserRecord | undefined;
    try {
      user = await this.#o.store.users.findByLogin(login);
    } catch (err) {
      throw storeDown(err);
    }
    const username = user?.username ?? login;
    const key = user ? user.id : `?${login}`;
    return this.#guarded(key, user, { username, ip: meta.ip, requestId: meta.requestId }, async () => {
      // A hash that is not argon2 (a federated account's marker) is checked like an unknown user: the
      // same work, so the answer time does not tell which accounts exist.
      const phc = user?.passwordHash.startsWith('$argon2') ? user.passwordHash : undefined;
      const ok = phc !== undefined && (await this.#o.passwords.verify(phc, password));
      if (phc === undefined) await this.#o.passwords.verify(undefined, password);
      if (!user || !ok || user.status !== 'active') {
        const reason = !user ? 'unknown_user' : !ok ? 'bad_password' : 'user_suspended';
        await this.#audit('auth.login.failed', { username, reason, ip: meta.ip, requestId: meta.requestId });
        await this.#countFailure(key, user, { username, ip: meta.ip, requestId: meta.requestId });
        throw new PortcullisError('invalid_credentials', { detail: reason });
      }
      // Failures are forgotten only after a complete sign-in: with MFA, a right password alone must not
      // reset the count that MFA-code guesses add to.
      if (user.totpSecret === null) this.#throttle.succeed(key);
      if (this.#o.passwords.needsRehash(user.passwordHash)) {
        // The configured argon2 parameters changed since this hash was made: upgrade it now.
        await this.#o.store.users
          .update(user.id, { passwordHash: await this.#o.passwords.hash(password) })
          .catch((err: unknown) => {
            this.#o.log.warn({ err, userId: user?.id }, 'password re-hash failed; kept the old hash');
          });
      }
      const now = this.#o.clock.now();
      if (user.totpSecret !== null) {
        const token = randomToken();
        try {
          await this.#o.store.mfaChallenges.create({
            hash: sha256b64url(token),
            userId: user.id,
            createdAt: now,
            expiresAt: now + this.#o.mfa.challengeTtlMs,
            attempts: 0,
            usedAt: null,
          });
        } catch (err) {
          throw storeDown(err);
        }
        await this.#audit('auth.login.mfa_required', {
          userId: user.id,
          username,
          ip: meta.ip,
          requestId: meta.requestId,
        });
        return {
          mfa_required: true,
          mfa_token: token,
          mfa_methods: ['otp', 'recovery'],
          expires_in: Math.floor(this.#o.mfa.challengeTtlMs / 1000),
        };
      }
      return this.#startSession(user, ['pwd'], ACR_PASSWORD, meta);
    });
  }

  /** The second step of a login with MFA: the challenge from {@link login} plus a code. */
  async completeMfaLogin(mfaToken: string, proof: MfaProof, meta: RequestMeta): Promise<TokenResponse> {
    const now = this.#o.clock.now();
    const hash = sha256b64url(mfaToken);
    let challenge: Awaited<ReturnType<Store['mfaChallenges']['get']>>;
    try {
      challenge = await this.#o.store.mfaChallenges.get(hash);
    } catch (err) {
      throw storeDown(err);
    }
    const base = { ip: meta.ip, requestId: meta.requestId };
    if (
      !challenge ||
      challenge.usedAt !== null ||
      challenge.expiresAt <= now ||
      challenge.attempts >= MAX_MFA_ATTEMPTS
    ) {
      await this.#audit('auth.mfa.failed', {
        ...base,
        reason: 'challenge_invalid',
        userId: challenge?.userId ?? null,
      });
      throw new PortcullisError('invalid_mfa_code', {
        detail: 'unknown, used, expired or exhausted MFA challenge',
      });
    }
    const user = await this.#user(challenge.userId);
    if (user?.status !== 'active') throw new PortcullisError('invalid_mfa_code', { detail: 'user inactive' });
    return this.#guarded(user.id, user, { username: user.username, ...base }, async () => {
      const method = await this.#checkProof(user, proof, now, base);
      if (method === undefined) {
        await this.#o.store.mfaChallenges.fail(hash).catch(() => undefined);
        await this.#countFailure(user.id, user, { username: user.username, ...base });
        throw new PortcullisError('invalid_mfa_code');
      }
      if (!(await this.#o.store.mfaChallenges.consume(hash, now))) {
        throw new PortcullisError('invalid_mfa_code', { detail: 'MFA challenge already used' });
      }
      this.#throttle.succeed(user.id);
      return this.#startSession(user, ['pwd', method], ACR_MFA, meta);
    });
  }

  /**
   * Starts TOTP enrolment: a new seed (sealed at rest), its otpauth URI and QR code. Nothing changes for
   * logins until {@link confirmTotp} proves the app has it.
   */
  async beginTotp(userId: UserId): Promise<{ secret: string; otpauth_uri: string; qr_svg: string }> {
    const user = await this.#user(userId);
    if (!user) throw new PortcullisError('invalid_token', { detail: 'user gone' });
    if (user.totpSecret !== null)
      throw new PortcullisError('bad_request', {
        message: 'TOTP is already enrolled; an administrator can reset it',
      });
    const secret = newTotpSecret();
    await this.#o.store.users.update(user.id, { totpPending: this.#box.seal(secret, `totp:${user.id}`) });
    const uri = totpUri(secret, this.#o.mfa.issuerName, user.email ?? user.username);
    return { secret, otpauth_uri: uri, qr_svg: await totpQrSvg(uri) };
  }

  /** Completes enrolment with a valid code; returns ten single-use recovery codes (shown once). */
  async confirmTotp(userId: UserId, code: string, meta: RequestMeta): Promise<{ recovery_codes: string[] }> {
    const user = await this.#user(userId);
    if (!user?.totpPending)
      throw new PortcullisError('bad_request', { message: 'no TOTP enrolment in progress' });
    const base = { ip: meta.ip, requestId: meta.requestId, userId: user.id };
    return this.#guarded(user.id, user, { username: user.username, ...base }, async () => {
      const now = this.#o.clock.now();
      const secret = this.#box.open(user.totpPending as string, `totp:${user.id}`);
      const step = matchTotp(secret, code, now);
      if (step === undefined || !(await this.#o.store.users.useTotpStep(user.id, step))) {
        await this.#audit('auth.mfa.failed', { ...base, reason: 'bad_code', during: 'enrolment' });
        await this.#countFailure(user.id, user, { username: user.username, ...base });
        throw new PortcullisError('invalid_mfa_code');
      }
      await this.#o.store.users.update(user.id, { totpSecret: user.totpPending, totpPending: null });
      const codes = await this.#newRecoveryCodes(user.id, now);
      await this.#audit('auth.mfa.enrolled', { ...base, method: 'otp' });
      return { recovery_codes: codes };
    });
  }

  /** New recovery codes (the old ones stop working), after a fresh TOTP code. */
  async regenerateRecoveryCodes(
    userId: UserId,
    code: string,
    meta: RequestMeta,
  ): Promise<{ recovery_codes: string[] }> {
    const user = await this.#user(userId);
    if (!user?.totpSecret) throw new PortcullisError('bad_request', { message: 'TOTP is not enrolled' });
    const base = { ip: meta.ip, requestId: meta.requestId };
    return this.#guarded(user.id, user, { username: user.username, ...base }, async () => {
      const now = this.#o.clock.now();
      if ((await this.#checkProof(user, { code }, now, base)) === undefined) {
        await this.#countFailure(user.id, user, { username: user.username, ...base });
        throw new PortcullisError('invalid_mfa_code');
      }
      const codes = await this.#newRecoveryCodes(user.id, now);
      await this.#audit('auth.mfa.recovery_codes_regenerated', { ...base, userId: user.id });
      return { recovery_codes: codes };
    });
  }

  /** Removes TOTP and recovery codes (administrator reset). */
  async resetMfa(userId: UserId): Promise<void> {
    await this.#o.store.users.update(userId, { totpSecret: null, totpPending: null });
    await this.#o.store.users.setRecoveryCodes(userId, [], this.#o.clock.now());
    await this.#audit('identity.user.mfa_reset', { userId });
  }

  /** Lifts a temporary lock (administrator). */
  async unlock(userId: UserId): Promise<void> {
    await this.#o.store.users.update(userId, { lockedUntil: null });
    this.#throttle.reset(userId);
    await this.#audit('identity.user.unlocked', { userId });
  }

  async listUsers(): Promise<UserRecord[]> {
    return this.#o.store.users.list();
  }

  /** By id, username or email. */
  async findUser(idOrLogin: string): Promise<UserRecord | undefined> {
    return (
      (await this.#o.store.users.get(idOrLogin as UserId)) ??
      (await this.#o.store.users.findByLogin(normalizeUsername(idOrLogin)))
    );
  }

  /** Suspends a user: logins refused, every session ended at once. */
  async suspend(userId: UserId): Promise<number> {
    await this.#o.store.users.update(userId, { status: 'suspended' });
    const ended = await this.#o.store.sessions.revokeAll(userId, this.#o.clock.now());
    await this.#audit('identity.user.suspended', { userId, sessionsRevoked: ended });
    return ended;
  }

  async activate(userId: UserId): Promise<void> {
    await this.#o.store.users.update(userId, { status: 'active' });
    await this.#audit('identity.user.activated', { userId });
  }

  /** A user's sessions, newest first, with whether each is still active. */
  async sessions(userId: UserId): Promise<(SessionRecord & { active: boolean })[]> {
    const now = this.#o.clock.now();
    return (await this.#o.store.sessions.listByUser(userId)).map((s) => ({
      ...s,
      active: s.revokedAt === null && s.expiresAt > now && now - s.lastSeenAt <= this.#o.sessionIdleMs,
    }));
  }

  /** Ends one session of a user (false when it is not theirs or already ended). */
  async revokeSession(userId: UserId, sessionId: SessionId, meta?: RequestMeta): Promise<boolean> {
    const s = await this.#o.store.sessions.get(sessionId);
    if (!s || s.userId !== userId) return false;
    const revoked = await this.#o.store.sessions.revoke(sessionId, this.#o.clock.now());
    await this.#audit('auth.session.revoked', {
      userId,
      sessionId,
      revoked,
      ip: meta?.ip,
      requestId: meta?.requestId,
    });
    return revoked;
  }

  /** Ends every session of a user; returns how many were active. */
  async revokeAllSessions(userId: UserId, meta?: RequestMeta): Promise<number> {
    const n = await this.#o.store.sessions.revokeAll(userId, this.#o.clock.now());
    await this.#audit('auth.session.revoked_all', {
      userId,
      count: n,
      ip: meta?.ip,
      requestId: meta?.requestId,
    });
    return n;
  }

  /**
   * Step-up: a fresh MFA proof upgrades the caller's own session (auth_time now, amr + the method,
   * acr aal2) and returns an access token that says so. The proof is spent (a TOTP step is never
   * accepted twice, a recovery code is single-use), so it cannot be replayed on another session.
   */
  async stepUp(
    principal: Principal,
    proof: MfaProof,
    meta: RequestMeta,
  ): Promise<Omit<TokenResponse, 'refresh_token'>> {
    const sessionId = principal.sessionId;
    if (sessionId === undefined)
      throw new PortcullisError('invalid_token', { detail: 'token has no session' });
    await this.checkSession(principal);
    const user = await this.#user(principal.id as UserId);
    if (user?.status !== 'active')
      throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
    if (!user.totpSecret)
      throw new PortcullisError('bad_request', { message: 'enrol TOTP first (POST /auth/mfa/totp)' });
    const base = { ip: meta.ip, requestId: meta.requestId, sessionId };
    return this.#guarded(user.id, user, { username: user.username, ...base }, async () => {
      const now = this.#o.clock.now();
      const method = await this.#checkProof(user, proof, now, base);
      if (method === undefined) {
        await this.#countFailure(user.id, user, { username: user.username, ...base });
        throw new PortcullisError('invalid_mfa_code');
      }
      const session = await this.#o.store.sessions.get(sessionId);
      if (!session) throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
      const amr = [...new Set([...session.amr, method])];
      if (!(await this.#o.store.sessions.stepUp(sessionId, { authTime: now, amr, acr: ACR_MFA })))
        throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
      await this.#audit('auth.step_up', { ...base, userId: user.id, amr });
      const { refresh_token: _, ...access } = await this.#tokenResponse(
        user,
        { ...session, authTime: now, amr, acr: ACR_MFA },
        '',
      );
      return access;
    });
  }

  /** Spends a refresh token and returns a new pair. Reusing a spent token revokes the whole session. */
  async refresh(refreshToken: string, meta: RequestMeta): Promise<TokenResponse> {
    const successor = this.#successorOf(refreshToken);
    let result: Awaited<ReturnType<Store['sessions']['rotateRefresh']>>;
    try {
      result = await this.#o.store.sessions.rotateRefresh(
        sha256b64url(refreshToken),
        sha256b64url(successor),
        this.#o.clock.now(),
        this.#o.refreshGraceMs,
        {
          ip: meta.ip || null,
          userAgent: meta.userAgent?.slice(0, 256) ?? null,
          idleMs: this.#o.sessionIdleMs,
        },
      );
    } catch (err) {
      throw storeDown(err);
    }
    const base = { ip: meta.ip, requestId: meta.requestId };
    switch (result.kind) {
      case 'unknown':
        await this.#audit('auth.refresh.failed', { ...base, reason: 'unknown_token' });
        throw new PortcullisError('invalid_grant', { detail: 'unknown refresh token' });
      case 'inactive':
        await this.#audit('auth.refresh.failed', {
          ...base,
          reason: 'session_inactive',
          sessionId: result.session.id,
        });
        throw new PortcullisError('invalid_grant', { detail: 'session revoked or expired' });
      case 'reused':
        await this.#audit('auth.refresh.reused', {
          ...base,
          sessionId: result.session.id,
          userId: result.session.userId,
          action: 'session_revoked',
          severity: 'critical',
        });
        this.#o.log.warn(
          { sessionId: result.session.id, requestId: meta.requestId },
          'refresh token reuse: session revoked',
        );
        throw new PortcullisError('invalid_grant', {
          detail: 'refresh token reuse detected; session revoked',
        });
      case 'grace':
      case 'rotated': {
        const user = await this.#user(result.session.userId);
        if (user?.status !== 'active') {
          await this.#o.store.sessions.revoke(result.session.id, this.#o.clock.now()).catch(() => false);
          await this.#audit('auth.refresh.failed', {
            ...base,
            reason: 'user_inactive',
            sessionId: result.session.id,
          });
          throw new PortcullisError('invalid_grant', { detail: 'user missing or disabled' });
        }
        // A key-bound session's refresh token is only good with a proof by that key (RFC 9449 §5): without
        // it, the token was taken from its device — the session ends, as with refresh-token reuse.
        if (result.session.dpopJkt !== undefined && meta.dpopJkt !== result.session.dpopJkt) {
          await this.#o.store.sessions.revoke(result.session.id, this.#o.clock.now()).catch(() => false);
          await this.#audit('auth.refresh.unbound', {
            ...base,
            sessionId: result.session.id,
            userId: user.id,
            action: 'session_revoked',
            severity: 'critical',
          });
          throw new PortcullisError('invalid_grant', {
            detail: 'refresh token of a DPoP-bound session without a proof by its key; session revoked',
          });
        }
        await this.#audit('auth.refresh.succeeded', {
          ...base,
          sessionId: result.session.id,
          userId: user.id,
          ...(result.kind === 'grace' ? { grace: true } : {}),
        });
        return this.#tokenResponse(user, result.session, successor);
      }
    }
  }

  /**
   * A login through an external OP (its ID token already verified): finds the local user linked to
   * (provider, sub) — or creates one, with no usable password — syncs its roles from the OP's claims,
   * and starts a session. `amr`/`acr` come from the OP when it sends them. Never links by email (an OP
   * that lets users set any email would otherwise take over local accounts).
   */
  async federatedLogin(
    identity: {
      provider: string;
      subject: string;
      claims: Record<string, unknown>;
      roles: string[];
      /** Copy the OP's `amr`/`acr` (configured per provider). */
      trustAuthContext?: boolean;
    },
    meta: RequestMeta,
  ): Promise<TokenResponse> {
    const { provider, subject, claims } = identity;
    let user = await this.#o.store.users.findFederated(provider, subject);
    const displayName = typeof claims.name === 'string' ? claims.name.slice(0, 256) : null;
    if (!user) {
      const preferred = typeof claims.preferred_username === 'string' ? claims.preferred_username : subject;
      let username = normalizeUsername(`${provider}:${preferred}`)
        .replace(/[\s\p{C}]/gu, '')
        .slice(0, 254);
      if (await this.#o.store.users.findByLogin(username))
        username = normalizeUsername(`${provider}:${subject}`).slice(0, 254);
      const email =
        typeof claims.email === 'string' &&
        claims.email_verified === true &&
        EMAIL.test(normalizeEmail(claims.email))
          ? normalizeEmail(claims.email)
          : null;
      const emailFree = email !== null && !(await this.#o.store.users.findByLogin(email));
      user = {
        ...this.#freshAccount(),
        username,
        email: emailFree ? email : null,
        displayName,
        passwordHash: '!federated', // not a PHC string: no password ever verifies
        roles: identity.roles.filter((r) => ROLE_NAME.test(r)),
      };
      await this.#o.store.users.create(user);
      await this.#o.store.users.linkFederated(provider, subject, user.id, this.#o.clock.now());
      await this.#audit('identity.user.created', { userId: user.id, username, roles: user.roles, provider });
    } else {
      const roles = identity.roles.filter((r) => ROLE_NAME.test(r));
      if (JSON.stringify(roles) !== JSON.stringify(user.roles)) {
        await this.#o.store.users.update(user.id, { roles, displayName });
        user = { ...user, roles };
      }
    }
    if (user.status !== 'active') {
      await this.#audit('auth.login.failed', {
        username: user.username,
        reason: 'user_suspended',
        provider,
        ip: meta.ip,
        requestId: meta.requestId,
      });
      throw new PortcullisError('invalid_credentials', { detail: 'user_suspended' });
    }
    // What the OP says about how the user authenticated counts only if the operator trusts it; the time
    // of authentication is the OP's (`auth_time`), not this login's — an SSO session may be hours old.
    const idpAmr = Array.isArray(claims.amr)
      ? claims.amr.filter((m): m is string => typeof m === 'string')
      : [];
    const amr = identity.trustAuthContext && idpAmr.length > 0 ? ['fed', ...idpAmr] : ['fed'];
    const acr = identity.trustAuthContext && typeof claims.acr === 'string' ? claims.acr : ACR_PASSWORD;
    const authTime =
      typeof claims.auth_time === 'number'
        ? Math.min(claims.auth_time * 1000, this.#o.clock.now())
        : undefined;
    return this.#startSession(user, amr, acr, meta, authTime);
  }

  /**
   * RFC 7009 revocation: a refresh token or one of our access tokens ends its session. Anything else
   * (unknown, already ended, a service token that simply expires soon) is not an error.
   */
  async revokeToken(token: string, meta: RequestMeta): Promise<void> {
    let session = await this.#o.store.sessions.byRefreshHash(sha256b64url(token)).catch((err: unknown) => {
      throw storeDown(err);
    });
    if (!session && token.split('.').length === 3) {
      const claims = await this.#o.tokens.claimsOf(token);
      if (typeof claims?.sid === 'string')
        session = await this.#o.store.sessions.get(claims.sid as SessionId);
    }
    if (!session) return;
    const revoked = await this.#o.store.sessions.revoke(session.id, this.#o.clock.now());
    await this.#audit('auth.token.revoked', {
      sessionId: session.id,
      userId: session.userId,
      revoked,
      ip: meta.ip,
      requestId: meta.requestId,
    });
  }

  /** OIDC userinfo for the caller's own (user) token. */
  async userinfo(principal: Principal): Promise<Record<string, unknown>> {
    await this.checkSession(principal);
    const user = principal.kind === 'user' ? await this.#user(principal.id) : undefined;
    if (!user)
      throw new PortcullisError('invalid_token', {
        detail: 'not a user token',
        headers: INVALID_TOKEN_CHALLENGE,
      });
    return {
      sub: user.id,
      preferred_username: user.username,
      ...(user.email ? { email: user.email } : {}),
      ...(user.displayName ? { name: user.displayName } : {}),
      roles: user.roles,
      groups: user.groups,
    };
  }

  /** Ends a session: its access tokens stop working at the gateway on the next request. */
  async logout(sessionId: SessionId, meta: RequestMeta): Promise<void> {
    let revoked: boolean;
    try {
      revoked = await this.#o.store.sessions.revoke(sessionId, this.#o.clock.now());
    } catch (err) {
      throw storeDown(err);
    }
    await this.#audit('auth.logout', { sessionId, revoked, ip: meta.ip, requestId: meta.requestId });
  }

  /**
   * The per-request session check behind every bearer token: the session must exist, be unrevoked and
   * within its lifetime. A store error denies (fail closed). With `activity` (a long-lived connection
   * such as a WebSocket tunnel, checked again and again), the check also records the session's use, at
   * most once a minute, so a connection in use does not idle the session out.
   */
  async checkSession(
    principal: Principal,
    activity?: { ip: string; userAgent?: string | undefined },
  ): Promise<void> {
    if (principal.kind === 'service') {
      // A service account's token has no session: the account itself must still be active.
      let active = false;
      try {
        active = (await this.#o.store.serviceAccounts.get(principal.id))?.status === 'active';
      } catch (err) {
        throw storeDown(err);
      }
      if (!active) throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
      return;
    }
    const sessionId = principal.sessionId;
    let session: SessionRecord | undefined;
    try {
      session = sessionId === undefined ? undefined : await this.#o.store.sessions.get(sessionId);
    } catch (err) {
      throw storeDown(err);
    }
    const now = this.#o.clock.now();
    if (!this.#isActive(session, principal.id, now))
      throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
    if (activity) await this.#touch(session, now, activity);
  }

  /** Records a session's use, at most once per {@link SESSION_TOUCH_MS}, so it does not idle out. */
  async #touch(
    session: SessionRecord,
    now: number,
    meta: { ip: string; userAgent?: string | undefined },
  ): Promise<void> {
    if (now - session.lastSeenAt < SESSION_TOUCH_MS) return;
    await this.#o.store.sessions
      .touch(session.id, now, meta.ip || null, meta.userAgent?.slice(0, 256) ?? null)
      .catch((err: unknown) => {
        throw storeDown(err);
      });
  }

  /**
   * The principal of a browser session cookie's session, checked on every request like an access
   * token's ({@link checkSession}, plus the user still active) and equal to what an access token for the
   * session would carry now: the user's roles, the session's `amr`/`acr`/`auth_time` (so a step-up
   * counts at once). Activity keeps the session from idling out (recorded at most once a minute).
   */
  async sessionPrincipal(
    ref: { sessionId: SessionId; userId: UserId },
    meta: { ip: string; userAgent?: string | undefined },
  ): Promise<Principal> {
    let session: SessionRecord | undefined;
    try {
      session = await this.#o.store.sessions.get(ref.sessionId);
    } catch (err) {
      throw storeDown(err);
    }
    const now = this.#o.clock.now();
    if (!session || !this.#isActive(session, ref.userId, now) || session.dpopJkt !== undefined)
      throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
    const user = await this.#user(ref.userId);
    if (user?.status !== 'active')
      throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
    await this.#touch(session, now, meta);
    return this.#o.tokens.principalFor(this.#accessSubject(user, session));
  }

  /** Exists, not revoked, within its lifetime, not idle, and the named user's. */
  #isActive(session: SessionRecord | undefined, userId: string, now: number): session is SessionRecord {
    return (
      session !== undefined &&
      session.revokedAt === null &&
      session.expiresAt > now &&
      now - session.lastSeenAt <= this.#o.sessionIdleMs &&
      session.userId === userId
    );
  }

  /**
   * Refuses (429 + Retry-After) while the account is locked or backing off, or the address is; otherwise
   * reserves the attempt, which `run` then decides ({@link LoginThrottle.settle} in all cases).
   */
  async #guarded<T>(
    key: string,
    user: UserRecord | undefined,
    data: Record<string, unknown>,
    run: () => Promise<T>,
  ): Promise<T> {
    await this.#gate(key, user, data);
    try {
      return await run();
    } finally {
      this.#throttle.settle(key, String(data.ip ?? ''));
    }
  }

  /** Refuses (429 + Retry-After) while the account is locked or backing off, or the address is. */
  async #gate(key: string, user: UserRecord | undefined, data: Record<string, unknown>): Promise<void> {
    const now = this.#o.clock.now();
    const locked = user?.lockedUntil != null && user.lockedUntil > now ? user.lockedUntil - now : 0;
    const wait = locked > 0 ? locked : this.#throttle.acquire(key, String(data.ip ?? ''), now);
    if (wait > 0) {
      await this.#audit('auth.login.throttled', { ...data, retryAfterMs: wait, locked: locked > 0 });
      throw new PortcullisError('too_many_attempts', {
        detail: locked > 0 ? 'account temporarily locked' : 'backing off',
        headers: { 'retry-after': String(Math.ceil(wait / 1000)) },
      });
    }
  }

  async #countFailure(
    key: string,
    user: UserRecord | undefined,
    data: Record<string, unknown>,
  ): Promise<void> {
    const now = this.#o.clock.now();
    const { failures, lockUntil } = this.#throttle.fail(key, String(data.ip ?? ''), now);
    if (lockUntil === undefined) return;
    if (user) {
      try {
        await this.#o.store.users.update(user.id, { lockedUntil: lockUntil });
      } catch (err) {
        throw storeDown(err);
      }
    }
    await this.#audit('auth.lockout', {
      ...data,
      userId: user?.id ?? null,
      until: lockUntil,
      failures: failures || this.#o.throttle.lockAfter,
    });
  }

  /** Checks a TOTP code (never the same step twice) or spends a recovery code; the method used, or undefined. */
  async #checkProof(
    user: UserRecord,
    proof: MfaProof,
    now: number,
    data: Record<string, unknown>,
  ): Promise<'otp' | 'recovery' | undefined> {
    if ('code' in proof) {
      if (!user.totpSecret) return undefined;
      const step = matchTotp(this.#box.open(user.totpSecret, `totp:${user.id}`), proof.code, now);
      if (step !== undefined && (await this.#o.store.users.useTotpStep(user.id, step))) return 'otp';
      await this.#audit('auth.mfa.failed', {
        ...data,
        userId: user.id,
        reason: step === undefined ? 'bad_code' : 'code_reused',
      });
      return undefined;
    }
    const used = await this.#o.store.users.useRecoveryCode(
      user.id,
      hashRecoveryCode(this.#o.dataKey, proof.recoveryCode),
      now,
    );
    if (!used) {
      await this.#audit('auth.mfa.failed', { ...data, userId: user.id, reason: 'bad_recovery_code' });
      return undefined;
    }
    const left = await this.#o.store.users.unusedRecoveryCodes(user.id);
    await this.#audit('auth.mfa.recovery_code_used', { ...data, userId: user.id, remaining: left });
    return 'recovery';
  }

  async #newRecoveryCodes(userId: UserId, now: number): Promise<string[]> {
    const codes = newRecoveryCodes();
    await this.#o.store.users.setRecoveryCodes(
      userId,
      codes.map((c) => hashRecoveryCode(this.#o.dataKey, c)),
      now,
    );
    return codes;
  }

  /** What every new account starts with: a new id, active, no lock, no MFA, no groups or attributes. */
  #freshAccount(): Omit<UserRecord, 'username' | 'email' | 'displayName' | 'passwordHash' | 'roles'> {
    return {
      id: newUserId(),
      groups: [],
      attributes: {},
      status: 'active',
      createdAt: this.#o.clock.now(),
      lockedUntil: null,
      totpSecret: null,
      totpPending: null,
      totpLastStep: 0,
    };
  }

  async #startSession(
    user: UserRecord,
    amr: string[],
    acr: string,
    meta: RequestMeta,
    authTime?: number,
  ): Promise<TokenResponse> {
    const now = this.#o.clock.now();
    const session: SessionRecord = {
      id: newSessionId(),
      userId: user.id,
      amr,
      createdAt: now,
      expiresAt: now + this.#o.sessionTtlMs,
      revokedAt: null,
      authTime: authTime ?? now,
      acr,
      lastSeenAt: now,
      ip: meta.ip || null,
      userAgent: meta.userAgent?.slice(0, 256) ?? null,
      ...(meta.dpopJkt ? { dpopJkt: meta.dpopJkt } : {}),
    };
    const refresh = randomToken();
    try {
      await this.#o.store.sessions.create(session, sha256b64url(refresh));
    } catch (err) {
      throw storeDown(err);
    }
    await this.#audit('auth.login.succeeded', {
      userId: user.id,
      username: user.username,
      sessionId: session.id,
      amr,
      acr,
      ip: meta.ip,
      requestId: meta.requestId,
    });
    return this.#tokenResponse(user, session, refresh);
  }

  /** The successor of a refresh token: derived from it with a key, so a concurrent duplicate gets the same one. */
  #successorOf(refreshToken: string): string {
    return createHmac('sha256', this.#o.dataKey)
      .update(`refresh-successor:${refreshToken}`)
      .digest('base64url');
  }

  async #user(id: UserId): Promise<UserRecord | undefined> {
    try {
      return await this.#o.store.users.get(id);
    } catch (err) {
      throw storeDown(err);
    }
  }

  async #tokenResponse(user: UserRecord, session: SessionRecord, refresh: string): Promise<TokenResponse> {
    const access = await this.#o.tokens.issueAccessToken(this.#accessSubject(user, session));
    return {
      access_token: access,
      token_type: session.dpopJkt ? 'DPoP' : 'Bearer',
      expires_in: this.#o.tokens.accessTokenTtlSec,
      refresh_token: refresh,
    };
  }

  /** What an access token for this session says: the user's roles and groups, how and when they signed in. */
  #accessSubject(user: UserRecord, session: SessionRecord): AccessTokenSubject {
    return {
      userId: user.id,
      sessionId: session.id,
      roles: user.roles,
      amr: session.amr,
      authTime: session.authTime,
      acr: session.acr,
      groups: user.groups,
      attributes: user.attributes,
      confirmationJkt: session.dpopJkt,
    };
  }

  /** Identity events are durable by default: the response waits until the record is committed. */
  async #audit(type: string, data: Record<string, unknown>): Promise<void> {
    try {
      await this.#o.audit.write({ type, data }, this.#o.auditMode ?? 'durable');
    } catch (err) {
      throw storeDown(err instanceof StoreError ? err : new Error('audit write failed', { cause: err }));
    }
  }
}
