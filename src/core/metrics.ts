import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Every Prometheus metric Portcullis exports, on one registry per running instance (so several
 * instances in one process, as in tests, do not collide). Served at `/metrics` on the admin listener only.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: 'portcullis_gateway_requests_total',
    help: 'Requests answered by the gateway, by route, outcome and status class.',
    labelNames: ['route', 'outcome', 'status'] as const,
    registers: [this.registry],
    collect: () => this.#foldCounts(),
  });

  readonly requestDuration = new Histogram({
    name: 'portcullis_gateway_request_duration_seconds',
    help: 'Time from request to response headers (gateway + upstream).',
    labelNames: ['outcome'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly tokenCache = new Counter({
    name: 'portcullis_token_cache_lookups_total',
    help: 'Verified-token cache lookups: a miss costs a signature verification.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly alerts = new Counter({
    name: 'portcullis_alerts_fired_total',
    help: 'Security alerts fired, by rule and severity.',
    labelNames: ['rule', 'severity'] as const,
    registers: [this.registry],
  });

  readonly alertDrops = new Counter({
    name: 'portcullis_alert_deliveries_dropped_total',
    help: 'Alerts a sink could not deliver (queue full, or retries exhausted).',
    labelNames: ['sink', 'reason'] as const,
    registers: [this.registry],
  });

  readonly logins = new Counter({
    name: 'portcullis_identity_logins_total',
    help: 'Login attempts by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly auditAppended = new Counter({
    name: 'portcullis_audit_records_total',
    help: 'Audit records committed to the hash chain.',
    registers: [this.registry],
  });

  readonly auditFailures = new Counter({
    name: 'portcullis_audit_failures_total',
    help: 'Audit failures: batches that could not be committed (append_failed), records refused because the spool was full (spool_full).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  /** Read at scrape time: records waiting for the store (audit lag). */
  auditPending: () => number = () => 0;
  /** Read at scrape time: ms since epoch of the last signed checkpoint (0 = none yet). */
  lastCheckpointAt: () => number = () => 0;

  readonly auditLag = new Gauge({
    name: 'portcullis_audit_pending_records',
    help: 'Audit records accepted but not yet committed (non-zero for long only while the store fails).',
    registers: [this.registry],
    collect: () => {
      this.auditLag.set(this.auditPending());
    },
  });

  readonly checkpointAge = new Gauge({
    name: 'portcullis_audit_checkpoint_age_seconds',
    help: 'Seconds since the last signed audit checkpoint (-1 before the first).',
    registers: [this.registry],
    collect: () => {
      const at = this.lastCheckpointAt();
      this.checkpointAge.set(at === 0 ? -1 : (Date.now() - at) / 1000);
    },
  });

  readonly storeErrors = new Counter({
    name: 'portcullis_store_unavailable_total',
    help: 'Requests denied because a store was unavailable (fail closed).',
    registers: [this.registry],
  });

  readonly decisions = new Counter({
    name: 'portcullis_decisions_total',
    help: 'Gateway decisions by outcome, route, deciding rule (or refusal code).',
    labelNames: ['outcome', 'route', 'rule'] as const,
    registers: [this.registry],
    collect: () => this.#foldCounts(),
  });

  readonly #children = new Map<string, unknown>();

  /** A label child bound once per label combination and reused, so the hot path does no label hashing. */
  #child<T>(key: string, bind: () => T): T {
    let child = this.#children.get(key) as T | undefined;
    if (child === undefined) {
      child = bind();
      this.#children.set(key, child);
    }
    return child;
  }

  /**
   * Per-request counts, kept as plain numbers and added to their prom-client children when the
   * registry is read (the counters' `collect`): a child's `inc()` hashes its labels again on every call.
   */
  readonly #counts = new Map<string, { n: number; child: { inc(by: number): void } }>();

  #count(key: string, bind: () => { inc(by: number): void }): void {
    const slot = this.#counts.get(key);
    if (slot !== undefined) slot.n++;
    else this.#counts.set(key, { n: 1, child: bind() });
  }

  #foldCounts(): void {
    for (const slot of this.#counts.values()) {
      if (slot.n === 0) continue;
      slot.child.inc(slot.n);
      slot.n = 0;
    }
  }

  /** Counts one decision. */
  countDecision(outcome: string, route: string, rule: string): void {
    this.#count(`d\u0000${outcome}\u0000${route}\u0000${rule}`, () =>
      this.decisions.labels({ outcome, route, rule }),
    );
  }

  /** Counts one gateway request and its duration. */
  countRequest(route: string, outcome: string, statusClass: string, seconds: number): void {
    this.#count(`r\u0000${route}\u0000${outcome}\u0000${statusClass}`, () =>
      this.requests.labels({ route, outcome, status: statusClass }),
    );
    this.#child(`t\u0000${outcome}`, () => this.requestDuration.labels({ outcome })).observe(seconds);
  }

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true)
      collectDefaultMetrics({ register: this.registry, prefix: 'portcullis_' });
  }
}
