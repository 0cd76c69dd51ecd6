import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { JWTVerifyGetKey } from 'jose';
import { TokenVerificationError } from '../identity/index.js';
import { type VerifiedAssertion, verifyAssertion } from '../sdk/verify-assertion.js';

export interface DemoUpstreamOptions {
  /** Resolves the gateway's assertion key (its JWKS). */
  keys: JWTVerifyGetKey;
  issuer: string;
  audience: string;
}

interface Order {
  id: string;
  item: string;
  quantity: number;
  owner: string;
}

/**
 * The bundled demo API: a few JSON routes behind the gateway. Like any app behind Portcullis it trusts
 * no header by itself: every request must carry a valid identity assertion bound to that request.
 *
 *   GET  /api/orders              list orders
 *   POST /api/orders              create one  {"item": "...", "quantity": 1}
 *   GET  /api/orders/:id          one order
 *   GET  /api/admin/reports       an admin report
 *   GET  /api/whoami              the verified assertion
 */
export function createDemoUpstream(options: DemoUpstreamOptions): Server {
  const orders: Order[] = [
    { id: '1001', item: 'portcullis gate', quantity: 1, owner: 'demo' },
    { id: '1002', item: 'drawbridge chain', quantity: 4, owner: 'demo' },
  ];
  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, who: VerifiedAssertion) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? '/';
    if (path === '/api/whoami') return send(res, 200, { assertion: who });
    if (path === '/api/orders' && req.method === 'GET') return send(res, 200, { orders });
    if (path === '/api/orders' && req.method === 'POST') {
      let raw = '';
      for await (const chunk of req) {
        raw += chunk;
        if (raw.length > 16_384)
          return send(res, 413, { error: { code: 'payload_too_large', message: 'Too large.' } });
      }
      let input: { item?: unknown; quantity?: unknown };
      try {
        input = JSON.parse(raw) as typeof input;
      } catch {
        return send(res, 400, { error: { code: 'invalid_body', message: 'Body must be JSON.' } });
      }
      if (typeof input.item !== 'string' || !Number.isInteger(input.quantity)) {
        return send(res, 400, {
          error: { code: 'invalid_body', message: 'Expected {"item": string, "quantity": integer}.' },
        });
      }
      const order: Order = {
        id: String(1001 + orders.length),
        item: input.item,
        quantity: input.quantity as number,
        owner: who.sub,
      };
      orders.push(order);
      return send(res, 201, { order });
    }
    const m = /^\/api\/orders\/([^/]+)$/.exec(path);
    if (m && req.method === 'GET') {
      const order = orders.find((o) => o.id === m[1]);
      return order
        ? send(res, 200, { order })
        : send(res, 404, { error: { code: 'not_found', message: 'No such order.' } });
    }
    if (path === '/api/admin/reports') {
      return send(res, 200, { report: { orders: orders.length, generatedFor: who.sub, roles: who.roles } });
    }
    return send(res, 404, { error: { code: 'not_found', message: 'Not found.' } });
  };

  return createServer((req, res) => {
    const header = req.headers['x-portcullis-assertion'];
    verifyAssertion(typeof header === 'string' ? header : undefined, options.keys, {
      issuer: options.issuer,
      audience: options.audience,
      request: { method: req.method ?? 'GET', target: req.url ?? '/' },
    })
      .then(
        (who) => handle(req, res, who),
        (err) => {
          const reason = err instanceof TokenVerificationError ? err.message : 'invalid assertion';
          send(res, 401, {
            error: {
              code: 'invalid_assertion',
              message: `Request did not come through the gateway: ${reason}.`,
            },
          });
        },
      )
      .catch(() => {
        if (!res.headersSent)
          send(res, 500, { error: { code: 'internal_error', message: 'Demo upstream failed.' } });
      });
  });
}
