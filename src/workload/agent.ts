import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import type * as X509 from '@peculiar/x509';
import { Agent, request } from 'undici';
import { type Clock, type Logger, systemClock, writeSecretFile } from '../core/index.js';
import { newKeyAndCsr } from './ca.js';
import { parseSpiffeId } from './spiffe-id.js';
import { checkLeaf, parseCertificates, verifySvid } from './svid.js';
import { loadX509, x509 } from './x509.js';

/** The workload API's own identity: the agent talks to nothing else. */
const WORKLOAD_API_PATH = '/portcullis/workload-api';
const MAX_BODY = 64 * 1024;

export interface AgentOptions {
  /** The workload API, e.g. `https://127.0.0.1:8443`. */
  readonly workloadApi: string;
  /** The trust bundle (PEM) the workload API's certificate must chain to, before the agent has its own. */
  readonly bundlePem: string;
  /** The SPIFFE ID this workload is; the issued SVID must carry exactly it. */
  readonly spiffeId: string;
  /** The one-time join token for the first SVID (not needed while a valid SVID is on disk). */
  readonly joinToken?: string | undefined;
  /** Where `svid.pem` (leaf + intermediate), `svid.key` (PKCS#8) and `bundle.pem` are written (0600). */
  readonly outDir: string;
  /** Serve the local SDK endpoint on this Unix socket (mode 0600), when set. */
  readonly socketPath?: string | undefined;
  /** Renew when this share of the lifetime has passed (default 0.5), ± `jitter` of it (default 0.1). */
  readonly renewAt?: number;
  readonly jitter?: number;
  /** First and largest wait between failed attempts (ms). */
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
  readonly clock?: Clock;
  readonly log: Logger;
  /** Called after each new SVID is on disk (e.g. to reload a server). */
  readonly onRotate?: (svid: CurrentSvid) => void;
  /** Called once when the SVID expired without a renewal (the CLI exits then, so a supervisor notices). */
  readonly onExpired?: () => void;
}

export interface CurrentSvid {
  readonly spiffeId: string;
  /** Leaf + intermediate, PEM. */
  readonly chain: string;
  /** PKCS#8 PEM. */
  readonly key: string;
  readonly bundle: string;
  readonly notAfter: Date;
  readonly serial: string;
}

/** The workload API refused the credential (401): retrying with it is pointless. */
class RefusedError extends Error {}

/** What the agent is doing, for its logs and the local endpoint. */
export type AgentState = 'starting' | 'ready' | 'retrying' | 'expired' | 'stopped';

const files = (dir: string) => ({
  cert: join(dir, 'svid.pem'),
  key: join(dir, 'svid.key'),
  bundle: join(dir, 'bundle.pem'),
});

/**
 * `portcullis agent`: runs beside a service and keeps its X.509-SVID fresh. It gets the first SVID with
 * a one-time join token (or reuses a valid one found on disk), writes cert, key and bundle atomically
 * (0600) for servers that read files, renews over mTLS with the current SVID when half its life has
 * passed (± jitter, so a fleet does not renew at once), keeps retrying with capped exponential back-off
 * through a CA outage until the SVID expires (logging each failure), and serves a local endpoint on a
 * Unix socket for the SDK: `GET /v1/svid`, `GET /v1/bundle`, `POST /v1/jwt-svid {"audience"}`.
 * The workload API is trusted only as `spiffe://<td>/portcullis/workload-api` under the bundle.
 */
export class WorkloadAgent {
  readonly #o: AgentOptions;
  readonly #clock: Clock;
  readonly #expectedId: string;
  readonly #apiId: string;
  #current: CurrentSvid | undefined;
  #bundle: string;
  #timer: NodeJS.Timeout | undefined;
  #server: Server | undefined;
  #state: AgentState = 'starting';
  #failures = 0;
  #renewing: Promise<void> | undefined;
  #joinTokenSpent = false;

