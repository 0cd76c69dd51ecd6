import { createPrivateKey, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { Pool } from 'undici';
import type { UpstreamConfig } from '../config/index.js';
import type { SigningKey } from '../identity/index.js';
import { parseSpiffeId } from '../workload/spiffe-id.js';
import { checkLeaf, serialKey } from '../workload/svid.js';
import { x509 } from '../workload/x509.js';
import { type AssertionSigner, createAssertionSigner } from './assertion.js';

/** An upstream at run time: its targets' keep-alive pools and what the assertion needs. */
export interface Upstream {
  readonly name: string;
  readonly audience: string;
  readonly passAuthorization: boolean;
  readonly timeoutMs: number;
  /** Further attempts on another target for idempotent requests whose connection failed. */
  readonly retries: number;
  readonly targets: readonly Target[];
  /** The gateway's open WebSocket tunnels (shared by every upstream and every config generation). */
  readonly tunnels: TunnelRegistry;
  /** The next target, round-robin over the healthy ones (over all of them when none is healthy). */
  pick(after?: Target): Target;
  readonly assertion: AssertionSigner;
}

/**
 * One base URL of an upstream: its pool and its health. `unhealthyThreshold` failed active checks in a
 * row, or as many connections in a row that failed before any answer (passive), take the target out of
 * the rotation. With active checks it comes back after `healthyThreshold` passed checks; without, it is
 * tried again after {@link PASSIVE_EJECT_MS}. Answers to traffic never clear failed checks: a target
 * that serves requests but fails its health check stays out.
 */
export class Target {
  readonly origin: string;
  readonly pool: Pool;
  /** An active check is in flight. */
  probing = false;
  #healthy = true;
  #checkFailures = 0;
  #checkPasses = 0;
  #connectionFailures = 0;
  #ejectedUntil = 0;
  readonly #unhealthyAfter: number;
  readonly #healthyAfter: number;
  readonly #active: boolean;
  readonly #onChange: (t: Target, healthy: boolean, why: string) => void;

  constructor(
    origin: string,
    pool: Pool,
    o: { unhealthyAfter: number; healthyAfter: number; active: boolean },
    onChange: (t: Target, healthy: boolean, why: string) => void,
  ) {
    this.origin = origin;
    this.pool = pool;
    this.#unhealthyAfter = o.unhealthyAfter;
    this.#healthyAfter = o.healthyAfter;
    this.#active = o.active;
    this.#onChange = onChange;
  }

  get healthy(): boolean {
    if (!this.#healthy && !this.#active && Date.now() >= this.#ejectedUntil) {
      // Passive only: let traffic try it again; one more failed connection ejects it at once.
      this.#healthy = true;
      this.#connectionFailures = this.#unhealthyAfter - 1;
      this.#onChange(this, true, 'ejection expired');
    }
    return this.#healthy;
  }

  #eject(why: string): void {
    if (!this.#healthy) return;
    this.#healthy = false;
    this.#checkPasses = 0;
    this.#ejectedUntil = Date.now() + PASSIVE_EJECT_MS;
    this.#onChange(this, false, why);
  }

  checkFailed(why: string): void {
    this.#checkPasses = 0;
    if (++this.#checkFailures >= this.#unhealthyAfter) this.#eject(why);
  }

  checkPassed(): void {
    this.#checkFailures = 0;
    if (!this.#healthy && ++this.#checkPasses >= this.#healthyAfter) {
      this.#healthy = true;
      this.#connectionFailures = 0;
      this.#onChange(this, true, 'health check passed');
    }
  }

  /** A connection that failed before any answer. */
  connectionFailed(why: string): void {
    if (++this.#connectionFailures >= this.#unhealthyAfter) this.#eject(why);
  }

  /** The target answered a request. */
  answered(): void {
    this.#connectionFailures = 0;
  }
}

/**
 * Failures of the connection itself, before any answer: the target counts as failing, and an idempotent
 * request may go to another target. Not EPIPE: that is the upstream closing while we still send a body,
 * typically after answering early (a 413 to a large upload) — the upstream is alive, and a streamed body
 * cannot be sent again anyway.
 */
export const CONNECTION_FAILURES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
]);

/** How long a target whose connections failed stays out of rotation when no active check watches it. */
export const PASSIVE_EJECT_MS = 10_000;

export interface AssertionSettings {
  issuer: string;
  ttlSec: number;
  key: SigningKey;
  /** Folder that relative mTLS file paths are resolved against. */
  baseDir?: string;
  /** Certificate serials refused (emergency revocation), lower-case hex. */
  deniedSerials?: ReadonlySet<string>;
}

/**
 * undici `connect` options for an mTLS upstream: the gateway's SVID as client certificate, the bundle as
 * the only trust anchors, and the server's identity checked by its SPIFFE ID, exactly.
 */
function mtlsConnect(m: NonNullable<UpstreamConfig['mtls']>, baseDir: string, denied?: ReadonlySet<string>) {
  const read = (f: string) => readFileSync(isAbsolute(f) ? f : resolve(baseDir, f), 'utf8');
  const expected = parseSpiffeId(m.spiffeId).toString();
  // Loaded at build time by the gateway (buildGateway): read here, not in the TLS callback below, so a
  // build that forgot to load it fails at once instead of refusing every handshake as a bad certificate.
  const { X509Certificate } = x509;
  const cert = read(m.certFile);
  const key = read(m.keyFile);
  // An agent replaces key and certificate one after the other: never build a pool on a mismatched pair.
  if (!new NodeX509Certificate(cert).checkPrivateKey(createPrivateKey(key)))
    throw new Error(`upstream mTLS: ${m.keyFile} does not belong to the certificate in ${m.certFile}`);
  return {
    ca: read(m.bundleFile),
    cert,
    key,
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      try {
        // The SPIFFE leaf rules (exactly one URI SAN, a valid ID, not a CA, digitalSignature) on the raw DER.
        const leaf = new X509Certificate(new Uint8Array(cert.raw));
        const id = checkLeaf(leaf);
        // Every certificate the server presented, intermediates too, against the denylist.
        const seen = new Set<unknown>();
        for (
          let c: PeerCertificate | undefined = cert;
          c && !seen.has(c);
          c = (c as { issuerCertificate?: PeerCertificate }).issuerCertificate
        ) {
          seen.add(c);
          if (denied?.has(serialKey(c.serialNumber)))
            return new Error(`upstream certificate ${c.serialNumber} is on the denylist`);
        }
        return id === expected ? undefined : new Error(`upstream is ${id}, expected ${expected}`);
      } catch (err) {
        return new Error(`upstream certificate is not an X.509-SVID: ${(err as Error).message}`);
      }
    },
  };
}

