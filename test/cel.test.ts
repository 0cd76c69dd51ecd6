import { readFileSync } from 'node:fs';
import { Environment } from '@marcbachmann/cel-js';
import { describe, expect, it } from 'vitest';
import {
  CelCompileError,
  CelError,
  type CelScope,
  compileCondition,
  compileExpression,
} from '../src/policy/index.js';

/**
 * The CEL-to-closures compiler against the CEL specification's conformance cases (a subset of
 * google/cel-spec tests/simple/testdata, transcribed into test/fixtures/cel-conformance.json with
 * the commit of each file), then against the cel-js evaluator on generated expressions.
 */

interface Case {
  file: string;
  section: string;
  name: string;
  expr: string;
  bindings?: Record<string, unknown>;
  value?: unknown;
  valueType?: string;
  error?: boolean;
  disableCheck?: boolean;
}

const fixture = JSON.parse(
  readFileSync(new URL('./fixtures/cel-conformance.json', import.meta.url), 'utf8'),
) as {
  cases: Case[];
};

function typeOfBinding(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'double';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (Array.isArray(v)) return 'list<dyn>';
  if (v === null) return 'dyn';
  return 'map<string, dyn>';
}

function scopeOf(bindings: Record<string, unknown> | undefined): CelScope {
  const scalars = new Map(
    Object.entries(bindings ?? {}).map(([k, v]) => [k, { type: typeOfBinding(v), read: (() => v) as never }]),
  );
  return { objects: new Map(), scalars };
}

function expected(c: Case): unknown {
  if (c.value === 'NaN') return Number.NaN;
  if (c.value === 'Infinity') return Number.POSITIVE_INFINITY;
  if (c.value === '-Infinity') return Number.NEGATIVE_INFINITY;
  return c.value;
}

// Cases we knowingly do not support, each with the reason.
const NOT_SUPPORTED: Record<string, string> = {
  'fields/qualified_identifier_resolution':
    'dotted variable names (a.b.c as one variable) are not used by policies',
  'namespace/qualified': 'dotted variable names are not used by policies',
};
// Cases refused at load by the parser/checker we use (@marcbachmann/cel-js 8.0.0), or outside our
// runtime model (map keys are strings, as in the JSON our attributes come from).
const NOT_SUPPORTED_CASES: Record<string, string> = {
  'comparisons/gt_literal/not_gt_double':
    'the parser does not read a double literal with a leading dot (.99)',
  'fields/map_has/has': 'the checker refuses has() on a map literal',
  'fields/map_has/has_not': 'the checker refuses has() on a map literal',
  'fields/map_has/has_empty': 'the checker refuses has() on a map literal',
  'macros/all/list_empty': "the checker cannot type `e > 0` over an empty list literal's dyn elements",
};

function skipReason(c: Case): string | undefined {
  const key = `${c.file.replace('.textproto', '')}/${c.section}`;
  if (NOT_SUPPORTED[key]) return NOT_SUPPORTED[key];
  if (Object.keys(c.bindings ?? {}).some((k) => k.includes('.'))) return 'dotted variable names';
  const full = `${key}/${c.name}`;
  if (NOT_SUPPORTED_CASES[full]) return NOT_SUPPORTED_CASES[full];
  return undefined;
}

