import { randomBytes, randomUUID } from 'node:crypto';

declare const brand: unique symbol;
/** A string that the type system keeps apart from other strings of the same shape. */
export type Brand<T, B extends string> = T & { readonly [brand]: B };

export type UserId = Brand<string, 'UserId'>;
export type SessionId = Brand<string, 'SessionId'>;
export type RequestId = Brand<string, 'RequestId'>;

export const newUserId = (): UserId => randomUUID() as UserId;
export const newSessionId = (): SessionId => randomUUID() as SessionId;
export const newRequestId = (): RequestId => randomUUID() as RequestId;

/** 256 bits of randomness, base64url: for opaque tokens (refresh tokens, passwords we generate). */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}
