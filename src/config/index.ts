export { parseDuration } from './duration.js';
export { ConfigError, type ConfigIssue } from './errors.js';
export {
  defineConfig,
  type LoadedConfig,
  type Locate,
  loadConfigFile,
  parseConfigText,
  parseYamlDocument,
  type SourceLocation,
} from './load.js';
export {
  type AlertSinkConfig,
  type Config,
  type ConfigInput,
  configSchema,
  type ExternalIssuerConfig,
  type FederationProviderConfig,
  type HttpMethod,
  OWN_ISSUER_ID,
  type PolicyConfig,
  type PolicyDocument,
  type PolicyRuleConfig,
  PRINCIPAL_BUILTINS,
  policyDocument,
  type RouteConfig,
  type UpstreamConfig,
} from './schema.js';
