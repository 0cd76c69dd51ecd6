import type { IncomingMessage } from 'node:http';
import { isPortcullisError } from '../core/index.js';
import { type ClientAuth, OAuthError } from '../identity/index.js';
import { readSmallBody } from './body.js';
import type { Gateway, RequestContext } from './context.js';
import { checkTokenProof, signInMeta } from './dpop.js';
import { sendJson } from './respond.js';
import { bearerToken } from './steps/authenticate.js';

type Endpoint = {
  method: 'GET' | 'POST';
  also?: 'GET' | 'POST';
  handle: (gw: Gateway, ctx: RequestContext) => Promise<void>;
};

const NO_STORE = { pragma: 'no-cache' } as const;
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/**
 * Reads an `application/x-www-form-urlencoded` body (OAuth endpoints), size-capped. A parameter given
 * twice is refused (RFC 6749 §3.1/§3.2).
 */
export async function readFormBody(req: IncomingMessage, maxBytes: number): Promise<URLSearchParams> {
  const type = req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded')
    throw new OAuthError('invalid_request', 'the body must be application/x-www-form-urlencoded');
  const form = new URLSearchParams(await readSmallBody(req, maxBytes));
  const seen = new Set<string>();
  for (const key of form.keys()) {
    if (seen.has(key)) throw new OAuthError('invalid_request', `parameter ${key} given more than once`);
    seen.add(key);
  }
  return form;
}

/** How the client authenticated: HTTP Basic, client_secret in the body, or a client assertion — one only. */
export function clientAuthOf(req: IncomingMessage, form: URLSearchParams): ClientAuth {
  const header = req.headers.authorization;
  const methods: ClientAuth[] = [];
  if (header?.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 1) throw new OAuthError('invalid_client', 'malformed Basic credentials');
    // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    const unform = (s: string) => {
      try {
        return decodeURIComponent(s.replace(/\+/g, ' '));
      } catch {
        throw new OAuthError('invalid_client', 'malformed Basic credentials');
      }
    };
    methods.push({
      method: 'client_secret_basic',
      clientId: unform(decoded.slice(0, colon)),
      secret: unform(decoded.slice(colon + 1)),
    });
  }
  const assertionType = form.get('client_assertion_type');
  const assertion = form.get('client_assertion');
  if (assertionType !== null || assertion !== null) {
    if (assertionType !== JWT_BEARER || !assertion)
      throw new OAuthError(
        'invalid_request',
        `client_assertion_type must be ${JWT_BEARER}, with client_assertion`,
      );
    methods.push({ method: 'private_key_jwt', clientId: form.get('client_id') ?? undefined, assertion });
  }
  const secret = form.get('client_secret');
  if (secret !== null) {
    const clientId = form.get('client_id');
    if (!clientId) throw new OAuthError('invalid_request', 'client_secret without client_id');
    methods.push({ method: 'client_secret_post', clientId, secret });
  }
  if (methods.length > 1)
    throw new OAuthError('invalid_request', 'use exactly one client authentication method');
  return methods[0] ?? { method: 'none', clientId: form.get('client_id') ?? undefined };
}

/** OAuth endpoints answer errors the RFC 6749 way: `{error, error_description}`, never cached. */
function oauth(handle: Endpoint['handle']): Endpoint['handle'] {
  return async (gw, ctx) => {
    try {
      await handle(gw, ctx);
    } catch (err) {
      let e: OAuthError;
      if (err instanceof OAuthError) e = err;
      else if (
        isPortcullisError(err) &&
        (err.code === 'invalid_body' || err.code === 'unsupported_media_type')
      )
        e = new OAuthError('invalid_request', err.publicMessage);
      else if (isPortcullisError(err) && err.code === 'invalid_grant')
        e = new OAuthError('invalid_grant', err.publicMessage);
      else throw err;
      sendJson(ctx, e.status, JSON.stringify({ error: e.error, error_description: e.description }), {
        ...NO_STORE,
        ...(e.status === 401 ? { 'www-authenticate': 'Basic realm="portcullis"' } : {}),
      });
    }
  };
}

const meta = (ctx: RequestContext) => ({
  ip: ctx.ip,
  requestId: ctx.requestId,
  userAgent: ctx.req.headers['user-agent'],
});

