import type { SessionId, UserId } from './ids.js';

/** Who is making a request, as established by authentication. Produced by identity, read by policy. */
export interface Principal {
  readonly kind: 'user';
  readonly id: UserId;
  readonly sessionId: SessionId;
  readonly roles: readonly string[];
  /** Authentication methods (RFC 8176), e.g. `['pwd']`. */
  readonly amr: readonly string[];
  /** `jti` of the access token that authenticated the request. */
  readonly tokenId: string;
}
