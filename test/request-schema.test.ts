import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Stack, startStack } from './helpers.js';

const ORDER_SCHEMA = {
  type: 'object',
  required: ['item', 'qty'],
  properties: { item: { type: 'string', minLength: 1 }, qty: { type: 'integer', minimum: 1 } },
  additionalProperties: false,
};

/** A JSON Schema per route, compiled once with ajv: invalid bodies never reach the upstream. */
describe('request validation with a JSON Schema per route', () => {
  let s: Stack;
  let token: string;
  beforeAll(async () => {
    s = await startStack({
      routes: [
        {
          id: 'create-order',
          path: '/api/orders',
          methods: ['POST'],
          upstream: 'app',
          maxBodyBytes: 256,
          requestSchema: ORDER_SCHEMA,
        },
      ],
      policy: { rules: [{ id: 'write', roles: ['viewer'] }] },
    });
    token = (await s.login(s.users.viewer.username, s.users.viewer.password)).body.access_token as string;
  });
  afterAll(() => s?.close());

  const post = (body: string | undefined, type = 'application/json', auth = true) =>
    fetch(`${s.pc.gatewayUrl}/api/orders`, {
      method: 'POST',
      headers: {
        ...(auth ? { authorization: `Bearer ${token}` } : {}),
        ...(type ? { 'content-type': type } : {}),
      },
      ...(body === undefined ? {} : { body }),
    });

  it('forwards a valid body byte for byte; refuses invalid ones with the failing paths, before the upstream', async () => {
    const before = s.upstream.received.length;
    const ok = await post('{"item":"book","qty":2}');
    expect(ok.status).toBe(200);
    expect(s.upstream.received.at(-1)?.body).toBe('{"item":"book","qty":2}');
    const bad = await post('{"item":"","qty":0,"price":1}');
    expect(bad.status).toBe(400);
    const err = (await bad.json()).error;
    expect(err.code).toBe('invalid_body');
    // The first failure is named (ajv stops there: a huge invalid body must not cost one error per element).
    expect(err.message).toMatch(/does not match the route's schema: \/\S*: must /);
    const qty = await post('{"item":"book","qty":0}');
    expect((await qty.json()).error.message).toContain('/qty: must be >= 1');
    expect((await post('not json')).status).toBe(400);
    // A repeated member: the schema would see one value, an upstream maybe the other.
    const dup = await post('{"item":"book","qty":-5,"qty":1}');
    expect(dup.status).toBe(400);
    expect((await dup.json()).error.message).toContain('repeats a member name');
    expect((await post('{"item":"book","qty":2}', 'application/json; charset=utf-16')).status).toBe(415);
    expect((await post('{"item":"book","qty":2}', 'text/plain')).status).toBe(415);
    expect((await post(undefined, '')).status).toBe(400);
    expect((await post(JSON.stringify({ item: 'x'.repeat(400), qty: 1 }))).status).toBe(413);
    // Not allowed → refused before the body is even read.
    expect((await post('{"item":"book","qty":2}', 'application/json', false)).status).toBe(401);
    expect(s.upstream.received.length).toBe(before + 1);
  });

  it('a schema that does not compile stops the start, naming the route', async () => {
    await expect(
      startStack({
        routes: [
          { id: 'broken', path: '/b', methods: ['POST'], upstream: 'app', requestSchema: { type: 'objekt' } },
        ],
        policy: { rules: [] },
      }),
    ).rejects.toThrow(/route broken: request schema does not compile/);
    // uniqueItems over unbounded arrays is quadratic to check: refused at load.
    await expect(
      startStack({
        routes: [
          {
            id: 'quadratic',
            path: '/q',
            methods: ['POST'],
            upstream: 'app',
            requestSchema: { type: 'array', uniqueItems: true, items: { type: 'object' } },
          },
        ],
        policy: { rules: [] },
      }),
    ).rejects.toThrow(/uniqueItems without maxItems/);
  });
});
