import type { Clock, Logger } from '../core/index.js';
import type { AuditRecord } from '../store/index.js';

export type Severity = 'info' | 'warning' | 'critical';

/** An alert rule: `threshold` matching records within `windowMs`, per value of `groupBy`. */
export interface AlertRule {
  id: string;
  /** Record type to count; a trailing `*` matches a prefix (`auth.*`). */
  type: string;
  /** Record data fields that must equal these values (e.g. `{ outcome: 'deny' }`). */
  where: Readonly<Record<string, string | number | boolean>>;
  /** Data field whose value groups the count (e.g. `username`, `sub`); omitted = one group. */
  groupBy: string | undefined;
  threshold: number;
  windowMs: number;
  /** After firing, the same rule and group stay quiet this long. */
  suppressMs: number;
  severity: Severity;
}

/** A fired alert: what was seen, how often, where in the log. */
export interface Alert {
  rule: string;
  severity: Severity;
  group: string | null;
  count: number;
  windowMs: number;
  /** ms since epoch when it fired. */
  at: number;
  /** Log positions of the records that made it fire (the last `threshold` of them). */
  seqs: number[];
  summary: string;
}

export interface AlertSink {
  readonly name: string;
  /** Queue an alert for delivery; never throws (a sink copes with its own failures). */
  send(alert: Alert): void;
  close(): Promise<void>;
}

/** The rules shipped by default: they watch the events every deployment produces. */
export const DEFAULT_ALERT_RULES: readonly AlertRule[] = [
  {
    id: 'login-failures',
    type: 'auth.login.failed',
    where: {},
    groupBy: 'username',
    threshold: 5,
    windowMs: 300_000,
    suppressMs: 900_000,
    severity: 'warning',
  },
  {
    id: 'account-lockout',
    type: 'auth.lockout',
    where: {},
    groupBy: 'userId',
    threshold: 1,
    windowMs: 60_000,
    suppressMs: 0,
    severity: 'warning',
  },
  {
    id: 'mfa-failures',
    type: 'auth.mfa.failed',
    where: {},
    groupBy: 'userId',
    threshold: 5,
    windowMs: 300_000,
    suppressMs: 900_000,
    severity: 'warning',
  },
  {
    id: 'impossible-travel',
    type: 'security.impossible_travel',
    where: {},
    groupBy: 'sub',
    threshold: 1,
    windowMs: 60_000,
    suppressMs: 0,
    severity: 'critical',
  },
  {
    id: 'refresh-token-reuse',
    type: 'auth.refresh.reused',
    where: {},
    groupBy: 'sessionId',
    threshold: 1,
    windowMs: 60_000,
    suppressMs: 0,
    severity: 'critical',
  },
  {
    // A DPoP-bound session's refresh token used without its key: taken from the device.
    id: 'unbound-refresh',
    type: 'auth.refresh.unbound',
    where: {},
    groupBy: 'sessionId',
    threshold: 1,
    windowMs: 60_000,
    suppressMs: 0,
    severity: 'critical',
  },
  {
    id: 'denial-spike',
    type: 'gateway.decision',
    where: { outcome: 'deny' },
    groupBy: 'sub',
    threshold: 20,
    windowMs: 60_000,
    suppressMs: 600_000,
    severity: 'warning',
  },
  {
    id: 'revoked-token-use',
    type: 'gateway.decision',
    where: { code: 'session_revoked' },
    groupBy: 'sub',
    threshold: 3,
    windowMs: 300_000,
    suppressMs: 900_000,
    severity: 'warning',
  },
];

interface GroupState {
  /** Timestamps and seqs of matching records still inside the window (at most `threshold`). */
  hits: Array<{ ts: number; seq: number }>;
  suppressedUntil: number;
}

export interface AlertEngineOptions {
  rules: readonly AlertRule[];
  sinks: readonly AlertSink[];
  clock: Clock;
  log: Logger;
  /** Called for every fired alert (audit it, count it). */
  onAlert?: (alert: Alert) => void;
  /** Groups tracked per rule; the least recently seen are dropped past it. */
  maxGroups?: number;
}

