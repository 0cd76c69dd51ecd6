import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compactVerify, importJWK, type JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { verifyToken } from '../src/identity/index.js';

/** Wycheproof JWS vectors, read from ../shared/vectors (skipped when absent). */
const FILE = join(
  process.cwd(),
  '..',
  'shared',
  'vectors',
  'wycheproof',
  'testvectors_v1',
  'json_web_signature_test.json',
);
const have = existsSync(FILE);
if (!have) console.warn(`skipping Wycheproof JWS vectors: ${FILE} not found`);

interface Group {
  private?: JWK & { keys?: JWK[] };
  tests: Array<{ tcId: number; comment: string; jws: string; result: 'valid' | 'invalid' }>;
}

const publicPart = ({ d, p, q, dp, dq, qi, k, ...pub }: JWK): JWK => pub;

describe.skipIf(!have)('Wycheproof json_web_signature_test vectors against the token verifier', () => {
  const groups: Group[] = have ? JSON.parse(readFileSync(FILE, 'utf8')).testGroups : [];

  it('refuses every invalid vector, and every vector of an algorithm we do not accept', async () => {
    let checked = 0;
    for (const g of groups) {
      const jwk = g.private && !g.private.keys ? g.private : g.private?.keys?.[0];
      for (const t of g.tests) {
        if (t.result === 'valid' && jwk?.alg === 'ES256') continue;
        const key = async () => {
          if (!jwk || jwk.kty === 'oct') throw new Error('no usable public key');
          return importJWK(publicPart(jwk), jwk.alg);
        };
        await expect(
          verifyToken(t.jws, key, { issuer: null, audience: null, algorithms: ['ES256'] }),
          `tcId ${t.tcId} (${t.comment})`,
        ).rejects.toThrow();
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThan(350);
  });

  it('the harness derives keys correctly: valid ES256 vectors verify with jose at the JWS layer', async () => {
    const es = groups.filter((g) => g.private?.alg === 'ES256');
    let valid = 0;
    for (const g of es) {
      const key = await importJWK(publicPart(g.private as JWK), 'ES256');
      for (const t of g.tests.filter((x) => x.result === 'valid')) {
        await expect(compactVerify(t.jws, key, { algorithms: ['ES256'] })).resolves.toBeDefined();
        valid += 1;
      }
    }
    expect(valid).toBe(2);
  });
});
