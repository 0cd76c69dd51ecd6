import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import { SignJWT } from 'jose';
import { createAdminServer } from './admin/index.js';
import {
  type Alert,
  AlertEngine,
  type AlertRule,
  AuditWriter,
  type CheckpointAnchor,
  Checkpointer,
  type CheckpointSigner,
  createAlertSinks,
  DEFAULT_ALERT_RULES,
  FileAnchor,
  loadCheckpointSigner,
  loadFieldHasher,
  WebhookAnchor,
} from './audit/index.js';
import type { Config, LoadedConfig } from './config/index.js';
import {
  type Clock,
  createLogger,
  type Logger,
  Metrics,
  type ReplayCache,
  randomToken,
  systemClock,
} from './core/index.js';
import { createDemoUpstream } from './demo/index.js';
import { DeviceService } from './devices/index.js';
import {
  closeTunnels,
  closeUpstreams,
  compileTrustedProxies,
  createGatewayServer,
  createRedirectServer,
  createUpstreams,
  type Gateway,
  gatewaySecureContext,
  MessageSignatureVerifier,
  RouteTable,
  readGatewayTls,
  requestSchemaCompiler,
  type TunnelRegistry,
  tunnelRegistry,
  type Upstream,
  watchFiles,
} from './gateway/index.js';
import {
  ApiKeyService,
  BearerAuthenticator,
  BrowserSessions,
  ClientService,
  FederationService,
  IdentityService,
  KeyRing,
  keyResolver,
  PasswordHasher,
  SecretBox,
  TokenService,
} from './identity/index.js';
import { loadPolicy } from './policy/index.js';
import { MemoryRateLimitStore } from './ratelimit/index.js';
import { GeoIp, RiskEngine, ThreatIntel } from './risk/index.js';
import { openSqliteStore, type Store } from './store/index.js';
import { caFiles, caLoader, caStatus, maintainCa, type WorkloadCa } from './workload/ca.js';
import { SpiffePeerAuthenticator } from './workload/peer.js';
import { createWorkloadServer } from './workload/server.js';
import { parseDenylist } from './workload/svid.js';
import { loadX509 } from './workload/x509.js';

export interface CoreOptions {
  log?: Logger;
  clock?: Clock;
}

/** The parts of Portcullis that do not listen: store, keys, audit, identity. CLI commands use these. */
export interface PortcullisCore {
  readonly loaded: LoadedConfig;
  readonly log: Logger;
  readonly clock: Clock;
  readonly metrics: Metrics;
  readonly store: Store;
  readonly keys: KeyRing;
  readonly audit: AuditWriter;
  readonly checkpointer: Checkpointer;
  readonly alerts: AlertEngine;
  /** Signs audit checkpoints; its `verifierKey` is what auditors check them with. */
  readonly checkpointSigner: CheckpointSigner;
  readonly passwords: PasswordHasher;
  readonly tokens: TokenService;
  readonly identity: IdentityService;
  readonly clients: ClientService;
  readonly federation: FederationService;
  /** The device registry (enrolment, DPoP proofs, posture). */
  readonly devices: DeviceService;
  /** API keys (`X-API-Key` on routes that list the `apikey` issuer). */
  readonly apiKeys: ApiKeyService;
  close(): Promise<void>;
}

/** The audit checkpoint signing key file (outside the database). */
export const checkpointKeyFile = (loaded: LoadedConfig) =>
  loaded.config.audit.checkpoint.keyFile === undefined
    ? join(loaded.dataDir, 'keys', 'audit-checkpoint.pem')
    : resolve(loaded.file ? dirname(loaded.file) : process.cwd(), loaded.config.audit.checkpoint.keyFile);

/** A configured alert rule in the engine's form (durations in ms). */
function toAlertRule(r: NonNullable<LoadedConfig['config']['alerts']['rules']>[number]): AlertRule {
  return {
    id: r.id,
    type: r.type,
    where: r.where,
    groupBy: r.groupBy,
    threshold: r.threshold,
    windowMs: r.window,
    suppressMs: r.suppress ?? 0,
    severity: r.severity,
  };
}

/** The key of the audit log's sensitive-field HMACs (outside the database). */
export const auditHmacKeyFile = (loaded: LoadedConfig) => join(loaded.dataDir, 'keys', 'audit-hmac.key');

