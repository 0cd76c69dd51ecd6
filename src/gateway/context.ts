import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AuditWriter } from '../audit/index.js';
import type { Config } from '../config/index.js';
import type { Clock, Logger, Metrics, Principal, RequestId } from '../core/index.js';
import type { DeviceService, DeviceState } from '../devices/index.js';
import type {
  ApiKeyService,
  BearerAuthenticator,
  BrowserSessions,
  ClientService,
  FederationService,
  IdentityService,
  KeyRing,
  TokenService,
} from '../identity/index.js';
import type { Decision, PolicyEngine } from '../policy/index.js';
import type { RateLimitStore } from '../ratelimit/index.js';
import type { RiskAssessment, RiskEngine } from '../risk/index.js';
import type { SpiffePeerAuthenticator } from '../workload/index.js';
import type { CanonicalTarget } from './canonical-target.js';
import type { CompiledRoute, RouteTable } from './route-table.js';
import type { Upstream } from './upstream.js';

/** Everything a request needs that was built at load: shared, never mutated per request. */
export interface Gateway {
  readonly config: Config;
  readonly routes: RouteTable<Upstream>;
  readonly tokens: TokenService;
  readonly bearer: BearerAuthenticator;
  readonly identity: IdentityService;
  readonly clients: ClientService;
  readonly federation: FederationService;
  /** The browser session cookie (sealed session reference) and the sign-in forms' CSRF tokens. */
  readonly browserSessions: BrowserSessions;
  /** Workloads' X.509-SVIDs as TLS client certificates (`gateway.tls.clientCaFile`), or undefined. */
  readonly spiffe: SpiffePeerAuthenticator | undefined;
  /** RFC 9421 message signatures on webhook routes (`routes[].signature`). */
  readonly signatures: import('./message-signatures.js').MessageSignatureVerifier;
  /** API keys (`X-API-Key`) on routes that list the `apikey` issuer. */
  readonly apiKeys: ApiKeyService;
  /** The device registry (DPoP proofs, device certificates, posture). */
  readonly devices: DeviceService | undefined;
  /** The risk engine (`risk.enabled`), or undefined. */
  readonly risk: RiskEngine | undefined;
  readonly keys: KeyRing;
  readonly policy: PolicyEngine;
  readonly rateLimits: RateLimitStore;
  /** Whether a peer address is one of `gateway.trustedProxies` (compiled at load). */
  readonly isTrustedProxy: (ip: string) => boolean;
  readonly audit: AuditWriter;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly clock: Clock;
}

/** What the pipeline learns about one request, step by step. */
export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly requestId: RequestId;
  readonly startedAt: number;
  /** The TCP peer. */
  readonly peerIp: string;
  /** The client: the peer, or (behind trusted proxies) the address they forwarded. */
  ip: string;
  /** The X-Forwarded-For chain sent upstream. */
  forwardedFor: string;
  /** The method being authorized (the client's, or the original one in forward-auth). */
  method: string;
  /** `https` or `http`, and the Host as sent (lower case): the URL a DPoP proof must name. */
  scheme: string;
  authority: string;
  host: string;
  target: CanonicalTarget | undefined;
  route: CompiledRoute<Upstream> | undefined;
  params: Readonly<Record<string, string>>;
  principal: Principal | undefined;
  /** The principal came from the browser session cookie (login and step-up redirects, CSRF rules). */
  sessionCookie: boolean;
  decision: Decision | undefined;
  /** The request's risk assessment (after authentication). */
  risk: RiskAssessment | undefined;
  /** The request body, when a step had to read it whole (schema validation): forwarded as is. */
  body: Buffer | undefined;
  /** The DPoP proof that came with the access token (checked by `checkTokenProof`), if any. */
  dpop: import('../devices/index.js').VerifiedDpop | undefined;
  /** The device the request proved it comes from (after authentication), if any. */
  device: DeviceState | undefined;
  /** Forward-auth or ext_authz: decide about a request a proxy describes; never answer it otherwise. */
  decideOnly: false | 'forward-auth' | 'ext-authz';
  /** Served by one of the gateway's own endpoints (which audit their own events). */
  internal: boolean;
  /** `RateLimit-Policy` / `RateLimit` values for the response, when the route is rate-limited. */
  rateLimitHeaders: Record<string, string> | undefined;
  /** An HTTP upgrade request: the client's socket and the bytes it sent after the head. */
  upgrade: { readonly socket: Duplex; readonly head: Buffer } | undefined;
}
