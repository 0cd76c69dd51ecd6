import {
  ConfigError,
  type ConfigIssue,
  type PolicyConfig,
  type PolicyRuleConfig,
  PRINCIPAL_BUILTINS,
  type RouteConfig,
  type SourceLocation,
} from '../config/index.js';
import {
  CelCompileError,
  type CelScope,
  type CompiledCondition,
  compileCondition,
  type ExplainNode,
  type FieldAccess,
  type VariableSpec,
} from './cel.js';
import type { Decision, PolicyEngine, PolicyInput, PolicyPrincipal, Requirements } from './types.js';

/** A rule plus where it was written, so load errors and warnings name the file and line. */
export interface RuleSource {
  readonly rule: PolicyRuleConfig;
  /** Location of a field of this rule (`[]` = the rule itself, `['when']`, …). */
  readonly locate: (field: readonly (string | number)[]) => SourceLocation;
}

export interface RoleSource {
  readonly name: string;
  readonly includes: readonly string[];
  readonly permissions: readonly string[];
  readonly locate: (field: readonly (string | number)[]) => SourceLocation;
}

/** Everything the compiler needs: rules and roles from every policy document, and the declarations. */
export interface PolicySpec {
  readonly rules: readonly RuleSource[];
  readonly roles: readonly RoleSource[];
  readonly schema: PolicyConfig['schema'];
  readonly acrLevels: readonly string[];
  /** Routes of the gateway (to check rules' `routes` and `methods`); omitted for library use. */
  readonly routes?: readonly RouteConfig[];
  /**
   * Principal attributes an identity source is configured to provide (external issuers' `claims`):
   * known to conditions as `dyn` when `schema.principal` does not type them, so reading them is
   * neither a warning (open schema) nor an error (closed schema).
   */
  readonly principalAttributes?: readonly string[];
}

/** A load-time finding that does not stop the policy from loading. */
export interface PolicyWarning extends SourceLocation {
  readonly ruleId: string;
  readonly message: string;
}

/** One rule's part in an explanation. */
export interface RuleTrace {
  readonly id: string;
  readonly effect: 'allow' | 'deny';
  /** Whether who/action/resource matched (the condition is evaluated only then). */
  readonly applies: boolean;
  readonly why?: string;
  readonly matched: boolean;
  readonly condition?: ConditionTrace;
  readonly unmet?: Requirements;
  readonly error?: string;
}

export interface ConditionTrace {
  readonly expression: string;
  readonly value: unknown;
  readonly parts: readonly ConditionTrace[];
}

export interface Explanation {
  readonly decision: Decision;
  /** Every rule considered for this (resource, action), in order. */
  readonly rules: readonly RuleTrace[];
}

export interface CompiledPolicy extends PolicyEngine {
  explain(input: PolicyInput): Explanation;
  readonly warnings: readonly PolicyWarning[];
  /** Number of rules, including one per role with permissions. */
  readonly size: number;
}

interface Obligation {
  readonly mfa: boolean;
  readonly maxAge: number | undefined;
  /** Index into acrLevels, or -1. */
  readonly acr: number;
  readonly acrName: string | undefined;
}

interface CompiledRule {
  readonly id: string;
  readonly order: number;
  readonly deny: boolean;
  readonly source: RuleSource | undefined;
  /** `undefined` = anyone. */
  readonly who: ((p: PolicyPrincipal) => boolean) | undefined;
  readonly action: ((a: string) => boolean) | undefined;
  readonly methods: ReadonlySet<string> | undefined;
  readonly routes: ReadonlySet<string> | undefined;
  readonly types: ReadonlySet<string> | undefined;
  readonly paths: readonly RegExp[] | undefined;
  readonly cond: CompiledCondition<PolicyInput> | undefined;
  readonly condEval: ((i: PolicyInput, s: unknown[]) => unknown) | undefined;
  readonly obligation: Obligation | undefined;
  /** The frozen decision when this rule alone decides (the common case: no allocation). */
  readonly single: Decision;
}

interface Bucket {
  readonly denies: readonly CompiledRule[];
  readonly allows: readonly CompiledRule[];
}

/** Authentication methods (RFC 8176, plus our `recovery` code) that count as a second factor. */
const MFA_METHODS = new Set(['mfa', 'otp', 'hwk', 'swk', 'sc', 'pop', 'sms', 'tel', 'recovery']);
const NO_RULE: Decision = Object.freeze({
  outcome: 'deny',
  ruleIds: Object.freeze([]) as readonly string[],
  reason: 'no rule allows this request (deny by default)',
});
const MEMO_LIMIT = 4096;
const EMPTY: readonly CompiledRule[] = Object.freeze([]);

