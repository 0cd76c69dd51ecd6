import { type ASTNode, Environment } from '@marcbachmann/cel-js';

/**
 * CEL conditions, compiled to JavaScript closures.
 *
 * Parsing and type checking are `@marcbachmann/cel-js`'s (the CEL grammar and the checker's overload
 * rules are not ours to re-implement). Evaluation is ours: the checked AST becomes a tree of closures,
 * with every variable path resolved at load (a declared attribute is one property read, not a map
 * lookup by name), constant lists turned into sets and constant regexes compiled once. The library's
 * own evaluator ran the reference scenario at ~0.9 M decisions/s; the closures do several times that
 * (bench/policy).
 *
 * The supported subset — everything else is refused at load with the expression's position:
 * - values: int (as JS numbers; literals and results past ±2^53−1 are errors, not silent rounding),
 *   double, string, bool, null, list, map;
 * - operators: arithmetic (int division truncates, `%` on ints; int overflow is an error), comparison,
 *   equality (deep on lists/maps, numeric across int/double), `&&`/`||` with CEL's error absorption
 *   (`error || true` is true), `!`, `?:`, `in` (list, map), indexing, field selection, `has()`;
 * - functions: size, contains, startsWith, endsWith, matches (a literal pattern, as a JavaScript RegExp
 *   with the `u` flag, compiled at load),
 *   int(), double(), string(); macros all, exists, exists_one, map, filter.
 * Runtime errors (a missing attribute, a wrong type in an untyped map) are thrown as {@link CelError}.
 */

/** A runtime evaluation error (CEL's error value). */
export class CelError extends Error {
  override readonly name = 'CelError';
}

/** What a compiled expression reads: the whole request input, plus slots for macro variables. */
export type Slots = unknown[];
export type Evaluator<I> = (input: I, slots: Slots) => unknown;

/** How a variable's fields are read from the input, decided at load. */
export interface FieldAccess {
  /** CEL type of the field (`string`, `int`, `list<string>`, `map<string, dyn>`, …). */
  readonly type: string;
  /** Reads the field; `undefined` means absent (an error when selected, false for `has`). */
  readonly read: (input: never) => unknown;
}

/** A root variable (`principal`, `resource`, …) whose fields are known at load. */
export interface VariableSpec {
  /** Fields by name; a field not listed is unknown. */
  readonly fields: ReadonlyMap<string, FieldAccess>;
  /** When set, an unknown field is typed `dyn` and read with this (and reported as a warning). */
  readonly open?: (name: string) => FieldAccess;
}

/** A variable that is a single value (`action`). */
export interface ScalarSpec {
  readonly type: string;
  readonly read: (input: never) => unknown;
}

export interface CelScope {
  readonly objects: ReadonlyMap<string, VariableSpec>;
  readonly scalars: ReadonlyMap<string, ScalarSpec>;
}

