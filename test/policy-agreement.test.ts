import { describe, expect, it } from 'vitest';
import { defineConfig } from '../src/config/index.js';
import { compilePolicy, type Decision, type PolicyInput, policySpec } from '../src/policy/index.js';

/**
 * The Portcullis engine against independent engines on the shared reference scenario
 * (bench/policy: 22 rules, 5 roles, 4 resource types; RBAC + ABAC, deny-overrides): Casbin (a
 * different engine and rule language, run for real), the hand-written plain-TS decision, and the
 * determining-rule sets of the TS rule table (the same sets Cedar returns; bench.mjs checks Cedar
 * itself when its wasm build is installed in bench/policy).
 */

type Req = {
  principal: { id: string; role: string };
  resource: Record<string, unknown>;
  action: string;
  context: Record<string, unknown>;
};
interface Scenario {
  makeUsers(n: number, seed: number): Req['principal'][];
  makeRequests(users: Req['principal'][], n: number, seed: number, opts?: { focus: string }): Req[];
  decidePlain(r: Req): boolean;
}
interface Engines {
  casbinEngine(users: Req['principal'][]): Promise<{ decide(r: Req): boolean }>;
  tsTableEngine(): { decide(r: Req): { allow: boolean; reasons: string[] } };
}
interface PortcullisScenario {
  PORTCULLIS_POLICY: Parameters<typeof defineConfig>[0]['policy'];
  portcullisAdapter(p: {
    decide(i: PolicyInput): Decision;
  }): (r: Req) => { allow: boolean; reasons: readonly string[] };
}

const load = <T>(p: string): Promise<T> => import(new URL(p, import.meta.url).href) as Promise<T>;

describe('agreement with independent engines on the reference scenario', () => {
  it('decides like Casbin and plain TS, and names the same determining rules as the rule table, on 5,000 random requests', async () => {
    const scenario = await load<Scenario>('../bench/policy/scenario.mjs');
    const engines = await load<Engines>('../bench/policy/engines.mjs');
    const ours = await load<PortcullisScenario>('../bench/policy/portcullis-policy.mjs');
    const { config } = defineConfig({
      identity: { issuer: 'http://agreement.test' },
      upstreams: { app: { url: 'http://127.0.0.1:1' } },
      routes: [{ id: 'app', path: '/', upstream: 'app' }],
      policy: ours.PORTCULLIS_POLICY,
    });
    const policy = compilePolicy(policySpec(config.policy));
    expect(policy.warnings).toEqual([]);
    const decide = ours.portcullisAdapter(policy);

    const users = scenario.makeUsers(200, 42);
    const casbin = await engines.casbinEngine(users);
    const table = engines.tsTableEngine();
    const requests = [
      ...scenario.makeRequests(users, 4000, 1234),
      ...scenario.makeRequests(users, 1000, 5678, { focus: 'invoice-approve' }),
    ];
    let allowed = 0;
    const mismatches: unknown[] = [];
    for (const r of requests) {
      const d = decide(r);
      const expectedIds = table.decide(r).reasons;
      const want = { casbin: casbin.decide(r), plain: scenario.decidePlain(r), ids: [...expectedIds].sort() };
      const got = { casbin: d.allow, plain: d.allow, ids: [...d.reasons].sort() };
      if (JSON.stringify(got) !== JSON.stringify(want)) mismatches.push({ r, want, got });
      if (d.allow) allowed++;
    }
    expect(mismatches.slice(0, 3)).toEqual([]);
    // Both outcomes are well represented (the scenario allows about a quarter of requests).
    expect(allowed).toBeGreaterThan(800);
    expect(requests.length - allowed).toBeGreaterThan(2500);
  });
});
