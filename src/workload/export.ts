import type { Config } from '../config/index.js';
import { actionMatcher } from '../policy/index.js';

/** A Kubernetes object as the exports produce it (plain JSON, stable key order). */
export type Manifest = Record<string, unknown>;

export interface MeshExport {
  readonly manifests: Manifest[];
  /** What could not be expressed in the mesh and was left out (the gateway still enforces it). */
  readonly warnings: string[];
}

type Rule = Config['policy']['rules'][number];

interface Workload {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly spiffeId: string;
  readonly port?: number | undefined;
}

/** One allowed (or denied) call: who may call which workload with which methods on which paths. */
interface Edge {
  readonly ruleId: string;
  readonly effect: 'allow' | 'deny';
  readonly target: Workload;
  readonly principals: string[];
  readonly methods: string[];
  readonly paths: string[];
}

const LABEL = { 'app.kubernetes.io/managed-by': 'portcullis' };

/**
 * A SPIFFE ID pattern as Istio principals (`td/ns/a/sa/b`; Istio matches `*` only as a whole prefix or
 * suffix). For an allow the result must never match more than the pattern: an exact ID, or a final
 * `*` in the service-account place of an Istio identity (`…/ns/<ns>/sa/*`, which cannot be deeper). For
 * a deny it must never match less: a `*` anywhere widens to the prefix before it, and `/**` also covers
 * the ID it starts from. Undefined: not expressible for an allow.
 */
function principalsOf(pattern: string, effect: 'allow' | 'deny'): string[] | undefined {
  const bare = pattern.slice('spiffe://'.length);
  const deep = bare.endsWith('/**');
  const base = deep ? bare.slice(0, -3) : bare;
  const star = base.indexOf('*');
  if (effect === 'deny') {
    if (star !== -1) return [`${base.slice(0, base.lastIndexOf('/', star) + 1)}*`];
    return deep ? [base, `${base}/*`] : [base];
  }
  // `/**` = anything below: exactly Istio's prefix match (which leaves out the ID itself: narrower).
  if (deep) return star === -1 ? [`${base}/*`] : undefined;
  if (star === -1) return [base];
  return /^[^/*]+\/ns\/[a-z0-9][-a-z0-9]*\/sa\/\*$/.test(base) ? [base] : undefined;
}

/** A route path pattern as an Istio path template (1.22+): `:param` → `{*}`, a final `*` → `{**}`. */
function istioPath(pattern: string): string {
  const rest = pattern.endsWith('*');
  const p = rest ? pattern.slice(0, -1).replace(/\/$/, '') : pattern;
  const segments = p.split('/').map((s) => (s.startsWith(':') ? '{*}' : s));
  return `${segments.join('/')}${rest ? '/{**}' : ''}` || '/';
}

const withHead = (methods: readonly string[]) =>
  methods.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m]));

const sorted = <T>(xs: Iterable<T>): T[] => [...new Set(xs)].sort();

/** Kubernetes names: lower case, `_` → `-`, at most 63 characters. */
const k8sName = (s: string) => s.toLowerCase().replace(/_/g, '-').slice(0, 63);

/**
 * The service graph of the policy, for the mesh: every rule naming `services` becomes edges from those
 * SPIFFE IDs to the upstream workloads of its routes, with the methods and paths it allows; a deny that
 * names nobody in particular applies to every caller; the gateway may call each upstream on its routes
 * (user traffic, already authorized by Portcullis). The mesh never allows more than the policy: allows
 * it cannot express exactly (conditions, obligations, resource types, paths narrower than the route,
 * wildcards inside an ID) are left out with a warning; denies are widened rather than dropped.
 */