/**
 * Compiles policy rules into a decision function.
 *
 * Semantics: deny by default; any matching `deny` wins over any `allow`; an allow whose `require`
 * is not met by the request's authentication becomes a challenge (step-up). Every matching rule is
 * reported (Cedar's "determining policies"), not just the first.
 *
 * Compiled once: conditions are type-checked and turned into closures, roles are expanded through
 * inheritance into one set per rule, and rules are bucketed by (route, type, action, method) on first
 * use, so a decision evaluates only the rules that can apply. Load errors throw a {@link ConfigError}
 * naming file:line; findings that do not stop loading are in `warnings`.
 *
 * @example
 * const policy = compilePolicy(specFromConfig(config));
 * policy.decide({ principal, action: 'orders:write', resource: { type: 'Order', attributes: { ownerId } } });
 */
export function compilePolicy(spec: PolicySpec): CompiledPolicy {
  const issues: ConfigIssue[] = [];
  const warnings: PolicyWarning[] = [];
  const implied = expandRoles(spec.roles, issues);
  const sources: RuleSource[] = [...spec.rules];
  for (const role of spec.roles) {
    if (role.permissions.length === 0) continue;
    sources.push({
      rule: { id: `role:${role.name}`, effect: 'allow', roles: [role.name], actions: [...role.permissions] },
      locate: (f) => role.locate(f[0] === 'actions' ? ['permissions', ...f.slice(1)] : []),
    });
  }
  const seen = new Map<string, RuleSource>();
  const rules: CompiledRule[] = [];
  const routesById = new Map((spec.routes ?? []).map((r) => [r.id, r]));
  sources.forEach((src, order) => {
    const { rule } = src;
    const first = seen.get(rule.id);
    if (first) {
      const at = first.locate([]);
      issues.push(issue(src, ['id'], `duplicate rule id "${rule.id}" (first at ${at.file}:${at.line})`));
      return;
    }
    seen.set(rule.id, src);
    const compiled = compileRule(src, order, spec, implied, routesById, issues, warnings);
    if (compiled) rules.push(compiled);
  });
  if (issues.length > 0) throw new ConfigError(issues);
  staticChecks(rules, spec, routesById, warnings);
  warnings.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column);
  return new Engine(rules, spec.acrLevels, warnings);
}

function issue(src: RuleSource | RoleSource, field: (string | number)[], message: string): ConfigIssue {
  const at = src.locate(field);
  const what = 'rule' in src ? `rule ${src.rule.id}` : `role ${src.name}`;
  return { ...at, path: field.length ? `${what}.${field.join('.')}` : what, message };
}

/** For each role, the set of roles that hold it (itself and every role that includes it, transitively). */
function expandRoles(
  roles: readonly RoleSource[],
  issues: ConfigIssue[],
): (role: string) => ReadonlySet<string> {
  const includedBy = new Map<string, string[]>();
  const byName = new Map(roles.map((r) => [r.name, r]));
  for (const r of roles) {
    for (const inc of r.includes) {
      const list = includedBy.get(inc) ?? [];
      list.push(r.name);
      includedBy.set(inc, list);
    }
  }
  // Cycles: a role that (transitively) includes itself.
  const state = new Map<string, 1 | 2>();
  const visit = (name: string, path: string[]): void => {
    if (state.get(name) === 2) return;
    if (state.get(name) === 1) {
      const role = byName.get(path[0] ?? name);
      if (role)
        issues.push(issue(role, ['includes'], `role inheritance cycle: ${[...path, name].join(' → ')}`));
      return;
    }
    state.set(name, 1);
    for (const inc of byName.get(name)?.includes ?? []) visit(inc, [...path, name]);
    state.set(name, 2);
  };
  for (const r of roles) visit(r.name, []);
  const implied = new Map<string, Set<string>>();
  const holders = (name: string): Set<string> => {
    const done = implied.get(name);
    if (done) return done;
    const out = new Set<string>([name]);
    implied.set(name, out);
    const stack = [...(includedBy.get(name) ?? [])];
    while (stack.length) {
      const r = stack.pop() as string;
      if (out.has(r)) continue;
      out.add(r);
      stack.push(...(includedBy.get(r) ?? []));
    }
    return out;
  };
  return holders;
}