/** Authorization server metadata (RFC 8414), also served as the OIDC discovery document. */
function metadata(gw: Gateway): Record<string, unknown> {
  const base = gw.config.identity.issuer.replace(/\/$/, '');
  return {
    issuer: gw.config.identity.issuer,
    jwks_uri: `${base}/.well-known/jwks.json`,
    dpop_signing_alg_values_supported: ['ES256', 'EdDSA'],
    token_endpoint: `${base}/oauth2/token`,
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: ['ES256', 'EdDSA'],
    grant_types_supported: ['client_credentials', 'refresh_token'],
    introspection_endpoint: `${base}/oauth2/introspect`,
    introspection_endpoint_auth_methods_supported: [
      'client_secret_basic',
      'client_secret_post',
      'private_key_jwt',
    ],
    revocation_endpoint: `${base}/oauth2/revoke`,
    revocation_endpoint_auth_methods_supported: [
      'none',
      'client_secret_basic',
      'client_secret_post',
      'private_key_jwt',
    ],
    userinfo_endpoint: `${base}/oauth2/userinfo`,
    response_types_supported: ['token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['ES256'],
    claims_supported: [
      'sub',
      'preferred_username',
      'email',
      'name',
      'roles',
      'groups',
      'amr',
      'acr',
      'auth_time',
    ],
    acr_values_supported: gw.config.policy.acrLevels,
  };
}

export const OAUTH_ENDPOINTS: ReadonlyMap<string, Endpoint> = new Map<string, Endpoint>([
  [
    '/oauth2/token',
    {
      method: 'POST',
      handle: oauth(async (gw, ctx) => {
        const form = await readFormBody(ctx.req, gw.config.gateway.maxAuthBodyBytes);
        const grant = form.get('grant_type');
        const auth = clientAuthOf(ctx.req, form);
        if (grant === 'client_credentials') {
          const tokens = await gw.clients.clientCredentials(
            auth,
            {
              scope: form.get('scope') ?? undefined,
              audience: form.get('audience') ?? form.get('resource') ?? undefined,
            },
            meta(ctx),
          );
          sendJson(ctx, 200, JSON.stringify(tokens), NO_STORE);
          return;
        }
        if (grant === 'refresh_token') {
          // Users' sessions are public clients: the refresh token itself is the credential.
          if (auth.method !== 'none') await gw.clients.authenticate(auth);
          const token = form.get('refresh_token');
          if (!token) throw new OAuthError('invalid_request', 'refresh_token is required');
          const { meta: m, commit } = await signInMeta(gw, ctx);
          const tokens = await gw.identity.refresh(token, m);
          commit();
          sendJson(ctx, 200, JSON.stringify(tokens), NO_STORE);
          return;
        }
        throw new OAuthError(
          grant ? 'unsupported_grant_type' : 'invalid_request',
          grant ? `grant_type ${grant} is not supported` : 'grant_type is required',
        );
      }),
    },
  ],
  [
    '/oauth2/introspect',
    {
      // RFC 7662, for authenticated clients holding the `introspect` scope.
      method: 'POST',
      handle: oauth(async (gw, ctx) => {
        const form = await readFormBody(ctx.req, gw.config.gateway.maxAuthBodyBytes);
        const client = await gw.clients.authenticate(clientAuthOf(ctx.req, form));
        if (!client.scopes.includes('introspect'))
          throw new OAuthError(
            'unauthorized_client',
            'this client may not introspect (needs the introspect scope)',
            403,
          );
        const token = form.get('token');
        if (!token) throw new OAuthError('invalid_request', 'token is required');
        const claims = await gw.tokens.claimsOf(token);
        let active = claims !== undefined;
        if (claims) {
          // Still active means its session (or service account) is still active too.
          try {
            const principal = await gw.bearer
              .authenticate(token, new Set(['portcullis']))
              .catch(() => undefined);
            if (principal) await gw.identity.checkSession(principal);
            else if (typeof claims.client_id === 'string')
              active = await gw.clients.isActive(claims.client_id);
            else if (typeof claims.sid === 'string') active = false;
          } catch {
            active = false;
          }
        }
        const body =
          !active || !claims
            ? { active: false }
            : {
                active: true,
                token_type: 'Bearer',
                iss: claims.iss,
                sub: claims.sub,
                aud: claims.aud,
                exp: claims.exp,
                iat: claims.iat,
                ...(claims.nbf !== undefined ? { nbf: claims.nbf } : {}),
                jti: claims.jti,
                ...(claims.client_id !== undefined
                  ? { client_id: claims.client_id, scope: claims.scope }
                  : {}),
                ...(claims.sid !== undefined ? { sid: claims.sid, amr: claims.amr, acr: claims.acr } : {}),
                ...(claims.roles !== undefined ? { roles: claims.roles } : {}),
              };
        sendJson(ctx, 200, JSON.stringify(body), NO_STORE);
      }),
    },
  ],
  [
    '/oauth2/revoke',
    {
      // RFC 7009: a refresh token or one of our access tokens ends its session; always 200.
      method: 'POST',
      handle: oauth(async (gw, ctx) => {
        const form = await readFormBody(ctx.req, gw.config.gateway.maxAuthBodyBytes);
        const auth = clientAuthOf(ctx.req, form);
        if (auth.method !== 'none') await gw.clients.authenticate(auth);
        const token = form.get('token');
        if (!token) throw new OAuthError('invalid_request', 'token is required');
        await gw.identity.revokeToken(token, meta(ctx));
        sendJson(ctx, 200, '{}', NO_STORE);
      }),
    },
  ],
  [
    '/oauth2/userinfo',
    {
      method: 'GET',
      also: 'POST',
      handle: async (gw, ctx) => {
        const principal = await gw.tokens.verifyAccessToken(bearerToken(ctx.req.headers.authorization));
        await checkTokenProof(gw, ctx, principal);
        sendJson(ctx, 200, JSON.stringify(await gw.identity.userinfo(principal)), NO_STORE);
      },
    },
  ],
  [
    '/.well-known/openid-configuration',
    {
      method: 'GET',
      handle: async (gw, ctx) => {
        sendJson(ctx, 200, JSON.stringify(metadata(gw)), { 'cache-control': 'public, max-age=300' });
      },
    },
  ],
  [
    '/.well-known/oauth-authorization-server',
    {
      method: 'GET',
      handle: async (gw, ctx) => {
        sendJson(ctx, 200, JSON.stringify(metadata(gw)), { 'cache-control': 'public, max-age=300' });
      },
    },
  ],
]);