function serviceGraph(
  config: Config,
  rules: readonly Rule[],
): { edges: Edge[]; workloads: Workload[]; warnings: string[] } {
  const warnings: string[] = [];
  const byUpstream = new Map<string, Workload>();
  for (const name of Object.keys(config.upstreams).sort()) {
    const u = config.upstreams[name];
    if (!u?.kubernetes) continue;
    const spiffeId = u.kubernetes.spiffeId ?? u.mtls?.spiffeId;
    if (!spiffeId) {
      warnings.push(`upstream ${name}: no SPIFFE ID (kubernetes.spiffeId or mtls.spiffeId); not exported`);
      continue;
    }
    byUpstream.set(name, {
      name,
      namespace: u.kubernetes.namespace,
      labels: u.kubernetes.labels,
      spiffeId,
      port: u.kubernetes.port,
    });
  }
  const routes = config.routes.filter((r) => byUpstream.has(r.upstream));
  const edges: Edge[] = [];
  const gw = config.export.gateway;
  if (gw) {
    // Every route, public ones too: the gateway forwards what it let through.
    for (const r of routes)
      edges.push({
        ruleId: `gateway:${r.id}`,
        effect: 'allow',
        target: byUpstream.get(r.upstream) as Workload,
        principals: [gw.spiffeId.slice('spiffe://'.length)],
        methods: sorted(withHead(r.methods)),
        paths: [istioPath(r.path)],
      });
  } else warnings.push('export.gateway is not set: no policy lets the gateway reach the upstreams');

  for (const rule of rules) {
    const deny = rule.effect === 'deny';
    const aboutPeople = rule.roles || rule.groups || rule.users;
    // An allow reaches services only through `services`; a deny reaches them through `services`, or
    // when it names nobody in particular (then it applies to every caller).
    if (!rule.services && (!deny || aboutPeople)) continue;
    if (!deny && (rule.when !== undefined || rule.require || rule.types)) {
      warnings.push(
        `rule ${rule.id}: ${rule.when !== undefined ? 'a condition (when)' : rule.require ? 'an obligation (require)' : 'resource types'} cannot be expressed in the mesh; left out`,
      );
      continue;
    }
    if (deny && (rule.when !== undefined || rule.types))
      warnings.push(`rule ${rule.id}: exported without its condition or types (denies more in the mesh)`);
    let principals: string[] | undefined = [];
    if (rule.services) {
      for (const svc of rule.services) {
        const p = principalsOf(svc, rule.effect);
        if (p === undefined)
          warnings.push(`rule ${rule.id}: ${svc} cannot be an Istio principal exactly; left out`);
        else principals.push(...p);
      }
      if (principals.length === 0) continue;
      principals = sorted(principals);
    } else principals = undefined; // every caller
    const matchAction = rule.actions ? actionMatcher(rule.actions) : undefined;
    const targets = rule.routes ? routes.filter((r) => rule.routes?.includes(r.id)) : routes;
    for (const r of targets) {
      let methods = withHead(r.methods);
      if (rule.methods) {
        const allowed = new Set(withHead(rule.methods));
        methods = methods.filter((m) => allowed.has(m));
      }
      if (matchAction) {
        const named = (m: string) =>
          (r.actions as Record<string, string> | undefined)?.[m] ??
          (m === 'HEAD' ? r.actions?.GET : undefined) ??
          m;
        methods = methods.filter((m) => matchAction(named(m)));
      }
      if (methods.length === 0) continue;
      let paths = [istioPath(r.path)];
      if (rule.paths) {
        // An allow's paths must be the route's own (anything else could be wider in the mesh); a
        // deny's paths are exported as they are (wider is safe).
        if (deny) paths = sorted(rule.paths.map(istioPath));
        else if (!rule.paths.every((p) => p === r.path)) {
          warnings.push(
            `rule ${rule.id}: paths narrower than route ${r.id} cannot be expressed exactly; left out`,
          );
          continue;
        }
      }
      edges.push({
        ruleId: rule.id,
        effect: rule.effect,
        target: byUpstream.get(r.upstream) as Workload,
        principals: principals ?? [],
        methods: sorted(methods),
        paths,
      });
    }
  }
  return { edges, workloads: [...byUpstream.values()], warnings };
}

/** Two manifests with one kind, namespace and name would overwrite each other when applied: refuse. */
function unique(manifests: Manifest[]): Manifest[] {
  const seen = new Set<string>();
  for (const m of manifests) {
    const md = m.metadata as { name: string; namespace: string };
    const key = `${m.kind}/${md.namespace}/${md.name}`;
    if (seen.has(key)) throw new Error(`two exported objects would both be ${key}: rename an upstream`);
    seen.add(key);
  }
  return manifests;
}

const meta = (name: string, namespace: string) => ({ name, namespace, labels: LABEL });

/**
 * `portcullis export istio`: per namespace a STRICT PeerAuthentication and an empty ALLOW-nothing
 * AuthorizationPolicy (deny by default); per upstream workload one ALLOW policy from the service graph
 * (principals from SPIFFE IDs, methods, paths) and one DENY policy for explicit denies; and a
 * RequestAuthentication so the workload's sidecar checks our identity assertion (issuer and JWKS).
 * Deterministic: the same config gives byte-identical output.
 */