/** A compile problem located inside the expression (offset in characters). */
export class CelCompileError extends Error {
  override readonly name = 'CelCompileError';
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

/** One node of the explanation tree: the source text of a sub-expression and how to evaluate it. */
export interface ExplainNode<I> {
  readonly text: string;
  readonly eval: Evaluator<I>;
  readonly children: readonly ExplainNode<I>[];
}

export interface CompiledCondition<I> {
  readonly source: string;
  readonly eval: Evaluator<I>;
  /** `true`/`false` when the condition does not depend on the input. */
  readonly constant: boolean | undefined;
  /** The boolean structure (`&&`, `||`, `!`, `?:`) down to its leaves, for explanations. */
  readonly explain: ExplainNode<I>;
  /** Fields of open variables that are not declared (`principal.departmnt`): warnings. */
  readonly undeclared: readonly string[];
  /** Number of macro-variable slots the expression needs. */
  readonly slots: number;
}

const SAFE = Number.MAX_SAFE_INTEGER;
const PROTO_NAMES = new Set(Object.getOwnPropertyNames(Object.prototype));

function fail(message: string): never {
  throw new CelError(message);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'list';
  if (typeof v === 'number') return Number.isInteger(v) ? 'int' : 'double';
  if (typeof v === 'object') return 'map';
  return typeof v === 'boolean' ? 'bool' : typeof v;
}

/** Own-property read of a map value: prototype names never resolve. */
function mapGet(m: unknown, key: unknown): unknown {
  if (m === null || typeof m !== 'object' || Array.isArray(m))
    fail(`no such overload: select on ${typeName(m)}`);
  const k = String(key);
  if (!Object.hasOwn(m, k)) fail(`no such key: ${k}`);
  return (m as Record<string, unknown>)[k];
}

export function celEquals(a: unknown, b: unknown): boolean {
  if (a === b) return true; // (NaN !== NaN, so NaN never gets here)
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!celEquals(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a as object);
  if (ka.length !== Object.keys(b as object).length) return false;
  for (const k of ka) {
    if (!Object.hasOwn(b as object, k)) return false;
    if (!celEquals((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}

function isNum(v: unknown): v is number {
  return typeof v === 'number';
}

function checkInt(v: number): number {
  if (v > SAFE || v < -SAFE) fail('int overflow (Portcullis ints are limited to ±2^53−1)');
  return v;
}

function compare(a: unknown, b: unknown): number {
  if (isNum(a) && isNum(b)) return a < b ? -1 : a > b ? 1 : a === b ? 0 : Number.NaN;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  return fail(`no such overload: ${typeName(a)} < ${typeName(b)}`);
}

function asBool(v: unknown): boolean {
  if (v === true || v === false) return v;
  return fail(`no such overload: expected bool, got ${typeName(v)}`);
}

function size(v: unknown): number {
  if (typeof v === 'string') {
    let n = 0;
    for (const _ of v) n++; // code points, as CEL counts them
    return n;
  }
  if (Array.isArray(v)) return v.length;
  if (v !== null && typeof v === 'object') return Object.keys(v).length;
  return fail(`no such overload: size(${typeName(v)})`);
}

function str(v: unknown, fn: string): string {
  if (typeof v !== 'string') fail(`no such overload: ${fn} on ${typeName(v)}`);
  return v;
}

function toStringValue(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') return Number.isInteger(v) && Math.abs(v) < 1e21 ? v.toFixed(0) : String(v);
  return fail(`no such overload: string(${typeName(v)})`);
}

const INT_TEXT = /^[+-]?\d+$/;

function toInt(v: unknown): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) fail('int() of a non-finite double');
    return checkInt(Math.trunc(v));
  }
  if (typeof v === 'string') {
    if (!INT_TEXT.test(v)) fail(`int(): not an integer: ${JSON.stringify(v)}`);
    return checkInt(Number(v));
  }
  return fail(`no such overload: int(${typeName(v)})`);
}

function toDouble(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const t = v.trim();
    if (t === 'NaN') return Number.NaN;
    if (/^[+-]?(inf|infinity)$/i.test(t)) return t.startsWith('-') ? -Infinity : Infinity;
    const n = t === '' ? Number.NaN : Number(t);
    if (Number.isNaN(n)) fail(`double(): not a number: ${JSON.stringify(v)}`);
    return n;
  }
  return fail(`no such overload: double(${typeName(v)})`);
}

type Compiled<I> = { fn: Evaluator<I>; type: string; constant?: { value: unknown } };

interface CompileState {
  scope: CelScope;
  slotNames: Map<string, number>[];
  slotCount: number;
  undeclared: Set<string>;
  source: string;
  unchecked: boolean;
}

/**
 * Type-checks `source` against `scope` (with the library's checker) and compiles it to closures.
 * Throws {@link CelCompileError} for a syntax or type error, an undeclared field of a closed variable,
 * a result that is not a bool, or something outside the supported subset.
 *
 * @example
 * const c = compileCondition('principal.clearance >= 3', scope);
 * c.eval(input, []) // true | false, or throws CelError
 */
export function compileCondition<I>(source: string, scope: CelScope): CompiledCondition<I> {
  return compileExpression<I>(source, scope, { requireBool: true });
}

export interface CompileOptions {
  /** Refuse expressions whose type is not bool (conditions). */
  readonly requireBool?: boolean;
  /** Skip the type checker (CEL's `disable_check`): types are then only known at run time. */
  readonly unchecked?: boolean;
}

/** Like {@link compileCondition} for an expression of any type; `type` is its checked CEL type. */
export function compileExpression<I>(
  source: string,
  scope: CelScope,
  options: CompileOptions = {},
): CompiledCondition<I> & { readonly type: string } {
  const env = new Environment({ homogeneousAggregateLiterals: false });
  const undeclared = new Set<string>();
  // First pass (parse only): find `variable.field` selections to declare open fields as dyn.
  const probe = new Environment({ unlistedVariablesAreDyn: true });
  let ast: ASTNode;
  try {
    ast = probe.parse(source).ast;
  } catch (err) {
    throw toCompileError(err);
  }
  const selected = new Map<string, Set<string>>();
  walk(ast, (node) => {
    if (node.op === '.' || node.op === '.?') {
      const [target, field] = node.args as [ASTNode, string];
      if (target.op === 'id' && typeof target.args === 'string') {
        const set = selected.get(target.args) ?? new Set<string>();
        set.add(field);
        selected.set(target.args, set);
      }
    }
  });
  for (const [name, spec] of scope.objects) {
    const schema: Record<string, string> = {};
    for (const [f, access] of spec.fields) schema[f] = access.type;
    for (const f of selected.get(name) ?? []) {
      if (spec.fields.has(f)) continue;
      if (!spec.open) {
        const node = findSelect(ast, name, f);
        throw new CelCompileError(
          `${name}.${f} is not a declared attribute (declared: ${[...spec.fields.keys()].sort().join(', ') || 'none'})`,
          node?.start ?? 0,
        );
      }
      schema[f] = 'dyn';
      undeclared.add(`${name}.${f}`);
    }
    env.registerVariable({ name, schema });
  }
  for (const [name, spec] of scope.scalars) env.registerVariable(name, spec.type);

  let root: ASTNode = ast;
  let type = 'dyn';
  if (!options.unchecked) {
    let checked: { ast: ASTNode; check(): { valid: boolean; type?: string; error?: Error } };
    try {
      checked = env.parse(source);
    } catch (err) {
      throw toCompileError(err);
    }
    const result = checked.check();
    if (!result.valid) throw toCompileError(result.error);
    type = result.type ?? 'dyn';
    if (options.requireBool && type !== 'bool' && type !== 'dyn')
      throw new CelCompileError(`a condition must be a bool, this is ${type}`, 0);
    root = checked.ast;
  }

  const state: CompileState = {
    scope,
    slotNames: [],
    slotCount: 0,
    undeclared,
    source,
    unchecked: options.unchecked === true,
  };
  const compiled = compileNode<I>(root, state);
  const explain = explainTree<I>(root, state, compiled);
  const constant =
    compiled.constant && typeof compiled.constant.value === 'boolean' ? compiled.constant.value : undefined;
  return {
    source,
    type,
    eval: compiled.fn,
    constant,
    explain,
    undeclared: [...undeclared],
    slots: state.slotCount,
  };
}

function toCompileError(err: unknown): CelCompileError {
  const e = err as { message?: string; summary?: string; node?: { start?: number; pos?: number } };
  const message = e.summary ?? (e.message ?? String(err)).split('\n')[0] ?? 'invalid expression';
  return new CelCompileError(message, e.node?.start ?? e.node?.pos ?? 0);
}

function children(node: ASTNode): ASTNode[] {
  const out: ASTNode[] = [];
  const visit = (a: unknown): void => {
    if (Array.isArray(a)) for (const x of a) visit(x);
    else if (a && typeof a === 'object' && 'op' in a) out.push(a as ASTNode);
  };
  visit(node.args);
  return out;
}

function walk(node: ASTNode, fn: (n: ASTNode) => void): void {
  fn(node);
  for (const c of children(node)) walk(c, fn);
}

function findSelect(ast: ASTNode, name: string, field: string): ASTNode | undefined {
  let found: ASTNode | undefined;
  walk(ast, (n) => {
    if (found || n.op !== '.') return;
    const [t, f] = n.args as [ASTNode, string];
    if (f === field && t.op === 'id' && t.args === name) found = n;
  });
  return found;
}

function typeOf(node: ASTNode): string {
  const t = (node as { checkedType?: { name?: string } }).checkedType;
  return t?.name ?? 'dyn';
}

function unsupported(node: ASTNode, what: string): never {
  throw new CelCompileError(`${what} is not supported in Portcullis policies`, node.start ?? 0);
}

function constantOf<I>(value: unknown, type: string): Compiled<I> {
  return { fn: () => value, type, constant: { value } };
}

/** Folds an operation over constant operands at load; a runtime error stays a runtime error. */
function fold<I>(parts: Compiled<I>[], fn: Evaluator<I>, type: string): Compiled<I> {
  if (parts.every((p) => p.constant)) {
    try {
      return constantOf(fn(undefined as never, []), type);
    } catch {
      return { fn, type };
    }
  }
  return { fn, type };
}

function literal<I>(node: ASTNode): Compiled<I> {
  const v = node.args as unknown;
  const t = typeOf(node);
  if (typeof v === 'bigint') {
    if (t === 'uint') unsupported(node, 'uint');
    if (v > BigInt(SAFE) || v < -BigInt(SAFE))
      throw new CelCompileError('int literal out of range (±2^53−1)', node.start ?? 0);
    return constantOf(Number(v), 'int');
  }
  if (v === null || typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number')
    return constantOf(v, t);
  return unsupported(node, t === 'dyn' ? 'this literal' : `a ${t} literal`);
}

function compileNode<I>(node: ASTNode, st: CompileState): Compiled<I> {
  switch (node.op) {
    case 'value':
      return literal(node);
    case 'id':
      return compileIdent(node, st);
    case '.':
      return compileSelect(node, st);
    case '[]': {
      const [a, b] = (node.args as ASTNode[]).map((n) => compileNode<I>(n, st)) as [Compiled<I>, Compiled<I>];
      const fa = a.fn;
      const fb = b.fn;
      return fold(
        [a, b],
        (i, s) => {
          const c = fa(i, s);
          const k = fb(i, s);
          if (Array.isArray(c)) {
            if (!isNum(k) || !Number.isInteger(k)) fail(`no such overload: list[${typeName(k)}]`);
            if (k < 0 || k >= c.length) fail(`index out of range: ${k}`);
            return c[k];
          }
          return mapGet(c, mapKey(k));
        },
        typeOf(node),
      );
    }
    case '!_': {
      const a = compileNode<I>(node.args as ASTNode, st);
      const f = a.fn;
      return fold([a], (i, s) => !asBool(f(i, s)), 'bool');
    }
    case '-_': {
      const a = compileNode<I>(node.args as ASTNode, st);
      const f = a.fn;
      const int = typeOf(node) === 'int';
      return fold(
        [a],
        (i, s) => {
          const v = f(i, s);
          if (!isNum(v)) fail(`no such overload: -${typeName(v)}`);
          return int ? checkInt(-v) || 0 : -v;
        },
        typeOf(node),
      );
    }
    case '&&':
    case '||':
      return compileLogic(node, st);
    case '?:': {
      const [c, t, e] = (node.args as ASTNode[]).map((n) => compileNode<I>(n, st)) as [
        Compiled<I>,
        Compiled<I>,
        Compiled<I>,
      ];
      const fc = c.fn;
      const ft = t.fn;
      const fe = e.fn;
      return fold([c, t, e], (i, s) => (asBool(fc(i, s)) ? ft(i, s) : fe(i, s)), typeOf(node));
    }
    case '==':
    case '!=':
    case '<':
    case '<=':
    case '>':
    case '>=':
    case '+':
    case '-':
    case '*':
    case '/':
    case '%':
    case 'in':
      return compileBinary(node, st);
    case 'list': {
      const items = (node.args as ASTNode[]).map((n) => compileNode<I>(n, st));
      const fns = items.map((x) => x.fn);
      return fold(items, (i, s) => fns.map((f) => f(i, s)), typeOf(node));
    }
    case 'map': {
      for (const [k] of node.args as [ASTNode, ASTNode][]) {
        const t = typeOf(k);
        if (t !== 'string' && t !== 'dyn') unsupported(k, `a map key of type ${t} (map keys are strings)`);
      }
      const entries = (node.args as [ASTNode, ASTNode][]).map(
        ([k, v]) => [compileNode<I>(k, st), compileNode<I>(v, st)] as const,
      );
      return fold(
        entries.flat(),
        (i, s) => {
          const out: Record<string, unknown> = Object.create(null);
          for (const [k, v] of entries) {
            const key = mapKey(k.fn(i, s));
            if (Object.hasOwn(out, key)) fail(`duplicate map key: ${key}`);
            out[key] = v.fn(i, s);
          }
          return out;
        },
        typeOf(node),
      );
    }
    case 'call':
      return compileCall(node, st);
    case 'rcall':
      return compileMethod(node, st);
    default:
      return unsupported(node, `the ${node.op} operator`);
  }
}

function mapKey(k: unknown): string {
  if (typeof k === 'string') return k;
  if (typeof k === 'boolean' || (isNum(k) && Number.isInteger(k))) return String(k);
  return fail(`unsupported map key type ${typeName(k)}`);
}

function compileIdent<I>(node: ASTNode, st: CompileState): Compiled<I> {
  const name = node.args as string;
  for (let d = st.slotNames.length - 1; d >= 0; d--) {
    const slot = st.slotNames[d]?.get(name);
    if (slot !== undefined) return { fn: (_i, s) => s[slot], type: typeOf(node) };
  }
  const scalar = st.scope.scalars.get(name);
  if (scalar) {
    const read = scalar.read as (i: I) => unknown;
    return {
      fn: (i) => {
        const v = read(i);
        if (v === undefined) fail(`${name} is not set`);
        return v;
      },
      type: scalar.type,
    };
  }
  if (st.scope.objects.has(name)) unsupported(node, `using ${name} as a whole value`);
  // Unchecked, an unknown name is CEL's runtime error (which `||`/`&&` may still absorb).
  if (st.unchecked) return { fn: () => fail(`undeclared reference to '${name}'`), type: 'dyn' };
  return unsupported(node, `the identifier ${name}`);
}

function fieldOf(st: CompileState, varName: string, field: string): FieldAccess | undefined {
  const spec = st.scope.objects.get(varName);
  if (!spec) return undefined;
  return spec.fields.get(field) ?? spec.open?.(field);
}

/** `variable.field` resolved to its reader at load, or a dynamic map select. */
function compileSelect<I>(node: ASTNode, st: CompileState, presence = false): Compiled<I> {
  const [target, field] = node.args as [ASTNode, string];
  if (
    target.op === 'id' &&
    st.scope.objects.has(target.args as string) &&
    !isSlot(st, target.args as string)
  ) {
    const varName = target.args as string;
    const access = fieldOf(st, varName, field);
    if (!access) unsupported(node, `${varName}.${field}`);
    const read = access.read as (i: I) => unknown;
    if (presence) return { fn: (i) => read(i) !== undefined, type: 'bool' };
    return {
      fn: (i) => {
        const v = read(i);
        if (v === undefined) fail(`no such attribute: ${varName}.${field}`);
        return v;
      },
      type: access.type,
    };
  }
  const t = compileNode<I>(target, st);
  const f = t.fn;
  if (presence) {
    return {
      fn: (i, s) => {
        const m = f(i, s);
        if (m === null || typeof m !== 'object' || Array.isArray(m))
          fail(`no such overload: has() on ${typeName(m)}`);
        return Object.hasOwn(m, field) && (m as Record<string, unknown>)[field] !== undefined;
      },
      type: 'bool',
    };
  }
  if (!PROTO_NAMES.has(field)) {
    return {
      fn: (i, s) => {
        const m = f(i, s);
        if (m === null || typeof m !== 'object' || Array.isArray(m))
          fail(`no such overload: select on ${typeName(m)}`);
        const v = (m as Record<string, unknown>)[field];
        if (v === undefined) fail(`no such key: ${field}`);
        return v;
      },
      type: typeOf(node),
    };
  }
  return { fn: (i, s) => mapGet(f(i, s), field), type: typeOf(node) };
}

function isSlot(st: CompileState, name: string): boolean {
  return st.slotNames.some((m) => m.has(name));
}

function compileLogic<I>(node: ASTNode, st: CompileState): Compiled<I> {
  const [a, b] = (node.args as ASTNode[]).map((n) => compileNode<I>(n, st)) as [Compiled<I>, Compiled<I>];
  const fa = a.fn;
  const fb = b.fn;
  // CEL: `false && error` is false, `true || error` is true, whichever side the error is on.
  const absorbing = node.op === '||';
  const fn: Evaluator<I> = (i, s) => {
    let err: unknown;
    try {
      const va = fa(i, s);
      if (va === absorbing) return absorbing;
      if (va !== !absorbing) err = new CelError(`no such overload: expected bool, got ${typeName(va)}`);
    } catch (e) {
      err = e;
    }
    const vb = fb(i, s);
    if (vb === absorbing) return absorbing;
    if (vb !== !absorbing) fail(`no such overload: expected bool, got ${typeName(vb)}`);
    if (err !== undefined) throw err;
    return !absorbing;
  };
  if (a.constant && a.constant.value === absorbing) return constantOf(absorbing, 'bool');
  if (b.constant && b.constant.value === absorbing) return constantOf(absorbing, 'bool');
  return fold([a, b], fn, 'bool');
}

function compileBinary<I>(node: ASTNode, st: CompileState): Compiled<I> {
  const [an, bn] = node.args as [ASTNode, ASTNode];
  const a = compileNode<I>(an, st);
  const b = compileNode<I>(bn, st);
  const fa = a.fn;
  const fb = b.fn;
  const type = typeOf(node);
  // int arithmetic when checked as int; for dyn (unchecked, or values of untyped maps) integral
  // numbers count as ints, as JSON numbers usually are.
  const int = type === 'int';
  const dyn = type === 'dyn';
  let fn: Evaluator<I>;
  switch (node.op) {
    case '==':
      fn = (i, s) => celEquals(fa(i, s), fb(i, s));
      break;
    case '!=':
      fn = (i, s) => !celEquals(fa(i, s), fb(i, s));
      break;
    case '<':
      fn = (i, s) => compare(fa(i, s), fb(i, s)) < 0;
      break;
    case '<=':
      fn = (i, s) => compare(fa(i, s), fb(i, s)) <= 0;
      break;
    case '>':
      fn = (i, s) => compare(fa(i, s), fb(i, s)) > 0;
      break;
    case '>=':
      fn = (i, s) => compare(fa(i, s), fb(i, s)) >= 0;
      break;
    case '+':
      fn = (i, s) => {
        const x = fa(i, s);
        const y = fb(i, s);
        if (isNum(x) && isNum(y))
          return int || (dyn && Number.isInteger(x) && Number.isInteger(y)) ? checkInt(x + y) : x + y;
        if (typeof x === 'string' && typeof y === 'string') return x + y;
        if (Array.isArray(x) && Array.isArray(y)) return x.concat(y);
        return fail(`no such overload: ${typeName(x)} + ${typeName(y)}`);
      };
      break;
    case '-':
    case '*':
    case '/':
    case '%': {
      const op = node.op;
      fn = (i, s) => {
        const x = fa(i, s);
        const y = fb(i, s);
        if (!isNum(x) || !isNum(y)) fail(`no such overload: ${typeName(x)} ${op} ${typeName(y)}`);
        const asInt = int || (dyn && Number.isInteger(x) && Number.isInteger(y));
        if (op === '-') return asInt ? checkInt(x - y) : x - y;
        if (op === '*') return asInt ? checkInt(x * y) : x * y;
        if (asInt && y === 0) fail(op === '/' ? 'division by zero' : 'modulus by zero');
        if (op === '/') return asInt ? checkInt(Math.trunc(x / y)) : x / y;
        if (!asInt) fail('no such overload: double % double');
        return x % y;
      };
      break;
    }
    case 'in': {
      if (
        b.constant &&
        Array.isArray(b.constant.value) &&
        b.constant.value.every((v) => typeof v === 'string')
      ) {
        const list = b.constant.value as string[];
        const set = new Set(list);
        fn = (i, s) => {
          const x = fa(i, s);
          return typeof x === 'string' ? set.has(x) : list.some((v) => celEquals(x, v));
        };
        break;
      }
      fn = (i, s) => {
        const x = fa(i, s);
        const c = fb(i, s);
        if (Array.isArray(c)) {
          if (typeof x === 'string') return c.includes(x);
          for (const v of c) if (celEquals(x, v)) return true;
          return false;
        }
        if (c !== null && typeof c === 'object') {
          if (typeof x !== 'string' && typeof x !== 'boolean' && !(isNum(x) && Number.isInteger(x)))
            return false;
          return Object.hasOwn(c, String(x));
        }
        return fail(`no such overload: ${typeName(x)} in ${typeName(c)}`);
      };
      break;
    }
    default:
      return unsupported(node, `the ${node.op} operator`);
  }
  return fold([a, b], fn, type);
}

const CONVERSIONS: Record<string, (v: unknown) => unknown> = {
  int: toInt,
  double: toDouble,
  string: toStringValue,
  size,
};

function compileCall<I>(node: ASTNode, st: CompileState): Compiled<I> {
  const [name, argNodes] = node.args as [string, ASTNode[]];
  if (name === 'has') {
    const arg = argNodes[0];
    if (argNodes.length !== 1 || !arg || arg.op !== '.') unsupported(node, 'this form of has()');
    return compileSelect<I>(arg, st, true);
  }
  const conv = CONVERSIONS[name];
  if (!conv || argNodes.length !== 1 || !argNodes[0]) return unsupported(node, `the function ${name}()`);
  const a = compileNode<I>(argNodes[0], st);
  const f = a.fn;
  return fold([a], (i, s) => conv(f(i, s)), typeOf(node));
}

function compileMethod<I>(node: ASTNode, st: CompileState): Compiled<I> {
  const [name, targetNode, argNodes] = node.args as [string, ASTNode, ASTNode[]];
  if (name === 'all' || name === 'exists' || name === 'exists_one' || name === 'map' || name === 'filter')
    return compileMacro(node, name, targetNode, argNodes, st);
  const target = compileNode<I>(targetNode, st);
  const ft = target.fn;
  if (name === 'size' && argNodes.length === 0) return fold([target], (i, s) => size(ft(i, s)), 'int');
  const arg = argNodes[0];
  if (argNodes.length !== 1 || !arg) return unsupported(node, `the method ${name}()`);
  const a = compileNode<I>(arg, st);
  const fa = a.fn;
  switch (name) {
    case 'contains':
      return fold([target, a], (i, s) => str(ft(i, s), name).includes(str(fa(i, s), name)), 'bool');
    case 'startsWith':
      return fold([target, a], (i, s) => str(ft(i, s), name).startsWith(str(fa(i, s), name)), 'bool');
    case 'endsWith':
      return fold([target, a], (i, s) => str(ft(i, s), name).endsWith(str(fa(i, s), name)), 'bool');
    case 'matches': {
      if (a.constant && typeof a.constant.value === 'string') {
        let re: RegExp;
        try {
          re = new RegExp(a.constant.value, 'u');
        } catch (err) {
          throw new CelCompileError(`invalid regular expression: ${(err as Error).message}`, arg.start ?? 0);
        }
        return fold([target], (i, s) => re.test(str(ft(i, s), name)), 'bool');
      }
      // A pattern computed at run time could come from a request: JavaScript regexes backtrack
      // (they are not linear-time like RE2), so only patterns written in the policy are allowed.
      return unsupported(arg, 'matches() with a pattern that is not a string literal');
    }
    default:
      return unsupported(node, `the method ${name}()`);
  }
}

function compileMacro<I>(
  node: ASTNode,
  name: string,
  targetNode: ASTNode,
  argNodes: ASTNode[],
  st: CompileState,
): Compiled<I> {
  const target = compileNode<I>(targetNode, st);
  const ft = target.fn;
  const varNode = argNodes[0];
  if (varNode?.op !== 'id' || argNodes.length < 2 || argNodes.length > 3)
    return unsupported(node, `this form of ${name}()`);
  const slot = st.slotCount++;
  st.slotNames.push(new Map([[varNode.args as string, slot]]));
  const parts = argNodes.slice(1).map((n) => compileNode<I>(n, st));
  st.slotNames.pop();
  const pred = parts[0]?.fn as Evaluator<I>;
  const second = parts[1]?.fn;
  // Iterating a map iterates its keys.
  const items = (i: I, s: Slots): unknown[] => {
    const c = ft(i, s);
    if (Array.isArray(c)) return c;
    if (c !== null && typeof c === 'object') return Object.keys(c);
    return fail(`no such overload: ${name} over ${typeName(c)}`);
  };
  const type = typeOf(node);
  switch (name) {
    case 'all':
    case 'exists': {
      const stopOn = name === 'exists';
      return {
        fn: (i, s) => {
          let err: unknown;
          for (const x of items(i, s)) {
            s[slot] = x;
            try {
              if (asBool(pred(i, s)) === stopOn) return stopOn;
            } catch (e) {
              err ??= e;
            }
          }
          if (err !== undefined) throw err;
          return !stopOn;
        },
        type,
      };
    }
    case 'exists_one':
      return {
        fn: (i, s) => {
          let n = 0;
          for (const x of items(i, s)) {
            s[slot] = x;
            if (asBool(pred(i, s))) n++;
          }
          return n === 1;
        },
        type,
      };
    case 'filter':
      return {
        fn: (i, s) => {
          const out: unknown[] = [];
          for (const x of items(i, s)) {
            s[slot] = x;
            if (asBool(pred(i, s))) out.push(x);
          }
          return out;
        },
        type,
      };
    default: {
      // map(x, transform) or map(x, filter, transform)
      const filter = second ? pred : undefined;
      const transform = second ?? pred;
      return {
        fn: (i, s) => {
          const out: unknown[] = [];
          for (const x of items(i, s)) {
            s[slot] = x;
            if (filter && !asBool(filter(i, s))) continue;
            out.push(transform(i, s));
          }
          return out;
        },
        type,
      };
    }
  }
}

/** The explanation tree: boolean structure with the source text of every part. */
function explainTree<I>(node: ASTNode, st: CompileState, compiled?: Compiled<I>): ExplainNode<I> {
  const text = st.source.slice(node.start, node.end);
  const fn = (compiled ?? compileNode<I>(node, st)).fn;
  if (node.op === '&&' || node.op === '||' || node.op === '?:' || node.op === '!_') {
    const kids = children(node).map((c) => explainTree<I>(c, st));
    return { text, eval: fn, children: kids };
  }
  return { text, eval: fn, children: [] };
}