/**
 * Sliding-window alert rules over the committed audit records (so an alert always points at records
 * that are in the verifiable log). Bounded memory: per rule, at most `maxGroups` groups of at most
 * `threshold` timestamps.
 *
 * @example
 * const engine = new AlertEngine({ rules: DEFAULT_ALERT_RULES, sinks: [new StdoutSink()], clock, log });
 * engine.observe(records);
 */
export class AlertEngine {
  readonly #o: Required<Omit<AlertEngineOptions, 'onAlert'>> & Pick<AlertEngineOptions, 'onAlert'>;
  readonly #state = new Map<string, Map<string, GroupState>>();
  /** The rules with `where` as pairs, taken at construction: observe() runs for every committed record. */
  readonly #rules: readonly CompiledRule[];

  constructor(options: AlertEngineOptions) {
    this.#o = { maxGroups: 10_000, ...options };
    for (const r of options.rules) this.#state.set(r.id, new Map());
    this.#rules = options.rules.map((rule) => ({ rule, where: Object.entries(rule.where) }));
  }

  observe(records: readonly AuditRecord[]): void {
    for (const record of records) {
      let data: Record<string, unknown> | undefined;
      for (let i = 0; i < this.#rules.length; i++) {
        const { rule, where } = this.#rules[i] as CompiledRule;
        if (!typeMatches(rule.type, record.type)) continue;
        data ??=
          (record as { parsed?: Record<string, unknown> }).parsed ??
          (JSON.parse(record.data) as Record<string, unknown>);
        if (!matchesWhere(where, data)) continue;
        this.#count(rule, record, data);
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#o.sinks.map((s) => s.close()));
  }

  #count(rule: AlertRule, record: AuditRecord, data: Record<string, unknown>): void {
    const now = this.#o.clock.now();
    const groupValue = rule.groupBy === undefined ? undefined : data[rule.groupBy];
    const group = groupValue === undefined || groupValue === null ? '' : String(groupValue);
    const groups = this.#state.get(rule.id) as Map<string, GroupState>;
    let state = groups.get(group);
    if (state)
      groups.delete(group); // re-insert: the map's order is least recently seen first
    else {
      state = { hits: [], suppressedUntil: 0 };
      if (groups.size >= this.#o.maxGroups) groups.delete(groups.keys().next().value as string);
    }
    groups.set(group, state);
    state.hits = state.hits.filter((h) => h.ts > now - rule.windowMs);
    state.hits.push({ ts: now, seq: record.seq });
    if (state.hits.length > rule.threshold) state.hits.shift();
    if (state.hits.length < rule.threshold || now < state.suppressedUntil) return;
    state.suppressedUntil = now + rule.suppressMs;
    const alert: Alert = {
      rule: rule.id,
      severity: rule.severity,
      group: rule.groupBy === undefined ? null : group,
      count: state.hits.length,
      windowMs: rule.windowMs,
      at: now,
      seqs: state.hits.map((h) => h.seq),
      summary: `${rule.id}: ${state.hits.length} × ${rule.type}${rule.groupBy ? ` for ${rule.groupBy}=${group}` : ''} within ${Math.round(rule.windowMs / 1000)}s`,
    };
    state.hits = [];
    this.#o.log.warn({ alert }, 'security alert');
    this.#o.onAlert?.(alert);
    for (const sink of this.#o.sinks) sink.send(alert);
  }
}

function typeMatches(pattern: string, type: string): boolean {
  return pattern.endsWith('*') ? type.startsWith(pattern.slice(0, -1)) : pattern === type;
}

interface CompiledRule {
  readonly rule: AlertRule;
  readonly where: ReadonlyArray<readonly [string, unknown]>;
}

function matchesWhere(
  where: ReadonlyArray<readonly [string, unknown]>,
  data: Record<string, unknown>,
): boolean {
  for (let i = 0; i < where.length; i++) {
    const pair = where[i] as readonly [string, unknown];
    if (data[pair[0]] !== pair[1]) return false;
  }
  return true;
}
