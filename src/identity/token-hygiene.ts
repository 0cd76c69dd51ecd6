import { visit } from 'jsonc-parser';
import { TokenVerificationError } from './token-error.js';

/** JOSE header members we accept. Everything else (crit, b64, zip, cty, jku, x5u, jwk, x5c, …) is refused. */
const HEADER_MEMBERS = new Set(['alg', 'typ', 'kid']);
const B64URL = /^[A-Za-z0-9_-]+$/;
const NUMERIC_DATES = ['exp', 'nbf', 'iat'] as const;

export interface HygieneOptions {
  /** Largest accepted token, bytes. */
  maxTokenBytes: number;
  /** Largest accepted lifetime (exp − iat, or exp − now without iat), seconds. */
  maxLifetimeSec: number;
  clockToleranceSec: number;
  nowSec: number;
  /** Header members accepted (default `alg`, `typ`, `kid`); a DPoP proof adds `jwk`. */
  headerMembers?: ReadonlySet<string>;
}

const malformed = (reason: string) => new TokenVerificationError('malformed', reason);
const claimInvalid = (reason: string) => new TokenVerificationError('claim_invalid', reason);

/**
 * Checks a compact JWS before any cryptography, beyond what the JOSE library checks (RFC 8725):
 * size; exactly three strictly base64url segments (no padding, no whitespace, canonical trailing bits);
 * header and payload JSON objects without duplicate member names; only `alg`, `typ`, `kid` in the
 * header; claim types (`sub` a non-empty string, numeric dates safe integers, `aud` a string or
 * non-empty string list), `nbf` ≤ `exp`, `iat` not in the future, and a maximum lifetime.
 * Signature, algorithm, `iss`, `aud` and expiry are then verified by `jose`.
 */
export function checkTokenHygiene(token: string, o: HygieneOptions): void {
  if (token.length > o.maxTokenBytes) throw malformed(`token is larger than ${o.maxTokenBytes} bytes`);
  const parts = token.split('.');
  if (parts.length !== 3) throw malformed('token is not a compact JWS (three segments)');
  for (const p of parts) {
    if (!B64URL.test(p) || Buffer.from(p, 'base64url').toString('base64url') !== p) {
      throw malformed('token segment is not canonical base64url');
    }
  }
  const header = jsonObject(parts[0] as string, 'header');
  const accepted = o.headerMembers ?? HEADER_MEMBERS;
  for (const name of Object.keys(header)) {
    if (!accepted.has(name)) throw malformed(`header member "${name}" is not accepted`);
  }
  for (const name of ['alg', 'typ', 'kid']) {
    if (header[name] !== undefined && typeof header[name] !== 'string')
      throw malformed(`header "${name}" must be a string`);
  }
  const claims = jsonObject(parts[1] as string, 'payload');
  for (const name of NUMERIC_DATES) {
    const v = claims[name];
    if (v !== undefined && !Number.isSafeInteger(v))
      throw claimInvalid(`claim "${name}" must be an integer NumericDate`);
  }
  for (const name of ['iss', 'jti'] as const) {
    if (claims[name] !== undefined && typeof claims[name] !== 'string')
      throw claimInvalid(`claim "${name}" must be a string`);
  }
  if (claims.sub !== undefined && (typeof claims.sub !== 'string' || claims.sub === '')) {
    throw claimInvalid('claim "sub" must be a non-empty string');
  }
  const aud = claims.aud;
  if (
    aud !== undefined &&
    typeof aud !== 'string' &&
    !(Array.isArray(aud) && aud.length > 0 && aud.every((a) => typeof a === 'string'))
  ) {
    throw claimInvalid('claim "aud" must be a string or a non-empty list of strings');
  }
  const { exp, nbf, iat } = claims as { exp?: number; nbf?: number; iat?: number };
  if (exp !== undefined && nbf !== undefined && nbf > exp) throw claimInvalid('claim "nbf" is after "exp"');
  if (iat !== undefined && iat > o.nowSec + o.clockToleranceSec)
    throw claimInvalid('claim "iat" is in the future');
  if (exp !== undefined && exp - (iat ?? o.nowSec) > o.maxLifetimeSec) {
    throw claimInvalid(`token lifetime exceeds ${o.maxLifetimeSec}s`);
  }
}

function jsonObject(segment: string, what: string): Record<string, unknown> {
  const text = Buffer.from(segment, 'base64url').toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformed(`${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw malformed(`${what} is not a JSON object`);
  if (hasDuplicateMember(text)) throw malformed(`${what} has duplicate member names`);
  return value as Record<string, unknown>;
}

/** Duplicate member names anywhere in a JSON text (names compared after unescaping), via jsonc-parser's visitor. */
export function hasDuplicateMember(text: string): boolean {
  const stack: Set<string>[] = [];
  let duplicate = false;
  visit(text, {
    onObjectBegin: () => {
      stack.push(new Set());
    },
    onObjectEnd: () => {
      stack.pop();
    },
    onObjectProperty: (name) => {
      const names = stack[stack.length - 1];
      if (!names) return;
      if (names.has(name)) duplicate = true;
      names.add(name);
    },
  });
  return duplicate;
}
