export type TokenFailure =
  | 'malformed'
  | 'algorithm_not_allowed'
  | 'unknown_key'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'claim_invalid'
  | 'keys_unavailable';

/** Why a token was refused: a stable `failure` plus a human-readable `reason` (safe to show to its holder). */
export class TokenVerificationError extends Error {
  readonly failure: TokenFailure;
  constructor(failure: TokenFailure, reason: string, options?: { cause?: unknown }) {
    super(reason, options);
    this.name = 'TokenVerificationError';
    this.failure = failure;
  }
}
