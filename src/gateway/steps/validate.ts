import { PortcullisError } from '../../core/index.js';
import { hasDuplicateMember } from '../../identity/token-hygiene.js';
import { readSmallBody } from '../body.js';
import type { Gateway, RequestContext } from '../context.js';

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH']);

/**
 * Step 6b (routes with a request schema): the JSON body is read (up to the route's limit), parsed and
 * validated against the schema compiled at load — only after policy allowed the request, so nobody
 * makes the gateway parse bodies it would refuse anyway. Not JSON → 415; too large → 413; invalid →
 * 400 `invalid_body` naming the failing paths. The validated bytes are what is forwarded.
 */
export function validateRequest(gw: Gateway, ctx: RequestContext): Promise<void> | undefined {
  // No schema, no work (and no await on the hot path).
  if (!ctx.route?.validateBody) return undefined;
  return validateBody(gw, ctx);
}

async function validateBody(_gw: Gateway, ctx: RequestContext): Promise<void> {
  const route = ctx.route;
  const validate = route?.validateBody;
  if (!route || !validate) return;
  const h = ctx.req.headers;
  const hasBody =
    ctx.body !== undefined
      ? ctx.body.length > 0
      : h['transfer-encoding'] !== undefined || (h['content-length'] ?? '0') !== '0';
  if (!hasBody) {
    if (BODY_METHODS.has(ctx.method))
      throw new PortcullisError('invalid_body', { message: 'A JSON request body is required.' });
    return;
  }
  const [rawType, ...params] = (h['content-type'] ?? '').split(';');
  const type = rawType?.trim().toLowerCase();
  if (type !== 'application/json' && !type?.endsWith('+json'))
    throw new PortcullisError('unsupported_media_type');
  // JSON is UTF-8 (RFC 8259): a body declared in another charset would be read one way and forwarded another.
  const charset = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('charset='));
  if (charset && charset !== 'charset=utf-8') throw new PortcullisError('unsupported_media_type');
  // Already read whole by an earlier step (a signed webhook's digest check), or read now.
  const text = ctx.body ? ctx.body.toString('utf8') : await readSmallBody(ctx.req, route.maxBodyBytes);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new PortcullisError('invalid_body', { message: 'The request body is not valid JSON.' });
  }
  // Two members with one name: the schema would see the last, an upstream parser maybe the first.
  if (hasDuplicateMember(text))
    throw new PortcullisError('invalid_body', { message: 'The request body repeats a member name.' });
  const failures = validate(value);
  if (failures)
    throw new PortcullisError('invalid_body', {
      message: `The request body does not match the route's schema: ${failures.join('; ')}.`,
    });
  ctx.body ??= Buffer.from(text, 'utf8');
}