/** Told when a target leaves or rejoins the rotation. */
export type TargetHealthListener = (upstream: string, target: string, healthy: boolean, why: string) => void;

const checkTimers = new WeakMap<Upstream, NodeJS.Timeout>();

/** One undici keep-alive pool per upstream target, created at load; active health checks started. */
export function createUpstreams(
  configs: Readonly<Record<string, UpstreamConfig>>,
  assertion: AssertionSettings,
  onHealth: TargetHealthListener = () => {},
  tunnels: TunnelRegistry = tunnelRegistry(),
): Map<string, Upstream> {
  const out = new Map<string, Upstream>();
  for (const [name, c] of Object.entries(configs)) {
    const connect = c.mtls
      ? { connect: mtlsConnect(c.mtls, assertion.baseDir ?? process.cwd(), assertion.deniedSerials) }
      : {};
    const hc = c.healthCheck;
    const targets = c.targets.map(
      (origin) =>
        new Target(
          origin,
          new Pool(origin, {
            connections: c.connections,
            keepAliveTimeout: 30_000,
            headersTimeout: c.timeout,
            bodyTimeout: c.timeout,
            connectTimeout: Math.min(c.timeout, 10_000),
            ...connect,
          }),
          {
            unhealthyAfter: hc?.unhealthyThreshold ?? 1,
            healthyAfter: hc?.healthyThreshold ?? 1,
            active: !!hc,
          },
          (t, healthy, why) => onHealth(name, t.origin, healthy, why),
        ),
    );
    let next = 0;
    const upstream: Upstream = {
      name,
      audience: c.audience ?? name,
      passAuthorization: c.passAuthorization,
      timeoutMs: c.timeout,
      retries: c.retries,
      targets,
      tunnels,
      pick(after?: Target): Target {
        const n = targets.length;
        if (n === 1) return targets[0] as Target;
        // Round-robin from the cursor, skipping unhealthy targets (and `after`, the one that just failed).
        for (let i = 0; i < n; i++) {
          const t = targets[(next + i) % n] as Target;
          if (t !== after && t.healthy) {
            next = (next + i + 1) % n;
            return t;
          }
        }
        // None healthy: try them all in turn rather than answer for them (Envoy's panic routing).
        const t = targets[next % n] as Target;
        next = (next + 1) % n;
        return t === after ? (targets[next % n] as Target) : t;
      },
      assertion: createAssertionSigner(name, c, assertion.issuer, assertion.ttlSec, assertion.key),
    };
    if (hc) {
      const check = () => {
        for (const t of targets) void probe(t, hc.path, hc.timeout);
      };
      const timer = setInterval(check, hc.interval);
      timer.unref();
      checkTimers.set(upstream, timer);
      check();
    }
    out.set(name, upstream);
  }
  return out;
}

/** One active check: `GET <path>`, healthy on 2xx/3xx within the timeout. */
async function probe(t: Target, path: string, timeoutMs: number): Promise<void> {
  // A check still running (a slow target) is not doubled up.
  if (t.probing) return;
  t.probing = true;
  try {
    const res = await t.pool.request({
      method: 'GET',
      path,
      headers: { 'user-agent': 'portcullis-health-check' },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    await res.body.dump();
    if (res.statusCode >= 200 && res.statusCode < 400) t.checkPassed();
    else t.checkFailed(`health check answered ${res.statusCode}`);
  } catch (err) {
    t.checkFailed(`health check failed: ${(err as { code?: string }).code ?? (err as Error).message}`);
  } finally {
    t.probing = false;
  }
}

/**
 * The WebSocket tunnels of one running gateway. They outlive config reloads (each goes on under its own
 * re-checks, and a pool closed by a reload does not own an upgraded socket any more); a shutdown closes
 * them all ({@link closeTunnels}), and a handshake that completes after that is refused.
 */
export interface TunnelRegistry {
  /** Each entry closes one open tunnel. */
  readonly open: Set<() => void>;
  closed: boolean;
}

export const tunnelRegistry = (): TunnelRegistry => ({ open: new Set(), closed: false });

/**
 * Closes every open tunnel and refuses the ones whose handshake is still in flight. An upgraded socket no
 * longer belongs to the HTTP server (`closeAllConnections` does not reach it): a shutdown must close the
 * tunnels before it waits for the server to close.
 */
export function closeTunnels(tunnels: TunnelRegistry): void {
  tunnels.closed = true;
  for (const close of [...tunnels.open]) close();
}

export async function closeUpstreams(upstreams: Map<string, Upstream>): Promise<void> {
  await Promise.all(
    [...upstreams.values()].flatMap((u) => {
      clearInterval(checkTimers.get(u));
      return u.targets.map((t) => t.pool.close().catch(() => t.pool.destroy()));
    }),
  );
}
