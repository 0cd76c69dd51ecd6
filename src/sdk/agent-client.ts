import { request } from 'node:http';

/** What the local agent hands a workload: its X.509-SVID (leaf + intermediate), key and trust bundle, PEM. */
export interface AgentSvid {
  readonly spiffeId: string;
  readonly svid: string;
  readonly key: string;
  readonly bundle: string;
  readonly expiresAt: Date;
}

function call(
  socketPath: string,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: payload ? { 'content-type': 'application/json' } : {},
        timeout: 15_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          try {
            const json = JSON.parse(text) as Record<string, unknown>;
            if (res.statusCode !== 200) {
              const e = json.error as { code?: string; message?: string } | undefined;
              reject(new Error(`agent: ${e?.code ?? res.statusCode}: ${e?.message ?? ''}`));
            } else resolve(json);
          } catch {
            reject(new Error(`agent answered ${res.statusCode} with a body that is not JSON`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('agent did not answer in time')));
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * The workload's current X.509-SVID from the local `portcullis agent` (its Unix socket): use `svid` and
 * `key` as TLS certificate and key, `bundle` as the only CA, and check peers by SPIFFE ID. Call it again
 * after `expiresAt / 2` — the agent has renewed by then.
 *
 * @example
 * const s = await fetchX509Svid('/run/portcullis/agent.sock');
 * https.request({ cert: s.svid, key: s.key, ca: s.bundle, ... })
 */
export async function fetchX509Svid(socketPath: string): Promise<AgentSvid> {
  const j = await call(socketPath, 'GET', '/v1/svid');
  return {
    spiffeId: String(j.spiffe_id),
    svid: String(j.svid),
    key: String(j.key),
    bundle: String(j.bundle),
    expiresAt: new Date(String(j.expires_at)),
  };
}

/** A JWT-SVID for one audience (5 minutes), minted by the workload API for this workload via the agent. */
export async function fetchJwtSvid(
  socketPath: string,
  audience: string,
): Promise<{ token: string; expiresAt: Date }> {
  const j = await call(socketPath, 'POST', '/v1/jwt-svid', { audience });
  return { token: String(j.token), expiresAt: new Date(String(j.expires_at)) };
}
