import type { SessionId, UserId } from './ids.js';

/** Who is making a request, as established by authentication. Produced by identity, read by policy. */
export interface Principal {
  /** A person (sessions, MFA) or a service account (client credentials). */
  readonly kind: 'user' | 'service';
  readonly id: UserId;
  /** Id of the issuer that vouched for it: `portcullis` (our own tokens) or an external issuer's id. */
  readonly issuer: string;
  /** Our session behind the token (our own tokens only); checked on every request. */
  readonly sessionId: SessionId | undefined;
  readonly roles: readonly string[];
  /** Authentication methods (RFC 8176), e.g. `['pwd']`. */
  readonly amr: readonly string[];
  /** `jti` of the access token that authenticated the request. */
  readonly tokenId: string;
  /** When the user last authenticated (ms; the token's `auth_time`), for policies' `maxAge`. */
  readonly authTime?: number;
  /** Authentication context class (the token's `acr`), for policies' `require.acr`. */
  readonly acr?: string;
  /** Groups and attributes of the user (our tokens' `groups` / `attrs`), for policy conditions. */
  readonly groups?: readonly string[];
  readonly attributes?: Readonly<Record<string, unknown>>;
  /** A service's workload identity (`spiffe://…`), for microsegmentation rules. */
  readonly spiffeId?: string;
  /**
   * The key the token is bound to (RFC 9449 `cnf.jkt`): every request must carry a DPoP proof signed
   * by it.
   */
  readonly confirmationJkt?: string;
}

/**
 * What a role name may be: no commas, spaces or control characters, so a list of roles can travel in
 * one header (`x-portcullis-roles: a,b`) without one role reading as two.
 */
export const ROLE_NAME = /^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$/;