export function exportIstio(config: Config, rules: readonly Rule[]): MeshExport {
  const { edges, workloads, warnings } = serviceGraph(config, rules);
  const namespaces = sorted([
    ...workloads.map((w) => w.namespace),
    ...(config.export.gateway ? [config.export.gateway.namespace] : []),
  ]);
  const manifests: Manifest[] = [];
  for (const ns of namespaces) {
    manifests.push({
      apiVersion: 'security.istio.io/v1beta1',
      kind: 'PeerAuthentication',
      metadata: meta('default', ns),
      spec: { mtls: { mode: 'STRICT' } },
    });
    // An ALLOW policy with no rules matches nothing: everything not allowed below is denied.
    manifests.push({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: meta('portcullis-deny-by-default', ns),
      spec: {},
    });
  }
  // The gateway is the front door: anyone may reach it (it authenticates and authorizes every request).
  const gw = config.export.gateway;
  if (gw)
    manifests.push({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: meta('portcullis-gateway-allow', gw.namespace),
      spec: { selector: { matchLabels: gw.labels }, action: 'ALLOW', rules: [{}] },
    });
  const issuer = config.identity.issuer.replace(/\/$/, '');
  for (const w of workloads) {
    const mine = edges.filter((e) => e.target === w);
    for (const effect of ['allow', 'deny'] as const) {
      const rules = mine
        .filter((e) => e.effect === effect)
        .map((e) => ({
          // A deny without principals applies to every caller.
          ...(e.principals.length ? { from: [{ source: { principals: e.principals } }] } : {}),
          to: [{ operation: { methods: e.methods, paths: e.paths } }],
        }));
      if (rules.length === 0) continue;
      manifests.push({
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: meta(`portcullis-upstream-${k8sName(w.name)}-${effect}`, w.namespace),
        spec: { selector: { matchLabels: w.labels }, action: effect.toUpperCase(), rules },
      });
    }
    const u = config.upstreams[w.name];
    if (u?.assertion.alg === 'ES256')
      manifests.push({
        apiVersion: 'security.istio.io/v1',
        kind: 'RequestAuthentication',
        metadata: meta(`portcullis-upstream-${k8sName(w.name)}`, w.namespace),
        spec: {
          selector: { matchLabels: w.labels },
          jwtRules: [
            {
              issuer: config.identity.issuer,
              jwksUri: `${issuer}/.well-known/jwks.json`,
              audiences: [u.audience ?? w.name],
              fromHeaders: [{ name: 'x-portcullis-assertion' }],
              forwardOriginalToken: true,
            },
          ],
        },
      });
    else
      warnings.push(
        `upstream ${w.name}: HS256 assertions cannot be checked by the mesh; no RequestAuthentication`,
      );
  }
  return { manifests: unique(manifests), warnings: sorted(warnings) };
}

/**
 * `portcullis export k8s`: NetworkPolicies, the L3/L4 half of microsegmentation — per namespace a
 * default deny of ingress; per workload ingress only from the gateway's pods and from the pods of
 * known workloads whose SPIFFE ID a rule lets call it (identity itself is the mesh's job).
 */
export function exportKubernetes(config: Config, rules: readonly Rule[]): MeshExport {
  const { edges, workloads, warnings } = serviceGraph(config, rules);
  const gw = config.export.gateway;
  const known: Workload[] = [...workloads, ...(gw ? [{ name: 'portcullis-gateway', ...gw }] : [])];
  const namespaces = sorted(known.map((w) => w.namespace));
  const manifests: Manifest[] = namespaces.map((ns) => ({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta('portcullis-default-deny-ingress', ns),
    spec: { podSelector: {}, policyTypes: ['Ingress'] },
  }));
  // The gateway is the front door: open to any client (on its port), it checks every request itself.
  if (gw)
    manifests.push({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: meta('portcullis-gateway-ingress', gw.namespace),
      spec: {
        podSelector: { matchLabels: gw.labels },
        policyTypes: ['Ingress'],
        ingress: [gw.port ? { ports: [{ protocol: 'TCP', port: gw.port }] } : {}],
      },
    });
  const matches = (principal: string, id: string) => {
    const bare = id.slice('spiffe://'.length);
    return principal.endsWith('*') ? bare.startsWith(principal.slice(0, -1)) : bare === principal;
  };
  for (const w of workloads) {
    const principals = sorted(
      edges.filter((e) => e.target === w && e.effect === 'allow').flatMap((e) => e.principals),
    );
    const sources = known
      .filter((src) => src !== w && principals.some((p) => matches(p, src.spiffeId)))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    // Callers that are no known workload: by their Istio-style ID's namespace (`<td>/ns/<ns>/…`), the
    // whole namespace (NetworkPolicy cannot select by service account; the mesh narrows it).
    const namespacesOnly = sorted(
      principals
        .filter((p) => !known.some((src) => matches(p, src.spiffeId)))
        .flatMap((p) => {
          const m = /^[^/]+\/ns\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\//.exec(p);
          if (!m) warnings.push(`workload ${w.name}: caller ${p} has no namespace; no NetworkPolicy peer`);
          return m ? [m[1] as string] : [];
        }),
    );
    if (sources.length === 0 && namespacesOnly.length === 0) continue;
    manifests.push({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: meta(`portcullis-upstream-${k8sName(w.name)}-ingress`, w.namespace),
      spec: {
        podSelector: { matchLabels: w.labels },
        policyTypes: ['Ingress'],
        ingress: [
          {
            from: [
              ...sources.map((src) => ({
                namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': src.namespace } },
                podSelector: { matchLabels: src.labels },
              })),
              ...namespacesOnly.map((ns) => ({
                namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } },
              })),
            ],
            ...(w.port ? { ports: [{ protocol: 'TCP', port: w.port }] } : {}),
          },
        ],
      },
    });
  }
  return { manifests: unique(manifests), warnings: sorted(warnings) };
}