/** The checkpoint anchor file, resolved against the config file's folder (undefined = none). */
export const anchorFileOf = (loaded: LoadedConfig) =>
  loaded.config.audit.checkpoint.anchorFile === undefined
    ? undefined
    : resolve(loaded.file ? dirname(loaded.file) : process.cwd(), loaded.config.audit.checkpoint.anchorFile);

/** Where checkpoints are copied outside the database (file and/or webhook). */
function checkpointAnchors(loaded: LoadedConfig): CheckpointAnchor[] {
  const anchors: CheckpointAnchor[] = [];
  const file = anchorFileOf(loaded);
  if (file !== undefined) anchors.push(new FileAnchor(file));
  const hook = loaded.config.audit.checkpoint.anchorWebhook;
  if (hook) anchors.push(new WebhookAnchor(hook.url, hook.headers ? { headers: hook.headers } : {}));
  return anchors;
}

/** The log's origin line in its checkpoints. */
export const checkpointOrigin = (config: LoadedConfig['config']) =>
  config.audit.checkpoint.origin ?? `${new URL(config.identity.issuer).host}/portcullis-audit`;

/** Where the embedded database lives inside the data directory. */
export const databasePath = (dataDir: string) => join(dataDir, 'portcullis.db');

export async function openCore(loaded: LoadedConfig, options: CoreOptions = {}): Promise<PortcullisCore> {
  const { config, dataDir } = loaded;
  const log = options.log ?? createLogger({ level: config.log.level });
  const clock = options.clock ?? systemClock;
  const metrics = new Metrics();
  const store = openSqliteStore(databasePath(dataDir));
  try {
    // Key files that do not exist yet are created below; each creation becomes a durable audit event.
    const keyFiles = {
      'audit-checkpoint': checkpointKeyFile(loaded),
      'audit-hmac': auditHmacKeyFile(loaded),
    };
    const newKeys: [string, string, string | undefined][] = Object.entries(keyFiles)
      .filter(([, file]) => !existsSync(file))
      .map(([purpose, file]) => [purpose, file, undefined]);
    const keys = await KeyRing.loadOrCreate(join(dataDir, 'keys'), {
      log,
      clock,
      alg: config.identity.signingKeys.algorithm,
      // A replaced key stays published until every token it signed has expired (plus clock skew).
      retainMs: config.identity.accessTokenTtl + 60_000,
      ...(config.identity.dataKeyFile
        ? { dataKeyFile: resolve(dirname(loaded.file ?? join(dataDir, 'x')), config.identity.dataKeyFile) }
        : {}),
    });
    for (const g of keys.generated) newKeys.push([g.purpose, g.file, g.kid]);
    const fieldHasher = loadFieldHasher(auditHmacKeyFile(loaded), config.audit.sensitiveFields);
    // Alerts watch committed records, and are themselves audited (so each points into the verifiable log).
    let auditAlert: (alert: Alert) => void = () => undefined;
    const alerts = new AlertEngine({
      rules: config.alerts.rules?.map(toAlertRule) ?? DEFAULT_ALERT_RULES,
      sinks: createAlertSinks(
        config.alerts.sinks,
        loaded.file ? dirname(loaded.file) : process.cwd(),
        (sink, why, _alert, err) => {
          metrics.alertDrops.inc({ sink, reason: why });
          log.warn({ sink, why, err }, 'alert not delivered');
        },
      ),
      clock,
      log,
      onAlert: (alert) => {
        metrics.alerts.inc({ rule: alert.rule, severity: alert.severity });
        auditAlert(alert);
      },
    });
    const checkpointSigner = loadCheckpointSigner(checkpointKeyFile(loaded), checkpointOrigin(config));
    const checkpointer = new Checkpointer({
      store: store.audit,
      signer: checkpointSigner,
      clock,
      log,
      everyRecords: config.audit.checkpoint.everyRecords,
      intervalMs: config.audit.checkpoint.interval,
      anchors: checkpointAnchors(loaded),
    });
    const audit = new AuditWriter({
      store: store.audit,
      clock,
      log,
      flushIntervalMs: config.audit.flushInterval,
      onCommit: (records) => {
        metrics.auditAppended.inc(records.length);
        checkpointer.onCommitted(records);
        alerts.observe(records);
      },
      onFailure: (reason) => metrics.auditFailures.inc({ reason }),
      spoolLimit: config.audit.spoolLimit,
      // Decision records are `gateway.decision`; every other record is an identity/admin/key/security event.
      failOpen: (type) =>
        type === 'gateway.decision' ? config.audit.failOpen.decisions : config.audit.failOpen.identity,
      redact: fieldHasher.redact,
    });
    auditAlert = (alert) => {
      try {
        void audit.write({ type: 'security.alert', data: { ...alert } }, 'batched').catch(() => undefined);
      } catch (err) {
        log.error({ err, alert: alert.rule }, 'could not audit an alert');
      }
    };
    metrics.auditPending = () => audit.pending;
    for (const [purpose, file, kid] of newKeys) {
      await audit.write({ type: 'keys.generated', data: { purpose, file, kid: kid ?? null } }, 'durable');
    }
    metrics.lastCheckpointAt = () => checkpointer.lastCheckpointAt;
    const passwords = await PasswordHasher.create(config.identity.passwordHash);
    const tokens = new TokenService({
      keys,
      issuer: config.identity.issuer,
      audience: config.identity.audience,
      accessTokenTtlMs: config.identity.accessTokenTtl,
      clock,
    });
    const identity = new IdentityService({
      auditMode: config.audit.identity,
      store,
      tokens,
      passwords,
      audit,
      clock,
      log,
      sessionTtlMs: config.identity.sessionTtl,
      sessionIdleMs: config.identity.sessionIdleTimeout,
      dataKey: keys.dataKey,
      refreshGraceMs: config.identity.refreshGrace,
      mfa: { issuerName: config.identity.mfa.issuerName, challengeTtlMs: config.identity.mfa.challengeTtl },
      throttle: {
        freeAttempts: config.identity.lockout.freeAttempts,
        baseDelayMs: config.identity.lockout.baseDelay,
        maxDelayMs: config.identity.lockout.maxDelay,
        lockAfter: config.identity.lockout.lockAfter,
        lockMs: config.identity.lockout.lockFor,
        ipFreeAttempts: config.identity.lockout.ipFreeAttempts,
        forgetAfterMs: 3_600_000,
      },
    });
    const clients = new ClientService({
      store,
      tokens,
      audit,
      clock,
      issuer: config.identity.issuer,
      tokenEndpoint: `${config.identity.issuer.replace(/\/$/, '')}/oauth2/token`,
      defaultAudience: config.identity.audience,
      serviceTokenTtlSec: Math.floor(config.identity.serviceTokenTtl / 1000),
    });
    const federation = new FederationService({
      providers: config.identity.federation,
      ourIssuer: config.identity.issuer,
      redirectAllowList: config.identity.redirectAllowList,
      box: new SecretBox(keys.dataKey),
      clock,
      log,
    });
    // The internal CA signs device certificates; loaded on first use (enrolments are rare).
    const caDir = config.devices.caDir
      ? resolve(loaded.file ? dirname(loaded.file) : process.cwd(), config.devices.caDir)
      : join(dataDir, 'ca');
    const devices = new DeviceService({
      settings: config.devices,
      store,
      audit,
      clock,
      // Loaded again when the CA rotates.
      ca: caLoader(caDir, new SecretBox(keys.dataKey)),
    });
    const apiKeys = new ApiKeyService({ store, audit, clock });
    return {
      loaded,
      log,
      clock,
      metrics,
      store,
      keys,
      audit,
      passwords,
      tokens,
      identity,
      clients,
      federation,
      devices,
      apiKeys,
      checkpointer,
      checkpointSigner,
      alerts,
      close: async () => {
        await audit.close();
        await checkpointer.close();
        await alerts.close();
        await store.close();
      },
    };
  } catch (err) {
    await store.close();
    throw err;
  }
}

