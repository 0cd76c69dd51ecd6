import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EKU, parseCertificates, verifyPath } from '../src/workload/index.js';

/** C2SP x509-limbo (RFC 5280 / Web PKI path validation), read from ../shared/vectors (skipped when absent). */
const FILE = join(process.cwd(), '..', 'shared', 'vectors', 'x509-limbo', 'limbo.json');
const have = existsSync(FILE);
if (!have) console.warn(`skipping x509-limbo: ${FILE} not found`);

interface Case {
  id: string;
  features: string[] | null;
  validation_kind: 'SERVER' | 'CLIENT';
  trusted_certs: string[];
  untrusted_intermediates: string[];
  peer_certificate: string;
  validation_time: string | null;
  extended_key_usage: string[];
  expected_result: 'SUCCESS' | 'FAILURE';
  max_chain_depth: number | null;
}

/**
 * Not applicable: peers are named by their SPIFFE ID (a URI SAN, checked by the SPIFFE leaf rules), not
 * by DNS names, IP addresses or common names; revocation is the serial denylist, not CRLs; certificate
 * policies are not processed (and refused when critical).
 */
const NOT_APPLICABLE = [/^webpki::san::/, /^webpki::cn::/, /^rfc5280::san::/, /^crl::/];
// pedantic-rfc5280 (one case): an AKI on a cross-signed trust anchor is not required (an anchor is its
// name and key).
const UNCLAIMED_FEATURES = new Set([
  'has-crl',
  'has-policy-constraints',
  'pedantic-webpki-eku',
  'max-chain-depth',
  'pedantic-rfc5280',
]);

/**
 * Deliberate differences, each a stricter answer than the vector's (never a laxer one):
 * name constraints are not processed, so a CA carrying them is refused; a leaf that is a CA is refused
 * (SPIFFE and the Web PKI forbid it); the parser reads a fractional-second NotAfter to the second.
 */
const STRICTER: Record<string, string> = {
  'pathlen::validation-ignores-pathlen-in-leaf': 'a CA certificate is never accepted as the leaf',
  'rfc5280::ca-as-leaf': 'a CA certificate is never accepted as the leaf',
  'rfc5280::validity::notafter-fractional': 'NotAfter with fractional seconds is read as the whole second',
};
const NAME_CONSTRAINTS_REFUSED = /^(rfc5280|webpki)::nc::/;

describe.skipIf(!have)('x509-limbo: the path validation behind verifySvid', () => {
  const cases: Case[] = have ? JSON.parse(readFileSync(FILE, 'utf8')).testcases : [];

  it('agrees with every applicable vector, or is stricter for a stated reason; every case ends quickly', async () => {
    const disagreements: string[] = [];
    const stricter: string[] = [];
    let checked = 0;
    let slowest = 0;
    for (const tc of cases) {
      if (NOT_APPLICABLE.some((re) => re.test(tc.id))) continue;
      if ((tc.features ?? []).some((f) => UNCLAIMED_FEATURES.has(f))) continue;
      checked++;
      const started = performance.now();
      let got: 'SUCCESS' | 'FAILURE' = 'SUCCESS';
      let why = '';
      try {
        const peer = parseCertificates(tc.peer_certificate)[0];
        if (!peer) throw new Error('no peer certificate');
        const eku =
          tc.extended_key_usage[0] ?? (tc.validation_kind === 'CLIENT' ? 'clientAuth' : 'serverAuth');
        await verifyPath(
          peer,
          tc.untrusted_intermediates.flatMap((p) => parseCertificates(p)),
          tc.trusted_certs.flatMap((p) => parseCertificates(p)),
          {
            at: tc.validation_time ? new Date(tc.validation_time) : new Date(),
            requiredEku: EKU[eku as keyof typeof EKU] ?? eku,
          },
        );
      } catch (err) {
        got = 'FAILURE';
        why = (err as Error).message;
      }
      slowest = Math.max(slowest, performance.now() - started);
      if (got === tc.expected_result) continue;
      const reason =
        STRICTER[tc.id] ?? (NAME_CONSTRAINTS_REFUSED.test(tc.id) ? 'name constraints' : undefined);
      if (reason && got === 'FAILURE') stricter.push(tc.id);
      else disagreements.push(`${tc.id}: expected ${tc.expected_result}, got ${got} ${why}`);
    }
    expect(disagreements).toEqual([]);
    expect(checked).toBeGreaterThan(100);
    // The deliberate differences are few and all in the strict direction.
    expect(stricter.length).toBeLessThanOrEqual(20);
    for (const id of Object.keys(STRICTER)) expect(stricter).toContain(id);
    // Pathological chains (cycles, many candidate issuers) end in well under a second.
    expect(slowest).toBeLessThan(2_000);
  });
});
