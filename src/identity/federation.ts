import type * as oidc from 'openid-client';
import type { FederationProviderConfig } from '../config/index.js';
import { type Clock, type Logger, PortcullisError } from '../core/index.js';
import { safeReturnTo } from './return-to.js';
import type { SecretBox } from './secret-box.js';

/** openid-client is loaded on first use: a gateway without federated providers never needs it. */
const openidClient = (): Promise<typeof oidc> => import('openid-client');

/** What the login through an OP yields: who it is (verified ID token claims) and the roles it maps to. */
export interface FederatedIdentity {
  provider: string;
  subject: string;
  claims: Record<string, unknown>;
  roles: string[];
  trustAuthContext: boolean;
  returnTo: string;
  mode: 'api' | 'browser';
}

interface FlowState {
  p: string;
  state: string;
  nonce: string;
  verifier: string;
  returnTo: string;
  mode: 'api' | 'browser';
  exp: number;
}

export const FEDERATION_COOKIE = '__Secure-portcullis-fed';
const FLOW_TTL_MS = 10 * 60_000;
const DISCOVERY_TTL_MS = 24 * 3_600_000;

/**
 * Login through external OpenID Providers with `openid-client` (panva's relying party): authorization
 * code flow with PKCE (S256), `state` and `nonce`, the ID token verified against the OP's JWKS (cached
 * by the library, refetched when an unknown `kid` appears). The flow's secrets travel in a short-lived
 * cookie sealed with our data key (AES-256-GCM), so any replica can finish a flow another started.
 * Discovery is cached for a day per provider.
 */
export class FederationService {
  readonly #providers: Readonly<Record<string, FederationProviderConfig>>;
  readonly #ourIssuer: string;
  readonly #allowedOrigins: ReadonlySet<string>;
  readonly #box: SecretBox;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #configs = new Map<string, { config: oidc.Configuration; at: number }>();

