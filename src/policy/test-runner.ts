import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError, type ConfigIssue, parseYamlDocument, type SourceLocation } from '../config/index.js';
import type { CompiledPolicy, Explanation } from './engine.js';
import { policyInputSchema, toPolicyInput } from './input.js';
import type { Decision } from './types.js';

const outcome = z.enum(['allow', 'deny', 'challenge']);
const expectation = z.union([
  outcome.transform((decision) => ({ decision, rules: undefined, requirements: undefined })),
  z.strictObject({
    decision: outcome,
    /** Exactly these deciding rule ids (any order); omitted = not checked. */
    rules: z.array(z.string()).optional(),
    requirements: z
      .strictObject({
        mfa: z.boolean().optional(),
        maxAge: z.number().optional(),
        acr: z.string().optional(),
      })
      .optional(),
  }),
]);

/** A policy test file: cases of input → expected decision (and optionally its deciding rules). */
export const policyTestFileSchema = z.strictObject({
  tests: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        input: policyInputSchema,
        expect: expectation,
      }),
    )
    .min(1),
});

export interface PolicyTestResult extends SourceLocation {
  readonly name: string;
  readonly ok: boolean;
  readonly want: { decision: string; rules?: readonly string[] | undefined };
  readonly got: Decision;
  /** Why, for a failure: every rule considered and each condition's value. */
  readonly explanation?: Explanation;
}

/** `*.test.yaml` / `*.test.yml` files under the given files or folders (recursively, in name order). */
export function findPolicyTestFiles(paths: readonly string[]): string[] {
  const out: string[] = [];
  const visit = (p: string): void => {
    if (statSync(p).isDirectory()) {
      for (const n of readdirSync(p).sort()) {
        if (n === 'node_modules' || n.startsWith('.')) continue;
        const child = join(p, n);
        if (statSync(child).isDirectory() || /\.test\.ya?ml$/.test(n)) visit(child);
      }
    } else out.push(p);
  };
  for (const p of paths) visit(p);
  return out;
}

/**
 * Runs policy test files against a compiled policy. A malformed test file is a {@link ConfigError}
 * naming its line; a failing case carries the explanation of what was decided.
 *
 * @example
 * const results = runPolicyTests(loadPolicy(loaded), findPolicyTestFiles(['policies']));
 */
export function runPolicyTests(policy: CompiledPolicy, files: readonly string[]): PolicyTestResult[] {
  const issues: ConfigIssue[] = [];
  const results: PolicyTestResult[] = [];
  for (const file of files) {
    let doc: ReturnType<typeof parseYamlDocument<typeof policyTestFileSchema>>;
    try {
      doc = parseYamlDocument(readFileSync(file, 'utf8'), file, policyTestFileSchema);
    } catch (err) {
      if (err instanceof ConfigError) {
        issues.push(...err.issues);
        continue;
      }
      throw err;
    }
    doc.data.tests.forEach((t, i) => {
      const input = toPolicyInput(t.input);
      const got = policy.decide(input);
      const want = t.expect;
      const ok =
        got.outcome === want.decision &&
        (want.rules === undefined || sameSet(got.ruleIds, want.rules)) &&
        (want.requirements === undefined ||
          JSON.stringify(sortKeys(got.requirements ?? {})) === JSON.stringify(sortKeys(want.requirements)));
      results.push({
        ...doc.locate(['tests', i]),
        name: t.name,
        ok,
        want: { decision: want.decision, rules: want.rules },
        got,
        ...(ok ? {} : { explanation: policy.explain(input) }),
      });
    });
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return results;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}

function sortKeys(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}
