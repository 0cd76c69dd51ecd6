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