  constructor(options: {
    providers: Readonly<Record<string, FederationProviderConfig>>;
    ourIssuer: string;
    redirectAllowList: readonly string[];
    box: SecretBox;
    clock: Clock;
    log: Logger;
  }) {
    this.#providers = options.providers;
    this.#ourIssuer = options.ourIssuer.replace(/\/$/, '');
    this.#allowedOrigins = new Set([
      new URL(options.ourIssuer).origin,
      ...options.redirectAllowList.map((u) => new URL(u).origin),
    ]);
    this.#box = options.box;
    this.#clock = options.clock;
    this.#log = options.log;
  }

  has(id: string): boolean {
    return Object.hasOwn(this.#providers, id);
  }

  /** The authorization URL to send the browser to, and the sealed flow cookie to set. */
  async start(
    id: string,
    returnTo: string | null,
    mode: 'api' | 'browser',
  ): Promise<{ location: string; cookie: string }> {
    const provider = this.#provider(id);
    const target = this.#safeReturn(returnTo ?? '/');
    const config = await this.#config(id, provider);
    const o = await openidClient();
    const verifier = o.randomPKCECodeVerifier();
    const state = o.randomState();
    const nonce = o.randomNonce();
    const url = o.buildAuthorizationUrl(config, {
      redirect_uri: this.#redirectUri(id, provider),
      scope: provider.scopes.join(' '),
      response_type: 'code',
      code_challenge: await o.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    const flow: FlowState = {
      p: id,
      state,
      nonce,
      verifier,
      returnTo: target,
      mode,
      exp: this.#clock.now() + FLOW_TTL_MS,
    };
    const sealed = this.#box.seal(JSON.stringify(flow), 'federation-flow');
    // SameSite=Lax: the OP sends the browser back with a top-level GET, which Lax still lets through.
    const cookie = `${FEDERATION_COOKIE}=${sealed}; Path=/auth/federated; Max-Age=${FLOW_TTL_MS / 1000}; HttpOnly; Secure; SameSite=Lax`;
    return { location: url.href, cookie };
  }

  /** Finishes the flow: checks state, exchanges the code (with the PKCE verifier), verifies the ID token. */
  async callback(id: string, currentUrl: URL, sealedFlow: string | undefined): Promise<FederatedIdentity> {
    const provider = this.#provider(id);
    let flow: FlowState;
    try {
      flow = JSON.parse(this.#box.open(sealedFlow ?? '', 'federation-flow')) as FlowState;
    } catch {
      throw new PortcullisError('bad_request', {
        message: 'no federated login in progress in this browser (start again)',
      });
    }
    if (flow.p !== id || flow.exp < this.#clock.now())
      throw new PortcullisError('bad_request', {
        message: 'the federated login expired or belongs to another provider (start again)',
      });
    const config = await this.#config(id, provider);
    // The library compares redirect_uri to the one we registered: hand it the public URL of this request.
    const publicUrl = new URL(this.#redirectUri(id, provider));
    publicUrl.search = currentUrl.search;
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    const o = await openidClient();
    try {
      tokens = await o.authorizationCodeGrant(config, publicUrl, {
        pkceCodeVerifier: flow.verifier,
        expectedState: flow.state,
        expectedNonce: flow.nonce,
        idTokenExpected: true,
      });
    } catch (err) {
      this.#log.warn({ provider: id, err: (err as Error).message }, 'federated login refused');
      throw new PortcullisError('invalid_credentials', {
        detail: `federated login failed: ${(err as Error).message}`,
      });
    }
    const claims = tokens.claims() as Record<string, unknown> | undefined;
    if (!claims || typeof claims.sub !== 'string')
      throw new PortcullisError('invalid_credentials', { detail: 'no ID token subject' });
    return {
      provider: id,
      subject: claims.sub,
      claims,
      roles: this.#roles(provider, claims),
      trustAuthContext: provider.trustAuthContext,
      returnTo: flow.returnTo,
      mode: flow.mode,
    };
  }

  #roles(provider: FederationProviderConfig, claims: Record<string, unknown>): string[] {
    const roles = new Set(provider.defaultRoles);
    const raw = provider.rolesClaim ? claims[provider.rolesClaim] : undefined;
    const values = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(' ') : [];
    for (const v of values) {
      if (typeof v !== 'string' || !Object.hasOwn(provider.roleMap, v)) continue;
      const mapped = provider.roleMap[v];
      for (const r of Array.isArray(mapped) ? mapped : [mapped]) if (r) roles.add(r);
    }
    return [...roles];
  }

  /** `return_to` must be a path on our origin, or a URL on an allow-listed origin: never an open redirect. */
  #safeReturn(value: string): string {
    return safeReturnTo(value, this.#ourIssuer, this.#allowedOrigins);
  }

  #provider(id: string): FederationProviderConfig {
    const p = Object.hasOwn(this.#providers, id) ? this.#providers[id] : undefined;
    if (!p) throw new PortcullisError('route_not_found', { detail: `no federation provider ${id}` });
    return p;
  }

  #redirectUri(id: string, p: FederationProviderConfig): string {
    return p.redirectUri ?? `${this.#ourIssuer}/auth/federated/${id}/callback`;
  }

  async #config(id: string, p: FederationProviderConfig): Promise<oidc.Configuration> {
    const cached = this.#configs.get(id);
    if (cached && this.#clock.now() - cached.at < DISCOVERY_TTL_MS) return cached.config;
    try {
      const o = await openidClient();
      const config = await o.discovery(
        new URL(p.issuer),
        p.clientId,
        { redirect_uris: [this.#redirectUri(id, p)], response_types: ['code'] },
        o.ClientSecretBasic(p.clientSecret),
        p.allowInsecure ? { execute: [o.allowInsecureRequests] } : undefined,
      );
      this.#configs.set(id, { config, at: this.#clock.now() });
      return config;
    } catch (err) {
      throw new PortcullisError('upstream_unavailable', {
        detail: `discovery of ${p.issuer} failed: ${(err as Error).message}`,
        cause: err,
      });
    }
  }
}