/** A rule's action patterns (`orders:read`, `orders:*`, `*`, any `*` glob) as a matcher; undefined = any. */
export function actionMatcher(patterns: readonly string[]): ((a: string) => boolean) | undefined {
  if (patterns.includes('*')) return undefined;
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  const globs = patterns.filter((p) => p.includes('*')).map(globToRegExp);
  if (globs.length === 0) return (a) => exact.has(a);
  return (a) => exact.has(a) || globs.some((g) => g.test(a));
}

function globToRegExp(p: string): RegExp {
  return new RegExp(`^${p.split('*').map(escapeRe).join('.*')}$`);
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** `/orders/:id` → a RegExp over canonical paths (`:name` = one segment, final `*` = the rest). */
function pathToRegExp(pattern: string): RegExp {
  let rest = false;
  let p = pattern;
  if (p.endsWith('/*')) {
    rest = true;
    p = p.slice(0, -2);
  } else if (p.endsWith('*')) {
    rest = true;
    p = p.slice(0, -1);
  }
  const body = p
    .split('/')
    .map((seg) => (seg.startsWith(':') ? '[^/]+' : escapeRe(seg)))
    .join('/');
  return new RegExp(`^${body}${rest ? '(?:/.*)?' : '/?'}$`);
}

/** `spiffe://td/ns/*` patterns: `*` is one segment, a final `/**` any number of segments. */
function spiffeMatcher(patterns: readonly string[]): (id: string) => boolean {
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  const res = patterns
    .filter((p) => p.includes('*'))
    .map((p) => {
      const deep = p.endsWith('/**');
      const base = deep ? p.slice(0, -3) : p;
      const body = base
        .split('/')
        .map((seg) => (seg === '*' ? '[^/]+' : escapeRe(seg)))
        .join('/');
      return new RegExp(`^${body}${deep ? '(?:/[^/]+)*' : ''}$`);
    });
  return (id) => exact.has(id) || res.some((r) => r.test(id));
}

function compileWho(
  rule: PolicyRuleConfig,
  implied: (role: string) => ReadonlySet<string>,
): ((p: PolicyPrincipal) => boolean) | undefined {
  const checks: ((p: PolicyPrincipal) => boolean)[] = [];
  if (rule.roles) {
    const set = new Set<string>();
    for (const r of rule.roles) for (const h of implied(r)) set.add(h);
    if (rule.roles.includes('*')) checks.push((p) => p.roles.length > 0);
    else
      checks.push((p) => {
        const roles = p.roles;
        for (let i = 0; i < roles.length; i++) if (set.has(roles[i] as string)) return true;
        return false;
      });
  }
  if (rule.users) {
    const set = new Set(rule.users);
    checks.push((p) => (p.kind ?? 'user') === 'user' && set.has(p.id));
  }
  if (rule.groups) {
    const set = new Set(rule.groups);
    checks.push((p) => (p.groups ?? []).some((g) => set.has(g)));
  }
  if (rule.services) {
    const m = spiffeMatcher(rule.services);
    checks.push((p) => p.kind === 'service' && p.spiffeId !== undefined && m(p.spiffeId));
  }
  if (checks.length === 0) return undefined;
  if (checks.length === 1) return checks[0];
  return (p) => checks.some((c) => c(p));
}

function attributeReader(
  pick: (i: PolicyInput) => Readonly<Record<string, unknown>> | undefined,
  name: string,
): (i: PolicyInput) => unknown {
  return (i) => {
    const a = pick(i);
    return a !== undefined && Object.hasOwn(a, name) ? a[name] : undefined;
  };
}

const now = (i: PolicyInput): number => i.context?.time ?? Date.now();

function builtins(entries: [string, string, (i: PolicyInput) => unknown][]): Map<string, FieldAccess> {
  return new Map(entries.map(([n, type, read]) => [n, { type, read: read as FieldAccess['read'] }]));
}

const PRINCIPAL_FIELDS = builtins([
  ['id', 'string', (i) => i.principal.id],
  ['type', 'string', (i) => i.principal.kind ?? 'user'],
  ['roles', 'list<string>', (i) => i.principal.roles],
  ['groups', 'list<string>', (i) => i.principal.groups ?? []],
  ['spiffeId', 'string', (i) => i.principal.spiffeId],
  ['issuer', 'string', (i) => i.principal.issuer],
]);
// The config refuses these names as an external issuer's claim attributes: the two lists must not drift.
if (
  PRINCIPAL_FIELDS.size !== PRINCIPAL_BUILTINS.size ||
  ![...PRINCIPAL_FIELDS.keys()].every((n) => PRINCIPAL_BUILTINS.has(n))
)
  throw new Error('policy engine: built-in principal fields differ from config PRINCIPAL_BUILTINS');
const RESOURCE_FIELDS = builtins([
  ['type', 'string', (i) => i.resource.type],
  ['id', 'string', (i) => i.resource.id],
  ['route', 'string', (i) => i.resource.route],
  ['path', 'string', (i) => i.resource.path],
  ['params', 'map<string, string>', (i) => i.resource.params ?? {}],
]);
/** The device the request proved it comes from (`device.present` false when none). */
const DEVICE_FIELDS = builtins([
  ['present', 'bool', (i) => i.device !== undefined],
  ['id', 'string', (i) => i.device?.id ?? ''],
  ['trusted', 'bool', (i) => i.device?.trusted === true],
  ['compliant', 'bool', (i) => i.device?.compliant === true],
  ['platform', 'string', (i) => i.device?.platform ?? ''],
  ['via', 'string', (i) => i.device?.via ?? ''],
  ['posture', 'map<string, dyn>', (i) => i.device?.posture ?? {}],
]);
const REQUEST_FIELDS = builtins([
  ['method', 'string', (i) => i.request?.method],
  ['path', 'string', (i) => i.request?.path],
  ['host', 'string', (i) => i.request?.host],
]);
const CONTEXT_FIELDS = builtins([
  ['time', 'int', (i) => Math.floor(now(i) / 1000)],
  ['hour', 'int', (i) => i.context?.hour ?? Math.floor(now(i) / 3_600_000) % 24],
  ['weekday', 'int', (i) => i.context?.weekday ?? (Math.floor(now(i) / 86_400_000) + 4) % 7],
  ['ip', 'string', (i) => i.context?.ip],
  ['geo', 'map<string, dyn>', (i) => i.context?.geo],
  ['device', 'map<string, dyn>', (i) => i.context?.device],
  ['risk', 'map<string, dyn>', (i) => i.context?.risk],
  [
    'authentication',
    'map<string, dyn>',
    (i) => {
      const a = i.context?.authentication;
      const out: Record<string, unknown> = { amr: a?.amr ?? [] };
      if (a?.acr !== undefined) out.acr = a.acr;
      if (a?.authTime !== undefined) out.auth_time = Math.floor(a.authTime / 1000);
      return out;
    },
  ],
]);

function objectSpec(
  builtin: Map<string, FieldAccess>,
  declared: Readonly<Record<string, string>> | undefined,
  pick: (i: PolicyInput) => Readonly<Record<string, unknown>> | undefined,
  label: string,
  issues: string[],
  provided: readonly string[] = [],
): VariableSpec {
  const fields = new Map(builtin);
  for (const [name, type] of Object.entries(declared ?? {})) {
    if (builtin.has(name)) {
      issues.push(`${label}.${name} is built in and cannot be declared as an attribute`);
      continue;
    }
    fields.set(name, { type, read: attributeReader(pick, name) as FieldAccess['read'] });
  }
  // Attributes an identity source provides, untyped unless the schema typed them above (built-in names
  // are refused where they are configured).
  for (const name of provided) {
    if (!fields.has(name))
      fields.set(name, { type: 'dyn', read: attributeReader(pick, name) as FieldAccess['read'] });
  }
  return declared
    ? { fields }
    : { fields, open: (name) => ({ type: 'dyn', read: attributeReader(pick, name) as FieldAccess['read'] }) };
}

/** The CEL scope a rule's condition is checked in: resource attributes narrow to the rule's types. */
function scopeFor(rule: PolicyRuleConfig, spec: PolicySpec, problems: string[]): CelScope {
  const s = spec.schema;
  let resourceDecl: Record<string, string> | undefined;
  if (s.resource || s.resourceTypes) {
    resourceDecl = { ...(s.resource ?? {}) };
    const types = rule.types ?? Object.keys(s.resourceTypes ?? {});
    for (const t of types) {
      const attrs = s.resourceTypes?.[t];
      if (!attrs) continue;
      for (const [k, v] of Object.entries(attrs)) {
        const prev = resourceDecl[k];
        if (prev !== undefined && prev !== v) {
          // Two types declare the attribute differently: the condition sees it as dyn.
          resourceDecl[k] = 'dyn';
        } else resourceDecl[k] = v;
      }
    }
  }
  return {
    objects: new Map([
      [
        'principal',
        objectSpec(
          PRINCIPAL_FIELDS,
          s.principal,
          (i) => i.principal.attributes,
          'principal',
          problems,
          spec.principalAttributes,
        ),
      ],
      [
        'resource',
        objectSpec(RESOURCE_FIELDS, resourceDecl, (i) => i.resource.attributes, 'resource', problems),
      ],
      ['request', { fields: REQUEST_FIELDS }],
      ['device', { fields: DEVICE_FIELDS }],
      ['context', objectSpec(CONTEXT_FIELDS, s.context, (i) => i.context?.attributes, 'context', problems)],
    ]),
    scalars: new Map([['action', { type: 'string', read: ((i: PolicyInput) => i.action) as never }]]),
  };
}

function compileRule(
  src: RuleSource,
  order: number,
  spec: PolicySpec,
  implied: (role: string) => ReadonlySet<string>,
  routesById: Map<string, RouteConfig>,
  issues: ConfigIssue[],
  warnings: PolicyWarning[],
): CompiledRule | undefined {
  const { rule } = src;
  if (spec.routes) {
    rule.routes?.forEach((r, j) => {
      if (!routesById.has(r)) issues.push(issue(src, ['routes', j], `unknown route "${r}"`));
    });
  }
  let cond: CompiledCondition<PolicyInput> | undefined;
  if (rule.when !== undefined) {
    const problems: string[] = [];
    const scope = scopeFor(rule, spec, problems);
    for (const p of problems) issues.push(issue(src, [], p));
    try {
      cond = compileCondition<PolicyInput>(rule.when, scope);
    } catch (err) {
      if (!(err instanceof CelCompileError)) throw err;
      issues.push(issue(src, ['when'], `${err.message} (at character ${err.offset + 1} of the condition)`));
      return undefined;
    }
    for (const u of cond.undeclared) {
      const at = src.locate(['when']);
      warnings.push({
        ...at,
        ruleId: rule.id,
        message: `condition reads ${u}, which the schema does not declare`,
      });
    }
  }
  let obligation: Obligation | undefined;
  if (rule.require) {
    if (rule.effect === 'deny') issues.push(issue(src, ['require'], 'only an allow rule can carry require'));
    const acr = rule.require.acr;
    const acrIndex = acr === undefined ? -1 : spec.acrLevels.indexOf(acr);
    if (acr !== undefined && acrIndex < 0)
      issues.push(
        issue(src, ['require', 'acr'], `unknown acr "${acr}" (levels: ${spec.acrLevels.join(', ')})`),
      );
    obligation = {
      mfa: rule.require.mfa === true,
      maxAge: rule.require.maxAge,
      acr: acrIndex,
      acrName: acr,
    };
  }
  const deny = rule.effect === 'deny';
  return {
    id: rule.id,
    order,
    deny,
    source: src,
    who: compileWho(rule, implied),
    action: rule.actions ? actionMatcher(rule.actions) : undefined,
    methods: rule.methods ? new Set(rule.methods) : undefined,
    routes: rule.routes ? new Set(rule.routes) : undefined,
    types: rule.types ? new Set(rule.types) : undefined,
    paths: rule.paths?.map(pathToRegExp),
    cond,
    condEval: cond && cond.constant !== true ? cond.eval : undefined,
    obligation,
    single: Object.freeze({
      outcome: deny ? 'deny' : 'allow',
      ruleIds: Object.freeze([rule.id]),
      reason: `${deny ? 'denied' : 'allowed'} by rule ${rule.id}`,
    }),
  };
}

function staticChecks(
  rules: readonly CompiledRule[],
  spec: PolicySpec,
  routesById: Map<string, RouteConfig>,
  warnings: PolicyWarning[],
): void {
  const declaredRoles = new Set(spec.roles.map((r) => r.name));
  const warn = (r: CompiledRule, field: (string | number)[], message: string): void => {
    if (!r.source) return;
    warnings.push({ ...r.source.locate(field), ruleId: r.id, message });
  };
  for (const r of rules) {
    const rule = r.source?.rule;
    if (!rule) continue;
    if (r.cond?.constant === false) warn(r, ['when'], 'can never match: its condition is always false');
    if (rule.routes && rule.methods) {
      const reachable = rule.routes.some((id) => {
        const route = routesById.get(id);
        return (
          !route ||
          rule.methods?.some(
            (m) => route.methods.includes(m) || (m === 'GET' && route.methods.includes('HEAD')),
          )
        );
      });
      if (!reachable) warn(r, ['methods'], 'can never match: none of its methods is served by its routes');
    }
    if (declaredRoles.size > 0) {
      rule.roles?.forEach((role, j) => {
        if (role !== '*' && !declaredRoles.has(role))
          warn(
            r,
            ['roles', j],
            `role "${role}" is not declared in policy.roles (a typo would make this rule never match)`,
          );
      });
    }
    const types = spec.schema.resourceTypes;
    if (types) {
      rule.types?.forEach((t, j) => {
        if (!Object.hasOwn(types, t))
          warn(r, ['types', j], `resource type "${t}" is not declared in policy.schema.resourceTypes`);
      });
    }
  }
  // Allows shadowed by an unconditional deny at least as broad: they can never take effect.
  const broadDenies = rules.filter((d) => d.deny && (!d.cond || d.cond.constant === true));
  for (const a of rules) {
    if (a.deny || !a.source) continue;
    const d = broadDenies.find((x) => covers(x, a));
    if (d) warn(a, [], `shadowed: deny rule ${d.id} always matches wherever this rule does`);
  }
}

function covers(d: CompiledRule, a: CompiledRule): boolean {
  const dr = d.source?.rule;
  const ar = a.source?.rule;
  if (!dr || !ar) return false;
  const subset = (outer: readonly string[] | undefined, inner: readonly string[] | undefined): boolean =>
    outer === undefined || (inner?.every((x) => outer.includes(x)) ?? false);
  const whoD = [dr.roles, dr.groups, dr.users, dr.services];
  if (whoD.some((w) => w !== undefined)) {
    // The deny names some principals: the allow must name only principals the deny names too.
    const whoA = [ar.roles, ar.groups, ar.users, ar.services];
    if (whoA.every((w) => w === undefined)) return false;
    for (let k = 0; k < 4; k++) {
      const inner = whoA[k];
      if (inner === undefined) continue;
      const outer = whoD[k];
      if (outer === undefined) return false;
      if (k === 0) {
        // A deny on a role also hits every role that includes it: compare expanded sets.
        if (!inner.every((r) => (d.who ? d.who({ id: '', roles: [r] }) : true))) return false;
      } else if (!subset(outer, inner)) return false;
    }
  }
  const actionsCovered =
    dr.actions === undefined ||
    dr.actions.includes('*') ||
    (ar.actions?.every((x) => !x.includes('*') && (d.action ? d.action(x) : true)) ?? false);
  return (
    actionsCovered &&
    subset(dr.methods, ar.methods) &&
    subset(dr.routes, ar.routes) &&
    subset(dr.types, ar.types) &&
    (dr.paths === undefined || (ar.paths?.every((p) => dr.paths?.includes(p)) ?? false))
  );
}

class Engine implements CompiledPolicy {
  readonly size: number;
  /** route → type → action → method → bucket, filled on first use (bounded). */
  private readonly memo = new Map<string, Map<string, Map<string, Map<string, Bucket>>>>();
  private memoSize = 0;
  private readonly slots: unknown[] = [];

  constructor(
    private readonly rules: readonly CompiledRule[],
    private readonly acrLevels: readonly string[],
    readonly warnings: readonly PolicyWarning[],
  ) {
    this.size = rules.length;
  }

  decide(input: PolicyInput): Decision {
    const bucket = this.bucket(input);
    const slots = this.slots;
    let denied: string[] | undefined;
    let first: CompiledRule | undefined;
    let errors: { ruleId: string; message: string }[] | undefined;
    const denies = bucket.denies;
    for (let k = 0; k < denies.length; k++) {
      const r = denies[k] as CompiledRule;
      if (!this.applies(r, input)) continue;
      if (r.condEval !== undefined) {
        try {
          const v = r.condEval(input, slots);
          if (v === false) continue;
          // Fail closed: a deny whose condition is not a bool (a dyn attribute holding 1 or "yes") matches.
          if (v !== true)
            errors = append(errors, { ruleId: r.id, message: `condition is not a bool (${typeof v})` });
        } catch (err) {
          // Fail closed: a deny rule whose condition cannot be evaluated counts as matching.
          errors = append(errors, { ruleId: r.id, message: (err as Error).message });
        }
      }
      if (first === undefined) first = r;
      else denied = append(denied ?? [first.id], r.id);
    }
    if (first !== undefined) {
      if (denied === undefined && errors === undefined) return first.single;
      const ids = denied ?? [first.id];
      return {
        outcome: 'deny',
        ruleIds: ids,
        reason: `denied by rule${ids.length > 1 ? 's' : ''} ${ids.join(', ')}`,
        ...(errors ? { errors } : {}),
      };
    }
    let allowed: string[] | undefined;
    let firstAllow: CompiledRule | undefined;
    let challenged: CompiledRule[] | undefined;
    const allows = bucket.allows;
    for (let k = 0; k < allows.length; k++) {
      const r = allows[k] as CompiledRule;
      if (!this.applies(r, input)) continue;
      if (r.condEval !== undefined) {
        try {
          if (r.condEval(input, slots) !== true) continue;
        } catch (err) {
          errors = append(errors, { ruleId: r.id, message: (err as Error).message });
          continue;
        }
      }
      if (r.obligation !== undefined && this.unmet(r.obligation, input) !== undefined) {
        challenged = append(challenged, r);
        continue;
      }
      if (firstAllow === undefined) firstAllow = r;
      else allowed = append(allowed ?? [firstAllow.id], r.id);
    }
    if (firstAllow !== undefined) {
      if (allowed === undefined && errors === undefined) return firstAllow.single;
      const ids = allowed ?? [firstAllow.id];
      return {
        outcome: 'allow',
        ruleIds: ids,
        reason: `allowed by rule${ids.length > 1 ? 's' : ''} ${ids.join(', ')}`,
        ...(errors ? { errors } : {}),
      };
    }
    if (challenged !== undefined) return this.challenge(challenged, input, errors);
    return errors === undefined ? NO_RULE : { ...NO_RULE, errors };
  }

  explain(input: PolicyInput): Explanation {
    const decision = this.decide(input);
    const bucket = this.bucket(input);
    const traces: RuleTrace[] = [];
    for (const r of [...bucket.denies, ...bucket.allows].sort((x, y) => x.order - y.order)) {
      const why = this.mismatch(r, input);
      if (why !== undefined) {
        traces.push({ id: r.id, effect: r.deny ? 'deny' : 'allow', applies: false, why, matched: false });
        continue;
      }
      let matched = true;
      let error: string | undefined;
      let condition: ConditionTrace | undefined;
      if (r.cond) {
        condition = traceCondition(r.cond.explain, input);
        try {
          const v = r.cond.eval(input, []);
          matched = v === true || (r.deny && v !== false);
          if (typeof v !== 'boolean') error = `condition is not a bool (${typeof v})`;
        } catch (err) {
          error = (err as Error).message;
          matched = r.deny;
        }
      }
      const unmet = matched && r.obligation ? this.unmet(r.obligation, input) : undefined;
      traces.push({
        id: r.id,
        effect: r.deny ? 'deny' : 'allow',
        applies: true,
        matched,
        ...(condition ? { condition } : {}),
        ...(unmet ? { unmet } : {}),
        ...(error ? { error } : {}),
      });
    }
    return { decision, rules: traces };
  }

  private applies(r: CompiledRule, input: PolicyInput): boolean {
    if (r.who !== undefined && !r.who(input.principal)) return false;
    if (r.paths !== undefined) {
      const path = input.resource.path ?? input.request?.path;
      if (path === undefined || !r.paths.some((p) => p.test(path))) return false;
    }
    return true;
  }

  /** Why a rule does not apply (for explanations), or undefined when it does. */
  private mismatch(r: CompiledRule, input: PolicyInput): string | undefined {
    if (r.who !== undefined && !r.who(input.principal)) return 'principal not named by the rule';
    if (!this.applies(r, input)) return 'path does not match';
    return undefined;
  }

  private unmet(o: Obligation, input: PolicyInput): Requirements | undefined {
    const auth = input.context?.authentication;
    let out: { mfa?: boolean; maxAge?: number; acr?: string } | undefined;
    if (o.mfa && !(auth?.amr ?? []).some((m) => MFA_METHODS.has(m))) out = { ...out, mfa: true };
    if (o.maxAge !== undefined) {
      const t = auth?.authTime;
      if (t === undefined || now(input) - t > o.maxAge) out = { ...out, maxAge: o.maxAge };
    }
    if (o.acr >= 0) {
      const have = auth?.acr === undefined ? -1 : this.acrLevels.indexOf(auth.acr);
      if (have < o.acr) out = { ...out, acr: o.acrName as string };
    }
    return out;
  }

  private challenge(
    rules: CompiledRule[],
    input: PolicyInput,
    errors: { ruleId: string; message: string }[] | undefined,
  ): Decision {
    // Ask for the least: the rule with the fewest unmet requirements (the first on a tie).
    let best: Requirements | undefined;
    let bestCount = Number.POSITIVE_INFINITY;
    for (const r of rules) {
      const u = this.unmet(r.obligation as Obligation, input) as Requirements;
      const n = Object.keys(u).length;
      if (n < bestCount) {
        best = u;
        bestCount = n;
      }
    }
    const req = best as Requirements;
    const parts = [
      req.mfa ? 'multi-factor authentication' : '',
      req.maxAge !== undefined ? `authentication within ${Math.round(req.maxAge / 1000)}s` : '',
      req.acr ? `acr ${req.acr}` : '',
    ].filter(Boolean);
    return {
      outcome: 'challenge',
      ruleIds: rules.map((r) => r.id),
      reason: `step-up required: ${parts.join(', ')}`,
      requirements: req,
      ...(errors ? { errors } : {}),
    };
  }

  /** The rules that can apply to this (route, type, action, method), computed once per combination. */
  private bucket(input: PolicyInput): Bucket {
    const route = input.resource.route ?? '';
    const type = input.resource.type ?? '';
    const action = input.action;
    const method = input.request?.method ?? action;
    let byType = this.memo.get(route);
    if (byType === undefined) {
      if (this.memoSize >= MEMO_LIMIT) return this.build(route, type, action, method);
      byType = new Map();
      this.memo.set(route, byType);
    }
    let byAction = byType.get(type);
    if (byAction === undefined) {
      if (this.memoSize >= MEMO_LIMIT) return this.build(route, type, action, method);
      byAction = new Map();
      byType.set(type, byAction);
    }
    let byMethod = byAction.get(action);
    if (byMethod === undefined) {
      if (this.memoSize >= MEMO_LIMIT) return this.build(route, type, action, method);
      byMethod = new Map();
      byAction.set(action, byMethod);
    }
    let b = byMethod.get(method);
    if (b === undefined) {
      b = this.build(route, type, action, method);
      if (this.memoSize < MEMO_LIMIT) {
        byMethod.set(method, b);
        this.memoSize++;
      }
    }
    return b;
  }

  private build(route: string, type: string, action: string, method: string): Bucket {
    const fits = (r: CompiledRule): boolean =>
      (r.routes === undefined || r.routes.has(route)) &&
      (r.types === undefined || r.types.has(type)) &&
      (r.action === undefined || r.action(action)) &&
      (r.methods === undefined || r.methods.has(method) || (method === 'HEAD' && r.methods.has('GET'))) &&
      r.cond?.constant !== false;
    const applicable = this.rules.filter(fits);
    const denies = applicable.filter((r) => r.deny);
    const allows = applicable.filter((r) => !r.deny);
    return { denies: denies.length ? denies : EMPTY, allows: allows.length ? allows : EMPTY };
  }
}

function append<T>(list: T[] | undefined, item: T): T[] {
  if (list === undefined) return [item];
  list.push(item);
  return list;
}

function traceCondition(node: ExplainNode<PolicyInput>, input: PolicyInput): ConditionTrace {
  let value: unknown;
  try {
    value = node.eval(input, []);
  } catch (err) {
    value = { error: (err as Error).message };
  }
  return { expression: node.text, value, parts: node.children.map((c) => traceCondition(c, input)) };
}

/** The spec of a policy given in code (library use): rules and roles without file locations. */
export function policySpec(
  doc: Pick<PolicyConfig, 'rules' | 'roles'> & Partial<Pick<PolicyConfig, 'schema' | 'acrLevels'>>,
  routes?: readonly RouteConfig[],
): PolicySpec {
  const nowhere = (): SourceLocation => ({ file: '(object)', line: 0, column: 0 });
  return {
    rules: doc.rules.map((rule) => ({ rule, locate: nowhere })),
    roles: Object.entries(doc.roles).map(([name, r]) => ({ name, ...r, locate: nowhere })),
    schema: doc.schema ?? {},
    acrLevels: doc.acrLevels ?? ['aal1', 'aal2', 'aal3'],
    ...(routes ? { routes } : {}),
  };
}
