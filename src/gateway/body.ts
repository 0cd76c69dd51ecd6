import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import { PortcullisError } from '../core/index.js';

/** Reads a small body as UTF-8 text, refusing (413) one announced or streamed past `maxBytes`. */
export async function readSmallBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  return (await readBodyBytes(req, maxBytes)).toString('utf8');
}

/** Reads a body whole, as bytes, refusing (413) one announced or streamed past `maxBytes`. */
export async function readBodyBytes(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (declared > maxBytes) throw new PortcullisError('payload_too_large');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new PortcullisError('payload_too_large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Reads a small JSON body (the gateway's own endpoints) with a size cap, then validates it with a zod
 * schema. Wrong media type → 415, too large → 413, bad JSON or shape → 400 with the reason.
 */
export async function readJsonBody<S extends z.ZodType>(
  req: IncomingMessage,
  maxBytes: number,
  schema: S,
): Promise<z.output<S>> {
  const type = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json') throw new PortcullisError('unsupported_media_type');
  let value: unknown;
  const text = await readSmallBody(req, maxBytes);
  try {
    value = JSON.parse(text);
  } catch {
    throw new PortcullisError('invalid_body', { message: 'The request body is not valid JSON.' });
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const first = result.error.issues[0];
    const where = first && first.path.length > 0 ? `${first.path.join('.')}: ` : '';
    throw new PortcullisError('invalid_body', {
      message: `The request body is invalid: ${where}${first?.message ?? 'invalid'}.`,
    });
  }
  return result.data;
}

/**
 * Reads a small `application/x-www-form-urlencoded` body (the gateway's HTML forms) with a size cap and
 * validates its fields with a zod schema. A field given twice is refused (which one would count is
 * ambiguous); wrong media type → 415, too large → 413, bad shape → 400 `invalid_body`.
 */
export async function readFormFields<S extends z.ZodType>(
  req: IncomingMessage,
  maxBytes: number,
  schema: S,
): Promise<z.output<S>> {
  const type = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded')
    throw new PortcullisError('unsupported_media_type', {
      message: 'The form must be application/x-www-form-urlencoded.',
    });
  // No prototype: a field named `__proto__` is a field like any other (and refused by strict schemas).
  const fields: Record<string, string> = Object.create(null);
  for (const [name, value] of new URLSearchParams(await readSmallBody(req, maxBytes))) {
    if (Object.hasOwn(fields, name))
      throw new PortcullisError('invalid_body', {
        message: `The form field ${name.slice(0, 64)} is repeated.`,
      });
    fields[name] = value;
  }
  const result = schema.safeParse(fields);
  if (!result.success) {
    const first = result.error.issues[0];
    const where = first && first.path.length > 0 ? `${first.path.join('.')}: ` : '';
    throw new PortcullisError('invalid_body', {
      message: `The form is invalid: ${where}${first?.message ?? 'invalid'}.`,
    });
  }
  return result.data;
}
