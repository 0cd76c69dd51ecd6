/** The outcome of one rate-limit check. */
export interface RateDecision {
  allowed: boolean;
  /** Requests still allowed right now (after this one, if it was allowed). */
  remaining: number;
  /** Milliseconds until a denied request may be retried (0 when allowed). */
  retryAfterMs: number;
  /** Milliseconds until the full quota is available again. */
  resetMs: number;
}

/** A quota: `limit` requests per `windowMs`, of which up to `burst` may arrive at once. */
export interface Quota {
  limit: number;
  windowMs: number;
  burst: number;
}

/**
 * Where the GCRA state lives: one "theoretical arrival time" per key. The memory store is the default;
 * a Redis store (shared by replicas) implements the same contract. An unreachable store throws, and the
 * gateway denies (fail closed).
 */
export interface RateLimitStore {
  take(key: string, quota: Quota, now: number): RateDecision | Promise<RateDecision>;
}

/** Floating-point slack (10 µs): far below any useful rate, far above the rounding of epoch-ms sums. */
const EPSILON_MS = 0.01;

/**
 * The GCRA step (generic cell rate algorithm, as in ATM traffic shaping and redis-cell): with emission
 * interval T = window / limit and tolerance τ = T × burst, a request at `now` is allowed iff
 * max(tat, now) + T − τ ≤ now; if so the new theoretical arrival time is max(tat, now) + T.
 * Pure: returns the new TAT (undefined when denied, i.e. unchanged) with the decision.
 */
export function gcra(
  tat: number | undefined,
  quota: Quota,
  now: number,
): { tat: number | undefined; decision: RateDecision } {
  const interval = quota.windowMs / quota.limit;
  const tolerance = interval * quota.burst;
  const base = tat === undefined || tat < now ? now : tat;
  const next = base + interval;
  const allowAt = next - tolerance;
  // TATs are epoch milliseconds plus fractional intervals: allow for the rounding of that addition.
  if (allowAt - now > EPSILON_MS) {
    return {
      tat: undefined,
      decision: {
        allowed: false,
        remaining: 0,
        retryAfterMs: Math.ceil(allowAt - now),
        resetMs: Math.ceil(base - now),
      },
    };
  }
  return {
    tat: next,
    decision: {
      allowed: true,
      remaining: Math.max(0, Math.floor((now - allowAt + EPSILON_MS) / interval)),
      retryAfterMs: 0,
      resetMs: Math.ceil(next - now),
    },
  };
}

/**
 * In-process GCRA state. Bounded: when full, expired keys are swept, then the oldest keys are dropped
 * (dropping a key only ever forgives, never blocks, so eviction cannot lock anyone out).
 *
 * @example
 * const store = new MemoryRateLimitStore();
 * store.take('orders|alice', { limit: 100, windowMs: 60_000, burst: 100 }, Date.now());
 */
export class MemoryRateLimitStore implements RateLimitStore {
  readonly #tats = new Map<string, number>();
  readonly #maxKeys: number;

  constructor(maxKeys = 100_000) {
    this.#maxKeys = maxKeys;
  }

  take(key: string, quota: Quota, now: number): RateDecision {
    const { tat, decision } = gcra(this.#tats.get(key), quota, now);
    if (tat !== undefined) {
      if (this.#tats.size >= this.#maxKeys && !this.#tats.has(key)) this.#evict(now);
      this.#tats.set(key, tat);
    }
    return decision;
  }

  get size(): number {
    return this.#tats.size;
  }

  #evict(now: number): void {
    for (const [k, t] of this.#tats) if (t <= now) this.#tats.delete(k);
    for (const k of this.#tats.keys()) {
      if (this.#tats.size < this.#maxKeys) break;
      this.#tats.delete(k);
    }
  }
}