export interface StartOptions extends CoreOptions {
  /** Start the bundled demo upstream if the config has `demo.upstream` (default true). */
  demo?: boolean;
}

/** A running Portcullis: the gateway, the admin listener and (optionally) the demo upstream. */
export interface RunningPortcullis {
  readonly core: PortcullisCore;
  /** e.g. `http://127.0.0.1:8080` */
  readonly gatewayUrl: string;
  readonly adminUrl: string;
  /** The plain-HTTP listener that redirects to HTTPS (`gateway.tls.redirectHttp`), when set. */
  readonly redirectUrl: string | undefined;
  /** The workload API (TLS), when `workload.listen` is set and the CA exists. */
  readonly workloadUrl: string | undefined;
  readonly demoUrl: string | undefined;
  /** Demo users created on this start (passwords shown once), if `demo.seedUsers` and the store was empty. */
  readonly seededUsers: ReadonlyArray<{ username: string; password: string; roles: readonly string[] }>;
  /**
   * Applies a new config without dropping connections: routes, upstreams, issuers, policy, trusted
   * proxies, rate limits and forward-auth change at once for new requests; in-flight ones finish on the
   * old. A config that cannot be built leaves the running one in place. Sections that need a restart
   * (listeners, identity, keys, storage, audit, alerts) are kept and listed in `restartRequired`.
   */
  reload(next: LoadedConfig): Promise<{ ok: true; restartRequired: string[] } | { ok: false; error: string }>;
  /** Applies the CA rotation schedule now (at `now`; also runs every minute): promotes, retires. */
  maintainCa(now?: number): Promise<{ changed: boolean; promoted?: number }>;
  /** Re-reads the key folder and applies the rotation schedule now (also runs every 10 minutes and on reload). */
  maintainKeys(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts Portcullis from a validated config: gateway (with the identity endpoints), admin listener
 * (health, metrics) and, when configured, the demo upstream.
 *
 * @example
 * const pc = await startPortcullis(loadConfigFile('portcullis.yaml'));
 * console.log(pc.gatewayUrl);
 * await pc.close();
 */
export async function startPortcullis(
  loaded: LoadedConfig,
  options: StartOptions = {},
): Promise<RunningPortcullis> {
  const core = await openCore(loaded, options);
  const { config } = loaded;
  const servers: Server[] = [];
  let active: Built | undefined;
  // WebSocket tunnels live across reloads; shutdown closes them.
  const tunnels = tunnelRegistry();
  try {
    const seededUsers = config.demo.seedUsers ? await seedDemoUsers(core) : [];

    let demoUrl: string | undefined;
    if ((options.demo ?? true) && config.demo.upstream) {
      const demoAddress = config.demo.upstream;
      // The demo API expects the audience of whichever upstream entry points at it.
      const entry = Object.entries(config.upstreams).find(([, u]) => {
        const url = new URL(u.url);
        return Number(url.port) === demoAddress.port && url.hostname === demoAddress.host;
      });
      const demo = createDemoUpstream({
        keys: keyResolver(core.keys.jwks()),
        issuer: config.identity.issuer,
        audience: entry ? (entry[1].audience ?? entry[0]) : 'demo',
      });
      demoUrl = await listen(demo, demoAddress.host, demoAddress.port);
      servers.push(demo);
    }

    // Scheduled key rotation: re-read the key folder (a `keys rotate` from the CLI), publish the next key
    // ahead of time, retire replaced keys once their tokens have expired. Every change is audited.
    const sk = config.identity.signingKeys;
    const maintainKeys = async (): Promise<void> => {
      try {
        core.keys.reload();
        const r = await core.keys.maintain({
          alg: sk.algorithm,
          rotateEveryMs: sk.rotateEvery,
          publishAheadMs: sk.publishAhead,
          retainMs: config.identity.accessTokenTtl + 60_000,
        });
        if (r.added)
          await core.audit.write(
            {
              type: 'keys.rotated',
              data: {
                purpose: 'access-token',
                kid: r.added.kid,
                alg: r.added.alg,
                activatesAt: r.added.activatesAt,
              },
            },
            'durable',
          );
        for (const kid of r.removed)
          await core.audit.write({ type: 'keys.retired', data: { purpose: 'access-token', kid } }, 'durable');
      } catch (err) {
        core.log.error({ err }, 'key maintenance failed; the current keys stay');
      }
    };
    await maintainKeys();
    const keyTimer = setInterval(() => void maintainKeys(), 600_000);
    keyTimer.unref();

    const riskParts = config.risk.enabled ? await startRisk(loaded, core) : undefined;

    const rateLimits = new MemoryRateLimitStore(); // kept across reloads: quotas do not reset
    const signatureNonces = MessageSignatureVerifier.nonceCache(); // kept across reloads: a replay stays a replay
    active = await buildGateway(
      loaded,
      core,
      rateLimits,
      riskParts?.engine,
      signatureNonces,
      undefined,
      tunnels,
    );
    const tls = config.gateway.tls;
    const base = loaded.file ? dirname(loaded.file) : process.cwd();
    const tlsFiles = tls && {
      cert: resolve(base, tls.certFile),
      key: resolve(base, tls.keyFile),
      ...(tls.clientCaFile ? { clientCa: resolve(base, tls.clientCaFile) } : {}),
    };
    const gw = createGatewayServer(
      () => (active as { gateway: Gateway }).gateway,
      tlsFiles ? readGatewayTls(tlsFiles) : undefined,
    );
    // Certificates rotate (an agent renews the gateway's SVID at half-life): new handshakes get the new
    // certificate, open connections carry on, nothing restarts.
    const unwatch: Array<() => void> = [];
    const gatewayUrl = (await listen(gw, config.gateway.listen.host, config.gateway.listen.port)).replace(
      /^http:/,
      tls ? 'https:' : 'http:',
    );
    servers.push(gw);
    let redirectUrl: string | undefined;
    if (tls?.redirectHttp) {
      const redirect = createRedirectServer(
        new URL(gatewayUrl).port ? Number(new URL(gatewayUrl).port) : 443,
      );
      redirectUrl = await listen(redirect, tls.redirectHttp.host, tls.redirectHttp.port);
      servers.push(redirect);
    }

    let workloadUrl: string | undefined;
    const caDir = join(core.loaded.dataDir, 'ca');
    let workload: Awaited<ReturnType<typeof createWorkloadServer>> | undefined;
    if (config.workload.listen) {
      if (!existsSync(join(caDir, 'intermediate.crt'))) {
        core.log.warn({ caDir }, 'workload API not started: no CA yet (run portcullis ca init)');
      } else {
        const loadCa = caLoader(caDir, new SecretBox(core.keys.dataKey));
        workload = await createWorkloadServer({
          ca: async () => (await loadCa()) as WorkloadCa,
          store: core.store,
          audit: core.audit,
          clock: core.clock,
          log: core.log,
          svidTtlMs: config.workload.svidTtl,
          deniedSerials: () => active?.denied ?? new Set<string>(),
          // JWT-SVIDs: ES256 with the current access-token key (published in our JWKS), typ JWT (so no
          // access-token check ever takes one), one audience, 5 minutes, a fresh jti.
          jwtSvid: async (spiffeId, audience) => {
            const key = core.keys.accessToken;
            const now = Math.floor(core.clock.now() / 1000);
            const token = await new SignJWT({})
              .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
              .setIssuer(config.identity.issuer)
              .setSubject(spiffeId)
              .setAudience(audience)
              .setIssuedAt(now)
              .setExpirationTime(now + 300)
              .setJti(randomUUID())
              .sign(key.privateKey);
            return { token, expiresAt: (now + 300) * 1000 };
          },
        });
        workloadUrl = (
          await listen(
            workload as unknown as Server,
            config.workload.listen.host,
            config.workload.listen.port,
          )
        ).replace(/^http:/, 'https:');
        servers.push(workload as unknown as Server);
      }
    }

    // CA rotation: a prepared generation starts signing when its time comes; retired roots leave the
    // bundle once nothing they signed can still be valid. Checked every minute.
    // Longer than anything a retired generation signed can live: SVIDs, device certificates, the
    // workload API's own (24 h) and `svid issue` (up to 30 days).
    const caRetainMs = Math.max(config.workload.svidTtl, config.devices.certTtl, 30 * 86_400_000) + 3_600_000;
    const maintainWorkloadCa = async (now = core.clock.now()) => {
      try {
        // Rewriting the bundle parses the roots: certificates are loaded once a CA exists.
        if (existsSync(caFiles(caDir).intermediateCert)) await loadX509();
        const r = maintainCa(caDir, caRetainMs, now);
        if (!r.changed) return r;
        if (r.promoted !== undefined)
          await core.audit.write({ type: 'ca.rotated', data: { generation: r.promoted } }, 'durable');
        await core.audit.write({ type: 'ca.bundle_changed', data: { ...caStatus(caDir) } }, 'durable');
        if (workload) await workload.renewOwn();
        core.log.info(r, 'CA rotation state changed');
        return r;
      } catch (err) {
        core.log.error({ err }, 'CA maintenance failed; the current CA stays');
        return { changed: false };
      }
    };
    await maintainWorkloadCa();
    const caTimer = setInterval(() => void maintainWorkloadCa(), 60_000);
    caTimer.unref();
    unwatch.push(() => clearInterval(caTimer));

    const admin = createAdminServer({
      metrics: core.metrics,
      audit: core.store.audit,
      ready: () => core.store.ping(),
    });
    const adminUrl = await listen(admin, config.admin.listen.host, config.admin.listen.port);
    servers.push(admin);

    // The running config, and watches on the upstreams' mTLS files: a rotated client SVID rebuilds the
    // upstream pools (in-flight requests finish on the old ones), like a config reload.
    let running = loaded;
    let unwatchUpstreams: () => void = () => undefined;
    const watchUpstreamCertificates = (l: LoadedConfig) => {
      unwatchUpstreams();
      const b = l.file ? dirname(l.file) : process.cwd();
      const paths = [
        ...Object.values(l.config.upstreams).flatMap((u) =>
          u.mtls ? [u.mtls.certFile, u.mtls.keyFile, u.mtls.bundleFile].map((f) => resolve(b, f)) : [],
        ),
        ...(l.config.workload.denylistFile ? [resolve(b, l.config.workload.denylistFile)] : []),
      ];
      unwatchUpstreams = paths.length
        ? watchFiles(paths, () => {
            void reload(running).then((r) => {
              if (r.ok) core.log.info('upstream client certificates reloaded');
            });
          })
        : () => undefined;
    };
    // Reloads run one at a time (a certificate watcher and SIGHUP may fire together): each builds on
    // the gateway the previous one left, and every replaced pool is closed.
    let reloads: Promise<unknown> = Promise.resolve();
    const reload = (
      next: LoadedConfig,
    ): Promise<{ ok: true; restartRequired: string[] } | { ok: false; error: string }> => {
      const run = reloads.then(() => reloadNow(next));
      reloads = run.catch(() => undefined);
      return run;
    };
    const reloadNow = async (
      next: LoadedConfig,
    ): Promise<{ ok: true; restartRequired: string[] } | { ok: false; error: string }> => {
      await maintainKeys();
      const current = active as Built;
      const { merged, restartRequired } = reloadable(current.gateway.config, next.config);
      let built: Built;
      try {
        built = await buildGateway(
          { ...next, config: merged },
          core,
          rateLimits,
          riskParts?.engine,
          signatureNonces,
          current,
          tunnels,
        );
      } catch (err) {
        core.log.error({ err }, 'config reload failed; the running config stays');
        return { ok: false, error: (err as Error).message };
      }
      active = built;
      running = next;
      // In-flight requests finish on the old pools: undici's close() waits for them.
      void closeUpstreams(current.upstreams);
      current.gateway.bearer.close(); // stops its key sets' background refresh
      watchUpstreamCertificates(next);
      core.log.info({ restartRequired }, 'config reloaded');
      return { ok: true, restartRequired };
    };
    watchUpstreamCertificates(loaded);
    unwatch.push(() => unwatchUpstreams());
    if (tlsFiles)
      unwatch.push(
        watchFiles(Object.values(tlsFiles), () => {
          try {
            (gw as unknown as TlsServer).setSecureContext(gatewaySecureContext(readGatewayTls(tlsFiles)));
            core.log.info({ cert: tlsFiles.cert }, 'gateway certificate reloaded');
            // A changed client CA bundle (a CA rotation) also renews the SPIFFE peer check's roots.
            if (tlsFiles.clientCa) void reload(running);
          } catch (err) {
            core.log.warn(
              { err: (err as Error).message },
              'gateway certificate not reloaded; the current one stays',
            );
          }
        }),
      );

    core.log.info({ gatewayUrl, adminUrl, demoUrl }, 'portcullis started');
    let closing: Promise<void> | undefined;
    return {
      core,
      gatewayUrl,
      adminUrl,
      demoUrl,
      workloadUrl,
      redirectUrl,
      seededUsers,
      maintainKeys,
      maintainCa: maintainWorkloadCa,
      reload,
      close: () => {
        closing ??= (async () => {
          for (const u of unwatch) u();
          clearInterval(keyTimer);
          if (riskParts) await riskParts.stop();
          const serversClosed = Promise.all(servers.map(closeServer));
          // Open WebSocket tunnels would hold the gateway server's close forever (upgraded sockets are
          // not its connections any more): they end now, and late handshakes are refused.
          closeTunnels(tunnels);
          await serversClosed;
          if (active) await closeUpstreams(active.upstreams);
          active?.gateway.bearer.close();
          await core.close();
        })();
        return closing;
      },
    };
  } catch (err) {
    await Promise.all(servers.map(closeServer));
    if (active) await closeUpstreams(active.upstreams);
    await core.close();
    throw err;
  }
}

/**
 * The risk engine with its geo-IP databases, threat lists (reloaded on schedule) and write-behind of the
 * principals' profiles (every 5 s, and at stop).
 */
async function startRisk(
  loaded: LoadedConfig,
  core: PortcullisCore,
): Promise<{ engine: RiskEngine; stop: () => Promise<void> }> {
  const r = loaded.config.risk;
  const base = loaded.file ? dirname(loaded.file) : process.cwd();
  const { geo, missing } = GeoIp.open(r.geoip.map((f) => resolve(base, f)));
  for (const f of missing)
    core.log.warn(
      { file: f },
      'geo-IP database not found: travel, country and ASN signals are off until it is installed',
    );
  const threats = r.threatLists.length
    ? new ThreatIntel(
        r.threatLists.map((t) => ({
          ...t,
          source: /^https?:\/\//.test(t.source) ? t.source : resolve(base, t.source),
        })),
        core.log,
      )
    : undefined;
  if (threats) {
    await threats.reload();
    threats.schedule(r.threatRefresh);
  }
  const engine = new RiskEngine({
    settings: {
      thresholds: r.thresholds,
      weights: r.weights,
      travel: r.travel,
      unusualTime: r.unusualTime,
      velocity: r.velocity,
      staleAuthenticationMs: r.staleAuthenticationAfter,
    },
    geo: geo.databases > 0 ? geo : undefined,
    threats,
    store: core.store.riskProfiles,
    clock: core.clock,
    log: core.log,
  });
  const timer = setInterval(() => void engine.flush(), 5_000);
  timer.unref();
  return {
    engine,
    stop: async () => {
      clearInterval(timer);
      threats?.stop();
      await engine.flush();
    },
  };
}

/** Sections a reload cannot change without a restart (listeners, keys, storage, audit). */
const RESTART_ONLY = ['dataDir', 'log', 'admin', 'identity', 'assertion', 'audit', 'risk', 'demo'] as const;

/**
 * The config a reload runs with: routes, upstreams, issuers, policy and the gateway's settings other
 * than its listen address come from the new file; the listen address, alerts and everything in
 * {@link RESTART_ONLY} stay as they are, and are reported when the new file differs.
 */
function reloadable(running: Config, next: Config): { merged: Config; restartRequired: string[] } {
  const restartRequired: string[] = RESTART_ONLY.filter(
    (k) => JSON.stringify(running[k]) !== JSON.stringify(next[k]),
  );
  if (JSON.stringify(running.gateway.listen) !== JSON.stringify(next.gateway.listen))
    restartRequired.push('gateway.listen');
  if (JSON.stringify(running.alerts) !== JSON.stringify(next.alerts)) restartRequired.push('alerts');
  const merged: Config = {
    ...next,
    gateway: { ...next.gateway, listen: running.gateway.listen },
    alerts: running.alerts,
  };
  for (const k of RESTART_ONLY) (merged as Record<string, unknown>)[k] = running[k];
  return { merged, restartRequired };
}

/** Everything request handling needs, built from one config: swapped as a whole on reload. */
/** What one config builds: the gateway, its upstream pools, and the serial denylist in force. */
interface Built {
  gateway: Gateway;
  upstreams: Map<string, Upstream>;
  denied: ReadonlySet<string> | undefined;
}

async function buildGateway(
  loaded: LoadedConfig,
  core: PortcullisCore,
  rateLimits: MemoryRateLimitStore,
  risk: RiskEngine | undefined,
  signatureNonces: ReplayCache = MessageSignatureVerifier.nonceCache(),
  previous?: Built,
  tunnels: TunnelRegistry = tunnelRegistry(),
): Promise<Built> {
  const { config } = loaded;
  const base = loaded.file ? dirname(loaded.file) : process.cwd();
  // Certificates are checked synchronously (the SPIFFE client-certificate bundle, mTLS upstreams' TLS
  // callbacks): load the library before building what does it. A config without them never loads it.
  if (config.gateway.tls?.clientCaFile || Object.values(config.upstreams).some((u) => u.mtls))
    await loadX509();
  // Emergency revocation: read at every build (a change of the file rebuilds the gateway).
  const denylist = config.workload.denylistFile;
  const denied = denylist
    ? parseDenylist(readFileSync(resolve(base, denylist), 'utf8'), resolve(base, denylist))
    : undefined;
  const upstreams = createUpstreams(
    config.upstreams,
    {
      issuer: config.identity.issuer,
      ttlSec: Math.max(1, Math.floor(config.assertion.ttl / 1000)),
      key: core.keys.assertion,
      baseDir: base,
      ...(denied ? { deniedSerials: denied } : {}),
    },
    (upstream, target, healthy, why) =>
      healthy
        ? core.log.info({ upstream, target }, `upstream target back in rotation (${why})`)
        : core.log.warn({ upstream, target }, `upstream target out of rotation (${why})`),
    tunnels,
  );
  let bearer: BearerAuthenticator | undefined;
  try {
    bearer = await BearerAuthenticator.create({
      own: core.tokens,
      ownIssuer: config.identity.issuer,
      issuers: config.issuers,
      baseDir: loaded.file ? dirname(loaded.file) : process.cwd(),
      clock: core.clock,
      cacheSize: config.gateway.tokenCacheSize,
      onLookup: countLookup(core.metrics),
      log: core.log,
      // An unchanged external issuer keeps the key set it fetched.
      previous: previous?.gateway.bearer,
    });
    const policy = loadPolicy(loaded);
    for (const w of policy.warnings)
      core.log.warn({ file: w.file, line: w.line, rule: w.ruleId }, `policy: ${w.message}`);
    const gateway: Gateway = {
      config,
      routes: new RouteTable(
        config.routes,
        (r) => {
          const u = upstreams.get(r.upstream);
          if (!u) throw new Error(`route ${r.id}: unknown upstream ${r.upstream}`);
          return u;
        },
        requestSchemaCompiler(base),
        config.rateLimitTiers,
      ),
      tokens: core.tokens,
      bearer,
      identity: core.identity,
      clients: core.clients,
      federation: core.federation,
      browserSessions: new BrowserSessions({ dataKey: core.keys.dataKey, clock: core.clock }),
      devices: core.devices,
      apiKeys: core.apiKeys,
      signatures: new MessageSignatureVerifier(config.messageSigners, base, core.clock, signatureNonces),
      risk,
      spiffe: config.gateway.tls?.clientCaFile
        ? new SpiffePeerAuthenticator(
            readFileSync(
              resolve(loaded.file ? dirname(loaded.file) : process.cwd(), config.gateway.tls.clientCaFile),
              'utf8',
            ),
            config.gateway.tls.clientTrustDomain,
            core.clock,
            denied,
          )
        : undefined,
      keys: core.keys,
      policy,
      rateLimits,
      isTrustedProxy: compileTrustedProxies(config.gateway.trustedProxies),
      audit: core.audit,
      log: core.log,
      metrics: core.metrics,
      clock: core.clock,
    };
    return { gateway, upstreams, denied };
  } catch (err) {
    bearer?.close();
    await closeUpstreams(upstreams);
    throw err;
  }
}

/** Cache lookup counter with its label sets bound once (no label hashing per request). */
function countLookup(metrics: Metrics): (result: 'hit' | 'miss' | 'refused') => void {
  const counters = {
    hit: metrics.tokenCache.labels({ result: 'hit' }),
    miss: metrics.tokenCache.labels({ result: 'miss' }),
    refused: metrics.tokenCache.labels({ result: 'refused' }),
  };
  return (result) => counters[result].inc();
}

async function seedDemoUsers(
  core: PortcullisCore,
): Promise<Array<{ username: string; password: string; roles: string[] }>> {
  if ((await core.store.users.count()) > 0) return [];
  const users = [
    { username: 'admin', password: randomToken(12), roles: ['admin'] },
    { username: 'viewer', password: randomToken(12), roles: ['viewer'] },
  ];
  for (const u of users) await core.identity.createUser(u);
  return users;
}

function listen(server: Server, host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const addr = server.address() as AddressInfo;
      const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      resolve(`http://${h}:${addr.port}`);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 2_000).unref();
  });
}
