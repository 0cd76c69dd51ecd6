export { API_KEY_ISSUER_ID, ApiKeyService } from './api-keys.js';
export { BearerAuthenticator, type BearerAuthenticatorOptions } from './bearer.js';
export {
  BrowserSessions,
  CSRF_COOKIE,
  SESSION_COOKIE,
  SESSION_COOKIE_ISSUER_ID,
  type SessionRef,
} from './browser-sessions.js';
export {
  type ClientAuth,
  ClientService,
  type ClientServiceOptions,
  type NewServiceAccount,
  OAuthError,
} from './clients.js';
export { FEDERATION_COOKIE, type FederatedIdentity, FederationService } from './federation.js';
export { loadJwksFile, loadPublicKeyFile } from './issuer-keys.js';
export {
  type DroppedKey,
  JwksRefused,
  localKeyResolver,
  parseJwks,
  RemoteKeySet,
  type RemoteKeySetOptions,
  selectKey,
} from './jwks.js';
export { discoverJwksUri, discoveryUrlOf, fetchJson } from './jwks-fetch.js';
export { inspectJwk, KeyRefused, type PublicKeyAlg, type UsableKey } from './key-hygiene.js';
export { type KeyPurpose, KeyRing, type SigningKey } from './keys.js';
export { type Argon2Params, PasswordHasher } from './passwords.js';
export { safeReturnTo } from './return-to.js';
export { SecretBox } from './secret-box.js';
export {
  IdentityService,
  type IdentityServiceOptions,
  type NewUser,
  normalizeUsername,
  type RequestMeta,
  type TokenResponse,
} from './service.js';
export {
  ACCESS_TOKEN_TYP,
  type AccessTokenSubject,
  INVALID_TOKEN_CHALLENGE,
  TokenService,
  type TokenServiceOptions,
  type VerifiedBearer,
} from './tokens.js';
export {
  type AllowedAlg,
  type KeySource,
  keyResolver,
  type TokenFailure,
  TokenVerificationError,
  type VerificationKey,
  type VerifyTokenOptions,
  verifyToken,
} from './verify-token.js';
