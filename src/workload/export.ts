import type { Config } from '../config/index.js';

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

/** `spiffe://td/ns/a/sa/b` → Istio's principal `td/ns/a/sa/b`; a final `*` or `/**` → a prefix match. */
function principalOf(pattern: string): string | undefined {
  const bare = pattern.slice('spiffe://'.length);
  const deep = bare.endsWith('/**');
  const base = deep ? bare.slice(0, -3) : bare;
  const segments = base.split('/');
  const last = segments.length - 1;
  // Istio matches `*` only as a whole prefix or suffix: a `*` anywhere else cannot be expressed.
  if (segments.some((s, i) => s.includes('*') && !(i === last && s === '*'))) return undefined;
  if (deep) return `${base}/*`;
  return base;
}

/** A route path pattern as an Istio path template (1.22+): `:param` → `{*}`, a final `*` → `{**}`. */
function istioPath(pattern: string): string {
  const rest = pattern.endsWith('*');
  const p = rest ? pattern.slice(0, -1).replace(/\/$/, '') : pattern;
  const segments = p.split('/').map((s) => (s.startsWith(':') ? '{*}' : s));
  return `${segments.join('/')}${rest ? '/{**}' : ''}` || '/';
}

/** A simple action glob (`orders:*`, `*`) against a named action. */
function actionMatches(pattern: string, action: string): boolean {
  if (pattern === '*' || pattern === action) return true;
  return pattern.endsWith(':*') && action.startsWith(pattern.slice(0, -1));
}

const sorted = <T>(xs: Iterable<T>): T[] => [...new Set(xs)].sort();

/**
 * The service graph of the policy, for the mesh: every rule naming `services` becomes edges from those
 * SPIFFE IDs to the upstream workloads of its routes, with the methods and paths it allows; the gateway
 * may call each upstream on its routes (user traffic, already authorized by Portcullis). What the mesh
 * cannot express is never widened: conditional allows are left out (with a warning), conditional denies
 * are exported without their condition (denying more, never less).
 */
function serviceGraph(
  config: Config,
  rules: readonly Rule[],
): { edges: Edge[]; workloads: Workload[]; warnings: string[] } {
  const warnings: string[] = [];
  const byUpstream = new Map<string, Workload>();
  for (const [name, u] of Object.entries(config.upstreams).sort(([a], [b]) => a.localeCompare(b))) {
    if (!u.kubernetes) continue;
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
  const routes = config.routes.filter((r) => byUpstream.has(r.upstream) && !r.public);
  const edges: Edge[] = [];
  const gw = config.export.gateway;
  if (gw) {
    for (const r of routes)
      edges.push({
        ruleId: `gateway:${r.id}`,
        effect: 'allow',
        target: byUpstream.get(r.upstream) as Workload,
        principals: [principalOf(gw.spiffeId) as string],
        methods: sorted(r.methods.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m]))),
        paths: [istioPath(r.path)],
      });
  } else warnings.push('export.gateway is not set: no policy lets the gateway reach the upstreams');

  for (const rule of rules) {
    if (!rule.services) continue;
    if (rule.when !== undefined && rule.effect === 'allow') {
      warnings.push(`rule ${rule.id}: a condition (when) cannot be expressed in the mesh; left out`);
      continue;
    }
    if (rule.when !== undefined)
      warnings.push(`rule ${rule.id}: exported without its condition (denies more in the mesh)`);
    if (rule.types || rule.require || rule.groups || rule.users || rule.roles)
      warnings.push(`rule ${rule.id}: only its services, routes, methods and paths are exported`);
    const principals: string[] = [];
    for (const s of rule.services) {
      const p = principalOf(s);
      if (p === undefined) warnings.push(`rule ${rule.id}: ${s} cannot be an Istio principal (a * inside)`);
      else principals.push(p);
    }
    if (principals.length === 0) continue;
    const targets = rule.routes ? routes.filter((r) => rule.routes?.includes(r.id)) : routes;
    for (const r of targets) {
      let methods: string[] = r.methods.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m]));
      if (rule.methods) {
        const allowed = new Set(rule.methods.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])));
        methods = methods.filter((m) => allowed.has(m));
      }
      if (rule.actions) {
        const named = (m: string) =>
          (m === 'HEAD' ? r.actions?.GET : r.actions?.[m as keyof typeof r.actions]) ?? m;
        methods = methods.filter((m) => rule.actions?.some((a) => actionMatches(a, named(m))));
      }
      if (methods.length === 0) continue;
      edges.push({
        ruleId: rule.id,
        effect: rule.effect,
        target: byUpstream.get(r.upstream) as Workload,
        principals: sorted(principals),
        methods: sorted(methods),
        paths: rule.paths ? sorted(rule.paths.map(istioPath)) : [istioPath(r.path)],
      });
    }
  }
  return { edges, workloads: [...byUpstream.values()], warnings };
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
          from: [{ source: { principals: e.principals } }],
          to: [{ operation: { methods: e.methods, paths: e.paths } }],
        }));
      if (rules.length === 0) continue;
      manifests.push({
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: meta(`portcullis-${w.name}-${effect}`, w.namespace),
        spec: { selector: { matchLabels: w.labels }, action: effect.toUpperCase(), rules },
      });
    }
    const u = config.upstreams[w.name];
    if (u?.assertion.alg === 'ES256')
      manifests.push({
        apiVersion: 'security.istio.io/v1',
        kind: 'RequestAuthentication',
        metadata: meta(`portcullis-${w.name}`, w.namespace),
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
  return { manifests, warnings: sorted(warnings) };
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
      .sort((a, b) => a.name.localeCompare(b.name));
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
      metadata: meta(`portcullis-${w.name}-ingress`, w.namespace),
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
  return { manifests, warnings: sorted(warnings) };
}
