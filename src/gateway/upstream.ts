import { Pool } from 'undici';
import type { UpstreamConfig } from '../config/index.js';
import type { SigningKey } from '../identity/index.js';
import { type AssertionSigner, createAssertionSigner } from './assertion.js';

/** An upstream at run time: its keep-alive connection pool and what the assertion needs. */
export interface Upstream {
  readonly name: string;
  readonly audience: string;
  readonly passAuthorization: boolean;
  readonly timeoutMs: number;
  readonly pool: Pool;
  readonly assertion: AssertionSigner;
}

export interface AssertionSettings {
  issuer: string;
  ttlSec: number;
  key: SigningKey;
}

/** One undici keep-alive pool per upstream, created at load. */
export function createUpstreams(
  configs: Readonly<Record<string, UpstreamConfig>>,
  assertion: AssertionSettings,
): Map<string, Upstream> {
  const out = new Map<string, Upstream>();
  for (const [name, c] of Object.entries(configs)) {
    const origin = new URL(c.url).origin;
    out.set(name, {
      name,
      audience: c.audience ?? name,
      passAuthorization: c.passAuthorization,
      timeoutMs: c.timeout,
      assertion: createAssertionSigner(name, c, assertion.issuer, assertion.ttlSec, assertion.key),
      pool: new Pool(origin, {
        connections: c.connections,
        keepAliveTimeout: 30_000,
        headersTimeout: c.timeout,
        bodyTimeout: c.timeout,
        connectTimeout: Math.min(c.timeout, 10_000),
      }),
    });
  }
  return out;
}

export async function closeUpstreams(upstreams: Map<string, Upstream>): Promise<void> {
  await Promise.all([...upstreams.values()].map((u) => u.pool.close().catch(() => u.pool.destroy())));
}
