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
import type { PasswordHasher } from './passwords.js';
import { INVALID_TOKEN_CHALLENGE, type TokenService } from './tokens.js';

/** Where a request came from, for the audit log. */
export interface RequestMeta {
  ip: string;
  requestId: string;
}

/** OAuth 2.0 token response (RFC 6749 §5.1). */
export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
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
  /** How identity events are written (default `durable`: committed before the answer). */
  auditMode?: 'durable' | 'batched';
}

export interface NewUser {
  username: string;
  password: string;
  roles: readonly string[];
}

/** NFKC + lower case: one account per visually-equal name. */
export function normalizeUsername(name: string): string {
  return name.normalize('NFKC').toLowerCase();
}

const storeDown = (err: unknown) =>
  new PortcullisError('store_unavailable', { detail: (err as Error).message, cause: err });

/**
 * Users, password login, sessions with rotating refresh tokens, logout, and the per-request session
 * check. Every login, refresh and logout (success or failure) is a durable audit record.
 */
export class IdentityService {
  readonly #o: IdentityServiceOptions;

  constructor(options: IdentityServiceOptions) {
    this.#o = options;
  }

  async createUser(input: NewUser): Promise<UserRecord> {
    const username = normalizeUsername(input.username);
    if (!/^[^\s\p{C}]{1,254}$/u.test(username)) {
      throw new PortcullisError('invalid_body', {
        message: 'username must be 1–254 characters without spaces',
      });
    }
    const badRole = input.roles.find((r) => !ROLE_NAME.test(r));
    if (badRole !== undefined) {
      throw new PortcullisError('invalid_body', {
        message: `role "${badRole}" is not a valid role name (letters, digits, . _ : @ / -)`,
      });
    }
    const user: UserRecord = {
      id: newUserId(),
      username,
      passwordHash: await this.#o.passwords.hash(input.password),
      roles: [...new Set(input.roles)],
      status: 'active',
      createdAt: this.#o.clock.now(),
    };
    await this.#o.store.users.create(user);
    await this.#audit('identity.user.created', { userId: user.id, username, roles: user.roles });
    return user;
  }

  /** Password login. Wrong password, unknown user and disabled user answer the same, in the same time. */
  async login(usernameInput: string, password: string, meta: RequestMeta): Promise<TokenResponse> {
    const username = normalizeUsername(usernameInput);
    let user: UserRecord | undefined;
    try {
      user = await this.#o.store.users.findByUsername(username);
    } catch (err) {
      throw storeDown(err);
    }
    const ok = await this.#o.passwords.verify(user?.passwordHash, password);
    if (!user || !ok || user.status !== 'active') {
      const reason = !user ? 'unknown_user' : !ok ? 'bad_password' : 'user_disabled';
      await this.#audit('auth.login.failed', { username, reason, ip: meta.ip, requestId: meta.requestId });
      throw new PortcullisError('invalid_credentials', { detail: reason });
    }
    const now = this.#o.clock.now();
    const session: SessionRecord = {
      id: newSessionId(),
      userId: user.id,
      amr: ['pwd'],
      createdAt: now,
      expiresAt: now + this.#o.sessionTtlMs,
      revokedAt: null,
    };
    const refresh = randomToken();
    try {
      await this.#o.store.sessions.create(session, sha256b64url(refresh));
    } catch (err) {
      throw storeDown(err);
    }
    await this.#audit('auth.login.succeeded', {
      userId: user.id,
      username,
      sessionId: session.id,
      amr: session.amr,
      ip: meta.ip,
      requestId: meta.requestId,
    });
    return this.#tokenResponse(user, session, refresh);
  }

  /** Spends a refresh token and returns a new pair. Reusing a spent token revokes the whole session. */
  async refresh(refreshToken: string, meta: RequestMeta): Promise<TokenResponse> {
    const successor = randomToken();
    let result: Awaited<ReturnType<Store['sessions']['rotateRefresh']>>;
    try {
      result = await this.#o.store.sessions.rotateRefresh(
        sha256b64url(refreshToken),
        sha256b64url(successor),
        this.#o.clock.now(),
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
        });
        this.#o.log.warn(
          { sessionId: result.session.id, requestId: meta.requestId },
          'refresh token reuse: session revoked',
        );
        throw new PortcullisError('invalid_grant', {
          detail: 'refresh token reuse detected; session revoked',
        });
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
        await this.#audit('auth.refresh.succeeded', {
          ...base,
          sessionId: result.session.id,
          userId: user.id,
        });
        return this.#tokenResponse(user, result.session, successor);
      }
    }
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
   * within its lifetime. A store error denies (fail closed).
   */
  async checkSession(principal: Principal): Promise<void> {
    const sessionId = principal.sessionId;
    let session: SessionRecord | undefined;
    try {
      session = sessionId === undefined ? undefined : await this.#o.store.sessions.get(sessionId);
    } catch (err) {
      throw storeDown(err);
    }
    if (
      !session ||
      session.revokedAt !== null ||
      session.expiresAt <= this.#o.clock.now() ||
      session.userId !== principal.id
    ) {
      throw new PortcullisError('session_revoked', { headers: INVALID_TOKEN_CHALLENGE });
    }
  }

  async #user(id: UserId): Promise<UserRecord | undefined> {
    try {
      return await this.#o.store.users.get(id);
    } catch (err) {
      throw storeDown(err);
    }
  }

  async #tokenResponse(user: UserRecord, session: SessionRecord, refresh: string): Promise<TokenResponse> {
    const access = await this.#o.tokens.issueAccessToken({
      userId: user.id,
      sessionId: session.id,
      roles: user.roles,
      amr: session.amr,
      authTime: session.createdAt,
    });
    return {
      access_token: access,
      token_type: 'Bearer',
      expires_in: this.#o.tokens.accessTokenTtlSec,
      refresh_token: refresh,
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
