export {
  ASSERTION_HEADER,
  ASSERTION_TYP,
  type AssertionClaims,
  type AssertionSigner,
  createAssertionSigner,
} from './assertion.js';
export { type CanonicalTarget, canonicalizeTarget } from './canonical-target.js';
export type { Gateway, RequestContext } from './context.js';
export { SECURITY_HEADERS } from './headers.js';
export { MessageSignatureVerifier, SIGNATURE_ISSUER_ID } from './message-signatures.js';
export { createRedirectServer } from './redirect.js';
export { requestSchemaCompiler } from './request-schema.js';
export { type CompiledRoute, canonicalHost, type RouteMatch, RouteTable } from './route-table.js';
export { createGatewayServer } from './server.js';
export { type GatewayTls, gatewaySecureContext, readGatewayTls, watchFiles } from './tls-files.js';
export { compileTrustedProxies } from './trusted-proxies.js';
export {
  type AssertionSettings,
  closeTunnels,
  closeUpstreams,
  createUpstreams,
  type TunnelRegistry,
  tunnelRegistry,
  type Upstream,
} from './upstream.js';
