export { parseDuration } from './duration.js';
export { ConfigError, type ConfigIssue } from './errors.js';
export { defineConfig, type LoadedConfig, loadConfigFile, parseConfigText } from './load.js';
export {
  type AlertSinkConfig,
  type Config,
  type ConfigInput,
  configSchema,
  type ExternalIssuerConfig,
  type HttpMethod,
  OWN_ISSUER_ID,
  type PolicyRuleConfig,
  type RouteConfig,
  type UpstreamConfig,
} from './schema.js';