  constructor(options: AgentOptions) {
    if (new URL(options.workloadApi).protocol !== 'https:')
      throw new Error('the workload API must be reached over https (the join token and keys travel there)');
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    const id = parseSpiffeId(options.spiffeId);
    this.#expectedId = id.toString();
    this.#apiId = `spiffe://${id.trustDomain}${WORKLOAD_API_PATH}`;
    this.#bundle = options.bundlePem;
  }

  get state(): AgentState {
    return this.#state;
  }

  get current(): CurrentSvid | undefined {
    return this.#current;
  }

  /** Gets the first SVID (from disk if still valid, else with the join token), then keeps it fresh. */
  async start(): Promise<CurrentSvid> {
    await loadX509();
    mkdirSync(this.#o.outDir, { recursive: true, mode: 0o700 });
    const onDisk = await this.#fromDisk();
    if (onDisk) {
      this.#current = onDisk;
      this.#o.log.info({ spiffeId: onDisk.spiffeId, notAfter: onDisk.notAfter }, 'agent: SVID found on disk');
    } else {
      if (!this.#o.joinToken)
        throw new Error(
          'no valid SVID on disk and no join token: run `portcullis svid join-token` for this ID',
        );
      const { csr, keyPem } = await newKeyAndCsr('portcullis-agent');
      this.#joinTokenSpent = true;
      const answer = await this.#call('/v1/svid', { join_token: this.#o.joinToken, csr }, undefined);
      await this.#accept(answer, keyPem, 'join_token');
    }
    this.#state = 'ready';
    if (this.#o.socketPath) await this.#serve(this.#o.socketPath);
    this.#schedule();
    return this.#current as CurrentSvid;
  }

  /** Renews now (also what the timer does); concurrent calls share one attempt. */
  renew(): Promise<void> {
    this.#renewing ??= this.#renewOnce().finally(() => {
      this.#renewing = undefined;
    });
    return this.#renewing;
  }

  async stop(): Promise<void> {
    this.#state = 'stopped';
    if (this.#timer) clearTimeout(this.#timer);
    const server = this.#server;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    if (this.#o.socketPath && existsSync(this.#o.socketPath)) rmSync(this.#o.socketPath, { force: true });
  }

  async #renewOnce(): Promise<void> {
    const cur = this.#current;
    if (!cur) throw new Error('no SVID to renew');
    const { csr, keyPem } = await newKeyAndCsr('portcullis-agent');
    let answer: Record<string, unknown>;
    try {
      answer = await this.#call('/v1/svid/renew', { csr }, cur);
    } catch (err) {
      // The current SVID is refused (revoked, or from a CA no longer trusted): a join token given to
      // this agent, and not yet spent, starts it over.
      if (!(err instanceof RefusedError) || !this.#o.joinToken || this.#joinTokenSpent) throw err;
      this.#o.log.warn({ err: err.message }, 'agent: renewal refused; using the join token');
      this.#joinTokenSpent = true;
      answer = await this.#call('/v1/svid', { join_token: this.#o.joinToken, csr }, undefined);
    }
    await this.#accept(answer, keyPem, 'renewal');
  }

  /** Checks an issued SVID (our ID, chains to the bundle, valid now, our key) and writes it out. */
  async #accept(answer: Record<string, unknown>, keyPem: string, via: string): Promise<void> {
    const chainPem = answer.svid;
    const bundle = answer.bundle;
    if (typeof chainPem !== 'string' || typeof bundle !== 'string')
      throw new Error('the workload API answered without svid and bundle');
    const chain = parseCertificates(chainPem);
    // The new SVID must chain to what this agent already trusts — never to roots that came with it. The
    // answer's bundle (new roots are published ahead of their first signature) is adopted only then.
    const { spiffeId, notAfter } = await verifySvid(chain, parseCertificates(this.#bundle), {
      at: new Date(this.#clock.now()),
    });
    if (spiffeId !== this.#expectedId)
      throw new Error(`the workload API issued ${spiffeId}, expected ${this.#expectedId}`);
    const leaf = chain[0] as X509.X509Certificate;
    // The certificate must be for the key we just made (the CA only uses the CSR's key).
    const { createPrivateKey, createPublicKey } = await import('node:crypto');
    const ours = createPublicKey(createPrivateKey(keyPem)).export({ format: 'der', type: 'spki' });
    if (!Buffer.from(leaf.publicKey.rawData).equals(ours))
      throw new Error('the issued certificate is not for the key this agent generated');
    const f = files(this.#o.outDir);
    // Bundle and key first; the certificate last — servers watching svid.pem reload a matching pair.
    writeSecretFile(f.bundle, bundle);
    writeSecretFile(f.key, keyPem);
    writeSecretFile(f.cert, chainPem);
    this.#bundle = bundle;
    this.#current = {
      spiffeId,
      chain: chainPem,
      key: keyPem,
      bundle,
      notAfter,
      serial: leaf.serialNumber.toLowerCase(),
    };
    this.#failures = 0;
    this.#state = 'ready';
    this.#o.log.info({ spiffeId, notAfter, serial: this.#current.serial, via }, 'agent: new SVID written');
    this.#o.onRotate?.(this.#current);
  }

  /** A valid SVID for our ID already in the output folder (a restarted agent needs no new join token). */
  async #fromDisk(): Promise<CurrentSvid | undefined> {
    const f = files(this.#o.outDir);
    if (!existsSync(f.cert) || !existsSync(f.key) || !existsSync(f.bundle)) return undefined;
    try {
      const chainPem = readFileSync(f.cert, 'utf8');
      const bundle = readFileSync(f.bundle, 'utf8');
      const key = readFileSync(f.key, 'utf8');
      const chain = parseCertificates(chainPem);
      const { spiffeId, notAfter } = await verifySvid(chain, parseCertificates(bundle), {
        at: new Date(this.#clock.now()),
      });
      if (spiffeId !== this.#expectedId) return undefined;
      // A crash between the key and the certificate writes leaves a pair that does not match.
      const { createPrivateKey, createPublicKey } = await import('node:crypto');
      const spki = createPublicKey(createPrivateKey(key)).export({ format: 'der', type: 'spki' });
      if (!Buffer.from((chain[0] as X509.X509Certificate).publicKey.rawData).equals(spki)) {
        this.#o.log.warn('agent: the key on disk does not match the SVID on disk; starting over');
        return undefined;
      }
      this.#bundle = bundle;
      return {
        spiffeId,
        chain: chainPem,
        key,
        bundle,
        notAfter,
        serial: (chain[0] as X509.X509Certificate).serialNumber.toLowerCase(),
      };
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'agent: the SVID on disk is not usable');
      return undefined;
    }
  }

  /** Next renewal at `renewAt` of the remaining life ± jitter; after a failure, capped back-off. */
  #schedule(): void {
    if (this.#state === 'stopped') return;
    const cur = this.#current as CurrentSvid;
    const now = this.#clock.now();
    const left = cur.notAfter.getTime() - now;
    let delay: number;
    if (this.#failures === 0) {
      const share = this.#o.renewAt ?? 0.5;
      const jitter = this.#o.jitter ?? 0.1;
      delay = left * share * (1 + jitter * (2 * Math.random() - 1));
    } else {
      const base = this.#o.retryBaseMs ?? 1000;
      const max = this.#o.retryMaxMs ?? 30_000;
      delay = Math.min(max, base * 2 ** (this.#failures - 1)) * (0.5 + Math.random() / 2);
    }
    delay = Math.max(50, Math.min(delay, Math.max(50, left)));
    this.#timer = setTimeout(() => void this.#tick(), delay);
    this.#timer.unref();
  }

  async #tick(): Promise<void> {
    if (this.#state === 'stopped') return;
    try {
      await this.renew();
    } catch (err) {
      this.#failures++;
      const cur = this.#current as CurrentSvid;
      const left = cur.notAfter.getTime() - this.#clock.now();
      if (left <= 0) {
        this.#state = 'expired';
        this.#o.log.error(
          { spiffeId: cur.spiffeId, notAfter: cur.notAfter, err: (err as Error).message },
          'agent: the SVID expired before it could be renewed; a new join token is needed',
        );
        this.#o.onExpired?.();
        return;
      }
      this.#state = 'retrying';
      this.#o.log.warn(
        { attempt: this.#failures, secondsLeft: Math.round(left / 1000), err: (err as Error).message },
        'agent: renewal failed; retrying (the current SVID stays in use until it expires)',
      );
    }
    this.#schedule();
  }

  /** One JSON call to the workload API over TLS (with the current SVID as client certificate, if any). */
  async #call(
    path: string,
    body: Record<string, unknown>,
    client: CurrentSvid | undefined,
  ): Promise<Record<string, unknown>> {
    const apiId = this.#apiId;
    const dispatcher = new Agent({
      connect: {
        ca: this.#bundle,
        ...(client ? { cert: client.chain, key: client.key } : {}),
        rejectUnauthorized: true,
        // The workload API is known by its SPIFFE ID, exactly (never a host name).
        checkServerIdentity: (_host: string, cert: PeerCertificate) => {
          try {
            const id = checkLeaf(new x509.X509Certificate(new Uint8Array(cert.raw)));
            return id === apiId ? undefined : new Error(`the workload API is ${id}, expected ${apiId}`);
          } catch (err) {
            return err as Error;
          }
        },
      },
      connectTimeout: 5_000,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
    try {
      const res = await request(new URL(path, this.#o.workloadApi), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        dispatcher,
      });
      const text = await res.body.text();
      let json: Record<string, unknown>;
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        throw new Error(`the workload API answered ${res.statusCode} with a body that is not JSON`);
      }
      if (res.statusCode !== 200) {
        const e = json.error as { code?: string; message?: string } | undefined;
        const message = `the workload API refused (${res.statusCode} ${e?.code ?? ''}): ${e?.message ?? ''}`;
        throw res.statusCode === 401 ? new RefusedError(message) : new Error(message);
      }
      return json;
    } finally {
      await dispatcher.close().catch(() => undefined);
    }
  }

  /** The local SDK endpoint: HTTP on a Unix socket only this user can open. */
  async #serve(socketPath: string): Promise<void> {
    if (existsSync(socketPath)) rmSync(socketPath, { force: true });
    const send = (res: import('node:http').ServerResponse, status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(text);
    };
    const server = createServer((req, res) => {
      void (async () => {
        try {
          const cur = this.#current;
          if (!cur || this.#state === 'expired') {
            send(res, 503, { error: { code: 'svid_unavailable', message: `agent is ${this.#state}` } });
            return;
          }
          const path = (req.url ?? '/').split('?')[0];
          if (req.method === 'GET' && path === '/v1/svid') {
            send(res, 200, {
              spiffe_id: cur.spiffeId,
              svid: cur.chain,
              key: cur.key,
              bundle: cur.bundle,
              expires_at: cur.notAfter.toISOString(),
            });
            return;
          }
          if (req.method === 'GET' && path === '/v1/bundle') {
            send(res, 200, { bundle: cur.bundle });
            return;
          }
          if (req.method === 'POST' && path === '/v1/jwt-svid') {
            let text = '';
            for await (const chunk of req) {
              text += chunk;
              if (text.length > MAX_BODY) throw new Error('body too large');
            }
            const audience = (JSON.parse(text || '{}') as { audience?: unknown }).audience;
            if (typeof audience !== 'string' || audience === '') {
              send(res, 400, {
                error: { code: 'bad_request', message: 'audience (one string) is required' },
              });
              return;
            }
            send(res, 200, await this.#call('/v1/jwt-svid', { audience }, cur));
            return;
          }
          send(res, 404, { error: { code: 'route_not_found', message: 'No such agent endpoint.' } });
        } catch (err) {
          send(res, 502, { error: { code: 'upstream_unavailable', message: (err as Error).message } });
        }
      })();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    chmodSync(socketPath, 0o600);
    this.#server = server;
  }
}
