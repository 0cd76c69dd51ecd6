import { z } from 'zod';
import type { PolicyInput } from './types.js';

/** A time: ms since the epoch, or an RFC 3339 date-time (`2026-12-01T10:00:00Z`). */
const instant = z.union([
  z.number().int().nonnegative(),
  z.iso.datetime({ offset: true }).transform((s) => Date.parse(s)),
]);
const attributes = z.record(z.string(), z.unknown());
const name = z.string().min(1).max(256);

const principal = z.strictObject({
  id: name,
  kind: z.enum(['user', 'service']).optional(),
  roles: z.array(name).max(256).default([]),
  groups: z.array(name).max(256).optional(),
  spiffeId: z.string().startsWith('spiffe://').max(2048).optional(),
  issuer: name.optional(),
  attributes: attributes.optional(),
});

const resource = z.strictObject({
  type: name.optional(),
  id: name.optional(),
  route: name.optional(),
  path: z.string().startsWith('/').max(8192).optional(),
  params: z.record(z.string(), z.string()).optional(),
  attributes: attributes.optional(),
});

const authentication = z.strictObject({
  amr: z.array(name).max(32).optional(),
  acr: name.optional(),
  authTime: instant.optional(),
});

const context = z.strictObject({
  time: instant.optional(),
  hour: z.number().int().min(0).max(23).optional(),
  weekday: z.number().int().min(0).max(6).optional(),
  ip: z.string().max(64).optional(),
  geo: attributes.optional(),
  device: attributes.optional(),
  risk: attributes.optional(),
  authentication: authentication.optional(),
  attributes: attributes.optional(),
});

const device = z.strictObject({
  id: name,
  trusted: z.boolean(),
  compliant: z.boolean(),
  platform: z.string().max(64).optional(),
  via: z.enum(['mtls', 'dpop']).optional(),
  posture: attributes.optional(),
});

/**
 * A policy question as JSON (for `policy explain`, policy test files and `POST /v1/authorize`):
 * the {@link PolicyInput} shape, with times as ms or RFC 3339 strings.
 */
export const policyInputSchema = z.strictObject({
  principal,
  action: name,
  resource: resource.default({}),
  request: z
    .strictObject({
      method: z.string().min(1).max(16),
      path: z.string().startsWith('/'),
      host: z.string().optional(),
    })
    .optional(),
  context: context.optional(),
  device: device.optional(),
});

/** What a caller of `POST /v1/authorize` may say: the principal is the caller's token, never the body. */
export const authorizeQuerySchema = z.strictObject({
  action: name,
  resource: resource.default({}),
  /** Declared context attributes only; time, ip and authentication come from the request itself. */
  context: z.strictObject({ attributes: attributes.optional() }).optional(),
});

export const authorizeBodySchema = z.union([
  authorizeQuerySchema,
  z.strictObject({ requests: z.array(authorizeQuerySchema).min(1).max(100) }),
]);

/** The validated JSON as engine input (zod omits absent optional keys; only the types differ). */
export function toPolicyInput(v: z.output<typeof policyInputSchema>): PolicyInput {
  return v as PolicyInput;
}
