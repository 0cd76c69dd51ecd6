import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TokenVerificationError, verifyToken } from '../src/identity/index.js';

/**
 * Forged tokens that carry a VALID ES256 signature over their exact bytes, so each is refused for the
 * structural or claim defect it has, not for a bad signature.
 */
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const NOW = 1_800_000_000;
const b64 = (s: string) => Buffer.from(s).toString('base64url');
const signRaw = (headerText: string, payloadText: string, encode: (s: string) => string = b64) => {
  const input = `${encode(headerText)}.${encode(payloadText)}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
};
const H = JSON.stringify({ alg: 'ES256', typ: 'JWT' });
const claims = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ iss: 'https://idp.test', aud: 'api', sub: 'u1', iat: NOW, exp: NOW + 300, ...extra });
const verify = (token: string) =>
  verifyToken(token, publicKey, {
    issuer: 'https://idp.test',
    audience: 'api',
    currentDate: new Date(NOW * 1000),
    maxLifetimeSec: 3600,
  });

describe('token hygiene (RFC 8725): forged but validly signed tokens are refused', () => {
  it('the control token verifies', async () => {
    await expect(verify(signRaw(H, claims()))).resolves.toMatchObject({ sub: 'u1' });
  });

  const good = signRaw(H, claims());
  const [gh, gp, gs] = good.split('.') as [string, string, string];
  // A payload segment whose last character carries unused low bits, flipped: decodes to the same bytes.
  const nonCanonical = (() => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    for (let pad = 0; pad < 3; pad++) {
      const payload = claims({ x: 'y'.repeat(pad) });
      const seg = b64(payload);
      if (seg.length % 4 === 0) continue;
      const last = seg.at(-1) as string;
      for (const c of alphabet) {
        const alt = seg.slice(0, -1) + c;
        if (c !== last && Buffer.from(alt, 'base64url').equals(Buffer.from(payload))) {
          return signRaw(H, payload, (s) => (s === payload ? alt : b64(s)));
        }
      }
    }
    throw new Error('no non-canonical encoding found');
  })();

  const cases: Array<[string, string, RegExp]> = [
    ['padding in a segment', `${gh}.${gp}=.${gs}`, /base64url/],
    ['whitespace in a segment', `${gh}.${gp.slice(0, 10)} ${gp.slice(10)}.${gs}`, /base64url/],
    ['non-canonical trailing bits', nonCanonical, /base64url/],
    ['two segments', `${gh}.${gp}`, /three segments/],
    ['four segments', `${good}.${gs}`, /three segments/],
    ['empty signature', `${gh}.${gp}.`, /base64url/],
    ['duplicate header member', signRaw('{"alg":"ES256","typ":"JWT","alg":"ES256"}', claims()), /duplicate/],
    [
      'duplicate payload member',
      signRaw(H, claims().replace('"sub":"u1"', '"sub":"u1","sub":"admin"')),
      /duplicate/,
    ],
    [
      'duplicate member via escapes',
      signRaw(H, claims().replace('"sub":"u1"', '"sub":"u1","s\\u0075b":"admin"')),
      /duplicate/,
    ],
    [
      'nested duplicate member',
      signRaw(H, claims({ ctx: { a: 1 } }).replace('{"a":1}', '{"a":1,"a":2}')),
      /duplicate/,
    ],
    ['crit header', signRaw(JSON.stringify({ alg: 'ES256', crit: ['exp'], exp: 1 }), claims()), /"crit"/],
    [
      'b64:false header',
      signRaw(JSON.stringify({ alg: 'ES256', b64: false, crit: ['b64'] }), claims()),
      /not accepted/,
    ],
    ['zip header', signRaw(JSON.stringify({ alg: 'ES256', zip: 'DEF' }), claims()), /"zip"/],
    ['cty header', signRaw(JSON.stringify({ alg: 'ES256', cty: 'JWT' }), claims()), /"cty"/],
    [
      'jku header',
      signRaw(JSON.stringify({ alg: 'ES256', jku: 'https://evil.test/jwks' }), claims()),
      /"jku"/,
    ],
    [
      'x5u header',
      signRaw(JSON.stringify({ alg: 'ES256', x5u: 'https://evil.test/c.pem' }), claims()),
      /"x5u"/,
    ],
    [
      'embedded jwk header',
      signRaw(JSON.stringify({ alg: 'ES256', jwk: publicKey.export({ format: 'jwk' }) }), claims()),
      /"jwk"/,
    ],
    ['non-string kid', signRaw(JSON.stringify({ alg: 'ES256', kid: 7 }), claims()), /kid/],
    ['header not an object', signRaw('["ES256"]', claims()), /object/],
    ['payload not an object', signRaw(H, '"just a string"'), /object/],
    ['payload not JSON', signRaw(H, '{sub: u1}'), /not JSON/],
    ['empty sub', signRaw(H, claims({ sub: '' })), /sub/],
    ['numeric sub', signRaw(H, claims({ sub: 42 })), /sub/],
    ['exp as a string', signRaw(H, claims({ exp: String(NOW + 300) })), /exp/],
    ['fractional exp', signRaw(H, claims({ exp: NOW + 300.5 })), /exp/],
    ['huge exp', signRaw(H, claims({ exp: 1e300 })), /exp/],
    ['nbf after exp', signRaw(H, claims({ nbf: NOW + 400 })), /nbf/],
    ['iat in the future', signRaw(H, claims({ iat: NOW + 600, exp: NOW + 900 })), /iat/],
    ['lifetime over the maximum', signRaw(H, claims({ exp: NOW + 7200 })), /lifetime/],
    [
      'lifetime over the maximum without iat',
      signRaw(H, JSON.stringify({ iss: 'https://idp.test', aud: 'api', sub: 'u1', exp: NOW + 7200 })),
      /lifetime/,
    ],
    ['aud as a number', signRaw(H, claims({ aud: 7 })), /aud/],
    ['aud as an empty list', signRaw(H, claims({ aud: [] })), /aud/],
    ['non-string iss', signRaw(H, claims({ iss: ['https://idp.test'] })), /iss/],
    ['oversized token', signRaw(H, claims({ pad: 'x'.repeat(9000) })), /larger/],
  ];

  it.each(cases)('%s', async (_name, token, reason) => {
    const err = await verify(token).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TokenVerificationError);
    expect((err as Error).message).toMatch(reason);
  });
});
