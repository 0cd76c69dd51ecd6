/**
 * Errors with stable, machine-readable codes.
 *
 * A code is never renamed or reused. What the client sees (status, public message, code, request id)
 * is kept apart from what the operator sees (`detail`, `cause`), which goes to the log only.
 * Every code here is listed in docs/errors.md; a test keeps the two in step.
 */

export const ERROR_CODES = {
  bad_request: { status: 400, message: 'The request is malformed.' },
  invalid_path: { status: 400, message: 'The request path is ambiguous or contains forbidden characters.' },
  invalid_body: { status: 400, message: 'The request body is invalid.' },
  weak_password: { status: 400, message: 'The password does not meet the password policy.' },
  invalid_grant: { status: 400, message: 'The refresh token is invalid, expired or already used.' },
  unauthenticated: { status: 401, message: 'Authentication is required.' },
  invalid_token: { status: 401, message: 'The access token is invalid or expired.' },
  session_revoked: { status: 401, message: 'The session has ended; sign in again.' },
  invalid_credentials: { status: 401, message: 'The username or password is incorrect.' },
  invalid_mfa_code: { status: 401, message: 'The code is invalid, expired or already used.' },
  step_up_required: { status: 401, message: 'This action needs a fresh or stronger sign-in.' },
  invalid_signature: { status: 401, message: 'The HTTP message signature is invalid, expired or replayed.' },
  invalid_dpop_proof: { status: 401, message: 'The DPoP proof is invalid, expired or replayed.' },
  forbidden: { status: 403, message: 'You are not allowed to perform this action.' },
  device_revoked: { status: 403, message: 'This device has been revoked; enrol it again.' },
  csrf_rejected: {
    status: 403,
    message: 'The request came from another site or without a valid form token; reload the page and retry.',
  },
  route_not_found: { status: 404, message: 'No route matches this request.' },
  method_not_allowed: { status: 405, message: 'This method is not allowed on this route.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  unsupported_media_type: { status: 415, message: 'The request body must be application/json.' },
  too_many_attempts: {
    status: 429,
    message: 'Too many failed attempts; retry after the time in Retry-After.',
  },
  rate_limited: { status: 429, message: 'Too many requests; retry after the time in Retry-After.' },
  internal_error: { status: 500, message: 'An internal error occurred.' },
  upstream_unavailable: { status: 502, message: 'The upstream service is unavailable.' },
  store_unavailable: { status: 503, message: 'A required store is unavailable; the request was denied.' },
  upstream_timeout: { status: 504, message: 'The upstream service did not answer in time.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface PortcullisErrorOptions {
  /** Client-safe message replacing the default one for the code. Never put internals here. */
  message?: string;
  /** Operator-only detail: logged, never sent to the client. */
  detail?: string;
  cause?: unknown;
  /** Extra response headers (e.g. WWW-Authenticate). */
  headers?: Readonly<Record<string, string>>;
}

/**
 * The one error type that crosses module boundaries. Boundaries match on `code`, not on `instanceof`.
 *
 * @example
 * throw new PortcullisError('forbidden', { detail: 'no rule allows role viewer on admin-reports' });
 */
export class PortcullisError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly publicMessage: string;
  readonly detail: string | undefined;
  readonly headers: Readonly<Record<string, string>> | undefined;

  constructor(code: ErrorCode, options: PortcullisErrorOptions = {}) {
    const spec = ERROR_CODES[code];
    super(
      options.detail ?? options.message ?? spec.message,
      options.cause === undefined ? {} : { cause: options.cause },
    );
    this.name = 'PortcullisError';
    this.code = code;
    this.status = spec.status;
    this.publicMessage = options.message ?? spec.message;
    this.detail = options.detail;
    this.headers = options.headers;
  }
}

/** True when `err` carries one of our codes (works across module copies, unlike `instanceof`). */
export function isPortcullisError(err: unknown): err is PortcullisError {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { name?: unknown }).name === 'PortcullisError' &&
    typeof (err as { code?: unknown }).code === 'string' &&
    Object.hasOwn(ERROR_CODES, (err as { code: string }).code)
  );
}

/** The JSON body every client error has: `{"error":{"code","message","requestId"}}`. */
export function errorBody(code: ErrorCode, message: string, requestId: string): string {
  return JSON.stringify({ error: { code, message, requestId } });
}