describe('CEL conformance (cel-spec simple tests, supported subset)', () => {
  const cases = fixture.cases.filter((c) => !skipReason(c));
  it('has the cases', () => {
    expect(cases.length).toBeGreaterThan(400);
  });
  it.each(cases.map((c) => [`${c.file} ${c.section}/${c.name}: ${c.expr}`, c] as const))(
    '%s',
    (_title, c) => {
      const scope = scopeOf(c.bindings);
      let compiled: ReturnType<typeof compileExpression<unknown>>;
      try {
        compiled = compileExpression<unknown>(c.expr, scope, { unchecked: c.disableCheck === true });
      } catch (err) {
        // A type error at load is how a checked CEL implementation reports what the spec lists as an
        // evaluation error for the same expression.
        if (c.error && err instanceof CelCompileError) return;
        // By design, map keys are strings (attributes come from JSON): a literal with int or bool
        // keys is refused at load, never evaluated differently.
        if (err instanceof CelCompileError && /map key of type/.test(err.message)) {
          expect(c.expr).toMatch(/[{,]\s*(-?\d+|true|false)\s*:/);
          return;
        }
        throw err;
      }
      if (c.error) {
        expect(() => compiled.eval(undefined, [])).toThrow(CelError);
        return;
      }
      const got = compiled.eval(undefined, []);
      const want = expected(c);
      if (typeof want === 'number' && Number.isNaN(want)) expect(got).toBeNaN();
      else if (typeof want === 'number' && c.valueType === 'double')
        expect(Object.is(got, want) || got === want).toBe(true);
      else expect(got).toEqual(want);
      // The checked type must match the spec's (ints and doubles are both JS numbers at run time).
      if (!c.disableCheck && c.valueType && compiled.type !== 'dyn') {
        expect(compiled.type.replace(/<.*>$/, '')).toBe(c.valueType);
      }
    },
  );
});

describe('CEL compiler vs the cel-js evaluator on generated expressions', () => {
  // Deterministic PRNG so a failure names a reproducible expression.
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const ints = (): string => String(rnd(21) - 10);
  const strs = (): string => JSON.stringify(['a', 'b', 'ab', '', 'ba'][rnd(5)]);
  const intExpr = (d: number): string => {
    if (d === 0) return [ints(), 'x', 'y', 'size(s)', 'l[0]'][rnd(5)] as string;
    const op = ['+', '-', '*', '/', '%'][rnd(5)] as string;
    return `(${intExpr(d - 1)} ${op} ${intExpr(d - 1)})`;
  };
  const boolExpr = (d: number): string => {
    if (d === 0) {
      const k = rnd(6);
      if (k === 0) return `${intExpr(1)} ${['<', '<=', '==', '!=', '>', '>='][rnd(6)]} ${intExpr(1)}`;
      if (k === 1) return `s.${['startsWith', 'endsWith', 'contains'][rnd(3)]}(${strs()})`;
      if (k === 2) return `${ints()} in l`;
      if (k === 3) return `l.exists(e, e ${['<', '>', '=='][rnd(3)]} ${ints()})`;
      if (k === 4) return `${strs()} in m`;
      return ['true', 'false', 'b'][rnd(3)] as string;
    }
    const k = rnd(4);
    if (k === 0) return `!(${boolExpr(d - 1)})`;
    if (k === 1) return `(${boolExpr(d - 1)} ? ${boolExpr(d - 1)} : ${boolExpr(d - 1)})`;
    return `(${boolExpr(d - 1)} ${k === 2 ? '&&' : '||'} ${boolExpr(d - 1)})`;
  };

  it('agrees on 2,000 random boolean expressions over ints, strings, lists and maps', () => {
    const env = new Environment()
      .registerVariable('x', 'int')
      .registerVariable('y', 'int')
      .registerVariable('s', 'string')
      .registerVariable('b', 'bool')
      .registerVariable('l', 'list<int>')
      .registerVariable('m', 'map<string, int>');
    const vars = (k: number) => ({
      x: (k % 7) - 3,
      y: (k % 5) - 2,
      s: ['ab', 'b', '', 'ba'][k % 4] as string,
      b: k % 2 === 0,
      l: [k % 3, 2, -1],
      m: { a: 1, ba: 2 },
    });
    const scope: CelScope = {
      objects: new Map(),
      scalars: new Map(
        (['x', 'y', 's', 'b', 'l', 'm'] as const).map((n) => [
          n,
          {
            type: { x: 'int', y: 'int', s: 'string', b: 'bool', l: 'list<int>', m: 'map<string, int>' }[n],
            read: ((i: ReturnType<typeof vars>) => i[n]) as never,
          },
        ]),
      ),
    };
    let compared = 0;
    for (let k = 0; k < 2000; k++) {
      const src = boolExpr(1 + rnd(3));
      const ours = compileCondition<ReturnType<typeof vars>>(src, scope);
      const input = vars(k);
      const theirsInput = {
        ...input,
        x: BigInt(input.x),
        y: BigInt(input.y),
        l: input.l.map(BigInt),
        m: Object.fromEntries(Object.entries(input.m).map(([a, v]) => [a, BigInt(v)])),
      };
      let want: unknown;
      let wantErr = false;
      try {
        want = env.evaluate(src, theirsInput);
      } catch {
        wantErr = true;
      }
      let got: unknown;
      let gotErr = false;
      try {
        got = ours.eval(input, []);
      } catch {
        gotErr = true;
      }
      expect({ src, err: gotErr, value: gotErr ? undefined : got }).toEqual({
        src,
        err: wantErr,
        value: wantErr ? undefined : want,
      });
      compared++;
    }
    expect(compared).toBe(2000);
  });
});

describe('CEL compile errors', () => {
  const scope: CelScope = {
    objects: new Map([
      ['principal', { fields: new Map([['clearance', { type: 'int', read: (() => 1) as never }]]) }],
      ['resource', { fields: new Map(), open: () => ({ type: 'dyn', read: (() => undefined) as never }) }],
    ]),
    scalars: new Map(),
  };
  it('names an undeclared attribute of a declared object, with its position', () => {
    const err = (() => {
      try {
        compileCondition('true && principal.clearnce > 2', scope);
      } catch (e) {
        return e as CelCompileError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(CelCompileError);
    expect(err?.message).toMatch(/principal\.clearnce is not a declared attribute \(declared: clearance\)/);
    expect(err?.offset).toBe(8);
  });
  it('reports reads of an open object as undeclared (a warning, not an error)', () => {
    expect(compileCondition('resource.owner == "x"', scope).undeclared).toEqual(['resource.owner']);
  });
  it('refuses type errors, non-bool conditions and unsupported features at load', () => {
    expect(() => compileCondition('principal.clearance + "a" == 1', scope)).toThrow(CelCompileError);
    expect(() => compileCondition('principal.clearance', scope)).toThrow(/must be a bool/);
    expect(() => compileCondition('b"x" == b"x"', scope)).toThrow(/not supported/);
    expect(() => compileCondition('1u == 1u', scope)).toThrow(/not supported/);
    expect(() => compileCondition('"a".matches("(")', scope)).toThrow(/invalid regular expression/);
    // A run-time pattern could come from a request, and JavaScript regexes backtrack: literals only.
    expect(() => compileCondition('"aaa".matches(string(principal.clearance))', scope)).toThrow(
      /not a string literal/,
    );
    expect(() => compileCondition('9007199254740993 > 1', scope)).toThrow(/out of range/);
  });
  it('folds constants', () => {
    expect(compileCondition('1 + 1 == 3', scope).constant).toBe(false);
    expect(compileCondition('true || principal.clearance > 1', scope).constant).toBe(true);
    expect(compileCondition('principal.clearance > 1', scope).constant).toBeUndefined();
  });
  it('never resolves prototype properties of maps', () => {
    const s: CelScope = {
      objects: new Map(),
      scalars: new Map([['m', { type: 'map<string, dyn>', read: (() => ({})) as never }]]),
    };
    expect(() => compileExpression('m.constructor', s).eval(undefined, [])).toThrow(CelError);
    expect(compileCondition('has(m.toString)', s).eval(undefined, [])).toBe(false);
    expect(compileCondition('"constructor" in m', s).eval(undefined, [])).toBe(false);
  });
});
