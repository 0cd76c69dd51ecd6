import { generateKeyPairSync } from 'node:crypto';
import { compactVerify, decodeProtectedHeader, importJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import type { UpstreamConfig } from '../src/config/index.js';
import { sha256b64url } from '../src/core/index.js';
import { type AssertionClaims, createAssertionSigner } from '../src/gateway/assertion.js';
import type { SigningKey } from '../src/identity/index.js';

// The claims object the assertion's payload always was (JSON.stringify of this, members in this order,
// undefined ones omitted): the hand-written payload must produce exactly these bytes.
const reference = (issuer: string, audience: string, ttl: number, c: AssertionClaims, now: number) =>
  JSON.stringify({
    iss: issuer,
    aud: audience,
    sub: c.subject,
    iat: now,
    exp: now + ttl,
    jti: c.requestId,
    sid: c.sessionId,
    roles: c.roles,
    amr: c.amr,
    acr: c.acr,
    device: c.device,
    risk: c.risk,
    htm: c.method,
    host: c.host,
    tgt: sha256b64url(c.target),
    route: c.routeId,
    rules: c.ruleIds,
  });

const base: AssertionClaims = {
  subject: 'user-1',
  sessionId: undefined,
  roles: [],
  amr: [],
  method: 'GET',
  host: 'api.example.com',
  target: '/items?a=1',
  routeId: 'items',
  requestId: 'req-1',
  ruleIds: ['r1'],
};

const variants: AssertionClaims[] = [
  base,
  {
    ...base,
    subject: 'ü "quoted" \\ \u2028 \ud800 </script>',
    sessionId: 'sess-1',
    roles: ['admin', 'a"b'],
    amr: ['pwd', 'otp'],
    acr: 'urn:portcullis:mfa',
    device: 'dev-1',
    risk: 35,
    host: 'h\u0000st',
    target: '/ä/%2F?q=é',
    ruleIds: [],
  },
  { ...base, risk: 0, acr: '', device: '' },
];

function es256Key(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    kid: 'k1',
    alg: 'ES256',
    privateKey,
    publicKey,
    publicJwk: { ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256' },
    activatesAt: 0,
  };
}

describe('identity assertion payload', () => {
  for (const alg of ['HS256', 'ES256'] as const) {
    it(`${alg}: the payload is byte for byte the claims object's JSON, and the signature verifies`, async () => {
      const key = es256Key();
      const upstream = {
        audience: 'svc-aud',
        assertion: alg === 'HS256' ? { alg, key: 'k'.repeat(32) } : { alg },
      } as unknown as UpstreamConfig;
      const signer = createAssertionSigner('svc', upstream, 'https://gw.example', 30, key);
      for (const c of variants) {
        const jws = signer.sign(c, 1_800_000_000);
        const payload = Buffer.from(jws.split('.')[1] as string, 'base64url').toString('utf8');
        expect(payload).toBe(reference('https://gw.example', 'svc-aud', 30, c, 1_800_000_000));
        expect(decodeProtectedHeader(jws).alg).toBe(alg);
        const verifyKey =
          alg === 'HS256'
            ? new TextEncoder().encode('k'.repeat(32))
            : await importJWK(key.publicJwk, 'ES256');
        const { payload: verified } = await compactVerify(jws, verifyKey);
        expect(JSON.parse(Buffer.from(verified).toString('utf8'))).toEqual(JSON.parse(payload));
      }
    });
  }
});
