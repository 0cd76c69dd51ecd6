import { stringify } from 'yaml';
import { loadConfigFile } from '../../config/index.js';
import { policySpecOf } from '../../policy/index.js';
import { exportIstio, exportKubernetes } from '../../workload/export.js';
import { type CliIO, CONFIG_OPTION, type Command, configPath, parse, UsageError } from '../io.js';

const USAGE = `usage:
  portcullis export istio [--config FILE]
      PeerAuthentication (STRICT) and a deny-by-default AuthorizationPolicy per namespace, an
      AuthorizationPolicy per upstream workload from the policy's service graph (principals from SPIFFE
      IDs, methods, paths; Istio 1.22+ path templates), a RequestAuthentication for our assertion
  portcullis export k8s [--config FILE]
      NetworkPolicies: default-deny ingress per namespace, ingress per workload from its allowed callers
      upstreams need \`kubernetes: {namespace, labels, spiffeId?, port?}\`; \`export.gateway\` says where
      the gateway runs. Multi-document YAML on stdout (deterministic); what cannot be expressed on stderr.`;

/** `portcullis export istio|k8s`: the policy's service graph as mesh and cluster manifests. */
export const exportCommand: Command = async (argv, io: CliIO) => {
  const [kind, ...rest] = argv;
  if (kind !== 'istio' && kind !== 'k8s') throw new UsageError(USAGE);
  const { values } = parse(rest, CONFIG_OPTION, false);
  const loaded = loadConfigFile(configPath(values.config, io), io.env ?? process.env);
  const rules = policySpecOf(loaded).rules.map((r) => r.rule);
  const out = (kind === 'istio' ? exportIstio : exportKubernetes)(loaded.config, rules);
  io.stdout.write(out.manifests.map((m) => stringify(m, { lineWidth: 0 })).join('---\n'));
  for (const w of out.warnings) io.stderr.write(`warning: ${w}\n`);
  return 0;
};
