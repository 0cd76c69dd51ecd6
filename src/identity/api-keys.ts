import { randomBytes } from 'node:crypto';
import type { AuditWriter } from '../audit/index.js';
import {
  type Clock,
  constantTimeEqual,
  PortcullisError,
  type Principal,
  ROLE_NAME,
  randomToken,
  sha256b64url,
  type UserId,
} from '../core/index.js';
import { type ApiKeyRecord, type Store, StoreError } from '../store/index.js';

/** The issuer id routes list (`routes[].issuers: [apikey]`) to accept API keys (`X-API-Key`). */
export const API_KEY_ISSUER_ID = 'apikey';
const PREFIX = 'pcak';
const KEY = /^pcak_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** Compared against when the key id is unknown, so a miss takes as long as a wrong secret. */
const DUMMY = sha256b64url('portcullis-api-key-dummy');

const invalid = (detail: string) =>
  new PortcullisError('invalid_token', {
    detail,
    message: 'The API key is invalid, expired or revoked.',
  });

/**
 * API keys for machine callers that cannot do OAuth: `pcak_<id>_<secret>`, shown once; only the
 * SHA-256 of the secret is stored and compared in constant time. The key is looked up by its id on
 * every request, so a revocation (CLI, another process) takes effect on the next one. A key is a
 * `service` principal named `apikey:<name>` with the roles it was given.
 */
export class ApiKeyService {
  readonly #store: Store;
  readonly #audit: AuditWriter;
  readonly #clock: Clock;

  constructor(o: { store: Store; audit: AuditWriter; clock: Clock }) {
    this.#store = o.store;
    this.#audit = o.audit;
    this.#clock = o.clock;
  }

  async create(
    name: string,
    roles: readonly string[],
    ttlMs?: number,
  ): Promise<{ key: string; record: ApiKeyRecord }> {
    if (!NAME.test(name))
      throw new PortcullisError('bad_request', { message: 'API key names are lower-case ids.' });
    for (const r of roles)
      if (!ROLE_NAME.test(r)) throw new PortcullisError('bad_request', { message: `Not a role name: ${r}` });
    const now = this.#clock.now();
    const id = randomBytes(8).toString('hex');
    const secret = randomToken(32);
    const record: ApiKeyRecord = {
      id,
      name,
      hash: sha256b64url(secret),
      roles: [...roles],
      createdAt: now,
      expiresAt: ttlMs === undefined ? null : now + ttlMs,
      revokedAt: null,
    };
    try {
      await this.#store.apiKeys.create(record);
    } catch (err) {
      if (err instanceof StoreError && err.code === 'conflict')
        throw new PortcullisError('bad_request', { message: `An API key named ${name} exists.` });
      throw err;
    }
    await this.#audit.write(
      { type: 'apikey.created', data: { id, name, roles: record.roles, expiresAt: record.expiresAt } },
      'durable',
    );
    return { key: `${PREFIX}_${id}_${secret}`, record };
  }

  list(): Promise<ApiKeyRecord[]> {
    return this.#store.apiKeys.list();
  }

  async revoke(name: string): Promise<boolean> {
    const k = await this.#store.apiKeys.findByName(name);
    if (!k) return false;
    const done = await this.#store.apiKeys.revoke(k.id, this.#clock.now());
    if (done) await this.#audit.write({ type: 'apikey.revoked', data: { id: k.id, name } }, 'durable');
    return done;
  }

  /** The principal of a presented key; a malformed, unknown, wrong, expired or revoked key is a 401. */
  async authenticate(presented: string): Promise<Principal> {
    const m = KEY.exec(presented);
    if (!m) throw invalid('malformed API key');
    const [, id, secret] = m as unknown as [string, string, string];
    const k = await this.#store.apiKeys.get(id);
    const ok = constantTimeEqual(sha256b64url(secret), k?.hash ?? DUMMY);
    if (!k || !ok) throw invalid('unknown API key or wrong secret');
    if (k.revokedAt !== null) throw invalid(`API key ${k.name} was revoked`);
    if (k.expiresAt !== null && this.#clock.now() >= k.expiresAt) throw invalid(`API key ${k.name} expired`);
    return {
      kind: 'service',
      id: `apikey:${k.name}` as UserId,
      issuer: API_KEY_ISSUER_ID,
      sessionId: undefined,
      roles: k.roles,
      amr: ['apikey'],
      tokenId: k.id,
    };
  }
}
